//! Read-path correctness against a real Postgres: the snapshot/stream seam under concurrent
//! writes, rows moving in and out of where clauses, key changes, rotation on TRUNCATE and schema
//! changes, and immutable catch-up chunks.

use crate::common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const COLS: &[&str] = &["id", "grp", "n", "note"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_seam_under_concurrent_writes() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE seam (id int PRIMARY KEY, grp text NOT NULL, n int NOT NULL, note text);
         INSERT INTO seam SELECT g, 'g' || (g % 4), g, NULL FROM generate_series(1, 2000) g;",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await;

    // A writer hammering the table the whole time shapes are being created; `committed` counts
    // its transactions, so the test can wait for writes to happen between its steps.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let stop = stop.clone();
        let committed = committed.clone();
        let url = db.url.clone();
        tokio::spawn(async move {
            let c = ferrite_pg::connect::connect(&url).await.unwrap();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = 2000 + i;
                let done = c
                    .batch_execute(&format!(
                        "BEGIN; INSERT INTO seam VALUES ({id}, 'g{}', {i}, 'w');
                     UPDATE seam SET n = n + 1, grp = 'g{}' WHERE id = {};
                     DELETE FROM seam WHERE id = {}; COMMIT;",
                        i % 4,
                        (i + 1) % 4,
                        (i * 7) % 2000 + 1,
                        (i * 13) % 2000 + 1
                    ))
                    .await;
                if done.is_ok() {
                    committed.fetch_add(1, Ordering::Relaxed);
                }
            }
            i
        })
    };
    // Waits until the writer has committed `n` more transactions.
    let writes_after = |n: u64| {
        let committed = committed.clone();
        async move {
            let target = committed.load(Ordering::Relaxed) + n;
            wait_until(&format!("{n} more concurrent writes"), Duration::from_secs(20), || {
                let done = committed.load(Ordering::Relaxed) >= target;
                async move { done }
            })
            .await;
        }
    };
    let wheres = ["", "grp = 'g1'", "n > 1000", "grp IN ('g2', 'g3') AND n % 2 = 0"];
    let mut readers = vec![];
    for w in wheres {
        // Each shape starts at a different point of the write stream.
        writes_after(20).await;
        let mut params = vec![("table", "seam")];
        if !w.is_empty() {
            params.push(("where", w));
        }
        let mut r = ShapeReader::new(&s.base, &params);
        r.catch_up().await;
        readers.push((w.to_string(), r));
    }
    // Writes after the last snapshot, which every reader must follow live.
    writes_after(40).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 20, "the writer ran concurrently ({writes} transactions)");
    for (w, r) in readers.iter_mut() {
        let expected = oracle(&c, "seam", COLS, w).await;
        r.live_until(Duration::from_secs(20), |r| r.sorted_rows() == expected).await;
        assert_eq!(r.refetches, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_key_changes_and_replica_modes() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE mv (id int PRIMARY KEY, grp text NOT NULL, n int NOT NULL, note text);
         INSERT INTO mv VALUES (1, 'a', 1, 'x'), (2, 'b', 2, 'y'), (3, 'a', 3, 'z');",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await;
    let mut r = ShapeReader::new(&s.base, &[("table", "mv"), ("where", "grp = 'a'")]);
    r.catch_up().await;
    assert_eq!(r.rows.len(), 2);
    let mut full = ShapeReader::new(&s.base, &[("table", "mv"), ("replica", "full")]);
    full.catch_up().await;

    c.batch_execute(
        "UPDATE mv SET grp = 'a' WHERE id = 2;  -- moves in
         UPDATE mv SET grp = 'b' WHERE id = 1;  -- moves out
         UPDATE mv SET id = 30 WHERE id = 3;    -- key change inside the shape
         UPDATE mv SET note = 'q' WHERE id = 2;",
    )
    .await
    .unwrap();
    let expected = oracle(&c, "mv", COLS, "grp = 'a'").await;
    r.live_until(Duration::from_secs(10), |r| r.sorted_rows() == expected).await;
    let ops: Vec<&str> = r.seen_ops.iter().skip(2).map(|(_, op, _)| op.as_str()).collect();
    assert_eq!(ops, vec!["insert", "delete", "delete", "insert", "update"]);

    // The raw messages of the key change carry key_change_to / key_change_from.
    let raw = get(&format!(
        "{}/v1/shape?table=mv&where=grp%20%3D%20%27a%27&offset=0_inf&handle={}",
        s.base,
        r.handle.clone().unwrap()
    ))
    .await;
    let msgs = raw.body.as_array().unwrap();
    let del = msgs.iter().find(|m| m["headers"]["key_change_to"].is_string()).expect("key_change_to");
    assert_eq!(del["headers"]["key_change_to"], "\"public\".\"mv\"/\"30\"");
    let ins = msgs.iter().find(|m| m["headers"]["key_change_from"].is_string()).expect("key_change_from");
    let del_op = del["headers"]["op_position"].as_u64().unwrap();
    assert_eq!(ins["headers"]["op_position"].as_u64().unwrap(), del_op + 1);

    // replica=default updates carry pk + changed columns; replica=full the whole row + old_value.
    let upd = msgs.iter().rev().find(|m| m["headers"]["operation"] == "update").unwrap();
    assert_eq!(upd["value"], serde_json::json!({"id": "2", "note": "q"}));
    let all = oracle(&c, "mv", COLS, "").await;
    full.live_until(Duration::from_secs(10), |r| r.sorted_rows() == all).await;
    let raw_full =
        get(&format!("{}/v1/shape?table=mv&replica=full&offset=0_inf&handle={}", s.base, full.handle.clone().unwrap()))
            .await;
    let upd = raw_full.body.as_array().unwrap().iter().rev().find(|m| m["headers"]["operation"] == "update").unwrap();
    assert_eq!(upd["value"], serde_json::json!({"id": "2", "grp": "a", "n": "2", "note": "q"}));
    assert_eq!(upd["old_value"], serde_json::json!({"note": "y"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_and_schema_change_rotate_shapes() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE rot (id int PRIMARY KEY, v text); INSERT INTO rot VALUES (1, 'a'), (2, 'b');
         CREATE TABLE rot2 (id int PRIMARY KEY, v text); INSERT INTO rot2 VALUES (1, 'a');
         CREATE TABLE rot3 (id int PRIMARY KEY, v varchar(10)); INSERT INTO rot3 VALUES (1, 'a');
         CREATE TABLE rot4 (id int PRIMARY KEY, v text NOT NULL); INSERT INTO rot4 VALUES (1, 'a');",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await;
    for (table, ddl) in [
        ("rot", "TRUNCATE rot"),
        ("rot2", "ALTER TABLE rot2 ADD COLUMN extra int"),
        // Only the type modifier changes: the schema clients were told is stale.
        ("rot3", "ALTER TABLE rot3 ALTER COLUMN v TYPE varchar(20)"),
        // Only the primary key changes: row keys are made of it.
        ("rot4", "ALTER TABLE rot4 DROP CONSTRAINT rot4_pkey, ADD PRIMARY KEY (v)"),
    ] {
        let mut r = ShapeReader::new(&s.base, &[("table", table)]);
        r.catch_up().await;
        let old = r.handle.clone().unwrap();
        c.batch_execute(ddl).await.unwrap();
        c.batch_execute(&format!("INSERT INTO {table} (id, v) VALUES (9, 'after')")).await.unwrap();
        // The primary key is checked against the catalog in the background: the change after
        // the DDL may still be served before the rotation.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let resp = loop {
            let resp = r.step(true).await;
            if resp.status == 409 || table != "rot4" || std::time::Instant::now() > deadline {
                break resp;
            }
        };
        assert_eq!(resp.status, 409, "{ddl} must rotate the shape: {}", resp.text);
        assert_ne!(resp.header("electric-handle").unwrap(), old);
        let cols: &[&str] = if table == "rot2" { &["id", "v", "extra"] } else { &["id", "v"] };
        let expected = oracle(&c, table, cols, "").await;
        r.live_until(Duration::from_secs(10), |r| r.sorted_rows() == expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_chunks_are_immutable() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE ch (id int PRIMARY KEY, payload text);
         INSERT INTO ch SELECT g, repeat('x', 200) FROM generate_series(1, 300) g;",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await; // chunk_bytes = 10 000
    for i in 0..40 {
        c.execute("UPDATE ch SET payload = repeat('y', 250) WHERE id = $1", &[&(i + 1)]).await.unwrap();
    }
    let mut r = ShapeReader::new(&s.base, &[("table", "ch")]);
    let mut served: HashMap<String, (String, String, String)> = HashMap::new();
    loop {
        let before = r.offset.clone();
        let resp = r.step(false).await;
        served
            .insert(before, (resp.text.clone(), resp.header("electric-offset").unwrap(), resp.header("etag").unwrap()));
        if resp.header("electric-up-to-date").is_some() {
            break;
        }
    }
    assert!(served.len() > 5, "the shape spans several chunks ({} responses)", served.len());
    for i in 0..30 {
        c.execute("UPDATE ch SET payload = 'z' WHERE id = $1", &[&(100 + i)]).await.unwrap();
    }
    // Wait until the new changes are in the shape's log.
    r.live_until(Duration::from_secs(10), |r| r.rows.values().filter(|row| row["payload"] == "z").count() == 30).await;
    let handle = r.handle.clone().unwrap();
    let without_up_to_date = |body: &str| {
        let v: Value = serde_json::from_str(body).unwrap();
        let msgs: Vec<Value> =
            v.as_array().unwrap().iter().filter(|m| m["headers"]["control"] != "up-to-date").cloned().collect();
        msgs
    };
    for (offset, (body, end, etag)) in &served {
        let again = get(&format!("{}/v1/shape?table=ch&offset={offset}&handle={handle}", s.base)).await;
        assert_eq!(again.header("electric-offset").as_ref(), Some(end));
        if body.contains("\"up-to-date\"") {
            // The response that reached the head then is no longer told it has everything: same
            // entries, no up-to-date, another tag.
            assert_eq!(
                without_up_to_date(&again.text),
                without_up_to_date(body),
                "entries for offset {offset} changed"
            );
            assert!(again.header("electric-up-to-date").is_none(), "offset {offset} still claims up-to-date");
            assert_ne!(again.header("etag").as_ref(), Some(etag));
        } else {
            assert_eq!(&again.text, body, "response for offset {offset} changed");
            assert_eq!(again.header("etag").as_ref(), Some(etag));
        }
    }
}

/// A transaction bigger than `chunk_bytes` comes in several responses, each within about
/// `chunk_bytes`, live and when catching up; only the last piece ends the transaction
/// (`last: true`, then `up-to-date`), and readers end with exactly Postgres's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_comes_in_chunk_sized_responses() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE bigtx (id int PRIMARY KEY, payload text);
         INSERT INTO bigtx SELECT g, repeat('s', 100) FROM generate_series(1, 50) g;",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await; // chunk_bytes = 10 000
    let mut live = ShapeReader::new(&s.base, &[("table", "bigtx")]);
    live.catch_up().await;
    // One transaction of about 35 kB of messages (100 inserts of ~350 bytes) and a few updates.
    c.batch_execute(
        "BEGIN;
         INSERT INTO bigtx SELECT g, repeat('t', 180) FROM generate_series(1001, 1100) g;
         UPDATE bigtx SET payload = 'u' WHERE id IN (3, 1050);
         DELETE FROM bigtx WHERE id IN (4, 1060);
         COMMIT;",
    )
    .await
    .unwrap();
    let expected = oracle(&c, "bigtx", &["id", "payload"], "").await;

    // Checks one reader's responses: the transaction's pieces, their sizes, where it ends.
    fn check(responses: &[(usize, Value)], context: &str) {
        let pieces: Vec<&(usize, Value)> = responses
            .iter()
            .filter(|(_, b)| b.as_array().unwrap().iter().any(|m| m["headers"]["lsn"].is_string()))
            .collect();
        assert!(pieces.len() >= 3, "{context}: the transaction spans several responses ({})", pieces.len());
        for (i, (len, body)) in pieces.iter().enumerate() {
            assert!(*len <= 12_000, "{context}: response {i} has {len} bytes");
            let msgs = body.as_array().unwrap();
            let last_flags = msgs.iter().filter(|m| m["headers"]["last"] == true).count();
            let up_to_date = msgs.iter().any(|m| m["headers"]["control"] == "up-to-date");
            if i + 1 < pieces.len() {
                assert!(*len >= 8_000, "{context}: response {i} has only {len} bytes");
                assert_eq!((last_flags, up_to_date), (0, false), "{context}: response {i} ends the transaction");
            } else {
                assert_eq!(last_flags, 1, "{context}: the last piece ends the transaction");
            }
        }
    }

    // A reader at the head gets it live, a chunk at a time.
    let mut responses = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(std::time::Instant::now() < deadline, "live reader never caught up");
        let r = live.step(true).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let done = r.header("electric-up-to-date").is_some();
        responses.push((r.text.len(), r.body));
        if done && live.sorted_rows() == expected {
            break;
        }
    }
    check(&responses, "live");
    assert_same_rows(&live.sorted_rows(), &expected, "live reader");

    // A new reader catches up from the start: snapshot, then the transaction in pieces.
    let mut fresh = ShapeReader::new(&s.base, &[("table", "bigtx")]);
    let mut responses = vec![];
    loop {
        let r = fresh.step(false).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let done = r.header("electric-up-to-date").is_some();
        responses.push((r.text.len(), r.body));
        if done {
            break;
        }
    }
    check(&responses, "catch-up");
    assert_same_rows(&fresh.sorted_rows(), &expected, "catching-up reader");
    assert!(responses.iter().all(|(len, _)| *len <= 12_000));
}

//! Durability across crashes and faults: `kill -9` of the server mid-stream, a torn record left
//! at a log's end, a Postgres restart mid-stream, every Postgres session of the server
//! terminated, SIGTERM. Afterwards every shape equals the SQL oracle, with no duplicates and no
//! refetch.
//! And the one case where a refetch is right: Postgres invalidated the slot while the server was
//! down (`max_slot_wal_keep_size`).

use crate::common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const COLS: &[&str] = &["id", "grp", "n"];

/// The state of Ferrite's replication slot (which the test's server made).
async fn slot(c: &tokio_postgres::Client) -> ferrite_pg::replication::SlotStatus {
    ferrite_pg::replication::slot_status(c, "ferrite_slot").await.unwrap().expect("the slot")
}

/// A writer committing small transactions until `stop`, reconnecting when Postgres goes away;
/// `committed` counts its commits. Returns how many it made.
fn start_writer(url: String, stop: Arc<AtomicBool>, committed: Arc<AtomicU64>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut c = None;
        let mut i = 0i64;
        while !stop.load(Ordering::Relaxed) {
            if c.is_none() {
                c = ferrite_pg::connect::connect(&url).await.ok();
                if c.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            i += 1;
            let sql = format!(
                "BEGIN; INSERT INTO w VALUES ({}, 'g{}', {i}); UPDATE w SET n = n + 1 WHERE id = {}; DELETE FROM w WHERE id = {}; COMMIT;",
                1000 + i,
                i % 3,
                (i * 7) % 1000 + 1,
                (i * 11) % 1000 + 1
            );
            match c.as_ref().unwrap().batch_execute(&sql).await {
                Ok(()) => {
                    committed.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    c = None;
                }
            }
        }
        committed.load(Ordering::Relaxed)
    })
}

/// Waits until the writer has committed `n` more transactions than it had when called.
async fn writes_after(committed: &AtomicU64, n: u64, what: &str) {
    let target = committed.load(Ordering::Relaxed) + n;
    wait_until(&format!("{n} more writes {what}"), Duration::from_secs(30), || {
        let done = committed.load(Ordering::Relaxed) >= target;
        async move { done }
    })
    .await;
}

async fn seed(db: &TestDb) -> tokio_postgres::Client {
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE w (id int PRIMARY KEY, grp text NOT NULL, n int NOT NULL);
         INSERT INTO w SELECT g, 'g' || (g % 3), g FROM generate_series(1, 1000) g;",
    )
    .await
    .unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart() {
    let db = TestDb::new().await;
    let c = seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&db.url, dir.path(), port);
    wait_healthy(&base).await;

    let wheres = ["", "grp = 'g1'"];
    let mut readers: Vec<ShapeReader> = vec![];
    for w in wheres {
        let mut params = vec![("table", "w")];
        if !w.is_empty() {
            params.push(("where", w));
        }
        let mut r = ShapeReader::new(&base, &params);
        r.catch_up().await;
        readers.push(r);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = start_writer(db.url.clone(), stop.clone(), committed.clone());
    // Follow live while the writer commits a few dozen transactions, then kill the server
    // without warning, twice.
    for round in 0..2 {
        let target = committed.load(Ordering::Relaxed) + 40;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while committed.load(Ordering::Relaxed) < target {
            assert!(tokio::time::Instant::now() < deadline, "the writer stalled while readers followed live");
            for r in readers.iter_mut() {
                r.step(true).await;
            }
        }
        // The live writes were made durable through the storage journal (replayed into the
        // logs when the server starts again), not log by log.
        let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        let journaled: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("ferrite_shape_log_journal_records_total "))
            .and_then(|v| v.trim().parse().ok())
            .expect("the journal metric");
        assert!(journaled > 0, "live writes went through the journal");
        server.kill_9();
        // Transactions the server must catch up on from its slot when it is back.
        writes_after(&committed, 20 * (round + 1), "while the server is down").await;
        server = spawn_server(&db.url, dir.path(), port);
        wait_healthy(&base).await;
    }
    writes_after(&committed, 20, "after the last restart").await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 10, "writes happened during the crashes ({writes})");
    for (r, w) in readers.iter_mut().zip(wheres) {
        let expected = oracle(&c, "w", COLS, w).await;
        r.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
        assert_eq!(r.refetches, 0, "resumed from its offset without a refetch");
    }
    // A fresh client sees the same rows. Its catch-up may stop at a cached up-to-date boundary
    // pinned before the crashes (as Electric's would); it then continues live, like any client.
    let expected = oracle(&c, "w", COLS, "").await;
    let mut fresh = ShapeReader::new(&base, &[("table", "w")]);
    fresh.catch_up().await;
    fresh.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
    assert_same_rows(&fresh.sorted_rows(), &expected, "fresh client after the crashes");
    assert_eq!(fresh.refetches, 0);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_stream() {
    let mut db = TestDb::new().await;
    let _ = seed(&db).await;
    let s = TestServer::start(&db).await;
    let mut r = ShapeReader::new(&s.base, &[("table", "w")]);
    r.catch_up().await;
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = start_writer(db.url.clone(), stop.clone(), committed.clone());
    writes_after(&committed, 20, "before the restart").await;
    db.cluster.restart().expect("restart postgres");
    // The writer reconnects: transactions the server must follow over its new stream.
    writes_after(&committed, 20, "after the restart").await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 5);
    let c = db.client().await;
    let expected = oracle(&c, "w", COLS, "").await;
    r.live_until(Duration::from_secs(40), |r| r.sorted_rows() == expected).await;
    assert_eq!(r.refetches, 0);
}

/// `max_slot_wal_keep_size` honoured: while the server is down, Postgres removes WAL its slot
/// still needs and invalidates the slot. Back up, the server notices, makes a new slot and starts
/// every shape over — its readers get a 409 and read the shape afresh — rather than serve a log
/// with a gap, and says so in `/metrics`; changes flow through the new slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_invalidated_while_down_is_made_anew_and_every_shape_starts_over() {
    let db = TestDb::new().await;
    let c = seed(&db).await;
    c.batch_execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'").await.unwrap();
    c.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&db.url, dir.path(), port);
    wait_healthy(&base).await;
    let mut reader = ShapeReader::new(&base, &[("table", "w")]);
    reader.catch_up().await;
    server.kill_9();

    // Changes while it is down, then enough WAL, switched and checkpointed, that Postgres
    // gives up the WAL the slot needs.
    c.execute("UPDATE w SET n = n + 1000 WHERE id <= 10", &[]).await.unwrap();
    for i in 0..20 {
        if slot(&c).await.lost {
            break;
        }
        let from = 10_000 + i * 1000;
        c.execute("INSERT INTO w SELECT g, 'pad', g FROM generate_series($1::int, $1::int + 999) g", &[&from])
            .await
            .unwrap();
        c.batch_execute("SELECT pg_switch_wal()").await.unwrap();
        c.batch_execute("CHECKPOINT").await.unwrap();
    }
    assert!(slot(&c).await.lost, "Postgres invalidated the slot");

    server = spawn_server(&db.url, dir.path(), port);
    wait_healthy(&base).await;
    let expected = oracle(&c, "w", COLS, "").await;
    reader.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
    assert_eq!(reader.refetches, 1, "the shape started over once");
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "ferrite_replication_slot_invalidations_total 1"), "{metrics}");
    // The alert rules and the dashboard in deploy/monitoring name only metrics the server has.
    for file in ["ferrite-alerts.yml", "grafana-dashboard.json"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        if file.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text).expect("the dashboard is JSON");
        }
        let names: std::collections::BTreeSet<&str> = text
            .match_indices("ferrite_")
            .map(|(i, _)| {
                let rest = &text[i..];
                &rest[..rest.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(rest.len())]
            })
            .collect();
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            let exported = metrics
                .lines()
                .any(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')));
            assert!(exported, "{file} names {name}, which /metrics does not have");
        }
    }
    assert!(!slot(&c).await.lost, "a new slot");
    // The new slot streams.
    c.execute("UPDATE w SET n = -1 WHERE id = 1", &[]).await.unwrap();
    let expected = oracle(&c, "w", COLS, "").await;
    reader.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
    drop(server);
}

/// Postgres ends every session of Ferrite's (`pg_terminate_backend`: the replication stream, the
/// write connections, the snapshot and presence pools) three times while a client writes
/// numbered transactions and a reader follows live: writes are refused with 503 and
/// `retry-after` at worst, and applied exactly once when retried; the reader sees every row
/// exactly once, without a refetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_terminated_by_postgres_is_recovered_without_loss_or_duplicates() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = spawn_server(&db.url, dir.path(), port);
    wait_healthy(&base).await;
    let mut reader = ShapeReader::new(&base, &[("table", "items")]);
    reader.catch_up().await;
    const WRITES: i64 = 60;
    let (mut refused, mut terminated) = (0, 0);
    for n in 1..=WRITES {
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        let tx = serde_json::json!({"id": n, "hlc": format!("{now_ms}-0"), "mutations": [{"op": "insert", "table": "items", "value": {"id": n}}]});
        let body = serde_json::json!({"client_id": "numbered-writer", "transactions": [tx]});
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = post_tx(&base, None, body.clone()).await;
            if r.status == 200 {
                assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
                break;
            }
            assert_eq!(r.status, 503, "at worst 503: {}", r.text);
            assert!(r.header("retry-after").is_some(), "with retry-after");
            assert!(std::time::Instant::now() < deadline, "write {n} never went through");
            refused += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if n % 20 == 10 {
            // (Each time once the replication stream is back from the last time.)
            let streaming = || async {
                c.query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' AND datname = current_database()",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                    == 1
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !streaming().await {
                assert!(std::time::Instant::now() < deadline, "the replication stream never came back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let ended: i64 = c
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE pid <> pg_backend_pid() AND datname = current_database()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert!(ended >= 2, "the replication stream and at least one pool connection ({ended})");
            terminated += ended;
        }
    }
    let expected: Vec<serde_json::Value> = (1..=WRITES).map(|n| serde_json::json!({"id": n.to_string()})).collect();
    let mut expected = expected;
    expected.sort_by_key(|a| a.to_string());
    reader.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
    assert_eq!(reader.refetches, 0, "no refetch");
    let mut ops = reader.seen_ops.clone();
    let all = ops.len();
    ops.sort();
    ops.dedup();
    assert_eq!(ops.len(), all, "no change seen twice");
    let count: i64 = c.query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    assert_eq!(count, WRITES, "each write applied once");
    println!("{terminated} sessions ended; {refused} writes refused and retried");
    drop(server);
}

/// SIGTERM: held long-polls are answered at once (as at their timeout) and SSE streams end
/// cleanly — not cut —, the process exits 0 within seconds with the slot confirmed through what
/// its readers were shown, and a restart resumes the readers where they were without a refetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_live_readers_cleanly_confirms_the_slot_and_a_restart_resumes() {
    let db = TestDb::new().await;
    let c = seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let slow = [("FERRITE_LONG_POLL_TIMEOUT_MS", "20000"), ("FERRITE_SSE_TIMEOUT_SECS", "60")];
    let mut server = spawn_server_with_env(&db.url, dir.path(), port, &slow);
    wait_healthy(&base).await;
    let mut reader = ShapeReader::new(&base, &[("table", "w")]);
    reader.catch_up().await;
    let before = ferrite_pg::replication::current_wal_lsn(&c).await.unwrap();
    c.execute("UPDATE w SET n = -5 WHERE id = 5", &[]).await.unwrap();
    let expected = oracle(&c, "w", COLS, "").await;
    reader.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;

    // A long-poll and an SSE stream held, then SIGTERM.
    let url = format!("{base}/v1/shape?table=w&handle={}&offset={}", reader.handle.clone().unwrap(), reader.offset);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let long_poll = tokio::spawn(http.get(format!("{url}&live=true")).send());
    let sse = http.get(format!("{url}&live=true&live_sse=true")).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    wait_until("both held", Duration::from_secs(10), || async {
        let m = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        m.lines().any(|l| l == "ferrite_live_requests_waiting 2")
    })
    .await;
    let signalled = std::time::Instant::now();
    let status = std::process::Command::new("kill").arg("-TERM").arg(server.0.id().to_string()).status().unwrap();
    assert!(status.success());
    let answered = long_poll.await.unwrap().expect("the long-poll is answered, not cut");
    assert_eq!(answered.status(), 200);
    assert!(answered.headers().contains_key("electric-up-to-date"), "answered as at its timeout");
    let long_poll_took = signalled.elapsed();
    let mut events = sse.bytes_stream();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut events))
        .await
        .expect("the SSE stream ends")
    {
        chunk.expect("ended cleanly, not cut");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(long_poll_took < Duration::from_secs(3), "at once, not at the 20 s timeout: {long_poll_took:?}");
    // What the reader was shown is confirmed to Postgres.
    let confirmed = slot(&c).await.confirmed_flush_lsn;
    assert!(confirmed > before, "confirmed {confirmed:X}, the update was after {before:X}");

    // Restarted, the reader goes on where it was.
    server = spawn_server_with_env(&db.url, dir.path(), port, &slow);
    wait_healthy(&base).await;
    c.execute("UPDATE w SET n = -6 WHERE id = 6", &[]).await.unwrap();
    let expected = oracle(&c, "w", COLS, "").await;
    reader.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
    assert_eq!(reader.refetches, 0);
    drop(server);
}

/// A crash mid-write leaves a torn record at the end of a shape's log: garbage after the last
/// whole transaction (here written on purpose while the server is down). The server cuts it
/// when it starts, serves the shape unchanged — no garbage, no refetch — and appends after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_left_by_a_crash_is_cut_at_start() {
    let db = TestDb::new().await;
    let c = seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&db.url, dir.path(), port);
    wait_healthy(&base).await;
    let mut reader = ShapeReader::new(&base, &[("table", "w")]);
    reader.catch_up().await;
    c.execute("UPDATE w SET n = -1 WHERE id = 1", &[]).await.unwrap();
    let expected = oracle(&c, "w", COLS, "").await;
    reader.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
    server.kill_9();

    // Garbage after the last whole record of the shape's log: a record header promising more
    // bytes than follow, then noise.
    let shape_dir = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("shape.json").is_file())
        .expect("the shape's directory");
    let log = shape_dir.join("log");
    let before = std::fs::metadata(&log).unwrap().len();
    let mut torn = 4096u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xAB; 1000]);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&torn).unwrap();
    }

    server = spawn_server(&db.url, dir.path(), port);
    wait_healthy(&base).await;
    assert_eq!(std::fs::metadata(&log).unwrap().len(), before, "the torn tail was cut");
    c.execute("UPDATE w SET n = -2 WHERE id = 2", &[]).await.unwrap();
    let expected = oracle(&c, "w", COLS, "").await;
    reader.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
    assert_eq!(reader.refetches, 0);
    // A new reader of the whole shape gets the same rows: nothing of the garbage.
    let mut fresh = ShapeReader::new(&base, &[("table", "w")]);
    fresh.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
    assert_eq!(fresh.refetches, 0);
    drop(server);
}

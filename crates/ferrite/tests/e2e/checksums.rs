//! Convergence checksums with a real `ferrite serve` process and the Rust client: the digest the
//! server keeps per shape (snapshot, then change by change, read back from the log after a
//! restart) equals the one the client computes over SQLite for every column type; a pending
//! local write does not look like drift; a replica damaged behind the client's back is noticed,
//! counted and repaired by fetching the shape afresh.

use crate::common::*;
use ferrite_client::{Change, Client, ShapeDef, TokenSource, Verification};
use std::collections::BTreeMap;
use std::time::Duration;

const SCHEMA: &str = "
    CREATE TABLE items (
        id int8 PRIMARY KEY, title text, n int4, x float8, f float4, done bool, meta jsonb, doc json,
        tags text[], grid int4[][], amount numeric, at timestamptz, u uuid);
    INSERT INTO items SELECT i, 'item ' || i || ' é☃', i % 7, i / 3.0, i * 0.1, i % 2 = 0,
        jsonb_build_object('k', i, 'nested', jsonb_build_object('z', 1.5, 'a', ARRAY['x', 'y'])),
        json_build_object('b', i, 'a', 'text'),
        ARRAY['a b', 'q\"x', NULL, 'NULL'], ARRAY[[i, 2], [3, NULL]], i * 1.10, '2026-01-01'::timestamptz + i * interval '1 hour',
        md5(i::text)::uuid
    FROM generate_series(1, 200) i;
    UPDATE items SET x = 'Infinity', f = 'NaN', title = NULL, meta = NULL WHERE id = 5;
    UPDATE items SET x = 1e300, f = -0.0 WHERE id = 6;";

fn key(id: &str) -> BTreeMap<String, Option<String>> {
    BTreeMap::from([("id".to_string(), Some(id.to_string()))])
}

/// Syncs `def` until its local table holds as many rows as Postgres' `items WHERE filter` (a
/// sync ends at the server's up-to-date, which may come before a commit has been replicated).
async fn sync_to(client: &Client, def: &ShapeDef, pg: &tokio_postgres::Client, filter: &str) {
    let want: i64 = pg.query_one(&format!("SELECT count(*) FROM items WHERE {filter}"), &[]).await.unwrap().get(0);
    wait_until("the replica to catch up", Duration::from_secs(20), || async {
        client.sync(def).await.unwrap();
        let n = client.query(&format!("SELECT count(*) FROM {}", def.local_table()), &[]).unwrap();
        n == vec![vec![serde_json::json!(want)]]
    })
    .await;
}

async fn verified(client: &Client, def: &ShapeDef) -> Verification {
    let (c, d) = (client.clone(), def.clone());
    tokio::task::spawn_blocking(move || c.verify(&d)).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_client_digests_agree_and_a_damaged_replica_is_repaired() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute(SCHEMA).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&db.url, data.path(), port);
    wait_healthy(&base).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.db");
    let client = Client::open(&path, &base, TokenSource::None).unwrap();
    client.set_checksum_interval(Some(Duration::ZERO));
    let all = ShapeDef::table("items");
    let some = ShapeDef::table("items").filter("n = 3").columns(&["id", "title", "meta", "tags"]).into_table("some");
    for def in [&all, &some] {
        client.sync(def).await.unwrap();
        let v = verified(&client, def).await;
        assert!(matches!(v, Verification::Match(d) if d.count > 0), "after the snapshot: {v:?}");
    }

    // Every kind of change, with the default replica mode (updates carry changed columns only).
    pg.batch_execute(
        "INSERT INTO items (id, title, n, meta, tags) VALUES (1000, 'new', 3, '{\"b\": [1, {\"c\": null}]}', '{}');
         UPDATE items SET title = 'renamed', x = 2.5 WHERE id IN (1, 2, 3);
         UPDATE items SET n = 3 WHERE id = 8;                 -- moves into `some`
         UPDATE items SET n = 4 WHERE id = 10;                -- moves out of `some`
         UPDATE items SET id = 2000 WHERE id = 17;            -- a key change
         UPDATE items SET meta = '{\"k\": 1}' WHERE id = 24;
         DELETE FROM items WHERE id IN (31, 38);",
    )
    .await
    .unwrap();
    for (def, filter) in [(&all, "true"), (&some, "n = 3")] {
        sync_to(&client, def, &pg, filter).await;
        assert!(matches!(verified(&client, def).await, Verification::Match(_)), "after changes");
    }
    let count = |v: Verification| match v {
        Verification::Match(d) => d.count,
        other => panic!("expected a match, got {other:?}"),
    };
    let rows: i64 = pg.query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    assert_eq!(count(verified(&client, &all).await), rows as u64);

    // A pending local write (not pushed yet) is not drift: its row counts as the server sent it.
    client
        .write(&[Change::Update {
            table: "items".into(),
            key: key("1"),
            set: BTreeMap::from([("title".to_string(), Some("local only".to_string()))]),
        }])
        .unwrap();
    assert!(matches!(verified(&client, &all).await, Verification::Match(_)), "with a pending write");
    client.push().await.unwrap();

    // The server restarts: the digest is read back from the shape's log and carries on.
    server.kill_9();
    let mut server = spawn_server(&db.url, data.path(), port);
    wait_healthy(&base).await;
    pg.batch_execute("UPDATE items SET title = 'after restart' WHERE id = 40; DELETE FROM items WHERE id = 41;")
        .await
        .unwrap();
    sync_to(&client, &all, &pg, "true").await;
    assert!(matches!(verified(&client, &all).await, Verification::Match(_)), "after the server restarted");
    let before = client.metrics().unwrap();
    assert_eq!((before.checksum_mismatches, before.checksum_repairs), (0, 0));
    assert!(before.checksums_verified > 0);

    // Damage behind the client's back: a value changed, a row deleted, a row added.
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch(
            "UPDATE items SET title = 'tampered' WHERE id = 50;
             DELETE FROM items WHERE id = 51;
             INSERT INTO items (id, title) VALUES (99999, 'ghost');",
        )
        .unwrap();
    }
    assert!(matches!(verified(&client, &all).await, Verification::Mismatch { .. }), "the damage is seen");
    // The next sync notices it at its up-to-date and fetches the shape afresh.
    let report = client.sync(&all).await.unwrap();
    assert!(report.refetches >= 1, "{report:?}");
    assert!(matches!(verified(&client, &all).await, Verification::Match(_)), "repaired");
    let after = client.metrics().unwrap();
    assert!(
        after.checksum_mismatches >= 1 && after.checksum_repairs == 1 && after.checksum_unrepaired == 0,
        "{after:?}"
    );
    let local = client.query("SELECT title FROM items WHERE id IN (50, 51, 99999) ORDER BY id", &[]).unwrap();
    let expected: Vec<Vec<serde_json::Value>> = pg
        .query("SELECT title FROM items WHERE id IN (50, 51) ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| vec![serde_json::json!(r.get::<_, Option<String>>(0))])
        .collect();
    assert_eq!(local, expected, "the replica holds Postgres' rows again");

    // Damage while the app is closed: a reopened replica (default interval) is compared at its
    // first up-to-date, since its rows were read back from storage.
    drop(client);
    rusqlite::Connection::open(&path).unwrap().execute("UPDATE items SET x = -1 WHERE id = 60", []).unwrap();
    let client = Client::open(&path, &base, TokenSource::None).unwrap();
    let report = client.sync(&all).await.unwrap();
    assert_eq!(report.refetches, 1, "{report:?}");
    assert_eq!(client.metrics().unwrap().checksum_repairs, 1);
    let x: f64 = pg.query_one("SELECT x FROM items WHERE id = 60", &[]).await.unwrap().get(0);
    assert_eq!(client.query("SELECT x FROM items WHERE id = 60", &[]).unwrap(), vec![vec![serde_json::json!(x)]]);
    // A fresh replica is not compared right after its first sync (its rows were just fetched).
    let fresh = Client::open(dir.path().join("fresh.db"), &base, TokenSource::None).unwrap();
    fresh.sync(&all).await.unwrap();
    assert_eq!(fresh.metrics().unwrap().checksums_verified, 0);
    server.kill_9();
}

/// A subscription checks at its up-to-date and repairs by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_repairs_a_damaged_replica() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute("CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 50) i;")
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = spawn_server(&db.url, data.path(), port);
    wait_healthy(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.db");
    let client = Client::open(&path, &base, TokenSource::None).unwrap();
    client.set_checksum_interval(Some(Duration::ZERO));
    let notes = ShapeDef::table("notes");
    client.sync(&notes).await.unwrap();
    let _sub = client.subscribe(notes.clone());
    rusqlite::Connection::open(&path).unwrap().execute("UPDATE notes SET body = 'bad' WHERE id = 7", []).unwrap();
    // A change wakes the live subscription; at its up-to-date it checks, finds the damage and
    // starts the shape over.
    pg.batch_execute("INSERT INTO notes VALUES (51, 'new')").await.unwrap();
    wait_until("the subscription to repair the replica", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let m = client.metrics().unwrap();
            let body = client.query("SELECT body FROM notes WHERE id = 7", &[]).unwrap();
            let n = client.query("SELECT count(*) FROM notes", &[]).unwrap();
            m.checksum_repairs == 1
                && body == vec![vec![serde_json::json!("note 7")]]
                && n == vec![vec![serde_json::json!(51)]]
        }
    })
    .await;
    assert!(matches!(verified(&client, &notes).await, Verification::Match(_)));
}

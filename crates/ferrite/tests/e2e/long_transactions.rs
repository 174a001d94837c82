//! A long-running transaction on Postgres (another session that wrote and stays open) while new
//! shapes are asked for: requests never hang — they are served from a consistent snapshot, or
//! answered 503 + retry-after within a bound, leaving nothing behind — and once the transaction
//! commits its rows reach every shape exactly once (the snapshot/stream boundary).

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The data directory's entries (shape directories and the server's own files).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Sessions of this database left inside a transaction, other than `except`'s.
async fn idle_in_transaction(c: &tokio_postgres::Client, except: i32) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state LIKE 'idle in transaction%' AND pid <> $1",
        &[&except],
    )
    .await
    .unwrap()
    .get(0)
}

/// A new-shape request, which must be answered within 20 s.
async fn request_within(url: &str) -> (Resp, Duration) {
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), get(url))
        .await
        .expect("the request was not answered within 20 s while a long transaction was open");
    (r, start.elapsed())
}

/// Asserts that the reader saw each key's insert at most once.
fn no_duplicate_inserts(r: &ShapeReader) {
    let mut keys: Vec<&str> =
        r.seen_ops.iter().filter(|(_, op, _)| op == "insert").map(|(k, _, _)| k.as_str()).collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), all, "a row inserted twice: {:?}", r.seen_ops);
}

/// At the first start the slot does not exist, and Postgres creates it only after every
/// transaction open then has ended. A shape snapshotted before that would miss the long
/// transaction's rows for good (they commit before the slot's start, so they are never
/// streamed): new shapes are refused with 503 + retry-after until the slot exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_at_the_first_start_holds_new_shapes_back_with_503_then_its_rows_arrive_once() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'seed' FROM generate_series(1, 3) g;",
    )
    .await
    .unwrap();
    let long = db.client().await;
    long.batch_execute("BEGIN; INSERT INTO items VALUES (100, 'long')").await.unwrap();
    let long_pid: i32 = long.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = spawn_server(&db.url, dir.path(), port);
    let health = format!("{base}/v1/health");
    wait_until("the server listens", Duration::from_secs(20), || {
        let h = health.clone();
        async move { reqwest::get(&h).await.is_ok() }
    })
    .await;
    let before = entries(dir.path());
    let (r, took) = request_within(&format!("{base}/v1/shape?table=items&offset=-1")).await;
    assert_eq!(r.status, 503, "a new shape before the slot exists: {}", r.text);
    assert!(r.header("retry-after").is_some(), "with retry-after");
    assert_eq!(r.body["code"], "replication_slot_not_ready", "{}", r.text);
    assert!(took < Duration::from_secs(15), "answered within the bound ({took:?})");
    assert_eq!(entries(dir.path()), before, "nothing of the shape on disk");
    assert_eq!(idle_in_transaction(&c, long_pid).await, 0, "no snapshot left open");

    long.batch_execute("COMMIT").await.unwrap();
    wait_healthy(&base).await;
    let mut reader = ShapeReader::new(&base, &[("table", "items")]);
    reader.catch_up().await;
    let expected = oracle(&c, "items", &["id", "v"], "").await;
    assert_eq!(expected.len(), 4);
    assert_eq!(reader.sorted_rows(), expected, "the long transaction's row is in the shape");
    c.execute("INSERT INTO items VALUES (101, 'after')", &[]).await.unwrap();
    let expected = oracle(&c, "items", &["id", "v"], "").await;
    reader.live_until(Duration::from_secs(20), |r| r.sorted_rows() == expected).await;
    no_duplicate_inserts(&reader);
    assert_eq!(reader.refetches, 0);
    drop(server);
}

/// A running server, a transaction that wrote to two tables and stays open: a new shape on a
/// table already replicated is served at once from a snapshot without the open rows, and gets
/// them once through the stream when the transaction commits; the first shape on a table not
/// yet replicated (setting it up needs a lock the open transaction conflicts with) is answered
/// 503 + retry-after within seconds instead of waiting for ever, leaves no lock request queued
/// in Postgres (which would block the table's other users) and no shape, and is made once the
/// transaction has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_never_hangs_a_new_shape_and_its_rows_arrive_exactly_once() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         CREATE TABLE fresh (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'seed' FROM generate_series(1, 3) g;
         INSERT INTO fresh SELECT g, 'seed' FROM generate_series(1, 3) g;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = spawn_server(&db.url, dir.path(), port);
    wait_healthy(&base).await;
    let mut first = ShapeReader::new(&base, &[("table", "items")]);
    first.catch_up().await;

    let long = db.client().await;
    long.batch_execute("BEGIN; INSERT INTO items VALUES (100, 'long'); INSERT INTO fresh VALUES (100, 'long')")
        .await
        .unwrap();
    let long_pid: i32 = long.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);

    // A table already replicated: served from a snapshot that does not hold the open rows.
    let mut narrow = ShapeReader::new(&base, &[("table", "items"), ("where", "id > 1")]);
    narrow.catch_up().await;
    assert_eq!(narrow.rows.len(), 2, "the snapshot holds only committed rows");

    // A table not replicated yet: 503 + retry-after within the lock bound.
    let before = entries(dir.path());
    let fresh_url = format!("{base}/v1/shape?table=fresh&offset=-1");
    let (r, took) = request_within(&fresh_url).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.header("retry-after").is_some(), "with retry-after");
    assert_eq!(r.body["code"], "table_locked", "{}", r.text);
    assert!(took < Duration::from_secs(15), "answered within the bound ({took:?})");
    assert_eq!(entries(dir.path()), before, "nothing of the shape on disk");
    let waiting: i64 = c.query_one("SELECT count(*) FROM pg_locks WHERE NOT granted", &[]).await.unwrap().get(0);
    assert_eq!(waiting, 0, "no lock request left queued behind the open transaction");
    assert_eq!(idle_in_transaction(&c, long_pid).await, 0, "no transaction of the server's left open");
    // Other sessions write to the table meanwhile.
    c.execute("INSERT INTO fresh VALUES (50, 'meanwhile')", &[]).await.unwrap();

    long.batch_execute("COMMIT").await.unwrap();
    let items = oracle(&c, "items", &["id", "v"], "").await;
    first.live_until(Duration::from_secs(20), |r| r.sorted_rows() == items).await;
    let narrow_rows = oracle(&c, "items", &["id", "v"], "id > 1").await;
    narrow.live_until(Duration::from_secs(20), |r| r.sorted_rows() == narrow_rows).await;
    let mut fresh = ShapeReader::new(&base, &[("table", "fresh")]);
    fresh.catch_up().await;
    let fresh_rows = oracle(&c, "fresh", &["id", "v"], "").await;
    assert_eq!(fresh_rows.len(), 5);
    assert_eq!(fresh.sorted_rows(), fresh_rows);
    c.execute("INSERT INTO fresh VALUES (101, 'after')", &[]).await.unwrap();
    c.execute("INSERT INTO items VALUES (101, 'after')", &[]).await.unwrap();
    let fresh_rows = oracle(&c, "fresh", &["id", "v"], "").await;
    fresh.live_until(Duration::from_secs(20), |r| r.sorted_rows() == fresh_rows).await;
    let narrow_rows = oracle(&c, "items", &["id", "v"], "id > 1").await;
    narrow.live_until(Duration::from_secs(20), |r| r.sorted_rows() == narrow_rows).await;
    for r in [&first, &narrow, &fresh] {
        no_duplicate_inserts(r);
        assert_eq!(r.refetches, 0);
    }
    drop(server);
}

//! Durability across crashes: `kill -9` of the server mid-stream and a Postgres restart
//! mid-stream. Afterwards every shape equals the SQL oracle, with no duplicates and no refetch.

use crate::common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const COLS: &[&str] = &["id", "grp", "n"];

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

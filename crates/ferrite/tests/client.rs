//! `ferrite-client` against a real server and Postgres: shapes land in SQLite equal to the SQL
//! oracle, a reopened replica resumes from its stored offsets without downloading again, a 409
//! rotation starts the shape over, and a subscription stays live.

mod common;
use common::*;
use ferrite_client::{Client, ShapeDef, Status, TokenSource};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SCHEMA: &str = "
    CREATE TABLE steps (id int PRIMARY KEY, pipeline int NOT NULL, name text, x float8, done bool, note text);
    INSERT INTO steps SELECT i, i % 3, 'step ' || i, i * 1.5, i % 2 = 0, CASE WHEN i % 5 = 0 THEN NULL ELSE 'n' END
    FROM generate_series(1, 300) i;";

/// The oracle: the same rows from Postgres, typed as the replica stores them.
async fn oracle(c: &tokio_postgres::Client, filter: &str) -> Vec<Vec<Value>> {
    c.query(&format!("SELECT id::bigint, pipeline::bigint, name, x, CASE WHEN done THEN 1::bigint ELSE 0::bigint END, note FROM steps {filter} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            vec![
                json!(r.get::<_, i64>(0)),
                json!(r.get::<_, i64>(1)),
                json!(r.get::<_, Option<String>>(2)),
                json!(r.get::<_, Option<f64>>(3)),
                json!(r.get::<_, i64>(4)),
                json!(r.get::<_, Option<String>>(5)),
            ]
        })
        .collect()
}

fn local(client: &Client, table: &str) -> Vec<Vec<Value>> {
    client.query(&format!("SELECT id, pipeline, name, x, done, note FROM {table} ORDER BY id"), &[]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_land_in_sqlite_and_a_reopened_replica_resumes() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.db");
    let all = ShapeDef::table("steps");
    let one = ShapeDef::table("steps").filter("pipeline = 1").into_table("pipeline_1");
    {
        let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
        let report = client.sync(&all).await.unwrap();
        assert_eq!(report.changes, 300);
        client.sync(&one).await.unwrap();
        assert_eq!(local(&client, "steps"), oracle(&c, "").await);
        assert_eq!(local(&client, "pipeline_1"), oracle(&c, "WHERE pipeline = 1").await);
    }
    // While the app is closed: inserts, updates (including to NULL) and deletes.
    c.batch_execute(
        "INSERT INTO steps VALUES (301, 1, 'new', 0.25, true, 'x');
         UPDATE steps SET name = 'renamed', note = NULL WHERE id IN (1, 4, 7);
         UPDATE steps SET pipeline = 2 WHERE id = 10;
         DELETE FROM steps WHERE id IN (13, 16);",
    )
    .await
    .unwrap();
    let initial_before = s.server.state.metrics.requests_initial.load(Ordering::Relaxed);
    let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client.sync(&all).await.unwrap();
        client.sync(&one).await.unwrap();
        if local(&client, "steps") == oracle(&c, "").await && local(&client, "pipeline_1") == oracle(&c, "WHERE pipeline = 1").await {
            break;
        }
        assert!(Instant::now() < deadline, "the reopened replica never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.server.state.metrics.requests_initial.load(Ordering::Relaxed),
        initial_before,
        "resumed from stored offsets: no request started a shape over"
    );
    // One local table per shape.
    let clash = client.sync(&ShapeDef::table("steps").filter("pipeline = 2")).await.unwrap_err();
    assert!(clash.to_string().contains("into_table"), "{clash}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_shape_starts_over_and_a_subscription_stays_live() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path().join("r.db"), &s.base, TokenSource::None).unwrap();
    let all = ShapeDef::table("steps");
    client.sync(&all).await.unwrap();
    let old_handle = client.position(&all).unwrap().handle.unwrap();
    // TRUNCATE rotates every shape on the table: the next request gets a 409.
    c.batch_execute("TRUNCATE steps; INSERT INTO steps VALUES (1, 0, 'only', 1.0, false, NULL);").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refetches = 0;
    while local(&client, "steps") != oracle(&c, "").await {
        refetches += client.sync(&all).await.unwrap().refetches;
        assert!(Instant::now() < deadline, "never converged after the rotation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refetches >= 1);
    assert_ne!(client.position(&all).unwrap().handle.unwrap(), old_handle);

    // Live: changes arrive without asking, and the status says so.
    let sub = client.subscribe(all.clone());
    let mut status = sub.status();
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| *s == Status::Synced)).await.unwrap().unwrap();
    c.batch_execute("INSERT INTO steps VALUES (2, 0, 'live', 2.0, true, 'y')").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while local(&client, "steps") != oracle(&c, "").await {
        assert!(Instant::now() < deadline, "the live change never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The server goes away: the subscription reports offline (and keeps retrying with backoff).
    s.server.shutdown().await;
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| matches!(s, Status::Offline { .. }))).await.unwrap().unwrap();
}

/// Runs `ferrite client <args>` off the async runtime (the server runs on it); its stdout.
async fn cli(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(ferrite_bin()).arg("client").args(&args).env("FERRITE_LOG", "warn").output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_syncs_queries_and_reports() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cli.db").to_str().unwrap().to_string();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = cli(args(&["sync", "--db", &file, "--server", &s.base, "--table", "steps", "--where", "pipeline = 1", "--into", "mine"])).await;
    assert!(out.contains("up to date (100 changes"), "{out}");
    let out = cli(args(&["query", "--db", &file, "SELECT count(*), min(id), max(id) FROM mine"])).await;
    assert_eq!(out.trim(), "[100,1,298]");
    let out = cli(args(&["status", "--db", &file])).await;
    assert!(out.starts_with("mine: ") && out.contains("up to date"), "{out}");
}

//! Shape lifecycle and admission: LRU eviction beyond `max_shapes`, expiry after `shape_ttl`,
//! 503 + `retry-after` when too many requests are held or Postgres is unreachable, and SSE
//! keep-alives.

use crate::common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn items(db: &TestDb) {
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL);
             INSERT INTO items SELECT g, g % 5 FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
}

async fn reader_for(base: &str, grp: i32) -> ShapeReader {
    let w = format!("grp = {grp}");
    let mut r = ShapeReader::new(base, &[("table", "items"), ("where", &w)]);
    r.catch_up().await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_recently_used_shapes_are_evicted_beyond_max_shapes() {
    let db = TestDb::new().await;
    items(&db).await;
    let s = TestServer::start_with(&db, |c| c.max_shapes = 2).await;
    let mut a = reader_for(&s.base, 0).await;
    let b = reader_for(&s.base, 1).await;
    // Use `a` again so `b` is the least recently used when a third shape arrives.
    a.catch_up().await;
    let _c = reader_for(&s.base, 2).await;
    assert_eq!(s.server.observer().shape_count(), 2);
    // The survivor still resumes from its offset.
    let r = get(&format!(
        "{}?table=items&where=grp%20%3D%200&handle={}&offset={}",
        s.shape_url(),
        a.handle.clone().unwrap(),
        a.offset
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The evicted one must refetch (recreating it evicts the next least recently used).
    let evicted = b.handle.clone().unwrap();
    let r =
        get(&format!("{}?table=items&where=grp%20%3D%201&handle={evicted}&offset={}", s.shape_url(), b.offset)).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body, json!([{"headers": {"control": "must-refetch"}}]));
    let fresh = r.header("electric-handle").expect("the new handle");
    assert_ne!(fresh, evicted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_shapes_expire_after_their_ttl() {
    let db = TestDb::new().await;
    items(&db).await;
    // Shapes expire by the server's clock, which this test moves on by hand: an hour's TTL
    // passes at once.
    let clock = ferrite_server::ManualClock::new();
    let s = TestServer::start_on(&db, clock.clock(), |c| c.shape_ttl_secs = 3600).await;
    let r = reader_for(&s.base, 3).await;
    let handle = r.handle.clone().unwrap();
    let dir_count = || std::fs::read_dir(s.dir.path().join("shapes")).map(|d| d.count()).unwrap_or(0);
    let with_shape = dir_count();
    assert_eq!(s.server.observer().shape_count(), 1);
    clock.advance(Duration::from_secs(3601));
    wait_until("the idle shape to expire", Duration::from_secs(10), || {
        let count = s.server.observer().shape_count();
        async move { count == 0 }
    })
    .await;
    wait_until("its files to be removed", Duration::from_secs(10), || {
        let fewer = dir_count() < with_shape;
        async move { fewer }
    })
    .await;
    let r =
        get(&format!("{}?table=items&where=grp%20%3D%203&handle={handle}&offset={}", s.shape_url(), r.offset)).await;
    assert_eq!(r.status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_control_answers_503_with_retry_after() {
    let db = TestDb::new().await;
    items(&db).await;
    let s = TestServer::start_with(&db, |c| {
        c.max_concurrent_existing = 2;
        c.long_poll_timeout_ms = 5_000;
    })
    .await;
    let r = reader_for(&s.base, 0).await;
    let live = format!(
        "{}?table=items&where=grp%20%3D%200&handle={}&offset={}&live=true",
        s.shape_url(),
        r.handle.clone().unwrap(),
        r.offset
    );
    // Two held long-polls fill the limit …
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(get_owned(live.clone()))).collect();
    let metrics_url = format!("{}/metrics", s.base);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
        if m.lines().any(|l| l == "ferrite_live_requests_waiting 2") {
            break;
        }
        assert!(Instant::now() < deadline, "long-polls never held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // … so a third request is turned away, with a hint when to come back.
    let third = get(&live).await;
    assert_eq!(third.status, 503, "{}", third.text);
    let retry: u64 = third.header("retry-after").expect("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(third.body["code"], "concurrent_request_limit_exceeded");
    // A change in the shape answers the held long-polls (rather than their 5 s timeout) …
    db.client().await.batch_execute("INSERT INTO items VALUES (100, 0)").await.unwrap();
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    // … and capacity is back once they finish (this one, behind the change, answers at once).
    assert_eq!(get(&live).await.status, 200);
}

async fn get_owned(url: String) -> u16 {
    get(&url).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_503_not_a_hang() {
    let mut db = TestDb::new().await;
    items(&db).await;
    let s = TestServer::start(&db).await;
    let r = reader_for(&s.base, 0).await;
    db.cluster.stop();
    // A new shape needs Postgres for its snapshot.
    let t0 = Instant::now();
    let new_shape = get(&format!("{}?table=items&where=grp%20%3D%204&offset=-1", s.shape_url())).await;
    assert_eq!(new_shape.status, 503, "{}", new_shape.text);
    assert!(new_shape.header("retry-after").is_some());
    assert!(t0.elapsed() < Duration::from_secs(15), "answered promptly");
    // What is already in a shape log is still served.
    let again = get(&format!(
        "{}?table=items&where=grp%20%3D%200&handle={}&offset=-1",
        s.shape_url(),
        r.handle.clone().unwrap()
    ))
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    // Health says the server is not following Postgres right now (Electric's "starting").
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = get(&format!("{}/v1/health", s.base)).await;
        if health.status == 202 {
            assert_eq!(health.body["status"], "starting", "{}", health.text);
            break;
        }
        assert!(Instant::now() < deadline, "health never reported the outage: {}", health.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Postgres comes back: replication reconnects (with backoff) and new shapes work again.
    db.cluster.restart().expect("restart postgres");
    wait_healthy(&s.base).await;
    let back = get(&format!("{}?table=items&where=grp%20%3D%204&offset=-1", s.shape_url())).await;
    assert_eq!(back.status, 200, "{}", back.text);
}

/// A database URL that cannot be parsed is a mistake no retry fixes: `ferrite serve` exits at
/// once, non-zero, naming the problem (and not the password), instead of retrying forever as it
/// does for a database that is down.
#[test]
fn an_unparseable_database_url_fails_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    for (url, reason) in [
        ("postgres://ferrite:hunter2@localhost:notaport/db", "invalid value for option `port`"),
        ("postgres://ferrite:hunter2@localhost/db?sslmode=allow", "sslmode=allow"),
        ("ferrite:hunter2@localhost", "cannot parse database URL"),
    ] {
        let mut child = std::process::Command::new(ferrite_bin())
            .args(["serve", "--port", "0", "--database-url", url, "--data-dir"])
            .arg(dir.path())
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("{url}: ferrite serve was still running after 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(status.code(), Some(1), "{url}: {stderr}");
        assert!(stderr.contains("database URL") && stderr.contains(reason), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{url}: the password is not printed: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_send_keep_alives_in_silence() {
    let db = TestDb::new().await;
    items(&db).await;
    let s = TestServer::start_with(&db, |c| c.sse_keepalive_secs = 1).await;
    let r = reader_for(&s.base, 0).await;
    let mut conn = tokio::net::TcpStream::connect(s.server.addr).await.unwrap();
    let req = format!(
        "GET /v1/shape?table=items&where=grp%20%3D%200&handle={}&offset={}&live=true&live_sse=true HTTP/1.1\r\nHost: x\r\n\r\n",
        r.handle.clone().unwrap(),
        r.offset
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains(": keep-alive") {
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await {
            seen.extend_from_slice(&buf[..n]);
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    assert!(text.contains(": keep-alive"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shape_over_max_shape_size_is_refused_and_a_narrower_one_served() {
    let db = TestDb::new().await;
    items(&db).await; // 50 rows of about 120 bytes of JSON messages each
    let s = TestServer::start_with(&db, |c| c.max_shape_size = 2_500).await;
    let mut status = 0;
    let mut body = serde_json::Value::Null;
    // The snapshot runs in the background: the first answer may come before it fails.
    for _ in 0..50 {
        let r = get(&format!("{}?table=items&offset=-1", s.shape_url())).await;
        if r.status != 200 {
            (status, body) = (r.status, r.body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "shape_too_large");
    assert!(body["message"].as_str().unwrap().contains("max_shape_size"), "{body}");
    // Ten rows fit.
    let r = reader_for(&s.base, 1).await;
    assert_eq!(r.rows.len(), 10);
}

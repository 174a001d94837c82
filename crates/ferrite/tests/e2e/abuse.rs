//! Abuse against a real server: slow-loris headers and bodies, thousands of idle connections,
//! requests aborted at random points on every route, and oversized everything — while a
//! well-behaved client keeps reading, writing and checking health. The server must keep
//! answering it (the test prints the p99 it kept), close what it should close, and answer every
//! oversized request with a 4xx that names the problem.

use crate::common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the abuse lasts.
const ABUSE: Duration = Duration::from_secs(8);
/// The server's `request_read_timeout_secs` in this test.
const READ_TIMEOUT_SECS: u64 = 2;

/// Reads until the server closes the connection (or `limit` passes); what it sent.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = vec![];
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Slow-loris on headers: a request line, then one header every 300 ms, never finished. The
/// server must close the connection once the header deadline passes.
async fn slow_headers(addr: SocketAddr, closed: Arc<AtomicUsize>) {
    let Ok(mut s) = TcpStream::connect(addr).await else { return };
    let _ = s.write_all(b"GET /v1/shape?table=items&offset=-1 HTTP/1.1\r\nHost: x\r\n").await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(READ_TIMEOUT_SECS + 3) {
        // The attack's pace, not a wait for something to happen.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await {
            closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// Slow-loris on bodies: full headers announcing a body that arrives a byte at a time. The
/// server must answer 408 once the body deadline passes.
async fn slow_body(addr: SocketAddr, path: &str, timed_out: Arc<AtomicUsize>) {
    let Ok(mut s) = TcpStream::connect(addr).await else { return };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"
    );
    let _ = s.write_all(head.as_bytes()).await;
    let (mut r, mut w) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            // The attack's pace, not a wait for something to happen.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if w.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut answer = vec![0u8; 512];
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(READ_TIMEOUT_SECS + 5), r.read(&mut answer)).await {
        if answer[..n].starts_with(b"HTTP/1.1 408") {
            timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
    trickle.abort();
}

/// A request on some route, dropped after a random moment (often before the answer).
async fn aborted(http: &reqwest::Client, base: &str, handle: &str, offset: &str, n: usize) {
    let url = |p: &str| format!("{base}{p}");
    let tx = json!({"client_id": format!("abort-{}", n % 7), "transactions": [
        {"id": n as u64 + 1, "hlc": format!("{}-0", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()),
         "mutations": [{"op": "update", "table": "items", "key": {"id": (n % 50 + 1).to_string()}, "value": {"n": n.to_string()}}]}]});
    let req = match n % 10 {
        0 => http.get(url("/v1/shape?table=items&offset=-1")),
        1 => http.get(url(&format!("/v1/shape?table=items&handle={handle}&offset={offset}&live=true"))),
        2 => http.get(url(&format!("/v1/shape?table=items&handle={handle}&offset={offset}&live=true&live_sse=true"))),
        3 => http
            .post(url(&format!("/v1/shape?table=items&handle={handle}&offset={offset}")))
            .json(&json!({"where": "id > 10", "order_by": "id", "limit": 20})),
        4 => http.post(url("/v1/transactions")).json(&tx),
        5 => {
            http.post(url("/v1/presence")).json(&json!({"room": "r", "client_id": format!("p{n}"), "state": {"x": n}}))
        }
        6 => http.get(url("/v1/presence?room=r&live_sse=true")),
        7 => http.get(url("/v1/presence?room=r&live=true&offset=0")),
        8 => http.get(url("/v1/config")),
        _ => http.get(url("/metrics")),
    };
    let wait = Duration::from_millis((n as u64 * 7919) % 60);
    let _ = tokio::time::timeout(wait, async {
        if let Ok(r) = req.send().await {
            let _ = r.bytes().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_stays_responsive_under_abuse() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL DEFAULT 0); INSERT INTO items SELECT g, 0 FROM generate_series(1, 200) g;")
        .await
        .unwrap();
    let s = TestServer::start_with(&db, |cfg| {
        cfg.request_read_timeout_secs = READ_TIMEOUT_SECS;
        cfg.max_request_bytes = 256 * 1024;
        cfg.long_poll_timeout_ms = 1_000;
    })
    .await;
    let addr = s.server.addr;
    let base = s.base.clone();
    let mut reader = ShapeReader::new(&base, &[("table", "items")]);
    reader.catch_up().await;
    let (handle, offset) = (reader.handle.clone().unwrap(), reader.offset.clone());

    // Oversized everything: each refused with a 4xx, none of them taking the server down.
    let http = reqwest::Client::new();
    let big_body = vec![b'x'; 300 * 1024];
    let oversized = [
        ("a body over max_request_bytes (writes)", http.post(format!("{base}/v1/transactions")).header("content-type", "application/json").body(big_body.clone())),
        ("a body over max_request_bytes (subset)", http.post(format!("{base}/v1/shape?table=items&handle={handle}&offset={offset}")).body(big_body.clone())),
        ("a presence state too large", http.post(format!("{base}/v1/presence")).json(&json!({"room": "r", "client_id": "c", "state": {"x": "y".repeat(10_000)}}))),
        ("a where clause too long", http.get(format!("{base}/v1/shape?table=items&offset=-1&where={}", pct(&format!("n = {}", "1".repeat(70_000)))))),
        ("too many transactions", http.post(format!("{base}/v1/transactions")).json(&json!({"client_id": "c", "transactions": (0..101).map(|i| json!({"id": i, "hlc": "1-0", "mutations": [{"op": "delete", "table": "items", "key": {"id": "1"}}]})).collect::<Vec<_>>()}))),
        ("a room name too long", http.post(format!("{base}/v1/presence")).json(&json!({"room": "r".repeat(300), "client_id": "c", "state": {}}))),
        ("a huge header", http.get(format!("{base}/v1/health")).header("x-big", "h".repeat(500_000))),
        ("a URI of a megabyte", http.get(format!("{base}/v1/shape?table=items&offset=-1&x={}", "a".repeat(1024 * 1024)))),
    ];
    for (what, req) in oversized {
        match req.send().await {
            Ok(r) => assert!(r.status().is_client_error(), "{what}: {}", r.status()),
            // hyper may close the connection on a request it will not read (header or URI too big).
            Err(e) => assert!(!e.is_timeout(), "{what}: {e}"),
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicUsize::new(0));
    let timed_out = Arc::new(AtomicUsize::new(0));
    let mut abusers = vec![];
    // Thousands of idle connections.
    let idle = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    for _ in 0..2_000 {
        if let Ok(s) = TcpStream::connect(addr).await {
            idle.lock().await.push(s);
        }
    }
    for _ in 0..300 {
        abusers.push(tokio::spawn(slow_headers(addr, closed.clone())));
    }
    for (i, path) in
        ["/v1/transactions", "/v1/presence", "/v1/shape?table=items&offset=-1"].iter().cycle().take(150).enumerate()
    {
        let t = timed_out.clone();
        let p = path.to_string();
        abusers.push(tokio::spawn(async move {
            // Staggered starts: the slow bodies arrive over the run rather than all at once.
            tokio::time::sleep(Duration::from_millis(i as u64 * 10)).await;
            slow_body(addr, &p, t).await;
        }));
    }
    // Requests aborted at random points on every route, 8 at a time, for the whole run.
    for worker in 0..8 {
        let (stop, base, handle, offset) = (stop.clone(), base.clone(), handle.clone(), offset.clone());
        abusers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = worker;
            while !stop.load(Ordering::Relaxed) {
                aborted(&http, &base, &handle, &offset, n).await;
                n += 8;
            }
        }));
    }

    // The well-behaved client: catch-up reads, a write, a health check, in a loop.
    let started = Instant::now();
    let mut latencies = vec![];
    let mut good = ShapeReader::new(&base, &[("table", "items")]);
    let http = reqwest::Client::new();
    let mut id = 0u64;
    while started.elapsed() < ABUSE {
        id += 1;
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), good.catch_up()).await.expect("a catch-up read stalled");
        latencies.push(t.elapsed());
        let t = Instant::now();
        let body = json!({"client_id": "good", "transactions": [{"id": id, "hlc": format!("{}-0", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()),
            "mutations": [{"op": "update", "table": "items", "key": {"id": "200"}, "value": {"n": id.to_string()}}]}]});
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            http.post(format!("{base}/v1/transactions")).json(&body).send(),
        )
        .await
        .expect("a write stalled")
        .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["results"][0]["status"], "applied", "{v}");
        latencies.push(t.elapsed());
        let t = Instant::now();
        let h = tokio::time::timeout(Duration::from_secs(10), http.get(format!("{base}/v1/health")).send())
            .await
            .expect("health stalled")
            .unwrap();
        assert_eq!(h.status(), 200);
        latencies.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for a in abusers {
        let _ = a.await;
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "well-behaved client under abuse: {} requests, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies.last().unwrap()
    );
    assert!(latencies.len() >= 30, "too few well-behaved requests completed: {}", latencies.len());
    assert!(
        closed.load(Ordering::Relaxed) >= 290,
        "slow-header connections left open: {} of 300 closed",
        closed.load(Ordering::Relaxed)
    );
    assert!(
        timed_out.load(Ordering::Relaxed) >= 140,
        "slow bodies answered 408: {} of 150",
        timed_out.load(Ordering::Relaxed)
    );
    // Idle connections are closed by the header deadline too.
    let mut idle = idle.lock().await;
    let mut closed_idle = 0;
    for s in idle.iter_mut().take(200) {
        if read_until_closed(s, Duration::from_secs(READ_TIMEOUT_SECS + 3)).await.is_some() {
            closed_idle += 1;
        }
    }
    assert_eq!(closed_idle, 200, "idle connections must be closed");
    // Afterwards: nothing held, the server answers at once.
    let r = get(&format!("{base}/v1/health")).await;
    assert_eq!(r.status, 200);
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

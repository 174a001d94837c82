//! Slow and abandoned clients cannot hold server resources: a client that never finishes its
//! request headers or body is cut off, and an SSE reader that stops reading is dropped.

use crate::common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until EOF or error; returns how long that took (None if still open at `limit`).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_headers_and_bodies_are_cut_off() {
    let db = TestDb::new().await;
    db.client().await.batch_execute("CREATE TABLE items (id int PRIMARY KEY)").await.unwrap();
    let s = TestServer::start_with(&db, |c| c.request_read_timeout_secs = 1).await;
    let addr = s.server.addr;

    // Headers that never end (slowloris): the connection is closed after the read timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /v1/shape?table=items&offset=-1 HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(10)).await.expect("slow header sender is disconnected");
    assert!(took >= Duration::from_millis(500), "not before the timeout ({took:?})");

    // A subset POST whose body never arrives: 408 with a message, then the connection ends.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/shape?table=items&offset=-1 HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"where\":",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut answer)).await.expect("answered").unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("Request body not received in time"), "{text}");

    // The server still serves everyone else.
    let r = get(&format!("{}?table=items&offset=-1", s.shape_url())).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_reader_that_stops_reading_is_dropped() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE blobs (id int PRIMARY KEY, body text)").await.unwrap();
    let s = TestServer::start_with(&db, |c| {
        c.slow_client_timeout_secs = 1;
        c.sse_timeout_secs = 120;
        c.chunk_bytes = 1 << 20;
    })
    .await;
    let mut reader = ShapeReader::new(&s.base, &[("table", "blobs")]);
    reader.catch_up().await;
    let handle = reader.handle.clone().unwrap();
    // Open an SSE stream and never read from it.
    let mut sse = TcpStream::connect(s.server.addr).await.unwrap();
    let req = format!(
        "GET /v1/shape?table=blobs&handle={handle}&offset={}&live=true&live_sse=true HTTP/1.1\r\nHost: x\r\n\r\n",
        reader.offset
    );
    sse.write_all(req.as_bytes()).await.unwrap();
    let metrics_url = format!("{}/metrics", s.base);
    let waiting = || async {
        metric(&reqwest::get(&metrics_url).await.unwrap().text().await.unwrap(), "ferrite_live_requests_waiting")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting().await == 0 {
        assert!(Instant::now() < deadline, "the SSE stream never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Far more data than socket buffers hold: the stream backs up, then the server gives up.
    for batch in 0..40 {
        c.execute(
            "INSERT INTO blobs SELECT g, repeat('x', 2000) FROM generate_series($1::int, $1::int + 999) g",
            &[&(batch * 1000)],
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiting().await > 0 {
        assert!(Instant::now() < deadline, "a stalled SSE reader is still being served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection is closed once whatever was buffered is read.
    assert!(closed_within(&mut sse, Duration::from_secs(30)).await.is_some(), "the stalled stream was closed");
}

/// A long-poll whose client hangs up while it waits gives its place in the held-requests gauge
/// back (the gauge counts what is really held, for operators and for admission decisions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_whose_client_hangs_up_is_no_longer_counted() {
    let db = TestDb::new().await;
    db.client().await.batch_execute("CREATE TABLE hung (id int PRIMARY KEY)").await.unwrap();
    let s = TestServer::start(&db).await;
    let mut r = ShapeReader::new(&s.base, &[("table", "hung")]);
    r.catch_up().await;
    let url =
        format!("{}?table=hung&live=true&handle={}&offset={}", s.shape_url(), r.handle.clone().unwrap(), r.offset);
    let gone = tokio::spawn(async move { reqwest::get(url).await.map(|_| ()) });
    s.wait_live_waiting(1).await;
    gone.abort();
    let observer = s.server.observer();
    wait_until("the hung-up long-poll to be given back", Duration::from_secs(5), || {
        let held = observer.metrics().live_waiting.load(std::sync::atomic::Ordering::Relaxed);
        async move { held == 0 }
    })
    .await;
}

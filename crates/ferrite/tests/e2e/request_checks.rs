//! The checks every route makes before its own work, against a real server: a body over the
//! route's limit is answered 413, a body that does not arrive in time 408, a missing or bad token
//! (jwt mode) 401 — before the body is read — and a write takes its admission place before its
//! body arrives and gives it back however the request ends. None of these leaves anything
//! behind in Postgres.

use crate::common::*;
use ferrite_server::config::{AuthMode, TableConfig};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "request-checks-secret-0123456789abcdef";

/// Sends a POST's headers announcing a 100-byte body and only `partial` of it; the stream, left
/// open.
async fn stalled_post(addr: SocketAddr, path: &str, authorization: Option<&str>, partial: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = authorization.map(|a| format!("authorization: {a}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n{auth}\r\n{partial}"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// The first response on `s` (status line, headers and body as text), read until the body is
/// complete or the connection ends.
async fn answer(s: &mut TcpStream, limit: Duration) -> String {
    let mut out = vec![];
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                return text;
            }
        }
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return text,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no complete answer within {limit:?}; got {text:?}"),
        }
    }
}

/// The JSON body of a raw response.
fn body_of(text: &str) -> Value {
    serde_json::from_str(text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")).unwrap_or(Value::Null)
}

/// A transaction inserting `items` row `id` with `title`.
fn insert(client: &str, id: u64, title: &str) -> Value {
    let hlc = format!("{}-0", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis());
    json!({"client_id": client, "transactions": [{"id": id, "hlc": hlc,
        "mutations": [{"op": "insert", "table": "items", "value": {"id": id.to_string(), "title": title}}]}]})
}

/// Rows of `items`, and results Ferrite recorded (its schema is created by the first write).
async fn left_behind(c: &tokio_postgres::Client) -> (i64, i64) {
    let items: i64 = c.query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    let has_store: bool =
        c.query_one("SELECT to_regclass('ferrite.client_results') IS NOT NULL", &[]).await.unwrap().get(0);
    let recorded: i64 = if has_store {
        c.query_one("SELECT count(*) FROM ferrite.client_results", &[]).await.unwrap().get(0)
    } else {
        0
    };
    (items, recorded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_route_answers_413_to_a_body_over_its_limit() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, title text)").await.unwrap();
    let s = TestServer::start_with(&db, |cfg| cfg.max_request_bytes = 1024).await;
    let mut reader = ShapeReader::new(&s.base, &[("table", "items")]);
    reader.catch_up().await;
    let subset_url =
        format!("{}/v1/shape?table=items&handle={}&offset={}", s.base, reader.handle.clone().unwrap(), reader.offset);
    let http = reqwest::Client::new();
    let too_large = json!({"message": "Request body too large (limit: 1024 bytes)"});

    // A subset body and a transaction, valid JSON but over max_request_bytes.
    let subset = json!({"where": format!("title <> '{}'", "x".repeat(2000))});
    let r = send(http.post(&subset_url).json(&subset)).await;
    assert_eq!(r.status, 413, "subset: {}", r.text);
    assert_eq!(r.body, too_large);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let r = send(http.post(format!("{}/v1/transactions", s.base)).json(&insert("big", 1, &"x".repeat(2000)))).await;
    assert_eq!(r.status, 413, "transactions: {}", r.text);
    assert_eq!(r.body, too_large);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));

    // Presence has a limit of its own, sized for a small state, whatever max_request_bytes is:
    // 2 KB passes here, 10 KB does not.
    let post_presence = |state: Value| {
        send(http.post(format!("{}/v1/presence", s.base)).json(&json!({"room": "r", "client_id": "c", "state": state})))
    };
    let r = post_presence(json!({"note": "x".repeat(2000)})).await;
    assert_eq!(r.status, 200, "presence under its own limit: {}", r.text);
    let r = post_presence(json!({"note": "x".repeat(10_000)})).await;
    assert_eq!(r.status, 413, "presence: {}", r.text);
    assert_eq!(r.body, json!({"message": "Presence update too large"}));

    // Smaller bodies still pass, and the refused write left nothing behind.
    let r = send(http.post(&subset_url).json(&json!({"where": "id > 0"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(left_behind(&c).await, (0, 0), "the refused write applied or recorded nothing");
    let r = send(http.post(format!("{}/v1/transactions", s.base)).json(&insert("small", 1, "ok"))).await;
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_route_answers_408_to_a_body_that_does_not_arrive() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, title text)").await.unwrap();
    let s = TestServer::start_with(&db, |cfg| cfg.request_read_timeout_secs = 1).await;
    let addr = s.server.addr;
    let transaction = insert("slow", 1, "never").to_string();
    let routes = [
        ("/v1/shape?table=items&offset=-1", "{\"where\":"),
        ("/v1/transactions", &transaction[..transaction.len() / 2]),
        ("/v1/presence", "{\"room\":\"r\","),
    ];
    for (path, partial) in routes {
        let started = Instant::now();
        let mut stalled = stalled_post(addr, path, None, partial).await;
        let text = answer(&mut stalled, Duration::from_secs(10)).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert_eq!(body_of(&text), json!({"message": "Request body not received in time"}), "{path}");
        assert!(text.to_ascii_lowercase().contains("cache-control: no-store"), "{path}: {text}");
        assert!(started.elapsed() >= Duration::from_millis(900), "{path}: not before the timeout");
    }
    assert_eq!(left_behind(&c).await, (0, 0), "the stalled write applied or recorded nothing");
    // The server still serves everyone else.
    assert_eq!(get(&format!("{}?table=items&offset=-1", s.shape_url())).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_401_to_a_missing_or_bad_token_before_reading_the_body() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, title text)").await.unwrap();
    let s = TestServer::start_with(&db, |cfg| {
        cfg.auth.mode = AuthMode::Jwt;
        cfg.auth.secret = Some(SECRET.into());
        cfg.max_request_bytes = 1024;
        cfg.request_read_timeout_secs = 5;
        let rules = TableConfig { public: true, write: Some("id > 0".into()), ..Default::default() };
        cfg.tables.insert("items".into(), rules);
    })
    .await;
    let http = reqwest::Client::new();
    let base = &s.base;
    let good = hs256_token(SECRET, json!({"sub": "ann"}));
    let forged = hs256_token("another-secret-0123456789abcdef-0123456789", json!({"sub": "ann"}));
    let big = "x".repeat(4096);

    // Every route, with no token, a forged one and a malformed header; the body routes with a
    // body over max_request_bytes, which must not be what is answered.
    let requests = |auth: Option<String>| {
        let with = |r: reqwest::RequestBuilder| match &auth {
            Some(a) => r.header("authorization", a.clone()),
            None => r,
        };
        [
            ("GET /v1/shape", with(http.get(format!("{base}/v1/shape?table=items&offset=-1")))),
            ("POST /v1/shape", with(http.post(format!("{base}/v1/shape?table=items&offset=-1")).body(big.clone()))),
            ("POST /v1/transactions", with(http.post(format!("{base}/v1/transactions")).body(big.clone()))),
            ("GET /v1/presence", with(http.get(format!("{base}/v1/presence?room=items:1")))),
            ("POST /v1/presence", with(http.post(format!("{base}/v1/presence")).body("x".repeat(10_000)))),
        ]
    };
    let refusals = [
        (None, "missing Authorization: Bearer <token> header"),
        (Some(format!("Bearer {forged}")), ""),
        (Some(format!("Basic {good}")), "the Authorization header must be \"Bearer <token>\""),
    ];
    for (auth, message) in refusals {
        for (route, req) in requests(auth.clone()) {
            let r = send(req).await;
            assert_eq!(r.status, 401, "{route} with {auth:?}: {}", r.text);
            assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), "{route}");
            assert_eq!(r.header("cache-control").as_deref(), Some("no-store"), "{route}");
            let got = r.body["message"].as_str().unwrap_or_default();
            assert!(!got.is_empty() && got.contains(message), "{route} with {auth:?}: {}", r.text);
            if message.is_empty() {
                continue;
            }
            assert_eq!(r.body, json!({ "message": message }), "{route}");
        }
    }

    // An unauthenticated body that never arrives is answered at once, not after the timeout.
    for path in ["/v1/shape?table=items&offset=-1", "/v1/transactions", "/v1/presence"] {
        let started = Instant::now();
        let mut stalled = stalled_post(s.server.addr, path, None, "{").await;
        let text = answer(&mut stalled, Duration::from_secs(10)).await;
        assert!(text.starts_with("HTTP/1.1 401"), "{path}: {text}");
        assert!(started.elapsed() < Duration::from_secs(3), "{path}: answered after {:?}", started.elapsed());
    }

    // With the token, the same routes work (the body routes' checks come after the caller's).
    let ok = send(http.post(format!("{base}/v1/transactions")).bearer_auth(&good).json(&insert("ann", 1, "a"))).await;
    assert_eq!(ok.body["results"][0]["status"], "applied", "{}", ok.text);
    let big = send(http.post(format!("{base}/v1/transactions")).bearer_auth(&good).body(big.clone())).await;
    assert_eq!(big.status, 413, "{}", big.text);
    assert!(read_shape(base, Some(&good), &[("table", "items")]).await.is_ok());
    assert_eq!(left_behind(&c).await, (1, 1), "only the authenticated write applied");
}

/// Waits until `n` write requests hold an admission place.
async fn writes_held(s: &TestServer, n: usize) {
    let observer = s.server.observer();
    wait_until(&format!("{n} writes admitted"), Duration::from_secs(10), || {
        let held = observer.writes_held();
        async move { held >= n }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_holds_its_place_while_its_body_arrives_and_gives_it_back() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, title text)").await.unwrap();
    let s = TestServer::start_with(&db, |cfg| {
        cfg.max_concurrent_writes = 1;
        cfg.request_read_timeout_secs = 2;
    })
    .await;
    let addr = s.server.addr;
    // A fresh connection per write: a pooled one the server closed after its 503 would fail the
    // next write before it reaches the server.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let write = |id: u64| send(http.post(format!("{}/v1/transactions", s.base)).json(&insert("w", id, "t")));
    let transaction = insert("stalled", 9, "never").to_string();
    let half = &transaction[..transaction.len() / 2];

    // A write whose body is on its way holds the one write place: another write is refused.
    let mut stalled = stalled_post(addr, "/v1/transactions", None, half).await;
    writes_held(&s, 1).await;
    let refused = write(1).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.body["code"], "concurrent_request_limit_exceeded");
    // Its 408 gives the place back.
    let text = answer(&mut stalled, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let ok = write(1).await;
    assert_eq!(ok.body["results"][0]["status"], "applied", "{}", ok.text);

    // So does a client hanging up half way through its body, and nothing of it is applied.
    let hung_up = stalled_post(addr, "/v1/transactions", None, half).await;
    writes_held(&s, 1).await;
    drop(hung_up);
    let deadline = Instant::now() + Duration::from_secs(10);
    let ok = loop {
        let r = write(2).await;
        if r.status != 503 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ok.body["results"][0]["status"], "applied", "{}", ok.text);
    let ids: Vec<i32> =
        c.query("SELECT id FROM items ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1, 2], "neither the stalled nor the abandoned write left anything");
    let stray: i64 = c
        .query_one("SELECT count(*) FROM ferrite.client_results WHERE client_id LIKE '%stalled%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stray, 0, "no result recorded for them");
}

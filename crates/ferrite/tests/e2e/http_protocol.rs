//! The Electric v1 HTTP contract, request by request, against a real Postgres.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

async fn setup() -> (TestDb, TestServer, tokio_postgres::Client) {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text, priority int);
         INSERT INTO items SELECT g, 'item ' || g, g % 3 FROM generate_series(1, 5) g;",
    )
    .await
    .unwrap();
    let server = TestServer::start(&db).await;
    (db, server, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_catch_up_and_live_headers() {
    let (_db, s, c) = setup().await;
    let url = s.shape_url();

    let r = get(&format!("{url}?table=items&offset=-1")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let handle = r.header("electric-handle").expect("handle");
    assert_eq!(r.header("electric-offset").as_deref(), Some("0_0"));
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746")
    );
    assert!(r.header("electric-up-to-date").is_none(), "offset=-1 never carries up-to-date");
    assert_eq!(r.header("etag").unwrap(), format!("\"{handle}:-1:0_0\""));
    let schema: serde_json::Value = serde_json::from_str(&r.header("electric-schema").unwrap()).unwrap();
    assert_eq!(schema["id"], json!({"type": "int4", "pk_index": 0, "not_null": true}));
    assert_eq!(schema["title"], json!({"type": "text"}));
    assert!(r.header("electric-server").unwrap().starts_with("Ferrite/"));
    let msgs = r.body.as_array().unwrap();
    assert_eq!(msgs.len(), 6, "5 rows + snapshot-end: {}", r.text);
    assert_eq!(msgs[0]["key"], "\"public\".\"items\"/\"1\"");
    assert_eq!(msgs[0]["value"], json!({"id": "1", "title": "item 1", "priority": "1"}));
    assert_eq!(msgs[0]["headers"], json!({"operation": "insert", "relation": ["public", "items"]}));
    assert_eq!(msgs[5]["headers"]["control"], "snapshot-end");

    let r2 = get(&format!("{url}?table=items&offset=0_0&handle={handle}")).await;
    assert_eq!(r2.status, 200);
    assert_eq!(r2.header("electric-offset").as_deref(), Some("0_inf"));
    assert_eq!(r2.header("electric-up-to-date").as_deref(), Some(""));
    assert_eq!(r2.header("cache-control").as_deref(), Some("public, max-age=60, stale-while-revalidate=300"));
    assert_eq!(r2.body[0]["headers"]["control"], "up-to-date");
    assert!(r2.body[0]["headers"]["global_last_seen_lsn"].is_string());

    // ETag revalidation.
    let etag = r2.header("etag").unwrap();
    let r3 = send(
        reqwest::Client::new()
            .get(format!("{url}?table=items&offset=0_0&handle={handle}"))
            .header("if-none-match", &etag),
    )
    .await;
    assert_eq!(r3.status, 304);

    // Live: hold, then answer with the change.
    let live_url = format!("{url}?table=items&offset=0_inf&handle={handle}&live=true&cursor=1");
    let waiter = tokio::spawn(async move { get(&live_url).await });
    s.wait_live_waiting(1).await;
    c.execute("INSERT INTO items VALUES (6, 'six', 0)", &[]).await.unwrap();
    let r4 = waiter.await.unwrap();
    assert_eq!(r4.status, 200, "{}", r4.text);
    assert_eq!(r4.header("cache-control").as_deref(), Some("public, max-age=5, stale-while-revalidate=5"));
    let cursor: u64 = r4.header("electric-cursor").unwrap().parse().unwrap();
    assert!(cursor > 1);
    assert!(r4.header("electric-schema").is_none(), "no schema on live responses");
    let change = &r4.body[0];
    assert_eq!(change["headers"]["operation"], "insert");
    assert_eq!(change["headers"]["op_position"], 0);
    assert_eq!(change["headers"]["last"], true);
    let txid = change["headers"]["txids"][0].as_u64().unwrap();
    assert!(txid > 0);
    let offset = r4.header("electric-offset").unwrap();
    let (lsn, op) = offset.split_once('_').unwrap();
    assert_eq!(change["headers"]["lsn"], lsn);
    assert_eq!(op, "0");
    assert_eq!(r4.body[1]["headers"]["control"], "up-to-date");

    // Live timeout: 200 with only up-to-date, has-data false.
    let r5 = get(&format!("{url}?table=items&offset={offset}&handle={handle}&live=true&cursor={cursor}")).await;
    assert_eq!(r5.status, 200);
    assert_eq!(r5.header("electric-has-data").as_deref(), Some("false"));
    assert_eq!(r5.body.as_array().unwrap().len(), 1);
    let next: u64 = r5.header("electric-cursor").unwrap().parse().unwrap();
    assert!(next > cursor, "cursor strictly increases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_electric_shaped() {
    let (_db, s, _c) = setup().await;
    let url = s.shape_url();
    let cases: &[(&str, &str, &str)] = &[
        ("offset=-1", "table", "can't be blank"),
        ("table=items", "offset", "can't be blank"),
        ("table=items&offset=1_x", "offset", "has invalid format"),
        ("table=items&offset=5_0", "handle", "can't be blank when offset != -1"),
        ("table=items&offset=-1&live=true", "live", "can't be true when offset == -1"),
        ("table=nope&offset=-1", "table", "Table \"public\".\"nope\" does not exist. If the table name contains capitals or special characters you must quote it."),
        ("table=a.b.c&offset=-1", "table", "Invalid relation identifier, too many delimiters"),
        ("table=items&offset=-1&columns=title", "columns", "The list of columns must include all primary key columns, missing: id"),
        ("table=items&offset=-1&replica=half", "replica", ""),
    ];
    for (q, field, msg) in cases {
        let r = get(&format!("{url}?{q}")).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
        assert_eq!(r.body["message"], "Invalid request", "{q}");
        let got = r.body["errors"][field][0].as_str().unwrap_or_else(|| panic!("{q}: no errors.{field} in {}", r.text));
        if !msg.is_empty() {
            assert_eq!(got, *msg, "{q}");
        }
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    }
    let r = get(&format!("{url}?table=items&offset=-1&where=id%20%3D%20%3D%201")).await;
    assert_eq!(r.status, 400);
    let m = r.body["errors"]["where"][0].as_str().unwrap();
    assert!(m.starts_with("At location 20: syntax error"), "{m}");
    let r = get(&format!("{url}?table=items&offset=-1&where=id%20%3D%3D%201")).await;
    assert_eq!(r.status, 400);
    let m = r.body["errors"]["where"][0].as_str().unwrap();
    assert!(m.contains("\"==\""), "unsupported operator is named: {m}");
    let r = get(&format!("{url}?table=items&offset=-1&where=id%20%3D%20%242")).await;
    assert_eq!(r.status, 400, "missing param: {}", r.text);

    // Unknown handle → 409 with the current handle for the definition.
    let r = get(&format!("{url}?table=items&offset=0_0&handle=123-456")).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body, json!([{"headers": {"control": "must-refetch"}}]));
    assert!(r.header("electric-handle").is_some());
    assert_eq!(r.header("cache-control").as_deref(), Some("public, max-age=60, must-revalidate"));

    // Routes and preflight.
    assert_eq!(get(&format!("{}/nope", s.base)).await.status, 404);
    let health = get(&format!("{}/v1/health", s.base)).await;
    assert_eq!(health.body["status"], "active", "{}", health.text);
    assert_eq!(health.body["relational"]["shapes"], 0, "{}", health.text);
    let opt = send(
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", "http://app.example")
            .header("access-control-request-headers", "if-none-match, authorization, x-evil"),
    )
    .await;
    assert_eq!(opt.status, 204);
    assert_eq!(opt.header("access-control-allow-origin").as_deref(), Some("http://app.example"));
    assert_eq!(opt.header("access-control-allow-headers").as_deref(), Some("if-none-match, authorization"));
    assert!(opt.header("access-control-expose-headers").unwrap().contains("electric-offset"));
    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ferrite_replication_confirmed_lsn"));
    assert!(metrics.contains("ferrite_replication_lag_bytes"));
    assert!(metrics.contains("ferrite_replication_retained_wal_bytes"));
    // The 409 above created the items shape; its snapshot rows are counted once it is taken.
    let mut reader = ShapeReader::new(&s.base, &[("table", "items")]);
    reader.catch_up().await;
    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap();
    let snapshot_rows = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferrite_snapshot_rows_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("snapshot_rows_total");
    assert_eq!(snapshot_rows, 5, "the items snapshot is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_delete_and_subset() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, grp text); INSERT INTO items SELECT g, CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END FROM generate_series(1, 10) g;").await.unwrap();
    let s = TestServer::start_with(&db, |c| c.secret = Some("s3cret".into())).await;
    let url = s.shape_url();
    let r = get(&format!("{url}?table=items&offset=-1")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, json!({"message": "Unauthorized - Invalid API secret"}));
    let r = get(&format!("{url}?table=items&offset=-1&secret=s3cret")).await;
    assert_eq!(r.status, 200);
    let handle = r.header("electric-handle").unwrap();

    // Subset snapshot via GET and POST.
    let r = get(&format!("{url}?table=items&offset=0_0&handle={handle}&secret=s3cret&subset__where=grp%20%3D%20%241&subset__params=%7B%221%22%3A%22even%22%7D&subset__order_by=id%20DESC&subset__limit=2")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("electric-snapshot").as_deref(), Some("true"));
    let ids: Vec<&str> =
        r.body["data"].as_array().unwrap().iter().map(|m| m["value"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["10", "8"]);
    assert!(r.body["metadata"]["xmin"].is_string());
    assert!(r.body["data"][0]["headers"]["snapshot_mark"].is_number());
    let post = send(
        reqwest::Client::new()
            .post(format!("{url}?table=items&offset=0_0&handle={handle}&secret=s3cret"))
            .body(r#"{"where":"id <= $1","params":{"1":"3"},"order_by":"id"}"#),
    )
    .await;
    assert_eq!(post.status, 200, "{}", post.text);
    assert_eq!(post.body["data"].as_array().unwrap().len(), 3);
    let bad = send(
        reqwest::Client::new().post(format!("{url}?table=items&offset=0_0&handle={handle}&secret=s3cret")).body("[1]"),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body, json!({"error": "Request body must be a JSON object"}));
    let big = send(
        reqwest::Client::new()
            .post(format!("{url}?table=items&offset=0_0&handle={handle}&secret=s3cret"))
            .body(vec![b' '; 2 * 1024 * 1024]),
    )
    .await;
    assert_eq!(big.status, 413);

    // DELETE rotates: the old handle now gets 409 and a new handle.
    let del = send(reqwest::Client::new().delete(format!("{url}?handle={handle}&secret=s3cret"))).await;
    assert_eq!(del.status, 202);
    let r = get(&format!("{url}?table=items&offset=0_0&handle={handle}&secret=s3cret")).await;
    assert_eq!(r.status, 409);
    let new_handle = r.header("electric-handle").unwrap();
    assert_ne!(new_handle, handle);
    let missing = send(reqwest::Client::new().delete(format!("{url}?handle=1-1&secret=s3cret"))).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_disabled_and_offset_now() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1);").await.unwrap();
    let s = TestServer::start_with(&db, |c| c.allow_shape_deletion = false).await;
    let url = s.shape_url();
    let del = send(reqwest::Client::new().delete(format!("{url}?table=items"))).await;
    assert_eq!(del.status, 405);
    assert_eq!(del.body, json!({"message": "DELETE not allowed"}));
    let now = get(&format!("{url}?table=items&offset=now")).await;
    assert_eq!(now.status, 200, "{}", now.text);
    assert_eq!(now.header("electric-offset").as_deref(), Some("0_inf"));
    assert_eq!(now.header("electric-has-data").as_deref(), Some("false"));
    assert_eq!(now.body.as_array().unwrap().len(), 1);
    assert_eq!(now.body[0]["headers"]["control"], "up-to-date");
}

/// A response's raw (still encoded) body and headers.
async fn raw(
    url: &str,
    accept_encoding: Option<&str>,
    if_none_match: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(a) = accept_encoding {
        req = req.header("accept-encoding", a);
    }
    if let Some(t) = if_none_match {
        req = req.header("if-none-match", t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

fn decode(encoding: Option<&str>, body: &[u8]) -> String {
    use std::io::Read;
    let mut out = vec![];
    match encoding {
        None => out = body.to_vec(),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(body, 4096).read_to_end(&mut out).unwrap();
        }
        Some(other) => panic!("unexpected content-encoding {other}"),
    }
    String::from_utf8(out).unwrap()
}

/// A header's values, joined.
fn h(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// gzip and brotli when the client accepts them: the same JSON, its own tag per coding, `vary:
/// accept-encoding`; small bodies as they are; other JSON answers (subset snapshots) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_when_accepted() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE zipped (id int PRIMARY KEY, grp text, title text);
         INSERT INTO zipped SELECT g, CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END, 'a title for row number ' || g
           FROM generate_series(1, 300) g;",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await; // chunk_bytes = 10 000
    let url = s.shape_url();

    // Catch up without compression, remembering every response.
    let mut plain = vec![];
    let (mut offset, mut handle) = ("-1".to_string(), String::new());
    loop {
        let u = format!("{url}?table=zipped&offset={offset}{handle}");
        let (status, headers, body) = raw(&u, None, None).await;
        assert_eq!(status, 200);
        assert!(h(&headers, "content-encoding").is_none());
        assert!(h(&headers, "vary").unwrap().contains("accept-encoding"), "{headers:?}");
        handle = format!("&handle={}", h(&headers, "electric-handle").unwrap());
        offset = h(&headers, "electric-offset").unwrap();
        let done = h(&headers, "electric-up-to-date").is_some();
        plain.push((u, String::from_utf8(body).unwrap(), h(&headers, "etag").unwrap()));
        if done {
            break;
        }
    }
    assert!(plain.len() >= 3, "several chunks");

    for (accept, coding) in [("gzip", "gzip"), ("br", "br"), ("gzip, deflate, br", "br"), ("br;q=0, gzip", "gzip")] {
        for (u, text, plain_tag) in &plain {
            let (status, headers, body) = raw(u, Some(accept), None).await;
            assert_eq!(status, 200);
            let vary = h(&headers, "vary").unwrap();
            assert!(vary.contains("accept-encoding"), "{vary}");
            if text.len() < 1024 {
                // The last response (up-to-date only) is too small to be worth it.
                assert!(h(&headers, "content-encoding").is_none(), "{u}: small bodies go as they are");
                assert_eq!(&decode(None, &body), text);
                continue;
            }
            assert_eq!(h(&headers, "content-encoding").as_deref(), Some(coding), "{u} with {accept}");
            assert!(body.len() * 2 < text.len(), "{u}: {} compressed bytes for {}", body.len(), text.len());
            assert_eq!(&decode(Some(coding), &body), text, "{u} with {accept}");
            let tag = h(&headers, "etag").unwrap();
            assert_ne!(&tag, plain_tag, "each coding has its own tag");
            assert!(tag.ends_with(&format!(":{coding}\"")), "{tag}");
            // Served again (from the cache): the same bytes; revalidation per coding.
            let (_, again_headers, again) = raw(u, Some(accept), None).await;
            assert_eq!((again, h(&again_headers, "etag").unwrap()), (body.clone(), tag.clone()));
            assert_eq!(raw(u, Some(accept), Some(&tag)).await.0, 304);
            assert_eq!(raw(u, None, Some(&tag)).await.0, 200, "a gzip tag does not revalidate the plain body");
            assert_eq!(raw(u, Some(accept), Some(plain_tag)).await.0, 200);
        }
    }

    // Live long-poll: a transaction of more than a kilobyte comes compressed, decoding to what a
    // plain request gets.
    let live_url = format!("{url}?table=zipped&offset={offset}{handle}&live=true");
    let waiting = tokio::spawn({
        let live_url = live_url.clone();
        async move { raw(&live_url, Some("gzip"), None).await }
    });
    s.wait_live_waiting(1).await;
    c.batch_execute("UPDATE zipped SET title = title || ' (changed)' WHERE id <= 40").await.unwrap();
    let (status, headers, body) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(h(&headers, "content-encoding").as_deref(), Some("gzip"));
    let live_text = decode(Some("gzip"), &body);
    let (_, plain_headers, plain_body) = raw(&live_url, None, None).await;
    assert!(h(&plain_headers, "content-encoding").is_none());
    let changes = |t: &str| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        v.as_array().unwrap().iter().filter(|m| m["key"].is_string()).cloned().collect()
    };
    assert_eq!(changes(&live_text).len(), 40);
    assert_eq!(changes(&live_text), changes(std::str::from_utf8(&plain_body).unwrap()));

    // A subset snapshot (another JSON answer, streamed) is compressed too.
    let subset = format!("{url}?table=zipped&offset={offset}{handle}&subset__where=grp%20%3D%20%27even%27");
    let (_, plain_headers, plain_body) = raw(&subset, None, None).await;
    assert!(h(&plain_headers, "content-encoding").is_none());
    for coding in ["gzip", "br"] {
        let (status, headers, body) = raw(&subset, Some(coding), None).await;
        assert_eq!(status, 200);
        assert_eq!(h(&headers, "content-encoding").as_deref(), Some(coding));
        assert!(h(&headers, "vary").unwrap().contains("accept-encoding"));
        // The same rows (each answer has its own snapshot mark).
        let rows = |v: serde_json::Value| -> Vec<serde_json::Value> {
            v["data"].as_array().unwrap().iter().map(|m| m["value"].clone()).collect()
        };
        let got = rows(serde_json::from_str(&decode(Some(coding), &body)).unwrap());
        assert_eq!(got.len(), 150);
        assert_eq!(got, rows(serde_json::from_slice(&plain_body).unwrap()));
    }
}

/// An SSE stream asked for with `accept-encoding: gzip` is gzipped, and each batch of events can
/// be decoded as soon as it arrives (the stream stays open); the end of the stream is valid gzip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_are_gzipped_event_by_event() {
    use futures_util::StreamExt;
    use std::io::Write;
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE feed (id int PRIMARY KEY, body text); INSERT INTO feed VALUES (1, 'one');")
        .await
        .unwrap();
    let s = TestServer::start_with(&db, |c| c.sse_timeout_secs = 4).await;
    let mut r = ShapeReader::new(&s.base, &[("table", "feed")]);
    r.catch_up().await;
    let url = format!(
        "{}?table=feed&handle={}&offset={}&live=true&live_sse=true",
        s.shape_url(),
        r.handle.clone().unwrap(),
        r.offset
    );
    let resp = reqwest::Client::new().get(&url).header("accept-encoding", "gzip, br").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert_eq!(h(&headers, "content-encoding").as_deref(), Some("gzip"));
    assert!(h(&headers, "vary").unwrap().contains("accept-encoding"));
    let mut body = resp.bytes_stream();
    let mut decoded = flate2::write::GzDecoder::new(Vec::new());
    // Reads pieces until the decoded text satisfies `done` (the stream must not have to end).
    async fn until<B: AsRef<[u8]>>(
        body: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
        decoded: &mut flate2::write::GzDecoder<Vec<u8>>,
        done: impl Fn(&str) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while !done(std::str::from_utf8(decoded.get_ref()).unwrap()) {
            let piece = tokio::time::timeout_at(deadline, body.next()).await.expect("event arrives in time");
            decoded.write_all(piece.unwrap().unwrap().as_ref()).unwrap();
            decoded.flush().unwrap();
        }
    }
    c.execute("INSERT INTO feed VALUES (2, 'two')", &[]).await.unwrap();
    until(&mut body, &mut decoded, |t| t.contains("\"two\"") && t.contains("up-to-date")).await;
    // A batch above a kilobyte goes compressed (not as a stored block), and still arrives at once.
    c.batch_execute("INSERT INTO feed SELECT g, 'a rather repetitive body ' || g FROM generate_series(10, 60) g")
        .await
        .unwrap();
    until(&mut body, &mut decoded, |t| t.contains("body 60\"") && t.matches("up-to-date").count() >= 2).await;
    // The stream ends (sse_timeout_secs) with a valid trailer.
    while let Some(piece) = body.next().await {
        decoded.write_all(&piece.unwrap()).unwrap();
    }
    let text = String::from_utf8(decoded.finish().unwrap()).unwrap();
    let events: Vec<serde_json::Value> =
        text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(events.iter().filter(|e| e["headers"]["operation"] == "insert").count(), 52);
}

/// One change fanned out to many long-polls waiting at the same offset: its body is built once
/// per coding and the same bytes, tag and offset go to every reader — byte for byte what a
/// fresh (catch-up) read of that offset is answered with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_is_built_once_for_all_its_live_readers() {
    const READERS: usize = 24;
    let (_db, s, c) = setup().await;
    let url = s.shape_url();
    let handle = get(&format!("{url}?table=items&offset=-1")).await.header("electric-handle").unwrap();
    let head = get(&format!("{url}?table=items&offset=0_0&handle={handle}")).await;
    let offset = head.header("electric-offset").unwrap();
    let live_url = format!("{url}?table=items&offset={offset}&handle={handle}&live=true&cursor=1");
    let observer = s.server.observer();
    let counts = || {
        let m = observer.metrics();
        (
            m.live_bodies_built.load(std::sync::atomic::Ordering::Relaxed),
            m.live_bodies_shared.load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    let before = counts();
    // Half ask for gzip: the change is over a kilobyte, so they get their own (compressed) body.
    let waiters: Vec<_> = (0..READERS)
        .map(|i| {
            let u = live_url.clone();
            tokio::spawn(async move { raw(&u, (i % 2 == 1).then_some("gzip"), None).await })
        })
        .collect();
    s.wait_live_waiting(READERS as i64).await;
    c.execute("INSERT INTO items VALUES (6, $1, 0)", &[&"a long title ".repeat(120)]).await.unwrap();
    let mut got = vec![];
    for w in waiters {
        got.push(w.await.unwrap());
    }
    let (plain, zipped) = (&got[0], &got[1]);
    for (i, (status, headers, body)) in got.iter().enumerate() {
        assert_eq!(*status, 200);
        let same = if i % 2 == 1 { zipped } else { plain };
        assert_eq!(body, &same.2, "reader {i}: the same bytes as every reader of its coding");
        for name in ["etag", "electric-offset", "content-encoding", "electric-up-to-date", "cache-control"] {
            assert_eq!(h(headers, name), h(&same.1, name), "reader {i}: {name}");
        }
    }
    assert_eq!(h(&zipped.1, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(decode(Some("gzip"), &zipped.2), decode(None, &plain.2));
    let after = counts();
    assert_eq!(after.0 - before.0, 2, "one body built per coding");
    assert_eq!(after.1 - before.1, READERS as u64 - 2, "the other readers were handed those");
    // A fresh read of the same offset, built for its own request: the same body and tag.
    let fresh = raw(&format!("{url}?table=items&offset={offset}&handle={handle}"), None, None).await;
    assert_eq!(fresh.0, 200);
    assert_eq!(String::from_utf8(fresh.2).unwrap(), String::from_utf8(plain.2.clone()).unwrap());
    assert_eq!(h(&fresh.1, "etag"), h(&plain.1, "etag"));
    assert_eq!(h(&fresh.1, "electric-offset"), h(&plain.1, "electric-offset"));
}

//! `POST /v1/watch`: one held request for several shapes (a Ferrite extension that keeps a
//! browser within its six connections). It answers which shapes moved past the offsets the
//! client holds; it never shows rows, never creates a shape, and a shape is watched as its
//! caller may read it.

use crate::common::*;
use ferrite_server::config::AuthMode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The query string of `r`'s next request (what a client puts in a watch).
fn next_query(r: &ShapeReader) -> String {
    let mut pairs = r.params.clone();
    pairs.push(("handle".into(), r.handle.clone().expect("a handle")));
    pairs.push(("offset".into(), r.offset.clone()));
    form_urlencoded_serialize(&pairs)
}

async fn watch(base: &str, token: Option<&str>, queries: &[String]) -> Resp {
    let mut req = reqwest::Client::new().post(format!("{base}/v1/watch")).json(&json!({ "shapes": queries }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    send(req).await
}

fn changed(r: &Resp) -> Vec<u64> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["changed"].as_array().expect("changed").iter().map(|v| v.as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_answers_which_shapes_moved() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE wa (id int PRIMARY KEY, v text); CREATE TABLE wb (id int PRIMARY KEY, v text);
         INSERT INTO wa VALUES (1, 'a'); INSERT INTO wb VALUES (1, 'b');",
    )
    .await
    .unwrap();
    let s = TestServer::start_with(&db, |c| c.long_poll_timeout_ms = 3_000).await;
    let mut a = ShapeReader::new(&s.base, &[("table", "wa")]);
    let mut b = ShapeReader::new(&s.base, &[("table", "wb")]);
    a.catch_up().await;
    b.catch_up().await;
    let queries = [next_query(&a), next_query(&b)];

    // Nothing new: held until the long-poll timeout, then `[]`.
    let started = Instant::now();
    assert!(changed(&watch(&s.base, None, &queries).await).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(2_500), "held until the timeout");

    // A change to the second table wakes the held watch with its index only.
    let held = tokio::spawn({
        let (base, queries) = (s.base.clone(), queries.clone());
        async move { watch(&base, None, &queries).await }
    });
    s.wait_live_waiting(1).await;
    c.execute("INSERT INTO wb VALUES (2, 'new')", &[]).await.unwrap();
    let answer = held.await.unwrap();
    assert_eq!(changed(&answer), [1]);
    // The other shape is said complete through the change (what its own long-poll's up-to-date
    // would say), so a client holding both at one point can move both on.
    let complete: u64 = answer.body["complete"][0].as_str().expect("a position").parse().unwrap();
    assert!(answer.body["complete"][1].is_null(), "{}", answer.body);
    b.catch_up().await;
    let change_lsn: u64 = b.seen_ops.last().map(|(_, _, pos)| pos.split('/').next().unwrap().parse().unwrap()).unwrap();
    assert!(complete >= change_lsn, "complete through {complete}, the change at {change_lsn}");
    // The shape request read it; a watch from the old offset answers at once.
    assert!(b.rows.contains_key("\"public\".\"wb\"/\"2\""), "{:?}", b.rows.keys());
    assert_eq!(changed(&watch(&s.base, None, &queries).await), [1]);

    // A handle the server does not know, or one of another shape, is reported (the shape
    // request answers 409); a watch never creates shapes.
    let shapes_before = s.server.observer().metrics().shapes_created.load(std::sync::atomic::Ordering::Relaxed);
    let unknown = form_urlencoded_serialize(&[
        ("table".into(), "wa".into()),
        ("where".into(), "id > 0".into()),
        ("handle".into(), a.handle.clone().unwrap()),
        ("offset".into(), a.offset.clone()),
    ]);
    assert_eq!(changed(&watch(&s.base, None, &[next_query(&a), unknown]).await), [1]);
    assert_eq!(s.server.observer().metrics().shapes_created.load(std::sync::atomic::Ordering::Relaxed), shapes_before);

    // A client that hangs up while its watch waits leaves nothing held.
    let gone = tokio::spawn({
        let (base, queries) = (s.base.clone(), [next_query(&a)]);
        async move { watch(&base, None, &queries).await }
    });
    s.wait_live_waiting(1).await;
    gone.abort();
    let observer = s.server.observer();
    wait_until("the hung-up watch to be given back", Duration::from_secs(5), || {
        let held = observer.metrics().live_waiting.load(std::sync::atomic::Ordering::Relaxed);
        async move { held == 0 }
    })
    .await;

    // Bad bodies: a clear 400 naming what is wrong.
    for (body, field) in [
        (json!({"shapes": []}), "shapes"),
        (json!({"shapes": "table=wa"}), "body"),
        (json!({"shapes": vec!["table=wa&offset=-1"; 101]}), "shapes"),
    ] {
        let r = send(reqwest::Client::new().post(format!("{}/v1/watch", s.base)).json(&body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{}", r.text);
    }
    let r = watch(&s.base, None, &[next_query(&a), "offset=0_0&handle=x".into()]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.header("ferrite-watch-index").as_deref(), Some("1"));
}

const SECRET: &str = "watch-secret-0123456789abcdef-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_reads_shapes_as_its_caller_may() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE wn (id int PRIMARY KEY, owner text NOT NULL, v text);
         INSERT INTO wn VALUES (1, 'ann', 'a'), (2, 'bob', 'b');",
    )
    .await
    .unwrap();
    let s = TestServer::start_with(&db, |c| {
        c.long_poll_timeout_ms = 3_000;
        c.auth.mode = AuthMode::Jwt;
        c.auth.secret = Some(SECRET.into());
        c.tables.insert(
            "wn".into(),
            ferrite_server::config::TableConfig { read: Some("owner = claims.sub".into()), ..Default::default() },
        );
    })
    .await;
    let ann = hs256_token(SECRET, json!({"sub": "ann"}));
    let bob = hs256_token(SECRET, json!({"sub": "bob"}));
    let mut r = ShapeReader::new(&s.base, &[("table", "wn")]).with_token(&ann);
    r.catch_up().await;
    let query = next_query(&r);

    // Without a token: 401. Bob replaying Ann's handle and offset is told to ask again (his
    // shape is another: his rule), and learns nothing of Ann's rows or their changes.
    let anon = watch(&s.base, None, std::slice::from_ref(&query)).await;
    assert_eq!(anon.status, 401, "{}", anon.text);
    let started = Instant::now();
    assert_eq!(changed(&watch(&s.base, Some(&bob), std::slice::from_ref(&query)).await), [0]);
    assert!(started.elapsed() < Duration::from_secs(2), "at once");
    let r2 = send(reqwest::Client::new().get(format!("{}/v1/shape?{query}", s.base)).bearer_auth(&bob)).await;
    assert_eq!(r2.status, 409, "Bob's next shape request is sent to his own shape");

    // Ann's own watch wakes for her row, not for Bob's.
    let held = tokio::spawn({
        let (base, ann, query) = (s.base.clone(), ann.clone(), query.clone());
        async move { watch(&base, Some(&ann), &[query]).await }
    });
    s.wait_live_waiting(1).await;
    c.execute("UPDATE wn SET v = 'b2' WHERE id = 2", &[]).await.unwrap();
    c.execute("UPDATE wn SET v = 'a2' WHERE id = 1", &[]).await.unwrap();
    let answer: Value = held.await.unwrap().body;
    assert_eq!(answer, json!({"changed": [0], "complete": [null]}));
    r.catch_up().await;
    assert_eq!(r.rows.len(), 1);
    assert!(r.rows.values().all(|row| row["owner"] == "ann" && row["v"] == "a2"));
}

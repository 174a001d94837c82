//! Presence: join, heartbeat, leave and TTL expiry; reading a room once, as a long-poll and as
//! SSE; bad input; and with JWT auth, rooms readable only by callers who can read the row the
//! room is named after.

use crate::common::*;
use ferrite_server::config::AuthMode;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

async fn post(base: &str, token: Option<&str>, body: Value) -> Resp {
    let mut r = reqwest::Client::new().post(format!("{base}/v1/presence")).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    send(r).await
}

async fn room(base: &str, token: Option<&str>, query: &str) -> Resp {
    let mut r = reqwest::Client::new().get(format!("{base}/v1/presence?{query}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    send(r).await
}

fn members(r: &Resp) -> Vec<(String, Value)> {
    r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["state"]["name"].as_str().unwrap_or_default().to_string(), m["state"].clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_move_leave_and_expire() {
    let db = TestDb::new().await;
    // Members expire by the server's clock, which this test moves on by hand.
    let clock = ferrite_server::ManualClock::new();
    let s = TestServer::start_on(&db, clock.clock(), |c| {
        c.presence_ttl_secs = 30;
        c.long_poll_timeout_ms = 5_000;
    })
    .await;
    let b = &s.base;
    assert_eq!(
        post(b, None, json!({"room": "pipelines:1", "client_id": "ann", "state": {"cursor": [1, 2], "name": "Ann"}}))
            .await
            .status,
        200
    );
    let r =
        post(b, None, json!({"room": "pipelines:1", "client_id": "bob", "state": {"cursor": [5, 5], "name": "Bob"}}))
            .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let bob_member = r.body["member"].as_str().unwrap().to_string();
    let snap = room(b, None, "room=pipelines:1").await;
    assert_eq!(members(&snap).iter().map(|m| m.0.as_str()).collect::<Vec<_>>(), ["Ann", "Bob"]);
    // Members are listed under their member ids, which the poster learns; client ids stay private.
    assert!(snap.body["members"].as_array().unwrap().iter().any(|m| m["member"] == bob_member.as_str()));
    assert!(!snap.text.contains("\"bob\"") && !snap.text.contains("client_id"), "{}", snap.text);
    let offset = snap.body["offset"].as_u64().unwrap();

    // A long-poll from the current offset waits, and wakes when Ann moves.
    let base = b.clone();
    let waiter = tokio::spawn(async move {
        let t = Instant::now();
        (room(&base, None, &format!("room=pipelines:1&live=true&offset={offset}")).await, t.elapsed())
    });
    s.wait_presence_waiting(1).await;
    post(b, None, json!({"room": "pipelines:1", "client_id": "ann", "state": {"cursor": [3, 4], "name": "Ann"}})).await;
    let (woke, waited) = waiter.await.unwrap();
    assert!(waited < Duration::from_secs(4), "woken by the change, not the timeout ({waited:?})");
    assert!(woke.body["offset"].as_u64().unwrap() > offset);
    assert_eq!(members(&woke)[0].1["cursor"], json!([3, 4]));

    // SSE: the current members first, then every change.
    let mut sse =
        reqwest::Client::new().get(format!("{b}/v1/presence?room=pipelines:1&live_sse=true")).send().await.unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut next_event = async || -> Value {
        loop {
            if let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                if let Some(data) = event.strip_prefix("data: ") {
                    return serde_json::from_str(data.trim()).unwrap();
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), sse.chunk()).await.unwrap().unwrap().unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    assert_eq!(next_event().await["members"].as_array().unwrap().len(), 2);
    // Bob leaves.
    assert_eq!(post(b, None, json!({"room": "pipelines:1", "client_id": "bob", "state": null})).await.status, 200);
    let after_leave = next_event().await;
    assert_eq!(after_leave["members"].as_array().unwrap().len(), 1);

    // Ann stops heart-beating: gone once the TTL has passed, and the stream says so.
    let t = Instant::now();
    clock.advance(Duration::from_secs(31));
    let expired = next_event().await;
    assert_eq!(expired["members"], json!([]), "{expired}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(members(&room(b, None, "room=pipelines:1").await).is_empty());

    // Bad input: 400 naming the field.
    for (body, field) in [
        (json!({"client_id": "x", "state": {}}), "room"),
        (json!({"room": "r", "client_id": "no spaces", "state": {}}), "client_id"),
        (json!({"room": "r", "client_id": "x", "state": [1]}), "state"),
        (json!({"room": "r", "client_id": "x", "state": {"blob": "x".repeat(5000)}}), "state"),
    ] {
        let r = post(b, None, body).await;
        assert!(r.status == 400 || r.status == 413, "{field}: {} {}", r.status, r.text);
        if r.status == 400 {
            assert!(r.body["errors"][field].is_array(), "{}", r.text);
        }
    }
    assert_eq!(room(b, None, "offset=1").await.status, 400);
    assert_eq!(room(b, None, "room=r&offset=abc").await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jwt_a_room_is_readable_only_by_those_who_can_read_its_row() {
    const SECRET: &str = "presence-secret-0123456789abcdef0123";
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE pipelines (id int PRIMARY KEY, team_id text NOT NULL); INSERT INTO pipelines VALUES (1, 'a'), (2, 'b');")
        .await
        .unwrap();
    let s = TestServer::start_with(&db, |c| {
        c.auth.mode = AuthMode::Jwt;
        c.auth.secret = Some(SECRET.into());
        c.tables.insert(
            "pipelines".into(),
            ferrite_server::config::TableConfig {
                read: Some("team_id = ANY(claims.teams)".into()),
                ..Default::default()
            },
        );
    })
    .await;
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let token = |sub: &str, teams: Value| {
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": sub, "exp": exp, "teams": teams}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let ann = token("ann", json!(["a"]));
    let b = &s.base;
    assert_eq!(
        post(b, Some(&ann), json!({"room": "pipelines:1", "client_id": "ann-laptop", "state": {"x": 1}})).await.status,
        200
    );
    let r = room(b, Some(&ann), "room=pipelines:1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["members"][0]["subject"], "ann");
    for (room_name, why) in [
        ("pipelines:2", "other team's pipeline"),
        ("pipelines:99", "no such row"),
        ("pipelines:abc", "bad key"),
        ("lobby", "not a row"),
        ("secrets:1", "no rule"),
    ] {
        assert_eq!(
            post(b, Some(&ann), json!({"room": room_name, "client_id": "ann-laptop", "state": {}})).await.status,
            403,
            "{why}"
        );
        assert_eq!(room(b, Some(&ann), &format!("room={room_name}")).await.status, 403, "{why}");
    }
    assert_eq!(room(b, None, "room=pipelines:1").await.status, 401);
    // Another user posting with Ann's client id is another member: Ann's entry is neither
    // replaced nor removed, and nobody sees client ids.
    let mallory = token("mallory", json!(["a"]));
    assert_eq!(
        post(b, Some(&mallory), json!({"room": "pipelines:1", "client_id": "ann-laptop", "state": {"x": 9}}))
            .await
            .status,
        200
    );
    assert_eq!(
        post(b, Some(&mallory), json!({"room": "pipelines:1", "client_id": "ann-laptop", "state": null})).await.status,
        200
    );
    let r = room(b, Some(&ann), "room=pipelines:1").await;
    assert_eq!(r.body["members"].as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!(r.body["members"][0]["subject"], "ann");
    assert_eq!(r.body["members"][0]["state"], json!({"x": 1}));
    assert!(!r.text.contains("ann-laptop"), "client ids are not published: {}", r.text);
}

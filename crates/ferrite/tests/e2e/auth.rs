//! JWT auth against a real Postgres: token verification (HS256, RS256 from a PEM key, ES256 from
//! a JWKS file; expired, not-yet-valid, forged and `alg: none` tokens refused) and tenant
//! isolation probed systematically — a tenant's token can neither read (any where, any columns,
//! subset requests, another tenant's handle, live updates) nor write another tenant's rows.

use crate::common::*;
use ferrite_server::config::AuthMode;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An HS256 token with `claims` plus a subject and an expiry an hour away (unless given).
fn hs256(claims: Value) -> String {
    hs256_token(SECRET, claims)
}

fn sign(header: Header, key: &EncodingKey, claims: Value) -> String {
    let mut c = json!({"sub": "user", "exp": now() + 3600});
    c.as_object_mut().unwrap().extend(claims.as_object().unwrap().clone());
    encode(&header, &c, key).unwrap()
}

fn tenant(t: &str) -> String {
    hs256(json!({"sub": format!("user-of-{t}"), "tenant_id": t}))
}

const SCHEMA: &str = "
    CREATE TABLE leads (id int PRIMARY KEY, tenant_id text NOT NULL, name text, score int NOT NULL DEFAULT 0);
    CREATE TABLE forms (id int PRIMARY KEY, title text);
    CREATE TABLE secrets (id int PRIMARY KEY, body text);
    CREATE TABLE pipelines (id int PRIMARY KEY, team_id text NOT NULL, name text);
    INSERT INTO leads SELECT i, CASE WHEN i % 2 = 0 THEN 't1' ELSE 't2' END, 'lead ' || i, i FROM generate_series(1, 40) i;
    INSERT INTO forms VALUES (1, 'Contact us');
    INSERT INTO secrets VALUES (1, 'launch codes');
    INSERT INTO pipelines VALUES (1, 'a', 'etl'), (2, 'b', 'ml'), (3, 'c', 'billing');";

async fn server(db: &TestDb) -> TestServer {
    TestServer::start_with(db, |c| {
        c.auth.mode = AuthMode::Jwt;
        c.auth.secret = Some(SECRET.into());
        c.auth.public_key_file = Some(fixtures().join("rsa_public.pem"));
        c.auth.jwks_file = Some(fixtures().join("jwks.json"));
        c.auth.leeway_secs = 5;
        let t = |read: Option<&str>, write: Option<&str>, public: bool| ferrite_server::config::TableConfig {
            read: read.map(String::from),
            write: write.map(String::from),
            public,
            ..Default::default()
        };
        c.tables.insert(
            "leads".into(),
            t(Some("tenant_id = claims.tenant_id"), Some("tenant_id = claims.tenant_id"), false),
        );
        c.tables.insert("forms".into(), t(None, None, true));
        c.tables.insert(
            "public.pipelines".into(),
            t(Some("team_id = ANY(claims.teams)"), Some("team_id = ANY(claims.teams)"), false),
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_tokens_get_in() {
    let db = TestDb::new().await;
    db.client().await.batch_execute(SCHEMA).await.unwrap();
    let s = server(&db).await;
    let forms = [("table", "forms")];
    // Valid: HS256, RS256 (PEM key), ES256 (JWKS, by kid).
    assert!(read_shape(&s.base, Some(&hs256(json!({}))), &forms).await.is_ok());
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixtures().join("rsa_private.pem")).unwrap()).unwrap();
    assert!(read_shape(&s.base, Some(&sign(Header::new(Algorithm::RS256), &rsa, json!({}))), &forms).await.is_ok());
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixtures().join("ec_private.pem")).unwrap()).unwrap();
    let mut es = Header::new(Algorithm::ES256);
    es.kid = Some("ec-1".into());
    assert!(read_shape(&s.base, Some(&sign(es, &ec, json!({}))), &forms).await.is_ok());

    let b64 = |v: Value| {
        use std::fmt::Write;
        let bytes = v.to_string().into_bytes();
        // base64url without padding, by hand (no extra dependency for one test).
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.write_char(T[(n >> (18 - 6 * i) & 63) as usize] as char).unwrap();
            }
        }
        out
    };
    let unsigned =
        format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(json!({"sub": "x", "exp": now() + 3600})));
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "x", "exp": now() + 3600}),
        &EncodingKey::from_secret(b"some-other-secret-of-32-bytes-or-more"),
    )
    .unwrap();
    // HS256 signed with the public RSA key as the secret (algorithm confusion).
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "x", "exp": now() + 3600}),
        &EncodingKey::from_secret(&std::fs::read(fixtures().join("rsa_public.pem")).unwrap()),
    )
    .unwrap();
    let refused = [
        ("no token", None),
        ("expired", Some(hs256(json!({"exp": now() - 60})))),
        ("not yet valid", Some(hs256(json!({"nbf": now() + 600})))),
        (
            "no exp",
            Some(
                encode(
                    &Header::new(Algorithm::HS256),
                    &json!({"sub": "x"}),
                    &EncodingKey::from_secret(SECRET.as_bytes()),
                )
                .unwrap(),
            ),
        ),
        (
            "no sub",
            Some(
                encode(
                    &Header::new(Algorithm::HS256),
                    &json!({"exp": now() + 60}),
                    &EncodingKey::from_secret(SECRET.as_bytes()),
                )
                .unwrap(),
            ),
        ),
        ("forged", Some(forged)),
        ("alg none", Some(unsigned)),
        ("algorithm confusion", Some(confused)),
        ("garbage", Some("not.a.token".to_string())),
    ];
    for (what, token) in &refused {
        let r = read_shape(&s.base, token.as_deref(), &forms).await;
        assert!(matches!(r, Err((401, _))), "{what}: {r:?}");
        let w = post_tx(&s.base, token.as_deref(), json!({"client_id": "c", "transactions": []})).await;
        assert_eq!(w.status, 401, "{what}: {}", w.text);
    }
    let r = send(
        reqwest::Client::new()
            .get(format!("{}/v1/shape?table=forms&offset=-1", s.base))
            .header("authorization", "Basic abc"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_read_another_tenants_rows() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = server(&db).await;
    let t1 = tenant("t1");
    let ids_of = |rows: &[Value]| {
        rows.iter().map(|r| r["id"].as_str().unwrap().parse::<i32>().unwrap()).collect::<BTreeSet<_>>()
    };
    let t1_ids: BTreeSet<i32> =
        c.query("SELECT id FROM leads WHERE tenant_id = 't1'", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();

    let wheres = [
        None,
        Some("true"),
        Some("tenant_id = 't2'"),
        Some("tenant_id <> 't1'"),
        Some("tenant_id = 't2' OR true"),
        Some("NOT (tenant_id = 't1')"),
        Some("id > 0 OR tenant_id IS NULL"),
        Some("tenant_id IN ('t1', 't2')"),
        Some("true) OR (true"),
        Some("true) OR tenant_id = ('t2'"),
    ];
    let column_sets = [None, Some("id,name"), Some("id"), Some("id,tenant_id,score")];
    let mut probes = 0;
    for w in wheres {
        for cols in column_sets {
            let mut params = vec![("table", "leads")];
            if let Some(w) = w {
                params.push(("where", w));
            }
            if let Some(cols) = cols {
                params.push(("columns", cols));
            }
            match read_shape(&s.base, Some(&t1), &params).await {
                Ok(rows) => {
                    let ids = ids_of(&rows);
                    assert!(
                        ids.is_subset(&t1_ids),
                        "where {w:?} columns {cols:?} leaked {:?}",
                        ids.difference(&t1_ids)
                    );
                    if w.is_none() {
                        assert_eq!(ids, t1_ids, "an unfiltered shape shows every own row");
                    }
                    for r in &rows {
                        if let Some(t) = r.get("tenant_id") {
                            assert_eq!(t, "t1");
                        }
                    }
                }
                Err((status, body)) => assert_eq!(status, 400, "where {w:?}: {body}"),
            }
            probes += 1;
        }
    }
    assert_eq!(probes, 40);

    // Another tenant's handle gets a 409 towards one's own shape, never their rows.
    let t2 = tenant("t2");
    let r =
        send(reqwest::Client::new().get(format!("{}/v1/shape?table=leads&offset=-1", s.base)).bearer_auth(&t2)).await;
    let t2_handle = r.header("electric-handle").unwrap();
    let r = send(
        reqwest::Client::new()
            .get(format!("{}/v1/shape?table=leads&offset=0_0&handle={t2_handle}", s.base))
            .bearer_auth(&t1),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_ne!(r.header("electric-handle").as_deref(), Some(t2_handle.as_str()));

    // Subset snapshots are ANDed with the restricted shape.
    let mut shape = ShapeReader::new(&s.base, &[("table", "leads")]).with_token(&t1);
    shape.catch_up().await;
    let handle = shape.handle.clone().unwrap();
    for subset in ["tenant_id = 't2'", "true", "id % 2 = 1"] {
        let r = send(
            reqwest::Client::new()
                .post(format!("{}/v1/shape?table=leads&offset={}&handle={handle}", s.base, shape.offset))
                .bearer_auth(&t1)
                .json(&json!({"where": subset, "order_by": "id", "limit": 100})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        for row in r.body["data"].as_array().unwrap() {
            assert_eq!(row["value"]["tenant_id"], "t1", "subset {subset:?} leaked {row}");
        }
    }

    // Live: a new t2 row never reaches t1, a new t1 row does.
    c.batch_execute("INSERT INTO leads VALUES (100, 't2', 'theirs', 0), (101, 't1', 'mine', 0)").await.unwrap();
    shape.live_until(Duration::from_secs(10), |s| s.rows.keys().any(|k| k.contains("101"))).await;
    assert!(!shape.rows.keys().any(|k| k.contains("\"100\"")), "{:?}", shape.rows.keys());

    // Tables without a read rule are refused unless public; responses are never shared-cacheable.
    assert!(matches!(read_shape(&s.base, Some(&t1), &[("table", "secrets")]).await, Err((403, _))));
    let r =
        send(reqwest::Client::new().get(format!("{}/v1/shape?table=forms&offset=-1", s.base)).bearer_auth(&t1)).await;
    assert_eq!(r.status, 200);
    assert!(r.header("cache-control").unwrap().starts_with("private"), "{:?}", r.header("cache-control"));
    assert!(r.headers.get_all("vary").iter().any(|v| v.to_str().unwrap().contains("authorization")));

    // Team membership through an array claim.
    let teams = |t: Value| hs256(json!({"teams": t}));
    let names =
        |rows: Vec<Value>| rows.iter().map(|r| r["name"].as_str().unwrap().to_string()).collect::<BTreeSet<_>>();
    let ab = read_shape(&s.base, Some(&teams(json!(["a", "b"]))), &[("table", "pipelines")]).await.unwrap();
    assert_eq!(names(ab), ["etl".to_string(), "ml".into()].into());
    assert!(read_shape(&s.base, Some(&teams(json!([]))), &[("table", "pipelines")]).await.unwrap().is_empty());
    assert!(
        read_shape(&s.base, Some(&hs256(json!({}))), &[("table", "pipelines")]).await.unwrap().is_empty(),
        "no claim, no rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_write_another_tenants_rows() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = server(&db).await;
    let t1 = tenant("t1");
    let before: Vec<(i32, String, String, i32)> = c
        .query("SELECT id, tenant_id, name, score FROM leads WHERE tenant_id = 't2' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let hlc = format!("{}-0", (now() + 2) * 1000); // after the rows' own (direct) writes
    let attempts = [
        (
            "insert into t2",
            json!({"op": "insert", "table": "leads", "value": {"id": "500", "tenant_id": "t2", "name": "x"}}),
        ),
        (
            "update t2's row",
            json!({"op": "update", "table": "leads", "key": {"id": "1"}, "value": {"name": "mine now"}}),
        ),
        (
            "move own row to t2",
            json!({"op": "update", "table": "leads", "key": {"id": "2"}, "value": {"tenant_id": "t2"}}),
        ),
        ("take t2's row", json!({"op": "update", "table": "leads", "key": {"id": "3"}, "value": {"tenant_id": "t1"}})),
        ("delete t2's row", json!({"op": "delete", "table": "leads", "key": {"id": "5"}})),
        (
            "upsert over t2's row",
            json!({"op": "insert", "table": "leads", "value": {"id": "7", "tenant_id": "t1", "name": "x"}}),
        ),
        (
            "write a public table without a write rule",
            json!({"op": "insert", "table": "forms", "value": {"id": "2", "title": "x"}}),
        ),
        (
            "write a table without rules",
            json!({"op": "update", "table": "secrets", "key": {"id": "1"}, "value": {"body": "x"}}),
        ),
    ];
    let txns: Vec<Value> = attempts
        .iter()
        .enumerate()
        .map(|(i, (_, m))| {
            json!({"id": i + 1, "hlc": hlc, "mutations": [
            // Each transaction first makes an allowed change that must not survive the rejection.
            {"op": "update", "table": "leads", "key": {"id": "4"}, "value": {"score": (1000 + i).to_string()}},
            m]})
        })
        .collect();
    let r = post_tx(&s.base, Some(&t1), json!({"client_id": "t1-device", "transactions": txns})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for (i, (what, _)) in attempts.iter().enumerate() {
        let res = &r.body["results"][i];
        assert_eq!(res["status"], "rejected", "{what}: {res}");
        assert_eq!(res["error"]["code"], "forbidden", "{what}: {res}");
    }
    assert_eq!(r.body["results"][0]["error"]["message"], "row violates write rule for table \"public\".\"leads\"");
    let after: Vec<(i32, String, String, i32)> = c
        .query("SELECT id, tenant_id, name, score FROM leads WHERE tenant_id = 't2' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(before, after, "t2's rows are untouched");
    let score: i32 = c.query_one("SELECT score FROM leads WHERE id = 4", &[]).await.unwrap().get(0);
    assert_eq!(score, 4, "nothing of a rejected transaction stays");
    let secret: String = c.query_one("SELECT body FROM secrets WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(secret, "launch codes");

    // Allowed writes go through, and team rules work with array claims.
    let ok = post_tx(&s.base, Some(&t1), json!({"client_id": "t1-device", "transactions": [
        {"id": 100, "hlc": hlc, "mutations": [{"op": "insert", "table": "leads", "value": {"id": "600", "tenant_id": "t1", "name": "new"}}]}
    ]}))
    .await;
    assert_eq!(ok.body["results"][0]["status"], "applied", "{}", ok.text);
    let team_a = hs256(json!({"sub": "user-of-t1", "teams": ["a"]}));
    let r = post_tx(&s.base, Some(&team_a), json!({"client_id": "t1-device", "transactions": [
        {"id": 101, "hlc": hlc, "mutations": [{"op": "update", "table": "pipelines", "key": {"id": "1"}, "value": {"name": "etl v2"}}]},
        {"id": 102, "hlc": hlc, "mutations": [{"op": "update", "table": "pipelines", "key": {"id": "2"}, "value": {"name": "stolen"}}]}
    ]}))
    .await;
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    assert_eq!(r.body["results"][1]["error"]["code"], "forbidden", "{}", r.text);

    // A client id is scoped by its subject: another user sending the same id has state of its
    // own (its transaction 200 is not a retry of anything, and t1-device's history is intact).
    let other = post_tx(&s.base, Some(&tenant("t2")), json!({"client_id": "t1-device", "transactions": [
        {"id": 5, "hlc": hlc, "mutations": [{"op": "insert", "table": "leads", "value": {"id": "700", "tenant_id": "t2"}}]}
    ]}))
    .await;
    assert_eq!(other.body["results"][0]["status"], "applied", "{}", other.text);
    let retry = post_tx(&s.base, Some(&t1), json!({"client_id": "t1-device", "transactions": [
        {"id": 100, "hlc": hlc, "mutations": [{"op": "insert", "table": "leads", "value": {"id": "600", "tenant_id": "t1", "name": "new"}}]}
    ]}))
    .await;
    assert_eq!(retry.body["results"][0], ok.body["results"][0], "t1's retry is answered from its own record");
}

/// What jwt mode tells a caller about tables: a name without a read (or write) rule is refused
/// alike whether or not such a table exists — reads, writes and presence rooms give the same
/// status and message for an existing unconfigured table and for one that does not exist, so a
/// token cannot probe the database's tables — while a configured table that is missing from the
/// database is reported as missing (the operator's mistake, not a secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cannot_tell_a_missing_table_from_one_without_rules() {
    let db = TestDb::new().await;
    db.client().await.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start_with(&db, |c| {
        c.auth.mode = AuthMode::Jwt;
        c.auth.secret = Some(SECRET.into());
        let rule = Some("tenant_id = claims.tenant_id".to_string());
        let rules = ferrite_server::config::TableConfig { read: rule.clone(), write: rule, ..Default::default() };
        c.tables.insert("leads".into(), rules.clone());
        c.tables.insert("ghosts".into(), rules);
    })
    .await;
    let t1 = tenant("t1");
    // The same answer for `secrets` (exists, no rules) and `nope` (does not exist), the name aside.
    let same = |a: &str, b: &str| a.replace("secrets", "NAME") == b.replace("nope", "NAME");

    let read = |table: &'static str| {
        let (base, t1) = (s.base.clone(), t1.clone());
        async move { read_shape(&base, Some(&t1), &[("table", table)]).await.unwrap_err() }
    };
    let (secrets, nope) = (read("secrets").await, read("nope").await);
    assert_eq!((secrets.0, nope.0), (403, 403), "{secrets:?} {nope:?}");
    assert!(same(&secrets.1, &nope.1), "{secrets:?} {nope:?}");
    assert!(nope.1.contains("not readable") && nope.1.contains("no such table"), "{}", nope.1);

    let hlc = format!("{}-0", now() * 1000);
    let write = |id: u64, table: &str| {
        json!({"id": id, "hlc": hlc, "mutations": [
        {"op": "update", "table": table, "key": {"id": "1"}, "value": {"body": "x"}}]})
    };
    let r = post_tx(
        &s.base,
        Some(&t1),
        json!({"client_id": "probe", "transactions": [write(1, "secrets"), write(2, "nope"), write(3, "ghosts")]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (secrets, nope, ghosts) = (&r.body["results"][0], &r.body["results"][1], &r.body["results"][2]);
    assert_eq!(
        (&secrets["error"]["code"], &nope["error"]["code"]),
        (&json!("forbidden"), &json!("forbidden")),
        "{r:?}"
    );
    let message = |v: &Value| v["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(same(&message(secrets), &message(nope)), "{secrets} {nope}");
    assert!(message(nope).contains("not writable") && message(nope).contains("no such table"), "{nope}");

    for room in ["secrets:1", "nope:1"] {
        let r = send(
            reqwest::Client::new().get(format!("{}/v1/presence", s.base)).query(&[("room", room)]).bearer_auth(&t1),
        )
        .await;
        assert_eq!(r.status, 403, "{room}: {}", r.text);
        assert!(r.text.contains("not readable") && r.text.contains("no such table"), "{room}: {}", r.text);
    }

    // A configured table that the database lacks: said so, to reads and to writes.
    let ghost_read = read("ghosts").await;
    assert_eq!(ghost_read.0, 400, "{ghost_read:?}");
    assert!(ghost_read.1.contains("does not exist"), "{ghost_read:?}");
    assert_eq!(ghosts["error"]["code"], "invalid", "{ghosts}");
    assert!(message(ghosts).contains("does not exist"), "{ghosts}");
}

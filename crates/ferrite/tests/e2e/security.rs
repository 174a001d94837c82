//! Regression tests for the holes a security review found (issue 10), each against a real server
//! and Postgres: what an attacker or an unlucky user did, and what must happen instead.

use crate::common::*;
use ferrite_server::config::{AuthMode, ConflictPolicy};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const SECRET: &str = "security-test-secret-0123456789abcdef";

fn token(claims: Value) -> String {
    hs256_token(SECRET, claims)
}

/// JWT mode with `rule` as both the read and the write rule of each of `tables`.
fn jwt_rule(cfg: &mut ferrite_server::ServerConfig, tables: &[&str], rule: &str) {
    cfg.auth.mode = AuthMode::Jwt;
    cfg.auth.secret = Some(SECRET.into());
    for t in tables {
        let rule = Some(rule.to_string());
        cfg.tables.insert(
            t.to_string(),
            ferrite_server::config::TableConfig { read: rule.clone(), write: rule, ..Default::default() },
        );
    }
}

/// A client HLC of now (later than the rows' own direct writes).
fn hlc(counter: u32) -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    format!("{ms}-{counter}")
}

/// Item 1: a read rule is compiled apart from the client's where clause and ANDed as a tree, and
/// claims are bound values: no comment, quote, newline or parenthesis in the where, the rule or a
/// claim lets a caller see rows outside its rule (or write them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_cannot_be_commented_out_closed_or_reopened() {
    // Tenants whose names are attacks on text splicing; each owns exactly one row.
    let weird = ["t1\n) OR (true) --", "t1' OR 'a'='a", "t1\") OR true --", "*/ OR true /*", "t2' --", "t1\r\n--"];
    let db = TestDb::new().await;
    let c = db.client().await;
    for table in ["notes_multiline", "notes_commented", "notes_block"] {
        c.batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, tenant_id text NOT NULL, body text);
             INSERT INTO {table} SELECT i, CASE WHEN i % 2 = 0 THEN 't1' ELSE 't2' END, 'note ' || i FROM generate_series(1, 20) i;"
        ))
        .await
        .unwrap();
        for (i, t) in weird.iter().enumerate() {
            c.execute(&format!("INSERT INTO {table} VALUES ($1, $2, 'weird')"), &[&(100 + i as i32), t]).await.unwrap();
        }
    }
    // Rules as an operator writes them in TOML: over several lines, with comments.
    let rules = [
        ("notes_multiline", "tenant_id = claims.tenant_id\nAND id > 0\n"),
        ("notes_commented", "id > 0 -- any id\nAND tenant_id = claims.tenant_id -- own rows only"),
        ("notes_block", "/* own rows */ tenant_id = /* the token's tenant */ claims.tenant_id"),
    ];
    let s = TestServer::start_with(&db, |cfg| {
        for (table, rule) in rules {
            jwt_rule(cfg, &[table], rule);
        }
    })
    .await;

    let wheres = [
        None,
        Some("true --"),
        Some("true /*"),
        Some("true /* */ OR true --\n"),
        Some("true) OR (true --"),
        Some("tenant_id = 't2' --"),
        Some("true\n--"),
        Some("id > 0 OR tenant_id = $$t2$$"),
        Some("tenant_id = 't1' OR tenant_id <> 't1' -- '"),
    ];
    let mut tenants = vec!["t1"];
    tenants.extend(weird);
    let mut leaked = vec![];
    for (table, _) in rules {
        for tenant in &tenants {
            let own: BTreeSet<String> = c
                .query(&format!("SELECT id::text FROM {table} WHERE tenant_id = $1"), &[tenant])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(!own.is_empty());
            let t = token(json!({"tenant_id": tenant}));
            for w in wheres {
                let mut params = vec![("table", table)];
                if let Some(w) = w {
                    params.push(("where", w));
                }
                match read_shape(&s.base, Some(&t), &params).await {
                    Ok(rows) => {
                        let ids: BTreeSet<String> =
                            rows.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
                        if !ids.is_subset(&own) {
                            leaked.push(format!(
                                "{table} tenant {tenant:?} where {w:?}: {:?}",
                                ids.difference(&own).collect::<Vec<_>>()
                            ));
                        }
                        if w.is_none() {
                            assert_eq!(ids, own, "{table}: tenant {tenant:?} sees exactly its own rows");
                        }
                    }
                    Err((status, body)) => assert_eq!(status, 400, "{table} {tenant:?} where {w:?}: {body}"),
                }
            }
        }
    }
    assert!(leaked.is_empty(), "rows outside the rule were served:\n{}", leaked.join("\n"));

    // The same claims cannot widen the write rule: another tenant's row stays untouched, the
    // caller's own row can be written.
    for (table, _) in rules {
        for (i, tenant) in weird.iter().enumerate() {
            let t = token(json!({"sub": format!("writer-{i}"), "tenant_id": tenant}));
            let r = post_tx(
                &s.base,
                Some(&t),
                json!({"client_id": format!("w{i}"), "transactions": [
                    {"id": 1, "hlc": hlc(0), "mutations": [{"op": "update", "table": table, "key": {"id": "1"}, "value": {"body": "stolen"}}]},
                    {"id": 2, "hlc": hlc(1), "mutations": [{"op": "update", "table": table, "key": {"id": (100 + i).to_string()}, "value": {"body": "mine"}}]}
                ]}),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.body["results"][0]["error"]["code"], "forbidden", "{table} {tenant:?}: {}", r.text);
            assert_eq!(r.body["results"][1]["status"], "applied", "{table} {tenant:?}: {}", r.text);
        }
        let body: String = c.query_one(&format!("SELECT body FROM {table} WHERE id = 1"), &[]).await.unwrap().get(0);
        assert_eq!(body, "note 1");
    }
}

/// Waits until no backend holds an advisory lock or sits idle in a transaction: every write,
/// including those whose requests were cancelled, has ended.
async fn wait_writes_settled(c: &tokio_postgres::Client) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'),
                        (SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND pid <> pg_backend_pid())",
                &[],
            )
            .await
            .unwrap();
        let (locks, idle_in_txn): (i64, i64) = (row.get(0), row.get(1));
        if locks == 0 && idle_in_txn == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{locks} advisory locks and {idle_in_txn} open transactions remain"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Item 2: a write request cancelled at any point (the client hangs up) leaves nothing behind:
/// each client transaction is all or nothing and recorded exactly once, every client can write
/// again at once, and every pooled connection is usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_write_requests_leave_nothing_behind() {
    use rand::{Rng, SeedableRng};
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);
         INSERT INTO items SELECT i, 0 FROM generate_series(1, 400) i;
         CREATE TABLE applied (client_id text NOT NULL, txn_id bigint NOT NULL, PRIMARY KEY (client_id, txn_id));",
    )
    .await
    .unwrap();
    let write_connections = 4;
    let s = TestServer::start_with(&db, |cfg| cfg.write_connections = write_connections).await;
    let url = format!("{}/v1/transactions", s.base);
    let http = reqwest::Client::new();
    let seed: u64 = std::env::var("FERRITE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let clients = 6;
    let mut cancelled = 0;
    for round in 0..30u64 {
        let client_id = format!("c{}", round % clients);
        let txns: Vec<Value> = (0..3u64)
            .map(|t| {
                let id = round * 10 + t;
                let mut mutations: Vec<Value> = (1..=400)
                    .map(|row| json!({"op": "update", "table": "items", "key": {"id": row.to_string()}, "value": {"n": id.to_string()}}))
                    .collect();
                mutations.push(json!({"op": "insert", "table": "applied", "value": {"client_id": client_id, "txn_id": id.to_string()}}));
                json!({"id": id, "hlc": hlc(id as u32), "mutations": mutations})
            })
            .collect();
        let body = json!({"client_id": client_id, "transactions": txns});
        // Hang up after a random delay: before, during or (rarely) after the batch is applied.
        let delay = std::time::Duration::from_millis(rng.gen_range(0..400));
        match tokio::time::timeout(delay, http.post(&url).json(&body).send()).await {
            Err(_) => cancelled += 1,
            Ok(r) => assert!(r.unwrap().status().is_success()),
        }
    }
    assert!(cancelled >= 20, "most requests must be cut off mid-way ({cancelled} of 30 were)");
    wait_writes_settled(&c).await;

    // All or nothing: every row carries the value of one transaction (the newest applied one).
    let distinct: i64 = c.query_one("SELECT count(DISTINCT n) FROM items", &[]).await.unwrap().get(0);
    assert_eq!(distinct, 1, "a transaction was committed in part");
    // Exactly once: every committed transaction has its result recorded, and every recorded
    // application committed.
    let unrecorded: i64 = c
        .query_one(
            "SELECT count(*) FROM applied a WHERE NOT EXISTS (SELECT 1 FROM ferrite.client_results r
               WHERE r.client_id = a.client_id AND r.id = a.txn_id AND r.result->>'status' IN ('applied', 'merged'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unrecorded, 0, "committed without its exactly-once record");
    let phantom: i64 = c
        .query_one(
            "SELECT count(*) FROM ferrite.client_results r WHERE r.result->>'status' IN ('applied', 'merged')
               AND NOT EXISTS (SELECT 1 FROM applied a WHERE a.client_id = r.client_id AND a.txn_id = r.id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(phantom, 0, "recorded as applied but not committed");

    // Every client writes again at once, and all pooled connections serve at the same time.
    let requests = (0..clients + 2 * write_connections as u64).map(|i| {
        let body = json!({"client_id": format!("c{i}"), "transactions": [
            {"id": 10_000, "hlc": hlc(0), "mutations": [{"op": "update", "table": "items", "key": {"id": (i + 1).to_string()}, "value": {"n": "-1"}}]}
        ]});
        let (http, url) = (http.clone(), url.clone());
        async move { tokio::time::timeout(std::time::Duration::from_secs(10), http.post(&url).json(&body).send()).await }
    });
    for r in futures_util::future::join_all(requests).await {
        let r = r.expect("a client stayed locked out after a cancelled request").unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["results"][0]["status"], "applied", "{v}");
    }
    wait_writes_settled(&c).await;
}

/// Item 3: a LIKE pattern is matched in time linear in the value (the matcher's own unit tests
/// count its steps), patterns are capped, and a big value under a pattern at the cap does not
/// hold up another shape's live updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn like_patterns_are_capped_and_cheap() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL);
         CREATE TABLE pings (id int PRIMARY KEY, note text);",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await;
    let huge = format!("%{}b%", "a".repeat(20_000));
    let r = get(&format!("{}?table=docs&offset=-1&where={}", s.shape_url(), pct(&format!("body LIKE '{huge}'")))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["errors"]["where"][0], "LIKE pattern too long: 20003 characters (the limit is 1024)");

    let at_cap = format!("%{}b%", "a".repeat(1_021));
    let mut docs =
        ShapeReader::new(&s.base, &[("table", "docs"), ("where", &format!("body LIKE '{at_cap}' OR id = 2"))]);
    let mut pings = ShapeReader::new(&s.base, &[("table", "pings")]);
    docs.catch_up().await;
    pings.catch_up().await;
    // The backtracking matcher's worst case: a long run of 'a' that never completes the pattern.
    c.execute("INSERT INTO docs VALUES (1, $1), (2, 'small')", &[&"a".repeat(400_000)]).await.unwrap();
    c.execute("INSERT INTO pings VALUES (1, 'after the big row')", &[]).await.unwrap();
    pings.live_until(std::time::Duration::from_secs(10), |p| p.rows.len() == 1).await;
    docs.live_until(std::time::Duration::from_secs(10), |d| d.rows.len() == 1).await;
    assert!(docs.rows.keys().all(|k| k.contains("\"2\"")), "{:?}", docs.rows.keys().collect::<Vec<_>>());
}

/// Item 4: with a `secret` configured, every `/v1` route but the health check requires it; and
/// the write path never touches Ferrite's own schema or Postgres's catalogs (nor can a shape read
/// them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_guards_every_route_and_bookkeeping_is_out_of_reach() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, title text)").await.unwrap();
    let secret = "s3cret-value";
    let s = TestServer::start_with(&db, |cfg| cfg.secret = Some(secret.into())).await;
    let http = reqwest::Client::new();
    let write = |id: u64, mutation: Value| json!({"client_id": "device", "transactions": [{"id": id, "hlc": hlc(0), "mutations": [mutation]}]});
    let insert = write(1, json!({"op": "insert", "table": "items", "value": {"id": "1", "title": "a"}}));
    let presence = json!({"room": "r", "client_id": "device", "state": {"x": 1}});

    for (what, query) in [("no secret", ""), ("a wrong secret", "?secret=nope")] {
        let refused = [
            send(http.post(format!("{}/v1/transactions{query}", s.base)).json(&insert)).await,
            send(http.post(format!("{}/v1/presence{query}", s.base)).json(&presence)).await,
            send(http.get(format!("{}/v1/presence?room=r{}", s.base, query.replace('?', "&")))).await,
            send(http.get(format!("{}/v1/config{query}", s.base))).await,
            send(http.get(format!("{}/v1/shape?table=items&offset=-1{}", s.base, query.replace('?', "&")))).await,
        ];
        for r in refused {
            assert_eq!(r.status, 401, "{what}: {}", r.text);
        }
    }
    assert_eq!(get(&format!("{}/v1/health", s.base)).await.status, 200);
    let ok = send(http.post(format!("{}/v1/transactions?secret={secret}", s.base)).json(&insert)).await;
    assert_eq!(ok.body["results"][0]["status"], "applied", "{}", ok.text);
    let ok = send(http.post(format!("{}/v1/presence?api_secret={secret}", s.base)).json(&presence)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    // Bookkeeping and catalogs: refused as forbidden, nothing changed.
    let before: i64 = c.query_one("SELECT count(*) FROM ferrite.client_results", &[]).await.unwrap().get(0);
    let targets = [
        json!({"op": "delete", "table": "ferrite.client_results", "key": {"client_id": "device", "id": "1"}}),
        json!({"op": "insert", "table": "ferrite.client_results", "value": {"client_id": "other", "id": "99", "result": "{}"}}),
        json!({"op": "update", "table": "ferrite.row_clocks", "key": {"tbl": "\"public\".\"items\"", "key": "\"1\""}, "value": {"clocks": "{}"}}),
        json!({"op": "update", "table": "pg_catalog.pg_database", "key": {"oid": "1"}, "value": {"datallowconn": "false"}}),
        json!({"op": "insert", "table": "information_schema.sql_features", "value": {"feature_id": "x"}}),
    ];
    for (i, m) in targets.into_iter().enumerate() {
        let r = send(
            http.post(format!("{}/v1/transactions?secret={secret}", s.base)).json(&write(10 + i as u64, m.clone())),
        )
        .await;
        assert_eq!(r.body["results"][0]["error"]["code"], "forbidden", "{m}: {}", r.text);
    }
    let after: i64 = c
        .query_one("SELECT count(*) FROM ferrite.client_results WHERE result->>'status' <> 'rejected'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, before, "recorded results are untouched");
    for table in ["ferrite.client_results", "pg_catalog.pg_authid", "information_schema.tables"] {
        let r = get(&format!("{}/v1/shape?table={table}&offset=-1&secret={secret}", s.base)).await;
        assert_eq!(r.status, 400, "{table}: {}", r.text);
    }
}

/// Item 5: a configured `issuer` / `audience` is required: a token without the claim is refused
/// like one with a wrong value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_issuer_and_audience_are_required() {
    let db = TestDb::new().await;
    db.client().await.batch_execute("CREATE TABLE forms (id int PRIMARY KEY, title text)").await.unwrap();
    let s = TestServer::start_with(&db, |cfg| {
        cfg.auth.mode = AuthMode::Jwt;
        cfg.auth.secret = Some(SECRET.into());
        cfg.auth.issuer = Some("https://issuer.example".into());
        cfg.auth.audience = Some("ferrite".into());
        cfg.tables.insert("forms".into(), ferrite_server::config::TableConfig { public: true, ..Default::default() });
    })
    .await;
    let forms = [("table", "forms")];
    let ok = token(json!({"iss": "https://issuer.example", "aud": "ferrite"}));
    assert!(read_shape(&s.base, Some(&ok), &forms).await.is_ok());
    let refused = [
        ("no iss", json!({"aud": "ferrite"}), "the token has no iss claim"),
        ("no aud", json!({"iss": "https://issuer.example"}), "the token has no aud claim"),
        ("neither", json!({}), "the token has no"),
        ("wrong iss", json!({"iss": "https://evil.example", "aud": "ferrite"}), "issuer is not accepted"),
        ("wrong aud", json!({"iss": "https://issuer.example", "aud": "other"}), "audience is not accepted"),
    ];
    for (what, claims, message) in refused {
        match read_shape(&s.base, Some(&token(claims)), &forms).await {
            Err((401, body)) => assert!(body.contains(message), "{what}: {body}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// Item 13: "up-to-date" means up to date with the log when served. A catch-up boundary pinned
/// at the head by an early reader does not tell a later reader (starting from the beginning,
/// long after) that it has everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reader_is_not_told_up_to_date_early() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, n int); INSERT INTO items SELECT g, 0 FROM generate_series(1, 20) g;",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await;
    let mut early = ShapeReader::new(&s.base, &[("table", "items")]);
    early.catch_up().await; // pins an up-to-date boundary at the head
    for i in 1..=30 {
        c.execute("INSERT INTO items VALUES ($1, $1)", &[&(100 + i)]).await.unwrap();
    }
    early.live_until(std::time::Duration::from_secs(10), |r| r.rows.len() == 50).await;
    // Every response a new reader gets before its first up-to-date, checked one by one.
    let mut late = ShapeReader::new(&s.base, &[("table", "items")]);
    loop {
        let r = late.step(false).await;
        if r.header("electric-up-to-date").is_some() {
            assert_eq!(late.rows.len(), 50, "told up-to-date at {} with {} of 50 rows", late.offset, late.rows.len());
            break;
        }
    }
    // And the Rust client's `sync` into a fresh replica ends with every row.
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica.db");
    let out = std::process::Command::new(ferrite_bin())
        .args(["client", "sync", "--server", &s.base, "--db", replica.to_str().unwrap(), "--table", "items"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new(ferrite_bin())
        .args(["client", "query", "--db", replica.to_str().unwrap(), "SELECT count(*) FROM items"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[50]", "{}", String::from_utf8_lossy(&out.stderr));
}

/// Item 9: client state is keyed by (subject, client id), and presence does not publish client
/// ids: a teammate who learns or guesses a fresh browser's id cannot lock its offline edits out,
/// make them look like retries, or take over its presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatted_client_id_does_not_lock_out_its_owner() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE notes (id int PRIMARY KEY, team_id text NOT NULL, body text)").await.unwrap();
    let s = TestServer::start_with(&db, |cfg| jwt_rule(cfg, &["notes"], "team_id = ANY(claims.teams)")).await;
    let alice = token(json!({"sub": "alice", "teams": ["a"]}));
    let mallory = token(json!({"sub": "mallory", "teams": ["a"]}));
    let insert = |id: u64, row: i32| {
        json!({"id": id, "hlc": hlc(id as u32), "mutations": [
        {"op": "insert", "table": "notes", "value": {"id": row.to_string(), "team_id": "a", "body": "x"}}]})
    };
    // Mallory squats the id first, with a high transaction id.
    let r = post_tx(&s.base, Some(&mallory), json!({"client_id": "browser-1", "transactions": [insert(1_000_000, 1)]}))
        .await;
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    // Alice's offline edits (ids 1..3) are applied, not refused and not taken for retries.
    let r = post_tx(
        &s.base,
        Some(&alice),
        json!({"client_id": "browser-1", "transactions": [insert(1, 2), insert(2, 3), insert(3, 4)]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for i in 0..3 {
        assert_eq!(r.body["results"][i]["status"], "applied", "{}", r.text);
    }
    let rows: i64 = c.query_one("SELECT count(*) FROM notes", &[]).await.unwrap().get(0);
    assert_eq!(rows, 4);

    // Presence: Mallory's post under Alice's client id is a member of its own; readers see
    // member ids, never client ids.
    let presence = |t: &str, state: Value| {
        send(
            reqwest::Client::new()
                .post(format!("{}/v1/presence", s.base))
                .bearer_auth(t)
                .json(&json!({"room": "notes:2", "client_id": "browser-1", "state": state})),
        )
    };
    let mine = presence(&alice, json!({"name": "Alice"})).await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert_eq!(presence(&mallory, json!({"name": "Alice (not)"})).await.status, 200);
    assert_eq!(presence(&mallory, Value::Null).await.status, 200);
    let room =
        send(reqwest::Client::new().get(format!("{}/v1/presence?room=notes:2", s.base)).bearer_auth(&alice)).await;
    let members = room.body["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{}", room.text);
    assert_eq!(members[0]["member"], mine.body["member"]);
    assert_eq!(members[0]["state"], json!({"name": "Alice"}));
    assert!(!room.text.contains("browser-1"), "{}", room.text);
}

/// Item 9, upgrading: results recorded by a server that bound client ids to subjects (the
/// `ferrite.clients` table) move to the (subject, client id) keys, so a retry across the upgrade
/// is still answered from its record, never applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_results_survive_the_client_key_upgrade() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        r#"CREATE TABLE notes (id int PRIMARY KEY, team_id text NOT NULL, body text);
           CREATE SCHEMA ferrite;
           CREATE TABLE ferrite.clients (client_id text PRIMARY KEY, subject text, updated_at timestamptz NOT NULL DEFAULT now());
           CREATE TABLE ferrite.client_results (client_id text NOT NULL, id bigint NOT NULL, result jsonb NOT NULL, PRIMARY KEY (client_id, id));
           INSERT INTO ferrite.clients (client_id, subject) VALUES ('dev', 'alice');
           INSERT INTO ferrite.client_results VALUES ('dev', 5, '{"id": 5, "status": "applied", "txid": "123"}');"#,
    )
    .await
    .unwrap();
    let s = TestServer::start_with(&db, |cfg| jwt_rule(cfg, &["notes"], "team_id = ANY(claims.teams)")).await;
    let alice = token(json!({"sub": "alice", "teams": ["a"]}));
    let r = post_tx(&s.base, Some(&alice), json!({"client_id": "dev", "transactions": [
        {"id": 5, "hlc": hlc(0), "mutations": [{"op": "insert", "table": "notes", "value": {"id": "1", "team_id": "a"}}]}]}))
    .await;
    assert_eq!(r.body["results"][0], json!({"id": 5, "status": "applied", "txid": "123"}), "{}", r.text);
    let rows: i64 = c.query_one("SELECT count(*) FROM notes", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "the retry was not applied again");
    let old: Option<String> = c.query_one("SELECT to_regclass('ferrite.clients')::text", &[]).await.unwrap().get(0);
    assert_eq!(old, None);
}

/// Item 11: another site's page cannot mint dev tokens: the dev sign-in sends no CORS headers,
/// refuses foreign origins (and other sites' host names, against DNS rebinding), and takes only
/// JSON bodies (which a cross-origin page cannot send without a preflight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sites_cannot_mint_dev_tokens() {
    // The sign-in is `ferrite dev`'s own (mounted by the binary, not the generic server).
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(dir.path(), free_port());
    let shapes = dev.printed_value("Shape API").expect("ferrite dev prints its shape API");
    let base = shapes.split('?').next().unwrap().trim_end_matches("/v1/shape").to_string();
    let http = reqwest::Client::new();
    let url = format!("{}/dev/token", base);
    let body = r#"{"user_id": "00000000-0000-4000-8000-0000000000a1"}"#;
    let attempts = [
        ("a simple text/plain post", http.post(&url).header("content-type", "text/plain").body(body), 415),
        ("a form post", http.post(&url).header("content-type", "application/x-www-form-urlencoded").body(body), 415),
        ("no content type", http.post(&url).body(body), 415),
        (
            "another origin",
            http.post(&url)
                .header("content-type", "application/json")
                .header("origin", "http://evil.example")
                .body(body),
            403,
        ),
        (
            "another port",
            http.post(&url)
                .header("content-type", "application/json")
                .header("origin", "http://127.0.0.1:1")
                .body(body),
            403,
        ),
        (
            "a rebound host name",
            http.post(&url).header("content-type", "application/json").header("host", "evil.example").body(body),
            403,
        ),
        (
            "listing users cross-origin",
            http.get(format!("{}/dev/users", base)).header("origin", "http://evil.example"),
            403,
        ),
    ];
    for (what, req, status) in attempts {
        let r = send(req).await;
        assert_eq!(r.status, status, "{what}: {}", r.text);
        assert!(r.header("access-control-allow-origin").is_none(), "{what}: CORS header sent");
        assert!(!r.text.contains("token\""), "{what}: {}", r.text);
    }
    let preflight = send(
        http.request(reqwest::Method::OPTIONS, &url)
            .header("origin", "http://evil.example")
            .header("access-control-request-method", "POST"),
    )
    .await;
    assert!(preflight.header("access-control-allow-origin").is_none());
    // The editor's own page (same origin, JSON) signs in.
    let own =
        send(http.post(&url).header("content-type", "application/json").header("origin", base.clone()).body(body))
            .await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert!(own.body["token"].is_string());
}

/// Item 12: transaction ids beyond bigint are refused instead of collapsing into one; a
/// conflict's `current` row is shown only to a caller whose read rule admits it; server-wins
/// changes without a `base` are refused instead of applied unconditionally; a client's cursor at
/// the end of the u64 range does not overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_holes_stay_closed() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE leads (id int PRIMARY KEY, tenant_id text NOT NULL, name text UNIQUE, status text NOT NULL DEFAULT 'new');
         INSERT INTO leads VALUES (1, 't1', 'Ada', 'new'), (2, 't1', 'Bob', 'new');",
    )
    .await
    .unwrap();
    let s = TestServer::start_with(&db, |cfg| {
        cfg.auth.mode = AuthMode::Jwt;
        cfg.auth.secret = Some(SECRET.into());
        // Visitors may insert leads of their tenant but read none; staff read and write them.
        cfg.tables.insert(
            "leads".into(),
            ferrite_server::config::TableConfig {
                conflict: Some(ConflictPolicy::ServerWins),
                read: Some("tenant_id = claims.tenant_id AND claims.role = 'staff'".into()),
                write: Some("tenant_id = claims.tenant_id".into()),
                ..Default::default()
            },
        );
    })
    .await;
    let visitor = token(json!({"sub": "visitor", "tenant_id": "t1", "role": "visitor"}));
    let staff = token(json!({"sub": "staff", "tenant_id": "t1", "role": "staff"}));
    let tx = |id: Value, m: Value| json!({"client_id": "dev", "transactions": [{"id": id, "hlc": hlc(0), "mutations": [m]}]});

    // Ids: 2^63 - 1 is the largest; 2^63 and 2^64 - 1 are refused naming the field.
    let ok = post_tx(&s.base, Some(&staff), tx(json!(i64::MAX), json!({"op": "update", "table": "leads", "key": {"id": "2"}, "value": {"name": "Bo"}, "base": {"name": "Bob"}}))).await;
    assert_eq!(ok.body["results"][0]["status"], "applied", "{}", ok.text);
    for id in [json!(1u64 << 63), json!(u64::MAX)] {
        let r = post_tx(
            &s.base,
            Some(&staff),
            tx(id.clone(), json!({"op": "delete", "table": "leads", "key": {"id": "2"}, "base": {"name": "Bo"}})),
        )
        .await;
        assert_eq!(r.status, 400, "{id}: {}", r.text);
        assert!(
            r.body["errors"]["transactions[0].id"][0].as_str().unwrap().contains("9223372036854775807"),
            "{}",
            r.text
        );
    }

    // A visitor's insert over an existing lead conflicts without showing it; staff see it.
    let insert = json!({"op": "insert", "table": "leads", "value": {"id": "1", "tenant_id": "t1", "name": "Eve"}});
    let r = post_tx(
        &s.base,
        Some(&visitor),
        json!({"client_id": "kiosk", "transactions": [{"id": 1, "hlc": hlc(0), "mutations": [insert.clone()]}]}),
    )
    .await;
    assert_eq!(r.body["results"][0]["error"]["code"], "conflict", "{}", r.text);
    assert!(r.body["results"][0]["error"].get("current").is_none(), "the visitor saw the row: {}", r.text);
    assert!(!r.text.contains("Ada"), "{}", r.text);
    let r = post_tx(
        &s.base,
        Some(&staff),
        json!({"client_id": "desk", "transactions": [{"id": 1, "hlc": hlc(0), "mutations": [insert]}]}),
    )
    .await;
    assert_eq!(r.body["results"][0]["error"]["current"]["name"], "Ada", "{}", r.text);
    // A constraint rejection names the constraint but not the row it collided with (its DETAIL
    // would tell a visitor that a lead named Ada exists).
    let dup = json!({"op": "insert", "table": "leads", "value": {"id": "9", "tenant_id": "t1", "name": "Ada"}});
    let r = post_tx(
        &s.base,
        Some(&visitor),
        json!({"client_id": "kiosk", "transactions": [{"id": 2, "hlc": hlc(0), "mutations": [dup]}]}),
    )
    .await;
    assert_eq!(r.body["results"][0]["error"]["code"], "constraint", "{}", r.text);
    assert!(!r.text.contains("Ada"), "{}", r.text);

    // Server-wins: no base, no change; a matching base applies; a stale one conflicts.
    let update = |base: Option<Value>| {
        let mut m = json!({"op": "update", "table": "leads", "key": {"id": "1"}, "value": {"status": "won"}});
        if let Some(b) = base {
            m["base"] = b;
        }
        m
    };
    let send_one = |id: u64, m: Value| {
        post_tx(
            &s.base,
            Some(&staff),
            json!({"client_id": "desk", "transactions": [{"id": id, "hlc": hlc(0), "mutations": [m]}]}),
        )
    };
    let r = send_one(2, update(None)).await;
    assert_eq!(r.body["results"][0]["error"]["code"], "invalid", "{}", r.text);
    assert!(r.text.contains("base.status"), "{}", r.text);
    let r = send_one(3, json!({"op": "delete", "table": "leads", "key": {"id": "1"}})).await;
    assert_eq!(r.body["results"][0]["error"]["code"], "invalid", "{}", r.text);
    let status: String = c.query_one("SELECT status FROM leads WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(status, "new", "nothing applied without a base");
    assert_eq!(send_one(4, update(Some(json!({"status": "new"})))).await.body["results"][0]["status"], "applied");
    let r = send_one(5, update(Some(json!({"status": "new"})))).await;
    assert_eq!(r.body["results"][0]["error"]["code"], "conflict", "{}", r.text);

    // A cursor at the end of the range: answered with another cursor, no overflow.
    let mut shape = ShapeReader::new(&s.base, &[("table", "leads")]).with_token(&staff);
    shape.catch_up().await;
    shape.cursor = Some(u64::MAX.to_string());
    let r = shape.step(true).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("electric-cursor"), Some(u64::MAX.to_string()));
}

/// Item 7: mutations are capped per transaction (a bigger one is rejected and recorded, so the
/// client rolls it back) and per request of several transactions (400), the caps are advertised,
/// and a write rule that can judge the row from the mutation alone refuses it before any lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_are_capped_and_rules_are_checked_before_locks() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, tenant_id text NOT NULL, n int)").await.unwrap();
    let s = TestServer::start_with(&db, |cfg| {
        cfg.max_mutations_per_transaction = 50;
        cfg.max_mutations_per_request = 60;
        jwt_rule(cfg, &["items"], "tenant_id = claims.tenant_id");
    })
    .await;
    let t1 = token(json!({"tenant_id": "t1"}));
    let config = get(&format!("{}/v1/config", s.base)).await;
    assert_eq!(
        (config.body["max_mutations_per_transaction"].as_u64(), config.body["max_mutations_per_request"].as_u64()),
        (Some(50), Some(60))
    );
    let inserts = |from: usize, n: usize, tenant: &str| -> Vec<Value> {
        (from..from + n)
            .map(|i| json!({"op": "insert", "table": "items", "value": {"id": i.to_string(), "tenant_id": tenant}}))
            .collect()
    };
    let txn = |id: u64, mutations: Vec<Value>| json!({"id": id, "hlc": hlc(id as u32), "mutations": mutations});

    // One transaction over the cap: rejected, recorded (a retry gets the same answer), nothing applied.
    for _ in 0..2 {
        let r = post_tx(&s.base, Some(&t1), json!({"client_id": "d", "transactions": [txn(1, inserts(0, 51, "t1"))]}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["results"][0]["error"]["code"], "invalid");
        assert_eq!(r.body["results"][0]["error"]["message"], "at most 50 mutations per transaction (got 51)");
    }
    // Several transactions over the request cap: 400, nothing applied; split, they go through.
    let r = post_tx(
        &s.base,
        Some(&t1),
        json!({"client_id": "d", "transactions": [txn(2, inserts(0, 40, "t1")), txn(3, inserts(40, 40, "t1"))]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("at most 60 mutations per request (got 80)"), "{}", r.text);
    let rows: i64 = c.query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0);
    for (id, from) in [(2, 0), (3, 40)] {
        let r =
            post_tx(&s.base, Some(&t1), json!({"client_id": "d", "transactions": [txn(id, inserts(from, 40, "t1"))]}))
                .await;
        assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    }

    // Forbidden rows the rule can judge from the mutation take no lock: the only transaction id
    // the request costs is its recorded rejection's (a lock would take one more).
    let xid = || async { c.query_one("SELECT txid_current()", &[]).await.unwrap().get::<_, i64>(0) };
    let before = xid().await;
    let r =
        post_tx(&s.base, Some(&t1), json!({"client_id": "d", "transactions": [txn(4, inserts(100, 50, "t2"))]})).await;
    assert_eq!(r.body["results"][0]["error"]["code"], "forbidden", "{}", r.text);
    assert_eq!(xid().await - before, 2, "the request assigned more than its rejection's transaction id");
}

/// Opens a streaming GET and returns the response once its headers arrived (the stream stays
/// open while the response is held).
async fn open_stream(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// Item 8: admission control covers every route and every caller. SSE streams hold their place
/// until they end; presence and writes have limits of their own; one subject cannot hold more
/// than its quota; a room has a member cap; presence checks do not use write connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admission_covers_streams_writes_presence_and_subjects() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE rooms (id int PRIMARY KEY, team_id text NOT NULL, n int); INSERT INTO rooms VALUES (1, 'a', 0), (2, 'a', 0);")
        .await
        .unwrap();
    let s = TestServer::start_with(&db, |cfg| {
        jwt_rule(cfg, &["rooms"], "team_id = ANY(claims.teams)");
        cfg.max_concurrent_existing = 3;
        cfg.max_concurrent_presence = 3;
        cfg.max_concurrent_writes = 1;
        cfg.max_requests_per_subject = 4;
        cfg.presence_max_members = 2;
        cfg.write_connections = 1;
        cfg.sse_timeout_secs = 30;
    })
    .await;
    let user = |sub: &str| token(json!({"sub": sub, "teams": ["a"]}));
    let (ann, bob, cat) = (user("ann"), user("bob"), user("cat"));
    let mut shape = ShapeReader::new(&s.base, &[("table", "rooms")]).with_token(&ann);
    shape.catch_up().await;
    let live_sse = format!(
        "{}/v1/shape?table=rooms&handle={}&offset={}&live=true&live_sse=true",
        s.base,
        shape.handle.clone().unwrap(),
        shape.offset
    );

    // Shape SSE streams keep their place: the fourth live request is refused while they run.
    let mut streams = vec![];
    for t in [&ann, &bob, &cat] {
        let r = open_stream(&live_sse, Some(t)).await;
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let refused = send(reqwest::Client::new().get(&live_sse).bearer_auth(&ann)).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.body["code"], "concurrent_request_limit_exceeded");
    drop(streams);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let again = loop {
        let r = open_stream(&live_sse, Some(&ann)).await;
        if r.status() == 200 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(again.status(), 200, "places of ended streams are given back");

    // One subject's quota (4, all routes): Ann holds one shape stream; three presence streams
    // take the rest, and her next request is refused while Bob's is not.
    let presence_sse = |room: &str| format!("{}/v1/presence?room={room}&live_sse=true", s.base);
    let mut held = vec![again];
    for _ in 0..3 {
        let r = open_stream(&presence_sse("rooms:1"), Some(&ann)).await;
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let over = send(reqwest::Client::new().get(format!("{}/v1/config", s.base)).bearer_auth(&ann)).await;
    assert_eq!(over.status, 200, "routes without admission are not counted");
    let over = send(
        reqwest::Client::new()
            .post(format!("{}/v1/presence", s.base))
            .bearer_auth(&ann)
            .json(&json!({"room": "rooms:1", "client_id": "a", "state": {}})),
    )
    .await;
    assert_eq!(over.status, 429, "{}", over.text);
    assert_eq!(over.body["code"], "subject_request_limit_exceeded");
    // Presence has a limit of its own (3, held by Ann's streams).
    let full = send(reqwest::Client::new().get(format!("{}/v1/presence?room=rooms:1", s.base)).bearer_auth(&bob)).await;
    assert_eq!(full.status, 503, "{}", full.text);
    drop(held);

    // A room's member cap.
    let join = |t: String, client: &'static str| {
        let base = s.base.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let r = send(
                    reqwest::Client::new()
                        .post(format!("{base}/v1/presence"))
                        .bearer_auth(&t)
                        .json(&json!({"room": "rooms:2", "client_id": client, "state": {}})),
                )
                .await;
                if r.status != 503 || std::time::Instant::now() > deadline {
                    return r;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(join(ann.clone(), "a").await.status, 200);
    assert_eq!(join(bob.clone(), "b").await.status, 200);
    let third = join(cat.clone(), "c").await;
    assert_eq!(third.status, 429, "{}", third.text);

    // Writes: the one write place and the one write connection are taken by a write waiting on
    // a row lock; another write is refused, and presence (its own connections) still works.
    let mut lock = db.client().await;
    let blocker = lock.transaction().await.unwrap();
    blocker.execute("SELECT 1 FROM rooms WHERE id = 1 FOR UPDATE", &[]).await.unwrap();
    let base = s.base.clone();
    let ann2 = ann.clone();
    let waiting = tokio::spawn(async move {
        post_tx(&base, Some(&ann2), json!({"client_id": "w", "transactions": [
            {"id": 1, "hlc": hlc(0), "mutations": [{"op": "update", "table": "rooms", "key": {"id": "1"}, "value": {"n": "1"}}]}]}))
        .await
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waits: i64 = c
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", &[])
            .await
            .unwrap()
            .get(0);
        if waits > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the write never waited on the lock");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let second = post_tx(&s.base, Some(&bob), json!({"client_id": "w2", "transactions": [
        {"id": 1, "hlc": hlc(0), "mutations": [{"op": "update", "table": "rooms", "key": {"id": "2"}, "value": {"n": "1"}}]}]}))
    .await;
    assert_eq!(second.status, 503, "{}", second.text);
    let presence =
        send(reqwest::Client::new().get(format!("{}/v1/presence?room=rooms:2", s.base)).bearer_auth(&cat)).await;
    assert_eq!(presence.status, 200, "presence waited for a write connection: {}", presence.text);
    blocker.rollback().await.unwrap();
    assert_eq!(waiting.await.unwrap().body["results"][0]["status"], "applied");
}

/// Item 6: subset snapshots use the `snapshot_concurrency` pool (a request beyond it waits, then
/// gets 503 — no connection of its own), are bounded in rows and bytes before any row is sent,
/// stream their rows, and leave nothing behind when the client hangs up half way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subset_snapshots_are_pooled_bounded_and_streamed() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE big (id int PRIMARY KEY, payload text); INSERT INTO big SELECT g, repeat('x', 20000) FROM generate_series(1, 3000) g;")
        .await
        .unwrap();
    let s = TestServer::start_with(&db, |cfg| {
        cfg.snapshot_concurrency = 2;
        cfg.max_subset_rows = 2_000;
        cfg.max_shape_size = 20_000_000;
    })
    .await;
    // A changes-only shape (no initial snapshot of its own) to take subsets of.
    let r = get(&format!("{}/v1/shape?table=big&offset=-1&log=changes_only", s.base)).await;
    let handle = r.header("electric-handle").unwrap();
    let offset = r.header("electric-offset").unwrap();
    let subset =
        |query: &str| format!("{}/v1/shape?table=big&log=changes_only&handle={handle}&offset={offset}&{query}", s.base);

    // Bounds, checked before any row goes out.
    let rows = get(&subset("subset__order_by=id")).await;
    assert_eq!(rows.status, 400, "{}", rows.text);
    assert_eq!(rows.body["code"], "subset_too_large");
    assert!(rows.text.contains("more than 2000 rows"), "{}", rows.text);
    let bytes = get(&subset("subset__order_by=id&subset__limit=1500")).await;
    assert_eq!(bytes.status, 400, "{}", bytes.text);
    assert!(bytes.text.contains("larger than 20000000 bytes"), "{}", bytes.text);
    let ok = get(&subset("subset__order_by=id&subset__limit=50")).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["data"].as_array().unwrap().len(), 50);

    // Two readers that stop reading hold both snapshot connections; a third subset waits and is
    // answered 503 rather than opening a connection of its own.
    let mut stalled = vec![];
    for _ in 0..2 {
        let r = reqwest::Client::new().get(subset("subset__order_by=id&subset__limit=900")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        stalled.push(r);
    }
    let in_subsets = || async {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%snapshot_mark%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    let busy = get(&subset("subset__order_by=id&subset__limit=10")).await;
    assert_eq!(busy.status, 503, "{}", busy.text);
    assert_eq!(busy.body["code"], "snapshot_concurrency_exceeded");
    assert!(in_subsets().await <= 2);
    // They hang up half way: their transactions end, and subsets are served again.
    drop(stalled);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let idle_in_txn: i64 = c
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        if idle_in_txn == 0 && in_subsets().await == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a cut-off subset left its transaction open");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let again = get(&subset("subset__order_by=id&subset__limit=10")).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["data"][9]["value"]["id"], "10");
}

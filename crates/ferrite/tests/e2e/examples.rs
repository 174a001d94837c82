//! The shipped examples work as documented: each example's schema loads and its `ferrite.toml`
//! policies and rules behave as its comments say (agents console: server-wins agent runs, the
//! importance resolver for agent memory, per-user rows, admin-only workflows, one active
//! environment; lead forms: tenant isolation; pipeline
//! editor: team-scoped rows, the composite keys that keep a row's team honest, delete-wins steps).

use crate::common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "examples-secret-0123456789abcdef012345";

fn example(name: &str, file: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name).join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The example's `[auth]` and `[tables.*]` applied to a test server config.
fn apply_example(name: &str, cfg: &mut ferrite_server::ServerConfig) {
    let mut doc: toml::Table = example(name, "ferrite.toml").parse().unwrap();
    if let Some(t) = doc.remove("tables") {
        cfg.tables = t.try_into().unwrap();
    }
    if let Some(a) = doc.remove("auth") {
        cfg.auth = a.try_into().unwrap();
        cfg.auth.secret = Some(SECRET.into());
    }
}

fn token(claims: Value) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let mut c = json!({"exp": exp});
    c.as_object_mut().unwrap().extend(claims.as_object().unwrap().clone());
    encode(&Header::new(Algorithm::HS256), &c, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn post(base: &str, token: &str, client_id: &str, txns: Value) -> Vec<Value> {
    let r = send(
        reqwest::Client::new()
            .post(format!("{base}/v1/transactions"))
            .bearer_auth(token)
            .json(&json!({"client_id": client_id, "transactions": txns})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["results"].as_array().unwrap().clone()
}

const RUN: &str = "00000000-0000-0000-0000-0000000000e1";
const MEM: &str = "00000000-0000-0000-0000-0000000000f1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_console_policies() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(&example("agents-console", "schema.sql")).await.unwrap();
    let s = TestServer::start_with(&db, |cfg| apply_example("agents-console", cfg)).await;
    let u1 = token(json!({"sub": "u1"}));
    let t = now_ms();

    // The agent runtime (a direct Postgres writer) moves a run on; a console that still saw it
    // queued tries to cancel it: conflict, with the current row.
    c.execute(
        "INSERT INTO agent_executions (id, owner_id, agent, status) VALUES ($1::text::uuid, 'u1', 'coder', 'running')",
        &[&RUN],
    )
    .await
    .unwrap();
    let r = post(&s.base, &u1, "u1-console", json!([
        {"id": 1, "hlc": format!("{t}-0"), "mutations": [{"op": "update", "table": "agent_executions", "key": {"id": RUN},
            "value": {"status": "cancelled"}, "base": {"status": "queued"}}]},
        {"id": 2, "hlc": format!("{t}-1"), "mutations": [{"op": "update", "table": "agent_executions", "key": {"id": RUN},
            "value": {"status": "cancelled"}, "base": {"status": "running"}}]},
    ]))
    .await;
    assert_eq!(r[0]["error"]["code"], "conflict", "{r:?}");
    assert_eq!(r[0]["error"]["current"]["status"], "running");
    assert_eq!(r[1]["status"], "applied", "on top of what the runtime wrote it applies");

    // Agent memory from two devices: the more important memory wins although it is older.
    let mem = |id: u64, hlc: u64, importance: &str, content: &str| {
        json!([{"id": id, "hlc": format!("{hlc}-0"), "mutations": [
        {"op": "insert", "table": "agent_memory", "value": {"id": MEM, "owner_id": "u1", "agent": "coder",
            "content": content, "importance": importance, "last_accessed_at": "2026-11-01 10:00:00+00"}}]}])
    };
    post(&s.base, &u1, "u1-laptop", mem(1, t + 1, "8", "use the staging db")).await;
    let r = post(&s.base, &u1, "u1-phone", mem(1, t + 2, "3", "use prod")).await;
    assert_eq!(r[0]["status"], "merged", "{r:?}");
    let content: String = c.query_one("SELECT content FROM agent_memory", &[]).await.unwrap().get(0);
    assert_eq!(content, "use the staging db");

    // Rows are per user: u2 sees none of u1's tasks and cannot write them.
    post(
        &s.base,
        &u1,
        "u1-console",
        json!([{"id": 3, "hlc": format!("{}-0", t + 3), "mutations": [
        {"op": "insert", "table": "tasks", "value": {"id": RUN, "owner_id": "u1", "title": "ship it"}}]}]),
    )
    .await;
    let mut u2_tasks = ShapeReader::new(&s.base, &[("table", "tasks")]).with_token(&token(json!({"sub": "u2"})));
    u2_tasks.catch_up().await;
    assert!(u2_tasks.rows.is_empty());
    let r = post(
        &s.base,
        &token(json!({"sub": "u2"})),
        "u2-console",
        json!([{"id": 1, "hlc": format!("{}-0", t + 4), "mutations": [
        {"op": "update", "table": "tasks", "key": {"id": RUN}, "value": {"title": "mine"}}]}]),
    )
    .await;
    assert_eq!(r[0]["error"]["code"], "forbidden");
    // Workflows are public to read; only a token with role = admin writes them.
    c.execute("INSERT INTO workflows (id, name) VALUES ($1::text::uuid, 'release')", &[&MEM]).await.unwrap();
    let mut wf = ShapeReader::new(&s.base, &[("table", "workflows")]).with_token(&u1);
    wf.catch_up().await;
    assert_eq!(wf.rows.len(), 1, "every signed-in user reads workflows");
    let rename = |id: u64, name: &str| {
        json!([{"id": id, "hlc": format!("{}-0", now_ms() + 1000 + id), "mutations": [
            {"op": "update", "table": "workflows", "key": {"id": MEM}, "value": {"name": name}}]}])
    };
    let member = token(json!({"sub": "u1", "role": "member"}));
    for who in [&u1, &member] {
        let r = post(&s.base, who, "u1-console", rename(4, "mine now")).await;
        assert_eq!(r[0]["error"]["code"], "forbidden", "{r:?}");
    }
    let admin = token(json!({"sub": "u9", "role": "admin"}));
    let r = post(&s.base, &admin, "u9-console", rename(1, "release v2")).await;
    assert_eq!(r[0]["status"], "applied", "{r:?}");
    let name: String = c.query_one("SELECT name FROM workflows", &[]).await.unwrap().get(0);
    assert_eq!(name, "release v2");

    // One active environment per user: activating one deactivates the other (the trigger),
    // whichever device asked last.
    let env = |id: &str, active: bool| json!({"id": id, "owner_id": "u1", "name": id, "is_active": active});
    post(
        &s.base,
        &u1,
        "u1-console",
        json!([{"id": 5, "hlc": format!("{}-0", now_ms() + 2000), "mutations": [
        {"op": "insert", "table": "environments", "value": env("00000000-0000-0000-0000-00000000000a", true)},
        {"op": "insert", "table": "environments", "value": env("00000000-0000-0000-0000-00000000000b", true)}]}]),
    )
    .await;
    let active: Vec<String> = c
        .query("SELECT id::text FROM environments WHERE is_active", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(active, ["00000000-0000-0000-0000-00000000000b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_forms_isolate_tenants() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(&example("lead-forms", "schema.sql")).await.unwrap();
    c.batch_execute(
        "INSERT INTO tenants (id, slug, name) VALUES ('00000000-0000-0000-0000-0000000000a1', 'acme', 'Acme'), ('00000000-0000-0000-0000-0000000000b2', 'globex', 'Globex');
         INSERT INTO leads (tenant_id, name, email, message) VALUES
           ('00000000-0000-0000-0000-0000000000a1', 'Ann', 'ann@acme.test', 'call me back please'),
           ('00000000-0000-0000-0000-0000000000b2', 'Bob', 'bob@globex.test', 'send the brochure');",
    )
    .await
    .unwrap();
    let s = TestServer::start_with(&db, |cfg| apply_example("lead-forms", cfg)).await;
    let acme = token(json!({"sub": "ann", "tenant_id": "00000000-0000-0000-0000-0000000000a1", "role": "staff"}));
    let mut leads =
        ShapeReader::new(&s.base, &[("table", "leads"), ("where", "email LIKE '%globex%' OR true")]).with_token(&acme);
    leads.catch_up().await;
    let names: Vec<&str> = leads.rows.values().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Ann"]);

    // An offline lead syncs into the own tenant; one aimed at another tenant is refused; a bad
    // lead is refused with Postgres's CHECK message.
    let t = now_ms();
    let lead = |id: u64, tenant: &str, message: &str| {
        json!({"id": id, "hlc": format!("{t}-{id}"), "mutations": [
        {"op": "insert", "table": "leads", "value": {"id": format!("00000000-0000-0000-0000-00000000010{id}"),
            "tenant_id": tenant, "name": "Cy", "email": "cy@x.test", "message": message}}]})
    };
    let r = post(
        &s.base,
        &acme,
        "ann-tablet",
        json!([
            lead(1, "00000000-0000-0000-0000-0000000000a1", "offline at the trade fair"),
            lead(2, "00000000-0000-0000-0000-0000000000b2", "offline at the trade fair"),
            lead(3, "00000000-0000-0000-0000-0000000000a1", "short"),
        ]),
    )
    .await;
    assert_eq!(r[0]["status"], "applied", "{r:?}");
    assert_eq!(r[1]["error"]["code"], "forbidden");
    assert_eq!(r[2]["error"]["code"], "constraint");
    assert!(r[2]["error"]["message"].as_str().unwrap().contains("leads_message_check"), "{r:?}");
    let globex: i64 = c
        .query_one("SELECT count(*) FROM leads WHERE tenant_id = '00000000-0000-0000-0000-0000000000b2'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(globex, 1);

    // A visitor of Acme's site: adds a lead to Acme, not to Globex; sees no lead; cannot change
    // or delete one, also not by inserting over an existing id (not even her own). A retry of
    // her upload (same client, same transaction id) is answered from the record: applied.
    let visitor =
        token(json!({"sub": "visitor-7", "tenant_id": "00000000-0000-0000-0000-0000000000a1", "role": "visitor"}));
    let t = now_ms();
    let mine = "00000000-0000-0000-0000-000000000201";
    let visit = |id: u64, m: Value| json!({"id": id, "hlc": format!("{t}-{id}"), "mutations": [m]});
    let insert = |lead_id: &str, tenant: &str, name: &str| {
        json!({"op": "insert", "table": "leads", "value": {"id": lead_id, "tenant_id": tenant, "name": name,
            "email": "dee@x.test", "message": "please call me tomorrow"}})
    };
    let acme_lead = "00000000-0000-0000-0000-000000000101";
    let r = post(
        &s.base,
        &visitor,
        "visitor-7-device",
        json!([
            visit(1, insert(mine, "00000000-0000-0000-0000-0000000000a1", "Dee")),
            visit(2, insert("00000000-0000-0000-0000-000000000202", "00000000-0000-0000-0000-0000000000b2", "Dee")),
            visit(3, json!({"op": "update", "table": "leads", "key": {"id": acme_lead}, "value": {"name": "Mallory"}})),
            visit(4, json!({"op": "delete", "table": "leads", "key": {"id": acme_lead}})),
            visit(5, insert(acme_lead, "00000000-0000-0000-0000-0000000000a1", "Mallory")),
            visit(6, insert(mine, "00000000-0000-0000-0000-0000000000a1", "Dee")),
        ]),
    )
    .await;
    assert_eq!(r[0]["status"], "applied", "{r:?}");
    for (i, why) in [(1, "write rule"), (2, "update rule"), (3, "delete rule"), (4, "update rule"), (5, "update rule")]
    {
        assert_eq!(r[i]["error"]["code"], "forbidden", "{i}: {r:?}");
        assert!(r[i]["error"]["message"].as_str().unwrap().contains(why), "{i}: {r:?}");
    }
    let retry = post(
        &s.base,
        &visitor,
        "visitor-7-device",
        json!([visit(1, insert(mine, "00000000-0000-0000-0000-0000000000a1", "Dee"))]),
    )
    .await;
    assert_eq!(retry[0]["status"], "applied", "a retried upload is answered from the record: {retry:?}");
    let cy: (String, i64) = c
        .query_one("SELECT (SELECT name FROM leads WHERE id = $1::text::uuid), (SELECT count(*) FROM leads WHERE name = 'Dee')", &[&acme_lead])
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!(cy, ("Cy".to_string(), 1), "the staff lead untouched, the visitor's added once");
    // Reading leads with a visitor's token is refused outright (the rule's claims make it false).
    let r =
        send(reqwest::Client::new().get(format!("{}/v1/shape?table=leads&offset=-1", s.base)).bearer_auth(&visitor))
            .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("admits no row for this token"), "{}", r.text);
    // Staff of another tenant are not refused: they read their own tenant's (none of Acme's).
    let globex_staff =
        token(json!({"sub": "gus", "tenant_id": "00000000-0000-0000-0000-0000000000b2", "role": "staff"}));
    let mut theirs = ShapeReader::new(&s.base, &[("table", "leads")]).with_token(&globex_staff);
    theirs.catch_up().await;
    let names: Vec<&str> = theirs.rows.values().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Bob"]);
}

const PLATFORM: &str = "00000000-0000-4000-8000-000000000001";
const DATA: &str = "00000000-0000-4000-8000-000000000002";
const BUILD_AND_DEPLOY: &str = "00000000-0000-4000-8000-0000000000b1";
const NIGHTLY_ETL: &str = "00000000-0000-4000-8000-0000000000b2";
const DOCS_SITE: &str = "00000000-0000-4000-8000-0000000000b3";
const TEST_STEP: &str = "00000000-0000-4000-8000-0000000000c3";
const ADA: &str = "00000000-0000-4000-8000-0000000000a1";
const GRACE: &str = "00000000-0000-4000-8000-0000000000a2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_editor_rules_and_policies() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(&example("pipeline-editor", "schema.sql")).await.unwrap();
    c.batch_execute(&example("pipeline-editor", "seed.sql")).await.unwrap();
    let s = TestServer::start_with(&db, |cfg| apply_example("pipeline-editor", cfg)).await;
    // Tokens name the user only: what each may read and write follows team_members.
    let ada = token(json!({"sub": ADA}));
    let grace = token(json!({"sub": GRACE}));
    let nobody = token(json!({"sub": "00000000-0000-4000-8000-0000000000a4"}));

    // Each user reads the rows of their own teams only, whatever they ask for.
    let rows = |tok: &str, table: &str| {
        let mut r = ShapeReader::new(&s.base, &[("table", table), ("where", "true")]).with_token(tok);
        async move {
            r.catch_up().await;
            r.rows.into_values().collect::<Vec<_>>()
        }
    };
    for table in ["pipelines", "steps", "connections", "comments", "pipeline_versions"] {
        let ada_rows = rows(&ada, table).await;
        assert!(!ada_rows.is_empty(), "{table}");
        // Only a pipeline names its team; the rest reach it through their pipeline.
        let platform = |r: &serde_json::Map<String, Value>| match table {
            "pipelines" => r["team_id"] == PLATFORM,
            _ => r["pipeline_id"] == BUILD_AND_DEPLOY || r["pipeline_id"] == DOCS_SITE,
        };
        assert!(ada_rows.iter().all(platform), "{table}: {ada_rows:?}");
        let grace_rows = rows(&grace, table).await;
        assert!(grace_rows.len() > ada_rows.len() || table == "comments" || table == "pipeline_versions", "{table}");
        assert!(rows(&nobody, table).await.is_empty(), "{table}");
    }
    // A client's subquery on a table whose read rule reads another table (pipelines → their
    // team's memberships): compiled with that rule, as an include tree's shapes are.
    let mut through = ShapeReader::new(
        &s.base,
        &[
            ("table", "steps"),
            ("where", &format!("pipeline_id IN (SELECT id FROM pipelines WHERE id = '{BUILD_AND_DEPLOY}')")),
        ],
    )
    .with_token(&ada);
    through.catch_up().await;
    assert!(!through.rows.is_empty() && through.rows.values().all(|r| r["pipeline_id"] == BUILD_AND_DEPLOY));
    assert_eq!(rows(&ada, "teams").await.len(), 1);
    assert_eq!(rows(&ada, "team_members").await.len(), 2);
    assert_eq!(rows(&nobody, "users").await.len(), 4, "names and avatars are public to signed-in users");

    let t = now_ms();
    let step = |id: &str, pipeline: &str| {
        json!({"op": "insert", "table": "steps", "value": {
        "id": id, "pipeline_id": pipeline, "name": "Lint", "type": "shell", "config": "{}", "position": "9"}})
    };
    let r = post(&s.base, &grace, "grace-laptop", json!([
        // Into a pipeline of her team: applied.
        {"id": 1, "hlc": format!("{t}-0"), "mutations": [step("00000000-0000-4000-8000-0000000000f1", BUILD_AND_DEPLOY)]},
        // Into a pipeline of the team where she is a viewer: forbidden (the rule reads the
        // pipeline's team and her role there).
        {"id": 2, "hlc": format!("{t}-1"), "mutations": [step("00000000-0000-4000-8000-0000000000f2", NIGHTLY_ETL)]},
        // A connection between steps of two pipelines: refused too.
        {"id": 3, "hlc": format!("{t}-2"), "mutations": [{"op": "insert", "table": "connections", "value": {
            "id": "00000000-0000-4000-8000-0000000000f3", "pipeline_id": BUILD_AND_DEPLOY,
            "from_step_id": TEST_STEP, "to_step_id": "00000000-0000-4000-8000-0000000000c5"}}]},
        // A comment in someone else's name: forbidden.
        {"id": 4, "hlc": format!("{t}-3"), "mutations": [{"op": "insert", "table": "comments", "value": {
            "id": "00000000-0000-4000-8000-0000000000f4", "pipeline_id": BUILD_AND_DEPLOY,
            "user_id": ADA, "body": "signed by Ada"}}]},
    ]))
    .await;
    assert_eq!(r[0]["status"], "applied", "{r:?}");
    assert_eq!(r[1]["error"]["code"], "forbidden", "{r:?}");
    assert_eq!(r[2]["error"]["code"], "constraint", "{r:?}");
    assert_eq!(r[3]["error"]["code"], "forbidden", "{r:?}");
    // Ada cannot write into the Data team at all.
    let r = post(
        &s.base,
        &ada,
        "ada-laptop",
        json!([{"id": 1, "hlc": format!("{t}-4"),
        "mutations": [step("00000000-0000-4000-8000-0000000000f5", NIGHTLY_ETL)]}]),
    )
    .await;
    assert_eq!(r[0]["error"]["code"], "forbidden", "{r:?}");
    // Steps are delete-wins: Ada deletes the Test step; Grace's move stamped later (made
    // offline before she saw the delete) does not bring it back.
    let r = post(
        &s.base,
        &ada,
        "ada-laptop",
        json!([{"id": 2, "hlc": format!("{}-0", t + 10),
        "mutations": [{"op": "delete", "table": "steps", "key": {"id": TEST_STEP}}]}]),
    )
    .await;
    assert_eq!(r[0]["status"], "applied", "{r:?}");
    let r = post(
        &s.base,
        &grace,
        "grace-laptop",
        json!([{"id": 5, "hlc": format!("{}-0", t + 20),
        "mutations": [{"op": "update", "table": "steps", "key": {"id": TEST_STEP}, "value": {"x": "999"}}]}]),
    )
    .await;
    assert_ne!(r[0]["status"], "rejected", "{r:?}");
    assert_eq!(r[0]["unchanged"], true, "{r:?}");
    let left: i64 =
        c.query_one("SELECT count(*) FROM steps WHERE id = $1::text::uuid", &[&TEST_STEP]).await.unwrap().get(0);
    assert_eq!(left, 0);
    // Its connections and comments went with it.
    let dangling: i64 = c
        .query_one("SELECT (SELECT count(*) FROM connections WHERE $1::text::uuid IN (from_step_id, to_step_id)) + (SELECT count(*) FROM comments WHERE step_id = $1::text::uuid)", &[&TEST_STEP])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dangling, 0);

    // Grace is only a viewer in the Data team: she reads its pipelines but cannot edit them.
    // Made an editor, she can, with the same token.
    let etl_step = |n: u64| json!([{"id": n, "hlc": format!("{t}-{n}"), "mutations": [step(&format!("00000000-0000-4000-8000-0000000000e{n}"), NIGHTLY_ETL)]}]);
    assert!(rows(&grace, "steps").await.iter().any(|r| r["pipeline_id"] == NIGHTLY_ETL), "Grace reads Data's steps");
    let r = post(&s.base, &grace, "grace-laptop", etl_step(6)).await;
    assert_eq!(r[0]["error"]["code"], "forbidden", "{r:?}");
    c.execute(
        "UPDATE team_members SET role = 'editor' WHERE user_id = $1::text::uuid AND team_id = $2::text::uuid",
        &[&GRACE, &DATA],
    )
    .await
    .unwrap();
    let r = post(&s.base, &grace, "grace-laptop", etl_step(7)).await;
    assert_eq!(r[0]["status"], "applied", "{r:?}");

    // Removed from Data: its rows leave Grace's open shape at once — with the same token — her
    // writes there are refused, and her presence in its pipeline's room ends with her next
    // heartbeat.
    let mut live = ShapeReader::new(&s.base, &[("table", "steps")]).with_token(&grace);
    live.catch_up().await;
    assert!(live.rows.values().any(|r| r["pipeline_id"] == NIGHTLY_ETL));
    let heartbeat = || {
        let (base, t) = (s.base.clone(), grace.clone());
        async move {
            let body = json!({"room": format!("pipelines:{NIGHTLY_ETL}"), "client_id": "grace-tab", "state": {"x": 1}});
            send(reqwest::Client::new().post(format!("{base}/v1/presence")).bearer_auth(t).json(&body)).await
        }
    };
    assert_eq!(heartbeat().await.status, 200);
    c.execute("DELETE FROM team_members WHERE user_id = $1::text::uuid AND team_id = $2::text::uuid", &[&GRACE, &DATA])
        .await
        .unwrap();
    live.live_until(Duration::from_secs(10), |r| r.rows.values().all(|row| row["pipeline_id"] != NIGHTLY_ETL)).await;
    assert!(live.rows.values().any(|r| r["pipeline_id"] == BUILD_AND_DEPLOY), "Platform's steps stay");
    assert_eq!(heartbeat().await.status, 403, "her presence in Data's pipeline ends");
    let r = post(&s.base, &grace, "grace-laptop", etl_step(8)).await;
    assert_eq!(r[0]["error"]["code"], "forbidden", "{r:?}");

    // Only an owner manages members, and not herself. Grace (an editor of Platform) cannot add
    // Edsger; Ada (its owner) can, demotes Grace to viewer — whose next rename is refused — and
    // cannot remove herself.
    const EDSGER: &str = "00000000-0000-4000-8000-0000000000a4";
    let member = |n: u64, op: &str, user: &str, role: Option<&str>| {
        let key = json!({"team_id": PLATFORM, "user_id": user});
        let m = match (op, role) {
            ("insert", Some(role)) => {
                json!({"op": "insert", "table": "team_members", "value": {"team_id": PLATFORM, "user_id": user, "role": role}})
            }
            ("update", Some(role)) => {
                json!({"op": "update", "table": "team_members", "key": key, "value": {"role": role}})
            }
            _ => json!({"op": "delete", "table": "team_members", "key": key}),
        };
        json!([{"id": n, "hlc": format!("{}-{n}", t + 30), "mutations": [m]}])
    };
    let r = post(&s.base, &grace, "grace-laptop", member(9, "insert", EDSGER, Some("editor"))).await;
    assert_eq!(r[0]["error"]["code"], "forbidden", "{r:?}");
    let r = post(&s.base, &ada, "ada-laptop", member(3, "insert", EDSGER, Some("viewer"))).await;
    assert_eq!(r[0]["status"], "applied", "{r:?}");
    // (The same shape as `nobody`'s above, live since: the pipelines move in.)
    let mut edsger = ShapeReader::new(&s.base, &[("table", "pipelines"), ("where", "true")]).with_token(&nobody);
    edsger.live_until(Duration::from_secs(10), |r| r.rows.len() == 2).await;
    let r = post(&s.base, &ada, "ada-laptop", member(4, "update", GRACE, Some("viewer"))).await;
    assert_eq!(r[0]["status"], "applied", "{r:?}");
    let rename = |n: u64| {
        json!([{"id": n, "hlc": format!("{}-{n}", t + 40), "mutations": [{"op": "update", "table": "steps",
            "key": {"id": "00000000-0000-4000-8000-0000000000c1"}, "value": {"name": "Clone"}}]}])
    };
    let r = post(&s.base, &grace, "grace-laptop", rename(10)).await;
    assert_eq!(r[0]["error"]["code"], "forbidden", "a viewer's rename is refused: {r:?}");
    let r = post(&s.base, &ada, "ada-laptop", member(5, "delete", ADA, None)).await;
    assert_eq!(r[0]["error"]["code"], "forbidden", "an owner cannot remove herself: {r:?}");
    let roles: Vec<String> = c
        .query("SELECT role FROM team_members WHERE team_id = $1::text::uuid ORDER BY role", &[&PLATFORM])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(roles, ["owner", "viewer", "viewer"]);

    // Moving a pipeline to another team moves its rows out of the old team's open shapes: the
    // children's rules read the pipeline's team through it.
    let mut ada_steps = ShapeReader::new(&s.base, &[("table", "steps")]).with_token(&ada);
    ada_steps.catch_up().await;
    assert!(ada_steps.rows.values().any(|r| r["pipeline_id"] == DOCS_SITE));
    c.execute("UPDATE pipelines SET team_id = $1::text::uuid WHERE id = $2::text::uuid", &[&DATA, &DOCS_SITE])
        .await
        .unwrap();
    ada_steps.live_until(Duration::from_secs(10), |r| r.rows.values().all(|row| row["pipeline_id"] != DOCS_SITE)).await;
    assert!(ada_steps.rows.values().any(|r| r["pipeline_id"] == BUILD_AND_DEPLOY));
}

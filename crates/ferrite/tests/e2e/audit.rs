//! The audit trail (`ferrite.audit`) against real Postgres and a real `ferrite serve` process:
//! every client transaction's outcome is recorded once — applied, merged and rejected, with who
//! sent it, the row's key, old → new values and why — retries add nothing, only a token the
//! admin rule admits may read it as a (live) shape, and rows past `audit_retention` are deleted.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SCHEMA: &str = "CREATE TABLE steps (id uuid PRIMARY KEY, name text NOT NULL, x int NOT NULL DEFAULT 0,
                                         CHECK (x >= 0));";
const SECRET: &str = "an-audit-test-secret-that-is-long-enough";
const STEP: &str = "00000000-0000-0000-0000-0000000000a1";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn txn(id: u64, hlc_ms: u64, mutations: Value) -> Value {
    json!({"id": id, "hlc": format!("{hlc_ms}-0"), "mutations": mutations})
}

/// `ferrite serve --config <file>` (jwt mode, steps readable and writable by every token, the
/// audit trail readable by admins), with extra environment.
fn serve_jwt(db: &TestDb, dir: &Path, port: u16, env: &[(&str, &str)]) -> ServerProcess {
    let config = dir.join("ferrite.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nmode = \"jwt\"\nsecret = \"{SECRET}\"\n\n\
             [tables.steps]\nread = \"true\"\nwrite = \"true\"\n\n\
             [tables.\"ferrite.audit\"]\nread = \"claims.role = 'admin'\"\n"
        ),
    )
    .unwrap();
    let args = [std::ffi::OsStr::new("--config"), config.as_os_str()];
    spawn_server_with_args(&db.url, &dir.join("shapes"), port, &args, env)
}

/// The audit rows as Postgres has them, oldest first, as JSON objects.
async fn audit_rows(c: &tokio_postgres::Client) -> Vec<Value> {
    c.query(
        "SELECT json_build_object('subject', subject, 'client_id', client_id, 'txn_id', txn_id, 'tbl', tbl,
                'row_key', row_key, 'key', key, 'op', op, 'outcome', outcome, 'reason', reason, 'changes', changes,
                'age_ok', at <= now() AND at > now() - interval '1 minute')::text
           FROM ferrite.audit ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| serde_json::from_str(&r.get::<_, String>(0)).unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_audited_once_and_only_admins_read_the_trail() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = serve_jwt(&db, dir.path(), port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let ada = hs256_token(SECRET, json!({"sub": "ada", "role": "editor"}));
    let grace = hs256_token(SECRET, json!({"sub": "grace", "role": "editor"}));
    let admin = hs256_token(SECRET, json!({"sub": "root", "role": "admin"}));
    let t0 = now_ms();

    // Applied: Ada inserts a step.
    let ada_txns =
        vec![txn(1, t0, json!([{"op": "insert", "table": "steps", "value": {"id": STEP, "name": "Build", "x": "1"}}]))];
    let r = post_tx(&base, Some(&ada), json!({"client_id": "ada-laptop", "transactions": ada_txns})).await;
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    // Applied: Grace renames it, later.
    let r = post_tx(
        &base,
        Some(&grace),
        json!({"client_id": "grace-phone", "transactions": [
            txn(1, t0 + 1_000, json!([{"op": "update", "table": "steps", "key": {"id": STEP}, "value": {"name": "Ship"}}]))
        ]}),
    )
    .await;
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    // Merged: Ada's older offline edit renames it (loses to Grace's newer rename) and moves it.
    let mut ada_txns = ada_txns;
    ada_txns.push(txn(
        2,
        t0 + 500,
        json!([{"op": "update", "table": "steps", "key": {"id": STEP}, "value": {"name": "Build it", "x": "4"}}]),
    ));
    // Rejected: a value the table's CHECK refuses.
    ada_txns.push(txn(
        3,
        t0 + 2_000,
        json!([{"op": "update", "table": "steps", "key": {"id": STEP}, "value": {"x": "-5"}}]),
    ));
    let body = json!({"client_id": "ada-laptop", "transactions": ada_txns});
    let r = post_tx(&base, Some(&ada), body.clone()).await;
    let statuses: Vec<&Value> = r.body["results"].as_array().unwrap().iter().map(|t| &t["status"]).collect();
    assert_eq!(statuses, [&json!("applied"), &json!("merged"), &json!("rejected")], "{}", r.text);

    let key = format!("\"public\".\"steps\"/\"{STEP}\"");
    let rows = audit_rows(&c).await;
    assert_eq!(rows.len(), 4, "one row per client transaction's row: {rows:#?}");
    for row in &rows {
        assert_eq!(row["tbl"], "\"public\".\"steps\"");
        assert_eq!(row["row_key"], json!({"id": STEP}));
        assert_eq!(row["key"], json!(key));
        assert_eq!(row["age_ok"], true, "stamped with the write's time: {row}");
    }
    let (insert, rename, merged, rejected) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    assert_eq!(
        (&insert["subject"], &insert["client_id"], &insert["txn_id"], &insert["op"], &insert["outcome"]),
        (&json!("ada"), &json!("ada-laptop"), &json!(1), &json!("insert"), &json!("applied"))
    );
    assert_eq!(
        insert["changes"],
        json!({"id": {"old": null, "new": STEP}, "name": {"old": null, "new": "Build"}, "x": {"old": null, "new": "1"}})
    );
    assert_eq!(insert["reason"], Value::Null);
    assert_eq!((&rename["subject"], &rename["client_id"]), (&json!("grace"), &json!("grace-phone")));
    assert_eq!((&rename["op"], &rename["outcome"]), (&json!("update"), &json!("applied")));
    assert_eq!(rename["changes"], json!({"name": {"old": "Build", "new": "Ship"}}), "only what changed, old → new");
    assert_eq!((&merged["txn_id"], &merged["outcome"]), (&json!(2), &json!("merged")));
    assert_eq!(merged["changes"], json!({"x": {"old": "1", "new": "4"}}), "the kept name is not a change");
    let why = merged["reason"].as_str().unwrap();
    assert!(why.contains("name") && why.contains("conflict policy"), "{why}");
    assert_eq!((&rejected["txn_id"], &rejected["outcome"]), (&json!(3), &json!("rejected")));
    assert_eq!(rejected["changes"], json!({"x": {"new": "-5"}}), "what was asked");
    let why = rejected["reason"].as_str().unwrap();
    assert!(why.starts_with("constraint:") && why.contains("check"), "{why}");

    // Retries (the client did not hear the answers) get the recorded results and add no rows.
    let retry = post_tx(&base, Some(&ada), body).await;
    assert_eq!(retry.body["results"], r.body["results"], "{}", retry.text);
    assert_eq!(audit_rows(&c).await.len(), 4, "a replayed transaction is not audited again");

    // Only the admin rule's tokens read the trail.
    let refused = read_shape(&base, Some(&ada), &[("table", "ferrite.audit")]).await.unwrap_err();
    assert_eq!(refused.0, 403, "{}", refused.1);
    let refused = read_shape(&base, None, &[("table", "ferrite.audit")]).await.unwrap_err();
    assert_eq!(refused.0, 401, "{}", refused.1);
    // No client writes it.
    let r = post_tx(
        &base,
        Some(&admin),
        json!({"client_id": "root-1", "transactions": [
            txn(1, now_ms(), json!([{"op": "delete", "table": "ferrite.audit", "key": {"id": "1"}}]))
        ]}),
    )
    .await;
    assert_eq!(r.body["results"][0]["status"], "rejected", "{}", r.text);
    assert_eq!(r.body["results"][0]["error"]["code"], "forbidden", "{}", r.text);

    // An admin reads the history of one row as a shape (where clause with parameters), live.
    let mut history =
        ShapeReader::new(&base, &[("table", "ferrite.audit"), ("where", "key = $1"), ("params[1]", &key)])
            .with_token(&admin);
    history.catch_up().await;
    assert_eq!(history.rows.len(), 4, "the step's four rows (the refused write of the audit table is another row's)");
    let refused_row = audit_rows(&c).await.pop().unwrap();
    assert_eq!(refused_row["tbl"], "\"ferrite\".\"audit\"");
    assert_eq!((&refused_row["outcome"], &refused_row["subject"]), (&json!("rejected"), &json!("root")));
    assert!(refused_row["reason"].as_str().unwrap().starts_with("forbidden:"), "{refused_row}");
    let r = post_tx(
        &base,
        Some(&grace),
        json!({"client_id": "grace-phone", "transactions": [
            txn(2, now_ms(), json!([{"op": "delete", "table": "steps", "key": {"id": STEP}}]))
        ]}),
    )
    .await;
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    history.live_until(Duration::from_secs(15), |h| h.rows.values().any(|r| r["op"] == "delete")).await;
    let delete = history.rows.values().find(|r| r["op"] == "delete").unwrap();
    assert_eq!((&delete["subject"], &delete["outcome"]), (&json!("grace"), &json!("applied")));
    let changes: Value = serde_json::from_str(delete["changes"].as_str().unwrap()).unwrap();
    assert_eq!(
        changes,
        json!({"id": {"old": STEP, "new": null}, "name": {"old": "Ship", "new": null}, "x": {"old": "4", "new": null}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_past_their_retention_are_deleted_in_batches() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Insecure mode: no subject; swept every 2 s.
    let _server = spawn_server_with_env(&db.url, dir.path(), port, &[("FERRITE_AUDIT_RETENTION", "8s")]);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    // The table exists from the start (readable as a shape before any write).
    wait_until("ferrite.audit exists", Duration::from_secs(10), || async {
        c.query_one("SELECT to_regclass('ferrite.audit') IS NOT NULL", &[]).await.unwrap().get::<_, bool>(0)
    })
    .await;
    // More old rows than one delete takes.
    c.execute(
        "INSERT INTO ferrite.audit (at, client_id, txn_id, tbl, op, outcome)
         SELECT now() - interval '2 days', 'old', g, '\"public\".\"steps\"', 'insert', 'applied'
           FROM generate_series(1, 12000) g",
        &[],
    )
    .await
    .unwrap();
    let r = post_tx(
        &base,
        None,
        json!({"client_id": "dev", "transactions": [
            txn(1, now_ms(), json!([{"op": "insert", "table": "steps", "value": {"id": STEP, "name": "Fresh"}}]))
        ]}),
    )
    .await;
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    let count = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    wait_until("the old rows are swept", Duration::from_secs(10), || async {
        count("SELECT count(*) FROM ferrite.audit WHERE client_id = 'old'").await == 0
    })
    .await;
    let fresh = audit_rows(&c).await;
    assert_eq!(fresh.len(), 1, "the fresh row stays within its retention: {fresh:?}");
    assert_eq!(
        (&fresh[0]["subject"], &fresh[0]["client_id"]),
        (&Value::Null, &json!("dev")),
        "no subject without auth"
    );
    assert_eq!(fresh[0]["changes"]["name"], json!({"old": null, "new": "Fresh"}));
    wait_until("the fresh row ages out too", Duration::from_secs(20), || async {
        count("SELECT count(*) FROM ferrite.audit").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_audit_retention_off_nothing_is_recorded() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start_with(&db, |cfg| cfg.audit_retention = "off".parse().unwrap()).await;
    let r = post_tx(
        &s.base,
        None,
        json!({"client_id": "dev", "transactions": [
            txn(1, now_ms(), json!([{"op": "insert", "table": "steps", "value": {"id": STEP, "name": "Quiet"}}])),
            txn(2, now_ms(), json!([{"op": "update", "table": "steps", "key": {"id": STEP}, "value": {"x": "-1"}}]))
        ]}),
    )
    .await;
    assert_eq!(r.body["results"][1]["status"], "rejected", "{}", r.text);
    let n: i64 = c.query_one("SELECT count(*) FROM ferrite.audit", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
}

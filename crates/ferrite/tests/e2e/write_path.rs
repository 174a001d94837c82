//! `POST /v1/transactions` against a real Postgres: exactly-once under retries and restarts,
//! conflict policies, direct writes, validation and constraint errors.

use crate::common::*;
use ferrite_server::config::{ConflictPolicy, Existence, Rule};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SCHEMA: &str = "
    CREATE TABLE steps (id uuid PRIMARY KEY, name text NOT NULL, x int NOT NULL DEFAULT 0, y int NOT NULL DEFAULT 0,
                        CHECK (x >= 0));
    CREATE TABLE notes (id int PRIMARY KEY, step_id uuid REFERENCES steps(id), body text);";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn post(base: &str, body: &Value) -> Resp {
    send(reqwest::Client::new().post(format!("{base}/v1/transactions")).json(body)).await
}

fn txn(id: u64, hlc_ms: u64, mutations: Value) -> Value {
    json!({"id": id, "hlc": format!("{hlc_ms}-0"), "mutations": mutations})
}

async fn setup(tweak: impl FnOnce(&mut ferrite_server::ServerConfig)) -> (TestDb, TestServer, tokio_postgres::Client) {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start_with(&db, tweak).await;
    (db, s, c)
}

async fn step_row(c: &tokio_postgres::Client, id: &str) -> Option<(String, i32, i32)> {
    c.query_opt("SELECT name, x, y FROM steps WHERE id = $1::text::uuid", &[&id])
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// What Postgres's own `test_decoding` slot `oracle` decoded since it was last read: the
/// oracle for which transaction committed what.
async fn oracle_changes(c: &tokio_postgres::Client) -> Vec<String> {
    c.query("SELECT data FROM pg_logical_slot_get_changes('oracle', NULL, NULL)", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

const A: &str = "00000000-0000-0000-0000-00000000000a";
const B: &str = "00000000-0000-0000-0000-00000000000b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_writes_come_back_through_shapes_with_their_txid() {
    let (_db, s, c) = setup(|_| {}).await;
    let mut shape = ShapeReader::new(&s.base, &[("table", "steps")]);
    shape.catch_up().await;
    let r = post(
        &s.base,
        &json!({"client_id": "c1", "transactions": [
            txn(1, now_ms(), json!([{"op": "insert", "table": "steps", "value": {"id": A, "name": "Build", "x": "3"}}]))
        ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let result = &r.body["results"][0];
    assert_eq!(result["status"], "applied", "{}", r.text);
    let txid = result["txid"].as_str().unwrap().to_string();
    assert_eq!(step_row(&c, A).await, Some(("Build".into(), 3, 0)));
    // The insert arrives in the shape's live stream carrying the same txid.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&format!(
            "{}/v1/shape?table=steps&handle={}&offset={}&live=true",
            s.base,
            shape.handle.clone().unwrap(),
            shape.offset
        ))
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        if let Some(insert) = r.body.as_array().unwrap().iter().find(|m| m["headers"]["operation"] == "insert") {
            let txids: Vec<String> = insert["headers"]["txids"]
                .as_array()
                .expect("txids")
                .iter()
                .map(|t| t.as_str().map(String::from).unwrap_or_else(|| t.to_string()))
                .collect();
            assert_eq!(txids, vec![txid.clone()]);
            assert_eq!(insert["value"]["name"], "Build");
            break;
        }
        shape.offset = r.header("electric-offset").unwrap();
        assert!(std::time::Instant::now() < deadline, "the write never came back through the shape");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_storm_applies_once_and_every_retry_gets_the_same_answer() {
    let (_db, s, c) = setup(|_| {}).await;
    let body = json!({"client_id": "storm", "transactions": [
        txn(1, now_ms(), json!([{"op": "insert", "table": "steps", "value": {"id": A, "name": "one"}}])),
        txn(2, now_ms(), json!([{"op": "update", "table": "steps", "key": {"id": A}, "value": {"x": "7"}}])),
    ]});
    let sends: Vec<_> = (0..10)
        .map(|_| {
            let (base, body) = (s.base.clone(), body.clone());
            tokio::spawn(async move { post(&base, &body).await })
        })
        .collect();
    let mut answers = vec![];
    for t in sends {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        answers.push(r.body["results"].clone());
    }
    for a in &answers {
        assert_eq!(a, &answers[0], "every retry returns the recorded result");
    }
    assert_eq!(answers[0][0]["status"], "applied");
    assert_eq!(answers[0][1]["status"], "applied");
    assert_eq!(answers[0][0]["txid"], answers[0][1]["txid"], "a request's transactions commit together, in one group");
    assert_eq!(step_row(&c, A).await, Some(("one".into(), 7, 0)));
    let recorded: i64 =
        c.query_one("SELECT count(*) FROM ferrite.client_results WHERE client_id = 'storm'", &[]).await.unwrap().get(0);
    assert_eq!(recorded, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_server_restart_returns_the_original_result() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let body = json!({"client_id": "restart", "transactions": [
        txn(5, now_ms(), json!([{"op": "insert", "table": "steps", "value": {"id": B, "name": "kept"}}]))
    ]});
    let first = {
        let s = TestServer::start(&db).await;
        let r = post(&s.base, &body).await;
        s.server.shutdown().await;
        r
    };
    // The response was lost (say the server died after Postgres committed): the client retries
    // against a new server process.
    let s = TestServer::start(&db).await;
    let again = post(&s.base, &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body);
    assert_eq!(first.body["results"][0]["status"], "applied");
    let n: i64 = c.query_one("SELECT count(*) FROM steps", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_response_is_answered_by_the_retry() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    // Oracle for the txid: Postgres's own decoding of the committed transaction.
    c.execute("SELECT pg_create_logical_replication_slot('oracle', 'test_decoding')", &[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = json!({"client_id": "crash", "transactions": [
        txn(7, now_ms(), json!([{"op": "insert", "table": "steps", "value": {"id": A, "name": "once"}}]))
    ]});
    let port = free_port();
    let mut doomed = spawn_server_with_env(&db.url, dir.path(), port, &[("FERRITE_FAILPOINT", "crash-after-commit")]);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let lost = reqwest::Client::new().post(format!("{base}/v1/transactions")).json(&body).send().await;
    assert!(lost.is_err(), "the server dies before answering: {lost:?}");
    let status = doomed.0.wait().unwrap();
    assert!(!status.success(), "aborted");
    // Postgres committed it; the client never heard. It retries against a fresh server.
    let decoded = oracle_changes(&c).await;
    let insert =
        decoded.iter().position(|d| d.starts_with("table public.steps: INSERT")).expect("the insert committed");
    let begin = decoded[..insert].iter().rev().find(|d| d.starts_with("BEGIN ")).unwrap();
    let xid = begin.trim_start_matches("BEGIN ").to_string();
    let port = free_port();
    let _server = spawn_server(&db.url, dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let retry = post(&base, &body).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.body["results"][0]["status"], "applied", "{}", retry.text);
    assert_eq!(retry.body["results"][0]["txid"], json!(xid), "the original transaction's txid");
    let n: i64 = c.query_one("SELECT count(*) FROM steps", &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "applied once");
}

/// Applies the two clients' offline transactions in the given order on a fresh database and
/// returns the final row.
async fn two_clients(
    order_a_first: bool,
    table_cfg: Option<ferrite_server::config::TableConfig>,
) -> (Option<(String, i32, i32)>, Vec<Value>) {
    // Offline edits: A renames and moves x at t0+10s; B renames and moves y at t0+20s (later).
    let a = json!({"op": "update", "table": "steps", "key": {"id": A}, "value": {"name": "from A", "x": "5"}, "base": {"name": "start", "x": "1"}});
    let b = json!({"op": "update", "table": "steps", "key": {"id": A}, "value": {"name": "from B", "y": "9"}, "base": {"name": "start", "y": "1"}});
    two_clients_with(order_a_first, table_cfg, a, b).await
}

/// Like [`two_clients`] with client A's mutation stamped t0+10s and B's t0+20s.
async fn two_clients_with(
    order_a_first: bool,
    table_cfg: Option<ferrite_server::config::TableConfig>,
    a: Value,
    b: Value,
) -> (Option<(String, i32, i32)>, Vec<Value>) {
    let (_db, s, c) = setup(|cfg| {
        if let Some(t) = table_cfg {
            cfg.tables.insert("steps".into(), t);
        }
    })
    .await;
    let t0 = now_ms() - 60_000;
    let r = post(&s.base, &json!({"client_id": "setup", "transactions": [
        txn(1, t0, json!([{"op": "insert", "table": "steps", "value": {"id": A, "name": "start", "x": "1", "y": "1"}}]))
    ]}))
    .await;
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    let a = json!({"client_id": "client-a", "transactions": [txn(1, t0 + 10_000, json!([a]))]});
    let b = json!({"client_id": "client-b", "transactions": [txn(1, t0 + 20_000, json!([b]))]});
    let (first, second) = if order_a_first { (a, b) } else { (b, a) };
    let r1 = post(&s.base, &first).await;
    let r2 = post(&s.base, &second).await;
    (step_row(&c, A).await, vec![r1.body["results"][0].clone(), r2.body["results"][0].clone()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lww_converges_to_the_same_row_in_both_orders() {
    let (ab, results_ab) = two_clients(true, None).await;
    let (ba, results_ba) = two_clients(false, None).await;
    assert_eq!(ab, ba, "same final row whatever the sync order");
    // Field-level: B's later name wins, A's x and B's y both survive.
    assert_eq!(ab, Some(("from B".into(), 5, 9)));
    assert_eq!(results_ab[0]["status"], "applied");
    assert_eq!(results_ab[1]["status"], "applied");
    // In the other order A's name arrives after B's newer one: merged, name overridden.
    assert_eq!(results_ba[1]["status"], "merged", "{results_ba:?}");
    assert_eq!(results_ba[1]["overridden"][0]["columns"], json!(["name"]));
}

/// Both sync orders of A's and B's mutations under `cfg` end in the same row; returns it.
async fn converges(cfg: ferrite_server::config::TableConfig, a: Value, b: Value) -> Option<(String, i32, i32)> {
    let (ab, r_ab) = two_clients_with(true, Some(cfg.clone()), a.clone(), b.clone()).await;
    let (ba, r_ba) = two_clients_with(false, Some(cfg), a, b).await;
    assert_eq!(ab, ba, "same final row whatever the sync order ({r_ab:?} / {r_ba:?})");
    for r in r_ab.iter().chain(&r_ba) {
        assert_ne!(r["status"], "rejected", "{r}");
    }
    ab
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existence_and_resolve_policies_converge_in_both_orders() {
    use ferrite_server::config::TableConfig;
    let delete = json!({"op": "delete", "table": "steps", "key": {"id": A}});
    let update = json!({"op": "update", "table": "steps", "key": {"id": A}, "value": {"name": "from B", "y": "9"}});
    let add_wins = TableConfig { existence: Existence::AddWins, ..Default::default() };
    let delete_wins = TableConfig { existence: Existence::DeleteWins, ..Default::default() };
    // A deletes, B (later) updates: add-wins keeps the row with B's change, delete-wins drops it.
    assert_eq!(converges(add_wins.clone(), delete.clone(), update.clone()).await, Some(("from B".into(), 1, 9)));
    assert_eq!(converges(delete_wins.clone(), delete.clone(), update.clone()).await, None);
    // A updates, B (later) deletes: gone under both.
    let update_a = json!({"op": "update", "table": "steps", "key": {"id": A}, "value": {"x": "4"}});
    assert_eq!(converges(add_wins, update_a.clone(), delete.clone()).await, None);
    assert_eq!(converges(delete_wins, update_a, delete).await, None);
    // The agent-memory resolver: the bigger x wins over the newer edit, in either order.
    let resolve = TableConfig { resolve: vec![Rule::Max("x".into()), Rule::Lww], ..Default::default() };
    let a =
        json!({"op": "update", "table": "steps", "key": {"id": A}, "value": {"name": "from A", "x": "10", "y": "1"}});
    let b =
        json!({"op": "update", "table": "steps", "key": {"id": A}, "value": {"name": "from B", "x": "9", "y": "9"}});
    assert_eq!(converges(resolve, a, b).await, Some(("from A".into(), 10, 1)), "10 > 9 as integers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_wins_rejects_a_stale_base_with_the_current_row() {
    let cfg = ferrite_server::config::TableConfig { conflict: Some(ConflictPolicy::ServerWins), ..Default::default() };
    let (row, results) = two_clients(true, Some(cfg)).await;
    assert_eq!(row, Some(("from A".into(), 5, 1)), "the first sync wins, the second is refused");
    assert_eq!(results[0]["status"], "applied");
    assert_eq!(results[1]["status"], "rejected");
    assert_eq!(results[1]["error"]["code"], "conflict");
    assert_eq!(results[1]["error"]["current"]["name"], "from A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_write_is_not_overwritten_by_an_older_offline_edit() {
    let (_db, s, c) = setup(|_| {}).await;
    let t0 = now_ms();
    let r = post(
        &s.base,
        &json!({"client_id": "c", "transactions": [
            txn(1, t0 - 120_000, json!([{"op": "insert", "table": "steps", "value": {"id": A, "name": "v1"}}]))
        ]}),
    )
    .await;
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    // Another program writes directly to Postgres now.
    c.execute("UPDATE steps SET name = 'direct' WHERE id = $1::text::uuid", &[&A]).await.unwrap();
    // An offline edit made a minute ago arrives: older than the direct write, it loses.
    let r = post(&s.base, &json!({"client_id": "c", "transactions": [
        txn(2, t0 - 60_000, json!([{"op": "update", "table": "steps", "key": {"id": A}, "value": {"name": "offline", "x": "2"}}]))
    ]}))
    .await;
    assert_eq!(r.body["results"][0]["status"], "merged", "{}", r.text);
    assert_eq!(step_row(&c, A).await, Some(("direct".into(), 2, 0)), "the untouched column x still applies");
    // A newer edit wins over the direct write.
    let r = post(&s.base, &json!({"client_id": "c", "transactions": [
        txn(3, now_ms() + 1_000, json!([{"op": "update", "table": "steps", "key": {"id": A}, "value": {"name": "newer"}}]))
    ]}))
    .await;
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    assert_eq!(step_row(&c, A).await.unwrap().0, "newer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_apply_nothing_name_the_problem_and_later_transactions_still_run() {
    let (_db, s, c) = setup(|_| {}).await;
    let ok = |id: u64, name: &str| {
        txn(
            id,
            now_ms(),
            json!([{"op": "insert", "table": "steps", "value": {"id": format!("00000000-0000-0000-0000-0000000000{id:02}"), "name": name}}]),
        )
    };
    let r = post(&s.base, &json!({"client_id": "v", "transactions": [
        // Two mutations, the second violates a CHECK: the first must not stay applied.
        txn(1, now_ms(), json!([
            {"op": "insert", "table": "steps", "value": {"id": A, "name": "partial"}},
            {"op": "update", "table": "steps", "key": {"id": A}, "value": {"x": "-1"}}])),
        txn(2, now_ms(), json!([{"op": "insert", "table": "notes", "value": {"id": "1", "step_id": B, "body": "dangling"}}])),
        txn(3, now_ms(), json!([{"op": "insert", "table": "nope", "value": {"id": "1"}}])),
        txn(4, now_ms(), json!([{"op": "insert", "table": "steps", "value": {"id": B, "name": "n", "colour": "red"}}])),
        txn(5, now_ms(), json!([{"op": "insert", "table": "steps", "value": {"id": B, "name": "n", "x": "many"}}])),
        txn(6, now_ms(), json!([{"op": "update", "table": "steps", "key": {"name": "n"}, "value": {"x": "1"}}])),
        txn(7, "99999999999999".parse::<u64>().unwrap(), json!([{"op": "insert", "table": "steps", "value": {"id": B, "name": "future"}}])),
        ok(8, "fine"),
    ]}))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let res = r.body["results"].as_array().unwrap();
    let code = |i: usize| res[i]["error"]["code"].as_str().unwrap_or("").to_string();
    let msg = |i: usize| res[i]["error"]["message"].as_str().unwrap_or("").to_string();
    assert_eq!(res[0]["status"], "rejected");
    assert_eq!(code(0), "constraint");
    assert!(msg(0).contains("steps_x_check"), "{}", msg(0));
    assert_eq!(code(1), "constraint");
    assert!(msg(1).contains("foreign key"), "{}", msg(1));
    assert_eq!(code(2), "invalid");
    assert!(msg(2).contains("does not exist"), "{}", msg(2));
    assert_eq!(code(3), "invalid");
    assert!(msg(3).contains("colour"), "{}", msg(3));
    assert_eq!(code(4), "invalid");
    assert!(msg(4).contains("invalid input syntax for type integer"), "{}", msg(4));
    assert_eq!(code(5), "invalid");
    assert!(msg(5).contains("primary key"), "{}", msg(5));
    assert_eq!(code(6), "clock_skew");
    assert_eq!(res[7]["status"], "applied");
    let names: Vec<String> = c.query("SELECT name FROM steps", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(names, vec!["fine".to_string()], "nothing of the rejected transactions was applied");

    // Request-level errors: 400 naming the field, nothing recorded.
    for (body, field) in [
        (json!({"transactions": []}), "client_id"),
        (
            json!({"client_id": "v", "transactions": [{"id": 9, "hlc": "1-0", "mutations": [{"op": "merge", "table": "steps"}]}]}),
            "transactions[0].mutations[0].op",
        ),
    ] {
        let r = post(&s.base, &body).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(r.body["errors"][field].is_array(), "{}", r.text);
    }
    let too_many: Vec<Value> = (10..=12).map(|i| ok(i, "x")).collect();
    s.server.shutdown().await; // one server per replication slot
    let s2 = TestServer::start_with(&_db, |c| c.sync_batch_size = 2).await;
    let r = post(&s2.base, &json!({"client_id": "v", "transactions": too_many})).await;
    assert_eq!(r.status, 400, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_conflict_applies_to_tables_without_their_own_and_clients_can_read_the_settings() {
    let (row, results) = {
        let (db, s, c) = setup(|cfg| {
            cfg.default_conflict = ConflictPolicy::ServerWins;
            cfg.max_offline_queue = 250;
        })
        .await;
        let r = get(&format!("{}/v1/config", s.base)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["max_offline_queue"], 250);
        assert_eq!(r.body["sync_batch_size"], 100);
        assert_eq!(r.body["auth_mode"], "insecure");
        let t0 = now_ms() - 1000;
        let first = post(&s.base, &json!({"client_id": "a", "transactions": [
            txn(1, t0, json!([{"op": "insert", "table": "steps", "value": {"id": A, "name": "start"}}])),
            txn(2, t0 + 1, json!([{"op": "update", "table": "steps", "key": {"id": A}, "value": {"name": "a"}, "base": {"name": "start"}}])),
        ]}))
        .await;
        let stale = post(&s.base, &json!({"client_id": "b", "transactions": [
            txn(1, t0 + 2, json!([{"op": "update", "table": "steps", "key": {"id": A}, "value": {"name": "b"}, "base": {"name": "start"}}])),
        ]}))
        .await;
        let row = step_row(&c, A).await;
        drop(db);
        (row, vec![first.body["results"][1].clone(), stale.body["results"][0].clone()])
    };
    assert_eq!(results[0]["status"], "applied");
    assert_eq!(results[1]["error"]["code"], "conflict", "server-wins by default: {results:?}");
    assert_eq!(row.map(|r| r.0), Some("a".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_of_one_key_merge_instead_of_failing() {
    let (_db, s, c) = setup(|cfg| cfg.write_connections = 8).await;
    let t0 = now_ms();
    let key = |k: u64| format!("00000000-0000-0000-0000-{k:012}");
    // 20 rounds: in each, 8 devices create the same new row at the same moment.
    for k in 0..20u64 {
        let posts: Vec<_> = (0..8u64)
            .map(|i| {
                let base = s.base.clone();
                let body = json!({"client_id": format!("device-{i}"), "transactions": [
                    txn(k + 1, t0 + i, json!([{"op": "insert", "table": "steps", "value": {"id": key(k), "name": format!("from {i}")}}]))
                ]});
                tokio::spawn(async move { post(&base, &body).await })
            })
            .collect();
        for p in posts {
            let r = p.await.unwrap();
            let status = r.body["results"][0]["status"].as_str().unwrap_or("").to_string();
            assert!(status == "applied" || status == "merged", "{}", r.text);
        }
    }
    let names: Vec<String> = c.query("SELECT name FROM steps", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(names.len(), 20);
    assert!(names.iter().all(|n| n == "from 7"), "the newest insert wins: {names:?}");
}

/// A server with steps A and B inserted (at `t0`, returned), for the deadlock tests.
async fn steps_a_and_b() -> (TestDb, TestServer, tokio_postgres::Client, u64) {
    let (db, s, c) = setup(|_| {}).await;
    let t0 = now_ms();
    let r = post(
        &s.base,
        &json!({"client_id": "setup", "transactions": [txn(1, t0, json!([
        {"op": "insert", "table": "steps", "value": {"id": A, "name": "a"}},
        {"op": "insert", "table": "steps", "value": {"id": B, "name": "b"}}]))]}),
    )
    .await;
    assert_eq!(r.body["results"][0]["status"], "applied");
    (db, s, c, t0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_deadlock_with_each_other_are_retried_not_failed() {
    let (_db, s, c, t0) = steps_a_and_b().await;
    // Two clients touch the same two rows in opposite orders, at the same time, several times:
    // Postgres aborts one side of each deadlock, and the server runs it again.
    for round in 1..=6u64 {
        let (first, second) = if round % 2 == 0 { (A, B) } else { (B, A) };
        let ab_body = json!({"client_id": "ab", "transactions": [txn(round, t0 + round, json!([
            {"op": "update", "table": "steps", "key": {"id": first}, "value": {"x": round.to_string()}},
            {"op": "update", "table": "steps", "key": {"id": second}, "value": {"x": round.to_string()}}]))]});
        let ba_body = json!({"client_id": "ba", "transactions": [txn(round, t0 + round, json!([
            {"op": "update", "table": "steps", "key": {"id": second}, "value": {"y": round.to_string()}},
            {"op": "update", "table": "steps", "key": {"id": first}, "value": {"y": round.to_string()}}]))]});
        let (ab, ba) = tokio::join!(post(&s.base, &ab_body), post(&s.base, &ba_body));
        for r in [ab, ba] {
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
        }
    }
    assert_eq!(step_row(&c, A).await, Some(("a".into(), 6, 6)));
    assert_eq!(step_row(&c, B).await, Some(("b".into(), 6, 6)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_row_of_a_transaction_sees_the_effects_of_the_rows_before_it() {
    // Rows of one transaction are pipelined (a row's write goes out with the next row's read);
    // the outcome must be what applying them one transaction at a time gives: the same row
    // written twice, a child inserted under a parent just inserted, a cascade from a delete.
    let (_db, s, c) = setup(|_| {}).await;
    for t in ["one", "each"] {
        c.batch_execute(&format!(
            "CREATE TABLE parents_{t} (id int PRIMARY KEY, name text NOT NULL);
             CREATE TABLE children_{t} (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parents_{t}(id) ON DELETE CASCADE, body text);
             -- Written directly: deciding about these rows takes a query first (their commit time).
             INSERT INTO parents_{t} VALUES (3, 'direct');
             INSERT INTO children_{t} VALUES (12, 3, 'direct child');"
        ))
        .await
        .unwrap();
    }
    let mutations = |t: &str| {
        let (p, ch) = (format!("parents_{t}"), format!("children_{t}"));
        vec![
            json!({"op": "insert", "table": p, "value": {"id": "1", "name": "a"}}),
            json!({"op": "update", "table": p, "key": {"id": "1"}, "value": {"name": "b"}}),
            json!({"op": "insert", "table": ch, "value": {"id": "10", "parent_id": "1", "body": "first"}}),
            json!({"op": "update", "table": ch, "key": {"id": "10"}, "value": {"body": "x"}}),
            json!({"op": "update", "table": p, "key": {"id": "1"}, "value": {"name": "c"}}),
            json!({"op": "insert", "table": p, "value": {"id": "2", "name": "gone"}}),
            json!({"op": "insert", "table": ch, "value": {"id": "11", "parent_id": "2", "body": "cascaded"}}),
            json!({"op": "delete", "table": p, "key": {"id": "2"}}),
            json!({"op": "update", "table": ch, "key": {"id": "11"}, "value": {"body": "after the cascade"}}),
            json!({"op": "update", "table": p, "key": {"id": "3"}, "value": {"name": "renamed"}}),
            json!({"op": "delete", "table": p, "key": {"id": "3"}}),
            json!({"op": "update", "table": ch, "key": {"id": "12"}, "value": {"body": "after the cascade"}}),
        ]
    };
    let t0 = now_ms();
    let r =
        post(&s.base, &json!({"client_id": "one", "transactions": [txn(1, t0, Value::Array(mutations("one")))]})).await;
    // Merged: the updates after a cascade lost to the cascade's delete.
    assert_eq!(r.body["results"][0]["status"], "merged", "{}", r.text);
    assert_eq!(
        r.body["results"][0]["overridden"],
        json!([{"table": "children_one", "key": {"id": "11"}, "columns": ["body"]}, {"table": "children_one", "key": {"id": "12"}, "columns": ["body"]}])
    );
    let each: Vec<Value> =
        mutations("each").into_iter().enumerate().map(|(i, m)| txn(i as u64 + 1, t0 + i as u64, json!([m]))).collect();
    let r = post(&s.base, &json!({"client_id": "each", "transactions": each})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for (i, result) in r.body["results"].as_array().unwrap().iter().enumerate() {
        assert_ne!(result["status"], "rejected", "mutation {i} alone: {result}");
    }
    let rows = |t: &'static str| {
        let c = &c;
        async move {
            let q = format!(
                "SELECT 'p' || id || ':' || name FROM parents_{t} UNION ALL SELECT 'c' || id || ':' || parent_id || ':' || coalesce(body, '') FROM children_{t} ORDER BY 1"
            );
            c.query(&q, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
        }
    };
    assert_eq!(rows("one").await, vec!["c10:1:x".to_string(), "p1:c".to_string()]);
    assert_eq!(rows("one").await, rows("each").await);
}

/// Recorded results are pruned each time a client's ids cross a multiple of 1,000, also when its
/// ids skip the multiples (found by the docs review: pruning ran only on ids exactly divisible by
/// 1,000, so such a client's results grew for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_results_are_pruned_even_when_ids_skip_the_thousands() {
    let (_db, s, c) = setup(|_| {}).await;
    let note = |id: u64| json!([{"op": "insert", "table": "notes", "value": {"id": id.to_string(), "body": "x"}}]);
    for id in [1u64, 7, 20_001] {
        let r = post(&s.base, &json!({"client_id": "skipper", "transactions": [txn(id, now_ms(), note(id))]})).await;
        assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    }
    let kept: Vec<i64> = c
        .query("SELECT id FROM ferrite.client_results WHERE client_id = 'skipper' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, vec![20_001], "results more than 10,000 ids old are pruned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_many_transactions_commits_in_groups_and_a_rejection_undoes_only_its_own() {
    // The server applies a request's transactions in groups that share one Postgres
    // transaction (a savepoint each): 100 transactions are three groups (48, 48, 4).
    let (_db, s, c) = setup(|_| {}).await;
    c.execute("SELECT pg_create_logical_replication_slot('oracle', 'test_decoding')", &[]).await.unwrap();
    let id = |n: u64| format!("00000000-0000-0000-0000-{n:012}");
    let t0 = now_ms();
    let txns: Vec<Value> = (1..=100u64)
        .map(|n| match n {
            // Two rows, the second breaks a CHECK: the first must go with it.
            30 => txn(
                n,
                t0,
                json!([
                {"op": "insert", "table": "steps", "value": {"id": id(n), "name": "partial"}},
                {"op": "update", "table": "steps", "key": {"id": id(n)}, "value": {"x": "-1"}}]),
            ),
            // Refused before any statement: an unknown column.
            70 => txn(
                n,
                t0,
                json!([{"op": "insert", "table": "steps", "value": {"id": id(n), "name": "n", "colour": "red"}}]),
            ),
            // The last transaction of the first group rejected by Postgres at its row write.
            48 => {
                txn(n, t0, json!([{"op": "insert", "table": "steps", "value": {"id": id(n), "name": "n", "x": "-5"}}]))
            }
            _ => txn(
                n,
                t0,
                json!([{"op": "insert", "table": "steps", "value": {"id": id(n), "name": format!("step {n}")}}]),
            ),
        })
        .collect();
    let body = json!({"client_id": "groups", "transactions": txns});
    let r = post(&s.base, &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let res = r.body["results"].as_array().unwrap();
    assert_eq!(res.len(), 100);
    for (i, result) in res.iter().enumerate() {
        let n = i as u64 + 1;
        let expected = if [30, 48, 70].contains(&n) { "rejected" } else { "applied" };
        assert_eq!(result["status"], expected, "transaction {n}: {result}");
        assert_eq!(result["id"], json!(n));
    }
    assert_eq!(res[29]["error"]["code"], "constraint");
    assert_eq!(res[47]["error"]["code"], "constraint");
    assert_eq!(res[69]["error"]["code"], "invalid");
    // One txid per group, shared by its applied transactions.
    let txid = |i: usize| res[i]["txid"].as_str().unwrap().to_string();
    let mut txids: Vec<String> =
        res.iter().filter(|r| r["status"] == "applied").map(|r| r["txid"].as_str().unwrap().into()).collect();
    txids.dedup();
    assert_eq!(txids.len(), 3, "three groups: {txids:?}");
    assert!((0..47).all(|i| i == 29 || txid(i) == txid(0)));
    assert!((48..96).all(|i| i == 69 || txid(i) == txid(48)));
    assert!((96..100).all(|i| txid(i) == txid(96)));
    // Postgres's own decoding agrees: the rows committed in three transactions, with those xids.
    let decoded = oracle_changes(&c).await;
    let mut committed: Vec<String> = vec![];
    let mut current = String::new();
    for line in &decoded {
        if let Some(xid) = line.strip_prefix("BEGIN ") {
            current = xid.to_string();
        } else if line.starts_with("table public.steps: INSERT") && committed.last() != Some(&current) {
            committed.push(current.clone());
        }
    }
    assert_eq!(committed, txids, "the steps' inserts committed in the groups' transactions");
    let rows: Vec<String> =
        c.query("SELECT name FROM steps ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(rows.len(), 97, "nothing of the three rejected transactions");
    assert!(!rows.contains(&"partial".to_string()));
    let recorded: i64 = c
        .query_one("SELECT count(*) FROM ferrite.client_results WHERE client_id = 'groups'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 100, "every result recorded, rejections too");
    // A retry of the whole request is answered from the records, byte for byte.
    let again = post(&s.base, &body).await;
    assert_eq!(again.body, r.body);
    let n: i64 = c.query_one("SELECT count(*) FROM steps", &[]).await.unwrap().get(0);
    assert_eq!(n, 97);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_constraint_failing_at_a_groups_commit_rejects_only_its_own_transaction() {
    let (_db, s, c) = setup(|_| {}).await;
    c.batch_execute(
        "CREATE TABLE parents (id int PRIMARY KEY);
         CREATE TABLE kids (id int PRIMARY KEY, parent int REFERENCES parents DEFERRABLE INITIALLY DEFERRED);
         INSERT INTO parents VALUES (1);",
    )
    .await
    .unwrap();
    let kid = |n: u64, parent: &str| {
        txn(n, now_ms(), json!([{"op": "insert", "table": "kids", "value": {"id": n.to_string(), "parent": parent}}]))
    };
    // The second kid's parent does not exist: Postgres says so only at COMMIT, when the group's
    // transaction fails as a whole; the server then applies them one by one.
    let r = post(&s.base, &json!({"client_id": "kids", "transactions": [kid(1, "1"), kid(2, "2"), kid(3, "1")]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let res = r.body["results"].as_array().unwrap();
    assert_eq!(res[0]["status"], "applied", "{}", r.text);
    assert_eq!(res[1]["status"], "rejected", "{}", r.text);
    assert_eq!(res[1]["error"]["code"], "constraint", "{}", r.text);
    assert!(res[1]["error"]["message"].as_str().unwrap().contains("foreign key"), "{}", r.text);
    assert_eq!(res[2]["status"], "applied", "{}", r.text);
    let kids: Vec<i32> =
        c.query("SELECT id FROM kids ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(kids, vec![1, 3]);
    let recorded: i64 =
        c.query_one("SELECT count(*) FROM ferrite.client_results WHERE client_id = 'kids'", &[]).await.unwrap().get(0);
    assert_eq!(recorded, 3, "each result recorded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_that_deadlock_with_each_other_are_applied_again_not_failed() {
    let (_db, s, c, t0) = steps_a_and_b().await;
    // Each request is one group of two single-row transactions; the two clients lock the rows in
    // opposite orders and hold them until their group commits (Postgres reported 5 deadlocks
    // in the 6 rounds when this test was written: without applying an aborted group again,
    // those requests fail with 503).
    for round in 1..=6u64 {
        let (first, second) = if round % 2 == 0 { (A, B) } else { (B, A) };
        let body = |client: &str, col: &str, rows: [&str; 2]| {
            json!({"client_id": client, "transactions": [
                txn(2 * round - 1, t0 + round, json!([{"op": "update", "table": "steps", "key": {"id": rows[0]}, "value": {col: round.to_string()}}])),
                txn(2 * round, t0 + round, json!([{"op": "update", "table": "steps", "key": {"id": rows[1]}, "value": {col: round.to_string()}}]))]})
        };
        let (ab_body, ba_body) = (body("ab", "x", [first, second]), body("ba", "y", [second, first]));
        let (ab, ba) = tokio::join!(post(&s.base, &ab_body), post(&s.base, &ba_body));
        for r in [ab, ba] {
            assert_eq!(r.status, 200, "{}", r.text);
            for result in r.body["results"].as_array().unwrap() {
                assert_eq!(result["status"], "applied", "{}", r.text);
            }
        }
    }
    assert_eq!(step_row(&c, A).await, Some(("a".into(), 6, 6)));
    assert_eq!(step_row(&c, B).await, Some(("b".into(), 6, 6)));
}

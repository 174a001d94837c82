//! `ferrite-client` against a real server and Postgres: shapes land in SQLite equal to the SQL
//! oracle, a reopened replica resumes from its stored offsets without downloading again, a 409
//! rotation starts the shape over, and a subscription stays live.

use crate::common::fault_proxy;
use crate::common::*;
use ferrite_client::{Client, ConnectionState, ShapeDef, Status, TokenSource};
use ferrite_server::config::ConflictPolicy;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SCHEMA: &str = "
    CREATE TABLE steps (id int PRIMARY KEY, pipeline int NOT NULL, name text, x float8, done bool, note text);
    INSERT INTO steps SELECT i, i % 3, 'step ' || i, i * 1.5, i % 2 = 0, CASE WHEN i % 5 = 0 THEN NULL ELSE 'n' END
    FROM generate_series(1, 300) i;";

/// The oracle: the same rows from Postgres, typed as the replica stores them.
async fn oracle(c: &tokio_postgres::Client, filter: &str) -> Vec<Vec<Value>> {
    c.query(&format!("SELECT id::bigint, pipeline::bigint, name, x, CASE WHEN done THEN 1::bigint ELSE 0::bigint END, note FROM steps {filter} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            vec![
                json!(r.get::<_, i64>(0)),
                json!(r.get::<_, i64>(1)),
                json!(r.get::<_, Option<String>>(2)),
                json!(r.get::<_, Option<f64>>(3)),
                json!(r.get::<_, i64>(4)),
                json!(r.get::<_, Option<String>>(5)),
            ]
        })
        .collect()
}

/// Names of the steps with these ids in Postgres, by id.
async fn step_names(c: &tokio_postgres::Client, ids: &[i32]) -> Vec<String> {
    c.query("SELECT name FROM steps WHERE id = ANY($1) ORDER BY id", &[&ids])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn local(client: &Client, table: &str) -> Vec<Vec<Value>> {
    client.query(&format!("SELECT id, pipeline, name, x, done, note FROM {table} ORDER BY id"), &[]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_land_in_sqlite_and_a_reopened_replica_resumes() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.db");
    let all = ShapeDef::table("steps");
    let one = ShapeDef::table("steps").filter("pipeline = 1").into_table("pipeline_1");
    {
        let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
        let report = client.sync(&all).await.unwrap();
        assert_eq!(report.changes, 300);
        client.sync(&one).await.unwrap();
        assert_eq!(local(&client, "steps"), oracle(&c, "").await);
        assert_eq!(local(&client, "pipeline_1"), oracle(&c, "WHERE pipeline = 1").await);
    }
    // While the app is closed: inserts, updates (including to NULL) and deletes.
    c.batch_execute(
        "INSERT INTO steps VALUES (301, 1, 'new', 0.25, true, 'x');
         UPDATE steps SET name = 'renamed', note = NULL WHERE id IN (1, 4, 7);
         UPDATE steps SET pipeline = 2 WHERE id = 10;
         DELETE FROM steps WHERE id IN (13, 16);",
    )
    .await
    .unwrap();
    let initial_before = s.server.observer().metrics().requests_initial.load(Ordering::Relaxed);
    let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client.sync(&all).await.unwrap();
        client.sync(&one).await.unwrap();
        if local(&client, "steps") == oracle(&c, "").await
            && local(&client, "pipeline_1") == oracle(&c, "WHERE pipeline = 1").await
        {
            break;
        }
        assert!(Instant::now() < deadline, "the reopened replica never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.server.observer().metrics().requests_initial.load(Ordering::Relaxed),
        initial_before,
        "resumed from stored offsets: no request started a shape over"
    );
    // One local table per shape.
    let clash = client.sync(&ShapeDef::table("steps").filter("pipeline = 2")).await.unwrap_err();
    assert!(clash.to_string().contains("into_table"), "{clash}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_shape_starts_over_and_a_subscription_stays_live() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path().join("r.db"), &s.base, TokenSource::None).unwrap();
    let all = ShapeDef::table("steps");
    client.sync(&all).await.unwrap();
    let old_handle = client.position(&all).unwrap().handle.unwrap();
    // TRUNCATE rotates every shape on the table: the next request gets a 409.
    c.batch_execute("TRUNCATE steps; INSERT INTO steps VALUES (1, 0, 'only', 1.0, false, NULL);").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refetches = 0;
    while local(&client, "steps") != oracle(&c, "").await {
        refetches += client.sync(&all).await.unwrap().refetches;
        assert!(Instant::now() < deadline, "never converged after the rotation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refetches >= 1);
    assert_ne!(client.position(&all).unwrap().handle.unwrap(), old_handle);

    // Live: changes arrive without asking, and the status says so.
    let sub = client.subscribe(all.clone());
    let mut status = sub.status();
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| *s == Status::Synced)).await.unwrap().unwrap();
    c.batch_execute("INSERT INTO steps VALUES (2, 0, 'live', 2.0, true, 'y')").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while local(&client, "steps") != oracle(&c, "").await {
        assert!(Instant::now() < deadline, "the live change never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The server goes away: the subscription reports offline (and keeps retrying with backoff).
    s.server.shutdown().await;
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| matches!(s, Status::Offline { .. })))
        .await
        .unwrap()
        .unwrap();
}

/// Runs `ferrite client <args>` off the async runtime (the server runs on it); its stdout.
async fn cli(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(ferrite_bin())
            .arg("client")
            .args(&args)
            .env("FERRITE_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_syncs_queries_and_reports() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cli.db").to_str().unwrap().to_string();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = cli(args(&[
        "sync",
        "--db",
        &file,
        "--server",
        &s.base,
        "--table",
        "steps",
        "--where",
        "pipeline = 1",
        "--into",
        "mine",
    ]))
    .await;
    assert!(out.contains("up to date (100 changes"), "{out}");
    let out = cli(args(&["query", "--db", &file, "SELECT count(*), min(id), max(id) FROM mine"])).await;
    assert_eq!(out.trim(), "[100,1,298]");
    let out = cli(args(&["status", "--db", &file])).await;
    assert!(out.starts_with("mine: ") && out.contains("up to date"), "{out}");
    // Offline writes from the shell, pushed later.
    let out = cli(args(&[
        "write",
        "--db",
        &file,
        "--table",
        "mine",
        "--update",
        r#"{"id":"1"}"#,
        "--set",
        r#"{"name":"from the shell"}"#,
    ]))
    .await;
    assert!(out.contains("1 waiting to be pushed"), "{out}");
    let out = cli(args(&[
        "write",
        "--db",
        &file,
        "--table",
        "mine",
        "--insert",
        r#"{"id":"900","pipeline":"1","name":"new"}"#,
    ]))
    .await;
    assert!(out.contains("2 waiting"), "{out}");
    let out = cli(args(&["push", "--db", &file, "--server", &s.base])).await;
    assert!(out.contains("pushed 2 transactions: 2 accepted, 0 rejected"), "{out}");
    assert_eq!(step_names(&c, &[1, 900]).await, vec!["from the shell", "new"]);
}

/// Runs `ferrite client <args>` expecting it to fail; its stdout and stderr.
async fn cli_fails(args: Vec<String>) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(ferrite_bin())
            .arg("client")
            .args(&args)
            .env("FERRITE_LOG", "warn")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {stdout}{stderr}");
        (stdout, stderr)
    })
    .await
    .unwrap()
}

/// The CLI refuses what cannot be right and says why (a replica file that does not exist, an
/// update or delete of a row the replica does not have), shows the writes waiting in the outbox,
/// and a push the server rejected something of exits non-zero after printing the rejections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_mistakes_and_shows_what_waits() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cli.db");
    let file = path.to_str().unwrap().to_string();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // Only `sync` creates a replica: the other commands refuse a missing file and create none.
    for cmd in [
        args(&["query", "--db", &file, "SELECT 1"]),
        args(&["status", "--db", &file]),
        args(&["write", "--db", &file, "--table", "steps", "--delete", r#"{"id":"1"}"#]),
        args(&["push", "--db", &file, "--server", &s.base]),
    ] {
        let (_, err) = cli_fails(cmd.clone()).await;
        assert!(err.contains(&format!("{file} does not exist")) && err.contains("client sync"), "{cmd:?}: {err}");
        assert!(!path.exists(), "{cmd:?} created the file");
    }
    cli(args(&["sync", "--db", &file, "--server", &s.base, "--table", "steps", "--where", "pipeline = 1"])).await;

    // Rows the replica does not have: outside its shape (id 2 is pipeline 2), or nowhere.
    let (_, err) = cli_fails(args(&[
        "write",
        "--db",
        &file,
        "--table",
        "steps",
        "--update",
        r#"{"id":"2"}"#,
        "--set",
        r#"{"name":"x"}"#,
    ]))
    .await;
    assert!(err.contains(r#"local table steps has no row with key {"id":"2"}"#), "{err}");
    let (_, err) = cli_fails(args(&["write", "--db", &file, "--table", "steps", "--delete", r#"{"id":"999"}"#])).await;
    assert!(err.contains("has no row"), "{err}");
    let out = cli(args(&["status", "--db", &file])).await;
    assert!(out.contains("no local writes waiting to be pushed"), "nothing was queued: {out}");

    // Pending writes are listed with their tables.
    cli(args(&[
        "write",
        "--db",
        &file,
        "--table",
        "steps",
        "--update",
        r#"{"id":"1"}"#,
        "--set",
        r#"{"name":"kept"}"#,
    ]))
    .await;
    // The server refuses this one ("many" is not a float8).
    cli(args(&["write", "--db", &file, "--table", "steps", "--insert", r#"{"id":"901","pipeline":"1","x":"many"}"#]))
        .await;
    let out = cli(args(&["status", "--db", &file])).await;
    assert!(
        out.contains("2 local transactions waiting to be pushed:\n  transaction 1: 1 change to steps\n  transaction 2: 1 change to steps\n"),
        "{out}"
    );

    // A push with a rejection prints it, then fails.
    let (out, err) = cli_fails(args(&["push", "--db", &file, "--server", &s.base])).await;
    assert!(
        out.contains("pushed 2 transactions: 1 accepted, 1 rejected") && out.contains("rejected 2: invalid"),
        "{out}"
    );
    assert!(err.contains("the server rejected 1 of 2 transactions"), "{err}");
    assert_eq!(step_names(&c, &[1, 901]).await, vec!["kept"], "the accepted one was applied, the rejected one not");
    let out = cli(args(&["query", "--db", &file, "SELECT count(*) FROM steps WHERE id = 901"])).await;
    assert_eq!(out.trim(), "[0]", "rolled back locally");
    let out = cli(args(&["status", "--db", &file])).await;
    assert!(out.contains("no local writes waiting to be pushed"), "{out}");
    assert!(out.contains("1 pushed and accepted, waiting for its changes") && out.contains("transaction 1:"), "{out}");

    // The library refuses the same writes: nothing written, nothing queued.
    use ferrite_client::{Change, ClientError};
    let client = Client::open(dir.path().join("lib.db"), &s.base, TokenSource::None).unwrap();
    client.sync(&ShapeDef::table("steps")).await.unwrap();
    client.sync(&ShapeDef::table("steps").filter("pipeline = 1").into_table("mine")).await.unwrap();
    let rename = |table: &str, id: &str| Change::Update {
        table: table.into(),
        key: text(&[("id", Some(id))]),
        set: text(&[("name", Some("renamed"))]),
    };
    let missing = client.write(&[rename("steps", "1"), rename("mine", "2")]);
    assert!(
        matches!(&missing, Err(ClientError::NoRow { table, key }) if table == "mine" && key == r#"{"id":"2"}"#),
        "{missing:?}"
    );
    let deleted_first = client
        .write(&[Change::Delete { table: "steps".into(), key: text(&[("id", Some("3"))]) }, rename("steps", "3")]);
    assert!(matches!(deleted_first, Err(ClientError::NoRow { .. })), "{deleted_first:?}");
    assert_eq!(client.pending().unwrap(), 0);
    assert_eq!(
        count(&client, "SELECT count(*) FROM steps WHERE id = 3 OR name = 'renamed'"),
        1,
        "row 3 kept, nothing renamed"
    );
    // What the outbox holds: per transaction, its tables.
    client.write(&[rename("steps", "1"), rename("mine", "1"), rename("steps", "4")]).unwrap();
    let queued = client.queued().unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (queued[0].tables.clone(), queued[0].changes, queued[0].sent, queued[0].accepted),
        (vec!["steps".to_string(), "mine".into()], 3, false, false)
    );
}

/// The steps schema plus a `labels` table (row 1 reads 'old'), a server and a client replica
/// (keep the server and the directory alive as long as the client).
async fn with_labels(db: &TestDb) -> (TestServer, tempfile::TempDir, Client) {
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    c.batch_execute("CREATE TABLE labels (id int PRIMARY KEY, body text); INSERT INTO labels VALUES (1, 'old');")
        .await
        .unwrap();
    let s = TestServer::start(db).await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path().join("r.db"), &s.base, TokenSource::None).unwrap();
    (s, dir, client)
}

fn text(pairs: &[(&str, Option<&str>)]) -> ferrite_client::Values {
    pairs.iter().map(|(k, v)| (k.to_string(), v.map(String::from))).collect()
}

fn count(client: &Client, sql: &str) -> i64 {
    client.query(sql, &[]).unwrap()[0][0].as_i64().unwrap()
}

/// Syncs until the local table equals Postgres (the txids of pushed writes come back).
async fn converge(client: &Client, c: &tokio_postgres::Client, def: &ShapeDef) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client.sync(def).await.unwrap();
        if local(client, "steps") == oracle(c, "").await {
            return;
        }
        assert!(Instant::now() < deadline, "local {:?}", local(client, "steps").len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_writes_survive_a_restart_and_are_applied_once() {
    use ferrite_client::Change;
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let all = ShapeDef::table("steps");
    {
        let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
        client.sync(&all).await.unwrap();
        client
            .write(&[
                Change::Insert {
                    table: "steps".into(),
                    values: text(&[
                        ("id", Some("1000")),
                        ("pipeline", Some("1")),
                        ("name", Some("offline")),
                        ("done", Some("t")),
                    ]),
                },
                Change::Update {
                    table: "steps".into(),
                    key: text(&[("id", Some("1"))]),
                    set: text(&[("name", Some("edited")), ("note", None)]),
                },
            ])
            .unwrap();
        client.write(&[Change::Delete { table: "steps".into(), key: text(&[("id", Some("2"))]) }]).unwrap();
        // Readable at once, before any push.
        assert_eq!(
            client.query("SELECT name, done FROM steps WHERE id = 1000", &[]).unwrap(),
            vec![vec![json!("offline"), json!(1)]]
        );
        assert_eq!(
            client.query("SELECT name, note FROM steps WHERE id = 1", &[]).unwrap(),
            vec![vec![json!("edited"), Value::Null]]
        );
        assert_eq!(count(&client, "SELECT count(*) FROM steps WHERE id = 2"), 0);
        assert_eq!(client.pending().unwrap(), 2);
    } // the app is killed before pushing
    let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
    assert_eq!(client.pending().unwrap(), 2, "the outbox survived");
    assert_eq!(count(&client, "SELECT count(*) FROM steps WHERE id = 1000"), 1, "and so did the local effects");
    // A push whose answer was lost: the server applied it, the client never recorded the results.
    let lost = {
        let replica = rusqlite_free_pending(&path);
        send(reqwest::Client::new().post(format!("{}/v1/transactions", s.base)).json(&replica)).await
    };
    assert_eq!(lost.status, 200, "{}", lost.text);
    let report = client.push().await.unwrap();
    assert_eq!((report.sent, report.accepted), (2, 2), "{report:?}");
    assert_eq!(client.push().await.unwrap().sent, 0, "nothing left to send");
    let m = client.metrics().unwrap();
    assert_eq!((m.pending, m.applied, m.merged, m.rejected), (0, 2, 0, 0), "{m:?}");
    assert!(m.bytes_sent > 0 && m.last_sync_ms.is_some(), "{m:?}");
    let applied: i64 = c.query_one("SELECT count(*) FROM ferrite.client_results", &[]).await.unwrap().get(0);
    assert_eq!(applied, 2, "each transaction applied once");
    converge(&client, &c, &all).await;
    assert_eq!(count(&client, "SELECT count(*) FROM _ferrite_outbox"), 0, "txids came back through the shape");
    assert_eq!(count(&client, "SELECT count(*) FROM _ferrite_shadow"), 0);
}

/// The replica's pending transactions as a request body, read the way `push` does (used to
/// replay a push whose response was lost).
fn rusqlite_free_pending(path: &std::path::Path) -> Value {
    let client = Client::open(path, "http://unused", TokenSource::None).unwrap();
    let id = client.query("SELECT value FROM _ferrite_meta WHERE key = 'client_id'", &[]).unwrap();
    let client_id = id.first().map(|r| r[0].clone()).unwrap_or(Value::Null);
    let rows =
        client.query("SELECT id, hlc, mutations FROM _ferrite_outbox WHERE result IS NULL ORDER BY id", &[]).unwrap();
    let txns: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut mutations: Vec<Value> = serde_json::from_str(r[2].as_str().unwrap()).unwrap();
            for m in &mut mutations {
                m.as_object_mut().unwrap().remove("_local");
            }
            json!({"id": r[0], "hlc": r[1], "mutations": mutations})
        })
        .collect();
    json!({"client_id": client_id, "transactions": txns})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_roll_back_server_changes_rebase_and_the_queue_has_a_limit() {
    use ferrite_client::{Change, ClientError};
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    c.batch_execute("ALTER TABLE steps ADD CHECK (x >= 0)").await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path().join("r.db"), &s.base, TokenSource::None).unwrap();
    let all = ShapeDef::table("steps");
    client.sync(&all).await.unwrap();
    // A write the server refuses: visible until the answer, then rolled back with the reason.
    client
        .write(&[Change::Update {
            table: "steps".into(),
            key: text(&[("id", Some("3"))]),
            set: text(&[("x", Some("-5"))]),
        }])
        .unwrap();
    assert_eq!(client.query("SELECT x FROM steps WHERE id = 3", &[]).unwrap(), vec![vec![json!(-5.0)]]);
    let report = client.push().await.unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].error.as_ref().unwrap().code, ferrite_client::RejectionCode::Constraint);
    assert_eq!(client.query("SELECT x FROM steps WHERE id = 3", &[]).unwrap(), vec![vec![json!(4.5)]], "rolled back");
    assert_eq!(client.metrics().unwrap().rejected, 1);
    assert!(client.metrics().unwrap().bytes_received > 0);

    // A pending write on a row the server changes meanwhile: the server's change shows, with
    // the pending write on top; after the push both are in Postgres and locally.
    client
        .write(&[Change::Update {
            table: "steps".into(),
            key: text(&[("id", Some("5"))]),
            set: text(&[("name", Some("mine"))]),
        }])
        .unwrap();
    c.batch_execute("UPDATE steps SET x = 99 WHERE id = 5").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.query("SELECT x FROM steps WHERE id = 5", &[]).unwrap() != vec![vec![json!(99.0)]] {
        client.sync(&all).await.unwrap();
        assert!(Instant::now() < deadline, "the server's change never arrived");
    }
    assert_eq!(client.query("SELECT name FROM steps WHERE id = 5", &[]).unwrap(), vec![vec![json!("mine")]]);
    client.push().await.unwrap();
    converge(&client, &c, &all).await;

    // The offline queue is bounded: a full queue refuses the write and changes nothing.
    client.set_limits(2, 100);
    for id in ["6", "7"] {
        client
            .write(&[Change::Update {
                table: "steps".into(),
                key: text(&[("id", Some(id))]),
                set: text(&[("name", Some("q"))]),
            }])
            .unwrap();
    }
    let full = client.write(&[Change::Update {
        table: "steps".into(),
        key: text(&[("id", Some("8"))]),
        set: text(&[("name", Some("q"))]),
    }]);
    assert!(matches!(full, Err(ClientError::QueueFull { limit: 2 })), "{full:?}");
    assert_eq!(client.pending().unwrap(), 2);
    assert_ne!(client.query("SELECT name FROM steps WHERE id = 8", &[]).unwrap(), vec![vec![json!("q")]]);
    // Unknown tables and columns are refused before anything is written.
    client.set_limits(1000, 100);
    assert!(matches!(
        client.write(&[Change::Delete { table: "nope".into(), key: text(&[("id", Some("1"))]) }]),
        Err(ClientError::NotSynced(_))
    ));
    assert!(matches!(
        client.write(&[Change::Update {
            table: "steps".into(),
            key: text(&[("id", Some("1"))]),
            set: text(&[("colour", Some("red"))])
        }]),
        Err(ClientError::Invalid(_))
    ));
    // A subscription pushes the queue by itself and converges.
    let _sub = client.subscribe(all.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.pending().unwrap() > 0 || local(&client, "steps") != oracle(&c, "").await {
        assert!(Instant::now() < deadline, "the subscription never pushed and converged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(step_names(&c, &[6, 7]).await, vec!["q", "q"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_shapes_are_dropped_after_their_retention_unless_writes_are_pending() {
    use ferrite_client::Change;
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start_with(&db, |c| c.max_offline_queue = 1).await;
    let dir = tempfile::tempdir().unwrap();
    // Retention counts by the client's clock, which this test moves on by hand.
    let clock = ferrite_client::protocol::clock::ManualClock::new();
    let client = Client::open_with_clock(dir.path().join("t.db"), &s.base, TokenSource::None, clock.clock()).unwrap();
    client.configure_from_server().await.unwrap(); // max_offline_queue = 1 from the server
    let short = ShapeDef::table("steps").filter("pipeline = 0").into_table("p0").retain_for(Duration::from_secs(3));
    let pending = ShapeDef::table("steps").filter("pipeline = 1").into_table("p1").retain_for(Duration::from_secs(3));
    let kept = ShapeDef::table("steps").filter("pipeline = 2").into_table("p2");
    for def in [&short, &pending, &kept] {
        client.sync(def).await.unwrap();
    }
    client
        .write(&[Change::Update {
            table: "p1".into(),
            key: text(&[("id", Some("1"))]),
            set: text(&[("name", Some("local"))]),
        }])
        .unwrap();
    let over = client.write(&[Change::Update {
        table: "p1".into(),
        key: text(&[("id", Some("4"))]),
        set: text(&[("name", Some("x"))]),
    }]);
    assert!(matches!(over, Err(ferrite_client::ClientError::QueueFull { limit: 1 })), "{over:?}");
    clock.advance(Duration::from_millis(2_900));
    assert!(client.drop_expired().unwrap().is_empty(), "nothing expired yet");
    clock.advance(Duration::from_millis(600));
    assert_eq!(client.drop_expired().unwrap(), vec!["p0".to_string()]);
    assert!(client.query("SELECT count(*) FROM p0", &[]).is_err(), "its rows are gone");
    assert_eq!(count(&client, "SELECT count(*) FROM p1"), 100, "pending writes keep a table");
    assert_eq!(count(&client, "SELECT count(*) FROM p2"), 100, "no retention, kept");
    // Syncing it again starts from scratch.
    assert_eq!(client.sync(&short).await.unwrap().changes, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_writes_survive_a_rotation_and_a_server_restart() {
    use ferrite_client::Change;
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let all = ShapeDef::table("steps");
    let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
    client.sync(&all).await.unwrap();
    client
        .write(&[Change::Update {
            table: "steps".into(),
            key: text(&[("id", Some("5"))]),
            set: text(&[("name", Some("mine"))]),
        }])
        .unwrap();
    client
        .write(&[Change::Insert {
            table: "steps".into(),
            values: text(&[
                ("id", Some("777")),
                ("pipeline", Some("0")),
                ("name", Some("local")),
                ("x", Some("0")),
                ("done", Some("f")),
            ]),
        }])
        .unwrap();
    // The table is truncated and refilled: the shape rotates while the writes are pending.
    c.batch_execute(
        "TRUNCATE steps; INSERT INTO steps SELECT i, 0, 'again ' || i, 0, false, NULL FROM generate_series(1, 10) i;",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client.sync(&all).await.unwrap();
        let rows = client.query("SELECT id, name FROM steps WHERE id IN (5, 777) ORDER BY id", &[]).unwrap();
        if rows == vec![vec![json!(5), json!("mine")], vec![json!(777), json!("local")]]
            && count(&client, "SELECT count(*) FROM steps") == 11
        {
            break; // the new snapshot with the pending writes on top
        }
        assert!(Instant::now() < deadline, "after the rotation: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The server restarts (new process state, new address) before the client pushes.
    s.server.shutdown().await;
    let s2 = TestServer::start(&db).await;
    drop(client);
    let client = Client::open(&path, &s2.base, TokenSource::None).unwrap();
    assert_eq!(client.pending().unwrap(), 2);
    assert_eq!(client.push().await.unwrap().accepted, 2);
    converge(&client, &c, &all).await;
    let names = step_names(&c, &[5, 777]).await;
    // Row 5 was rewritten directly after the offline edit was made: last writer wins, so the
    // edit is merged away; the new row 777 is in.
    assert_eq!(names, vec!["again 5", "local"]);
    assert_eq!(count(&client, "SELECT count(*) FROM _ferrite_shadow"), 0, "nothing left waiting for a txid");
    assert_eq!(count(&client, "SELECT count(*) FROM _ferrite_outbox"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_connection_follow_the_network_writes_go_out_at_once_and_retry_now_skips_the_backoff() {
    use ferrite_client::Change;
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    // Long polls that outlast the test's waits: a write must not wait for one to end.
    let s = TestServer::start_with(&db, |cfg| cfg.long_poll_timeout_ms = 30_000).await;
    let network = fault_proxy::FaultProxy::start(&s.base, 1, fault_proxy::Faults::NONE).await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path().join("r.db"), &network.base, TokenSource::None).unwrap();
    // Long enough that only retry_now() can explain a quick reconnect.
    client.set_backoff(&[Duration::from_secs(120)]);
    let all = ShapeDef::table("steps");
    let sub = client.subscribe(all.clone());
    let (mut status, mut connection) = (sub.status(), sub.connection());
    let within = |secs| Duration::from_secs(secs);
    tokio::time::timeout(within(10), status.wait_for(|s| *s == Status::Synced)).await.unwrap().unwrap();
    assert_eq!(*connection.borrow(), ConnectionState::Connected);

    // The network goes: the subscription says so, with what waits to be pushed.
    network.set_online(false);
    for name in ["offline 1", "offline 2"] {
        client
            .write(&[Change::Update {
                table: "steps".into(),
                key: text(&[("id", Some("1"))]),
                set: text(&[("name", Some(name))]),
            }])
            .unwrap();
    }
    tokio::time::timeout(within(10), connection.wait_for(|c| *c == ConnectionState::Disconnected))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(within(10), status.wait_for(|s| *s == Status::Offline { pending: 2 })).await.unwrap().unwrap();

    // Back, and a manual retry: connected, pushed and synced long before the 120 s backoff.
    network.set_online(true);
    sub.retry_now();
    tokio::time::timeout(within(10), connection.wait_for(|c| *c == ConnectionState::Connected)).await.unwrap().unwrap();
    let deadline = Instant::now() + within(10);
    while client.pending().unwrap() > 0 || local(&client, "steps") != oracle(&c, "").await {
        assert!(Instant::now() < deadline, "retry_now did not reconnect, push and converge");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let name: String = c.query_one("SELECT name FROM steps WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(name, "offline 2");
    assert!(network.counts().offline > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_two_tables_stays_whole_until_both_shapes_show_it() {
    use ferrite_client::Change;
    let db = TestDb::new().await;
    let c = db.client().await;
    let (_s, _dir, client) = with_labels(&db).await;
    let steps = ShapeDef::table("steps");
    // Only labels under 100: a label inserted at 500 never comes back through this shape.
    let labels = ShapeDef::table("labels").filter("id < 100");
    client.sync(&steps).await.unwrap();
    client.sync(&labels).await.unwrap();
    let label = |id: i64| client.query("SELECT body FROM labels WHERE id = ?1", &[&id]).unwrap();
    client
        .write(&[
            Change::Update {
                table: "steps".into(),
                key: text(&[("id", Some("1"))]),
                set: text(&[("name", Some("both"))]),
            },
            Change::Update {
                table: "labels".into(),
                key: text(&[("id", Some("1"))]),
                set: text(&[("body", Some("both"))]),
            },
            Change::Insert { table: "labels".into(), values: text(&[("id", Some("500")), ("body", Some("outside"))]) },
        ])
        .unwrap();
    let before = client.position(&steps).unwrap().offset;
    client.push().await.unwrap();
    // The steps shape shows the transaction first: the labels it wrote must not revert meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.position(&steps).unwrap().offset == before {
        client.sync(&steps).await.unwrap();
        assert!(Instant::now() < deadline, "the steps shape never showed the write");
    }
    assert_eq!(client.query("SELECT name FROM steps WHERE id = 1", &[]).unwrap(), vec![vec![json!("both")]]);
    assert_eq!(label(1), vec![vec![json!("both")]], "half of the transaction was reverted");
    assert_eq!(label(500), vec![vec![json!("outside")]]);
    assert_eq!(client.metrics().unwrap().unconfirmed, 1);
    // Once the labels shape has caught up past it, the transaction leaves the outbox; the row
    // outside the shape goes with it (the server's version of this shape does not hold it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.metrics().unwrap().unconfirmed > 0 {
        client.sync(&labels).await.unwrap();
        assert!(Instant::now() < deadline, "the transaction never left the outbox");
    }
    assert_eq!(label(1), vec![vec![json!("both")]]);
    assert!(label(500).is_empty());
    let body: String = c.query_one("SELECT body FROM labels WHERE id = 500", &[]).await.unwrap().get(0);
    assert_eq!(body, "outside");
}

/// Issue 10, item 10: a snapshot of one table (a shape starting over, or a new one) retires only
/// what that table shows. A pushed write to another table stays pending — and visible — until
/// that table's own shape shows it, instead of reverting meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_one_table_does_not_retire_writes_to_another() {
    use ferrite_client::Change;
    let db = TestDb::new().await;
    let (_s, _dir, client) = with_labels(&db).await;
    let labels = ShapeDef::table("labels");
    client.sync(&ShapeDef::table("steps")).await.unwrap();
    client.sync(&labels).await.unwrap();
    let label = || client.query("SELECT body FROM labels WHERE id = 1", &[]).unwrap();
    client
        .write(&[Change::Update {
            table: "labels".into(),
            key: text(&[("id", Some("1"))]),
            set: text(&[("body", Some("mine"))]),
        }])
        .unwrap();
    client.push().await.unwrap();
    assert_eq!(client.metrics().unwrap().unconfirmed, 1);
    // A new shape of steps: its snapshot was taken after the write committed.
    client.sync(&ShapeDef::table("steps").filter("id > 0").into_table("steps_again")).await.unwrap();
    assert_eq!(label(), vec![vec![json!("mine")]], "the labels write reverted on another table's snapshot");
    assert_eq!(client.metrics().unwrap().unconfirmed, 1, "retired before the labels shape showed it");
    // The labels shape shows it: retired, and the row keeps the value (now the server's).
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.metrics().unwrap().unconfirmed > 0 {
        client.sync(&labels).await.unwrap();
        assert!(Instant::now() < deadline, "the write never left the outbox");
    }
    assert_eq!(label(), vec![vec![json!("mine")]]);
}

/// Server-wins tables apply a change only on top of what the client saw: the client sends the
/// row's values as its `base` (floats and booleans as the replica holds them), so its writes
/// apply, and one based on an outdated row is refused as a conflict and rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_wins_writes_carry_what_the_client_saw() {
    use ferrite_client::Change;
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start_with(&db, |cfg| cfg.default_conflict = ConflictPolicy::ServerWins).await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path().join("r.db"), &s.base, TokenSource::None).unwrap();
    let all = ShapeDef::table("steps");
    client.sync(&all).await.unwrap();
    let update = |id: &str, set: &[(&str, Option<&str>)]| Change::Update {
        table: "steps".into(),
        key: text(&[("id", Some(id))]),
        set: text(set),
    };
    client
        .write(&[
            update("3", &[("x", Some("7.25")), ("done", Some("t"))]),
            Change::Delete { table: "steps".into(), key: text(&[("id", Some("4"))]) },
        ])
        .unwrap();
    let report = client.push().await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let row = c
        .query_one("SELECT x, done, (SELECT count(*) FROM steps WHERE id = 4) FROM steps WHERE id = 3", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, f64>(0), row.get::<_, bool>(1), row.get::<_, i64>(2)), (7.25, true, 0));
    // Someone else changes row 5 before this client has seen it: its change is refused.
    c.execute("UPDATE steps SET name = 'theirs' WHERE id = 5", &[]).await.unwrap();
    client.write(&[update("5", &[("name", Some("mine"))])]).unwrap();
    let report = client.push().await.unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].error.as_ref().unwrap().code, ferrite_client::RejectionCode::Conflict);
    converge(&client, &c, &all).await;
    assert_eq!(client.query("SELECT name FROM steps WHERE id = 5", &[]).unwrap(), vec![vec![json!("theirs")]]);
}

/// The client follows the server's mutation limits: a transaction over the per-transaction
/// limit is refused locally, and pushes split the queue so no request holds more changes than
/// the per-request limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_respect_the_servers_mutation_limits() {
    use ferrite_client::{Change, ClientError};
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start_with(&db, |cfg| {
        cfg.max_mutations_per_transaction = 10;
        cfg.max_mutations_per_request = 25;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path().join("r.db"), &s.base, TokenSource::None).unwrap();
    client.configure_from_server().await.unwrap();
    let all = ShapeDef::table("steps");
    client.sync(&all).await.unwrap();
    let rename = |ids: std::ops::Range<i32>| -> Vec<Change> {
        ids.map(|i| Change::Update {
            table: "steps".into(),
            key: text(&[("id", Some(&i.to_string()))]),
            set: text(&[("name", Some("renamed"))]),
        })
        .collect()
    };
    assert!(matches!(client.write(&rename(1..12)), Err(ClientError::Invalid(m)) if m.contains("at most 10 changes")));
    for t in 0..5 {
        client.write(&rename(1 + t * 10..11 + t * 10)).unwrap();
    }
    let report = client.push().await.unwrap();
    assert_eq!((report.sent, report.accepted), (5, 5), "{:?}", report.rejected);
    let renamed: i64 = c.query_one("SELECT count(*) FROM steps WHERE name = 'renamed'", &[]).await.unwrap().get(0);
    assert_eq!(renamed, 50);
}

/// A transaction bigger than the server's chunk (10 000 bytes in tests) comes in several
/// responses; the client applies it whole: a local reader never sees part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_split_across_responses_is_applied_whole() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path().join("r.db"), &s.base, TokenSource::None).unwrap();
    let all = ShapeDef::table("steps");
    client.sync(&all).await.unwrap();
    let sub = client.subscribe(all.clone());
    let mut status = sub.status();
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| *s == Status::Synced)).await.unwrap().unwrap();
    // ~60 kB of messages in one transaction.
    c.batch_execute(
        "INSERT INTO steps SELECT i, 0, 'big ' || i, 1.0, false, repeat('n', 200) FROM generate_series(1001, 1150) i",
    )
    .await
    .unwrap();
    let new_rows = || -> i64 {
        let rows = client.query("SELECT count(*) FROM steps WHERE id > 1000", &[]).unwrap();
        rows[0][0].as_i64().unwrap()
    };
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = new_rows();
        seen.insert(n);
        if n == 150 {
            break;
        }
        assert!(Instant::now() < deadline, "the big transaction never arrived");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(seen.iter().all(|&n| n == 0 || n == 150), "a reader saw part of the transaction: {seen:?}");
    assert_eq!(local(&client, "steps"), oracle(&c, "").await);
    drop(sub);
    // A replica synced from scratch gets it whole too.
    let fresh = Client::open(dir.path().join("fresh.db"), &s.base, TokenSource::None).unwrap();
    fresh.sync(&all).await.unwrap();
    assert_eq!(local(&fresh, "steps"), oracle(&c, "").await);
}

/// A relational shape (a where clause with a subquery) in SQLite: the replica tracks each row's
/// tags, so a `move-out` event — a membership removed — drops exactly the rows no other condition
/// keeps, also after the app was closed and reopened (the tags are stored with the rows); rows
/// that move in arrive; a pending local write to a row that moves out is not lost: it is still
/// pushed, and the server's answer decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relational_shapes_follow_move_outs_and_move_ins() {
    use ferrite_client::Change;
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    c.batch_execute(
        "CREATE TABLE members (pipeline int NOT NULL, user_id text NOT NULL, PRIMARY KEY (pipeline, user_id));
         INSERT INTO members VALUES (0, 'ann'), (1, 'ann');",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rel.db");
    let clause = "pipeline IN (SELECT pipeline FROM members WHERE user_id = 'ann') OR id <= 3";
    let anns = ShapeDef::table("steps").filter(clause);
    let filter = format!("WHERE {clause}");
    let synced = |client: &Client| {
        let client = client.clone();
        let (c, anns, filter) = (&c, anns.clone(), filter.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                client.sync(&anns).await.unwrap();
                let expected = oracle(c, &filter).await;
                if local(&client, "steps") == expected {
                    return expected.len();
                }
                assert!(Instant::now() < deadline, "never converged: {} local rows", local(&client, "steps").len());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    {
        let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
        assert_eq!(synced(&client).await, 200 + 1, "pipelines 0 and 1, and step 3 of pipeline 0 counted once");
        assert!(count(&client, "SELECT count(*) FROM _ferrite_tag_slots") > 0, "tags are tracked");
        // Ann leaves pipeline 1: its rows move out, except step 1 (kept by `id <= 3`).
        c.batch_execute("DELETE FROM members WHERE pipeline = 1").await.unwrap();
        synced(&client).await;
        assert_eq!(count(&client, "SELECT count(*) FROM steps WHERE pipeline = 1"), 1);
    }
    // Reopened: joining pipeline 2 moves its rows in; leaving pipeline 0 (whose rows' tags were
    // stored before the reopen) moves them out.
    let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
    c.batch_execute("INSERT INTO members VALUES (2, 'ann')").await.unwrap();
    synced(&client).await;
    assert_eq!(count(&client, "SELECT count(*) FROM steps WHERE pipeline = 2"), 100);
    c.batch_execute("DELETE FROM members WHERE pipeline = 0").await.unwrap();
    synced(&client).await;
    assert_eq!(count(&client, "SELECT count(*) FROM steps WHERE pipeline = 0"), 1, "step 3 stays");

    // A local edit of a row of pipeline 2, then pipeline 2 moves out before it is pushed.
    client
        .write(&[Change::Update {
            table: "steps".into(),
            key: text(&[("id", Some("5"))]),
            set: text(&[("name", Some("edited offline"))]),
        }])
        .unwrap();
    c.batch_execute("DELETE FROM members WHERE pipeline = 2").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&client, "SELECT count(*) FROM steps WHERE pipeline = 2 AND id > 5") > 0 {
        client.sync(&anns).await.unwrap();
        assert!(Instant::now() < deadline, "pipeline 2 never moved out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.pending().unwrap(), 1, "the write is still queued");
    let report = client.push().await.unwrap();
    assert_eq!((report.sent, report.accepted), (1, 1), "{report:?}");
    assert_eq!(step_names(&c, &[5]).await, vec!["edited offline".to_string()], "the server applied it");
    synced(&client).await;
    assert_eq!(count(&client, "SELECT count(*) FROM steps WHERE id = 5"), 0, "and it is not in Ann's shape");
}

/// A write that loses to a newer edit comes back `merged`: the push report names the columns
/// that lost with the values this client wrote, so an app can say so and offer "use mine",
/// which re-applies them as a new edit that wins. A row edited offline and deleted meanwhile is
/// reported the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_write_names_what_it_lost_and_mine_can_be_reapplied() {
    use ferrite_client::{Change, LostChange};
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let all = ShapeDef::table("steps");
    let ada = Client::open(dir.path().join("ada.db"), &s.base, TokenSource::None).unwrap();
    let grace = Client::open(dir.path().join("grace.db"), &s.base, TokenSource::None).unwrap();
    ada.sync(&all).await.unwrap();
    grace.sync(&all).await.unwrap();
    let rename = |id: &str, name: &str| Change::Update {
        table: "steps".into(),
        key: text(&[("id", Some(id))]),
        set: text(&[("name", Some(name))]),
    };
    // Grace, offline, renames step 1 and edits step 2; Ada then renames step 1 too and deletes
    // step 2, and her changes reach the server first.
    grace.write(&[rename("1", "mine"), rename("2", "edited offline")]).unwrap();
    ada.write(&[rename("1", "theirs")]).unwrap();
    ada.write(&[Change::Delete { table: "steps".into(), key: text(&[("id", Some("2"))]) }]).unwrap();
    assert_eq!(ada.push().await.unwrap().accepted, 2);
    let report = grace.push().await.unwrap();
    assert_eq!(report.merged.len(), 1, "{report:?}");
    let mut lost = report.merged[0].lost.clone();
    lost.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        lost,
        vec![
            LostChange {
                local_table: "steps".into(),
                table: "steps".into(),
                key: text(&[("id", Some("1"))]),
                columns: vec!["name".into()],
                mine: text(&[("name", Some("mine"))]),
            },
            LostChange {
                local_table: "steps".into(),
                table: "steps".into(),
                key: text(&[("id", Some("2"))]),
                columns: vec!["name".into()],
                mine: text(&[("name", Some("edited offline"))]),
            },
        ]
    );
    assert_eq!(step_names(&c, &[1]).await, ["theirs"]);
    // "Use mine": the lost value again, as a new edit — it wins, everywhere.
    let again = &lost[0];
    grace
        .write(&[Change::Update { table: again.local_table.clone(), key: again.key.clone(), set: again.mine.clone() }])
        .unwrap();
    let report = grace.push().await.unwrap();
    assert!(report.merged.is_empty() && report.accepted == 1, "{report:?}");
    assert_eq!(step_names(&c, &[1]).await, ["mine"]);
    converge(&ada, &c, &all).await;
    converge(&grace, &c, &all).await;
    assert_eq!(count(&grace, "SELECT count(*) FROM steps WHERE id = 2"), 0, "the deleted step stays deleted");
}

//! Logical replication end to end against a real server: transaction contents, value text,
//! TOAST back-fill, acknowledgement and resume, authentication, and server restarts.

mod common;

use common::{assert_quiet, cluster_with_db, next, next_txn, txn};
use ferrite_pg::connect::connect;
use ferrite_pg::replication::conn::ReplicationConnection;
use ferrite_pg::replication::{
    add_table_to_publication, current_wal_lsn, ensure_slot_and_publication, format_lsn, slot_status, start_replication,
    Change, ReplicationConfig, ReplicationError, Transaction,
};
use ferrite_protocol::relation::QualifiedName;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TYPES_SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE vals (
    id int8 PRIMARY KEY,
    b bool,
    i2 int2,
    i4 int4,
    num numeric(8,5),
    num_any numeric,
    f4 float4,
    f8 float8,
    f8_special float8,
    t text,
    vc varchar(10),
    bp char(3),
    ta text[],
    grid int4[][],
    u uuid,
    j json,
    jb jsonb,
    m mood,
    d posint,
    ts timestamp,
    tstz timestamptz(3),
    dt date,
    tm time,
    ttz timetz,
    iv interval,
    by bytea,
    ip inet
);
"#;

const ROW_1: &str = r#"
INSERT INTO vals VALUES (
    1, true, -32768, 2147483647, 123.45678, 'NaN', 1.1, 0.1, 'Infinity',
    E'quotes '' " backslash \\ newline \n tab \t unicode é ✓ 🚀',
    'short', 'ab', ARRAY['a', NULL, 'with space', 'quo"te', 'back\slash', ''],
    '{{1,2},{3,NULL}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '{"b": 1, "a": [1, 2.50, null]}', '{"b": 1, "a": [1, 2.50, null], "s": "é"}',
    'happy', 42, '2024-01-31 12:34:56.789012', '2024-01-31 12:34:56.789+02', '2024-01-31',
    '23:59:59.5', '12:00:00+05:30', '1 year 2 months 3 days 04:05:06.5', '\x00ff10', '192.168.0.1/24'
);
"#;

/// Every column as Postgres text output on an ordinary Ferrite connection (bpchar through
/// `concat`, which keeps its padding where `::text` trims it).
async fn text_row(
    c: &tokio_postgres::Client,
    table: &str,
    id: i64,
    cols: &[&str],
    bpchar: &[&str],
) -> Vec<Option<String>> {
    let exprs: Vec<String> = cols
        .iter()
        .map(|c| {
            if bpchar.contains(c) {
                format!("CASE WHEN {c} IS NULL THEN NULL ELSE concat({c}) END")
            } else {
                format!("{c}::text")
            }
        })
        .collect();
    let row = c.query_one(&format!("SELECT {} FROM {table} WHERE id = $1", exprs.join(", ")), &[&id]).await.unwrap();
    (0..cols.len()).map(|i| row.get::<_, Option<String>>(i)).collect()
}

fn column_names(t: &Transaction, i: usize) -> Vec<String> {
    let rel = match &t.changes[i] {
        Change::Insert { relation, .. } | Change::Update { relation, .. } | Change::Delete { relation, .. } => relation,
        Change::Truncate { relations } => &relations[0],
    };
    rel.columns.iter().map(|c| c.name.clone()).collect()
}

struct Setup {
    cluster: ferrite_pg::cluster::LocalCluster,
    url: String,
    client: tokio_postgres::Client,
    cfg: ReplicationConfig,
}

async fn setup(db: &str, schema: &str, tables: &[&str]) -> Setup {
    let (cluster, url) = cluster_with_db(db);
    let client = connect(&url).await.unwrap();
    client.batch_execute(schema).await.unwrap();
    ensure_slot_and_publication(&client, "ferrite_slot", "ferrite_pub").await.unwrap();
    // Idempotent.
    ensure_slot_and_publication(&client, "ferrite_slot", "ferrite_pub").await.unwrap();
    for t in tables {
        add_table_to_publication(&client, "ferrite_pub", &QualifiedName::new("public", *t)).await.unwrap();
    }
    let cfg = ReplicationConfig { url: url.clone(), slot: "ferrite_slot".into(), publication: "ferrite_pub".into() };
    Setup { cluster, url, client, cfg }
}

async fn wait_for_confirmed(c: &tokio_postgres::Client, at_least: u64) -> u64 {
    let mut confirmed = 0;
    for _ in 0..100 {
        confirmed = slot_status(c, "ferrite_slot").await.unwrap().unwrap().confirmed_flush_lsn;
        if confirmed >= at_least {
            return confirmed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("confirmed_flush_lsn stayed at {} (wanted {})", format_lsn(confirmed), format_lsn(at_least));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_inserts_updates_deletes_and_truncates_with_exact_values() {
    let mut s = setup("repl_values", TYPES_SCHEMA, &["vals"]).await;
    add_table_to_publication(&s.client, "ferrite_pub", &QualifiedName::new("public", "vals"))
        .await
        .expect("idempotent");
    let identity: String = s
        .client
        .query_one("SELECT relreplident::text FROM pg_class WHERE oid = 'vals'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(identity, "f", "add_table_to_publication sets REPLICA IDENTITY FULL");

    let flushed = Arc::new(AtomicU64::new(0));
    let (mut rx, task) = start_replication(&s.cfg, 0, flushed.clone()).await.expect("start replication");
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;

    // 1. Two inserts in one transaction.
    let xid1 = txn(&mut s.client, &format!("{ROW_1} INSERT INTO vals (id) VALUES (2);")).await;
    let t1 = next_txn(&mut rx).await;
    assert_eq!(t1.xid, xid1, "xid equals pg_current_xact_id()::xid");
    assert!(t1.commit_lsn > 0 && t1.commit_lsn < t1.end_lsn);
    assert!((t1.commit_time_micros - before).abs() < 60_000_000, "commit time is unix micros");
    assert_eq!(t1.changes.len(), 2);
    let cols = column_names(&t1, 0);
    let col_refs: Vec<&str> = cols.iter().map(String::as_str).collect();
    assert_eq!(col_refs[0], "id");
    assert_eq!(cols.len(), 27);
    let Change::Insert { relation, new } = &t1.changes[0] else { panic!("expected insert: {:?}", t1.changes[0]) };
    assert_eq!((relation.schema.as_str(), relation.name.as_str()), ("public", "vals"));
    assert!(relation.replica_identity_full);
    let vals_oid: u32 = s.client.query_one("SELECT 'vals'::regclass::oid", &[]).await.unwrap().get(0);
    assert_eq!(relation.oid, vals_oid);
    assert_eq!(relation.columns[1].type_oid, 16, "bool");
    assert_eq!(relation.columns[4].typmod, (8 << 16 | 5) + 4, "numeric(8,5)");

    let mut expected = text_row(&s.client, "vals", 1, &col_refs, &["bp"]).await;
    // Documented difference: pgoutput writes bool as t/f, `::text` as true/false.
    assert_eq!(expected[1].as_deref(), Some("true"));
    expected[1] = Some("t".into());
    for (i, (got, want)) in new.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "column {}", cols[i]);
    }
    // Spot checks of the forced display settings.
    assert_eq!(new[5].as_deref(), Some("NaN"));
    assert_eq!(new[6].as_deref(), Some("1.1"), "extra_float_digits=1: shortest exact float4");
    assert_eq!(new[7].as_deref(), Some("0.1"));
    assert_eq!(new[8].as_deref(), Some("Infinity"));
    assert_eq!(new[11].as_deref(), Some("ab "), "bpchar keeps its padding");
    assert_eq!(new[12].as_deref(), Some(r#"{a,NULL,"with space","quo\"te","back\\slash",""}"#));
    assert_eq!(new[13].as_deref(), Some("{{1,2},{3,NULL}}"));
    assert_eq!(new[20].as_deref(), Some("2024-01-31 10:34:56.789+00"), "TimeZone=UTC, DateStyle ISO");
    assert_eq!(new[21].as_deref(), Some("2024-01-31"));
    assert_eq!(new[24].as_deref(), Some("P1Y2M3DT4H5M6.5S"), "IntervalStyle=iso_8601");
    assert_eq!(new[25].as_deref(), Some("\\x00ff10"), "bytea_output=hex");

    let Change::Insert { new: new2, .. } = &t1.changes[1] else { panic!("expected insert") };
    assert_eq!(new2[0].as_deref(), Some("2"));
    assert!(new2[1..].iter().all(Option::is_none), "nulls stay null");

    // 2. Update (full old row) and delete (full old row) in one transaction.
    let old_row_1 = new.clone();
    let xid2 = txn(
        &mut s.client,
        "UPDATE vals SET t = 'changed', ta = NULL, f8 = -0.000001 WHERE id = 1; DELETE FROM vals WHERE id = 2;",
    )
    .await;
    let t2 = next_txn(&mut rx).await;
    assert_eq!(t2.xid, xid2);
    assert!(t2.commit_lsn > t1.commit_lsn);
    assert_eq!(t2.changes.len(), 2);
    let Change::Update { old, new, .. } = &t2.changes[0] else { panic!("expected update") };
    assert_eq!(old.as_ref(), Some(&old_row_1));
    let mut expected = text_row(&s.client, "vals", 1, &col_refs, &["bp"]).await;
    expected[1] = Some("t".into());
    assert_eq!(new, &expected);
    assert_eq!(new[9].as_deref(), Some("changed"));
    assert_eq!(new[7].as_deref(), Some("-1e-06"));
    let Change::Delete { old, .. } = &t2.changes[1] else { panic!("expected delete") };
    assert_eq!(old[0].as_deref(), Some("2"));
    assert_eq!(old.len(), 27);

    // 3. Truncate.
    let xid3 = txn(&mut s.client, "TRUNCATE vals").await;
    let t3 = next_txn(&mut rx).await;
    assert_eq!(t3.xid, xid3);
    let [Change::Truncate { relations }] = t3.changes.as_slice() else { panic!("expected truncate: {:?}", t3.changes) };
    assert_eq!(relations.len(), 1);
    assert_eq!(relations[0].name, "vals");

    // 4. Transactions touching only unpublished tables are not delivered.
    txn(&mut s.client, "CREATE TABLE other (id int); INSERT INTO other VALUES (1);").await;
    assert_quiet(&mut rx, Duration::from_millis(1500)).await;

    // 5. A schema change shows up as a changed relation on the next change.
    txn(&mut s.client, "ALTER TABLE vals ADD COLUMN extra text; INSERT INTO vals (id, extra) VALUES (3, 'x');").await;
    let t5 = next_txn(&mut rx).await;
    let Change::Insert { relation, new } = &t5.changes[0] else { panic!("expected insert") };
    assert_eq!(relation.columns.len(), 28);
    assert_eq!(relation.columns[27].name, "extra");
    assert_eq!(new[27].as_deref(), Some("x"));

    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walsender_session_uses_the_same_display_settings() {
    let s = setup("repl_settings", "CREATE TABLE x (id int PRIMARY KEY);", &[]).await;
    let mut conn = ReplicationConnection::connect(&s.url).await.expect("replication connection");
    assert_eq!(conn.parameter("DateStyle"), Some("ISO, DMY"));
    assert_eq!(conn.parameter("TimeZone"), Some("UTC"));
    assert_eq!(conn.parameter("IntervalStyle"), Some("iso_8601"));
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][3].as_deref(), Some("repl_settings"), "database-mode walsender");
    let rows = conn.simple_query("SHOW bytea_output").await.unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("hex"));
    let rows = conn.simple_query("SHOW extra_float_digits").await.unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("1"));
    let err = conn.simple_query("SELECT nonsense_column").await.unwrap_err();
    assert_eq!(err.code(), Some("42703"), "{err}");
    // The connection is still usable after an error.
    assert_eq!(conn.simple_query("SELECT 1").await.unwrap()[0][0].as_deref(), Some("1"));
    conn.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_values_are_filled_from_the_old_row() {
    let schema = "CREATE TABLE big (id int PRIMARY KEY, body text, n int); \
                  CREATE TABLE big_default (id int PRIMARY KEY, body text, n int);";
    let mut s = setup("repl_toast", schema, &["big", "big_default"]).await;
    // The second table goes back to the default identity: Ferrite must refuse its updates.
    s.client.batch_execute("ALTER TABLE big_default REPLICA IDENTITY DEFAULT").await.unwrap();
    let flushed = Arc::new(AtomicU64::new(0));
    let (mut rx, task) = start_replication(&s.cfg, 0, flushed.clone()).await.unwrap();

    // > 1 MB of poorly compressible text: stored out of line (TOAST).
    let make_big = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 40000) g)";
    txn(&mut s.client, &format!("INSERT INTO big VALUES (1, {make_big}, 1)")).await;
    let t = next_txn(&mut rx).await;
    let Change::Insert { new, .. } = &t.changes[0] else { panic!("expected insert") };
    let body = new[1].clone().expect("body");
    assert_eq!(body.len(), 40000 * 32);
    let stored: String = s.client.query_one("SELECT body FROM big WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(body, stored);
    let toast: String = s
        .client
        .query_one("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'big'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    let chunks: i64 = s.client.query_one(&format!("SELECT count(*) FROM {toast}"), &[]).await.unwrap().get(0);
    assert!(chunks > 100, "the value is stored out of line ({chunks} TOAST chunks)");

    txn(&mut s.client, "UPDATE big SET n = 2 WHERE id = 1").await;
    let t = next_txn(&mut rx).await;
    let Change::Update { old, new, .. } = &t.changes[0] else { panic!("expected update") };
    assert_eq!(new[1].as_deref(), Some(body.as_str()), "unchanged TOAST value filled in");
    assert_eq!(new[2].as_deref(), Some("2"));
    assert_eq!(old.as_ref().and_then(|o| o[2].as_deref()), Some("1"));
    flushed.store(t.end_lsn, Ordering::Release);

    // Without REPLICA IDENTITY FULL there is nothing to fill from: an error naming the table.
    txn(&mut s.client, &format!("INSERT INTO big_default VALUES (1, {make_big}, 1)")).await;
    let t = next_txn(&mut rx).await;
    flushed.store(t.end_lsn, Ordering::Release);
    txn(&mut s.client, "UPDATE big_default SET n = 2 WHERE id = 1").await;
    match next(&mut rx).await {
        Err(ReplicationError::ReplicaIdentityNotFull { table }) => assert_eq!(table, "\"public\".\"big_default\""),
        other => panic!("expected ReplicaIdentityNotFull, got {other:?}"),
    }
    // The task ends after the error.
    assert!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().is_none());
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_positions_are_confirmed_and_resumed_from() {
    let mut s = setup(
        "repl_ack",
        "CREATE TABLE items (id int PRIMARY KEY, v text); CREATE TABLE unpublished (id int);",
        &["items"],
    )
    .await;
    let initial = slot_status(&s.client, "ferrite_slot").await.unwrap().expect("slot exists");
    assert!(initial.confirmed_flush_lsn > 0);

    let flushed = Arc::new(AtomicU64::new(0));
    let (mut rx, task) = start_replication(&s.cfg, 0, flushed.clone()).await.unwrap();
    let xa = txn(&mut s.client, "INSERT INTO items VALUES (1, 'a')").await;
    let xb = txn(&mut s.client, "INSERT INTO items VALUES (2, 'b')").await;
    let xc = txn(&mut s.client, "INSERT INTO items VALUES (3, 'c')").await;
    let (a, b, c) = (next_txn(&mut rx).await, next_txn(&mut rx).await, next_txn(&mut rx).await);
    assert_eq!((a.xid, b.xid, c.xid), (xa, xb, xc), "commit order");

    // Nothing acknowledged yet: the slot has not moved past A (it may have moved up to the
    // idle position before A, which the stream confirms on its own).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let confirmed = slot_status(&s.client, "ferrite_slot").await.unwrap().unwrap().confirmed_flush_lsn;
    assert!(confirmed >= initial.confirmed_flush_lsn && confirmed <= a.commit_lsn, "{}", format_lsn(confirmed));

    // Acknowledge A and B: confirmed exactly up to B's end.
    flushed.store(b.end_lsn, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let confirmed = slot_status(&s.client, "ferrite_slot").await.unwrap().unwrap().confirmed_flush_lsn;
    assert_eq!(confirmed, b.end_lsn, "confirmed {} vs B end {}", format_lsn(confirmed), format_lsn(b.end_lsn));

    // Reconnect from the slot's position: only C comes again.
    task.abort();
    drop(rx);
    let (mut rx, task) = start_replication(&s.cfg, 0, flushed.clone()).await.expect("restart streaming");
    let again = next_txn(&mut rx).await;
    assert_eq!(again.xid, c.xid);
    assert_eq!(again.commit_lsn, c.commit_lsn);
    assert_eq!(again, c, "re-delivered identically");
    assert_quiet(&mut rx, Duration::from_millis(1000)).await;

    // Once everything delivered is acknowledged, idle WAL (other tables) is confirmed too, so the
    // slot does not hold WAL back forever.
    flushed.store(c.end_lsn, Ordering::Release);
    wait_for_confirmed(&s.client, c.end_lsn).await;
    txn(&mut s.client, "INSERT INTO unpublished SELECT generate_series(1, 1000)").await;
    let wal = current_wal_lsn(&s.client).await.unwrap();
    assert!(wal > c.end_lsn);
    let confirmed = wait_for_confirmed(&s.client, wal).await;
    assert!(confirmed >= wal);
    assert_quiet(&mut rx, Duration::from_millis(200)).await;
    let status = slot_status(&s.client, "ferrite_slot").await.unwrap().unwrap();
    assert!(status.restart_lsn > 0 && status.restart_lsn <= status.confirmed_flush_lsn);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_and_publication_errors_are_clear() {
    let s = setup("repl_errors", "CREATE TABLE items (id int PRIMARY KEY);", &[]).await;
    let err =
        add_table_to_publication(&s.client, "ferrite_pub", &QualifiedName::new("public", "missing")).await.unwrap_err();
    assert!(err.to_string().contains("\"public\".\"missing\""), "{err}");
    assert!(ensure_slot_and_publication(&s.client, "Bad-Name", "p").await.is_err());

    let missing = ReplicationConfig { slot: "no_such_slot".into(), ..s.cfg.clone() };
    let err = start_replication(&missing, 0, Arc::new(AtomicU64::new(0))).await.unwrap_err();
    assert_eq!(err.code(), Some("42704"), "{err}");

    // A slot streamed by someone else is refused (after a short retry).
    let (_rx, task) = start_replication(&s.cfg, 0, Arc::new(AtomicU64::new(0))).await.unwrap();
    let started = std::time::Instant::now();
    let err = start_replication(&s.cfg, 0, Arc::new(AtomicU64::new(0))).await.unwrap_err();
    assert_eq!(err.code(), Some("55006"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(5));
    task.abort();

    let bad_db = ReplicationConfig { url: s.cluster.url("no_such_db"), ..s.cfg.clone() };
    let err = start_replication(&bad_db, 0, Arc::new(AtomicU64::new(0))).await.unwrap_err();
    assert_eq!(err.code(), Some("3D000"), "{err}");

    let nothing = ReplicationConfig { url: "postgres://postgres@127.0.0.1:1/x".into(), ..s.cfg.clone() };
    assert!(start_replication(&nothing, 0, Arc::new(AtomicU64::new(0))).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_authentication_methods() {
    let s = setup("repl_auth", "CREATE TABLE items (id int PRIMARY KEY);", &["items"]).await;
    s.client
        .batch_execute(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 's3cret pw'; \
             SET password_encryption = 'md5'; \
             CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5 pw'; \
             CREATE ROLE plain_user LOGIN REPLICATION PASSWORD 'plain pw';",
        )
        .await
        .unwrap();
    let hba = s.cluster.data_dir().join("pg_hba.conf");
    let original = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "host all scram_user 127.0.0.1/32 scram-sha-256\n\
             host all md5_user 127.0.0.1/32 md5\n\
             host all plain_user 127.0.0.1/32 password\n{original}"
        ),
    )
    .unwrap();
    s.client.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let port = s.cluster.port();
    for (user, pw) in [("scram_user", "s3cret%20pw"), ("md5_user", "md5%20pw"), ("plain_user", "plain%20pw")] {
        let url = format!("postgres://{user}:{pw}@127.0.0.1:{port}/repl_auth");
        let mut conn = ReplicationConnection::connect(&url).await.unwrap_or_else(|e| panic!("{user}: {e}"));
        let rows = conn.simple_query("SELECT current_user").await.unwrap();
        assert_eq!(rows[0][0].as_deref(), Some(user));
        // Wrong password.
        let url = format!("postgres://{user}:wrong@127.0.0.1:{port}/repl_auth");
        let err = ReplicationConnection::connect(&url).await.unwrap_err();
        assert_eq!(err.code(), Some("28P01"), "{user}: {err}");
        // No password at all.
        let url = format!("postgres://{user}@127.0.0.1:{port}/repl_auth");
        let err = ReplicationConnection::connect(&url).await.unwrap_err();
        assert!(matches!(err, ReplicationError::Auth(_)), "{user}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_and_crash_end_the_stream_with_an_error() {
    let mut s = setup("repl_restart", "CREATE TABLE items (id int PRIMARY KEY);", &["items"]).await;
    let flushed = Arc::new(AtomicU64::new(0));
    let (mut rx, task) = start_replication(&s.cfg, 0, flushed.clone()).await.unwrap();
    txn(&mut s.client, "INSERT INTO items VALUES (1)").await;
    let t = next_txn(&mut rx).await;
    flushed.store(t.end_lsn, Ordering::Release);
    wait_for_confirmed(&s.client, t.end_lsn).await;

    // Clean restart: the walsender finishes, the receiver gets an error (not a hang).
    s.cluster.restart().expect("restart");
    let err = next(&mut rx).await.expect_err("an error after the restart");
    eprintln!("after restart: {err}");
    assert!(rx.recv().await.is_none(), "exactly one error, then the stream ends");
    let _ = task.await;

    // Reconnect: new changes flow. The acknowledged transaction may come once more: before
    // Postgres 17 a slot's confirmed position is not written to disk by the shutdown checkpoint
    // unless something else changed in the slot, so consumers must replay idempotently.
    let mut client = connect(&s.url).await.unwrap();
    let (mut rx, task) = start_replication(&s.cfg, 0, flushed.clone()).await.expect("restart streaming");
    let x2 = txn(&mut client, "INSERT INTO items VALUES (2)").await;
    let mut seen = vec![];
    while seen.last() != Some(&x2) {
        seen.push(next_txn(&mut rx).await.xid);
    }
    assert!(seen == vec![x2] || seen == vec![t.xid, x2], "{seen:?}");

    // Crash: the postmaster is killed; the stream still ends with an error.
    s.cluster.kill_postmaster().expect("kill");
    let err = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("error within 60 s");
    match err {
        Some(Err(e)) => eprintln!("after crash: {e}"),
        other => panic!("expected an error after the crash, got {other:?}"),
    }
    let _ = task.await;

    // After crash recovery, unacknowledged transaction 2 is delivered again.
    s.cluster.restart().expect("restart after crash");
    let (mut rx, task) = start_replication(&s.cfg, 0, flushed.clone()).await.expect("stream after crash");
    let mut seen = vec![];
    while seen.last() != Some(&x2) {
        seen.push(next_txn(&mut rx).await.xid);
    }
    assert!(seen == vec![x2] || seen == vec![t.xid, x2], "{seen:?}");
    task.abort();
}

//! Convergence checksums with a real `ferrite serve` process and the Rust client: the digest the
//! server keeps per shape (snapshot, then change by change, read back from the log after a
//! restart) equals the one the client computes over SQLite for every column type; a pending
//! local write does not look like drift; a replica damaged behind the client's back is noticed,
//! counted and repaired by fetching the shape afresh. Relational shapes and include-tree members,
//! whose messages carry no digest, are compared with the digest the server computes on demand
//! (`GET /v1/shape/digest`, a replay of the shape's log), checked here against Postgres' rows.

use crate::common::*;
use ferrite_client::{Change, Client, Include, ShapeDef, TokenSource, Tree, Verification};
use ferrite_protocol::digest::{ColumnKind, Digest, RowHasher};
use std::collections::BTreeMap;
use std::time::Duration;

const SCHEMA: &str = "
    CREATE TABLE items (
        id int8 PRIMARY KEY, title text, n int4, x float8, f float4, done bool, meta jsonb, doc json,
        tags text[], grid int4[][], amount numeric, at timestamptz, u uuid);
    INSERT INTO items SELECT i, 'item ' || i || ' é☃', i % 7, i / 3.0, i * 0.1, i % 2 = 0,
        jsonb_build_object('k', i, 'nested', jsonb_build_object('z', 1.5, 'a', ARRAY['x', 'y'])),
        json_build_object('b', i, 'a', 'text'),
        ARRAY['a b', 'q\"x', NULL, 'NULL'], ARRAY[[i, 2], [3, NULL]], i * 1.10, '2026-01-01'::timestamptz + i * interval '1 hour',
        md5(i::text)::uuid
    FROM generate_series(1, 200) i;
    UPDATE items SET x = 'Infinity', f = 'NaN', title = NULL, meta = NULL WHERE id = 5;
    UPDATE items SET x = 1e300, f = -0.0 WHERE id = 6;";

fn key(id: &str) -> BTreeMap<String, Option<String>> {
    BTreeMap::from([("id".to_string(), Some(id.to_string()))])
}

/// Syncs `def` until its local table holds as many rows as Postgres' `items WHERE filter` (a
/// sync ends at the server's up-to-date, which may come before a commit has been replicated).
async fn sync_to(client: &Client, def: &ShapeDef, pg: &tokio_postgres::Client, filter: &str) {
    let want: i64 = pg.query_one(&format!("SELECT count(*) FROM items WHERE {filter}"), &[]).await.unwrap().get(0);
    wait_until("the replica to catch up", Duration::from_secs(20), || async {
        client.sync(def).await.unwrap();
        let n = client.query(&format!("SELECT count(*) FROM {}", def.local_table()), &[]).unwrap();
        n == vec![vec![serde_json::json!(want)]]
    })
    .await;
}

/// A `ferrite serve` process and a Rust client replica compared at every up-to-date. Bind every
/// field: the directories go when dropped.
struct Replicated {
    server: ServerProcess,
    port: u16,
    base: String,
    data: tempfile::TempDir,
    dir: tempfile::TempDir,
    /// The replica's SQLite file, to damage behind the client's back.
    path: std::path::PathBuf,
    client: Client,
}

async fn serve_and_replicate(db: &TestDb) -> Replicated {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = spawn_server(&db.url, data.path(), port);
    wait_healthy(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.db");
    let client = Client::open(&path, &base, TokenSource::None).unwrap();
    client.set_checksum_interval(Some(Duration::ZERO));
    Replicated { server, port, base, data, dir, path, client }
}

async fn verified(client: &Client, def: &ShapeDef) -> Verification {
    client.verify(def).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_client_digests_agree_and_a_damaged_replica_is_repaired() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute(SCHEMA).await.unwrap();
    let Replicated { mut server, port, base, data, dir, path, client } = serve_and_replicate(&db).await;
    let all = ShapeDef::table("items");
    let some = ShapeDef::table("items").filter("n = 3").columns(&["id", "title", "meta", "tags"]).into_table("some");
    for def in [&all, &some] {
        client.sync(def).await.unwrap();
        let v = verified(&client, def).await;
        assert!(matches!(v, Verification::Match(d) if d.count > 0), "after the snapshot: {v:?}");
    }

    // Every kind of change, with the default replica mode (updates carry changed columns only).
    pg.batch_execute(
        "INSERT INTO items (id, title, n, meta, tags) VALUES (1000, 'new', 3, '{\"b\": [1, {\"c\": null}]}', '{}');
         UPDATE items SET title = 'renamed', x = 2.5 WHERE id IN (1, 2, 3);
         UPDATE items SET n = 3 WHERE id = 8;                 -- moves into `some`
         UPDATE items SET n = 4 WHERE id = 10;                -- moves out of `some`
         UPDATE items SET id = 2000 WHERE id = 17;            -- a key change
         UPDATE items SET meta = '{\"k\": 1}' WHERE id = 24;
         DELETE FROM items WHERE id IN (31, 38);",
    )
    .await
    .unwrap();
    for (def, filter) in [(&all, "true"), (&some, "n = 3")] {
        sync_to(&client, def, &pg, filter).await;
        assert!(matches!(verified(&client, def).await, Verification::Match(_)), "after changes");
    }
    let count = |v: Verification| match v {
        Verification::Match(d) => d.count,
        other => panic!("expected a match, got {other:?}"),
    };
    let rows: i64 = pg.query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    assert_eq!(count(verified(&client, &all).await), rows as u64);

    // A pending local write (not pushed yet) is not drift: its row counts as the server sent it.
    client
        .write(&[Change::Update {
            table: "items".into(),
            key: key("1"),
            set: BTreeMap::from([("title".to_string(), Some("local only".to_string()))]),
        }])
        .unwrap();
    assert!(matches!(verified(&client, &all).await, Verification::Match(_)), "with a pending write");
    client.push().await.unwrap();

    // The server restarts: the digest is read back from the shape's log and carries on.
    server.kill_9();
    let mut server = spawn_server(&db.url, data.path(), port);
    wait_healthy(&base).await;
    pg.batch_execute("UPDATE items SET title = 'after restart' WHERE id = 40; DELETE FROM items WHERE id = 41;")
        .await
        .unwrap();
    sync_to(&client, &all, &pg, "true").await;
    assert!(matches!(verified(&client, &all).await, Verification::Match(_)), "after the server restarted");
    let before = client.metrics().unwrap();
    assert_eq!((before.checksum_mismatches, before.checksum_repairs), (0, 0));
    assert!(before.checksums_verified > 0);

    // Damage behind the client's back: a value changed, a row deleted, a row added.
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch(
            "UPDATE items SET title = 'tampered' WHERE id = 50;
             DELETE FROM items WHERE id = 51;
             INSERT INTO items (id, title) VALUES (99999, 'ghost');",
        )
        .unwrap();
    }
    assert!(matches!(verified(&client, &all).await, Verification::Mismatch { .. }), "the damage is seen");
    // The next sync notices it at its up-to-date and fetches the shape afresh.
    let report = client.sync(&all).await.unwrap();
    assert!(report.refetches >= 1, "{report:?}");
    assert!(matches!(verified(&client, &all).await, Verification::Match(_)), "repaired");
    let after = client.metrics().unwrap();
    assert!(
        after.checksum_mismatches >= 1 && after.checksum_repairs == 1 && after.checksum_unrepaired == 0,
        "{after:?}"
    );
    let local = client.query("SELECT title FROM items WHERE id IN (50, 51, 99999) ORDER BY id", &[]).unwrap();
    let expected: Vec<Vec<serde_json::Value>> = pg
        .query("SELECT title FROM items WHERE id IN (50, 51) ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| vec![serde_json::json!(r.get::<_, Option<String>>(0))])
        .collect();
    assert_eq!(local, expected, "the replica holds Postgres' rows again");

    // Damage while the app is closed: a reopened replica (default interval) is compared at its
    // first up-to-date, since its rows were read back from storage.
    drop(client);
    rusqlite::Connection::open(&path).unwrap().execute("UPDATE items SET x = -1 WHERE id = 60", []).unwrap();
    let client = Client::open(&path, &base, TokenSource::None).unwrap();
    let report = client.sync(&all).await.unwrap();
    assert_eq!(report.refetches, 1, "{report:?}");
    assert_eq!(client.metrics().unwrap().checksum_repairs, 1);
    let x: f64 = pg.query_one("SELECT x FROM items WHERE id = 60", &[]).await.unwrap().get(0);
    assert_eq!(client.query("SELECT x FROM items WHERE id = 60", &[]).unwrap(), vec![vec![serde_json::json!(x)]]);
    // A fresh replica is not compared right after its first sync (its rows were just fetched).
    let fresh = Client::open(dir.path().join("fresh.db"), &base, TokenSource::None).unwrap();
    fresh.sync(&all).await.unwrap();
    assert_eq!(fresh.metrics().unwrap().checksums_verified, 0);
    server.kill_9();
}

/// A subscription checks at its up-to-date and repairs by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_repairs_a_damaged_replica() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute("CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 50) i;")
        .await
        .unwrap();
    let Replicated { server: _server, data: _data, dir: _dir, path, client, .. } = serve_and_replicate(&db).await;
    let notes = ShapeDef::table("notes");
    client.sync(&notes).await.unwrap();
    let _sub = client.subscribe(notes.clone());
    rusqlite::Connection::open(&path).unwrap().execute("UPDATE notes SET body = 'bad' WHERE id = 7", []).unwrap();
    // A change wakes the live subscription; at its up-to-date it checks, finds the damage and
    // starts the shape over.
    pg.batch_execute("INSERT INTO notes VALUES (51, 'new')").await.unwrap();
    wait_until("the subscription to repair the replica", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let m = client.metrics().unwrap();
            let body = client.query("SELECT body FROM notes WHERE id = 7", &[]).unwrap();
            let n = client.query("SELECT count(*) FROM notes", &[]).unwrap();
            m.checksum_repairs == 1
                && body == vec![vec![serde_json::json!("note 7")]]
                && n == vec![vec![serde_json::json!(51)]]
        }
    })
    .await;
    assert!(matches!(verified(&client, &notes).await, Verification::Match(_)));
}

const TEAMS: &str = "
    CREATE TABLE members (user_id text, team_id int, PRIMARY KEY (user_id, team_id));
    CREATE TABLE tasks (id int PRIMARY KEY, team_id int NOT NULL, title text, n int);
    INSERT INTO members VALUES ('ann', 1), ('ann', 2), ('bob', 3);
    INSERT INTO tasks SELECT i, 1 + i % 4, 'task ' || i, i % 5 FROM generate_series(1, 80) i;";

/// Ann's tasks: a relational shape, whose rows move in and out with her memberships.
const ANNS: &str = "team_id IN (SELECT team_id FROM members WHERE user_id = 'ann')";

/// The digest of Postgres' rows of `tasks WHERE <ANNS>` as the protocol defines it — an oracle
/// that reads neither the server's log nor a replica.
async fn postgres_digest(pg: &tokio_postgres::Client) -> Digest {
    let hasher = RowHasher::new([
        ("id", ColumnKind::of("int4", 0)),
        ("team_id", ColumnKind::of("int4", 0)),
        ("title", ColumnKind::of("text", 0)),
        ("n", ColumnKind::of("int4", 0)),
    ]);
    let rows = pg
        .query(&format!("SELECT id::text, team_id::text, title, n::text FROM tasks WHERE {ANNS}"), &[])
        .await
        .unwrap();
    let mut digest = Digest::default();
    for r in rows {
        let values: Vec<Option<String>> = (0..4).map(|i| r.get(i)).collect();
        digest.add(hasher.hash_texts(|i| values[i].as_deref()));
    }
    digest
}

/// Syncs `def` until the replica's digest, as the server computes it, is Postgres' (a sync ends
/// at the server's up-to-date, which may come before a commit has been replicated).
async fn sync_to_postgres(client: &Client, def: &ShapeDef, pg: &tokio_postgres::Client) -> Digest {
    let want = postgres_digest(pg).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        client.sync(def).await.unwrap();
        let got = verified(client, def).await;
        if got == Verification::Match(want) {
            return want;
        }
        assert!(std::time::Instant::now() < deadline, "the replica never reached Postgres' rows {want}: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relational_shape_is_compared_with_the_servers_replayed_digest_and_repaired() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute(TEAMS).await.unwrap();
    let Replicated { server: _server, data: _data, dir: _dir, path, client, .. } = serve_and_replicate(&db).await;
    let anns = ShapeDef::table("tasks").filter(ANNS);
    let first = sync_to_postgres(&client, &anns, &pg).await;
    assert_eq!(first.count, 40, "teams 1 and 2");

    // Changes of the shape's rows, and of the subquery's: a move-in (a new membership), a
    // move-out (a membership removed: an event naming a tag value, not rows), a row leaving
    // through its own change, a key change.
    pg.batch_execute(
        "UPDATE tasks SET title = 'renamed' WHERE id IN (1, 2, 3);
         INSERT INTO members VALUES ('ann', 3);
         INSERT INTO tasks VALUES (1000, 3, 'new in 3', 1);",
    )
    .await
    .unwrap();
    sync_to_postgres(&client, &anns, &pg).await;
    pg.batch_execute(
        "DELETE FROM members WHERE user_id = 'ann' AND team_id = 1;
         UPDATE tasks SET team_id = 4 WHERE id = 6;
         UPDATE tasks SET id = 2000, n = NULL WHERE id = 7;
         UPDATE tasks SET title = NULL WHERE id = 10;",
    )
    .await
    .unwrap();
    let now = sync_to_postgres(&client, &anns, &pg).await;
    let expected: i64 = pg.query_one(&format!("SELECT count(*) FROM tasks WHERE {ANNS}"), &[]).await.unwrap().get(0);
    assert_eq!(now.count, expected as u64);
    let m = client.metrics().unwrap();
    assert_eq!((m.checksum_mismatches, m.checksum_repairs), (0, 0), "{m:?}");

    // Damage behind the client's back: a value changed, a row deleted, a row of a team Ann
    // left kept.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "UPDATE tasks SET title = 'tampered' WHERE id = 1;
             DELETE FROM tasks WHERE id = 2;
             INSERT INTO tasks (id, team_id, title, n) VALUES (8, 1, 'task 8', 3);",
        )
        .unwrap();
    assert!(matches!(verified(&client, &anns).await, Verification::Mismatch { .. }), "the damage is seen");
    let report = client.sync(&anns).await.unwrap();
    assert!(report.refetches >= 1, "{report:?}");
    assert_eq!(verified(&client, &anns).await, Verification::Match(postgres_digest(&pg).await), "repaired");
    let m = client.metrics().unwrap();
    assert!(m.checksum_mismatches >= 1 && m.checksum_repairs == 1 && m.checksum_unrepaired == 0, "{m:?}");
    let rows = client.query("SELECT id, title FROM tasks WHERE id IN (1, 2, 8) ORDER BY id", &[]).unwrap();
    let expected = vec![
        vec![serde_json::json!(1), serde_json::json!("renamed")],
        vec![serde_json::json!(2), serde_json::json!("renamed")],
    ];
    assert_eq!(rows, expected, "row 8 is team 1's, which Ann left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_member_that_differs_is_fetched_afresh_and_applied_at_a_common_point() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute(
        "CREATE TABLE pipelines (id int PRIMARY KEY, name text NOT NULL);
         CREATE TABLE steps (id int PRIMARY KEY, pipeline_id int NOT NULL REFERENCES pipelines (id), name text);
         INSERT INTO pipelines VALUES (1, 'build'), (2, 'deploy');
         INSERT INTO steps SELECT i, 1 + i % 2, 'step ' || i FROM generate_series(1, 30) i;",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.db");
    let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
    client.set_checksum_interval(Some(Duration::ZERO));
    let mut root = ShapeDef::table("pipelines").filter("id = $1");
    root.params.insert("1".into(), "1".into());
    let tree = Tree::new(root).with("steps", Include::rows());
    let report = client.sync_tree(&tree).await.unwrap();
    assert_eq!(report.repaired, 0);
    let members = client.tree_shapes(&tree).await.unwrap();
    for def in &members {
        assert!(matches!(verified(&client, def).await, Verification::Match(_)), "{}", def.table);
    }
    let steps = members.iter().find(|d| d.local_table() == "steps").expect("the steps member");
    assert!(steps.where_sql.as_deref().unwrap_or("").contains("SELECT"), "a relational member: {steps:?}");

    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE steps SET name = 'tampered' WHERE id = 4; DELETE FROM steps WHERE id = 6;")
        .unwrap();
    assert!(matches!(verified(&client, steps).await, Verification::Mismatch { .. }), "the damage is seen");
    pg.batch_execute("INSERT INTO steps VALUES (100, 1, 'new')").await.unwrap();
    let mut repaired = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        repaired += client.sync_tree(&tree).await.unwrap().repaired;
        if client.query("SELECT count(*) FROM steps WHERE id = 100", &[]).unwrap() == vec![vec![serde_json::json!(1)]] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the tree never held the new step");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(repaired, 1);
    let local = client.query("SELECT id, name FROM steps ORDER BY id", &[]).unwrap();
    let expected: Vec<Vec<serde_json::Value>> = pg
        .query("SELECT id, name FROM steps WHERE pipeline_id = 1 ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| vec![serde_json::json!(r.get::<_, i32>(0)), serde_json::json!(r.get::<_, Option<String>>(1))])
        .collect();
    assert_eq!(local, expected, "the member holds Postgres' rows again");
    assert!(matches!(verified(&client, steps).await, Verification::Match(_)));
    assert_eq!(client.metrics().unwrap().checksum_repairs, 1);
}

/// `GET /v1/shape/digest` itself: its answer is the digest of Postgres' rows, computed once per
/// handle and offset; bad requests are refused with nothing computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_endpoint_answers_from_the_log_and_refuses_what_it_cannot_answer() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute(TEAMS).await.unwrap();
    pg.batch_execute("DELETE FROM members WHERE team_id = 2; UPDATE tasks SET title = NULL WHERE id = 4;")
        .await
        .unwrap();
    let s = TestServer::start(&db).await;
    let http = reqwest::Client::new();
    let shape = form_urlencoded_serialize(&[("table".into(), "tasks".into()), ("where".into(), ANNS.into())]);
    let (handle, offset, _) = read_to_head(&http, &s.base, &shape, None).await;
    let digest_url = |q: &str| format!("{}/v1/shape/digest?{q}", s.base);
    let at = |h: &str, o: &str| digest_url(&format!("{shape}&handle={h}&offset={o}"));
    let observer = s.server.observer();
    let replays = || observer.metrics().digest_replays.load(std::sync::atomic::Ordering::Relaxed);

    let r = get(&at(&handle, &offset)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["digest"], postgres_digest(&pg).await.to_string());
    assert_eq!(replays(), 1);
    // Asked again (another client at the same place): the kept answer.
    assert_eq!(get(&at(&handle, &offset)).await.body, r.body);
    assert_eq!(replays(), 1);

    // At the offset a later read reaches, after a move-in: the rows then.
    pg.batch_execute("INSERT INTO members VALUES ('ann', 2)").await.unwrap();
    let want = postgres_digest(&pg).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (mut later, mut moved_in) = (offset.clone(), false);
    loop {
        let url = format!("{}/v1/shape?{shape}&handle={handle}&offset={later}", s.base);
        let r = http.get(&url).send().await.unwrap();
        later = r.headers()["electric-offset"].to_str().unwrap().to_string();
        let up_to_date = r.headers().contains_key("electric-up-to-date");
        let body: Vec<serde_json::Value> = r.json().await.unwrap();
        moved_in |= body.iter().any(|m| m["headers"]["control"] == "snapshot-end");
        if moved_in && up_to_date {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the move-in was never logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The move-in's rows are in the log at `later`; the digest there is Postgres'.
    let r = get(&at(&handle, &later)).await;
    assert_eq!((r.status, r.body["digest"].as_str()), (200, Some(want.to_string().as_str())), "{}", r.text);
    // The earlier offset's answer has not changed.
    assert_eq!(get(&at(&handle, &offset)).await.body, get(&at(&handle, &offset)).await.body);

    // A position past the log's last entry (what a reader at the head is given): all of it.
    let r = get(&at(&handle, "999999999999_0")).await;
    assert_eq!((r.status, r.body["digest"].as_str()), (200, Some(want.to_string().as_str())), "{}", r.text);

    // Refused: no handle, offset -1 or now, a malformed offset, a subset; another
    // handle is a 409 towards the shape's.
    for (q, field) in [
        (format!("{shape}&offset={offset}"), "handle"),
        (format!("{shape}&handle={handle}&offset=-1"), "offset"),
        (format!("{shape}&handle={handle}&offset=now"), "offset"),
        (format!("{shape}&handle={handle}&offset=12_x"), "offset"),
        (format!("{shape}&handle={handle}&offset={offset}&subset__limit=1"), "subset"),
    ] {
        let r = get(&digest_url(&q)).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
        assert!(r.text.contains(field), "{q}: {}", r.text);
    }
    let r = get(&at("12345-67890", &offset)).await;
    assert_eq!((r.status, r.header("electric-handle")), (409, Some(handle.clone())), "{}", r.text);
    let r = get(&digest_url(&format!("table=no_such_table&handle={handle}&offset={offset}"))).await;
    assert_eq!(r.status, 400, "{}", r.text);

    // A changes-only shape's log does not hold its rows: no digest, and why.
    let changes = form_urlencoded_serialize(&[("table".into(), "tasks".into()), ("log".into(), "changes_only".into())]);
    let (h, o, _) = read_to_head(&http, &s.base, &changes, None).await;
    let r = get(&digest_url(&format!("{changes}&handle={h}&offset={o}"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["digest"].is_null() && r.body["reason"].as_str().unwrap().contains("changes_only"), "{}", r.text);
}

/// A shape with a time window: rows leave as the server's clock passes them (changes the clock
/// makes, not Postgres), so it carries no digest either; the server's replay follows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_window_shape_is_compared_as_its_rows_age_out() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    let clock = ferrite_server::ManualClock::new();
    let t0 = clock.clock().wall();
    let secs = t0.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Row i ages out of the last day i hours from now.
    pg.batch_execute(&format!(
        "CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL, body text);
         INSERT INTO events SELECT i, to_timestamp({secs}) - interval '1 day' + i * interval '1 hour', 'event ' || i
         FROM generate_series(1, 30) i;"
    ))
    .await
    .unwrap();
    let s = TestServer::start_on(&db, clock.clock(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.db");
    let client = Client::open(&path, &s.base, TokenSource::None).unwrap();
    client.set_checksum_interval(Some(Duration::ZERO));
    let recent = ShapeDef::table("events").filter("at > now() - interval '1 day'");
    let in_window = |hours: u64| {
        let t = secs + hours * 3600;
        format!("SELECT count(*) FROM events WHERE at > to_timestamp({t}) - interval '1 day'")
    };
    let synced_to = |want: u64| {
        let (client, recent) = (client.clone(), recent.clone());
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                client.sync(&recent).await.unwrap();
                let v = client.verify(&recent).await.unwrap();
                if matches!(v, Verification::Match(d) if d.count == want) {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "never matched with {want} rows: {v:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    synced_to(pg_count(&pg, &in_window(0)).await).await;
    // Five hours pass: rows 1-5 age out (deletes the clock made), and one is updated.
    clock.advance(Duration::from_secs(5 * 3600 + 60));
    pg.batch_execute("UPDATE events SET body = 'edited' WHERE id = 20").await.unwrap();
    let want = pg_count(&pg, &in_window(5)).await;
    assert_eq!(want, 25);
    synced_to(want).await;

    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE events SET body = 'tampered' WHERE id = 21", [])
        .unwrap();
    let report = client.sync(&recent).await.unwrap();
    assert_eq!(report.refetches, 1, "{report:?}");
    assert!(matches!(client.verify(&recent).await.unwrap(), Verification::Match(d) if d.count == want));
    assert_eq!(client.metrics().unwrap().checksum_repairs, 1);
    assert_eq!(
        client.query("SELECT body FROM events WHERE id = 21", &[]).unwrap(),
        vec![vec![serde_json::json!("event 21")]]
    );
}

async fn pg_count(pg: &tokio_postgres::Client, sql: &str) -> u64 {
    pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64
}

/// In jwt mode a digest is the caller's: the read rules make the shape, so a handle of someone
/// else's shape is a 409 towards the caller's own, never the other's digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_is_only_ever_of_the_callers_own_rows() {
    use ferrite_server::config::{AuthMode, TableConfig};
    const SECRET: &str = "digest-secret-0123456789abcdef-0123456789";
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute(TEAMS).await.unwrap();
    let s = TestServer::start_with(&db, |c| {
        c.auth.mode = AuthMode::Jwt;
        c.auth.secret = Some(SECRET.into());
        let rule = "team_id IN (SELECT team_id FROM members WHERE user_id = claims.sub)";
        c.tables.insert("tasks".into(), TableConfig { read: Some(rule.into()), ..Default::default() });
        c.tables
            .insert("members".into(), TableConfig { read: Some("user_id = claims.sub".into()), ..Default::default() });
    })
    .await;
    let token = |user: &str| hs256_token(SECRET, serde_json::json!({ "sub": user }));
    let http = reqwest::Client::new();
    let (ann, bob) = (token("ann"), token("bob"));
    let (handle, offset, rows) = read_to_head(&http, &s.base, "table=tasks", Some(&ann)).await;
    assert_eq!(rows.len(), 40);
    let url = format!("{}/v1/shape/digest?table=tasks&handle={handle}&offset={offset}", s.base);
    let r = send(http.get(&url).bearer_auth(&ann)).await;
    assert_eq!((r.status, r.body["digest"].as_str()), (200, Some(postgres_digest(&pg).await.to_string().as_str())));
    assert!(r.header("cache-control").unwrap().starts_with("private"), "{:?}", r.headers);

    let r = send(http.get(&url).bearer_auth(&bob)).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_ne!(r.header("electric-handle").as_deref(), Some(handle.as_str()));
    assert!(r.body.get("digest").is_none(), "{}", r.text);
    assert_eq!(send(http.get(&url)).await.status, 401);
    // A subquery may not read a table the caller may not read (one no rule opens: a 403, as
    // reading it directly would be).
    let sneaky = format!(
        "{}/v1/shape/digest?table=tasks&where={}&handle={handle}&offset={offset}",
        s.base,
        pct("team_id IN (SELECT team_id FROM secrets)")
    );
    assert_eq!(send(http.get(&sneaky).bearer_auth(&ann)).await.status, 403);
}

//! Relational shapes: a shape whose where clause has subqueries (`team_id IN (SELECT team_id
//! FROM team_members WHERE user_id = 'ann')`) follows the subqueries' results live. A value that
//! leaves a result is one `move-out` event, not a delete per row; one that enters is a `move-in`
//! event, the rows that match now (`is_move_in` inserts) and `snapshot-end`. Every change carries
//! `tags` and `active_conditions`. After each step the rows a tag-tracking client holds (the
//! test's `ShapeReader`, applying events as `@tanstack/electric-db-collection` does) equal what
//! Postgres answers to the same `SELECT … WHERE …`.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

const SCHEMA: &str = "
    CREATE TABLE teams (id int PRIMARY KEY, public boolean NOT NULL DEFAULT false);
    CREATE TABLE team_members (team_id int NOT NULL, user_id text NOT NULL, role text NOT NULL DEFAULT 'editor',
                               PRIMARY KEY (team_id, user_id));
    CREATE TABLE steps (id int PRIMARY KEY, team_id int NOT NULL, name text);
    INSERT INTO teams VALUES (1, false), (2, false), (3, false), (4, true);
    INSERT INTO team_members VALUES (1, 'ann', 'editor'), (2, 'bob', 'owner'), (3, 'bob', 'viewer');
    INSERT INTO steps SELECT i, 1 + i % 4, 'step ' || i FROM generate_series(1, 40) i;";

const ANNS_TEAMS: &str = "team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann')";

/// A cluster with [`SCHEMA`], a client of it and a server following it.
async fn with_schema() -> (TestDb, tokio_postgres::Client, TestServer) {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    (db, c, s)
}

async fn expect_rows(c: &tokio_postgres::Client, reader: &mut ShapeReader, where_sql: &str, context: &str) {
    let expected = oracle(c, "steps", &["id", "team_id", "name"], where_sql).await;
    reader.live_until(Duration::from_secs(20), |r| r.sorted_rows() == expected).await;
    assert_same_rows(&reader.sorted_rows(), &expected, context);
}

fn events<'a>(log: &'a [Value], kind: &str) -> Vec<&'a Value> {
    log.iter().filter(|m| m["headers"]["event"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_moves_rows_in_and_out_live() {
    let (_db, c, s) = with_schema().await;
    let mut ann = ShapeReader::new(&s.base, &[("table", "steps"), ("where", ANNS_TEAMS)]);
    ann.catch_up().await;
    assert_same_rows(
        &ann.sorted_rows(),
        &oracle(&c, "steps", &["id", "team_id", "name"], ANNS_TEAMS).await,
        "initial snapshot",
    );
    let first = ann.log.iter().find(|m| m["headers"]["operation"] == "insert").expect("rows");
    assert_eq!(first["headers"]["tags"].as_array().unwrap().len(), 1);
    assert_eq!(first["headers"]["active_conditions"], serde_json::json!([true]));

    // Ann joins team 2: its rows move in — one event, the rows, the snapshot they were read in.
    c.execute("INSERT INTO team_members VALUES (2, 'ann')", &[]).await.unwrap();
    expect_rows(&c, &mut ann, ANNS_TEAMS, "after joining team 2").await;
    let moved_in: Vec<&Value> = ann.log.iter().filter(|m| m["headers"]["is_move_in"] == true).collect();
    assert_eq!(moved_in.len(), 10, "team 2's ten steps");
    assert!(moved_in.iter().all(|m| m["headers"].get("lsn").is_none() && m["headers"].get("txids").is_none()));
    assert_eq!(events(&ann.log, "move-in").len(), 1);
    let start = ann.log.iter().position(|m| m["headers"]["event"] == "move-in").unwrap();
    let block = &ann.log[start..start + 12];
    assert!(block[1..11].iter().all(|m| m["headers"]["is_move_in"] == true));
    assert_eq!(block[11]["headers"]["control"], "snapshot-end");

    // New rows of her teams arrive as inserts with tags; a row re-parented out is deleted.
    c.batch_execute(
        "INSERT INTO steps VALUES (100, 2, 'new in 2'), (101, 3, 'not hers');
         UPDATE steps SET team_id = 3 WHERE id = 1;",
    )
    .await
    .unwrap();
    expect_rows(&c, &mut ann, ANNS_TEAMS, "after inserts and a re-parenting").await;

    // She leaves team 1: one move-out event with the transaction's id, no delete per row.
    let deletes_before = ann.log.iter().filter(|m| m["headers"]["operation"] == "delete").count();
    c.execute("DELETE FROM team_members WHERE team_id = 1 AND user_id = 'ann'", &[]).await.unwrap();
    expect_rows(&c, &mut ann, ANNS_TEAMS, "after leaving team 1").await;
    let outs = events(&ann.log, "move-out");
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0]["headers"]["patterns"].as_array().unwrap().len(), 1);
    assert!(outs[0]["headers"]["txids"][0].as_u64().is_some());
    assert_eq!(ann.log.iter().filter(|m| m["headers"]["operation"] == "delete").count(), deletes_before);

    // Joined and left inside one transaction: nothing moves. Then a membership of someone
    // else's changes nothing for her.
    let before = ann.log.len();
    c.batch_execute(
        "BEGIN; INSERT INTO team_members VALUES (3, 'ann'); DELETE FROM team_members WHERE team_id = 3 AND user_id = 'ann'; COMMIT;
         INSERT INTO team_members VALUES (1, 'bob');
         UPDATE steps SET name = 'renamed' WHERE id = 5;",
    )
    .await
    .unwrap();
    expect_rows(&c, &mut ann, ANNS_TEAMS, "after a toggle inside one transaction").await;
    let since: Vec<&Value> = ann.log[before..].iter().filter(|m| m["headers"]["control"].is_null()).collect();
    assert_eq!(since.len(), 1, "only the rename of step 5: {since:?}");

    // Re-joining in the same transaction as rows are added to the team and a row moves in:
    // everything arrives once.
    c.batch_execute(
        "BEGIN; INSERT INTO steps VALUES (102, 1, 'added with the join'); INSERT INTO team_members VALUES (1, 'ann');
         UPDATE steps SET team_id = 1 WHERE id = 101; COMMIT;",
    )
    .await
    .unwrap();
    expect_rows(&c, &mut ann, ANNS_TEAMS, "after re-joining team 1").await;
}

/// Positions and disjuncts: a row in the shape through one condition stays when another one
/// moves out, and goes when none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_stays_while_another_condition_holds() {
    let (_db, c, s) = with_schema().await;
    let clause = "team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann') OR name LIKE '%shared%' \
                  OR team_id IN (SELECT id FROM teams WHERE public)";
    let mut ann = ShapeReader::new(&s.base, &[("table", "steps"), ("where", clause)]);
    ann.catch_up().await;
    assert_same_rows(&ann.sorted_rows(), &oracle(&c, "steps", &["id", "team_id", "name"], clause).await, "snapshot");
    let tagged = ann.log.iter().find(|m| m["headers"]["operation"] == "insert").unwrap();
    assert_eq!(tagged["headers"]["tags"].as_array().unwrap().len(), 3, "one tag per disjunct");

    c.batch_execute("UPDATE steps SET name = 'shared 5' WHERE id = 5; UPDATE teams SET public = true WHERE id = 3;")
        .await
        .unwrap();
    expect_rows(&c, &mut ann, clause, "a step shared, team 3 made public").await;
    c.batch_execute(
        "DELETE FROM team_members WHERE user_id = 'ann'; UPDATE teams SET public = false WHERE id = 4;
         UPDATE steps SET name = 'private' WHERE id = 9;",
    )
    .await
    .unwrap();
    expect_rows(&c, &mut ann, clause, "ann removed, team 4 private").await;
    c.batch_execute("UPDATE teams SET public = false; INSERT INTO team_members VALUES (2, 'ann')").await.unwrap();
    expect_rows(&c, &mut ann, clause, "only team 2 and shared steps").await;
    c.batch_execute("TRUNCATE team_members").await.unwrap();
    expect_rows(&c, &mut ann, clause, "memberships truncated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_subqueries_are_refused_with_a_reason() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    c.batch_execute("CREATE TABLE loose (team_id int)").await.unwrap();
    let s = TestServer::start(&db).await;
    let refused = |clause: &'static str, needle: &'static str| {
        let base = s.base.clone();
        async move {
            let r = read_shape(&base, None, &[("table", "steps"), ("where", clause)]).await.unwrap_err();
            assert_eq!(r.0, 400, "{clause}: {}", r.1);
            assert!(r.1.contains(needle), "{clause}: {}", r.1);
        }
    };
    refused("team_id IN (SELECT team_id FROM nowhere)", "does not exist").await;
    refused("team_id IN (SELECT team_id FROM team_members WHERE nope = 1)", "nope").await;
    refused("team_id IN (SELECT team_id FROM loose)", "no primary key").await;
    refused("team_id IN (SELECT team_id FROM ferrite.client_results)", "schema clients cannot read").await;
    refused("team_id IN (SELECT team_id FROM team_members GROUP BY team_id)", "GROUP BY").await;
    refused("(team_id IN (SELECT team_id FROM team_members)) IS NOT TRUE", "condition of its own").await;
    refused("name NOT IN (SELECT user_id FROM team_members)", "NOT EXISTS").await;
}

const SECRET: &str = "relational-secret-0123456789abcdef-0123456";
/// The example's read rule: a step is readable while its reader is a member of its team.
const MEMBER_OF_TEAM: &str = "team_id IN (SELECT team_id FROM team_members WHERE user_id = claims.sub)";

async fn jwt_server(db: &TestDb) -> TestServer {
    use ferrite_server::config::TableConfig;
    TestServer::start_with(db, |c| {
        c.auth.mode = ferrite_server::config::AuthMode::Jwt;
        c.auth.secret = Some(SECRET.into());
        c.tables.insert("steps".into(), TableConfig { read: Some(MEMBER_OF_TEAM.into()), ..Default::default() });
        c.tables.insert(
            "team_members".into(),
            TableConfig { read: Some("user_id = claims.sub".into()), ..Default::default() },
        );
    })
    .await
}

/// A read rule with a subquery makes every shape on the table relational: removing a member
/// moves the team's rows out of their live shapes without a new token, adding one moves them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_rules_follow_membership_live() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = jwt_server(&db).await;
    let token = hs256_token(SECRET, serde_json::json!({"sub": "ann"}));
    let mut ann = ShapeReader::new(&s.base, &[("table", "steps")]).with_token(&token);
    ann.catch_up().await;
    let hers = "team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann')";
    assert_same_rows(&ann.sorted_rows(), &oracle(&c, "steps", &["id", "team_id", "name"], hers).await, "snapshot");
    assert_eq!(ann.rows.len(), 10);

    // Removed from team 1: its rows leave her live shape within a second, same token.
    c.execute("DELETE FROM team_members WHERE user_id = 'ann'", &[]).await.unwrap();
    let started = std::time::Instant::now();
    ann.live_until(Duration::from_secs(5), |r| r.rows.is_empty()).await;
    assert!(started.elapsed() < Duration::from_secs(1), "moved out after {:?}", started.elapsed());
    assert_eq!(events(&ann.log, "move-out").len(), 1);

    // Added to team 2: its rows move in.
    c.execute("INSERT INTO team_members VALUES (2, 'ann', 'viewer')", &[]).await.unwrap();
    expect_rows(&c, &mut ann, hers, "after being added to team 2").await;
    assert_eq!(ann.rows.len(), 10);
}

/// A client's subquery reads the inner table only as far as the caller's read rule on it lets
/// it: another user's memberships cannot be probed, and a table without a read rule cannot be
/// named at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subqueries_cannot_probe_what_the_caller_cannot_read() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    c.execute("INSERT INTO team_members VALUES (2, 'ann')", &[]).await.unwrap();
    let s = jwt_server(&db).await;
    let token = hs256_token(SECRET, serde_json::json!({"sub": "ann"}));
    // Bob is in team 2, and ann may read team 2's steps; but she may not read bob's membership
    // rows, so asking for the steps of bob's teams gives her nothing.
    let bobs = "team_id IN (SELECT team_id FROM team_members WHERE user_id = 'bob')";
    let rows = read_shape(&s.base, Some(&token), &[("table", "steps"), ("where", bobs)]).await.unwrap();
    assert!(rows.is_empty(), "{rows:?}");
    let own = "team_id IN (SELECT team_id FROM team_members WHERE role = 'editor')";
    let rows = read_shape(&s.base, Some(&token), &[("table", "steps"), ("where", own)]).await.unwrap();
    assert_eq!(rows.len(), 20, "her own memberships (teams 1 and 2) are hers to use");
    let probe = "team_id IN (SELECT id FROM teams)";
    let (status, body) = read_shape(&s.base, Some(&token), &[("table", "steps"), ("where", probe)]).await.unwrap_err();
    assert_eq!(status, 403, "{body}");
    let (status, _) =
        read_shape(&s.base, Some(&token), &[("table", "steps"), ("where", "team_id IN (SELECT id FROM nothing_here)")])
            .await
            .unwrap_err();
    assert_eq!(status, 403, "a table that does not exist is refused like one that may not be read");
}

/// The seams of a move-in: its query is held up (another session holds a lock on a table it
/// reads) while hundreds of transactions arrive, one of them open since before its snapshot (a
/// non-empty xip list); they wait in the shape's queue and are spliced in by visibility in the
/// move-in's snapshot. The client never has to start over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_move_in_splices_with_the_transactions_that_arrive_meanwhile() {
    let (db, c, s) = with_schema().await;
    let clause = "team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann') \
                  OR team_id IN (SELECT id FROM teams WHERE public)";
    let mut ann = ShapeReader::new(&s.base, &[("table", "steps"), ("where", clause)]);
    ann.catch_up().await;

    // A session opens a transaction that writes a row of team 2 and holds `teams`.
    let mut holder = db.client().await;
    let open = holder.transaction().await.unwrap();
    open.execute("INSERT INTO steps VALUES (500, 2, 'written while the move-in reads')", &[]).await.unwrap();
    open.batch_execute("LOCK TABLE teams IN ACCESS EXCLUSIVE MODE").await.unwrap();

    // Ann joins team 2: the move-in's query takes its snapshot, then waits for the lock.
    c.execute("INSERT INTO team_members VALUES (2, 'ann')", &[]).await.unwrap();
    wait_until("the move-in query waits for the lock", Duration::from_secs(20), || async {
        let waiting: i64 = c.query_one("SELECT count(*) FROM pg_locks WHERE NOT granted", &[]).await.unwrap().get(0);
        waiting > 0
    })
    .await;

    // Meanwhile: renames, inserts and deletes in team 2, a re-parenting into it, ann joining
    // and leaving team 3, a team made public and private again.
    for i in 0..200 {
        let sql = match i % 8 {
            0 => format!("UPDATE steps SET name = 'renamed {i}' WHERE team_id = 2 AND id % 3 = {}", i % 3),
            1 => format!("INSERT INTO steps VALUES ({}, 2, 'added {i}')", 1000 + i),
            2 => format!("DELETE FROM steps WHERE id = {}", 1000 + i - 1),
            3 => format!("UPDATE steps SET team_id = 2 WHERE id = {}", 3 + 4 * (i / 8 % 10)),
            4 => "INSERT INTO team_members VALUES (3, 'ann') ON CONFLICT DO NOTHING".to_string(),
            5 => format!("UPDATE steps SET name = 'in 3: {i}' WHERE team_id = 3 AND id % 5 = {}", i % 5),
            6 => "DELETE FROM team_members WHERE team_id = 3 AND user_id = 'ann'".to_string(),
            _ => format!("UPDATE steps SET team_id = 4 WHERE id = {}", 1000 + i - 6),
        };
        c.batch_execute(&sql).await.unwrap();
    }
    let health = |base: String| async move { get(&format!("{base}/v1/health")).await.body };
    wait_until("the transactions wait in the shape's queue", Duration::from_secs(20), || {
        let h = health(s.base.clone());
        async move {
            let h = h.await;
            h["relational"]["moving_in"] == 1 && h["relational"]["queued_transactions"].as_u64().unwrap_or(0) >= 150
        }
    })
    .await;
    open.commit().await.unwrap();

    expect_rows(&c, &mut ann, clause, "after the move-in and everything that arrived meanwhile").await;
    assert_eq!(ann.refetches, 0, "a long move-in never makes clients start over");
    let h = health(s.base.clone()).await;
    assert_eq!(h["relational"]["queued_transactions"], 0, "{h}");
    // More moves after the splice still work.
    c.batch_execute("UPDATE teams SET public = true WHERE id = 1; DELETE FROM team_members WHERE user_id = 'ann'")
        .await
        .unwrap();
    expect_rows(&c, &mut ann, clause, "after later moves").await;
}

/// Relational shapes survive `kill -9`: their subqueries' results, what their clients were
/// given and the transactions queued during a move-in are checkpointed before the log moves on,
/// so after a restart clients go on from their handle and offset — no refetch — through steady
/// churn and through a crash in the middle of a move-in (which is read again on start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relational_shapes_survive_kill_9_during_churn_and_move_ins() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&db.url, dir.path(), port);
    wait_healthy(&base).await;
    let with_public = "team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann') \
                       OR team_id IN (SELECT id FROM teams WHERE public)";
    let clauses = [ANNS_TEAMS, with_public];
    let mut readers: Vec<ShapeReader> =
        clauses.iter().map(|w| ShapeReader::new(&base, &[("table", "steps"), ("where", w)])).collect();
    for r in readers.iter_mut() {
        r.catch_up().await;
    }

    // Churn: ann joins and leaves teams, steps are renamed and re-parented.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (url, stop, committed) = (db.url.clone(), stop.clone(), committed.clone());
        tokio::spawn(async move {
            let c = ferrite_pg::connect::connect(&url).await.unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let team = 1 + i % 3;
                let sql = match i % 4 {
                    0 => format!("INSERT INTO team_members VALUES ({team}, 'ann') ON CONFLICT DO NOTHING"),
                    1 => format!("UPDATE steps SET name = 'n{i}' WHERE id % 7 = {}", i % 7),
                    2 => format!("DELETE FROM team_members WHERE team_id = {team} AND user_id = 'ann'"),
                    _ => format!("UPDATE steps SET team_id = {team} WHERE id = {}", 1 + i % 40),
                };
                c.batch_execute(&sql).await.unwrap();
                committed.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let writes_after = |n: u64| {
        let committed = committed.clone();
        async move {
            let target = committed.load(Ordering::Relaxed) + n;
            wait_until("more writes", Duration::from_secs(30), || {
                let done = committed.load(Ordering::Relaxed) >= target;
                async move { done }
            })
            .await;
        }
    };

    // 1. Killed while following the churn live.
    for _ in 0..10 {
        for r in readers.iter_mut() {
            r.step(true).await;
        }
    }
    server.kill_9();
    writes_after(20).await;
    server = spawn_server(&db.url, dir.path(), port);
    wait_healthy(&base).await;
    for r in readers.iter_mut() {
        r.step(false).await;
    }

    // 2. Killed during a move-in: a session holds `teams`, which the second shape's move-ins
    // read, so its move-in for team 1 waits while the churn's transactions queue behind it.
    let mut holder = db.client().await;
    let lock = holder.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE teams IN ACCESS EXCLUSIVE MODE").await.unwrap();
    c.execute("DELETE FROM team_members WHERE team_id = 1 AND user_id = 'ann'", &[]).await.unwrap();
    c.execute("INSERT INTO team_members VALUES (1, 'ann') ON CONFLICT DO NOTHING", &[]).await.unwrap();
    wait_until("a move-in waits for the lock", Duration::from_secs(20), || async {
        get(&format!("{base}/v1/health")).await.body["relational"]["moving_in"].as_u64().unwrap_or(0) > 0
    })
    .await;
    writes_after(10).await;
    server.kill_9();
    writes_after(10).await;
    server = spawn_server(&db.url, dir.path(), port);
    wait_healthy(&base).await;
    lock.commit().await.unwrap();

    writes_after(20).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    for (r, w) in readers.iter_mut().zip(clauses) {
        let expected = oracle(&c, "steps", &["id", "team_id", "name"], w).await;
        r.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
        assert_same_rows(&r.sorted_rows(), &expected, &format!("after the crashes: {w}"));
        assert_eq!(r.refetches, 0, "{w}: resumed from its offset without a refetch");
    }
    drop(server);
}

/// Presence rooms follow the same read rule: a member of the step's team may join its room, a
/// removed member's next heartbeat is refused and takes her out of the room at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_membership() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    c.execute("INSERT INTO team_members VALUES (1, 'cid')", &[]).await.unwrap();
    let s = jwt_server(&db).await;
    let token = |sub: &str| hs256_token(SECRET, serde_json::json!({"sub": sub}));
    let heartbeat = |sub: &'static str| {
        let (base, t) = (s.base.clone(), token(sub));
        async move {
            let req = reqwest::Client::new()
                .post(format!("{base}/v1/presence"))
                .bearer_auth(t)
                .json(&serde_json::json!({"room": "steps:4", "client_id": format!("{sub}-tab"), "state": {"x": 1}}));
            send(req).await
        }
    };
    let members = || {
        let (base, t) = (s.base.clone(), token("cid"));
        async move {
            let r = send(reqwest::Client::new().get(format!("{base}/v1/presence?room=steps:4")).bearer_auth(t)).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let mut subs: Vec<String> = r.body["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["subject"].as_str().unwrap().to_string())
                .collect();
            subs.sort();
            subs
        }
    };
    assert_eq!(heartbeat("ann").await.status, 200);
    assert_eq!(heartbeat("cid").await.status, 200);
    assert_eq!(heartbeat("bob").await.status, 403, "bob is not in team 1");
    assert_eq!(members().await, vec!["ann", "cid"]);

    c.execute("DELETE FROM team_members WHERE user_id = 'ann'", &[]).await.unwrap();
    let refused = heartbeat("ann").await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(members().await, vec!["cid"], "her refused heartbeat took her out of the room");
}

/// A change of the shapes' table reaches only the relational shapes whose subquery results
/// hold (or are owed) its row's value: with 40 members each following their own team, a step
/// update is handed to one shape, not to all 40.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_only_the_shapes_whose_results_hold_their_value() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE team_members (team_id int NOT NULL, user_id text NOT NULL, PRIMARY KEY (team_id, user_id));
         CREATE TABLE steps (id int PRIMARY KEY, team_id int NOT NULL, name text);
         INSERT INTO team_members SELECT g, 'u' || g FROM generate_series(1, 40) g;
         INSERT INTO steps SELECT g, g, 'step ' || g FROM generate_series(1, 40) g;",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await;
    let clause = |u: usize| format!("team_id IN (SELECT team_id FROM team_members WHERE user_id = 'u{u}')");
    let mut readers = vec![];
    for u in 1..=40 {
        let mut r = ShapeReader::new(&s.base, &[("table", "steps"), ("where", &clause(u))]);
        r.catch_up().await;
        assert_eq!(r.rows.len(), 1);
        readers.push(r);
    }
    let offers = || async {
        let m = get(&format!("{}/metrics", s.base)).await.text;
        m.lines()
            .find_map(|l| l.strip_prefix("ferrite_relational_offers_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = offers().await;
    c.execute("UPDATE steps SET name = 'renamed' WHERE id = 7", &[]).await.unwrap();
    let r = &mut readers[6];
    r.live_until(Duration::from_secs(10), |r| r.rows.values().any(|v| v["name"] == "renamed")).await;
    assert_eq!(offers().await - before, 1, "only u7's shape is handed the update");
    // A step moved into another team reaches the shapes of both (one loses it, one gains it).
    c.execute("UPDATE steps SET team_id = 8 WHERE id = 7", &[]).await.unwrap();
    readers[7].live_until(Duration::from_secs(10), |r| r.rows.len() == 2).await;
    readers[6].live_until(Duration::from_secs(10), |r| r.rows.is_empty()).await;
    assert_eq!(offers().await - before, 3);
}

/// One dependency node per distinct subquery, shared: several shapes asking the same subquery
/// (with different outer filters) make one node, fed each change of its table once; a change of
/// the table that leaves the result as it was reaches no shape; the node goes with the last
/// shape using it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_asking_the_same_subquery_share_one_node() {
    let (_db, c, s) = with_schema().await;
    let gauge = |name: &'static str| {
        let base = s.base.clone();
        async move {
            let m = get(&format!("{base}/metrics")).await.text;
            m.lines()
                .find_map(|l| l.strip_prefix(&format!("ferrite_{name} ")))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} in {m}"))
        }
    };
    let wheres: Vec<String> =
        ["id % 8 = 0", "id % 8 = 4", "id > 20"].iter().map(|w| format!("{ANNS_TEAMS} AND {w}")).collect();
    let mut readers = vec![];
    for w in &wheres {
        let mut r = ShapeReader::new(&s.base, &[("table", "steps"), ("where", w)]);
        r.catch_up().await;
        readers.push(r);
    }
    assert!(readers.iter().all(|r| !r.rows.is_empty()));
    assert_eq!(gauge("relational_shapes").await, 3);
    assert_eq!(gauge("dependency_nodes").await, 1, "three shapes, one subquery, one node");
    let nodes_dir = s.dir.path().join("shapes").join("_nodes");
    assert_eq!(std::fs::read_dir(&nodes_dir).unwrap().count(), 1, "the node's state is stored");

    // A change of the inner table that does not change the result reaches no shape.
    let offers = gauge("relational_offers_total").await;
    c.execute("UPDATE team_members SET role = 'owner' WHERE user_id = 'ann'", &[]).await.unwrap();
    c.execute("UPDATE steps SET name = 'marker' WHERE id = 4", &[]).await.unwrap();
    readers[1].live_until(Duration::from_secs(10), |r| r.rows.values().any(|v| v["name"] == "marker")).await;
    // The marker reaches the three shapes holding team 1 (each judges its own predicate); the
    // role change none.
    assert_eq!(gauge("relational_offers_total").await - offers, 3, "the role change was offered to no shape");

    // A membership change moves rows in every shape, from the one node's delta.
    c.execute("INSERT INTO team_members VALUES (2, 'ann')", &[]).await.unwrap();
    for (r, w) in readers.iter_mut().zip(&wheres) {
        expect_rows(&c, r, w, "ann joined team 2").await;
    }
    c.execute("DELETE FROM team_members WHERE team_id = 1 AND user_id = 'ann'", &[]).await.unwrap();
    for (r, w) in readers.iter_mut().zip(&wheres) {
        expect_rows(&c, r, w, "ann left team 1").await;
    }

    // The node stays while a shape uses it, and goes with the last.
    let handles: Vec<String> = readers.iter().map(|r| r.handle.clone().unwrap()).collect();
    for (i, h) in handles.iter().enumerate() {
        let url = format!("{}/v1/shape?handle={h}", s.base);
        let status = reqwest::Client::new().delete(&url).send().await.unwrap().status();
        assert!(status.is_success(), "{status}");
        let left = if i + 1 < handles.len() { 1 } else { 0 };
        wait_until("the node to follow its shapes", Duration::from_secs(10), || {
            let g = gauge("dependency_nodes");
            async move { g.await == left }
        })
        .await;
    }
    assert_eq!(std::fs::read_dir(&nodes_dir).unwrap().count(), 0, "its stored state is gone too");
}

/// Nested subqueries: steps through their pipeline through its team's memberships. A change at
/// any level — a membership, a pipeline moved to another team, a step moved to another pipeline
/// — moves rows in or out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_subqueries_follow_every_level() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE team_members (team_id int NOT NULL, user_id text NOT NULL, PRIMARY KEY (team_id, user_id));
         CREATE TABLE pipelines (id int PRIMARY KEY, team_id int NOT NULL, archived boolean NOT NULL DEFAULT false);
         CREATE TABLE steps (id int PRIMARY KEY, pipeline_id int NOT NULL, name text);
         INSERT INTO team_members VALUES (1, 'ann'), (2, 'bob');
         INSERT INTO pipelines SELECT g, 1 + g % 3 FROM generate_series(1, 9) g;
         INSERT INTO steps SELECT g, 1 + g % 9, 'step ' || g FROM generate_series(1, 90) g;",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await;
    let clause = "pipeline_id IN (SELECT id FROM pipelines WHERE NOT archived AND team_id IN \
                  (SELECT team_id FROM team_members WHERE user_id = 'ann'))";
    let mut ann = ShapeReader::new(&s.base, &[("table", "steps"), ("where", clause)]);
    ann.catch_up().await;
    let expect = |what: &'static str| {
        let c = &c;
        async move { (oracle(c, "steps", &["id", "pipeline_id", "name"], clause).await, what) }
    };
    let (e, _) = expect("snapshot").await;
    assert_same_rows(&ann.sorted_rows(), &e, "snapshot");
    assert_eq!(ann.rows.len(), 30);
    for (sql, what) in [
        ("INSERT INTO team_members VALUES (2, 'ann')", "ann joins team 2"),
        ("UPDATE pipelines SET team_id = 3 WHERE id = 1", "a pipeline of team 2 moves to team 3"),
        ("UPDATE pipelines SET archived = true WHERE id = 3", "a pipeline archived"),
        ("UPDATE steps SET pipeline_id = 1 WHERE id = 5", "a step moved to the pipeline now in team 3"),
        ("DELETE FROM team_members WHERE team_id = 1 AND user_id = 'ann'", "ann leaves team 1"),
        (
            "BEGIN; INSERT INTO team_members VALUES (3, 'ann'); UPDATE pipelines SET team_id = 2 WHERE id = 2; COMMIT",
            "joins team 3, a pipeline moves",
        ),
        ("DELETE FROM pipelines WHERE id = 4", "a pipeline deleted"),
        (
            "INSERT INTO steps VALUES (500, 2, 'new'); UPDATE pipelines SET archived = false",
            "a step added, pipelines unarchived",
        ),
        ("TRUNCATE team_members", "memberships truncated"),
        ("INSERT INTO team_members VALUES (1, 'ann'), (2, 'ann')", "ann back in two teams"),
    ] {
        c.batch_execute(sql).await.unwrap();
        let (e, what) = expect(what).await;
        ann.live_until(Duration::from_secs(20), |r| r.sorted_rows() == e).await;
        assert_same_rows(&ann.sorted_rows(), &e, what);
    }
    assert_eq!(ann.refetches, 0);
}

/// The normalised example's rules: steps are readable through their pipeline, pipelines through
/// their team's memberships. A client's subquery on `pipelines` is held to the pipelines' own
/// rule (which reads `team_members`), and everything follows a membership change live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_rules_through_two_levels_follow_membership() {
    use ferrite_server::config::TableConfig;
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE team_members (team_id int NOT NULL, user_id text NOT NULL, PRIMARY KEY (team_id, user_id));
         CREATE TABLE pipelines (id int PRIMARY KEY, team_id int NOT NULL);
         CREATE TABLE steps (id int PRIMARY KEY, pipeline_id int NOT NULL, name text);
         INSERT INTO team_members VALUES (1, 'ann'), (2, 'bob');
         INSERT INTO pipelines VALUES (1, 1), (2, 1), (3, 2);
         INSERT INTO steps SELECT g, 1 + g % 3, 'step ' || g FROM generate_series(1, 30) g;",
    )
    .await
    .unwrap();
    let team = "team_id IN (SELECT team_id FROM team_members WHERE user_id = claims.sub)";
    let through_pipeline =
        "pipeline_id IN (SELECT id FROM pipelines WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = claims.sub))";
    let s = TestServer::start_with(&db, |cfg| {
        cfg.auth.mode = ferrite_server::config::AuthMode::Jwt;
        cfg.auth.secret = Some(SECRET.into());
        cfg.tables.insert("pipelines".into(), TableConfig { read: Some(team.into()), ..Default::default() });
        cfg.tables.insert("steps".into(), TableConfig { read: Some(through_pipeline.into()), ..Default::default() });
    })
    .await;
    let token = hs256_token(SECRET, serde_json::json!({"sub": "ann"}));
    // Her steps, and (her client's own where) the steps of pipeline 3 — bob's team's, so none.
    let mut all = ShapeReader::new(&s.base, &[("table", "steps")]).with_token(&token);
    let mut third = ShapeReader::new(
        &s.base,
        &[("table", "steps"), ("where", "pipeline_id IN (SELECT id FROM pipelines WHERE id = 3)")],
    )
    .with_token(&token);
    all.catch_up().await;
    third.catch_up().await;
    assert_eq!(all.rows.len(), 20);
    assert!(third.rows.is_empty(), "pipeline 3 is not hers");
    // She joins team 2: pipeline 3's steps move into both shapes.
    c.execute("INSERT INTO team_members VALUES (2, 'ann')", &[]).await.unwrap();
    all.live_until(Duration::from_secs(10), |r| r.rows.len() == 30).await;
    third.live_until(Duration::from_secs(10), |r| r.rows.len() == 10).await;
    // Pipeline 1 moves to a team she is not in: its steps move out of her shape.
    c.execute("UPDATE pipelines SET team_id = 9 WHERE id = 1", &[]).await.unwrap();
    all.live_until(Duration::from_secs(10), |r| r.rows.len() == 20).await;
    assert_eq!(all.refetches + third.refetches, 0);
}

/// Everything a relational shape sends — move events, moved-in rows, snapshot-ends — is
/// appended at offsets like any change, so a catch-up response for a (handle, offset) never
/// changes: fetched again after more moves, it is byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_responses_never_change() {
    let (_db, c, s) = with_schema().await;
    let mut ann = ShapeReader::new(&s.base, &[("table", "steps"), ("where", ANNS_TEAMS)]);
    ann.catch_up().await;
    let handle = ann.handle.clone().unwrap();
    let mut offsets = vec![ann.offset.clone()];
    for sql in [
        "INSERT INTO team_members VALUES (2, 'ann')",
        "UPDATE steps SET name = 'x' WHERE team_id = 2",
        "DELETE FROM team_members WHERE team_id = 1",
        "INSERT INTO team_members VALUES (3, 'ann'), (1, 'ann')",
    ] {
        c.batch_execute(sql).await.unwrap();
        let expected = oracle(&c, "steps", &["id", "team_id", "name"], ANNS_TEAMS).await;
        ann.live_until(Duration::from_secs(20), |r| r.sorted_rows() == expected).await;
        offsets.push(ann.offset.clone());
    }
    let url = |offset: &str| {
        format!(
            "{}?{}",
            s.shape_url(),
            form_urlencoded_serialize(&[
                ("table".into(), "steps".into()),
                ("where".into(), ANNS_TEAMS.into()),
                ("handle".into(), handle.clone()),
                ("offset".into(), offset.into()),
            ])
        )
    };
    // The entries a response carries, without its trailing up-to-date: a response that ended
    // at the head carried one then; once the head has moved, the same entries are served without
    // it (see docs/http-protocol.md, Caching).
    let entries = |r: &Resp| -> (Vec<Value>, Option<String>) {
        let msgs =
            r.body.as_array().unwrap().iter().filter(|m| m["headers"]["control"] != "up-to-date").cloned().collect();
        (msgs, r.header("electric-offset"))
    };
    let mut first = vec![];
    for o in &offsets[..offsets.len() - 1] {
        let r = get(&url(o)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        first.push(entries(&r));
    }
    assert!(first.iter().any(|(m, _)| m.iter().any(|m| m["headers"]["event"] == "move-out")));
    assert!(first.iter().any(|(m, _)| m.iter().any(|m| m["headers"]["is_move_in"] == true)));
    // More moves, then the same requests again.
    c.batch_execute("DELETE FROM team_members WHERE user_id = 'ann'; INSERT INTO team_members VALUES (2, 'ann')")
        .await
        .unwrap();
    ann.live_until(Duration::from_secs(20), |r| r.rows.len() == 10).await;
    for (o, before) in offsets[..offsets.len() - 1].iter().zip(&first) {
        assert_eq!(&entries(&get(&url(o)).await), before, "offset {o}");
    }
}

/// POST requests take the same where clauses (the definition in the query string); a subset
/// (a POST body) of a relational shape is refused, naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_requests_take_subqueries_and_refuse_subsets() {
    let (_db, _c, s) = with_schema().await;
    let url = format!(
        "{}?{}",
        s.shape_url(),
        form_urlencoded_serialize(&[
            ("table".into(), "steps".into()),
            ("where".into(), ANNS_TEAMS.into()),
            ("offset".into(), "-1".into())
        ])
    );
    let r = send(reqwest::Client::new().post(&url)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rows = r.body.as_array().unwrap().iter().filter(|m| m["headers"]["operation"] == "insert").count();
    assert_eq!(rows, 10);
    let handle = r.header("electric-handle").unwrap();
    let subset = send(
        reqwest::Client::new()
            .post(format!("{url}&handle={handle}&offset=0_inf"))
            .json(&serde_json::json!({"where": "id < 5", "order_by": "id"})),
    )
    .await;
    assert_eq!(subset.status, 400, "{}", subset.text);
    assert!(subset.text.contains("subsets of shapes whose where clause has subqueries"), "{}", subset.text);
}

/// A subquery on the shape's own table (a tree): the parents of starred nodes, and the leaves.
/// Every change of the table may move other rows of it in or out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subqueries_on_the_shapes_own_table() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE nodes (id int PRIMARY KEY, parent_id int, starred boolean NOT NULL DEFAULT false);
         INSERT INTO nodes SELECT g, CASE WHEN g > 1 THEN g / 2 END, g % 5 = 0 FROM generate_series(1, 31) g;",
    )
    .await
    .unwrap();
    let s = TestServer::start(&db).await;
    let parents = "id IN (SELECT parent_id FROM nodes WHERE starred)";
    let leaves = "NOT EXISTS (SELECT 1 FROM nodes c WHERE c.parent_id = nodes.id)";
    let mut readers: Vec<(&str, ShapeReader)> = [parents, leaves]
        .iter()
        .map(|w| (*w, ShapeReader::new(&s.base, &[("table", "nodes"), ("where", w)])))
        .collect();
    for (_, r) in readers.iter_mut() {
        r.catch_up().await;
    }
    for sql in [
        "UPDATE nodes SET starred = true WHERE id = 7",
        "UPDATE nodes SET starred = false WHERE id IN (10, 20)",
        "INSERT INTO nodes VALUES (40, 31, true)",
        "UPDATE nodes SET parent_id = 3 WHERE id = 40",
        "DELETE FROM nodes WHERE id IN (14, 15)",
        "BEGIN; UPDATE nodes SET starred = true WHERE id = 30; UPDATE nodes SET parent_id = NULL WHERE id = 30; COMMIT",
    ] {
        c.batch_execute(sql).await.unwrap();
        for (w, r) in readers.iter_mut() {
            let expected = oracle(&c, "nodes", &["id", "parent_id", "starred"], w).await;
            r.live_until(Duration::from_secs(20), |r| r.sorted_rows() == expected).await;
            assert_same_rows(&r.sorted_rows(), &expected, &format!("{w} after {sql}"));
        }
    }
}

/// A dependency node's stored state follows every change of its rows, not only those that
/// change its result: a second membership row giving a value already in the result, then a
/// restart, then the first row deleted — the value is still in, and no row moves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_remembers_rows_that_changed_nothing_across_a_restart() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let editors = "team_id IN (SELECT team_id FROM team_members WHERE role = 'editor')";
    let start = || ferrite_server::start_with_clock(test_config(&db.url, dir.path()), ferrite_server::Clock::system());
    let server = start().await.unwrap();
    wait_healthy(&server.url()).await;
    let mut reader = ShapeReader::new(&server.url(), &[("table", "steps"), ("where", editors)]);
    reader.catch_up().await;
    expect_rows(&c, &mut reader, editors, "initial").await;
    // Team 1 has an editor already (ann): another one changes the result not at all.
    c.execute("INSERT INTO team_members VALUES (1, 'dora', 'editor')", &[]).await.unwrap();
    c.execute("UPDATE steps SET name = 'marker' WHERE id = 4", &[]).await.unwrap();
    expect_rows(&c, &mut reader, editors, "after the second editor").await;
    // The slot is confirmed past dora's row: a restart will not replay it.
    let lsn: String = c.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
    wait_until("the slot to be confirmed past the second editor", Duration::from_secs(30), || {
        let (c, lsn) = (&c, lsn.clone());
        async move {
            let sql = "SELECT bool_and(confirmed_flush_lsn >= $1::text::pg_lsn) FROM pg_replication_slots                        WHERE database = current_database()";
            c.query_one(sql, &[&lsn]).await.unwrap().get::<_, Option<bool>>(0).unwrap_or(false)
        }
    })
    .await;
    server.shutdown().await;

    let server = start().await.unwrap();
    wait_healthy(&server.url()).await;
    reader.base = format!("{}/v1/shape", server.url());
    // Ann leaves: dora still makes team 1 an editors' team.
    c.execute("DELETE FROM team_members WHERE team_id = 1 AND user_id = 'ann'", &[]).await.unwrap();
    c.execute("UPDATE steps SET name = 'marker 2' WHERE id = 4", &[]).await.unwrap();
    expect_rows(&c, &mut reader, editors, "after a restart and ann leaving").await;
    assert!(reader.rows.values().any(|r| r["team_id"] == "1"), "team 1's steps stayed");
    assert_eq!(reader.refetches, 0);
    server.shutdown().await;
}

//! Time windows: shapes and read rules that compare rows with the current time
//! (`created_at > now() - interval '30 days'`). The server's clock is a test's manual clock: a
//! month passes at once, and after each step the shape's rows equal what Postgres selects with
//! `now()` replaced by the server's time — rows leave as they age out and enter when their time
//! comes, while the stream goes on, across a restart, and together with a membership rule.

use crate::common::*;
use ferrite_server::ManualClock;
use std::time::{Duration, SystemTime};

const SCHEMA: &str = "
    SET TimeZone = 'UTC';
    CREATE TABLE team_members (team_id int NOT NULL, user_id text NOT NULL, PRIMARY KEY (team_id, user_id));
    CREATE TABLE events (id int PRIMARY KEY, team_id int NOT NULL, created_at timestamptz NOT NULL, day date);
    CREATE INDEX ON events (created_at);
    INSERT INTO team_members VALUES (1, 'ann'), (2, 'bob');";

const COLS: &[&str] = &["id", "team_id", "created_at", "day"];

/// A timestamptz literal for instant `t`, as Postgres reads it.
fn lit(t: SystemTime) -> String {
    let micros = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_micros();
    format!("to_timestamp({}::numeric / 1000000)", micros)
}

/// `where_sql` with the current time being `t`: what the shape must hold when the server's
/// clock reads `t`.
fn at(where_sql: &str, t: SystemTime) -> String {
    where_sql.replace("now()", &lit(t)).replace("CURRENT_DATE", &format!("({}::date)", lit(t)))
}

/// Rows created `hours` (may be negative) after `t` minus 30 days, on that day, one per entry,
/// ids from `first`.
async fn insert_around(c: &tokio_postgres::Client, first: i32, team: i32, t: SystemTime, hours: &[i64]) {
    for (i, h) in hours.iter().enumerate() {
        let sql = format!(
            "INSERT INTO events VALUES ({id}, {team}, {t} - interval '30 days' + interval '{h} hours', \
             ({t} - interval '30 days' + interval '{h} hours')::date)",
            id = first + i as i32,
            t = lit(t),
        );
        c.batch_execute(&sql).await.unwrap();
    }
}

async fn expect_at(c: &tokio_postgres::Client, reader: &mut ShapeReader, where_sql: &str, t: SystemTime, what: &str) {
    let expected = oracle(c, "events", COLS, &at(where_sql, t)).await;
    reader.live_until(Duration::from_secs(20), |r| r.sorted_rows() == expected).await;
    assert_same_rows(&reader.sorted_rows(), &expected, what);
}

const WINDOW: &str = "created_at > now() - interval '30 days'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_age_out_and_come_due_as_the_clock_moves() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let clock = ManualClock::new();
    let t0 = clock.clock().wall();
    // Rows 1-4 age out 1, 2, 3 and 4 hours from now; rows 11-12 are 30 days in the future and
    // come due 1 and 2 hours from now for the second shape.
    insert_around(&c, 1, 1, t0, &[1, 2, 3, 4]).await;
    insert_around(&c, 11, 1, t0 + Duration::from_secs(60 * 86_400), &[1, 2]).await;
    insert_around(&c, 21, 1, t0, &[-5, 2000]).await;
    let s = TestServer::start_on(&db, clock.clock(), |_| {}).await;
    let due = "created_at <= now() + interval '30 days' AND created_at > now()";
    let mut window = ShapeReader::new(&s.base, &[("table", "events"), ("where", WINDOW)]);
    let mut coming = ShapeReader::new(&s.base, &[("table", "events"), ("where", due)]);
    window.catch_up().await;
    coming.catch_up().await;
    expect_at(&c, &mut window, WINDOW, t0, "initial snapshot").await;
    expect_at(&c, &mut coming, due, t0, "initial snapshot").await;
    assert!(window.sorted_rows().len() >= 5, "rows 1-4 and 22 are in the window");
    // Messages of a shape that reads the clock but has no subqueries carry no tags.
    assert!(window.log.iter().all(|m| m["headers"].get("tags").is_none()));

    // Two and a half hours later: rows 1 and 2 aged out, row 11 came due, 12 not yet... and a
    // row inserted meanwhile that ages out an hour later is in, then out.
    clock.advance(Duration::from_secs(9000));
    let t1 = t0 + Duration::from_secs(9000);
    expect_at(&c, &mut window, WINDOW, t1, "2.5 hours later").await;
    expect_at(&c, &mut coming, due, t1, "2.5 hours later").await;
    assert!(!window.sorted_rows().iter().any(|r| r["id"] == "1" || r["id"] == "2"));
    let deletes: Vec<_> = window.log.iter().filter(|m| m["headers"]["operation"] == "delete").collect();
    assert_eq!(deletes.len(), 2, "one delete per row that aged out: {deletes:?}");

    insert_around(&c, 31, 1, t1, &[1]).await;
    expect_at(&c, &mut window, WINDOW, t1, "a new row, live").await;
    assert!(window.sorted_rows().iter().any(|r| r["id"] == "31"));
    clock.advance(Duration::from_secs(3601));
    let t2 = t1 + Duration::from_secs(3601);
    expect_at(&c, &mut window, WINDOW, t2, "the new row aged out").await;
    assert!(!window.sorted_rows().iter().any(|r| r["id"] == "31"));

    // A month on: only the rows created in the future are left in the window.
    clock.advance(Duration::from_secs(31 * 86_400));
    let t3 = t2 + Duration::from_secs(31 * 86_400);
    expect_at(&c, &mut window, WINDOW, t3, "a month later").await;
    expect_at(&c, &mut coming, due, t3, "a month later").await;
    assert!(window.sorted_rows().iter().all(|r| ["11", "12", "22"].contains(&r["id"].as_str().unwrap())));

    // A fresh reader of the same shape gets the same rows from the log (no refetch).
    let mut again = ShapeReader::new(&s.base, &[("table", "events"), ("where", WINDOW)]);
    again.catch_up().await;
    assert_same_rows(&again.sorted_rows(), &window.sorted_rows(), "a second reader");
    assert_eq!(again.handle, window.handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_and_the_clock_survive_a_restart() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let clock = ManualClock::new();
    let t0 = clock.clock().wall();
    let hours: Vec<i64> = (0..12).map(|i| i * 10).collect();
    insert_around(&c, 1, 1, t0 + Duration::from_secs(30 * 86_400), &hours).await;
    let dir = tempfile::tempdir().unwrap();
    let today = "day >= CURRENT_DATE AND day < CURRENT_DATE + 2";
    let server = ferrite_server::start_with_clock(test_config(&db.url, dir.path()), clock.clock()).await.unwrap();
    let base = server.url();
    wait_healthy(&base).await;
    let mut reader = ShapeReader::new(&base, &[("table", "events"), ("where", today)]);
    reader.catch_up().await;
    expect_at(&c, &mut reader, today, t0, "today and tomorrow").await;
    server.shutdown().await;

    // Down for two days: on restart the shape goes on from its stored time, moves to the
    // clock's, and the client resumes from its offset.
    clock.advance(Duration::from_secs(2 * 86_400));
    let t1 = t0 + Duration::from_secs(2 * 86_400);
    let server = ferrite_server::start_with_clock(test_config(&db.url, dir.path()), clock.clock()).await.unwrap();
    let base = server.url();
    wait_healthy(&base).await;
    reader.base = format!("{base}/v1/shape");
    expect_at(&c, &mut reader, today, t1, "two days later, after a restart").await;
    assert_eq!(reader.refetches, 0, "the shape survived the restart");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_rule_with_membership_and_a_window() {
    use ferrite_server::config::TableConfig;
    const SECRET: &str = "time-window-secret-0123456789abcdef-012345";
    let rule = "team_id IN (SELECT team_id FROM team_members WHERE user_id = claims.sub) \
                AND created_at > now() - interval '30 days'";
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let clock = ManualClock::new();
    let t0 = clock.clock().wall();
    insert_around(&c, 1, 1, t0, &[1, 5, 50]).await;
    insert_around(&c, 11, 2, t0, &[1, 5, 50]).await;
    let s = TestServer::start_on(&db, clock.clock(), |cfg| {
        cfg.auth.mode = ferrite_server::config::AuthMode::Jwt;
        cfg.auth.secret = Some(SECRET.into());
        cfg.tables.insert("events".into(), TableConfig { read: Some(rule.into()), ..Default::default() });
        cfg.tables.insert(
            "team_members".into(),
            TableConfig { read: Some("user_id = claims.sub".into()), ..Default::default() },
        );
    })
    .await;
    let token = hs256_token(SECRET, serde_json::json!({"sub": "ann"}));
    let mut ann = ShapeReader::new(&s.base, &[("table", "events")]).with_token(&token);
    ann.catch_up().await;
    let anns = |t| at(&rule.replace("claims.sub", "'ann'"), t);
    let expected = oracle(&c, "events", COLS, &anns(t0)).await;
    assert_same_rows(&ann.sorted_rows(), &expected, "initial");
    assert_eq!(expected.len(), 3);

    // Ann joins team 2 (its rows move in), then two hours pass (a row of each team ages out),
    // then she leaves team 1 (its last row moves out).
    c.execute("INSERT INTO team_members VALUES (2, 'ann')", &[]).await.unwrap();
    let expected = oracle(&c, "events", COLS, &anns(t0)).await;
    ann.live_until(Duration::from_secs(20), |r| r.sorted_rows() == expected).await;
    clock.advance(Duration::from_secs(7200));
    let t1 = t0 + Duration::from_secs(7200);
    let expected = oracle(&c, "events", COLS, &anns(t1)).await;
    assert_eq!(expected.len(), 4);
    ann.live_until(Duration::from_secs(20), |r| r.sorted_rows() == expected).await;
    assert_same_rows(&ann.sorted_rows(), &expected, "two hours later");
    c.execute("DELETE FROM team_members WHERE team_id = 1 AND user_id = 'ann'", &[]).await.unwrap();
    let expected = oracle(&c, "events", COLS, &anns(t1)).await;
    ann.live_until(Duration::from_secs(20), |r| r.sorted_rows() == expected).await;
    assert_same_rows(&ann.sorted_rows(), &expected, "after leaving team 1");
    clock.advance(Duration::from_secs(6 * 3600));
    let t2 = t1 + Duration::from_secs(6 * 3600);
    let expected = oracle(&c, "events", COLS, &anns(t2)).await;
    ann.live_until(Duration::from_secs(20), |r| r.sorted_rows() == expected).await;
    assert_same_rows(&ann.sorted_rows(), &expected, "eight hours on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_uses_of_the_time_are_refused() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = TestServer::start(&db).await;
    for where_sql in [
        "now() - created_at < interval '1 day'",
        "(created_at > now()) = (team_id = 1)",
        "team_id IN (SELECT team_id FROM team_members WHERE now() > '2020-01-01')",
        "created_at > clock_timestamp()",
    ] {
        let (status, body) =
            read_shape(&s.base, None, &[("table", "events"), ("where", where_sql)]).await.expect_err(where_sql);
        assert_eq!(status, 400, "{where_sql}: {body}");
        assert!(body.contains("time") || body.contains("clock_timestamp"), "{where_sql}: {body}");
    }
}

//! Write rules that follow team membership: a table's write rule may read other tables through
//! subqueries (`team_id IN (SELECT team_id FROM team_members WHERE user_id = claims.sub AND role
//! IN ('owner', 'editor'))`). Postgres evaluates it inside the write's own transaction, so a
//! viewer cannot edit, a member removed or demoted a moment ago is refused with the same token,
//! one added is let in, and a demotion committed while a write checks its rule wins. A write
//! rule may also hold rows to a time window (`created_at > now() - interval '30 days'`), read
//! as Postgres's `now()` in the write's transaction.

use crate::common::*;
use ferrite_server::config::AuthMode;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "membership-secret-0123456789abcdef-012345";

const SCHEMA: &str = "
    CREATE TABLE team_members (team_id int, user_id text, role text NOT NULL, PRIMARY KEY (team_id, user_id));
    CREATE TABLE steps (id int PRIMARY KEY, team_id int NOT NULL, name text);
    INSERT INTO team_members VALUES (1, 'ann', 'editor'), (1, 'vic', 'viewer'), (2, 'bob', 'owner');
    INSERT INTO steps VALUES (1, 1, 'extract'), (2, 2, 'load');";

const EDITORS: &str =
    "team_id IN (SELECT team_id FROM team_members WHERE user_id = claims.sub AND role IN ('owner', 'editor'))";

async fn server(db: &TestDb) -> TestServer {
    TestServer::start_with(db, |c| {
        c.auth.mode = AuthMode::Jwt;
        c.auth.secret = Some(SECRET.into());
        c.tables.insert(
            "steps".into(),
            ferrite_server::config::TableConfig { write: Some(EDITORS.into()), public: true, ..Default::default() },
        );
    })
    .await
}

fn token(user: &str) -> String {
    hs256_token(SECRET, json!({ "sub": user }))
}

/// Posts one transaction of `mutations` as `user` and returns its result.
async fn write(s: &TestServer, user: &str, id: u64, mutations: Value) -> Value {
    let hlc = format!("{}-0", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() + 2000);
    let r = post_tx(
        &s.base,
        Some(&token(user)),
        json!({"client_id": format!("{user}-device"), "transactions": [{"id": id, "hlc": hlc, "mutations": mutations}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["results"][0].clone()
}

fn rename(id: i32, name: &str) -> Value {
    json!([{"op": "update", "table": "steps", "key": {"id": id.to_string()}, "value": {"name": name}}])
}

async fn name_of(c: &tokio_postgres::Client, id: i32) -> String {
    c.query_one("SELECT name FROM steps WHERE id = $1", &[&id]).await.unwrap().get(0)
}

fn forbidden(result: &Value) -> bool {
    result["status"] == "rejected" && result["error"]["code"] == "forbidden"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_rules_follow_membership_and_roles_live() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = server(&db).await;

    // An editor of team 1 edits its step; a viewer of team 1 cannot, nor can the editor touch
    // team 2's step, create a step in team 2 or move one there.
    assert_eq!(write(&s, "ann", 1, rename(1, "extract v2")).await["status"], "applied");
    let viewer = write(&s, "vic", 1, rename(1, "vandalised")).await;
    assert!(forbidden(&viewer), "{viewer}");
    assert!(forbidden(&write(&s, "ann", 2, rename(2, "stolen")).await));
    let insert = json!([{"op": "insert", "table": "steps", "value": {"id": "3", "team_id": "2", "name": "planted"}}]);
    assert!(forbidden(&write(&s, "ann", 3, insert).await));
    let moved = json!([{"op": "update", "table": "steps", "key": {"id": "1"}, "value": {"team_id": "2"}}]);
    assert!(forbidden(&write(&s, "ann", 4, moved).await), "the row as asked must satisfy the rule too");
    assert_eq!(name_of(&c, 1).await, "extract v2");
    assert_eq!(name_of(&c, 2).await, "load");
    let count: i64 = c.query_one("SELECT count(*) FROM steps", &[]).await.unwrap().get(0);
    assert_eq!(count, 2);

    // Promoted in Postgres: the same token may now edit. Removed: it may not, at once.
    c.execute("UPDATE team_members SET role = 'editor' WHERE user_id = 'vic'", &[]).await.unwrap();
    assert_eq!(write(&s, "vic", 2, rename(1, "by vic")).await["status"], "applied");
    c.execute("DELETE FROM team_members WHERE user_id = 'ann'", &[]).await.unwrap();
    assert!(forbidden(&write(&s, "ann", 5, rename(1, "after removal")).await));
    assert_eq!(name_of(&c, 1).await, "by vic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_committed_during_the_check_wins() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let s = server(&db).await;

    // An administrator demotes ann and has not committed yet when ann's write checks its rule:
    // the check waits on her membership row (it reads it FOR SHARE) …
    let mut admin = db.client().await;
    let demotion = admin.transaction().await.unwrap();
    demotion.execute("UPDATE team_members SET role = 'viewer' WHERE user_id = 'ann'", &[]).await.unwrap();
    let pending = {
        let base = s.base.clone();
        tokio::spawn(async move {
            let hlc = format!("{}-0", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() + 2000);
            post_tx(
                &base,
                Some(&token("ann")),
                json!({"client_id": "ann-device", "transactions": [
                    {"id": 1, "hlc": hlc, "mutations": rename(1, "racing the demotion")}
                ]}),
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = c
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", &[])
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the write's rule check never waited on the membership row");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // … and once the demotion commits, sees ann as a viewer.
    demotion.commit().await.unwrap();
    let r = pending.await.unwrap();
    assert!(forbidden(&r.body["results"][0]), "{}", r.text);
    assert_eq!(name_of(&c, 1).await, "extract");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_rules_may_hold_rows_to_a_time_window() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE notes (id int PRIMARY KEY, body text, created_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO notes VALUES (1, 'recent', now() - interval '2 hours'), (2, 'old', now() - interval '40 days');",
    )
    .await
    .unwrap();
    let s = TestServer::start_with(&db, |c| {
        c.auth.mode = AuthMode::Jwt;
        c.auth.secret = Some(SECRET.into());
        c.tables.insert(
            "notes".into(),
            ferrite_server::config::TableConfig {
                write: Some("created_at > now() - interval '30 days'".into()),
                public: true,
                ..Default::default()
            },
        );
    })
    .await;
    let edit = |id: i32| json!([{"op": "update", "table": "notes", "key": {"id": id.to_string()}, "value": {"body": "edited"}}]);
    assert_eq!(write(&s, "ann", 1, edit(1)).await["status"], "applied");
    assert!(forbidden(&write(&s, "ann", 2, edit(2)).await), "a note older than the window is closed");
    // A new note takes its default time and is inside the window; one dated back is not.
    let fresh = json!([{"op": "insert", "table": "notes", "value": {"id": "3", "body": "new"}}]);
    assert_eq!(write(&s, "ann", 3, fresh).await["status"], "applied");
    let backdated = json!([{"op": "insert", "table": "notes", "value": {"id": "4", "body": "x", "created_at": "2001-01-01 00:00:00+00"}}]);
    assert!(forbidden(&write(&s, "ann", 4, backdated).await));
    let bodies: Vec<String> =
        c.query("SELECT body FROM notes ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(bodies, vec!["edited", "old", "new"]);
}

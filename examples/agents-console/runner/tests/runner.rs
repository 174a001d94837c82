//! The runner against a real Postgres with the example's schema: it claims waiting tasks by
//! priority, writes an execution and its events, records success and failure, stops an execution
//! a user cancelled, two runners never run one task twice, and a workflow run creates its tasks.

use agents_runner::{connect, run_one, run_until_idle, start_workflow_one, Options, MAX_WORKFLOW_STEPS};
use ferrite_pg::cluster::LocalCluster;
use std::time::Duration;

async fn database() -> (LocalCluster, String) {
    let cluster = LocalCluster::temporary().expect("a throwaway Postgres cluster");
    let url = cluster.create_database("agents").expect("a database");
    let db = connect(&url).await.unwrap();
    let schema = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.sql")).unwrap();
    db.batch_execute(&schema).await.unwrap();
    (cluster, url)
}

fn fast(steps: usize) -> Options {
    Options { steps, step: Duration::from_millis(5), ..Options::default() }
}

#[tokio::test]
async fn tasks_run_by_priority_with_their_executions_and_events() {
    let (_cluster, url) = database().await;
    let db = connect(&url).await.unwrap();
    db.batch_execute(
        "INSERT INTO tasks (owner_id, title, priority) VALUES
           ('ada', 'summarise the logs', 1), ('ada', 'please fail', 5), ('bob', 'draft the release notes', 3);
         INSERT INTO tasks (owner_id, title, status) VALUES ('ada', 'already done', 'done');",
    )
    .await
    .unwrap();
    let ran = run_until_idle(&db, &fast(4)).await.unwrap();
    let titles: Vec<String> = {
        let mut out = vec![];
        for r in &ran {
            out.push(
                db.query_one("SELECT title FROM tasks WHERE id = $1::text::uuid", &[&r.task]).await.unwrap().get(0),
            );
        }
        out
    };
    assert_eq!(titles, ["please fail", "draft the release notes", "summarise the logs"], "highest priority first");
    assert_eq!(ran.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(), ["failed", "succeeded", "succeeded"]);
    for r in &ran {
        let row = db
            .query_one(
                "SELECT e.status, e.owner_id = t.owner_id, e.started_at IS NOT NULL AND e.finished_at >= e.started_at, t.status,
                        (SELECT count(*) FROM observability_events o WHERE o.execution_id = e.id AND o.owner_id = t.owner_id)
                   FROM agent_executions e JOIN tasks t ON t.id = e.task_id WHERE e.id = $1::text::uuid",
                &[&r.execution],
            )
            .await
            .unwrap();
        let (status, same_owner, timed, task_status, events): (String, bool, bool, String, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        assert_eq!(status, r.outcome);
        assert!(same_owner && timed, "{r:?}");
        assert_eq!(task_status, if r.outcome == "succeeded" { "done" } else { "failed" });
        assert_eq!(events as usize, r.events);
    }
    assert_eq!(ran[1].events, 4, "a successful run writes all its steps");
    let error: String = db
        .query_one(
            "SELECT message FROM observability_events WHERE execution_id = $1::text::uuid AND level = 'error'",
            &[&ran[0].execution],
        )
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("fail"), "{error}");
    assert!(run_one(&db, &fast(4)).await.unwrap().is_none(), "nothing left to run");
}

#[tokio::test]
async fn a_cancelled_execution_stops_and_two_runners_share_the_work() {
    let (_cluster, url) = database().await;
    let db = connect(&url).await.unwrap();
    db.batch_execute("INSERT INTO tasks (owner_id, title) VALUES ('ada', 'a long job')").await.unwrap();
    // A slow run, cancelled by the user as soon as it has started.
    let runner = tokio::spawn({
        let url = url.clone();
        async move {
            let db = connect(&url).await.unwrap();
            run_one(&db, &Options { steps: 50, step: Duration::from_millis(50), ..Options::default() }).await.unwrap()
        }
    });
    loop {
        let n =
            db.execute("UPDATE agent_executions SET status = 'cancelled' WHERE status = 'running'", &[]).await.unwrap();
        if n == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ran = runner.await.unwrap().expect("it ran the task");
    assert_eq!(ran.outcome, "cancelled");
    assert!(ran.events < 50, "stopped early: {ran:?}");
    let status: String = db.query_one("SELECT status FROM tasks", &[]).await.unwrap().get(0);
    assert_eq!(status, "failed");

    // Two runners on twenty tasks: each task runs exactly once.
    db.batch_execute("INSERT INTO tasks (owner_id, title) SELECT 'bob', 'job ' || i FROM generate_series(1, 20) i")
        .await
        .unwrap();
    let both: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let db = connect(&url).await.unwrap();
                run_until_idle(&db, &fast(2)).await.unwrap()
            })
        })
        .collect();
    let mut tasks = vec![];
    for h in both {
        tasks.extend(h.await.unwrap().into_iter().map(|r| r.task));
    }
    tasks.sort();
    let before = tasks.len();
    tasks.dedup();
    assert_eq!((before, tasks.len()), (20, 20), "every task once");
    let executions: i64 =
        db.query_one("SELECT count(*) FROM agent_executions WHERE owner_id = 'bob'", &[]).await.unwrap().get(0);
    assert_eq!(executions, 20);
}

#[tokio::test]
async fn a_workflow_run_creates_one_task_per_step_for_who_asked() {
    let (_cluster, url) = database().await;
    let db = connect(&url).await.unwrap();
    // Steps as an admin typed them: a non-string, an empty one and far too many are bounded.
    let many: Vec<String> = (1..=80).map(|i| format!("\"step {i}\"")).collect();
    db.batch_execute(&format!(
        "INSERT INTO workflows (id, name, definition) VALUES
           ('00000000-0000-4000-8000-000000000101', 'Release', '{{\"steps\": [\"Draft the notes\", 7, \"\", \"Announce\"]}}'),
           ('00000000-0000-4000-8000-000000000102', 'Empty', '{{\"steps\": \"not a list\"}}'),
           ('00000000-0000-4000-8000-000000000103', 'Huge', '{{\"steps\": [{}]}}');
         INSERT INTO workflow_executions (owner_id, workflow_id, started_at) VALUES
           ('ada', '00000000-0000-4000-8000-000000000101', now() - interval '2 seconds'),
           ('bob', '00000000-0000-4000-8000-000000000102', now() - interval '1 second'),
           ('ada', '00000000-0000-4000-8000-000000000103', now());",
        many.join(", ")
    ))
    .await
    .unwrap();
    let first = start_workflow_one(&db).await.unwrap().expect("a queued run");
    assert_eq!((first.outcome.as_str(), first.tasks), ("succeeded", 2));
    let titles: Vec<String> = db
        .query("SELECT title FROM tasks WHERE owner_id = 'ada' AND status = 'todo' ORDER BY title", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(titles, ["Announce", "Draft the notes"]);
    let second = start_workflow_one(&db).await.unwrap().unwrap();
    assert_eq!((second.outcome.as_str(), second.tasks), ("failed", 0), "no steps: nothing to do");
    let third = start_workflow_one(&db).await.unwrap().unwrap();
    assert_eq!(third.tasks, MAX_WORKFLOW_STEPS);
    assert!(start_workflow_one(&db).await.unwrap().is_none());
    let status: Vec<String> = db
        .query("SELECT status FROM workflow_executions ORDER BY started_at", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(status, ["succeeded", "failed", "succeeded"]);
    // The runner then runs them like any task.
    let ran = run_until_idle(&db, &fast(1)).await.unwrap();
    assert_eq!(ran.len() as i64, 2 + MAX_WORKFLOW_STEPS);
}

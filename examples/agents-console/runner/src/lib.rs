//! The agents console's agent runner: the backend side of the example. It claims tasks that
//! are waiting (`status = 'todo'`, highest priority first), runs a pretend agent on each — an
//! execution row and a stream of observability events, written straight into Postgres as a real
//! agent backend would — and records the outcome on the execution and the task. Those rows are
//! server-authoritative (their tables are `server-wins` in the example's ferrite.toml): they
//! reach the console through Ferrite's shapes while users edit.
//!
//! It also starts workflow runs users asked for (`workflow_executions` with status `queued`): a
//! run creates one waiting task per step of its workflow's definition (`{"steps": [title, …]}`,
//! at most [`MAX_WORKFLOW_STEPS`]) for the user who asked, which the runner then picks up like any
//! other task, and the run is recorded as `succeeded` (or `failed` when the workflow has no step).
//!
//! A task whose title contains "fail" fails (so the console has failures to show). A user who
//! cancels an execution (sets its status to `cancelled` through Ferrite) stops it before its next
//! step. Several runners may share one database: a task is claimed with `FOR UPDATE SKIP LOCKED`.

use anyhow::{Context, Result};
use std::time::Duration;
use tokio_postgres::Client;

/// How the runner works.
#[derive(Debug, Clone)]
pub struct Options {
    /// The agent name written on executions.
    pub agent: String,
    /// Observability events per execution (the last says how it ended).
    pub steps: usize,
    /// Pause between two steps (what a live event stream looks like in the console).
    pub step: Duration,
    /// Pause between two looks for waiting tasks when there are none.
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agent: "planner".into(),
            steps: 5,
            step: Duration::from_millis(700),
            poll: Duration::from_millis(500),
        }
    }
}

/// What happened to one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// The task's id.
    pub task: String,
    /// The execution's id.
    pub execution: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub outcome: String,
    /// Events written.
    pub events: usize,
}

/// What each step of the pretend agent says.
const STEPS: &[&str] =
    &["reading the task", "planning the work", "calling tools", "checking the results", "writing the answer"];

/// Claims the waiting task with the highest priority and runs it; `None` when none waits.
pub async fn run_one(db: &Client, options: &Options) -> Result<Option<Ran>> {
    let claimed = db
        .query_opt(
            "UPDATE tasks SET status = 'running', updated_at = now()
              WHERE id = (SELECT id FROM tasks WHERE status = 'todo'
                           ORDER BY priority DESC, updated_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
          RETURNING id::text, owner_id, title",
            &[],
        )
        .await
        .context("claiming a task")?;
    let Some(task) = claimed else { return Ok(None) };
    let (task_id, owner, title): (String, String, String) = (task.get(0), task.get(1), task.get(2));
    let execution: String = db
        .query_one(
            "INSERT INTO agent_executions (owner_id, task_id, agent, status, started_at)
             VALUES ($1, $2::text::uuid, $3, 'running', now()) RETURNING id::text",
            &[&owner, &task_id, &options.agent],
        )
        .await
        .context("starting an execution")?
        .get(0);
    let event = |level: &'static str, message: String| {
        let (owner, execution) = (owner.clone(), execution.clone());
        async move {
            db.execute(
                "INSERT INTO observability_events (owner_id, execution_id, level, message) VALUES ($1, $2::text::uuid, $3, $4)",
                &[&owner, &execution, &level, &message],
            )
            .await
            .context("writing an event")
        }
    };
    let fails = title.to_lowercase().contains("fail");
    let mut events = 0;
    let mut outcome = "succeeded";
    for (i, what) in STEPS.iter().cycle().take(options.steps.saturating_sub(1)).enumerate() {
        // The user may have cancelled it meanwhile (a server-wins update through Ferrite).
        let status: String = db
            .query_one("SELECT status FROM agent_executions WHERE id = $1::text::uuid", &[&execution])
            .await
            .context("reading the execution")?
            .get(0);
        if status == "cancelled" {
            outcome = "cancelled";
            break;
        }
        event("info", format!("step {}: {what}", i + 1)).await?;
        events += 1;
        tokio::time::sleep(options.step).await;
        if fails && i == 1 {
            outcome = "failed";
            break;
        }
    }
    let (level, last) = match outcome {
        "succeeded" => ("info", format!("done: {title}")),
        "failed" => ("error", "the agent gave up: the task asks it to fail".to_string()),
        _ => ("warn", "cancelled by the user".to_string()),
    };
    event(level, last).await?;
    events += 1;
    db.execute(
        "UPDATE agent_executions SET status = $2, finished_at = now() WHERE id = $1::text::uuid",
        &[&execution, &outcome],
    )
    .await
    .context("finishing the execution")?;
    let task_status = if outcome == "succeeded" { "done" } else { "failed" };
    db.execute("UPDATE tasks SET status = $2, updated_at = now() WHERE id = $1::text::uuid", &[&task_id, &task_status])
        .await
        .context("finishing the task")?;
    Ok(Some(Ran { task: task_id, execution, outcome: outcome.to_string(), events }))
}

/// Steps of one workflow a run turns into tasks (a definition is data an admin typed: bounded).
pub const MAX_WORKFLOW_STEPS: i64 = 50;

/// What happened to one workflow run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The workflow execution's id.
    pub run: String,
    /// `succeeded` or `failed`.
    pub outcome: String,
    /// Tasks created.
    pub tasks: i64,
}

/// Claims the oldest queued workflow run and creates its tasks; `None` when none waits.
pub async fn start_workflow_one(db: &Client) -> Result<Option<Started>> {
    let claimed = db
        .query_opt(
            "UPDATE workflow_executions SET status = 'running'
              WHERE id = (SELECT id FROM workflow_executions WHERE status = 'queued'
                           ORDER BY started_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
          RETURNING id::text, owner_id, workflow_id::text",
            &[],
        )
        .await
        .context("claiming a workflow run")?;
    let Some(run) = claimed else { return Ok(None) };
    let (run_id, owner, workflow): (String, String, String) = (run.get(0), run.get(1), run.get(2));
    // One statement: the tasks and the outcome together. Steps that are not non-empty strings
    // are skipped; titles are cut to the tasks table's limit.
    let row = db
        .query_one(
            "WITH wf AS (SELECT name, definition->'steps' AS steps FROM workflows WHERE id = $2::text::uuid),
                  step AS (SELECT s.title, s.n FROM wf,
                             jsonb_array_elements(CASE WHEN jsonb_typeof(wf.steps) = 'array' THEN wf.steps ELSE '[]' END)
                               WITH ORDINALITY AS s(title, n)
                            WHERE s.n <= $4 AND jsonb_typeof(s.title) = 'string' AND length(s.title #>> '{}') > 0),
                  made AS (INSERT INTO tasks (owner_id, title, description, priority)
                           SELECT $1, left(step.title #>> '{}', 500),
                                  'Step ' || step.n || ' of the workflow ' || (SELECT name FROM wf), 5
                             FROM step ORDER BY step.n RETURNING 1)
             UPDATE workflow_executions
                SET status = CASE WHEN (SELECT count(*) FROM made) > 0 THEN 'succeeded' ELSE 'failed' END,
                    finished_at = now()
              WHERE id = $3::text::uuid
          RETURNING status, (SELECT count(*) FROM made)",
            &[&owner, &workflow, &run_id, &MAX_WORKFLOW_STEPS],
        )
        .await
        .context("starting a workflow run")?;
    Ok(Some(Started { run: run_id, outcome: row.get(0), tasks: row.get(1) }))
}

/// Runs waiting tasks until none is left; what it ran.
pub async fn run_until_idle(db: &Client, options: &Options) -> Result<Vec<Ran>> {
    let mut ran = vec![];
    while let Some(r) = run_one(db, options).await? {
        ran.push(r);
    }
    Ok(ran)
}

/// Runs workflow runs and tasks as they come until `stop` resolves, printing each outcome.
pub async fn run(db: &Client, options: &Options, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    tokio::pin!(stop);
    loop {
        let started = tokio::select! {
            r = start_workflow_one(db) => r?,
            _ = &mut stop => return Ok(()),
        };
        if let Some(s) = started {
            println!("workflow run {}: {} ({} tasks)", s.run, s.outcome, s.tasks);
            continue;
        }
        let next = tokio::select! {
            r = run_one(db, options) => r?,
            _ = &mut stop => return Ok(()),
        };
        match next {
            Some(r) => println!("task {}: {} ({} events, execution {})", r.task, r.outcome, r.events, r.execution),
            None => tokio::select! {
                _ = tokio::time::sleep(options.poll) => {}
                _ = &mut stop => return Ok(()),
            },
        }
    }
}

/// Connects to `url` (TLS as the URL asks, as Ferrite does).
pub async fn connect(url: &str) -> Result<Client> {
    ferrite_pg::connect::connect(url).await.map_err(|e| anyhow::anyhow!("connecting to Postgres: {e}"))
}

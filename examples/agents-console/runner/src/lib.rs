//! The agents console's agent runner: the backend side of the example. It claims tasks that
//! are waiting (`status = 'todo'`, highest priority first), runs a pretend agent on each — an
//! execution row and a stream of observability events, written straight into Postgres as a real
//! agent backend would — and records the outcome on the execution and the task. Those rows are
//! server-authoritative (their tables are `server-wins` in the example's ferrite.toml): they
//! reach the console through Ferrite's shapes while users edit.
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

/// Runs waiting tasks until none is left; what it ran.
pub async fn run_until_idle(db: &Client, options: &Options) -> Result<Vec<Ran>> {
    let mut ran = vec![];
    while let Some(r) = run_one(db, options).await? {
        ran.push(r);
    }
    Ok(ran)
}

/// Runs tasks as they come until `stop` resolves, printing each outcome.
pub async fn run(db: &Client, options: &Options, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    tokio::pin!(stop);
    loop {
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

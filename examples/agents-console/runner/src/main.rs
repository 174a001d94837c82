//! `agents-runner`: the agents console example's agent runner (see the library docs). Runs
//! until Ctrl-C (or, with `--until-idle`, until no task waits).

use clap::Parser;
use std::time::Duration;

/// Picks up the console's waiting tasks and runs a pretend agent on each, writing executions and
/// observability events into Postgres.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Postgres URL of the agents console's database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The agent name written on executions.
    #[arg(long, default_value = "planner")]
    agent: String,
    /// Observability events per execution.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Milliseconds between two events.
    #[arg(long, default_value_t = 700)]
    step_ms: u64,
    /// Milliseconds between two looks for waiting tasks.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Stop once no task waits (instead of waiting for more).
    #[arg(long)]
    until_idle: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let options = agents_runner::Options {
        agent: cli.agent,
        steps: cli.steps.max(1),
        step: Duration::from_millis(cli.step_ms),
        poll: Duration::from_millis(cli.poll_ms.max(10)),
    };
    let db = agents_runner::connect(&cli.database_url).await?;
    if cli.until_idle {
        for r in agents_runner::run_until_idle(&db, &options).await? {
            println!("task {}: {} ({} events, execution {})", r.task, r.outcome, r.events, r.execution);
        }
        return Ok(());
    }
    println!("agents-runner: waiting for tasks (Ctrl-C stops)");
    agents_runner::run(&db, &options, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    println!("agents-runner: stopped");
    Ok(())
}

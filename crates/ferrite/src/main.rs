//! The `ferrite` binary: `serve` against a Postgres, `dev` with a throwaway local one,
//! `client` to try the Rust client's local replica, `types` for an app's TypeScript row types, and
//! `cluster status` for the nodes of a cluster.

mod client_cli;
mod cluster_cli;
mod config;
mod dev;
mod dev_web;
mod examples;
mod types_cli;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// jemalloc rather than the system allocator: serving a change to many live clients is mostly
/// small, short-lived allocations (a response's headers and body per client), where glibc's
/// allocator spent a fifth of the server's CPU in the fan-out benchmark.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts (before `main`): freed memory goes back to the
/// system within a second (its default is ten), by a background thread rather than the
/// request's, so that a server whose clients come and go keeps a resident size close to what
/// it holds. An operator's `MALLOC_CONF` still wins.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Ferrite: a local-first sync engine for PostgreSQL.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve shapes from a Postgres database (wal_level=logical).
    Serve {
        /// Config file (default: ./ferrite.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Postgres URL; overrides the config file and FERRITE_DATABASE_URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// HTTP port; overrides the config file.
        #[arg(long)]
        port: Option<u16>,
        /// Shape storage directory; overrides the config file.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// NATS server(s) of a cluster of Ferrite nodes (`nats://host:4222`); overrides
        /// `[cluster] nats_url`.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Run everything locally: a throwaway Postgres with an example's schema and data, the
    /// server with its rules, and its web app.
    Dev {
        /// The example: `pipeline-editor` (the collaborative pipeline editor) or `agents-console`
        /// (the AI-agent task console, with its agent runner).
        #[arg(long, default_value = "pipeline-editor")]
        example: String,
        /// Where the dev Postgres cluster and shape logs live (reused by later runs).
        #[arg(long, default_value = ".ferrite/dev")]
        dir: PathBuf,
        /// HTTP port (a free one is chosen if it is taken).
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// Postgres port for the dev cluster (another one is chosen if it is taken; 0: any).
        #[arg(long, default_value_t = 54329)]
        pg_port: u16,
    },
    /// The Rust client from the shell: sync shapes into a local SQLite file and query it.
    Client {
        #[command(subcommand)]
        command: client_cli::ClientCommand,
    },
    /// The nodes of a cluster (`[cluster] nats_url`): who leads, who follows, how far behind.
    Cluster {
        #[command(subcommand)]
        command: cluster_cli::ClusterCommand,
    },
    /// TypeScript row types of a schema's tables, as @ferrite/client delivers the rows.
    Types {
        /// Postgres URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Schema whose tables to describe.
        #[arg(long, default_value = "public")]
        schema: String,
        /// Only these tables (repeat the flag; default: every table of the schema).
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Write the module to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRITE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve { config, database_url, port, data_dir, cluster } => {
                let mut cfg = config::load(config.as_deref(), std::env::vars())?;
                if let Some(u) = database_url {
                    cfg.database_url = u;
                }
                if let Some(p) = port {
                    cfg.port = p;
                }
                if let Some(d) = data_dir {
                    cfg.data_dir = d;
                }
                if let Some(c) = cluster {
                    cfg.cluster.nats_url = Some(c);
                    cfg.validate().map_err(|e| anyhow!("--cluster: {e}"))?;
                }
                check_database_url(&cfg.database_url)?;
                let stop = StopSignals::catch();
                let server = ferrite_server::start(cfg).await?;
                println!("Ferrite is serving shapes at {}/v1/shape", server.url());
                let halted = tokio::select! {
                    _ = stop.wait() => None,
                    why = server.halted() => Some(why),
                };
                println!("shutting down");
                server.shutdown().await;
                match halted {
                    // Its supervisor (systemd's Restart=) starts it again, as a follower.
                    Some(why) => Err(anyhow!("stopped: {why}")),
                    None => Ok(()),
                }
            }
            Command::Dev { example, dir, port, pg_port } => {
                dev::run(examples::find(&example)?, &dir, port, pg_port).await
            }
            Command::Client { command } => client_cli::run(command).await,
            Command::Cluster { command } => {
                if !cluster_cli::run(command).await? {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Types { database_url, schema, tables, out } => {
                check_database_url(&database_url)?;
                types_cli::run(&database_url, &schema, &tables, out.as_deref()).await
            }
        }
    })
}

/// Fails at once on a database URL that cannot be parsed (the server would otherwise retry it
/// forever, as it retries an unreachable database). The message names the problem, not the URL,
/// which may hold a password.
fn check_database_url(url: &str) -> Result<()> {
    ferrite_pg::connect::config_for(url).map(drop).map_err(|e| {
        anyhow!("the database URL (--database-url, DATABASE_URL, FERRITE_DATABASE_URL or database_url in the config file) cannot be used: {e}")
    })
}

/// Ctrl-C and SIGTERM, caught from the moment this is made: made before a command prints the
/// line that says it is ready, a signal sent as soon as that line is read (a supervisor, a test,
/// an impatient user) stops it cleanly instead of killing it before its handler exists.
pub struct StopSignals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Starts catching both signals (if a handler cannot be installed, that signal keeps its
    /// default action).
    pub fn catch() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals { interrupt: signal(SignalKind::interrupt()).ok(), terminate: signal(SignalKind::terminate()).ok() }
    }

    /// Waits for either (at once if one came since [`StopSignals::catch`]).
    pub async fn wait(mut self) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.interrupt) => {}
            _ = next(&mut self.terminate) => {}
        }
    }
}

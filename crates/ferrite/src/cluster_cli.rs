//! `ferrite cluster status`: the cluster as one node sees it — every node's name, role, URL and
//! lag (the leader's behind Postgres, in WAL bytes; a follower's behind the leader in the shape
//! stream, in messages), from that node's `/v1/health` (its own part and the heartbeats of the
//! others).

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use serde_json::Value;

/// `ferrite cluster …`.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Print the nodes of the cluster a node belongs to: name, role, URL, lag (the leader's in
    /// WAL bytes behind Postgres, a follower's in shape-stream messages behind the leader). Exits
    /// with status 1 when no node leads.
    Status {
        /// Any node of the cluster.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
    },
}

/// Runs a `cluster` subcommand; `Ok(false)` when the cluster has no leader.
pub async fn run(command: ClusterCommand) -> Result<bool> {
    match command {
        ClusterCommand::Status { url } => status(&url).await,
    }
}

async fn status(url: &str) -> Result<bool> {
    let base = url.trim_end_matches('/');
    let health: Value = reqwest::get(format!("{base}/v1/health"))
        .await
        .with_context(|| format!("asking {base}/v1/health"))?
        .json()
        .await
        .with_context(|| format!("reading {base}/v1/health"))?;
    let me = health
        .get("cluster")
        .ok_or_else(|| anyhow!("{base} is a single node (no [cluster] nats_url): status {}", health["status"]))?;
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let mut rows = vec![(
        text(&me["name"]),
        text(&me["role"]),
        text(&me["url"]),
        me["lag_bytes"].as_u64().unwrap_or(0),
        me["stream_seq"].as_u64().unwrap_or(0),
        format!("this node, NATS {}", text(&me["nats"])),
    )];
    for p in me["peers"].as_array().into_iter().flatten() {
        let role = if p["leading"].as_bool() == Some(true) { "leader" } else { "follower" };
        rows.push((
            text(&p["name"]),
            role.to_string(),
            text(&p["url"]),
            p["lag_bytes"].as_u64().unwrap_or(0),
            p["stream_seq"].as_u64().unwrap_or(0),
            String::new(),
        ));
    }
    println!("{:<20} {:<9} {:<32} {:>14}  ", "NODE", "ROLE", "URL", "LAG");
    let leader_seq = rows.iter().filter(|r| r.1 == "leader").map(|r| r.4).max();
    for (name, role, url, lag, seq, note) in &rows {
        let lag = match leader_seq {
            _ if role == "leader" => format!("{lag} bytes"),
            Some(l) => format!("{} msgs", l.saturating_sub(*seq)),
            None => "-".to_string(),
        };
        println!("{name:<20} {role:<9} {url:<32} {lag:>14}  {note}");
    }
    let leaders = rows.iter().filter(|r| r.1 == "leader").count();
    match leaders {
        0 => println!("no node leads: shape reads wait (503) until one takes the lock"),
        1 => {}
        n => println!("{n} nodes say they lead (a takeover in progress, or heartbeats not yet current)"),
    }
    Ok(leaders > 0)
}

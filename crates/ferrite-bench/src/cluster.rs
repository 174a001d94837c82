//! `ferrite-bench cluster`: two `ferrite serve` nodes of one database over a real nats-server,
//! nginx in front of both. Write → live client across nodes (a write posted to one node, the
//! reader on the other, directly and through nginx), and how long a follower takes to lead after
//! the leader is killed (`kill -9`) until it serves a read of the same shape (the handle the old
//! leader made) again.

use crate::writes::{live_until_txid, now_ms, post, LivePosition};
use crate::{catch_up, env, median, percentile, serve_process};
use anyhow::{anyhow, Result};
use ferrite_harness::nats::LocalNats;
use ferrite_harness::nginx::LocalNginx;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub async fn cluster(writes: usize, runs: usize) -> Result<()> {
    let mut figures: Vec<[f64; 6]> = vec![];
    let mut failovers = vec![];
    for _ in 0..runs {
        let (f, failover) = cluster_once(writes).await?;
        figures.push(f);
        failovers.push(failover);
    }
    let col = |i: usize| median(figures.iter().map(|f| f[i]).collect());
    println!(
        "cluster: write posted to the follower → live client on the leader: p50 {:.2} ms, p99 {:.2} ms; posted to the leader → live client on the follower (answered from its copy, through the shape stream): p50 {:.2} ms, p99 {:.2} ms; posted to the follower → live client through nginx in front of both: p50 {:.2} ms, p99 {:.2} ms (medians of {runs} runs of {writes} writes)",
        col(0), col(1), col(2), col(3), col(4), col(5)
    );
    println!(
        "cluster: leader killed (kill -9) → the follower leads and serves the same shape (no 409): median {:.0} ms (runs: {})",
        median(failovers.clone()),
        failovers.iter().map(|f| format!("{f:.0}")).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// Role of the node at `base` (from `/v1/health`), when it answers 200.
async fn role(http: &reqwest::Client, base: &str) -> Option<String> {
    let r = http.get(format!("{base}/v1/health")).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    let h: Value = r.json().await.ok()?;
    h["cluster"]["role"].as_str().map(String::from)
}

/// Posts `writes` single-row transactions to `writer` (after 10 unmeasured) and times each until
/// a live reader at `reader` sees its txid; milliseconds.
async fn across(
    http: &reqwest::Client,
    writer: &str,
    reader: &str,
    writes: usize,
    first_id: usize,
) -> Result<Vec<f64>> {
    let query = "table=items&where=n%20%3D%207";
    let (handle, offset, _) = catch_up(http, &format!("{reader}/v1/shape"), query).await?;
    let mut at = LivePosition { handle, offset, cursor: String::new() };
    let shape_url = format!("{reader}/v1/shape?{query}");
    let mut measured = vec![];
    for i in 0..writes + 10 {
        let id = first_id + i;
        let body = json!({"client_id": format!("across-{first_id}"), "transactions": [{"id": i + 1, "hlc": format!("{}-0", now_ms()), "mutations": [
            {"op": "insert", "table": "items", "value": {"id": id.to_string(), "n": "7"}}]}]});
        let t0 = Instant::now();
        let results = post(http, &format!("{writer}/v1/transactions"), None, &body).await?;
        let txid = results[0]["txid"].as_str().ok_or_else(|| anyhow!("no txid in {:?}", results[0]))?.to_string();
        live_until_txid(http, &shape_url, &mut at, &txid, t0 + Duration::from_secs(10)).await?;
        if i >= 10 {
            measured.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    measured.sort_by(|a, b| a.total_cmp(b));
    Ok(measured)
}

async fn cluster_once(writes: usize) -> Result<([f64; 6], f64)> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, n int NOT NULL)").await?;
    let nats = LocalNats::start().map_err(|e| anyhow!("{e}"))?;
    let mut nodes = vec![];
    for name in ["a", "b"] {
        let envs = [
            ("FERRITE_CLUSTER__NATS_URL", nats.url()),
            ("FERRITE_CLUSTER__NODE_NAME", name.to_string()),
            ("FERRITE_LONG_POLL_TIMEOUT_MS", "20000".to_string()),
        ];
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        nodes.push(serve_process(&env, name, &[], &envs).await?);
    }
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let mut leaders = vec![];
        for (i, (_, base)) in nodes.iter().enumerate() {
            if role(&http, base).await.as_deref() == Some("leader") {
                leaders.push(i);
            }
        }
        let followers_ready = all_ready(&http, &nodes).await;
        if leaders.len() == 1 && followers_ready {
            break leaders[0];
        }
        if Instant::now() > deadline {
            return Err(anyhow!("no single leader after 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let follower = 1 - leader;
    let (lb, fb) = (nodes[leader].1.clone(), nodes[follower].1.clone());
    let upstreams: Vec<String> = nodes.iter().map(|(_, b)| b.trim_start_matches("http://").to_string()).collect();
    let nginx = LocalNginx::start("nginx.conf", &upstreams).map_err(|e| anyhow!("{e}"))?;

    let to_leader = across(&http, &fb, &lb, writes, 1_000_000).await?;
    let to_follower = across(&http, &lb, &fb, writes, 2_000_000).await?;
    let through_nginx = across(&http, &fb, &nginx.url(), writes, 3_000_000).await?;
    let p = |v: &[f64], q| percentile(v, q);
    let figures = [
        p(&to_leader, 0.5),
        p(&to_leader, 0.99),
        p(&to_follower, 0.5),
        p(&to_follower, 0.99),
        p(&through_nginx, 0.5),
        p(&through_nginx, 0.99),
    ];

    let (handle, offset, _) = catch_up(&http, &format!("{fb}/v1/shape"), "table=items").await?;
    let killed = Instant::now();
    nodes[leader].0 .0.kill()?;
    let deadline = killed + Duration::from_secs(30);
    loop {
        if role(&http, &fb).await.as_deref() == Some("leader") {
            let r = http.get(format!("{fb}/v1/shape?table=items&handle={handle}&offset={offset}")).send().await?;
            match r.status().as_u16() {
                200 => break,
                409 => return Err(anyhow!("the new leader does not have the shape (409)")),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            return Err(anyhow!("the follower did not take over within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((figures, killed.elapsed().as_secs_f64() * 1000.0))
}

/// Whether every node answers `/v1/health` with 200 (a follower does once it knows the leader).
async fn all_ready(http: &reqwest::Client, nodes: &[(crate::KillOnDrop, String)]) -> bool {
    for (_, base) in nodes {
        if role(http, base).await.is_none() {
            return false;
        }
    }
    true
}

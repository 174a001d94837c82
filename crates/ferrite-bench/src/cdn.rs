//! `ferrite-bench cdn`: many live long-poll clients on one shape through nginx running
//! `deploy/nginx/nginx.conf` (or Varnish running `deploy/varnish/ferrite.vcl`): origin requests
//! per write, whether every client got the same bytes, and write → client delivery time through
//! the cache (nginx's lock re-checks every 500 ms, which sets its latency; Varnish wakes its
//! waiters when the answer arrives).

use crate::{catch_up, env, median, percentile, serve_process};
use anyhow::{anyhow, Result};
use ferrite_harness::nginx::LocalNginx;
use ferrite_harness::varnish::LocalVarnish;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The cache in front of Ferrite.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CacheKind {
    /// nginx with deploy/nginx/nginx.conf.
    Nginx,
    /// Varnish with deploy/varnish/ferrite.vcl.
    Varnish,
}

pub async fn cdn(clients: usize, writes: usize, runs: usize, cache: CacheKind) -> Result<()> {
    let mut per_write = vec![];
    let mut p50s = vec![];
    let mut p99s = vec![];
    for _ in 0..runs {
        let (origin, p50, p99) = cdn_once(clients, writes, cache).await?;
        per_write.push(origin);
        p50s.push(p50);
        p99s.push(p99);
    }
    println!(
        "cdn: {clients} live long-poll clients on one shape through {} (deploy/): {:.2} origin requests per write (worst run {:.2}), every client the same bytes; write → every client p50 {:.0} ms, p99 {:.0} ms (medians of {runs} runs of {writes} writes)",
        format!("{cache:?}").to_lowercase(),
        median(per_write.clone()),
        per_write.iter().cloned().fold(0.0, f64::max),
        median(p50s),
        median(p99s),
    );
    Ok(())
}

/// Ferrite's count of live shape requests (the origin requests nginx let through).
async fn origin_live_requests(http: &reqwest::Client, base: &str) -> Result<u64> {
    let m = http.get(format!("{base}/metrics")).send().await?.text().await?;
    m.lines()
        .find(|l| l.starts_with("ferrite_shape_requests_live_total "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| anyhow!("no ferrite_shape_requests_live_total in /metrics"))
}

/// The cache a run goes through.
enum Edge {
    Nginx(LocalNginx),
    Varnish(LocalVarnish),
}

impl Edge {
    fn url(&self) -> String {
        match self {
            Edge::Nginx(n) => n.url(),
            Edge::Varnish(v) => v.url(),
        }
    }

    /// Whether all `clients` long-polls are at the cache (nginx: connections it is working on;
    /// Varnish: client connections open, as its request counters are summed lazily).
    fn holds(&self, clients: usize) -> Result<bool> {
        Ok(match self {
            Edge::Nginx(n) => n.status().map_err(|e| anyhow!("{e}"))?.busy > clients as u64,
            Edge::Varnish(v) => v.connections() >= clients,
        })
    }
}

async fn cdn_once(clients: usize, writes: usize, cache: CacheKind) -> Result<(f64, f64, f64)> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute("CREATE TABLE feed (id int PRIMARY KEY, body text NOT NULL)").await?;
    let limit = (clients * 2).to_string();
    // Long-polls under nginx's cache-lock timeout (30 s in deploy/nginx).
    let (_server, base) = serve_process(
        &env,
        "cdn",
        &[],
        &[("FERRITE_MAX_CONCURRENT_EXISTING", &limit), ("FERRITE_LONG_POLL_TIMEOUT_MS", "20000")],
    )
    .await?;
    let backend = base.trim_start_matches("http://").to_string();
    let cache = match cache {
        CacheKind::Nginx => Edge::Nginx(LocalNginx::start("nginx.conf", &[backend]).map_err(|e| anyhow!("{e}"))?),
        CacheKind::Varnish => Edge::Varnish(LocalVarnish::start(&backend).map_err(|e| anyhow!("{e}"))?),
    };
    let edge = cache.url();
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients + 16).build()?;
    let (handle, mut offset, _) = catch_up(&http, &format!("{edge}/v1/shape"), "table=feed").await?;
    let mut cursor = String::new();
    let mut delays = vec![];
    let mut origin = 0;
    for n in 0..writes {
        let url = format!("{edge}/v1/shape?table=feed&handle={handle}&offset={offset}&live=true{cursor}");
        // Counted from before the clients ask: the one request nginx lets through reaches Ferrite
        // before the write.
        let before = origin_live_requests(&http, &base).await?;
        let polls: Vec<_> = (0..clients)
            .map(|_| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move {
                    let r = http.get(&url).send().await?;
                    let h = |k: &str| r.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let (status, offset, cursor) = (r.status().as_u16(), h("electric-offset"), h("electric-cursor"));
                    let body = r.bytes().await?;
                    anyhow::Ok((Instant::now(), status, offset, cursor, body))
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cache.holds(clients)? {
            if Instant::now() > deadline {
                return Err(anyhow!("the {clients} long-polls never all reached the cache"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let start = Instant::now();
        pg.execute("INSERT INTO feed VALUES ($1, 'news')", &[&(n as i32)]).await?;
        let mut bodies = HashSet::new();
        let mut next = None;
        for p in polls {
            let (at, status, o, c, body) = p.await??;
            if status != 200 {
                return Err(anyhow!("a client got {status}: {}", String::from_utf8_lossy(&body)));
            }
            if !String::from_utf8_lossy(&body).contains(&format!("\"id\":\"{n}\"")) {
                return Err(anyhow!("a client missed write {n}: {}", String::from_utf8_lossy(&body)));
            }
            delays.push(at.duration_since(start).as_secs_f64() * 1000.0);
            bodies.insert(body);
            next = Some((o, c));
        }
        if bodies.len() != 1 {
            return Err(anyhow!("write {n}: the clients got {} different bodies", bodies.len()));
        }
        origin += origin_live_requests(&http, &base).await? - before;
        let (o, c) = next.ok_or_else(|| anyhow!("no clients"))?;
        offset = o;
        cursor = format!("&cursor={c}");
    }
    delays.sort_by(|a, b| a.total_cmp(b));
    Ok((origin as f64 / writes as f64, percentile(&delays, 0.5), percentile(&delays, 0.99)))
}

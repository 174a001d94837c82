//! `ferrite-bench`: prints the read and write paths' figures on this machine.
//!
//! ```text
//! cargo run --release -p ferrite-bench -- all
//! ```
//! Each benchmark starts its own throwaway Postgres. Figures are medians over `--runs` runs.

mod cdn;
mod client;
mod cluster;
mod digest;
mod floor;
mod relational;
mod restart;
mod soak;
mod web_stores;
mod workspace;
mod writes;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use ferrite_pg::cluster::LocalCluster;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Ferrite benchmarks")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
    /// Runs per figure (the median is printed).
    #[arg(long, default_value_t = 3, global = true)]
    runs: usize,
}

#[derive(Subcommand, Clone)]
enum Bench {
    /// Matching row changes/s into shape logs with 1 and with 1,000 equality shapes.
    Routing {
        #[arg(long, default_value_t = 200_000)]
        changes: u64,
    },
    /// Write → client latency with many live long-poll clients.
    Latency {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Shapes the clients are spread over (each write reaches clients/shapes of them).
        /// Default: two figures, with 1,000 and with 10 shapes.
        #[arg(long)]
        shapes: Option<usize>,
        /// Measured writes, one every `--interval-ms` (after 50 unmeasured warm-up writes).
        #[arg(long, default_value_t = 1000)]
        writes: usize,
        /// Milliseconds between writes (raise it with many clients per shape, so that one
        /// change has reached every client before the next: e.g. 500 for 10,000 on one shape).
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        /// Run the server as its own `ferrite serve` process (as a deployment does, and as the
        /// `floor` yardstick runs) rather than inside the benchmark's runtime, where the clients'
        /// parsing competes with the server's work in one scheduler. Engine-added figures come
        /// from its `/metrics` histogram; per-client arrival figures are not available then. Also
        /// what lets 10,000 clients fit an open-file limit of 20,000.
        #[arg(long)]
        server_process: bool,
    },
    /// Initial snapshot and catch-up serving rates for a large shape.
    Snapshot {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
    /// Response compression: ratio and catch-up serving rate without, with gzip and with brotli.
    Compression {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
    /// Server RSS with many concurrent live long-poll clients (server runs as its own process).
    Rss {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
    },
    /// Applied client transactions/s (1-row and 10-row, 100 per request) and write → own-shape latency.
    Writes {
        /// Concurrent clients posting batches.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Batches of 100 transactions each client posts per run.
        #[arg(long, default_value_t = 20)]
        batches: usize,
        /// The server's `write_connections`.
        #[arg(long, default_value_t = 8)]
        write_connections: usize,
        /// Measured single transactions for the latency figure.
        #[arg(long, default_value_t = 200)]
        latency_writes: usize,
    },
    /// The Rust client: initial sync of a large shape into SQLite, local write latency.
    Client {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
    /// Relational shapes: rows moving in and out on membership changes, one change fanned out
    /// to many members' rule-filtered shapes (and their RSS), subquery-result changes/s.
    Relational {
        /// Members of one team, each on their own rule-filtered shape.
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Rows a membership moves in.
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        /// Membership inserts and deletes measured per run.
        #[arg(long, default_value_t = 30)]
        moves: usize,
    },
    /// What an on-demand convergence digest of a relational shape costs (the server replays its
    /// log), against reading the shape from the start.
    Digest {
        /// Rows of the shape.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
    },
    /// Opening a pipeline workspace (one include tree) from empty, in the Rust client and in
    /// the editor in Chromium, through `ferrite dev`.
    Workspace {
        /// Steps of the pipeline (connected in a chain).
        #[arg(long, default_value_t = 500)]
        steps: usize,
    },
    /// The web client's initial sync into IndexedDB and into PGlite, in Chromium.
    WebStores {
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
    },
    /// Live long-poll clients on one shape through nginx or Varnish (deploy/): origin requests
    /// per write, identical bodies, delivery time through the cache.
    Cdn {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Writes measured per run (each waits until every client's long-poll is at the cache).
        #[arg(long, default_value_t = 10)]
        writes: usize,
        /// The cache in front of Ferrite.
        #[arg(long, value_enum, default_value = "nginx")]
        cache: cdn::CacheKind,
    },
    /// Two nodes of a cluster over nats-server (nginx in front): write → live client across
    /// nodes, and the time a follower takes to lead after the leader is killed.
    Cluster {
        /// Measured writes per figure.
        #[arg(long, default_value_t = 200)]
        writes: usize,
    },
    /// A server with many shapes on disk: SIGTERM until it has exited (draining a held
    /// long-poll), and a start until it serves an old shape again.
    Restart {
        #[arg(long, default_value_t = 10_000)]
        shapes: usize,
    },
    /// The fan-out yardstick alone: a bare server answering held long-polls with one prebuilt
    /// body per change (what the machine can do at best; see floor.rs).
    Floor {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
    /// Soak: live long-poll clients and a steady write load for a fixed time; a line of figures
    /// (server RSS, open fds, open shapes, write → client latency p50/p95/p99, deliveries,
    /// errors) every interval, then RSS growth and a check that every client received every
    /// write of its shape once, in order. Not part of `all` (it runs for half an hour).
    Soak {
        /// Live clients: 80% on room shapes, 10% on one shared shape, 10% reconnecting.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// How long the write load runs (`30m`, `90s`, `1h`).
        #[arg(long, default_value = "30m", value_parser = soak::parse_duration)]
        duration: Duration,
        /// How often a line of figures is printed.
        #[arg(long, default_value = "60s", value_parser = soak::parse_duration)]
        interval: Duration,
        /// Rows inserted per second (each in one room).
        #[arg(long, default_value_t = 20)]
        writes_per_sec: u32,
        /// Room shapes the clients are spread over.
        #[arg(long, default_value_t = 200)]
        shapes: usize,
    },
    /// Everything above with default sizes (but the soak).
    All,
    /// The fan-out yardstick's server (see floor.rs); started by the benchmarks themselves.
    #[command(hide = true)]
    FloorServer,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        if matches!(cli.bench, Bench::FloorServer) {
            return floor::serve().await;
        }
        println!("machine: {} cores, {}", num_cpus(), mem_total());
        match cli.bench.clone() {
            Bench::Routing { changes } => routing(changes, cli.runs).await,
            Bench::Latency { clients, writes, shapes, interval_ms, server_process } => {
                for rooms in shapes.map(|s| vec![s]).unwrap_or(vec![1000, 10]) {
                    latency(clients, rooms, writes, interval_ms, server_process, cli.runs).await?;
                }
                Ok(())
            }
            Bench::Snapshot { rows } => snapshot(rows, cli.runs).await,
            Bench::Compression { rows } => compression(rows, cli.runs).await,
            Bench::Rss { clients } => rss(clients).await,
            Bench::Client { rows } => client::client(rows, cli.runs).await,
            Bench::Relational { members, rows, moves } => relational::relational(members, rows, moves, cli.runs).await,
            Bench::Writes { clients, batches, write_connections, latency_writes } => {
                writes::writes(clients, batches, write_connections, latency_writes, cli.runs).await
            }
            Bench::Workspace { steps } => workspace::workspace(steps, cli.runs).await,
            Bench::Digest { rows } => digest::digest(rows, cli.runs).await,
            Bench::WebStores { rows } => web_stores::web_stores(rows, cli.runs).await,
            Bench::FloorServer => floor::serve().await,
            Bench::Cdn { clients, writes, cache } => cdn::cdn(clients, writes, cli.runs, cache).await,
            Bench::Cluster { writes } => cluster::cluster(writes, cli.runs).await,
            Bench::Restart { shapes } => restart::restart(shapes, cli.runs).await,
            Bench::Soak { clients, duration, interval, writes_per_sec, shapes } => {
                soak::soak(soak::Options { clients, duration, interval, writes_per_sec, shapes }).await
            }
            Bench::Floor { clients } => {
                let (p50, p99) = floor::fan_out_floor(clients, 200, Duration::from_millis(100), cli.runs).await?;
                println!("floor: one change answered to {clients} held long-polls with one prebuilt body, trigger → response handed to HTTP: p50 {p50:.2} ms, p99 {p99:.2} ms (medians of {})", cli.runs);
                Ok(())
            }
            Bench::All => {
                routing(200_000, cli.runs).await?;
                latency(1000, 1000, 1000, 20, false, cli.runs).await?;
                latency(1000, 10, 1000, 20, false, cli.runs).await?;
                latency(1000, 10, 1000, 20, true, cli.runs).await?;
                snapshot(1_000_000, cli.runs).await?;
                compression(1_000_000, cli.runs).await?;
                writes::writes(16, 20, 8, 200, cli.runs).await?;
                client::client(1_000_000, cli.runs).await?;
                relational::relational(1000, 1000, 30, cli.runs).await?;
                digest::digest(100_000, cli.runs).await?;
                workspace::workspace(500, cli.runs).await?;
                web_stores::web_stores(10_000, cli.runs).await?;
                cdn::cdn(10_000, 10, cli.runs, cdn::CacheKind::Nginx).await?;
                cdn::cdn(10_000, 10, cli.runs, cdn::CacheKind::Varnish).await?;
                cluster::cluster(200, cli.runs).await?;
                restart::restart(restart::shapes_that_fit().min(10_000), cli.runs).await?;
                rss(10_000).await
            }
        }
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Env {
    /// Kept alive for the benchmark's duration; dropping it stops Postgres.
    _cluster: LocalCluster,
    url: String,
    dir: tempfile::TempDir,
}

async fn env() -> Result<Env> {
    let cluster = LocalCluster::temporary().map_err(|e| anyhow!("{e}"))?;
    let url = cluster.create_database("bench").map_err(|e| anyhow!("{e}"))?;
    Ok(Env { _cluster: cluster, url, dir: tempfile::tempdir()? })
}

fn config(env: &Env, sub: &str) -> ferrite_server::ServerConfig {
    ferrite_server::ServerConfig {
        database_url: env.url.clone(),
        data_dir: env.dir.path().join(sub),
        port: 0,
        max_concurrent_existing: 50_000,
        max_concurrent_initial: 5_000,
        ..Default::default()
    }
}

async fn wait_healthy(base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{base}/v1/health")).await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(anyhow!("server at {base} did not become healthy"))
}

/// Reads a shape from -1 to up-to-date; returns (handle, offset, messages).
async fn catch_up(http: &reqwest::Client, shape_url: &str, query: &str) -> Result<(String, String, u64)> {
    catch_up_as(http, shape_url, query, None).await
}

/// [`catch_up`] sending `Authorization: Bearer <token>` when given.
async fn catch_up_as(
    http: &reqwest::Client,
    shape_url: &str,
    query: &str,
    token: Option<&str>,
) -> Result<(String, String, u64)> {
    let mut offset = "-1".to_string();
    let mut handle = String::new();
    let mut messages = 0u64;
    loop {
        let mut url = format!("{shape_url}?{query}&offset={offset}");
        if !handle.is_empty() {
            url.push_str(&format!("&handle={handle}"));
        }
        let mut req = http.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await?;
        if r.status() != 200 {
            return Err(anyhow!("{url}: {} {}", r.status(), r.text().await.unwrap_or_default()));
        }
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
        handle = h("electric-handle").unwrap_or_default();
        offset = h("electric-offset").unwrap_or_default();
        let done = h("electric-up-to-date").is_some();
        let body = r.bytes().await?;
        messages += count(&body, b"{\"key\":");
        if done {
            return Ok((handle, offset, messages));
        }
    }
}

fn count(hay: &[u8], needle: &[u8]) -> u64 {
    hay.windows(needle.len()).filter(|w| *w == needle).count() as u64
}

async fn routing(changes: u64, runs: usize) -> Result<()> {
    for shapes in [1u64, 1000] {
        let (mut rates, mut decodes) = (vec![], vec![]);
        for _ in 0..runs {
            let (rate, decode) = routing_once(shapes, changes).await?;
            rates.push(rate);
            decodes.push(decode);
        }
        let (rate, decode) = (median(rates.clone()), median(decodes));
        println!(
            "routing: {shapes:>5} equality shape(s): {rate:>9.0} matching changes/s into shape logs (median of {runs}; {changes} changes per run; runs {})\n             \x20 yardstick, Postgres decoding the same backlog in the backend (pg_logical_slot_peek_binary_changes, pgoutput): {decode:>9.0} changes/s; Ferrite / yardstick {:.2}",
            rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
            rate / decode
        );
    }
    Ok(())
}

/// One routing run: (Ferrite's matching changes/s into shape logs, Postgres' own decoding of
/// the same backlog in changes/s), the yardstick timed on the same slot just before Ferrite
/// streams it.
async fn routing_once(shapes: u64, changes: u64) -> Result<(f64, f64)> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute("CREATE TABLE ev (id bigint PRIMARY KEY, tenant int NOT NULL, payload text)").await?;
    let cfg = config(&env, "shapes");
    // Create the shapes, then stop the server so the changes pile up in the slot.
    {
        let server = ferrite_server::start(cfg.clone()).await?;
        wait_healthy(&server.url()).await?;
        let http = reqwest::Client::new();
        let shape_url = format!("{}/v1/shape", server.url());
        let mut tasks = vec![];
        for t in 0..shapes {
            let http = http.clone();
            let shape_url = shape_url.clone();
            tasks.push(tokio::spawn(async move {
                catch_up(&http, &shape_url, &format!("table=ev&where=tenant%20%3D%20{t}")).await
            }));
        }
        for t in tasks {
            t.await??;
        }
        server.shutdown().await;
    }
    let batch = 1000u64;
    let mut start = 1u64;
    while start <= changes {
        let end = (start + batch - 1).min(changes);
        pg.batch_execute(&format!(
            "INSERT INTO ev SELECT g, g % {shapes}, 'payload ' || g FROM generate_series({start}, {end}) g"
        ))
        .await?;
        start = end + 1;
    }
    // The yardstick: Postgres decodes the backlog through pgoutput in the backend (peek: the
    // slot stays where it is for Ferrite), with no network, parsing or routing.
    let t0 = Instant::now();
    let decoded: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)",
            &[&cfg.slot_name, &cfg.publication],
        )
        .await?
        .get(0);
    let decode_secs = t0.elapsed().as_secs_f64();
    // (Each inserted row is one message; the rest are BEGIN/COMMIT and relation messages.)
    if (decoded as u64) < changes {
        return Err(anyhow!("Postgres decoded {decoded} messages from a backlog of {changes} changes"));
    }
    let server = ferrite_server::start(cfg).await?;
    let t0 = Instant::now();
    let observer = server.observer();
    let metrics = observer.metrics();
    let deadline = t0 + Duration::from_secs(600);
    while metrics.log_messages.load(Ordering::Relaxed) < changes {
        if Instant::now() > deadline {
            return Err(anyhow!("only {} of {changes} changes arrived", metrics.log_messages.load(Ordering::Relaxed)));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    server.shutdown().await;
    drop(env);
    Ok((changes as f64 / secs, changes as f64 / decode_secs))
}

async fn latency(
    clients: usize,
    rooms: usize,
    writes: usize,
    interval_ms: u64,
    server_process: bool,
    runs: usize,
) -> Result<()> {
    let (mut server_p50, mut server_p99, mut recv_p50, mut recv_p99, mut total_p50, mut total_p99) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut last_p50, mut last_p99) = (vec![], vec![]);
    // Out of process, the server's arrival instants are not the benchmark's to read: per-change
    // figures then start at the INSERT.
    let last_from = if server_process { "INSERT sent" } else { "arrival" };
    for run_no in 1..=runs {
        let run = latency_once(clients, rooms, writes, interval_ms, server_process).await?;
        // Each run's own figures too: the machine is noisy, the spread says how much.
        println!(
            "  run {run_no}: engine-added p50 {:.2} ms, p99 {:.2} ms; {last_from} → last client of a change p50 {:.2} ms, p99 {:.2} ms",
            run.server_p50,
            run.server_p99,
            percentile(&run.last_client, 0.5),
            percentile(&run.last_client, 0.99)
        );
        server_p50.push(run.server_p50);
        server_p99.push(run.server_p99);
        recv_p50.push(percentile(&run.received, 0.5));
        recv_p99.push(percentile(&run.received, 0.99));
        total_p50.push(percentile(&run.total, 0.5));
        total_p99.push(percentile(&run.total, 0.99));
        last_p50.push(percentile(&run.last_client, 0.5));
        last_p99.push(percentile(&run.last_client, 0.99));
    }
    let server = if server_process { "server in its own process" } else { "server in the benchmark's process" };
    println!(
        "latency: {clients} live long-poll clients on {rooms} shapes ({} per write), {writes} single-row writes {interval_ms} ms apart, {server} (medians of {runs}):\n\
         \x20 engine-added (arrival from Postgres → response handed to HTTP)  p50 {:.2} ms, p99 {:.2} ms",
        clients / rooms,
        median(server_p50),
        median(server_p99)
    );
    if !server_process {
        println!(
            "  arrival from Postgres → parsed by the client (same machine)     p50 {:.2} ms, p99 {:.2} ms",
            median(recv_p50),
            median(recv_p99)
        );
    }
    println!(
        "  total, INSERT sent → parsed by the client                       p50 {:.2} ms, p99 {:.2} ms\n\
         \x20 {last_from} → parsed by the last of its clients, per change  p50 {:.2} ms, p99 {:.2} ms",
        median(total_p50),
        median(total_p99),
        median(last_p50),
        median(last_p99)
    );
    Ok(())
}

/// One latency run's figures, in milliseconds.
struct LatencyRun {
    /// From the server's delivery histogram.
    server_p50: f64,
    server_p99: f64,
    /// Per delivery, sorted: arrival at the server → parsed by the client.
    received: Vec<f64>,
    /// Per delivery, sorted: INSERT sent → parsed by the client.
    total: Vec<f64>,
    /// Per change, sorted: arrival at the server → parsed by the last of the clients that got it.
    last_client: Vec<f64>,
}

async fn latency_once(
    clients: usize,
    rooms: usize,
    writes: usize,
    interval_ms: u64,
    server_process: bool,
) -> Result<LatencyRun> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute("CREATE TABLE lat (id bigint PRIMARY KEY, room int NOT NULL)").await?;
    let server = if server_process {
        let (child, base) = serve_process(&env, "shapes", &[], &[]).await?;
        LatencyServer::Process(child, base)
    } else {
        let server = ferrite_server::start(config(&env, "shapes")).await?;
        wait_healthy(&server.url()).await?;
        LatencyServer::InProcess(server)
    };
    let shape_url = format!("{}/v1/shape", server.url());
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients + 16).build()?;
    let sent: Arc<sent_times::SentTimes> = Arc::new(sent_times::SentTimes::default());
    let samples =
        Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new(), std::collections::HashMap::<u64, f64>::new())));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = vec![];
    let mut starts = vec![];
    for room in 0..rooms {
        starts.push(catch_up(&http, &shape_url, &format!("table=lat&where=room%20%3D%20{room}")).await?);
    }
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for c in 0..clients {
        let room = c % rooms;
        let (handle, offset, _) = starts[room].clone();
        let (http, shape_url, sent, samples, stop, state, ready) = (
            http.clone(),
            shape_url.clone(),
            sent.clone(),
            samples.clone(),
            stop.clone(),
            server.observer(),
            ready.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut offset = offset;
            let mut cursor = String::new();
            let mut first = true;
            while !stop.load(Ordering::Relaxed) {
                let url = format!("{shape_url}?table=lat&where=room%20%3D%20{room}&handle={handle}&offset={offset}&live=true&cursor={cursor}");
                if first {
                    ready.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
                let Ok(r) = http.get(&url).send().await else {
                    // Not a busy loop when connections fail (say, out of descriptors).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let got = Instant::now();
                let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
                if let Some(o) = h("electric-offset") {
                    offset = o;
                }
                cursor = h("electric-cursor").unwrap_or_default();
                // Decode only the fields needed: the load generator shares the machine's two
                // cores with the server, so its own cost shows up in the figures.
                let Ok(bytes) = r.bytes().await else { continue };
                let Ok(msgs) = serde_json::from_slice::<Vec<LiveMessage>>(&bytes) else { continue };
                for m in msgs {
                    let (Some(id), Some(lsn)) = (m.value.and_then(|v| v.id), m.headers.lsn) else { continue };
                    let (Ok(id), Ok(lsn)) = (id.parse::<u64>(), lsn.parse::<u64>()) else { continue };
                    if let Some(t0) = sent.get(id) {
                        let total = got.duration_since(t0).as_secs_f64() * 1000.0;
                        let engine = state
                            .as_ref()
                            .and_then(|state| state.arrival_of(lsn))
                            .map(|t| got.duration_since(t).as_secs_f64() * 1000.0);
                        let mut s = samples.lock().unwrap();
                        s.1.push(total);
                        // The last client of a change: from its arrival at the server when
                        // known (in process), else from the INSERT.
                        let since = engine.unwrap_or(total);
                        let last = s.2.entry(id).or_insert(since);
                        *last = last.max(since);
                        if let Some(e) = engine {
                            s.0.push(e);
                        }
                    }
                }
            }
        }));
    }
    while ready.load(Ordering::Relaxed) < clients {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The first writes warm caches and connections and are not measured.
    const WARMUP: usize = 50;
    let mut histogram_before = vec![];
    for i in 0..WARMUP + writes {
        let id = i as u64 + 1;
        if i == WARMUP {
            match &server {
                LatencyServer::InProcess(s) => s.observer().metrics().live_delivery.reset(),
                LatencyServer::Process(_, base) => histogram_before = relational::delivery_histogram(base).await?,
            }
        }
        if i >= WARMUP {
            sent.put(id, Instant::now());
        }
        pg.execute("INSERT INTO lat VALUES ($1, $2)", &[&(id as i64), &((i % rooms) as i32)]).await?;
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    let expected = writes * clients / rooms;
    let deadline = Instant::now() + Duration::from_secs(30);
    while samples.lock().unwrap().1.len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut engine, mut total, last) = std::mem::take(&mut *samples.lock().unwrap());
    let mut last_client: Vec<f64> = last.into_values().collect();
    last_client.sort_by(|a, b| a.total_cmp(b));
    if total.len() < expected {
        eprintln!("warning: only {} of {expected} deliveries observed", total.len());
    }
    for h in handles {
        h.abort();
    }
    let (server_p50, server_p99) = match server {
        LatencyServer::InProcess(server) => {
            let observer = server.observer();
            let delivery = &observer.metrics().live_delivery;
            let quantiles = (delivery.quantile(0.5) * 1000.0, delivery.quantile(0.99) * 1000.0);
            server.shutdown().await;
            quantiles
        }
        LatencyServer::Process(_child, base) => {
            let after = relational::delivery_histogram(&base).await?;
            let q = |p| relational::interpolated_quantile(&histogram_before, &after, p) * 1000.0;
            (q(0.5), q(0.99))
        }
    };
    engine.sort_by(|a, b| a.total_cmp(b));
    total.sort_by(|a, b| a.total_cmp(b));
    Ok(LatencyRun { server_p50, server_p99, received: engine, total, last_client })
}

/// The server a latency run measures.
enum LatencyServer {
    /// Inside the benchmark's runtime (its state readable directly).
    InProcess(ferrite_server::RunningServer),
    /// A `ferrite serve` process and its base URL.
    Process(KillOnDrop, String),
}

impl LatencyServer {
    fn url(&self) -> String {
        match self {
            LatencyServer::InProcess(s) => s.url(),
            LatencyServer::Process(_, base) => base.clone(),
        }
    }

    /// The in-process server's state (arrival times of changes), when it is in process.
    fn observer(&self) -> Option<ferrite_server::Observer> {
        match self {
            LatencyServer::InProcess(s) => Some(s.observer()),
            LatencyServer::Process(..) => None,
        }
    }
}

/// The parts of a live message the latency benchmark reads.
#[derive(serde::Deserialize)]
struct LiveMessage {
    headers: LiveHeaders,
    value: Option<LiveValue>,
}

#[derive(serde::Deserialize)]
struct LiveHeaders {
    lsn: Option<String>,
}

#[derive(serde::Deserialize)]
struct LiveValue {
    id: Option<String>,
}

/// A tiny id → instant map shared by the writer and the clients.
mod sent_times {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;

    #[derive(Default)]
    pub struct SentTimes(Mutex<HashMap<u64, Instant>>);

    impl SentTimes {
        pub fn put(&self, k: u64, v: Instant) {
            self.0.lock().unwrap().insert(k, v);
        }
        pub fn get(&self, k: u64) -> Option<Instant> {
            self.0.lock().unwrap().get(&k).copied()
        }
    }
}

async fn snapshot(rows: u64, runs: usize) -> Result<()> {
    let mut snap = vec![];
    let mut serve = vec![];
    for _ in 0..runs {
        let (a, b) = snapshot_once(rows).await?;
        snap.push(a);
        serve.push(b);
    }
    println!(
        "snapshot: {rows}-row shape: initial snapshot {:.0} rows/s, catch-up serving {:.0} rows/s (medians of {runs})",
        median(snap),
        median(serve)
    );
    Ok(())
}

async fn snapshot_once(rows: u64) -> Result<(f64, f64)> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute(&format!(
        "CREATE TABLE big (id int PRIMARY KEY, title text NOT NULL, n int, at timestamptz);
         INSERT INTO big SELECT g, 'row number ' || g, g % 1000, '2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, {rows}) g;
         ANALYZE big;"
    ))
    .await?;
    let server = ferrite_server::start(config(&env, "shapes")).await?;
    wait_healthy(&server.url()).await?;
    let shape_url = format!("{}/v1/shape", server.url());
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    let (_, _, n1) = catch_up(&http, &shape_url, "table=big").await?;
    let snap_secs = t0.elapsed().as_secs_f64();
    if n1 != rows {
        return Err(anyhow!("snapshot delivered {n1} rows, expected {rows}"));
    }
    let t1 = Instant::now();
    let (_, _, n2) = catch_up(&http, &shape_url, "table=big").await?;
    let serve_secs = t1.elapsed().as_secs_f64();
    if n2 != rows {
        return Err(anyhow!("catch-up delivered {n2} rows, expected {rows}"));
    }
    server.shutdown().await;
    Ok((rows as f64 / snap_secs, rows as f64 / serve_secs))
}

/// Catch-up serving with and without compression: one server, one shape; each run reads the
/// whole shape once per mode, the modes alternating (plain, gzip with an empty cache, gzip again
/// from the cache, the same for brotli). Rates are of the JSON delivered (before compression).
async fn compression(rows: u64, runs: usize) -> Result<()> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute(&format!(
        "CREATE TABLE big (id int PRIMARY KEY, title text NOT NULL, n int, at timestamptz);
         INSERT INTO big SELECT g, 'row number ' || g, g % 1000, '2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, {rows}) g;
         ANALYZE big;"
    ))
    .await?;
    let server = ferrite_server::start(config(&env, "shapes")).await?;
    wait_healthy(&server.url()).await?;
    let shape_url = format!("{}/v1/shape", server.url());
    let http = reqwest::Client::new();
    // The snapshot, and the plain figures every other mode is checked against.
    let plain = wire_catch_up(&http, &shape_url, None).await?;
    let modes: [(&str, Option<&str>, bool); 5] = [
        ("plain", None, false),
        ("gzip, compressed for the request", Some("gzip"), true),
        ("gzip, from the cache", Some("gzip"), false),
        ("brotli, compressed for the request", Some("br"), true),
        ("brotli, from the cache", Some("br"), false),
    ];
    let mut rates: Vec<Vec<f64>> = vec![vec![]; modes.len()];
    let mut wire = vec![0u64; modes.len()];
    for _ in 0..runs {
        for (i, (_, accept, cold)) in modes.iter().enumerate() {
            if *cold {
                server.observer().forget_compressed_responses();
            }
            let t0 = Instant::now();
            let got = wire_catch_up(&http, &shape_url, *accept).await?;
            let secs = t0.elapsed().as_secs_f64();
            if got.offsets != plain.offsets {
                return Err(anyhow!("{accept:?}: the responses differ from the plain ones"));
            }
            if accept.is_some() && got.encoded == 0 {
                return Err(anyhow!("{accept:?}: nothing came compressed"));
            }
            wire[i] = got.bytes;
            rates[i].push(plain.bytes as f64 / secs / 1e6);
        }
    }
    let mb = plain.bytes as f64 / 1e6;
    println!(
        "compression: {rows}-row shape, {mb:.0} MB of JSON in {} catch-up responses: gzip {:.1} MB ({:.1}x smaller), brotli {:.1} MB ({:.1}x smaller)",
        plain.offsets.len(),
        wire[1] as f64 / 1e6,
        plain.bytes as f64 / wire[1] as f64,
        wire[3] as f64 / 1e6,
        plain.bytes as f64 / wire[3] as f64
    );
    for (i, (name, _, _)) in modes.iter().enumerate() {
        let r = median(rates[i].clone());
        println!(
            "compression: catch-up serving, {name:<34} {r:>7.0} MB/s of JSON ({:.2}M rows/s) (median of {runs} alternating runs)",
            r * 1e6 / plain.bytes as f64 * rows as f64 / 1e6
        );
    }
    server.shutdown().await;
    Ok(())
}

/// What one catch-up read from -1 to up-to-date received.
struct Wire {
    /// `electric-offset` of each response, in order.
    offsets: Vec<String>,
    /// Body bytes as received (compressed or not).
    bytes: u64,
    /// Responses that came with a `content-encoding`.
    encoded: usize,
}

/// Reads the `big` shape from -1 to up-to-date, asking for `accept_encoding`; bodies are not
/// decoded (the client's decoding would take CPU from the server on this machine).
async fn wire_catch_up(http: &reqwest::Client, shape_url: &str, accept_encoding: Option<&str>) -> Result<Wire> {
    let mut w = Wire { offsets: vec![], bytes: 0, encoded: 0 };
    let mut offset = "-1".to_string();
    let mut handle = String::new();
    loop {
        let mut url = format!("{shape_url}?table=big&offset={offset}");
        if !handle.is_empty() {
            url.push_str(&format!("&handle={handle}"));
        }
        let mut req = http.get(&url);
        if let Some(a) = accept_encoding {
            req = req.header("accept-encoding", a);
        }
        let r = req.send().await?;
        if r.status() != 200 {
            return Err(anyhow!("{url}: {} {}", r.status(), r.text().await.unwrap_or_default()));
        }
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
        handle = h("electric-handle").unwrap_or_default();
        offset = h("electric-offset").unwrap_or_default();
        w.encoded += h("content-encoding").is_some() as usize;
        let done = h("electric-up-to-date").is_some();
        w.offsets.push(offset.clone());
        w.bytes += r.bytes().await?.len() as u64;
        if done {
            return Ok(w);
        }
    }
}

async fn rss(clients: usize) -> Result<()> {
    const SHAPES: usize = 10;
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute("CREATE TABLE live (id bigint PRIMARY KEY, room int NOT NULL)").await?;
    let max_existing = (clients * 2).to_string();
    let (child, base) = serve_process(&env, "rss", &[], &[("FERRITE_MAX_CONCURRENT_EXISTING", &max_existing)]).await?;
    let shape_url = format!("{base}/v1/shape");
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients + 16).build()?;
    let mut starts = vec![];
    for room in 0..SHAPES {
        starts.push(catch_up(&http, &shape_url, &format!("table=live&where=room%20%3D%20{room}")).await?);
    }
    let idle_rss = rss_kib(child.0.id())?;
    // Memory per idle shape: create many more shapes and divide the growth.
    const IDLE_SHAPES: usize = 1000;
    // In waves that stay under the server's initial-request admission limit.
    for wave in (0..IDLE_SHAPES).collect::<Vec<_>>().chunks(100) {
        let mut creations = vec![];
        for &i in wave {
            let (http, shape_url) = (http.clone(), shape_url.clone());
            creations.push(tokio::spawn(async move {
                catch_up(&http, &shape_url, &format!("table=live&where=room%20%3D%20{}", 1000 + i)).await
            }));
        }
        for c in creations {
            c.await??;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_idle = rss_kib(child.0.id())?;
    println!(
        "rss: {IDLE_SHAPES} extra idle shapes add {:.1} KiB each (server RSS {:.1} → {:.1} MiB)",
        (with_idle.saturating_sub(idle_rss)) as f64 / IDLE_SHAPES as f64,
        idle_rss as f64 / 1024.0,
        with_idle as f64 / 1024.0
    );
    let idle_rss = with_idle;
    let mut tasks = vec![];
    for c in 0..clients {
        let room = c % SHAPES;
        let (handle, offset, _) = starts[room].clone();
        let http = http.clone();
        let url = format!(
            "{shape_url}?table=live&where=room%20%3D%20{room}&handle={handle}&offset={offset}&live=true&cursor=1"
        );
        tasks.push(tokio::spawn(async move { http.get(&url).send().await.map(|r| r.status().as_u16()) }));
    }
    let deadline = Instant::now() + Duration::from_secs(50);
    let mut waiting = 0;
    while Instant::now() < deadline {
        let m = reqwest::get(format!("{base}/metrics")).await?.text().await?;
        waiting = m
            .lines()
            .find(|l| l.starts_with("ferrite_live_requests_waiting "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
            .unwrap_or(0);
        if waiting >= clients {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let busy_rss = rss_kib(child.0.id())?;
    println!(
        "rss: {waiting} concurrent live long-poll clients on {SHAPES} shapes: server RSS {:.1} MiB (before the clients: {:.1} MiB)",
        busy_rss as f64 / 1024.0,
        idle_rss as f64 / 1024.0
    );
    for t in tasks {
        t.abort();
    }
    drop(child);
    Ok(())
}

/// Starts `ferrite serve` (the release binary next to this one) on `env`'s database, with shapes
/// in `sub`, `args` added and `envs` set (long-polls held 60 s, warnings only); returns it and
/// its base URL once healthy.
async fn serve_process(
    env: &Env,
    sub: &str,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &str)],
) -> Result<(KillOnDrop, String)> {
    let bin = std::env::current_exe()?.with_file_name("ferrite");
    if !bin.exists() {
        return Err(anyhow!("{} not found: build it with `cargo build --release -p ferrite`", bin.display()));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["serve", "--port", &port.to_string(), "--data-dir"])
        .arg(env.dir.path().join(sub))
        .args(args)
        .env("DATABASE_URL", &env.url)
        .env("FERRITE_LOG", "warn")
        .env("FERRITE_LONG_POLL_TIMEOUT_MS", "60000");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = KillOnDrop(cmd.spawn().context("spawn ferrite serve")?);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await?;
    Ok((child, base))
}

/// The server process under measurement; killed however the benchmark ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process's resident memory now (KiB).
fn rss_kib(pid: u32) -> Result<u64> {
    proc_status_kib(pid, "VmRSS")
}

/// A process's peak resident memory so far (KiB).
fn peak_rss_kib(pid: u32) -> Result<u64> {
    proc_status_kib(pid, "VmHWM")
}

/// A KiB figure of `/proc/<pid>/status`.
fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no {field} for {pid}"))
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string()))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| format!("{:.0} GiB RAM", k / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown RAM".into())
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only touch the struct we pass.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

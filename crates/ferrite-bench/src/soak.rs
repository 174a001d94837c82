//! `ferrite-bench soak`: many live long-poll clients and a steady write load for a fixed time,
//! against a real `ferrite serve` process. Every interval it prints one line — the server's RSS,
//! open file descriptors and open shapes, write → client latency percentiles of that interval,
//! messages delivered and errors — and at the end the first and last RSS with a verdict on
//! growth (flat memory is the target), after checking that every client received every write of
//! its shape exactly once, in order.
//!
//! The clients: most follow one of `--shapes` small shapes (one room each), a tenth follow one
//! shape shared by all (the whole table), and a tenth reconnect every few seconds (a new
//! connection resuming from their last offset, as a browser tab that comes back does).
//! The writer inserts `--writes-per-sec` rows a second, each in one room, numbered per room
//! (`seq`) and stamped with the time the insert was issued (`ts`, µs since the epoch).

use crate::{env, percentile, rss_kib, serve_process};
use anyhow::{anyhow, Result};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What `ferrite-bench soak` runs (see the command's options for the defaults).
#[derive(Debug, Clone)]
pub struct Options {
    /// Live clients in all.
    pub clients: usize,
    /// How long the write load runs.
    pub duration: Duration,
    /// How often a line of figures is printed.
    pub interval: Duration,
    /// Rows inserted per second.
    pub writes_per_sec: u32,
    /// Room shapes the clients are spread over (besides the shared one).
    pub shapes: usize,
}

/// Parses `30m`, `90s`, `1h` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = n.parse().map_err(|_| format!("not a duration: {s:?} (say 30m, 90s or 1h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("not a duration: {s:?} (say 30m, 90s or 1h)")),
    };
    Ok(Duration::from_secs(secs))
}

/// What the clients share with the reporter.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    errors: AtomicU64,
    /// Write → client latencies (ms) since the last report.
    latencies: Mutex<Vec<f64>>,
    /// Order violations and duplicates, described (a few are kept).
    faults: Mutex<Vec<String>>,
    fault_count: AtomicU64,
}

impl Tally {
    fn fault(&self, what: String) {
        self.fault_count.fetch_add(1, Ordering::Relaxed);
        let mut f = self.faults.lock();
        if f.len() < 10 {
            f.push(what);
        }
    }
}

/// Which shape a client follows.
#[derive(Clone, Copy)]
enum Follows {
    Room(u32),
    Everything,
}

impl Follows {
    fn query(self) -> String {
        match self {
            Follows::Room(r) => format!("table=soak&where=room%20%3D%20{r}"),
            Follows::Everything => "table=soak".into(),
        }
    }
}

/// One client's position and what it has seen: the last `seq` per room.
struct Client {
    follows: Follows,
    churn: bool,
    handle: String,
    offset: String,
    cursor: Option<String>,
    last_seq: HashMap<u32, i64>,
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or_default()
}

/// Runs the soak and prints its report. Fails when a client missed, repeated or reordered a
/// write, or the server died.
pub async fn soak(o: Options) -> Result<()> {
    if o.clients == 0 || o.shapes == 0 || o.writes_per_sec == 0 || o.interval.is_zero() {
        return Err(anyhow!("--clients, --shapes, --writes-per-sec and --interval must be above 0"));
    }
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute(
        "CREATE TABLE soak (id bigserial PRIMARY KEY, room int NOT NULL, seq bigint NOT NULL, ts bigint NOT NULL)",
    )
    .await?;
    let limit = (o.clients * 2 + 100).to_string();
    let envs = [("FERRITE_MAX_CONCURRENT_EXISTING", limit.as_str()), ("FERRITE_MAX_CONCURRENT_INITIAL", "1000")];
    let (server, base) = serve_process(&env, "soak", &[], &envs).await?;
    let pid = server.0.id();
    let shape_url = format!("{base}/v1/shape");
    let http = reqwest::Client::builder().pool_max_idle_per_host(o.clients + 16).build()?;
    println!(
        "soak: {} live clients ({} on {} room shapes, {} of them reconnecting every 3–8 s; {} on one shared shape), {} writes/s for {} s, a line every {} s",
        o.clients,
        o.clients - o.clients / 10,
        o.shapes,
        o.clients / 10,
        o.clients / 10,
        o.writes_per_sec,
        o.duration.as_secs(),
        o.interval.as_secs()
    );

    // The clients, caught up (the table is empty) before the writes start, in waves.
    let shared = o.clients / 10;
    let churning = o.clients / 10;
    let mut clients = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        let follows = if i < shared { Follows::Everything } else { Follows::Room((i % o.shapes) as u32 + 1) };
        clients.push(Client {
            follows,
            churn: i >= shared && i < shared + churning,
            handle: String::new(),
            offset: "-1".into(),
            cursor: None,
            last_seq: HashMap::new(),
        });
    }
    let mut ready = Vec::with_capacity(o.clients);
    let mut pending = clients.into_iter();
    loop {
        let wave: Vec<Client> = pending.by_ref().take(100).collect();
        if wave.is_empty() {
            break;
        }
        let tasks: Vec<_> = wave
            .into_iter()
            .map(|mut c| {
                let (http, url) = (http.clone(), shape_url.clone());
                tokio::spawn(async move {
                    let (handle, offset, _) = crate::catch_up(&http, &url, &c.follows.query()).await?;
                    c.handle = handle;
                    c.offset = offset;
                    Ok::<_, anyhow::Error>(c)
                })
            })
            .collect();
        for t in tasks {
            ready.push(t.await??);
        }
    }

    let tally = Arc::new(Tally::default());
    let (stop_clients, stopped) = tokio::sync::watch::channel(false);
    let follows: Vec<Follows> = ready.iter().map(|c| c.follows).collect();
    let mut running = Vec::with_capacity(ready.len());
    for (i, c) in ready.into_iter().enumerate() {
        let (http, url, tally, stop) = (http.clone(), shape_url.clone(), tally.clone(), stopped.clone());
        // Reconnecting clients cut their request every 3 to 8 s, spread out.
        let period = Duration::from_millis(3000 + (i as u64 * 389) % 5000);
        running.push(tokio::spawn(follow(c, http, url, tally, stop, period)));
    }

    // The writer.
    let written: Arc<Mutex<HashMap<u32, i64>>> = Arc::default();
    let stop_writer = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop, tally) = (written.clone(), stop_writer.clone(), tally.clone());
        let (rooms, rate) = (o.shapes as u32, o.writes_per_sec);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let room = (n % rooms as u64) as u32 + 1;
                let seq = written.lock().get(&room).copied().unwrap_or(0) + 1;
                let r = pg
                    .execute(
                        "INSERT INTO soak (room, seq, ts) VALUES ($1, $2, $3)",
                        &[&(room as i32), &seq, &now_micros()],
                    )
                    .await;
                match r {
                    Ok(_) => {
                        written.lock().insert(room, seq);
                        n += 1;
                    }
                    Err(e) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("soak: a write failed: {e}");
                    }
                }
            }
            n
        })
    };

    // The report, every interval.
    let started = Instant::now();
    let mut rss_series = vec![];
    let mut next = started + o.interval;
    let end = started + o.duration;
    let mut delivered_before = 0;
    let mut errors_before = 0;
    loop {
        let at = next.min(end);
        tokio::time::sleep_until(at.into()).await;
        if server_exited(pid) {
            return Err(anyhow!("the server process exited during the soak"));
        }
        let rss = rss_kib(pid)?;
        rss_series.push(rss);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
        let shapes = open_shapes(&http, &base).await.unwrap_or(-1);
        let mut lat = std::mem::take(&mut *tally.latencies.lock());
        lat.sort_by(|a, b| a.total_cmp(b));
        let delivered = tally.delivered.load(Ordering::Relaxed);
        let errors = tally.errors.load(Ordering::Relaxed) + tally.fault_count.load(Ordering::Relaxed);
        println!(
            "soak: t={:>5}s rss={:>7.1} MiB fds={:>5} shapes={:>4} latency p50={:>6.1} ms p95={:>6.1} ms p99={:>6.1} ms delivered={:>8} errors={}",
            started.elapsed().as_secs(),
            rss as f64 / 1024.0,
            fds,
            shapes,
            percentile(&lat, 0.50),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99),
            delivered - delivered_before,
            errors - errors_before,
        );
        delivered_before = delivered;
        errors_before = errors;
        if at >= end {
            break;
        }
        next += o.interval;
    }
    stop_writer.store(true, Ordering::Relaxed);
    let writes = writer.await?;
    // Every client gets to the last write of its shape (within a minute), then stops.
    let expected: HashMap<u32, i64> = written.lock().clone();
    let all_rooms: i64 = expected.values().sum();
    let expected_total: u64 = follows
        .iter()
        .map(|f| match f {
            Follows::Room(r) => expected.get(r).copied().unwrap_or(0),
            Follows::Everything => all_rooms,
        } as u64)
        .sum();
    let settle = Instant::now() + Duration::from_secs(60);
    while tally.delivered.load(Ordering::Relaxed) < expected_total && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_clients.send(true);
    let mut missing = 0u64;
    let mut received = 0u64;
    for t in running {
        let c = t.await?;
        let want: Vec<(u32, i64)> = match c.follows {
            Follows::Room(r) => vec![(r, expected.get(&r).copied().unwrap_or(0))],
            Follows::Everything => expected.iter().map(|(r, s)| (*r, *s)).collect(),
        };
        for (room, last) in want {
            let got = c.last_seq.get(&room).copied().unwrap_or(0);
            received += got.max(0) as u64;
            if got != last {
                missing += 1;
                tally.fault(format!(
                    "a client of {:?} holds room {room} up to seq {got}, the writer wrote {last}",
                    c.follows.query()
                ));
            }
        }
    }
    let faults = tally.fault_count.load(Ordering::Relaxed);
    let first = rss_series.first().copied().unwrap_or(0) as f64 / 1024.0;
    let last = rss_series.last().copied().unwrap_or(0) as f64 / 1024.0;
    let peak = rss_series.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    let growth = if first > 0.0 { (last - first) / first * 100.0 } else { 0.0 };
    let verdict = if last - first <= 16.0 || growth <= 10.0 { "flat" } else { "GROWING" };
    println!("soak: rss first {first:.1} MiB, last {last:.1} MiB, peak {peak:.1} MiB, growth {growth:+.1}%: {verdict}");
    println!(
        "soak: {writes} writes, {received} deliveries checked: {}",
        if faults == 0 {
            "every client received every write of its shape once, in order".to_string()
        } else {
            format!("{faults} faults")
        }
    );
    drop(server);
    if faults > 0 || missing > 0 {
        for f in tally.faults.lock().iter() {
            eprintln!("soak: {f}");
        }
        return Err(anyhow!("{faults} clients missed, repeated or reordered writes"));
    }
    Ok(())
}

/// Follows one shape live until `stop`: long-polls from its offset, checks each insert's `seq`
/// against the last one of its room (exactly once, in order), and records its latency.
/// A reconnecting client drops its request every `period` and goes on with a new connection.
async fn follow(
    mut c: Client,
    mut http: reqwest::Client,
    url: String,
    tally: Arc<Tally>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    period: Duration,
) -> Client {
    let query = c.follows.query();
    let mut reconnect_at = tokio::time::Instant::now() + period;
    while !*stop.borrow() {
        if c.churn && tokio::time::Instant::now() >= reconnect_at {
            http = reqwest::Client::new();
            reconnect_at = tokio::time::Instant::now() + period;
        }
        let mut u = format!("{url}?{query}&handle={}&offset={}&live=true", c.handle, c.offset);
        if let Some(cursor) = &c.cursor {
            u.push_str(&format!("&cursor={cursor}"));
        }
        let request = http.get(&u).send();
        let cut = async {
            if c.churn {
                tokio::time::sleep_until(reconnect_at).await
            } else {
                std::future::pending().await
            }
        };
        let response = tokio::select! {
            r = request => r,
            _ = cut => continue,
            _ = stop.changed() => break,
        };
        let r = match response {
            Ok(r) => r,
            Err(_) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = r.status().as_u16();
        if status != 200 {
            if status == 409 {
                tally.fault(format!("{query}: 409 (the shape was rotated) at offset {}", c.offset));
            }
            tally.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
        let (handle, offset, cursor) = (h("electric-handle"), h("electric-offset"), h("electric-cursor"));
        let body = match r.bytes().await {
            Ok(b) => b,
            Err(_) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let received = now_micros();
        let Ok(Value::Array(messages)) = serde_json::from_slice::<Value>(&body) else {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut lat = Vec::new();
        for m in &messages {
            if m["headers"]["operation"] != "insert" {
                continue;
            }
            let field = |k: &str| m["value"][k].as_str().and_then(|v| v.parse::<i64>().ok());
            let (Some(room), Some(seq), Some(ts)) = (field("room"), field("seq"), field("ts")) else {
                tally.fault(format!("{query}: an insert without room/seq/ts: {m}"));
                continue;
            };
            let last = c.last_seq.entry(room as u32).or_insert(0);
            if seq != *last + 1 {
                tally.fault(format!("{query}: room {room} seq {seq} after {last}"));
            }
            *last = (*last).max(seq);
            lat.push((received - ts) as f64 / 1000.0);
        }
        if !lat.is_empty() {
            tally.delivered.fetch_add(lat.len() as u64, Ordering::Relaxed);
            tally.latencies.lock().extend(lat);
        }
        if let Some(handle) = handle {
            c.handle = handle;
        }
        if let Some(offset) = offset {
            c.offset = offset;
        }
        c.cursor = cursor;
    }
    c
}

/// Whether process `pid` is gone (or a zombie).
fn server_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// The `ferrite_shapes` gauge of the server's `/metrics`.
async fn open_shapes(http: &reqwest::Client, base: &str) -> Result<i64> {
    let text = http.get(format!("{base}/metrics")).send().await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix("ferrite_shapes ").and_then(|v| v.trim().parse().ok()))
        .ok_or_else(|| anyhow!("no ferrite_shapes in /metrics"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("m").is_err());
    }
}

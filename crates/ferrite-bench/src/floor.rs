//! The fan-out yardstick: what this machine can do at best when one change must reach many
//! held long-polls. A bare HTTP server (axum, as Ferrite uses, in a process of its own) holds
//! the clients' requests and, on each trigger, answers every one of them with the same prebuilt
//! body — no routing, no shape logs, no durability, no per-client work but the response itself.
//! The clients are the same loop the Ferrite figures use. What it measures is what Ferrite's
//! `ferrite_live_delivery_seconds` measures: from the trigger to each response handed to HTTP.
//!
//! `ferrite-bench` runs the server half as its own hidden subcommand (`floor-server`), so that,
//! as with Ferrite, the server and the clients are separate processes on the same two cores.

use crate::{median, percentile};
use anyhow::{anyhow, Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One update message and the `up-to-date` control message, as Ferrite sends a one-row update
/// to a relational shape (tags and active conditions included), about the same size.
const BODY: &str = r#"[{"key":"\"public\".\"steps\"/\"10\"","value":{"id":"10","team_id":"1","name":"v123"},"headers":{"operation":"update","relation":["public","steps"],"txids":["123456"],"lsn":"123456789","op_position":0,"last":true,"tags":["f3b2c1d0e9a8b7c6d5e4f3a2b1c0d9e8"],"active_conditions":[true]}},{"headers":{"control":"up-to-date","global_last_seen_lsn":"123456789"}}]"#;

/// The trigger's state: how many changes there were, when the last one came, and the delays
/// from it to each response (ms).
struct Floor {
    version: watch::Sender<u64>,
    fired: Mutex<Instant>,
    delays: Mutex<Vec<f64>>,
}

#[derive(serde::Deserialize)]
struct Poll {
    offset: u64,
}

/// Runs the yardstick server on a free port; prints `port <n>` and serves until killed.
pub async fn serve() -> Result<()> {
    let (version, _) = watch::channel(0u64);
    let floor = Arc::new(Floor { version, fired: Mutex::new(Instant::now()), delays: Mutex::new(vec![]) });
    let app = Router::new()
        .route("/poll", get(poll))
        .route("/fire", post(fire))
        .route("/delays", post(take_delays))
        .with_state(floor);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("port {}", listener.local_addr()?.port());
    axum::serve(listener, app).await?;
    Ok(())
}

/// A held long-poll: answered at once when a change after `offset` exists, else at the next one
/// (or after 20 s with nothing).
async fn poll(State(f): State<Arc<Floor>>, Query(q): Query<Poll>) -> impl IntoResponse {
    let mut rx = f.version.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = *rx.borrow_and_update();
        if v > q.offset {
            let delay = f.fired.lock().elapsed().as_secs_f64() * 1000.0;
            f.delays.lock().push(delay);
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=5"));
            h.insert("electric-offset", HeaderValue::from(v));
            h.insert("electric-handle", HeaderValue::from_static("12345678-1732000000000000"));
            h.insert("electric-cursor", HeaderValue::from(v * 20));
            h.insert("electric-up-to-date", HeaderValue::from_static(""));
            h.insert("electric-schema", HeaderValue::from_static(r#"{"id":{"type":"int8","pk_index":0}}"#));
            return (h, BODY).into_response();
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return (HeaderMap::new(), "[]").into_response(),
        }
    }
}

async fn fire(State(f): State<Arc<Floor>>) -> &'static str {
    *f.fired.lock() = Instant::now();
    f.version.send_modify(|v| *v += 1);
    "ok"
}

/// The delays recorded since the last call (ms), as JSON.
async fn take_delays(State(f): State<Arc<Floor>>) -> axum::Json<Vec<f64>> {
    axum::Json(std::mem::take(&mut *f.delays.lock()))
}

/// The yardstick's figures for `clients` clients each receiving every change: p50 and p99 (ms)
/// of trigger → response handed to HTTP, over `changes` changes spaced `every` apart (after 20
/// unmeasured ones). Medians of `runs`.
pub async fn fan_out_floor(clients: usize, changes: usize, every: Duration, runs: usize) -> Result<(f64, f64)> {
    let (mut p50s, mut p99s) = (vec![], vec![]);
    for _ in 0..runs {
        let (p50, p99) = floor_once(clients, changes, every).await?;
        p50s.push(p50);
        p99s.push(p99);
    }
    Ok((median(p50s), median(p99s)))
}

async fn floor_once(clients: usize, changes: usize, every: Duration) -> Result<(f64, f64)> {
    let bin = std::env::current_exe()?;
    let mut child = std::process::Command::new(&bin)
        .arg("floor-server")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("spawn the yardstick server")?;
    let stdout = child.stdout.take().expect("piped");
    let _server = crate::KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port: u16 = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("the yardstick server said {line:?}"))?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients * 2 + 16).build()?;
    let ready = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..clients {
        let (http, base, ready, received) = (http.clone(), base.clone(), ready.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let mut offset = 0u64;
            let mut first = true;
            loop {
                let url = format!("{base}/poll?offset={offset}");
                if first {
                    ready.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
                let Ok(r) = http.get(&url).send().await else { continue };
                if let Some(o) =
                    r.headers().get("electric-offset").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
                {
                    offset = o;
                }
                let Ok(bytes) = r.bytes().await else { continue };
                received.fetch_add(crate::count(&bytes, b"\"operation\":\"update\"") as usize, Ordering::Relaxed);
            }
        }));
    }
    while ready.load(Ordering::Relaxed) < clients {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    const WARMUP: usize = 20;
    for i in 0..WARMUP + changes {
        if i == WARMUP {
            http.post(format!("{base}/delays")).send().await?;
        }
        http.post(format!("{base}/fire")).send().await?.error_for_status()?;
        tokio::time::sleep(every).await;
    }
    let expected = (WARMUP + changes) * clients;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut delays: Vec<f64> = http.post(format!("{base}/delays")).send().await?.json().await?;
    for t in tasks {
        t.abort();
    }
    if received.load(Ordering::Relaxed) < expected {
        return Err(anyhow!("the yardstick's clients saw {} of {expected} changes", received.load(Ordering::Relaxed)));
    }
    delays.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&delays, 0.5), percentile(&delays, 0.99)))
}

//! `ferrite-bench client`: the Rust client's figures — initial sync of a large shape into
//! SQLite (download and apply, after the server already holds the shape's snapshot), local
//! write → readable latency, and how long a full offline queue takes to push and be confirmed.

use crate::{config, env, median, percentile, wait_healthy};
use anyhow::{anyhow, Result};
use ferrite_client::{Change, Client, ShapeDef, TokenSource};
use std::time::Instant;

/// Prints the initial-sync apply rate (target ≥ 300k rows/s) and local write latency.
pub async fn client(rows: u64, runs: usize) -> Result<()> {
    let mut rates = vec![];
    let mut references = vec![];
    let mut writes = vec![];
    let mut drains = vec![];
    for _ in 0..runs {
        let (rate, w, drain) = client_once(rows).await?;
        rates.push(rate);
        // The yardstick right after, so both see the same machine.
        references.push(tokio::task::spawn_blocking(move || raw_sqlite_once(rows)).await??);
        drains.push(drain);
        let mut disk = w[..w.len() / 2].to_vec();
        let mut os = w[w.len() / 2..].to_vec();
        disk.sort_by(|a, b| a.total_cmp(b));
        os.sort_by(|a, b| a.total_cmp(b));
        writes.push((percentile(&disk, 0.5), percentile(&disk, 0.99), percentile(&os, 0.5), percentile(&os, 0.99)));
    }
    let (rate, reference) = (median(rates.clone()), median(references.clone()));
    let list = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
    println!(
        "client: initial sync of a {rows}-row shape into SQLite: {rate:.0} rows/s (median of {runs}: {}; target ≥ 300,000/s)\n\
         \x20 yardstick, the same rows inserted straight into SQLite (rusqlite, one transaction, one prepared INSERT, the \
         client's table and pragmas): {reference:.0} rows/s (runs {}); Ferrite / yardstick {:.2}  target ≥ 0.6",
        list(&rates),
        list(&references),
        rate / reference
    );
    println!(
        "client: local write → readable (Client::write then a SELECT of the row), Durability::Disk (fsync): p50 {:.3} ms, p99 {:.3} ms (medians of {runs})",
        median(writes.iter().map(|w| w.0).collect()),
        median(writes.iter().map(|w| w.1).collect())
    );
    println!(
        "client: local write → readable, Durability::Os: p50 {:.3} ms, p99 {:.3} ms (medians of {runs})",
        median(writes.iter().map(|w| w.2).collect()),
        median(writes.iter().map(|w| w.3).collect())
    );
    println!(
        "client: {QUEUED} queued transactions pushed and confirmed through the shape (outbox empty): {:.0} ms (median of {runs})",
        median(drains)
    );
    Ok(())
}

/// Local writes measured, then pushed together (the default `max_offline_queue`).
const QUEUED: u64 = 1000;

/// One run: (initial-sync rows/s, write → readable latencies in ms (half `Disk`, then half
/// `Os`), queue drain in ms).
async fn client_once(rows: u64) -> Result<(f64, Vec<f64>, f64)> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute(&format!(
        "CREATE TABLE big (id int PRIMARY KEY, title text NOT NULL, n int, at timestamptz);
         INSERT INTO big SELECT g, 'row number ' || g, g % 1000, '2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, {rows}) g;"
    ))
    .await?;
    let server = ferrite_server::start(config(&env, "shapes")).await?;
    wait_healthy(&server.url()).await?;
    // The server takes the snapshot first: the figure is the client's download and apply.
    crate::catch_up(&reqwest::Client::new(), &format!("{}/v1/shape", server.url()), "table=big").await?;
    let file = env.dir.path().join("replica.db");
    let client = Client::open(&file, &server.url(), TokenSource::None).map_err(|e| anyhow!("{e}"))?;
    let def = ShapeDef::table("big");
    let t0 = Instant::now();
    let report = client.sync(&def).await.map_err(|e| anyhow!("{e}"))?;
    let secs = t0.elapsed().as_secs_f64();
    let n = client.query("SELECT count(*) FROM big", &[]).map_err(|e| anyhow!("{e}"))?[0][0].as_u64().unwrap_or(0);
    if n != rows || report.changes as u64 != rows {
        return Err(anyhow!("the replica holds {n} rows ({} changes), expected {rows}", report.changes));
    }
    let mut latencies = vec![];
    for i in 0..QUEUED {
        // The first half flushed to disk (the default), the second half to the OS only.
        if i == QUEUED / 2 {
            client.set_durability(ferrite_client::Durability::Os);
        }
        let id = (i % rows + 1).to_string();
        let t = Instant::now();
        let set = [("title".to_string(), Some(format!("edit {i}")))].into();
        client
            .write(&[Change::Update { table: "big".into(), key: [("id".to_string(), Some(id.clone()))].into(), set }])
            .map_err(|e| anyhow!("{e}"))?;
        let seen =
            client.query("SELECT title FROM big WHERE id = ?1", &[&id.parse::<i64>()?]).map_err(|e| anyhow!("{e}"))?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        if seen[0][0] != serde_json::json!(format!("edit {i}")) {
            return Err(anyhow!("write {i} not readable: {seen:?}"));
        }
    }
    // The whole queue goes out in batches; each transaction leaves the outbox when its txid
    // comes back through the shape.
    let t = Instant::now();
    client.push().await.map_err(|e| anyhow!("{e}"))?;
    loop {
        let m = client.metrics().map_err(|e| anyhow!("{e}"))?;
        if m.pending == 0 && m.unconfirmed == 0 {
            break;
        }
        if t.elapsed().as_secs() > 120 {
            return Err(anyhow!("the queue never drained: {m:?}"));
        }
        client.sync(&def).await.map_err(|e| anyhow!("{e}"))?;
    }
    let drain = t.elapsed().as_secs_f64() * 1000.0;
    server.shutdown().await;
    Ok((rows as f64 / secs, latencies, drain))
}

/// The client's yardstick: the rows of `big` (as the benchmark's Postgres table holds them)
/// inserted into a new SQLite file as fast as SQLite takes them — one transaction, one prepared
/// `INSERT OR REPLACE`, the table the client creates (same affinities, same primary key) under
/// the client's pragmas — with the values built before the clock starts. Returns rows/s, after
/// counting them.
fn raw_sqlite_once(rows: u64) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut db = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE big (\"id\" INTEGER, \"title\" TEXT, \"n\" INTEGER, \"at\" TEXT, PRIMARY KEY (\"id\"));",
    )?;
    let values: Vec<(i64, String, i64, String)> = (1..=rows as i64)
        .map(|g| (g, format!("row number {g}"), g % 1000, format!("2024-01-01 00:00:00+00 {g}")))
        .collect();
    let t0 = Instant::now();
    let tx = db.transaction()?;
    {
        let mut insert =
            tx.prepare("INSERT OR REPLACE INTO big (\"id\", \"title\", \"n\", \"at\") VALUES (?1, ?2, ?3, ?4)")?;
        for (id, title, n, at) in &values {
            insert.execute(rusqlite::params![id, title, n, at])?;
        }
    }
    tx.commit()?;
    let secs = t0.elapsed().as_secs_f64();
    let n: i64 = db.query_row("SELECT count(*) FROM big", [], |r| r.get(0))?;
    if n as u64 != rows {
        return Err(anyhow!("the yardstick's file holds {n} rows, expected {rows}"));
    }
    Ok(rows as f64 / secs)
}

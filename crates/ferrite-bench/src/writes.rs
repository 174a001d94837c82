//! `ferrite-bench writes`: the write path's figures — applied client transactions/s (single-row
//! and 10-row inserts, 100 transactions per `POST /v1/transactions`, several clients at once;
//! then single-row inserts in jwt mode under a write rule on the row and under a membership rule
//! with a subquery) and the latency from sending a transaction to seeing it, by its txid, in
//! one's own live shape.
//!
//! Every result is checked (`applied`), and the table's row count is checked against what was
//! sent, so a figure can never come from writes that did not happen.

use crate::{config, env, median, percentile, wait_healthy};
use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Knobs of one throughput figure.
#[derive(Clone, Copy)]
pub struct Load {
    /// Concurrent clients, each with its own client_id posting batches back to back.
    pub clients: usize,
    /// Batches each client posts.
    pub batches: usize,
    /// Rows inserted by each client transaction.
    pub rows_per_txn: usize,
    /// `write_connections` of the server.
    pub connections: usize,
    /// jwt mode with this write rule on the table (each client its own user, member of a team);
    /// `None`: auth off.
    pub rule: Option<&'static str>,
    /// Whether the audit trail records each transaction (the server's default).
    pub audit: bool,
}

/// A write rule reading only the row and the token.
const PLAIN_RULE: &str = "team_id = claims.team";
/// A write rule following membership and role through a subquery, evaluated by Postgres in
/// each write's transaction.
const MEMBERSHIP_RULE: &str =
    "team_id IN (SELECT team_id FROM team_members WHERE user_id = claims.sub AND role IN ('owner', 'editor'))";
const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";
/// Teams the clients are spread over.
const TEAMS: usize = 4;

const BATCH: usize = 100;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Prints transactions/s (and rows/s) for single-row and 10-row transactions, then the
/// write → own-shape latency.
pub async fn writes(
    clients: usize,
    batches: usize,
    connections: usize,
    latency_writes: usize,
    runs: usize,
) -> Result<()> {
    for rows_per_txn in [1, 10] {
        let load = Load { clients, batches, rows_per_txn, connections, rule: None, audit: true };
        let (mut rates, mut references) = (vec![], vec![]);
        for _ in 0..runs {
            rates.push(throughput_once(load).await?);
            // The yardstick in alternation with Ferrite, so both see the same machine.
            if rows_per_txn == 1 {
                references.push(reference_once(load).await?);
            }
        }
        let txns = median(rates.clone());
        println!(
            "writes: {rows_per_txn:>2}-row transactions, {BATCH} per request, {clients} clients, {connections} write connections: \
             {txns:>7.0} client transactions/s ({:.0} rows/s) (median of {runs}: {}; {} transactions per run){}",
            txns * rows_per_txn as f64,
            rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
            clients * batches * BATCH,
            if rows_per_txn == 1 { "  target ≥ 5,000/s" } else { "" }
        );
        if rows_per_txn == 1 {
            let reference = median(references.clone());
            println!(
                "  yardstick, the same transactions straight into Postgres (INSERT + the client's progress-row upsert, prepared, \
                 {connections} connections, what pgbench would run): {reference:>7.0}/s (runs {}); Ferrite / yardstick {:.2}  target ≥ 0.8",
                references.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
                txns / reference
            );
        }
    }
    // What the audit trail costs: the same single-row load with `audit_retention = "off"`.
    let load = Load { clients, batches, rows_per_txn: 1, connections, rule: None, audit: false };
    let mut rates = vec![];
    for _ in 0..runs {
        rates.push(throughput_once(load).await?);
    }
    println!(
        "writes:  1-row transactions, same load, audit trail off: {:>7.0}/s (median of {runs}: {})",
        median(rates.clone()),
        rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
    );
    // What write rules cost (jwt mode): one that reads only the row, and one that follows
    // membership through a subquery (a query per check, inside the write's transaction).
    let mut figures = vec![];
    for rule in [PLAIN_RULE, MEMBERSHIP_RULE] {
        let load = Load { clients, batches, rows_per_txn: 1, connections, rule: Some(rule), audit: true };
        let mut rates = vec![];
        for _ in 0..runs {
            rates.push(throughput_once(load).await?);
        }
        figures.push(median(rates));
    }
    println!(
        "writes: 1-row transactions in jwt mode, same load: write rule on the row {:>7.0}/s, membership rule with a subquery {:>7.0}/s (medians of {runs})",
        figures[0], figures[1]
    );
    let (mut p50, mut p99) = (vec![], vec![]);
    for _ in 0..runs {
        let mut ms = latency_once(latency_writes).await?;
        ms.sort_by(|a, b| a.total_cmp(b));
        p50.push(percentile(&ms, 0.5));
        p99.push(percentile(&ms, 0.99));
    }
    println!(
        "writes: POST of one transaction → its txid seen in the writer's own live shape, {latency_writes} writes one at a time: \
         p50 {:.2} ms, p99 {:.2} ms (medians of {runs})",
        median(p50),
        median(p99)
    );
    Ok(())
}

/// Where a live reader of a shape stands.
pub struct LivePosition {
    pub handle: String,
    pub offset: String,
    pub cursor: String,
}

/// Follows the live shape at `shape_url` (its query without offset, handle or live) from `at`
/// until a message carries `txid`, moving `at` on; fails past `deadline`.
pub async fn live_until_txid(
    http: &reqwest::Client,
    shape_url: &str,
    at: &mut LivePosition,
    txid: &str,
    deadline: Instant,
) -> Result<()> {
    loop {
        if Instant::now() > deadline {
            return Err(anyhow!("txid {txid} never arrived in the shape"));
        }
        let url = format!("{shape_url}&live=true&handle={}&offset={}&cursor={}", at.handle, at.offset, at.cursor);
        let r = http.get(&url).send().await?;
        if r.status() != 200 {
            return Err(anyhow!("{url}: {}", r.status()));
        }
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
        if let Some(v) = h("electric-handle") {
            at.handle = v;
        }
        if let Some(v) = h("electric-offset") {
            at.offset = v;
        }
        at.cursor = h("electric-cursor").unwrap_or_default();
        let messages: Vec<Value> = r.json().await?;
        let carries = |m: &Value| {
            m["headers"]["txids"].as_array().is_some_and(|ids| {
                ids.iter()
                    .any(|t| t.as_str() == Some(txid) || t.as_u64().map(|n| n.to_string()).as_deref() == Some(txid))
            })
        };
        if messages.iter().any(carries) {
            return Ok(());
        }
    }
}

pub async fn post(http: &reqwest::Client, url: &str, token: Option<&str>, body: &Value) -> Result<Vec<Value>> {
    let mut r = http.post(url).json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await?;
    let status = r.status();
    let body: Value = r.json().await?;
    if status != 200 {
        return Err(anyhow!("POST /v1/transactions: {status} {body}"));
    }
    let results = body["results"].as_array().cloned().unwrap_or_default();
    if let Some(bad) = results.iter().find(|r| r["status"] != "applied") {
        return Err(anyhow!("a transaction was not applied: {bad}"));
    }
    Ok(results)
}

/// Posts a prepared body and checks, without a full parse, that every result is `applied`.
async fn post_raw(http: &reqwest::Client, url: &str, token: Option<&str>, body: bytes::Bytes) -> Result<()> {
    let mut r = http.post(url).header("content-type", "application/json").body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await?;
    let status = r.status();
    let text = r.bytes().await?;
    let applied = text.windows(18).filter(|w| w == b"\"status\":\"applied\"").count();
    if status != 200 || applied != BATCH {
        return Err(anyhow!(
            "POST /v1/transactions: {status}, {applied} of {BATCH} applied: {}",
            String::from_utf8_lossy(&text)
        ));
    }
    Ok(())
}

/// One throughput run on a fresh Postgres; returns applied client transactions/s.
async fn throughput_once(load: Load) -> Result<f64> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL, n int NOT NULL, team_id int NOT NULL DEFAULT 0);
         CREATE TABLE team_members (team_id int, user_id text, role text NOT NULL, PRIMARY KEY (team_id, user_id));",
    )
    .await?;
    let mut cfg = config(&env, "shapes");
    cfg.write_connections = load.connections;
    if !load.audit {
        cfg.audit_retention = ferrite_server::config::AuditRetention(None);
    }
    // With a rule: client c is user `u<c>`, an editor of team c % TEAMS (and a viewer of the
    // next one, so the membership table is not trivially small per user).
    let team = |c: usize| c % TEAMS;
    let tokens: Vec<Option<String>> = match load.rule {
        None => vec![None; load.clients],
        Some(rule) => {
            for c in 0..load.clients {
                pg.execute(
                    "INSERT INTO team_members VALUES ($1, $2, 'editor'), ($3, $2, 'viewer')",
                    &[&(team(c) as i32), &format!("u{c}"), &(((c + 1) % TEAMS) as i32)],
                )
                .await?;
            }
            cfg.auth.mode = ferrite_server::config::AuthMode::Jwt;
            cfg.auth.secret = Some(SECRET.into());
            cfg.tables.insert(
                "items".into(),
                ferrite_server::config::TableConfig { write: Some(rule.into()), public: true, ..Default::default() },
            );
            let exp = now_ms() / 1000 + 3600;
            (0..load.clients)
                .map(|c| {
                    let claims = json!({"sub": format!("u{c}"), "team": team(c), "exp": exp});
                    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
                    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
                        .map(Some)
                        .map_err(|e| anyhow!("signing a token: {e}"))
                })
                .collect::<Result<_>>()?
        }
    };
    let server = ferrite_server::start(cfg).await?;
    wait_healthy(&server.url()).await?;
    let url = format!("{}/v1/transactions", server.url());
    let http = reqwest::Client::new();
    // Warm-up: the first request creates Ferrite's bookkeeping schema.
    post(
        &http,
        &url,
        tokens[0].as_deref(),
        &json!({"client_id": "warm-up", "transactions": [
            {"id": 1, "hlc": format!("{}-0", now_ms()), "mutations": [{"op": "insert", "table": "items",
                "value": {"id": "-1", "body": "x", "n": "0", "team_id": team(0).to_string()}}]}
        ]}),
    )
    .await?;
    // Request bodies are built before the clock starts: the load generator shares the two cores
    // with the server and Postgres, and its JSON building is not what is measured.
    let hlc = now_ms();
    let bodies: Vec<Vec<bytes::Bytes>> = (0..load.clients)
        .map(|c| {
            let mut next_row = (c as u64) * 1_000_000_000;
            (0..load.batches)
                .map(|b| {
                    let txns: Vec<Value> = (0..BATCH)
                        .map(|i| {
                            let mutations: Vec<Value> = (0..load.rows_per_txn)
                                .map(|_| {
                                    next_row += 1;
                                    json!({"op": "insert", "table": "items",
                                           "value": {"id": next_row.to_string(), "body": format!("item {next_row}"),
                                                     "n": (next_row % 100).to_string(), "team_id": team(c).to_string()}})
                                })
                                .collect();
                            json!({"id": b * BATCH + i + 1, "hlc": format!("{hlc}-{}", b * BATCH + i), "mutations": mutations})
                        })
                        .collect();
                    bytes::Bytes::from(json!({"client_id": format!("bench-{c}"), "transactions": txns}).to_string())
                })
                .collect()
        })
        .collect();
    let t0 = Instant::now();
    let mut tasks = vec![];
    for (batches, token) in bodies.into_iter().zip(tokens) {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for body in batches {
                post_raw(&http, &url, token.as_deref(), body).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let txns = load.clients * load.batches * BATCH;
    let rows: i64 = pg.query_one("SELECT count(*) FROM items WHERE id >= 0", &[]).await?.get(0);
    if rows as usize != txns * load.rows_per_txn {
        return Err(anyhow!("{rows} rows in Postgres, {} sent", txns * load.rows_per_txn));
    }
    server.shutdown().await;
    Ok(txns as f64 / secs)
}

/// The write path's yardstick on a fresh Postgres: what Ferrite's single-row client
/// transactions do at the least — insert the row and move the client's progress marker — sent
/// straight to Postgres as pgbench would (each transaction `BEGIN`, two prepared statements,
/// `COMMIT`, one at a time per connection), on `load.connections` connections with the clients
/// shared among them. Returns transactions/s; the rows are counted afterwards.
async fn reference_once(load: Load) -> Result<f64> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL, n int NOT NULL, team_id int NOT NULL DEFAULT 0);
         CREATE TABLE progress (client_id text PRIMARY KEY, last_id bigint NOT NULL);",
    )
    .await?;
    let per_client = load.batches * BATCH;
    let mut tasks = vec![];
    let t0 = Instant::now();
    for conn in 0..load.connections {
        let url = env.url.clone();
        // Client c runs on connection c % connections, so no two connections update one
        // progress row at once (as Ferrite serialises a client's transactions).
        let clients: Vec<usize> = (0..load.clients).filter(|c| c % load.connections == conn).collect();
        tasks.push(tokio::spawn(async move {
            let c = ferrite_pg::connect::connect(&url).await.map_err(|e| anyhow!("{e}"))?;
            let insert = c.prepare("INSERT INTO items (id, body, n) VALUES ($1, $2, $3)").await?;
            let upsert = c
                .prepare(
                    "INSERT INTO progress (client_id, last_id) VALUES ($1, $2)
                     ON CONFLICT (client_id) DO UPDATE SET last_id = excluded.last_id",
                )
                .await?;
            for i in 0..per_client {
                for &client in &clients {
                    let id = (client * 1_000_000_000 + i + 1) as i64;
                    let name = format!("bench-{client}");
                    c.batch_execute("BEGIN").await?;
                    c.execute(&insert, &[&id, &format!("item {id}"), &((id % 100) as i32)]).await?;
                    c.execute(&upsert, &[&name, &id]).await?;
                    c.batch_execute("COMMIT").await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let txns = load.clients * per_client;
    let rows: i64 = pg.query_one("SELECT count(*) FROM items", &[]).await?.get(0);
    if rows as usize != txns {
        return Err(anyhow!("{rows} rows in Postgres, {txns} sent"));
    }
    Ok(txns as f64 / secs)
}

/// Sends `writes` single-row transactions one at a time (after 20 unmeasured) and times each
/// from just before the POST until a live response of the writer's own shape carries its txid.
async fn latency_once(writes: usize) -> Result<Vec<f64>> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL, n int NOT NULL)").await?;
    let server = ferrite_server::start(config(&env, "shapes")).await?;
    wait_healthy(&server.url()).await?;
    let http = reqwest::Client::new();
    let tx_url = format!("{}/v1/transactions", server.url());
    let shape_url = format!("{}/v1/shape?table=items&where=n%20%3D%207", server.url());
    let (handle, offset, _) =
        crate::catch_up(&http, &format!("{}/v1/shape", server.url()), "table=items&where=n%20%3D%207").await?;
    let mut at = LivePosition { handle, offset, cursor: String::new() };
    let mut measured = vec![];
    for i in 0..writes + 20 {
        let body = json!({"client_id": "latency", "transactions": [{"id": i + 1, "hlc": format!("{}-0", now_ms()), "mutations": [
            {"op": "insert", "table": "items", "value": {"id": (i + 1).to_string(), "body": "x", "n": "7"}}]}]});
        let t0 = Instant::now();
        let results = post(&http, &tx_url, None, &body).await?;
        let txid = results[0]["txid"].as_str().ok_or_else(|| anyhow!("no txid in {:?}", results[0]))?.to_string();
        live_until_txid(&http, &shape_url, &mut at, &txid, t0 + Duration::from_secs(10)).await?;
        if i >= 20 {
            measured.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    server.shutdown().await;
    Ok(measured)
}

//! Relational shapes: how fast rows move in and out when a membership changes, what one change
//! costs when 1,000 members each follow their own rule-filtered shape, the server's memory with
//! those shapes, and how many changes of a subquery's result per second the server follows when
//! 1,000 shapes depend on it.

use super::*;

/// Runs every relational figure.
pub async fn relational(members: usize, rows: u64, moves: usize, runs: usize) -> Result<()> {
    let (mut in_p50, mut in_p99, mut out_p50, mut out_p99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let (ins, outs) = moves_once(rows, moves).await?;
        in_p50.push(percentile(&ins, 0.5));
        in_p99.push(percentile(&ins, 0.99));
        out_p50.push(percentile(&outs, 0.5));
        out_p99.push(percentile(&outs, 0.99));
    }
    println!(
        "relational: a membership insert moving {rows} rows into a live shape, {moves} times (medians of {runs}):\n\
         \x20 INSERT committed → all {rows} rows and snapshot-end parsed by the client  p50 {:.1} ms, p99 {:.1} ms\n\
         \x20 DELETE committed → the move-out event parsed by the client         p50 {:.1} ms, p99 {:.1} ms",
        median(in_p50),
        median(in_p99),
        median(out_p50),
        median(out_p99)
    );
    fan_out(members, runs).await
}

/// Long-polls a shape from `(handle, offset)` until a message satisfies `done`; returns when.
async fn live_until(
    http: &reqwest::Client,
    url: &str,
    handle: &str,
    offset: &mut String,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> Result<Instant> {
    let mut cursor = String::new();
    loop {
        let r = http.get(format!("{url}&handle={handle}&offset={offset}&live=true&cursor={cursor}")).send().await?;
        let got = Instant::now();
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
        if let Some(o) = h("electric-offset") {
            *offset = o;
        }
        cursor = h("electric-cursor").unwrap_or_default();
        let msgs: Vec<serde_json::Value> = serde_json::from_slice(&r.bytes().await?)?;
        if msgs.iter().any(&mut done) {
            return Ok(got);
        }
    }
}

/// One run of membership moves: per move, milliseconds to the rows (move-in) and to the event
/// (move-out).
async fn moves_once(rows: u64, moves: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute(&format!(
        "CREATE TABLE team_members (team_id int, user_id text, PRIMARY KEY (team_id, user_id));
         CREATE TABLE steps (id bigint PRIMARY KEY, team_id int NOT NULL, name text);
         CREATE INDEX ON steps (team_id);
         INSERT INTO steps SELECT g, 1 + (g - 1) / {rows}, 'step ' || g FROM generate_series(1, {}) g;
         INSERT INTO team_members VALUES (0, 'ann');",
        rows * (moves as u64 + 1)
    ))
    .await?;
    let server = ferrite_server::start(config(&env, "shapes")).await?;
    wait_healthy(&server.url()).await?;
    let http = reqwest::Client::new();
    let query =
        "table=steps&where=team_id%20IN%20(SELECT%20team_id%20FROM%20team_members%20WHERE%20user_id%20%3D%20%27ann%27)";
    let url = format!("{}/v1/shape?{query}", server.url());
    let (handle, mut offset, _) = catch_up(&http, &format!("{}/v1/shape", server.url()), query).await?;
    let (mut ins, mut outs) = (vec![], vec![]);
    for team in 1..=moves {
        let t0 = Instant::now();
        pg.execute("INSERT INTO team_members VALUES ($1, 'ann')", &[&(team as i32)]).await?;
        let mut seen = 0u64;
        let got = live_until(&http, &url, &handle, &mut offset, |m| {
            seen += u64::from(m["headers"]["is_move_in"] == true);
            m["headers"]["control"] == "snapshot-end"
        })
        .await?;
        if seen != rows {
            return Err(anyhow!("move-in brought {seen} rows, expected {rows}"));
        }
        ins.push(got.duration_since(t0).as_secs_f64() * 1000.0);
        let t0 = Instant::now();
        pg.execute("DELETE FROM team_members WHERE team_id = $1", &[&(team as i32)]).await?;
        let got = live_until(&http, &url, &handle, &mut offset, |m| m["headers"]["event"] == "move-out").await?;
        outs.push(got.duration_since(t0).as_secs_f64() * 1000.0);
    }
    server.shutdown().await;
    ins.sort_by(|a, b| a.total_cmp(b));
    outs.sort_by(|a, b| a.total_cmp(b));
    Ok((ins, outs))
}

const SECRET: &str = "bench-relational-secret-0123456789abcdef";

/// `members` users of one team, each following the team's steps through the read rule (one
/// relational shape each): RSS, one step update's engine-added latency to all of them, and
/// subquery-result changes per second with as many shapes depending on one inner query.
async fn fan_out(members: usize, runs: usize) -> Result<()> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute(&format!(
        "CREATE TABLE team_members (team_id int, user_id text, PRIMARY KEY (team_id, user_id));
         CREATE TABLE steps (id bigint PRIMARY KEY, team_id int NOT NULL, name text);
         CREATE TABLE teams (id int PRIMARY KEY, public boolean NOT NULL);
         CREATE TABLE docs (id bigint PRIMARY KEY, team_id int NOT NULL, n int NOT NULL);
         INSERT INTO teams SELECT g, false FROM generate_series(1, 100) g;
         INSERT INTO docs SELECT g, 1 + g % 100, g % {members} FROM generate_series(1, 20000) g;
         INSERT INTO steps SELECT g, 1 + g % 10, 'step ' || g FROM generate_series(1, 200) g;
         INSERT INTO team_members SELECT 1, 'u' || g FROM generate_series(0, {}) g;",
        members - 1
    ))
    .await?;
    let config_file = env.dir.path().join("ferrite.toml");
    std::fs::write(
        &config_file,
        format!(
            "[auth]\nmode = \"jwt\"\nsecret = \"{SECRET}\"\n\n[tables.steps]\nread = \"team_id IN (SELECT team_id FROM team_members WHERE user_id = claims.sub)\"\n\n[tables.docs]\npublic = true\n\n[tables.teams]\npublic = true\n"
        ),
    )?;
    let max_existing = (members * 4).to_string();
    let (child, base) = serve_process(
        &env,
        "shapes",
        &["--config".as_ref(), config_file.as_os_str()],
        &[("FERRITE_MAX_CONCURRENT_EXISTING", &max_existing), ("FERRITE_MAX_REQUESTS_PER_SUBJECT", "1000")],
    )
    .await?;
    let shape_url = format!("{base}/v1/shape");
    let http = reqwest::Client::builder().pool_max_idle_per_host(members * 2 + 16).build()?;
    let before = rss_kib(child.0.id())?;
    // One rule-filtered shape per member, created in waves under the admission limit.
    let mut starts = vec![];
    for wave in (0..members).collect::<Vec<_>>().chunks(100) {
        let mut creations = vec![];
        for &u in wave {
            let token = bench_token(&format!("u{u}"));
            let http = http.clone();
            let shape_url = shape_url.clone();
            creations.push(tokio::spawn(async move {
                catch_up_as(&http, &shape_url, "table=steps", Some(&token)).await.map(|(h, o, _)| (token, (h, o)))
            }));
        }
        for c in creations {
            starts.push(c.await??);
        }
    }
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = vec![];
    for (token, (handle, offset)) in starts {
        let (http, shape_url, ready, received) = (http.clone(), shape_url.clone(), ready.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let mut offset = offset;
            let mut cursor = String::new();
            let mut first = true;
            loop {
                let url = format!("{shape_url}?table=steps&handle={handle}&offset={offset}&live=true&cursor={cursor}");
                if first {
                    ready.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
                let Ok(r) = http.get(&url).bearer_auth(&token).send().await else { continue };
                let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
                if let Some(o) = h("electric-offset") {
                    offset = o;
                }
                cursor = h("electric-cursor").unwrap_or_default();
                let Ok(bytes) = r.bytes().await else { continue };
                received.fetch_add(count(&bytes, b"\"operation\":\"update\"") as usize, Ordering::Relaxed);
            }
        }));
    }
    while ready.load(Ordering::Relaxed) < members {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_shapes = rss_kib(child.0.id())?;
    println!(
        "relational: {members} members, each on their own rule-filtered shape of the team's steps, all long-polling: server RSS {:.1} MiB (before the shapes: {:.1} MiB)",
        with_shapes as f64 / 1024.0,
        before as f64 / 1024.0
    );
    // One step of team 1 updated every 100 ms; each update reaches every member. `runs`
    // measured rounds on the same shapes and clients.
    const WARMUP: usize = 20;
    const WRITES: usize = 200;
    let (mut p50s, mut p99s) = (vec![], vec![]);
    let mut sent = 0usize;
    for _ in 0..runs {
        let mut histogram_before = None;
        for i in 0..WARMUP + WRITES {
            if i == WARMUP {
                histogram_before = Some(delivery_histogram(&base).await?);
            }
            pg.execute("UPDATE steps SET name = $1 WHERE id = 10", &[&format!("v{sent}")]).await?;
            sent += 1;
            // Each update is a thousand responses; spaced so that the machine (server and
            // clients on the same two cores) is not saturated and the figure is latency, not
            // backlog.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let expected = sent * members;
        let deadline = Instant::now() + Duration::from_secs(60);
        while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if received.load(Ordering::Relaxed) < expected {
            return Err(anyhow!("the members saw {} of {expected} updates", received.load(Ordering::Relaxed)));
        }
        let after = delivery_histogram(&base).await?;
        let (p50, p99) = histogram_quantiles(&histogram_before.unwrap_or_default(), &after);
        p50s.push(p50 * 1000.0);
        p99s.push(p99 * 1000.0);
    }
    let (p50, p99) = (median(p50s.clone()), median(p99s.clone()));
    println!(
        "relational: one step update to {members} live members of its team ({WRITES} updates per run, every delivery seen): engine-added p50 {p50:.2} ms, p99 {p99:.2} ms (medians of {runs}; runs' p99 {})",
        p99s.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(" / ")
    );
    for t in tasks {
        t.abort();
    }
    let (floor_p50, floor_p99) = crate::floor::fan_out_floor(members, WRITES, Duration::from_millis(100), runs).await?;
    println!(
        "relational: the yardstick — a bare server answering {members} held long-polls with one prebuilt body per change, same clients: p50 {floor_p50:.2} ms, p99 {floor_p99:.2} ms (medians of {runs}); Ferrite / yardstick: p50 {:.1}×, p99 {:.1}×",
        p50 / floor_p50,
        p99 / floor_p99
    );

    // Subquery-result changes/s: `members` shapes of `docs` depend on one inner query (the
    // public teams); each change of a team's flag moves that team's docs in or out of all.
    let docs_url = format!("{base}/v1/shape");
    for wave in (0..members).collect::<Vec<_>>().chunks(100) {
        let mut creations = vec![];
        for &k in wave {
            let (http, docs_url) = (http.clone(), docs_url.clone());
            let token = bench_token("reader");
            creations.push(tokio::spawn(async move {
                let q = format!(
                    "table=docs&where=team_id%20IN%20(SELECT%20id%20FROM%20teams%20WHERE%20public)%20AND%20n%20%3D%20{k}"
                );
                catch_up_as(&http, &docs_url, &q, Some(&token)).await
            }));
        }
        for c in creations {
            c.await??;
        }
    }
    for (what, flag) in [("move-ins (team made public)", "true"), ("move-outs (team made private)", "false")] {
        const CHANGES: i32 = 20;
        let t0 = Instant::now();
        let mut last_commit_after = 0;
        for team in 1..=CHANGES {
            // The last update commits after this WAL position: the server has processed it
            // once its last commit LSN reaches it.
            let lsn: String = pg.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await?.get(0);
            last_commit_after = ferrite_pg::replication::parse_lsn(&lsn).unwrap_or(0);
            pg.execute(&format!("UPDATE teams SET public = {flag} WHERE id = $1"), &[&team]).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let m = reqwest::get(format!("{base}/metrics")).await?.text().await?;
            let gauge = |name: &str| {
                m.lines()
                    .find(|l| l.starts_with(&format!("{name} ")))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            };
            let caught_up = gauge("ferrite_replication_last_commit_lsn").unwrap_or(0) >= last_commit_after;
            if caught_up
                && gauge("ferrite_move_ins_pending") == Some(0)
                && gauge("ferrite_move_in_queued_transactions") == Some(0)
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(anyhow!("the server did not catch up with the {what}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "relational: {members} shapes on one subquery, {CHANGES} {what}: {:.1} changes/s ({:.0} shape moves/s)",
            CHANGES as f64 / secs,
            CHANGES as f64 * members as f64 / secs
        );
    }
    drop(child);
    Ok(())
}

fn bench_token(sub: &str) -> String {
    let claims = serde_json::json!({"sub": sub, "exp": 4_000_000_000u64});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_default()
}

/// The server's `ferrite_live_delivery_seconds` buckets: (upper bound, cumulative count).
pub(crate) async fn delivery_histogram(base: &str) -> Result<Vec<(f64, u64)>> {
    let m = reqwest::get(format!("{base}/metrics")).await?.text().await?;
    Ok(m.lines()
        .filter_map(|l| l.strip_prefix("ferrite_live_delivery_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect())
}

/// The `p` quantile (seconds) of the observations made between two readings of the histogram,
/// interpolated within its bucket as the server's own [`ferrite_server::Histogram::quantile`]
/// does (NaN when nothing was observed).
pub(crate) fn interpolated_quantile(before: &[(f64, u64)], after: &[(f64, u64)], p: f64) -> f64 {
    let cumulative: Vec<(f64, u64)> =
        after.iter().enumerate().map(|(i, (le, c))| (*le, c - before.get(i).map_or(0, |b| b.1))).collect();
    let total = cumulative.last().map_or(0, |c| c.1);
    if total == 0 {
        return f64::NAN;
    }
    let rank = p.clamp(0.0, 1.0) * total as f64;
    let (mut lo, mut seen) = (0.0, 0u64);
    for &(le, c) in &cumulative {
        let in_bucket = c - seen;
        if in_bucket > 0 && c as f64 >= rank {
            let hi = if le.is_finite() { le } else { lo * 1.25 };
            return lo + (hi - lo) * ((rank - seen as f64) / in_bucket as f64).clamp(0.0, 1.0);
        }
        (lo, seen) = (le, c);
    }
    lo
}

/// p50 and p99 (seconds) of the observations made between two readings of the histogram.
fn histogram_quantiles(before: &[(f64, u64)], after: &[(f64, u64)]) -> (f64, f64) {
    let counts: Vec<(f64, u64)> =
        after.iter().enumerate().map(|(i, (le, c))| (*le, c - before.get(i).map_or(0, |b| b.1))).collect();
    let total = counts.last().map_or(0, |c| c.1);
    let q = |p: f64| {
        let rank = (p * total as f64).ceil() as u64;
        counts.iter().find(|(_, c)| *c >= rank.max(1)).map_or(f64::NAN, |(le, _)| *le)
    };
    (q(0.5), q(0.99))
}

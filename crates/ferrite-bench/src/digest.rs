//! What an on-demand convergence digest costs (`GET /v1/shape/digest`: the server replays a
//! relational shape's log up to the client's offset), against what it saves: fetching the shape
//! afresh into a Rust client's replica, what a client that cannot check must do to be sure, and
//! reading the shape's log over HTTP without applying it. The server runs as its own
//! `ferrite serve` process (its allocator, its memory measured apart).

use super::*;

/// Prints the figures for a relational shape of `rows` rows (spread over 20 teams, ten of them
/// the reader's), its log also holding move-outs and move-ins of 1,000 rows each.
pub async fn digest(rows: u64, runs: usize) -> Result<()> {
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute(&format!(
        "CREATE TABLE team_members (team_id int, user_id text, PRIMARY KEY (team_id, user_id));
         CREATE TABLE steps (id bigint PRIMARY KEY, team_id int NOT NULL, name text, n int, at timestamptz);
         CREATE INDEX ON steps (team_id);
         INSERT INTO steps SELECT g, g % 20, 'step ' || g, g % 1000, '2026-01-01'::timestamptz + g * interval '1 minute'
         FROM generate_series(1, {}) g;
         INSERT INTO team_members SELECT t, 'ann' FROM generate_series(0, 9) t;",
        rows * 2
    ))
    .await?;
    let (server, base) = serve_process(&env, "shapes", &[], &[]).await?;
    let http = reqwest::Client::new();
    let query =
        "table=steps&where=team_id%20IN%20(SELECT%20team_id%20FROM%20team_members%20WHERE%20user_id%20%3D%20%27ann%27)";
    let shape_url = format!("{base}/v1/shape");
    let (handle, _, _) = catch_up(&http, &shape_url, query).await?;
    // Moves in and out, and updates, so the replay applies every kind of message.
    pg.batch_execute(
        "DELETE FROM team_members WHERE team_id IN (1, 2);
         INSERT INTO team_members VALUES (10, 'ann'), (11, 'ann');
         UPDATE steps SET name = name || '!' WHERE id % 7 = 0;",
    )
    .await?;
    let (mut replayed, mut kept, mut read, mut refetched) = (vec![], vec![], vec![], vec![]);
    let rss_before = rss_kib(server.0.id())?;
    let replicas = tempfile::tempdir()?;
    let mut def = ferrite_client::ShapeDef::table("steps");
    def.where_sql = Some("team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann')".into());
    let mut last_rows = 0;
    for run in 0..runs.max(3) {
        // A change of the shape's rows: a new offset, for which no answer is kept yet.
        pg.execute("UPDATE steps SET n = $1 WHERE id = 40", &[&(run as i32)]).await?;
        let head = wait_for_head(&http, &shape_url, query, &handle, &run.to_string()).await?;
        let url = format!("{base}/v1/shape/digest?{query}&handle={handle}&offset={head}");
        let t = Instant::now();
        let answer: serde_json::Value = http.get(&url).send().await?.error_for_status()?.json().await?;
        replayed.push(t.elapsed().as_secs_f64() * 1000.0);
        let digest = answer["digest"].as_str().ok_or_else(|| anyhow!("no digest: {answer}"))?.to_string();
        last_rows = digest.split(':').next().unwrap_or("0").parse::<u64>()?;
        let t = Instant::now();
        let again: serde_json::Value = http.get(&url).send().await?.json().await?;
        kept.push(t.elapsed().as_secs_f64() * 1000.0);
        if again["digest"].as_str() != Some(digest.as_str()) {
            return Err(anyhow!("the kept answer differs: {again} vs {digest}"));
        }
        let t = Instant::now();
        catch_up(&http, &shape_url, query).await?;
        read.push(t.elapsed().as_secs_f64() * 1000.0);
        let client = ferrite_client::Client::open(
            replicas.path().join(format!("r{run}.db")),
            &base,
            ferrite_client::TokenSource::None,
        )?;
        let t = Instant::now();
        client.sync(&def).await?;
        refetched.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let peak = peak_rss_kib(server.0.id())?;
    let expected: i64 = pg
        .query_one(
            "SELECT count(*) FROM steps WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann')",
            &[],
        )
        .await?
        .get(0);
    if last_rows != expected as u64 {
        return Err(anyhow!("the digest counts {last_rows} rows, Postgres {expected}"));
    }
    let (r, k, y, f) = (median(replayed), median(kept), median(read), median(refetched));
    println!(
        "digest: a relational shape of {last_rows} rows (its log with two move-outs and two move-ins), medians of {}:\n\
         \x20 GET /v1/shape/digest, replayed                       {r:.0} ms\n\
         \x20 the same again (the kept answer)                    {k:.2} ms\n\
         \x20 yardstick: the shape fetched afresh into a replica   {f:.0} ms   → replay / refetch {:.2}\n\
         \x20 the shape's log read over HTTP, nothing applied       {y:.0} ms\n\
         \x20 server peak RSS {:.1} MiB (before the first replay {:.1} MiB)",
        runs.max(3),
        r / f,
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    Ok(())
}

/// Reads the shape to its head and returns the offset there, once it has seen row 40's `n` set
/// to `want` (a sync may end before the commit was replicated).
async fn wait_for_head(
    http: &reqwest::Client,
    shape_url: &str,
    query: &str,
    handle: &str,
    want: &str,
) -> Result<String> {
    let (mut offset, mut seen) = ("-1".to_string(), false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http.get(format!("{shape_url}?{query}&handle={handle}&offset={offset}")).send().await?;
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
        offset = h("electric-offset").ok_or_else(|| anyhow!("no offset"))?;
        let done = h("electric-up-to-date").is_some();
        let messages: Vec<serde_json::Value> = r.json().await?;
        seen |= messages.iter().any(|m| m["value"]["id"] == "40" && m["value"]["n"] == want);
        if done && seen {
            return Ok(offset);
        }
        if done {
            // At the head, the update not in yet (a sync may end before the commit is replicated).
            if Instant::now() > deadline {
                return Err(anyhow!("the update never reached the shape"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

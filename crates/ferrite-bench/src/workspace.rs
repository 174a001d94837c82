//! `ferrite-bench workspace`: opening a large pipeline workspace from empty — one include tree
//! (the pipeline, its steps and their connections, its comments and their authors, its last 10
//! versions of 30 days) — in the Rust client (SQLite) and in the pipeline editor in Chromium.
//! Prints the time to the first complete tree (Rust) or render (Chromium) and the requests made;
//! target ≤ 1 s for 500 steps on this machine.
//!
//! It runs the real `ferrite dev` (release binary next to this one: its own Postgres, the
//! example schema and rules, jwt mode, the editor), adds a pipeline of `steps` steps to Ada's
//! team, and signs in as Ada through the dev sign-in. The Chromium half needs `npm ci` in `web/`
//! and Chromium at /usr/bin/chromium (or `CHROMIUM`); without them it says so and is skipped.

use crate::median;
use anyhow::{anyhow, Context, Result};
use ferrite_client::{Client, Include, ShapeDef, TokenSource, Tree};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADA: &str = "00000000-0000-4000-8000-0000000000a1";
const PLATFORM: &str = "00000000-0000-4000-8000-000000000001";
const PIPELINE: &str = "00000000-0000-4000-8000-00000000beef";

/// Prints the figures for a `steps`-step workspace (median of `runs`).
pub async fn workspace(steps: usize, runs: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_dev, editor, postgres) = start_dev(&dir.path().join("dev"))?;
    let connections = seed(&postgres, steps).await?;
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{editor}/dev/token"))
        .json(&serde_json::json!({ "user_id": ADA }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = token["token"].as_str().ok_or_else(|| anyhow!("no token from /dev/token"))?.to_string();

    // The Rust client: a new replica per run.
    let mut times = vec![];
    let mut requests = vec![];
    for run in 0..runs {
        let client =
            Client::open(dir.path().join(format!("ws-{run}.db")), &editor, TokenSource::Static(token.clone()))?;
        let started = Instant::now();
        let report = client.sync_tree(&workspace_tree()).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        requests.push(report.requests as f64);
        let shown: i64 = client.query("SELECT count(*) FROM steps", &[])?[0][0].as_i64().unwrap_or(0);
        if shown != steps as i64 {
            return Err(anyhow!("the Rust client's tree holds {shown} steps, not {steps}"));
        }
    }
    println!(
        "workspace: open a {steps}-step pipeline ({connections} connections) from empty, Rust client (SQLite): {:.0} ms to the complete tree, {:.0} requests (medians of {runs}; target ≤ 1,000 ms)",
        median(times),
        median(requests)
    );

    // The editor in Chromium.
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web");
    if !web.join("node_modules/playwright-core").exists() {
        println!("workspace: Chromium figure skipped: run `npm ci` in {} (scripts/setup.sh does)", web.display());
        return Ok(());
    }
    let user =
        serde_json::json!({"id": ADA, "name": "Ada Lovelace", "color": "#e11d48", "avatar_url": "/avatars/ada.svg"});
    let out = Command::new("node")
        .arg("bench/workspace.mjs")
        .current_dir(web.join("editor"))
        .env("EDITOR_URL", &editor)
        .env("PIPELINE_ID", PIPELINE)
        .env("USER_JSON", user.to_string())
        .env("STEPS", steps.to_string())
        .env("CONNECTIONS", connections.to_string())
        .env("RUNS", runs.to_string())
        .output()
        .context("run node bench/workspace.mjs")?;
    if !out.status.success() {
        return Err(anyhow!("the Chromium benchmark failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut times = vec![];
    let mut requests = vec![];
    let mut by_path = String::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("benchmark output {line:?}"))?;
        times.push(v["ms"].as_f64().unwrap_or(f64::NAN));
        requests.push(v["requests"].as_f64().unwrap_or(f64::NAN));
        by_path = v["by_path"].to_string();
    }
    println!(
        "workspace: open a {steps}-step pipeline from empty, editor in Chromium (new profile, signed in): {:.0} ms from navigation to every step and connection drawn, {:.0} requests (medians of {runs}; target ≤ 1,000 ms; last run's requests by path: {by_path})",
        median(times),
        median(requests)
    );
    Ok(())
}

/// The editor's workspace tree (`web/editor/src/data.ts`), rooted at one pipeline.
fn workspace_tree() -> Tree {
    let mut root = ShapeDef::table("pipelines");
    root.where_sql = Some(format!("id = '{PIPELINE}'"));
    Tree::new(root)
        .with("steps", Include::rows().with("connections", Include::rows()))
        .with("comments", Include::rows().with("comment_authors", Include::rows().of_table("users")))
        .with(
            "versions",
            Include::rows()
                .of_table("pipeline_versions")
                .filter("created_at > now() - interval '30 days'")
                .top(10, "created_at DESC"),
        )
}

/// A pipeline of `steps` steps in a chain (each connected to the next), a comment on every
/// tenth step, and 30 versions over the last 60 days. Returns the number of connections.
async fn seed(postgres: &str, steps: usize) -> Result<usize> {
    let pg = ferrite_pg::connect::connect(postgres).await.map_err(|e| anyhow!("{e}"))?;
    let n = steps as i64;
    pg.batch_execute(&format!(
        "INSERT INTO pipelines (id, team_id, name, created_by) VALUES ('{PIPELINE}', '{PLATFORM}', 'Big pipeline', '{ADA}');
         INSERT INTO steps (id, pipeline_id, name, type, config, position, x, y)
           SELECT ('00000000-0000-4000-9000-' || lpad(i::text, 12, '0'))::uuid, '{PIPELINE}', 'Step ' || i, 'shell',
                  jsonb_build_object('run', 'make step-' || i), i, 80 + (i % 20) * 220, 80 + (i / 20) * 120
           FROM generate_series(1, {n}) i;
         INSERT INTO connections (pipeline_id, from_step_id, to_step_id)
           SELECT '{PIPELINE}', ('00000000-0000-4000-9000-' || lpad(i::text, 12, '0'))::uuid,
                  ('00000000-0000-4000-9000-' || lpad((i + 1)::text, 12, '0'))::uuid
           FROM generate_series(1, {n} - 1) i;
         INSERT INTO comments (pipeline_id, step_id, user_id, body)
           SELECT '{PIPELINE}', ('00000000-0000-4000-9000-' || lpad(i::text, 12, '0'))::uuid, '{ADA}', 'Note on step ' || i
           FROM generate_series(10, {n}, 10) i;
         INSERT INTO pipeline_versions (pipeline_id, version_number, snapshot, created_by, created_at)
           SELECT '{PIPELINE}', i, '{{\"steps\": [], \"connections\": []}}', '{ADA}', now() - make_interval(days => 2 * i)
           FROM generate_series(1, 30) i;"
    ))
    .await
    .map_err(|e| anyhow!("seeding the workspace: {e}"))?;
    Ok(steps.saturating_sub(1))
}

/// Starts `ferrite dev` in `dir`; returns it with the editor's and Postgres's URLs.
fn start_dev(dir: &std::path::Path) -> Result<(DevGuard, String, String)> {
    let bin = std::env::current_exe()?.with_file_name("ferrite");
    if !bin.exists() {
        return Err(anyhow!("{} not found: build it with `cargo build --release -p ferrite`", bin.display()));
    }
    let pg_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = Command::new(&bin)
        .args(["dev", "--port", "0", "--pg-port", &pg_port.to_string(), "--dir"])
        .arg(dir)
        .env("FERRITE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn ferrite dev")?;
    let stdout = child.stdout.take().expect("piped");
    let dev = DevGuard(child);
    let mut lines = BufReader::new(stdout).lines();
    let (mut editor, mut postgres) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let Some(line) = lines.next().transpose()? else { break };
        let value = |label: &str| line.trim().strip_prefix(label).map(|v| v.trim().to_string());
        editor = editor.or(value("Editor:"));
        postgres = postgres.or(value("Postgres:"));
        if line.starts_with("Press Ctrl-C") {
            // Keep draining its output so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return match (editor, postgres) {
                (Some(e), Some(p)) => Ok((dev, e.trim_end_matches('/').to_string(), p)),
                _ => Err(anyhow!("ferrite dev did not print its Editor and Postgres URLs")),
            };
        }
    }
    Err(anyhow!("ferrite dev did not become ready"))
}

/// `ferrite dev`, stopped with Ctrl-C (SIGINT) however the benchmark ends, so that it stops its
/// Postgres too.
struct DevGuard(std::process::Child);

impl Drop for DevGuard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        for _ in 0..300 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
    }
}

//! `ferrite dev`: a throwaway local Postgres with an example (`--example`, see
//! [`crate::examples`]; the pipeline editor by default), and the server with the example's rules
//! (jwt mode, with a random secret per run), a dev sign-in that issues tokens for the seeded
//! users, and the example's web app at `/` — plus, for the agents console, its agent runner. One
//! `ferrite dev` per directory (a lock file held for the process's life); once it serves, it
//! prints the URLs and the `export FERRITE_URL=…` / `export FERRITE_TOKEN=…` lines the README's
//! examples use.

use crate::dev_web::DevWeb;
use crate::examples::Example;
use anyhow::{Context, Result};
use ferrite_pg::cluster::LocalCluster;
use ferrite_server::config::TableConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The example's `[auth]` mode and `[tables.*]` settings; its other keys are for `ferrite serve`.
fn example_settings(example: &Example) -> Result<(ferrite_server::config::AuthConfig, BTreeMap<String, TableConfig>)> {
    let file = format!("examples/{}/ferrite.toml", example.name);
    let mut doc: toml::Table = example.config.parse().with_context(|| file.clone())?;
    let auth = match doc.remove("auth") {
        Some(a) => a.try_into().with_context(|| format!("{file} [auth]"))?,
        None => Default::default(),
    };
    let tables = match doc.remove("tables") {
        Some(t) => t.try_into().with_context(|| format!("{file} [tables]"))?,
        None => Default::default(),
    };
    Ok((auth, tables))
}

/// A fresh HS256 secret: tokens of an earlier run (or another machine) are worthless.
fn random_secret() -> String {
    (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect()
}

/// An exclusive lock on a dev directory, held until dropped (the process ends).
struct DirLock {
    _file: std::fs::File,
}

/// Takes `<dir>/dev.lock` (`flock`, released by the kernel however the process ends), or fails
/// naming the `ferrite dev` that holds it. A second `ferrite dev` on the same directory would
/// otherwise adopt the first one's Postgres, fight it for the replication slot, and shut that
/// Postgres down on its own Ctrl-C.
fn lock_dir(dir: &Path) -> Result<DirLock> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = dir.join("dev.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor owned by `file`, which outlives the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => String::new(),
            pid => format!(" (pid {pid})"),
        };
        anyhow::bail!(
            "another `ferrite dev`{holder} is already running on {}: stop it first (Ctrl-C in its terminal), \
             or give this one a directory of its own with --dir",
            dir.display()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(DirLock { _file: file })
}

/// Starts (or reuses) the dev cluster, loads the example once, serves until Ctrl-C.
pub async fn run(example: &'static Example, dir: &Path, port: u16, pg_port: u16) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    // Held until this function returns, after Postgres is stopped.
    let _lock = lock_dir(&dir)?;
    // Caught from here on: a Ctrl-C during the start stops it cleanly once it is up.
    let stop = crate::StopSignals::catch();
    let pg_dir = dir.join("postgres");
    println!("Starting Postgres in {} …", pg_dir.display());
    // 0: any free port.
    let pg_port = Some(pg_port).filter(|p| *p != 0);
    let mut cluster = LocalCluster::start(&pg_dir, pg_port).map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = cluster.create_database(example.database).map_err(|e| anyhow::anyhow!("{e}"))?;
    load_example(example, &url).await?;
    let (mut auth, tables) = example_settings(example)?;
    let secret = random_secret();
    auth.secret = Some(secret.clone());
    let mut cfg = ferrite_server::ServerConfig {
        database_url: url.clone(),
        data_dir: dir.join(example.shapes_dir),
        slot_name: example.slot_name.into(),
        publication: example.publication.into(),
        port,
        allow_shape_deletion: true,
        auth,
        tables,
        ..Default::default()
    };
    // The sign-in and the example's app, mounted beside the API.
    let dev_web = || {
        let mut web = DevWeb::new(&url, &secret, &cfg.listen, (example.app)(), example.sign_in);
        web.sites = example.sites;
        Some(crate::dev_web::router(web))
    };
    let server = match ferrite_server::start_with(cfg.clone(), dev_web()).await {
        Ok(s) => s,
        Err(ferrite_server::StartError::Listen { .. }) => {
            cfg.port = 0;
            ferrite_server::start_with(cfg.clone(), dev_web()).await?
        }
        Err(e) => return Err(e.into()),
    };
    let base = server.url();
    // The banner says the server is ready: print it once replication runs (Postgres may still
    // be recovering), with a token for the examples.
    wait_healthy(&base).await;
    let runner = if example.runs_agents { Some(start_runner(&url).await?) } else { None };
    let sign_in = banner_sign_in(&base, example.banner_user).await;
    println!();
    println!("  Postgres:   {url}");
    println!("  Data:       {}", dir.display());
    println!("  Shape API:  {}/v1/shape?table={}&offset=-1", server.url(), example.marker_table);
    println!("  Health:     {}/v1/health", server.url());
    println!(
        "  Sign-in:    {}/dev/users, then POST {{\"user_id\": …}} to {}/dev/token for a token",
        server.url(),
        server.url()
    );
    println!("  {:<11} {}/", format!("{}:", example.app_label), server.url());
    if runner.is_some() {
        println!("  Agents:     the agent runner picks up waiting tasks (examples/agents-console/runner)");
    }
    println!();
    match sign_in {
        Ok(who) => {
            println!(
                "  For the README's examples, paste these two lines into another terminal. The token signs you in"
            );
            println!("  as {} ({}) until {};", who.name, who.about, who.expires);
            println!("  every run has a new secret, so tokens of earlier runs no longer work.");
            println!();
            println!("export FERRITE_URL={base}");
            println!("export FERRITE_TOKEN={}", who.token);
        }
        Err(e) => {
            println!("  (no token printed for the examples: {e:#}; take one from the sign-in above)");
            println!();
            println!("export FERRITE_URL={base}");
        }
    }
    println!();
    println!("Press Ctrl-C to stop (Postgres is shut down cleanly; data is kept for the next run).");
    stop.wait().await;
    println!("Stopping …");
    if let Some((stop, task)) = runner {
        let _ = stop.send(());
        let _ = task.await;
    }
    server.shutdown().await;
    cluster.stop();
    Ok(())
}

/// Waits (up to 30 s) until `/v1/health` answers 200: the replication stream runs.
async fn wait_healthy(base: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/v1/health")).send().await {
            if r.status() == reqwest::StatusCode::OK {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("the replication stream has not started within 30 s; serving anyway");
}

/// The token printed in the banner, and who it is for.
struct BannerUser {
    name: String,
    /// Email and teams.
    about: String,
    /// When the token expires, as words.
    expires: String,
    token: String,
}

/// Runs the agents console's agent runner on its own connection until told to stop: the
/// backend that writes executions and events, so they stream into the console while users edit.
/// A failure (Postgres restarted, say) is logged and the runner starts again after a pause.
async fn start_runner(url: &str) -> Result<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    let url = url.to_string();
    let task = tokio::spawn(async move {
        let options = agents_runner::Options::default();
        loop {
            let outcome = async {
                let db = agents_runner::connect(&url).await?;
                agents_runner::run(&db, &options, async {
                    let _ = (&mut stop).await;
                })
                .await
            }
            .await;
            match outcome {
                Ok(()) => return,
                Err(e) => tracing::warn!("the agent runner stopped: {e:#}; starting it again in 2 s"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = &mut stop => return,
            }
        }
    });
    Ok((stop_tx, task))
}

/// Signs in `preferred` (or the first seeded user) through this server's own dev sign-in,
/// exactly as the web apps do.
async fn banner_sign_in(base: &str, preferred: &str) -> Result<BannerUser> {
    let http = reqwest::Client::new();
    let users: serde_json::Value =
        http.get(format!("{base}/dev/users")).send().await?.error_for_status()?.json().await?;
    let users = users.as_array().cloned().unwrap_or_default();
    let user = users
        .iter()
        .find(|u| u["id"] == preferred)
        .or_else(|| users.first())
        .ok_or_else(|| anyhow::anyhow!("the users table is empty"))?;
    let answer: serde_json::Value = http
        .post(format!("{base}/dev/token"))
        .json(&serde_json::json!({"user_id": user["id"]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = answer["token"].as_str().ok_or_else(|| anyhow::anyhow!("/dev/token answered no token"))?;
    // The editor's people have teams, the console's a role, the lead forms' staff a tenant.
    let teams: Vec<&str> = user["teams"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    let teams = match (user["role"].as_str(), teams.as_slice()) {
        (Some(role), _) => format!("role {role}"),
        (None, _) if user["tenant_name"].is_string() => {
            format!("staff of {}", user["tenant_name"].as_str().unwrap_or("?"))
        }
        (None, []) => "no team".to_string(),
        (None, [one]) => format!("team {one}"),
        (None, many) => format!("teams {}", many.join(", ")),
    };
    Ok(BannerUser {
        name: user["name"].as_str().unwrap_or("?").to_string(),
        about: format!("{}, {teams}", user["email"].as_str().unwrap_or("no email")),
        expires: expiry_words(answer["expires_at"].as_u64().unwrap_or(0)),
        token: token.to_string(),
    })
}

/// `"14:32 UTC (in 15 minutes)"` for a Unix time.
fn expiry_words(at: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let day = at % 86_400;
    let minutes = at.saturating_sub(now).div_ceil(60);
    format!("{:02}:{:02} UTC (in {minutes} minute{})", day / 3600, day % 3600 / 60, if minutes == 1 { "" } else { "s" })
}

/// Loads the example's schema and seed data into `url`, unless an earlier run did (in one
/// transaction, so an interrupted load leaves nothing half made).
async fn load_example(example: &Example, url: &str) -> Result<()> {
    let client = ferrite_pg::connect::connect(url).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let exists = client
        .query_one("SELECT to_regclass(format('public.%I', $1::text)) IS NOT NULL", &[&example.marker_table])
        .await?
        .get::<_, bool>(0);
    if !exists {
        println!("Loading the {} example schema and seed data …", example.name);
        let name = example.name;
        client.batch_execute("BEGIN").await?;
        client.batch_execute(example.schema).await.with_context(|| format!("loading examples/{name}/schema.sql"))?;
        client.batch_execute(example.seed).await.with_context(|| format!("loading examples/{name}/seed.sql"))?;
        client.batch_execute("COMMIT").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_settings_load() {
        let (auth, tables) = super::example_settings(crate::examples::find("pipeline-editor").unwrap()).unwrap();
        assert_eq!(auth.mode, ferrite_server::config::AuthMode::Jwt);
        assert_eq!(tables["connections"].existence, ferrite_server::config::Existence::AddWins);
        assert_eq!(tables["steps"].existence, ferrite_server::config::Existence::DeleteWins);
        assert!(tables["users"].public);
        let (auth, tables) = super::example_settings(crate::examples::find("agents-console").unwrap()).unwrap();
        assert_eq!(auth.mode, ferrite_server::config::AuthMode::Jwt);
        assert_eq!(tables["workflows"].write.as_deref(), Some("claims.role = 'admin'"));
        assert_ne!(super::random_secret(), super::random_secret());
        assert_eq!(super::random_secret().len(), 64);
    }

    #[test]
    fn a_second_lock_on_a_directory_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("ferrite-dev-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = super::lock_dir(&dir).unwrap();
        // flock locks belong to open files: a second open in this process conflicts too.
        let err = super::lock_dir(&dir).err().expect("refused").to_string();
        assert!(err.contains("another `ferrite dev`") && err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        drop(super::lock_dir(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expiry_in_words() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let at = now + 15 * 60;
        let words = super::expiry_words(at);
        assert!(words.ends_with("UTC (in 15 minutes)"), "{words}");
        assert_eq!(super::expiry_words(86_400 + 14 * 3600 + 32 * 60).split(' ').next(), Some("14:32"));
    }
}

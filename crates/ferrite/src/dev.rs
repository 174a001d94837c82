//! `ferrite dev`: a throwaway local Postgres with the pipeline-editor example, and the server
//! with the example's rules (jwt mode, with a random secret per run), a dev sign-in that issues
//! tokens for the seeded users, and the editor web app at `/`.

use crate::dev_web::{app::AppFile, DevWeb};
use anyhow::{Context, Result};
use ferrite_pg::cluster::LocalCluster;
use ferrite_server::config::TableConfig;
use std::collections::BTreeMap;
use std::path::Path;

/// The example schema and seed data, compiled in so `ferrite dev` works from any directory.
const SCHEMA_SQL: &str = include_str!("../../../examples/pipeline-editor/schema.sql");
const SEED_SQL: &str = include_str!("../../../examples/pipeline-editor/seed.sql");
/// The example's settings (see [`example_settings`]).
const EXAMPLE_CONFIG: &str = include_str!("../../../examples/pipeline-editor/ferrite.toml");
const DATABASE: &str = "ferrite_dev";

/// The built editor app (`web/editor/dist`, committed; `web/editor/build.mjs` makes it and
/// the test suite checks it matches its sources), compiled in so a fresh clone needs no npm.
fn app_files() -> Vec<AppFile> {
    macro_rules! file {
        ($path:literal, $type:literal) => {
            AppFile {
                path: $path,
                content_type: $type,
                body: include_bytes!(concat!("../../../web/editor/dist", $path)),
            }
        };
    }
    vec![
        file!("/index.html", "text/html; charset=utf-8"),
        file!("/app.js", "text/javascript; charset=utf-8"),
        file!("/app.css", "text/css; charset=utf-8"),
        file!("/sw.js", "text/javascript; charset=utf-8"),
        file!("/icon.svg", "image/svg+xml"),
    ]
}

/// The example's `[auth]` mode and `[tables.*]` settings; its other keys are for `ferrite serve`.
fn example_settings() -> Result<(ferrite_server::config::AuthConfig, BTreeMap<String, TableConfig>)> {
    let mut doc: toml::Table = EXAMPLE_CONFIG.parse().context("examples/pipeline-editor/ferrite.toml")?;
    let auth = match doc.remove("auth") {
        Some(a) => a.try_into().context("examples/pipeline-editor/ferrite.toml [auth]")?,
        None => Default::default(),
    };
    let tables = match doc.remove("tables") {
        Some(t) => t.try_into().context("examples/pipeline-editor/ferrite.toml [tables]")?,
        None => Default::default(),
    };
    Ok((auth, tables))
}

/// A fresh HS256 secret: tokens of an earlier run (or another machine) are worthless.
fn random_secret() -> String {
    (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect()
}

/// Starts (or reuses) the dev cluster, loads the example once, serves until Ctrl-C.
pub async fn run(dir: &Path, port: u16, pg_port: u16) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let pg_dir = dir.join("postgres");
    println!("Starting Postgres in {} …", pg_dir.display());
    let mut cluster = LocalCluster::start(&pg_dir, Some(pg_port)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = cluster.create_database(DATABASE).map_err(|e| anyhow::anyhow!("{e}"))?;
    load_example(&url).await?;
    let (mut auth, tables) = example_settings()?;
    let secret = random_secret();
    auth.secret = Some(secret.clone());
    let mut cfg = ferrite_server::ServerConfig {
        database_url: url.clone(),
        data_dir: dir.join("shapes"),
        port,
        allow_shape_deletion: true,
        auth,
        tables,
        ..Default::default()
    };
    // The sign-in and the editor app, mounted beside the API.
    let dev_web = || Some(crate::dev_web::router(DevWeb::new(&url, &secret, &cfg.listen, app_files())));
    let server = match ferrite_server::start_with(cfg.clone(), dev_web()).await {
        Ok(s) => s,
        Err(ferrite_server::StartError::Listen { .. }) => {
            cfg.port = 0;
            ferrite_server::start_with(cfg.clone(), dev_web()).await?
        }
        Err(e) => return Err(e.into()),
    };
    println!();
    println!("  Postgres:   {url}");
    println!("  Data:       {}", dir.display());
    println!("  Shape API:  {}/v1/shape?table=steps&offset=-1", server.url());
    println!("  Health:     {}/v1/health", server.url());
    println!(
        "  Sign-in:    {}/dev/users, then POST {{\"user_id\": …}} to {}/dev/token for a token",
        server.url(),
        server.url()
    );
    println!("  Editor:     {}/", server.url());
    println!();
    println!("Press Ctrl-C to stop (Postgres is shut down cleanly; data is kept for the next run).");
    crate::wait_for_ctrl_c().await;
    println!("Stopping …");
    server.shutdown().await;
    cluster.stop();
    Ok(())
}

async fn load_example(url: &str) -> Result<()> {
    let client = ferrite_pg::connect::connect(url).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let exists = client.query_one("SELECT to_regclass('public.pipelines') IS NOT NULL", &[]).await?.get::<_, bool>(0);
    if !exists {
        println!("Loading the pipeline-editor example schema and seed data …");
        client.batch_execute(SCHEMA_SQL).await.context("loading examples/pipeline-editor/schema.sql")?;
        client.batch_execute(SEED_SQL).await.context("loading examples/pipeline-editor/seed.sql")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_settings_load() {
        let (auth, tables) = super::example_settings().unwrap();
        assert_eq!(auth.mode, ferrite_server::config::AuthMode::Jwt);
        assert_eq!(tables["connections"].existence, ferrite_server::config::Existence::AddWins);
        assert_eq!(tables["steps"].existence, ferrite_server::config::Existence::DeleteWins);
        assert!(tables["users"].public);
        assert_ne!(super::random_secret(), super::random_secret());
        assert_eq!(super::random_secret().len(), 64);
    }
}

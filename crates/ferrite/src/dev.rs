//! `ferrite dev`: a throwaway local Postgres with the pipeline-editor example, and the server.

use anyhow::{Context, Result};
use ferrite_pg::cluster::LocalCluster;
use std::path::Path;

/// The example schema and seed data, compiled in so `ferrite dev` works from any directory.
const SCHEMA_SQL: &str = include_str!("../../../examples/pipeline-editor/schema.sql");
const SEED_SQL: &str = include_str!("../../../examples/pipeline-editor/seed.sql");
/// The example's conflict policies (its `[tables.*]`); its other keys are for `ferrite serve`.
const EXAMPLE_CONFIG: &str = include_str!("../../../examples/pipeline-editor/ferrite.toml");
const DATABASE: &str = "ferrite_dev";

/// The `[tables.*]` settings of the pipeline-editor example.
fn example_tables() -> Result<std::collections::BTreeMap<String, ferrite_server::config::TableConfig>> {
    let mut doc: toml::Table = EXAMPLE_CONFIG.parse().context("examples/pipeline-editor/ferrite.toml")?;
    Ok(match doc.remove("tables") {
        Some(t) => t.try_into().context("examples/pipeline-editor/ferrite.toml [tables]")?,
        None => Default::default(),
    })
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
    let mut cfg = ferrite_server::ServerConfig {
        database_url: url.clone(),
        data_dir: dir.join("shapes"),
        port,
        allow_shape_deletion: true,
        tables: example_tables()?,
        ..Default::default()
    };
    let server = match ferrite_server::start(cfg.clone()).await {
        Ok(s) => s,
        Err(ferrite_server::server::StartError::Listen { .. }) => {
            cfg.port = 0;
            ferrite_server::start(cfg).await?
        }
        Err(e) => return Err(e.into()),
    };
    println!();
    println!("  Postgres:   {url}");
    println!("  Data:       {}", dir.display());
    println!("  Shape API:  {}/v1/shape?table=steps&offset=-1", server.url());
    println!("  Health:     {}/v1/health", server.url());
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
    let exists = client
        .query_one("SELECT to_regclass('public.pipelines') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
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
    fn the_example_policies_load() {
        let tables = super::example_tables().unwrap();
        assert_eq!(tables["connections"].existence.as_deref(), Some("add-wins"));
    }
}

//! `ferrite-bench web-stores`: the web client's initial sync into each of its stores, in
//! Chromium — IndexedDB (the default) and PGlite (Postgres in WebAssembly, kept in IndexedDB) —
//! so that an app choosing PGlite for its SQL knows what the choice costs. Prints, per store,
//! the time until every row is synced, until every row is stored (read back from the store), and
//! a reopen of the stored replica (what a reload does), and the PGlite / IndexedDB ratios.
//!
//! Needs `npm ci` in `web/` and Chromium at /usr/bin/chromium (or `CHROMIUM`); without them it
//! says so and is skipped.

use crate::{config, env, median, wait_healthy};
use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Prints the figures for a `rows`-row shape (medians of `runs`, the stores alternating).
pub async fn web_stores(rows: u64, runs: usize) -> Result<()> {
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web");
    if !web.join("node_modules/playwright-core").exists() {
        println!("web-stores: skipped: run `npm ci` in {} (scripts/setup.sh does)", web.display());
        return Ok(());
    }
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    // Rows like the lead forms' leads: a uuid, a few short texts, a status, a timestamp.
    pg.batch_execute(&format!(
        "CREATE TABLE leads (id uuid PRIMARY KEY, name text NOT NULL, email text NOT NULL, phone text,
                             message text NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL);
         INSERT INTO leads SELECT md5(g::text)::uuid, 'Visitor ' || g, 'visitor' || g || '@example.com',
                CASE WHEN g % 3 = 0 THEN NULL ELSE '+1 555 ' || lpad(g::text, 7, '0') END,
                'Hello, I would like to hear more about your offer (message ' || g || ').',
                (ARRAY['new', 'contacted', 'won', 'lost'])[1 + g % 4],
                '2026-01-01'::timestamptz + g * interval '1 minute'
           FROM generate_series(1, {rows}) g;"
    ))
    .await?;
    let server = ferrite_server::start(config(&env, "shapes")).await?;
    wait_healthy(&server.url()).await?;

    let out = Command::new("node")
        .arg("bench/stores.mjs")
        .current_dir(web.join("client"))
        .env("FERRITE_URL", server.url())
        .env("TABLE", "leads")
        .env("ROWS", rows.to_string())
        .env("RUNS", runs.to_string())
        .output()
        .context("run node bench/stores.mjs")?;
    server.shutdown().await;
    if !out.status.success() {
        return Err(anyhow!("the Chromium benchmark failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut figures: std::collections::BTreeMap<(String, &str), Vec<f64>> = Default::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("benchmark output {line:?}"))?;
        let store = v["store"].as_str().unwrap_or("?").to_string();
        for key in ["start_ms", "synced_ms", "stored_ms", "reopen_ms"] {
            figures.entry((store.clone(), key)).or_default().push(v[key].as_f64().unwrap_or(f64::NAN));
        }
    }
    let get = |store: &str, key: &'static str| -> Result<f64> {
        let v = figures.get(&(store.to_string(), key)).ok_or_else(|| anyhow!("no {key} figure for {store}"))?;
        Ok(median(v.clone()))
    };
    let spread = |store: &str, key: &'static str| -> String {
        let v = figures.get(&(store.to_string(), key)).cloned().unwrap_or_default();
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.0}–{hi:.0}")
    };
    for store in ["indexeddb", "pglite"] {
        let stored = get(store, "stored_ms")?;
        println!(
            "web-stores: {rows}-row shape into a new {store} replica in Chromium: synced {:.0} ms, stored {:.0} ms (runs {}; {:.0} rows/s), reopened {:.0} ms{} (medians of {runs})",
            get(store, "synced_ms")?,
            stored,
            spread(store, "stored_ms"),
            rows as f64 / (stored / 1000.0),
            get(store, "reopen_ms")?,
            if store == "pglite" { format!("; starting a new PGlite database {:.0} ms before that", get(store, "start_ms")?) } else { String::new() },
        );
    }
    println!(
        "web-stores: PGlite / IndexedDB: stored {:.2}×, reopened {:.2}× the time",
        get("pglite", "stored_ms")? / get("indexeddb", "stored_ms")?,
        get("pglite", "reopen_ms")? / get("indexeddb", "reopen_ms")?
    );
    Ok(())
}

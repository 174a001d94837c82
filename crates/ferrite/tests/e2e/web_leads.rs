//! The lead forms in headless Chromium, served by the real `ferrite dev --example lead-forms`
//! binary (its own Postgres, jwt mode, site tokens for visitors and the staff sign-in; the app
//! keeps its data in PGlite), driven by playwright-core from Node (`web/lead-forms/tests`), and
//! the committed bundle check. Screenshots go to `target/web-artifacts/`.

use crate::common::*;
use crate::web_editor::{run, web};
use std::path::Path;
use std::process::Command;

#[test]
fn lead_forms_in_chromium() {
    assert!(
        web().join("node_modules/@electric-sql/pglite").exists(),
        "run scripts/setup.sh (or `npm ci` in web/) first"
    );
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start_example(dir.path(), free_port(), "lead-forms");
    let sites_url = dev.printed_value("Sites").expect("ferrite dev prints the sites' URL");
    let database_url = dev.printed_value("Postgres").expect("ferrite dev prints its Postgres URL");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    run(
        "the lead forms' browser tests",
        Command::new("node")
            .args(["--test", "--test-reporter=spec", "--test-concurrency=1", "--test-timeout=300000", "tests/"])
            .current_dir(web().join("lead-forms"))
            .env("EDITOR_URL", &sites_url)
            .env("DATABASE_URL", &database_url)
            .env("ARTIFACTS", &artifacts),
    );
    for shot in ["lead-forms-offline", "lead-forms-inbox"] {
        assert!(artifacts.join(format!("{shot}.png")).exists(), "screenshot {shot} saved");
    }
}

#[test]
fn committed_lead_forms_bundle_matches_its_sources() {
    run(
        "type-checking the lead forms",
        Command::new("npm").args(["run", "typecheck", "-w", "ferrite-lead-forms"]).current_dir(web()),
    );
    run(
        "comparing web/lead-forms/dist with a fresh build",
        Command::new("node").args(["build.mjs", "--check"]).current_dir(web().join("lead-forms")),
    );
    // The service worker keeps PGlite's files (served from the installed package) in a cache
    // named after the installed PGlite, so a different version's files never meet this worker.
    let package: serde_json::Value = serde_json::from_slice(
        &std::fs::read(web().join("node_modules/@electric-sql/pglite/package.json")).expect("PGlite installed"),
    )
    .unwrap();
    let version = package["version"].as_str().expect("a version");
    let sw = std::fs::read_to_string(web().join("lead-forms/dist/sw.js")).unwrap();
    assert!(sw.contains(&format!("lead-forms-pglite-{version}")), "the PGlite cache is named after PGlite {version}");
}

//! The agents console in headless Chromium, served by the real `ferrite dev --example
//! agents-console` binary (its own Postgres, jwt mode, dev sign-in, and the agent runner writing
//! executions and events into Postgres as it runs tasks), driven by playwright-core from Node
//! (`web/agents-console/tests`), and the committed console bundle check. Screenshots (the
//! README's) go to `target/web-artifacts/`.

use crate::common::*;
use crate::web_editor::{run, web};
use std::path::Path;
use std::process::Command;

#[test]
fn agents_console_in_chromium() {
    assert!(web().join("node_modules/playwright-core").exists(), "run scripts/setup.sh (or `npm ci` in web/) first");
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start_example(dir.path(), free_port(), "agents-console");
    let console_url = dev.printed_value("Console").expect("ferrite dev prints the console's URL");
    let database_url = dev.printed_value("Postgres").expect("ferrite dev prints its Postgres URL");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    run(
        "the agents console's browser tests",
        Command::new("node")
            .args(["--test", "--test-reporter=spec", "--test-concurrency=1", "tests/"])
            .current_dir(web().join("agents-console"))
            .env("EDITOR_URL", &console_url)
            .env("DATABASE_URL", &database_url)
            .env("ARTIFACTS", &artifacts),
    );
    for shot in ["agents-console-tasks", "agents-console-execution", "agents-console-device"] {
        assert!(artifacts.join(format!("{shot}.png")).exists(), "screenshot {shot} saved");
    }
}

#[test]
fn committed_console_bundle_matches_its_sources() {
    run(
        "type-checking the agents console",
        Command::new("npm").args(["run", "typecheck", "-w", "ferrite-agents-console"]).current_dir(web()),
    );
    run(
        "comparing web/agents-console/dist with a fresh build",
        Command::new("node").args(["build.mjs", "--check"]).current_dir(web().join("agents-console")),
    );
}

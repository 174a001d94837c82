//! The browser side, in headless Chromium: the pipeline editor served by the real `ferrite dev`
//! binary (its own Postgres, jwt mode, dev sign-in), driven by playwright-core from Node
//! (`web/editor/tests`, where `client.test.mjs` also drives the web client on its own), the web
//! client's unit tests and its shape sync against a server, and the committed editor bundle check.
//! Needs `npm ci` in `web/` and Chromium at /usr/bin/chromium (or `CHROMIUM`); `scripts/setup.sh`
//! installs both (`scripts/test.sh` runs it). Screenshots go to `target/web-artifacts/`.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `web/` directory (npm workspaces of the client, its React bindings and the editor).
pub(crate) fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web").canonicalize().expect("web/ exists")
}

fn require_node_modules() {
    let modules = web().join("node_modules");
    assert!(
        modules.join("playwright-core").exists() && modules.join("esbuild").exists(),
        "run scripts/setup.sh (or `npm ci` in {}) first; scripts/test.sh does",
        web().display()
    );
}

/// Runs a command to completion, printing its output; panics with it on failure.
pub(crate) fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    out
}

#[test]
fn pipeline_editor_in_chromium() {
    require_node_modules();
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(dir.path(), free_port());
    let editor_url = dev.printed_value("Editor").expect("ferrite dev prints the editor's URL");
    let database_url = dev.printed_value("Postgres").expect("ferrite dev prints its Postgres URL");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    run(
        "the editor's browser tests",
        Command::new("node")
            .args(["--test", "--test-reporter=spec", "--test-concurrency=1", "tests/"])
            .current_dir(web().join("editor"))
            .env("EDITOR_URL", &editor_url)
            .env("DATABASE_URL", &database_url)
            .env("ARTIFACTS", &artifacts),
    );
    for shot in ["online-ada-sees-grace", "cursors-grace-sees-ada", "offline-with-pending"] {
        assert!(artifacts.join(format!("{shot}.png")).exists(), "screenshot {shot} saved");
    }
}

#[test]
fn committed_editor_bundle_matches_its_sources() {
    require_node_modules();
    run(
        "type-checking the editor",
        Command::new("npm").args(["run", "typecheck", "-w", "ferrite-pipeline-editor"]).current_dir(web()),
    );
    run(
        "comparing web/editor/dist with a fresh build",
        Command::new("node").args(["build.mjs", "--check"]).current_dir(web().join("editor")),
    );
}

/// The web client's shape sync against a real server whose small chunks split a transaction
/// over several responses (web/client/test-server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_applies_a_transaction_split_over_responses_whole() {
    require_node_modules();
    if let Ok(filter) = std::env::var("FERRITE_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let db = TestDb::new().await;
    let s = TestServer::start_with(&db, |c| {
        c.chunk_bytes = 4096;
        c.long_poll_timeout_ms = 3_000;
    })
    .await;
    let (base, url) = (s.base.clone(), db.url.clone());
    tokio::task::spawn_blocking(move || {
        // Compiled aside, inside web/client so its imports resolve: the unit tests rebuild dist/
        // at the same time.
        let client = web().join("client");
        let out = tempfile::Builder::new().prefix(".test-build-").tempdir_in(&client).unwrap();
        run(
            "compiling the web client",
            Command::new("npx").args(["tsc", "-p", "tsconfig.json", "--outDir"]).arg(out.path()).current_dir(&client),
        );
        run(
            "the web client against a server",
            Command::new("node")
                .args(["--test", "--test-force-exit", "--test-reporter=spec", "test-server/"])
                .current_dir(&client)
                .env("CLIENT_DIST", out.path())
                .env("FERRITE_URL", base)
                .env("DATABASE_URL", url),
        );
    })
    .await
    .unwrap();
}

#[test]
fn web_client_unit_tests() {
    require_node_modules();
    run("the web client's unit tests", Command::new("npm").args(["test", "-w", "@ferrite/client"]).current_dir(web()));
}

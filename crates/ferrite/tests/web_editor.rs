//! The browser side, in headless Chromium: the pipeline editor served by the real `ferrite dev`
//! binary (its own Postgres, jwt mode, dev sign-in), driven by playwright-core from Node
//! (`web/editor/tests`), and the web client's unit tests and the committed editor bundle check.
//! Needs `npm ci` in `web/` and Chromium at /usr/bin/chromium (or `CHROMIUM`); `.ci/run`
//! installs both. Screenshots go to `target/web-artifacts/`.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web").canonicalize().expect("web/ exists")
}

fn require_node_modules() {
    let modules = web().join("node_modules");
    assert!(
        modules.join("playwright-core").exists() && modules.join("esbuild").exists(),
        "run `npm ci` in {} first (the CI script does)",
        web().display()
    );
}

/// Runs a command to completion, printing its output; panics with it on failure.
fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    out
}

/// A running `ferrite dev`, killed (with its Postgres, which it owns) when dropped.
struct Dev {
    child: Child,
    editor_url: String,
    database_url: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SIGINT first: `ferrite dev` stops its Postgres cleanly.
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(dir: &Path) -> Dev {
    let child = Command::new(ferrite_bin())
        .args(["dev", "--port", "0", "--pg-port", &free_port().to_string(), "--dir"])
        .arg(dir)
        .env("FERRITE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ferrite dev");
    let mut dev = Dev { child, editor_url: String::new(), database_url: String::new() };
    let stdout = dev.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx.recv_timeout(Duration::from_secs(90)).expect("ferrite dev prints its URLs");
        let line = line.trim();
        if let Some(url) = line.strip_prefix("Postgres:") {
            dev.database_url = url.trim().to_string();
        }
        if let Some(url) = line.strip_prefix("Editor:") {
            dev.editor_url = url.trim().to_string();
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return dev;
        }
    }
}

#[test]
fn pipeline_editor_in_chromium() {
    require_node_modules();
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    assert!(!dev.database_url.is_empty(), "ferrite dev printed its Postgres URL");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    run(
        "the editor's browser tests",
        Command::new("node")
            .args(["--test", "--test-reporter=spec", "--test-concurrency=1", "tests/"])
            .current_dir(web().join("editor"))
            .env("EDITOR_URL", &dev.editor_url)
            .env("DATABASE_URL", &dev.database_url)
            .env("ARTIFACTS", &artifacts),
    );
    for shot in ["online-ada-sees-grace", "cursors-grace-sees-ada", "offline-with-pending"] {
        assert!(artifacts.join(format!("{shot}.png")).exists(), "screenshot {shot} saved");
    }
}

#[test]
fn committed_editor_bundle_matches_its_sources() {
    require_node_modules();
    run("type-checking the editor", Command::new("npm").args(["run", "typecheck", "-w", "ferrite-pipeline-editor"]).current_dir(web()));
    run("comparing web/editor/dist with a fresh build", Command::new("node").args(["build.mjs", "--check"]).current_dir(web().join("editor")));
}

#[test]
fn web_client_unit_tests() {
    require_node_modules();
    run("the web client's unit tests", Command::new("npm").args(["test", "-w", "@ferrite/client"]).current_dir(web()));
}

//! The README's first steps, word for word, so they cannot rot: the shell blocks marked
//! `<!-- readme-test: server -->` (the run command) and `<!-- readme-test: shell -->` (the curl
//! and client commands) are read from README.md and run by bash in a fresh directory, as a
//! newcomer would after a clone — except that `cargo run --release --` is replaced by this test
//! build's `ferrite` binary (building a release binary inside a test would take too long; the
//! README's command runs the same binary). The run command runs until its server answers; the
//! `export` lines it prints are pasted before the other commands, each of which must succeed.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const CARGO_RUN: &str = "cargo run --release --";

/// The marked blocks of README.md in order: (kind, command lines).
fn marked_blocks(readme: &str) -> Vec<(String, Vec<String>)> {
    let mut blocks = vec![];
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(kind) = line.trim().strip_prefix("<!-- readme-test: ") else { continue };
        let kind = kind.split([' ', '-']).next().unwrap_or_default().to_string();
        assert_eq!(lines.next().map(str::trim), Some("```sh"), "a readme-test marker stands right above a ```sh block");
        let mut commands: Vec<String> = vec![];
        let mut continued = false;
        for line in lines.by_ref().take_while(|l| l.trim() != "```") {
            if continued {
                commands.last_mut().unwrap().push_str(line);
            } else if !line.trim().is_empty() && !line.trim().starts_with('#') {
                commands.push(line.to_string());
            }
            continued = line.ends_with('\\');
        }
        blocks.push((kind, commands));
    }
    blocks
}

/// The README sections whose every shell block must carry a `readme-test` marker.
const CHECKED_SECTIONS: [&str; 2] = ["## Run it", "## Try the Rust client"];

/// Every ```sh block in [`CHECKED_SECTIONS`] is marked (`server`, `shell`, or `skip` with a
/// reason), so a new command there cannot slip past this test unnoticed.
fn assert_all_marked(readme: &str) {
    let mut section = "";
    let mut previous = "";
    for line in readme.lines() {
        if line.starts_with("## ") {
            section = line;
        }
        if line.trim() == "```sh" && CHECKED_SECTIONS.contains(&section) {
            assert!(previous.starts_with("<!-- readme-test: "), "unmarked shell block in {section:?}");
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
}

/// A README command as this test runs it: the built binary in place of `cargo run --release --`.
fn as_run_here(command: &str) -> String {
    let bin = ferrite_bin();
    let replaced = command.replace(CARGO_RUN, &format!("'{}'", bin.display()));
    assert!(!replaced.contains("cargo "), "a README command runs cargo other than as `{CARGO_RUN}`: {command}");
    assert!(!replaced.split_whitespace().any(|w| w == "jq" || w == "|jq"), "the README needs no jq: {command}");
    replaced
}

/// Runs one README command in `dir` with the pasted `exports`; its stdout (it must succeed).
fn run_line(dir: &Path, exports: &[String], command: &str) -> String {
    let script = format!("set -euo pipefail\n{}\n{}", exports.join("\n"), as_run_here(command));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        // What a newcomer's shell has: none of the variables the banner's lines set.
        .env_remove("FERRITE_URL")
        .env_remove("FERRITE_TOKEN")
        .env("FERRITE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "README command failed ({}): {command}\n{stdout}\n{stderr}", out.status);
    println!("$ {command}\n{stdout}");
    stdout
}

/// The rows of a shape response printed by curl (it must be a shape response, not an error).
fn shape_rows(command: &str, printed: &str) -> Vec<Value> {
    let messages: Vec<Value> =
        serde_json::from_str(printed).unwrap_or_else(|e| panic!("{command}: not a shape response ({e}): {printed}"));
    messages.into_iter().filter_map(|m| m.get("value").cloned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_commands_work_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    assert_all_marked(&readme);
    let blocks = marked_blocks(&readme);
    let servers: Vec<&String> = blocks.iter().filter(|(k, _)| k == "server").flat_map(|(_, c)| c).collect();
    let shell: Vec<&String> = blocks.iter().filter(|(k, _)| k == "shell").flat_map(|(_, c)| c).collect();
    assert_eq!(servers.len(), 1, "one marked run command: {blocks:?}");
    assert!(servers[0].starts_with(CARGO_RUN), "{}", servers[0]);
    assert!(
        shell.iter().any(|c| c.starts_with("curl")) && shell.iter().any(|c| c.contains(" client push")),
        "{blocks:?}"
    );

    // A fresh directory, as after a clone: `.ferrite/dev` is made there.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!("exec {}", as_run_here(servers[0]))).current_dir(dir.path());
    let mut dev = DevProcess::spawn(cmd);
    let exports = dev.exports();
    assert_eq!(exports.len(), 2, "prints export lines for FERRITE_URL and FERRITE_TOKEN: {:#?}", dev.printed);
    assert!(dir.path().join(".ferrite/dev/postgres").exists());
    let base = dev.exported("FERRITE_URL").unwrap();
    wait_healthy(&base).await;

    let mut plain_rows = None;
    for command in shell {
        let dir = dir.path().to_path_buf();
        let exports = exports.clone();
        let c = command.clone();
        let printed = tokio::task::spawn_blocking(move || run_line(&dir, &exports, &c)).await.unwrap();
        if command.starts_with("curl") && command.contains("/v1/health") {
            let health: serde_json::Value = serde_json::from_str(printed.trim()).unwrap_or_default();
            assert_eq!(health["status"], "active", "{printed}");
        } else if command.starts_with("curl") && command.contains("/v1/shape") {
            let rows = shape_rows(command, &printed);
            assert!(!rows.is_empty(), "{command}: no rows: {printed}");
            if command.contains("where=") {
                let all = plain_rows.expect("the plain shape request comes first");
                assert!(rows.len() < all, "{command}: the where clause narrows the {all} rows: {printed}");
            } else {
                plain_rows = Some(rows.len());
            }
        } else if command.contains(" client sync ") {
            assert!(printed.contains("up to date"), "{printed}");
        } else if command.contains(" client query ") {
            assert!(printed.lines().count() > 1, "{printed}");
        } else if command.contains(" client status ") {
            assert!(printed.contains("1 local transaction waiting to be pushed"), "{printed}");
        } else if command.contains(" client push ") {
            assert!(printed.contains("1 accepted, 0 rejected"), "{printed}");
        }
    }
    assert!(dir.path().join("replica.db").exists(), "the client commands made replica.db where they ran");
    assert!(dev.interrupt_and_wait().success());
}

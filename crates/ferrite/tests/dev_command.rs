//! `ferrite dev`: starts its own Postgres, loads the pipeline-editor example once, serves it,
//! shuts Postgres down cleanly on Ctrl-C, and reuses the data on the next run.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `ferrite dev` and the lines it printed before it was ready.
struct Dev {
    child: Child,
    printed: Vec<String>,
    shape_url: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(dir: &Path, pg_port: u16) -> Dev {
    let child = Command::new(ferrite_bin())
        .args(["dev", "--port", "0", "--pg-port", &pg_port.to_string(), "--dir"])
        .arg(dir)
        .env("FERRITE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ferrite dev");
    // Owned by the guard from the start: a failed assertion below still kills it.
    let mut dev = Dev { child, printed: vec![], shape_url: String::new() };
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
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("ferrite dev prints its URLs");
        dev.printed.push(line.clone());
        if let Some(url) = line.trim().strip_prefix("Shape API:") {
            dev.shape_url = url.trim().split('?').next().unwrap().to_string();
            // Keep draining output so the child never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return dev;
        }
    }
}

fn interrupt_and_wait(dev: &mut Dev) -> std::process::ExitStatus {
    let pid = dev.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    for _ in 0..300 {
        if let Some(status) = dev.child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("ferrite dev did not stop on Ctrl-C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_the_example_and_reuses_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let pg_port = free_port();
    let mut dev = start_dev(dir.path(), pg_port);
    let text = dev.printed.join("\n");
    assert!(text.contains("Loading the pipeline-editor example"), "{text}");
    assert!(text.contains(&dir.path().canonicalize().unwrap().display().to_string()), "prints its data directory: {text}");
    let mut steps = ShapeReader::new(dev.shape_url.trim_end_matches("/v1/shape"), &[("table", "steps")]);
    steps.catch_up().await;
    assert!(!steps.rows.is_empty(), "the seeded steps are served");
    let seeded = steps.sorted_rows();
    let mut teams = ShapeReader::new(dev.shape_url.trim_end_matches("/v1/shape"), &[("table", "teams")]);
    teams.catch_up().await;
    assert!(!teams.rows.is_empty());

    // Ctrl-C: the server stops and Postgres is shut down cleanly (no postmaster.pid left).
    let status = interrupt_and_wait(&mut dev);
    assert!(status.success(), "exit status {status:?}");
    let pg_dir = dir.path().join("postgres");
    assert!(pg_dir.join("PG_VERSION").exists(), "the cluster is kept");
    assert!(!pg_dir.join("postmaster.pid").exists(), "Postgres was stopped");

    // A second run reuses the cluster and does not load the example again.
    let mut again = start_dev(dir.path(), pg_port);
    let text = again.printed.join("\n");
    assert!(!text.contains("Loading the pipeline-editor example"), "{text}");
    let mut steps = ShapeReader::new(again.shape_url.trim_end_matches("/v1/shape"), &[("table", "steps")]);
    steps.catch_up().await;
    assert_eq!(steps.sorted_rows(), seeded);
    assert!(interrupt_and_wait(&mut again).success());
}

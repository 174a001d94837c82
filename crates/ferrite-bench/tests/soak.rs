//! The soak benchmark's short mode: `ferrite-bench soak` with 100 live clients for 20 s against
//! a real server process (the `ferrite` binary beside this one, which a workspace test run
//! builds). Every client must receive every write of its shape once, in order, and the report
//! must have its periodic lines and its verdict.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_short_soak_delivers_every_write_once_and_reports_at_each_interval() {
    // Cargo builds this package's binary for its integration tests.
    let bench = std::path::PathBuf::from(env!("CARGO_BIN_EXE_ferrite-bench"));
    let server = bench.with_file_name("ferrite");
    assert!(
        server.exists(),
        "{} is missing: build it with `cargo build -p ferrite` (a workspace test run builds it)",
        server.display()
    );
    let started = Instant::now();
    let out = Command::new(&bench)
        .args(["soak", "--clients", "100", "--duration", "20s", "--interval", "5s", "--writes-per-sec", "20"])
        .args(["--shapes", "30"])
        .output()
        .expect("run ferrite-bench soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the soak failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(started.elapsed() < Duration::from_secs(60), "the short soak took {:?}", started.elapsed());
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("soak: t=")).collect();
    assert_eq!(lines.len(), 4, "a line every 5 s for 20 s:\n{stdout}");
    for l in &lines {
        for field in ["rss=", "fds=", "shapes=", "p50=", "p95=", "p99=", "delivered=", "errors="] {
            assert!(l.contains(field), "{field} in {l}");
        }
        assert!(l.contains("shapes=  31") || l.contains("shapes=31"), "30 room shapes and the shared one: {l}");
    }
    let delivered: u64 = lines
        .iter()
        .map(|l| l.split("delivered=").nth(1).unwrap().split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(delivered > 1000, "messages were delivered: {delivered}\n{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("soak: rss first") && l.contains("growth")), "{stdout}");
    assert!(
        stdout.contains("every client received every write of its shape once, in order"),
        "the delivery check:\n{stdout}"
    );
}

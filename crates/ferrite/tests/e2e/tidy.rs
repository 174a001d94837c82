//! The workspace's dependency rules, checked so they cannot erode one convenient import at a
//! time (ARCHITECTURE.md explains them):
//!
//! - `ferrite-protocol`, `ferrite-where` and `ferrite-core` are pure: no networking, no Postgres
//!   driver, no async runtime, no file system, process or environment access in their code.
//!   They define what everything else agrees on and are tested without any I/O.
//! - `ferrite-protocol` does not pull in the Postgres parser (`pg_query`): the web and Rust
//!   clients' wire types must stay light.
//! - `ferrite-client` never depends on the server or the Postgres crates: it runs on devices.
//! - The crates form layers: protocol ← where ← core ← {pg, server}; nothing depends upward.
//! - `ferrite-harness` (helper processes) is for tests and benchmarks: no shipped crate uses it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Normal (not dev or build) dependencies of every package, by name, from `cargo metadata`.
fn dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let host = String::from_utf8(Command::new("rustc").arg("-vV").output().expect("rustc -vV").stdout).unwrap();
    let host = host.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc names its host").to_string();
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let name = names[node["id"].as_str().unwrap()].to_string();
        let deps = graph.entry(name).or_default();
        for dep in node["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null());
            if normal {
                deps.insert(names[dep["pkg"].as_str().unwrap()].to_string());
            }
        }
    }
    graph
}

/// Everything `root` depends on, directly or not.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        for d in graph.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

/// Crates whose presence means networking, a Postgres connection, an async runtime or storage.
const IO_CRATES: [&str; 12] = [
    "tokio",
    "tokio-postgres",
    "postgres-protocol",
    "reqwest",
    "hyper",
    "axum",
    "mio",
    "socket2",
    "rusqlite",
    "ferrite-pg",
    "ferrite-server",
    "ferrite-client",
];

#[test]
fn pure_crates_do_no_io() {
    let graph = dependency_graph();
    // The graph was read (a rule checked against an empty graph would pass vacuously).
    assert!(closure(&graph, "ferrite-server").contains("tokio-postgres"));
    for pure in ["ferrite-protocol", "ferrite-where", "ferrite-core"] {
        let deps = closure(&graph, pure);
        let io: Vec<_> = IO_CRATES.iter().filter(|c| deps.contains(**c)).collect();
        assert!(io.is_empty(), "{pure} depends on {io:?}");
        // Nor in their own code: the standard library's I/O is as much I/O as a crate's.
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(pure).join("src");
        for (file, text) in rust_files(&src) {
            for forbidden in ["std::fs", "std::net", "std::process", "std::env", "File::open", "TcpStream"] {
                assert!(!text.contains(forbidden), "{} uses {forbidden}", file.display());
            }
        }
    }
    assert!(
        !closure(&graph, "ferrite-protocol").contains("pg_query"),
        "the protocol crate pulls in the Postgres parser"
    );
}

#[test]
fn the_client_never_depends_on_the_server_side() {
    let graph = dependency_graph();
    let deps = closure(&graph, "ferrite-client");
    for server_side in ["ferrite-server", "ferrite-pg", "ferrite-where", "ferrite-core", "tokio-postgres", "pg_query"] {
        assert!(!deps.contains(server_side), "ferrite-client depends on {server_side}");
    }
}

#[test]
fn crates_depend_only_downward() {
    let graph = dependency_graph();
    // Each crate, and the workspace crates it may use.
    let allowed: [(&str, &[&str]); 8] = [
        ("ferrite-protocol", &[]),
        ("ferrite-where", &["ferrite-protocol"]),
        ("ferrite-core", &["ferrite-protocol", "ferrite-where"]),
        ("ferrite-pg", &["ferrite-protocol", "ferrite-where", "ferrite-core"]),
        ("ferrite-client", &["ferrite-protocol"]),
        // Test and benchmark helpers: a dev-dependency only (the binary may not use it).
        ("ferrite-harness", &[]),
        ("ferrite-server", &["ferrite-protocol", "ferrite-where", "ferrite-core", "ferrite-pg"]),
        (
            "ferrite",
            &["ferrite-protocol", "ferrite-where", "ferrite-core", "ferrite-pg", "ferrite-server", "ferrite-client"],
        ),
    ];
    for (krate, may_use) in allowed {
        let used: Vec<String> = closure(&graph, krate)
            .into_iter()
            .filter(|d| d.starts_with("ferrite") && !may_use.contains(&d.as_str()))
            .collect();
        assert!(used.is_empty(), "{krate} depends on {used:?}");
    }
    let listed: BTreeSet<&str> = allowed.iter().map(|(k, _)| *k).chain(["ferrite-bench"]).collect();
    for krate in graph.keys().filter(|k| k.starts_with("ferrite")) {
        assert!(listed.contains(krate.as_str()), "{krate} is new: give it a place in these rules");
    }
}

/// The `.rs` files under `dir`, with their text.
fn rust_files(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

//! `@ferrite/react` (web/react) against a real server: its tests run in Node with jsdom, twice —
//! replicas in an in-memory IndexedDB, then in PGlite (web/react/test). The client and the bindings are compiled aside — into a
//! directory of their own inside web/react, whose `node_modules/@ferrite/client` is the fresh
//! client build — so other tests rebuilding web/client/dist at the same time cannot disturb it.

use crate::common::*;
use crate::web_editor::{run, web};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn react_bindings_against_a_server() {
    let modules = web().join("node_modules");
    assert!(
        modules.join("react").exists() && modules.join("jsdom").exists() && modules.join("fake-indexeddb").exists(),
        "run scripts/setup.sh (or `npm ci` in {}) first; scripts/test.sh does",
        web().display()
    );
    // A database and server per store: the tests create their tables by fixed names.
    let mut servers = vec![];
    for store in ["indexeddb", "pglite"] {
        let db = TestDb::new().await;
        let s = TestServer::start_with(&db, |c| c.long_poll_timeout_ms = 3_000).await;
        servers.push((store, s.base.clone(), db.url.clone(), db, s));
    }
    let runs: Vec<(&str, String, String)> =
        servers.iter().map(|(store, base, url, ..)| (*store, base.clone(), url.clone())).collect();
    tokio::task::spawn_blocking(move || {
        let react = web().join("react");
        let aside = tempfile::Builder::new().prefix(".test-build-").tempdir_in(&react).unwrap();
        let client_pkg = aside.path().join("node_modules/@ferrite/client");
        std::fs::create_dir_all(&client_pkg).unwrap();
        std::fs::copy(web().join("client/package.json"), client_pkg.join("package.json")).unwrap();
        run(
            "compiling the web client",
            Command::new("npx")
                .args(["tsc", "-p", "tsconfig.json", "--outDir"])
                .arg(client_pkg.join("dist"))
                .current_dir(web().join("client")),
        );
        // The bindings, typed against that build (not against web/client/dist, which may not exist).
        let tsconfig = serde_json::json!({
            "extends": "../tsconfig.json",
            "compilerOptions": {
                "rootDir": "../src",
                "outDir": "dist",
                "baseUrl": ".",
                "paths": {"@ferrite/client": ["./node_modules/@ferrite/client/dist/index.d.ts"]}
            },
            "include": ["../src"]
        });
        std::fs::write(aside.path().join("tsconfig.json"), tsconfig.to_string()).unwrap();
        run(
            "compiling @ferrite/react",
            Command::new("npx").args(["tsc", "-p"]).arg(aside.path().join("tsconfig.json")).current_dir(&react),
        );
        // The same tests with each store the client can keep its replica in.
        for (store, base, url) in runs {
            run(
                &format!("@ferrite/react against a server, replicas in {store}"),
                Command::new("node")
                    .args([
                        "--test",
                        "--test-force-exit",
                        "--test-reporter=spec",
                        "--test-concurrency=1",
                        "--test-timeout=60000",
                        "test/",
                    ])
                    .current_dir(&react)
                    .env("REACT_DIST", aside.path().join("dist"))
                    .env("CLIENT_DIST", client_pkg.join("dist"))
                    .env("FERRITE_STORE", store)
                    .env("FERRITE_URL", &base)
                    .env("DATABASE_URL", &url),
            );
        }
    })
    .await
    .unwrap();
}

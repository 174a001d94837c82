//! Runs the official `@electric-sql/client`, TanStack DB's electric collection (which tracks
//! the tags of relational shapes) and PGlite with `@electric-sql/pglite-sync` (initial sync, live
//! changes, resume after reopening) from web/electric-compat against a Ferrite server.
//! Needs `npm ci` in web/electric-compat (`scripts/setup.sh` does it; `scripts/test.sh` runs that).

use crate::common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_electric_client_works_unchanged() {
    let compat = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/electric-compat");
    assert!(
        compat.join("node_modules/@electric-sql/client").exists(),
        "run scripts/setup.sh (or `npm ci` in {}) first; scripts/test.sh does",
        compat.display()
    );
    let db = TestDb::new().await;
    let s = TestServer::start_with(&db, |c| c.long_poll_timeout_ms = 3_000).await;
    let base = s.base.clone();
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            // `--test-force-exit`: the client library keeps a 60 s localStorage-save timer alive.
            .args([
                "--test",
                "--test-force-exit",
                "--test-reporter=spec",
                "compat.test.mjs",
                "relational.test.mjs",
                "pglite.test.mjs",
            ])
            .current_dir(&compat)
            .env("FERRITE_URL", base)
            .env("DATABASE_URL", url)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "the Electric client suite failed:\n{stdout}\n{stderr}");
}

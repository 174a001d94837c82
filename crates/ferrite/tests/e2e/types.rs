//! `ferrite types`: the TypeScript row types of a schema, checked against what Postgres says and
//! compiled by TypeScript with an app's use of them.

use crate::common::*;
use std::path::Path;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_types_follow_the_schema_and_compile() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipeline-editor/schema.sql"),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    c.batch_execute(
        "CREATE TYPE mood AS ENUM ('calm', 'it''s fine');
         CREATE DOMAIN positive AS int4 CHECK (VALUE > 0);
         CREATE TABLE \"odd table\" (id int8 PRIMARY KEY, \"Weird col\" text, tags text[] NOT NULL, moods mood[],
                                     mood mood NOT NULL, n positive, ratio numeric, ok boolean NOT NULL, at timestamptz);
         CREATE TABLE odd_table (id int PRIMARY KEY);",
    )
    .await
    .unwrap();
    let run = |args: &[&str]| {
        let out =
            Command::new(ferrite_bin()).arg("types").args(["--database-url", &db.url]).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, ts, err) = run(&[]);
    assert!(ok, "{err}");
    for line in [
        "export interface Steps {",
        "  id: string",
        "  config: Json",
        "  position: number",
        "  x: number",
        "  parent_step_id: string | null",
        "export interface PipelineVersions {",
        "export interface TeamMembers {",
        "export interface OddTable {",
        "  id: bigint",
        "  \"Weird col\": string | null",
        "  tags: string[]",
        "  moods: (\"calm\" | \"it's fine\")[] | null",
        "  mood: \"calm\" | \"it's fine\"",
        "  n: number | null",
        "  ratio: string | null",
        "  ok: boolean",
        "  \"odd table\": OddTable",
        "  odd_table: OddTable2",
        "  steps: Steps",
    ] {
        assert!(ts.lines().any(|l| l == line), "missing {line:?} in\n{ts}");
    }

    // Only some tables; an unknown one is an error naming it.
    let (ok, only, _) = run(&["--table", "steps", "--table", "users"]);
    assert!(ok);
    assert!(
        only.contains("export interface Steps {")
            && only.contains("export interface Users {")
            && !only.contains("Pipelines {")
    );
    let (ok, _, err) = run(&["--table", "nope"]);
    assert!(!ok && err.contains("no table \"nope\""), "{err}");

    // The module compiles, and an app's wrong use of a row is a type error.
    let web = crate::web_editor::web();
    assert!(web.join("node_modules/typescript").exists(), "run scripts/setup.sh (npm ci in web/) first");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rows.ts"), &ts).unwrap();
    let tsc = |app: &str| {
        std::fs::write(dir.path().join("app.ts"), app).unwrap();
        Command::new(web.join("node_modules/.bin/tsc"))
            .args(["--noEmit", "--strict", "--target", "ES2022", "--module", "ES2022", "--moduleResolution", "bundler"])
            .arg(dir.path().join("app.ts"))
            .output()
            .unwrap()
    };
    let good = tsc("import type { Steps, Tables } from './rows'\nconst s: Steps = null!\nconst n: number = s.position\nconst c: Tables['connections'] = null!\nexport { n, c }\n");
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stdout));
    let bad =
        tsc("import type { Steps } from './rows'\nconst s: Steps = null!\nconst n: number = s.name\nexport { n }\n");
    assert!(!bad.status.success(), "a string column read as a number must not compile");
}

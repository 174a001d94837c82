//! `ferrite dev`: starts its own Postgres, loads the pipeline-editor example once, serves it in
//! jwt mode with a dev sign-in (real tokens carrying the user's teams at issuance) and the
//! editor app, shuts Postgres down cleanly on Ctrl-C, and reuses the data on the next run.

use crate::common::*;

const ADA: &str = "00000000-0000-4000-8000-0000000000a1";
const GRACE: &str = "00000000-0000-4000-8000-0000000000a2";

/// A token for `user` from the dev sign-in.
async fn dev_token(base: &str, user: &str) -> String {
    let r = send(reqwest::Client::new().post(format!("{base}/dev/token")).json(&serde_json::json!({"user_id": user})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["token"].as_str().unwrap().to_string()
}

/// The shape API's base URL a `ferrite dev` printed.
fn base_of(dev: &DevProcess) -> String {
    let shapes = dev.printed_value("Shape API").expect("prints the shape API");
    shapes.split('?').next().unwrap().trim_end_matches("/v1/shape").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_the_example_and_reuses_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let pg_port = free_port();
    let mut dev = DevProcess::start(dir.path(), pg_port);
    let text = dev.printed.join("\n");
    assert!(text.contains("Loading the pipeline-editor example"), "{text}");
    assert!(
        text.contains(&dir.path().canonicalize().unwrap().display().to_string()),
        "prints its data directory: {text}"
    );
    let base = base_of(&dev);
    assert!(text.contains(&format!("Editor:     {base}/")), "prints the editor's URL: {text}");

    // Shapes need a token; the dev sign-in lists the seeded users and issues real ones.
    assert_eq!(get(&format!("{base}/v1/shape?table=steps&offset=-1")).await.status, 401);
    let users = get(&format!("{base}/dev/users")).await;
    assert_eq!(users.status, 200);
    let grace = users.body.as_array().unwrap().iter().find(|u| u["id"] == GRACE).expect("Grace is a seeded user");
    assert_eq!(grace["teams"].as_array().unwrap().len(), 2, "{grace}");
    // The banner's export lines: the real URL, and a token for Ada that the server accepts.
    assert_eq!(dev.exported("FERRITE_URL"), Some(base.clone()), "{text}");
    assert!(text.contains("as Ada Lovelace (ada@example.com, team Platform) until"), "{text}");
    let printed = dev.exported("FERRITE_TOKEN").expect("prints a token");
    let mut steps = ShapeReader::new(&base, &[("table", "steps")]).with_token(&printed);
    steps.catch_up().await;
    let ada = dev_token(&base, ADA).await;
    let mut steps = ShapeReader::new(&base, &[("table", "steps")]).with_token(&ada);
    steps.catch_up().await;
    assert!(!steps.rows.is_empty(), "the seeded steps are served");
    // Only Ada's team's steps: those of its two pipelines (a step reaches its team through its
    // pipeline).
    let platform = ["00000000-0000-4000-8000-0000000000b1", "00000000-0000-4000-8000-0000000000b3"];
    assert!(
        steps.rows.values().all(|r| platform.contains(&r["pipeline_id"].as_str().unwrap_or_default())),
        "only Ada's team's steps"
    );
    let seeded = steps.sorted_rows();
    let mut teams = ShapeReader::new(&base, &[("table", "teams")]).with_token(&ada);
    teams.catch_up().await;
    assert_eq!(teams.rows.len(), 1);

    // Bad sign-in requests are refused with a message naming the problem.
    let bad = send(
        reqwest::Client::new()
            .post(format!("{base}/dev/token"))
            .header("content-type", "application/json")
            .body("{\"user_id\": 7}"),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("user_id"), "{}", bad.text);
    let unknown = send(
        reqwest::Client::new()
            .post(format!("{base}/dev/token"))
            .json(&serde_json::json!({"user_id": "00000000-0000-4000-8000-00000000ffff"})),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);

    // The editor app, its service worker and the avatars are served.
    let index = get(&format!("{base}/")).await;
    assert_eq!(index.status, 200);
    assert!(index.text.contains("/app.js"), "{}", index.text);
    for path in ["/app.js", "/app.css", "/sw.js", "/avatars/ada.svg"] {
        assert_eq!(get(&format!("{base}{path}")).await.status, 200, "{path}");
    }
    assert_eq!(get(&format!("{base}/avatars/nobody.svg")).await.status, 404);

    // Removing a membership revokes access at once (the rules read team_members, not the token).
    let pg_url = dev.printed_value("Postgres").unwrap();
    let (client, conn) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.execute("DELETE FROM team_members WHERE user_id = $1::text::uuid AND team_id = '00000000-0000-4000-8000-000000000002'", &[&GRACE]).await.unwrap();
    let grace = dev_token(&base, GRACE).await;
    let mut etl = ShapeReader::new(&base, &[("table", "pipelines")]).with_token(&grace);
    etl.catch_up().await;
    assert!(
        etl.rows.values().all(|r| r["team_id"] == "00000000-0000-4000-8000-000000000001"),
        "Grace no longer sees the Data team"
    );
    client.execute("INSERT INTO team_members (team_id, user_id, role) VALUES ('00000000-0000-4000-8000-000000000002', $1::text::uuid, 'viewer')", &[&GRACE]).await.unwrap();

    // Ctrl-C: the server stops and Postgres is shut down cleanly (no postmaster.pid left).
    let status = dev.interrupt_and_wait();
    assert!(status.success(), "exit status {status:?}");
    let pg_dir = dir.path().join("postgres");
    assert!(pg_dir.join("PG_VERSION").exists(), "the cluster is kept");
    assert!(!pg_dir.join("postmaster.pid").exists(), "Postgres was stopped");

    // A second run reuses the cluster and does not load the example again.
    let mut again = DevProcess::start(dir.path(), pg_port);
    let text = again.printed.join("\n");
    assert!(!text.contains("Loading the pipeline-editor example"), "{text}");
    assert_ne!(again.exported("FERRITE_TOKEN"), Some(printed), "a new token every run");
    let base = base_of(&again);
    // Each run signs with a new secret: the first run's tokens are worthless now.
    let stale =
        send(reqwest::Client::new().get(format!("{base}/v1/shape?table=steps&offset=-1")).bearer_auth(&ada)).await;
    assert_eq!(stale.status, 401, "{}", stale.text);
    let mut steps = ShapeReader::new(&base, &[("table", "steps")]).with_token(&dev_token(&base, ADA).await);
    steps.catch_up().await;
    assert_eq!(steps.sorted_rows(), seeded);
    assert!(again.interrupt_and_wait().success());
}

/// A second `ferrite dev` on a directory in use is refused at once, with a message naming the
/// first one, and leaves the first one's Postgres and server alone (it used to adopt that
/// Postgres, fight it for the replication slot, and shut it down on its own Ctrl-C).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_dev_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = DevProcess::start(dir.path(), free_port());
    let base = base_of(&first);
    let token = first.exported("FERRITE_TOKEN").unwrap();
    let second = std::process::Command::new(ferrite_bin())
        .args(["dev", "--port", "0", "--dir"])
        .arg(dir.path())
        .env("FERRITE_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another `ferrite dev`")
            && stderr.contains(&format!("(pid {})", first.child.id()))
            && stderr.contains(&dir.path().canonicalize().unwrap().display().to_string()),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&second.stdout).contains("Starting Postgres"), "refused before Postgres");
    // The first one still serves, on its Postgres.
    assert!(dir.path().join("postgres/postmaster.pid").exists());
    assert_eq!(get(&format!("{base}/v1/health")).await.status, 200);
    let mut steps = ShapeReader::new(&base, &[("table", "steps")]).with_token(&token);
    steps.catch_up().await;
    assert!(!steps.rows.is_empty());
    assert!(first.interrupt_and_wait().success());
    // Once it is gone, the directory is free again.
    let mut again = DevProcess::start(dir.path(), free_port());
    assert!(again.interrupt_and_wait().success());
}

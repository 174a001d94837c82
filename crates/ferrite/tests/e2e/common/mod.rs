//! Test support: a throwaway Postgres, a Ferrite server (in-process or as a child process), a
//! minimal shape reader that materialises rows the way a client does, and SQL oracles.
#![allow(dead_code)]

pub mod fault_proxy;

use ferrite_pg::cluster::LocalCluster;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Postgres cluster plus a database for one test.
pub struct TestDb {
    pub cluster: LocalCluster,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let cluster = LocalCluster::temporary().expect("start a local Postgres (is postgresql installed?)");
        let url = cluster.create_database("ferrite_test").expect("create database");
        TestDb { cluster, url }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        ferrite_pg::connect::connect(&self.url).await.expect("connect")
    }
}

/// Server settings tests usually want: small chunks, short long-polls, deletion allowed.
pub fn test_config(db_url: &str, data_dir: &Path) -> ferrite_server::ServerConfig {
    ferrite_server::ServerConfig {
        database_url: db_url.to_string(),
        data_dir: data_dir.to_path_buf(),
        port: 0,
        chunk_bytes: 10_000,
        long_poll_timeout_ms: 2_000,
        sse_timeout_secs: 5,
        allow_shape_deletion: true,
        ..Default::default()
    }
}

/// An in-process server with its own data directory.
pub struct TestServer {
    pub server: ferrite_server::RunningServer,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(db: &TestDb) -> TestServer {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: &TestDb, tweak: impl FnOnce(&mut ferrite_server::ServerConfig)) -> TestServer {
        Self::start_on(db, ferrite_server::Clock::system(), tweak).await
    }

    /// A server reading the time from `clock` (a test's [`ferrite_server::ManualClock`]): what
    /// expires by the clock (idle shapes, presence members) expires when the test advances it.
    pub async fn start_on(
        db: &TestDb,
        clock: ferrite_server::Clock,
        tweak: impl FnOnce(&mut ferrite_server::ServerConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(&db.url, &dir.path().join("shapes"));
        tweak(&mut cfg);
        let server = ferrite_server::start_with_clock(cfg, clock).await.expect("server starts");
        let base = server.url();
        wait_healthy(&base).await;
        TestServer { server, base, dir }
    }

    pub fn shape_url(&self) -> String {
        format!("{}/v1/shape", self.base)
    }

    /// Waits until `n` shape long-polls (or SSE streams) are held by the server, so that what
    /// the test does next happens while they wait.
    pub async fn wait_live_waiting(&self, n: i64) {
        let observer = self.server.observer();
        wait_until(&format!("{n} live requests held"), Duration::from_secs(10), || {
            let held = observer.metrics().live_waiting.load(std::sync::atomic::Ordering::Relaxed);
            async move { held >= n }
        })
        .await;
    }

    /// Waits until `n` presence long-polls are held by the server.
    pub async fn wait_presence_waiting(&self, n: i64) {
        let observer = self.server.observer();
        wait_until(&format!("{n} presence long-polls held"), Duration::from_secs(10), || {
            let held = observer.metrics().presence_waiting.load(std::sync::atomic::Ordering::Relaxed);
            async move { held >= n }
        })
        .await;
    }
}

/// Polls `condition` until it holds; fails the test, naming `what`, if it still does not after
/// `timeout`. The way to wait for something to happen (instead of sleeping a fixed time and
/// hoping it did).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `/v1/health` says active (replication connected).
pub async fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/v1/health")).await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server at {base} never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP response, decoded.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
    }
}

pub async fn get(url: &str) -> Resp {
    send(reqwest::Client::new().get(url)).await
}

pub async fn send(req: reqwest::RequestBuilder) -> Resp {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, headers, body, text }
}

/// Materialises a shape from the HTTP stream exactly as a client would.
pub struct ShapeReader {
    pub base: String,
    /// Definition query parameters (table, where, params[n], columns, replica).
    pub params: Vec<(String, String)>,
    pub handle: Option<String>,
    pub offset: String,
    pub cursor: Option<String>,
    pub rows: BTreeMap<String, Map<String, Value>>,
    pub up_to_date: bool,
    pub refetches: usize,
    /// Every change message key+offset seen, to detect duplicates.
    pub seen_ops: Vec<(String, String, String)>,
    /// Bearer token sent with every request (JWT mode).
    pub token: Option<String>,
    /// Relational shapes: each row's tags and active conditions, as a tag-tracking client
    /// keeps them (see `apply_event`).
    pub tags: BTreeMap<String, (Vec<String>, Vec<bool>)>,
    /// Every message seen, in order (for checking the wire format).
    pub log: Vec<Value>,
}

impl ShapeReader {
    pub fn new(base: &str, params: &[(&str, &str)]) -> ShapeReader {
        ShapeReader {
            base: format!("{base}/v1/shape"),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            handle: None,
            offset: "-1".into(),
            cursor: None,
            rows: BTreeMap::new(),
            up_to_date: false,
            refetches: 0,
            seen_ops: vec![],
            token: None,
            tags: BTreeMap::new(),
            log: vec![],
        }
    }

    /// The same reader sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: &str) -> ShapeReader {
        self.token = Some(token.to_string());
        self
    }

    fn url(&self, live: bool) -> String {
        let mut q: Vec<(String, String)> = self.params.clone();
        q.push(("offset".into(), self.offset.clone()));
        if let Some(h) = &self.handle {
            q.push(("handle".into(), h.clone()));
        }
        if live {
            q.push(("live".into(), "true".into()));
            if let Some(c) = &self.cursor {
                q.push(("cursor".into(), c.clone()));
            }
        }
        let qs = form_urlencoded_serialize(&q);
        format!("{}?{qs}", self.base)
    }

    /// One request; applies its messages. Returns the response.
    pub async fn step(&mut self, live: bool) -> Resp {
        let mut req = reqwest::Client::new().get(self.url(live));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let r = send(req).await;
        match r.status {
            200 => {
                self.handle = r.header("electric-handle");
                if let Some(o) = r.header("electric-offset") {
                    self.offset = o;
                }
                if let Some(c) = r.header("electric-cursor") {
                    self.cursor = Some(c);
                }
                if let Value::Array(msgs) = &r.body {
                    for m in msgs {
                        self.apply(m);
                    }
                }
            }
            409 => {
                self.refetches += 1;
                self.handle = r.header("electric-handle");
                self.offset = "-1".into();
                self.rows.clear();
                self.tags.clear();
                self.up_to_date = false;
            }
            other => panic!("unexpected status {other}: {}", r.text),
        }
        r
    }

    fn apply(&mut self, m: &Value) {
        self.log.push(m.clone());
        let headers = &m["headers"];
        if headers["control"] == "up-to-date" {
            self.up_to_date = true;
            return;
        }
        if let Some(event) = headers["event"].as_str() {
            self.apply_event(event, &headers["patterns"]);
            return;
        }
        let Some(op) = headers["operation"].as_str() else { return };
        let key = m["key"].as_str().unwrap_or_default().to_string();
        if let Some(tags) = headers["tags"].as_array() {
            let tags: Vec<String> = tags.iter().map(|t| t.as_str().unwrap().to_string()).collect();
            let active: Vec<bool> = headers["active_conditions"]
                .as_array()
                .expect("tagged messages carry active_conditions")
                .iter()
                .map(|a| a.as_bool().unwrap())
                .collect();
            if op == "delete" {
                self.tags.remove(&key);
            } else {
                let entry = self.tags.entry(key.clone()).or_default();
                if let Some(removed) = headers["removed_tags"].as_array() {
                    entry.0.retain(|t| !removed.iter().any(|r| r == t));
                }
                for t in tags {
                    if !entry.0.contains(&t) {
                        entry.0.push(t);
                    }
                }
                entry.1 = active;
            }
            // A row that moves in may already be here through another condition: an update.
            if op == "insert" && headers["is_move_in"] == true && self.rows.contains_key(&key) {
                let value = m["value"].as_object().cloned().unwrap_or_default();
                self.rows.insert(key, value);
                return;
            }
        }
        let key = m["key"].as_str().unwrap_or_default().to_string();
        let value = m["value"].as_object().cloned().unwrap_or_default();
        let pos = format!("{}/{}", headers["lsn"].as_str().unwrap_or("snap"), headers["op_position"]);
        self.seen_ops.push((key.clone(), op.to_string(), pos));
        match op {
            "insert" => {
                assert!(!self.rows.contains_key(&key), "duplicate insert for {key}");
                self.rows.insert(key, value);
            }
            "update" => {
                if !self.rows.contains_key(&key) {
                    let history: Vec<String> = self
                        .log
                        .iter()
                        .map(|m| {
                            let h = &m["headers"];
                            format!(
                                "{} {} {} {} {} {}",
                                h["operation"]
                                    .as_str()
                                    .or(h["event"].as_str())
                                    .or(h["control"].as_str())
                                    .unwrap_or("?"),
                                m["key"].as_str().unwrap_or(""),
                                m["value"]["team_id"],
                                h["lsn"],
                                h["patterns"],
                                h["active_conditions"]
                            )
                        })
                        .collect();
                    panic!("update for unknown row {key}; the messages so far:\n{}", history.join("\n"));
                }
                let row = self.rows.get_mut(&key).expect("checked");
                for (k, v) in value {
                    row.insert(k, v);
                }
            }
            "delete" => {
                assert!(self.rows.remove(&key).is_some(), "delete for unknown row {key}");
            }
            other => panic!("unknown operation {other}"),
        }
    }

    /// A move event, as a tag-tracking client applies it: each pattern names a position and a
    /// tag slot; `move-out` makes that position false on the rows whose tags hold the slot there
    /// and drops the rows none of whose tags (disjuncts) still holds whole; `move-in` makes it
    /// true again.
    fn apply_event(&mut self, event: &str, patterns: &Value) {
        let patterns: Vec<(usize, String)> = patterns
            .as_array()
            .expect("move events carry patterns")
            .iter()
            .map(|p| (p["pos"].as_u64().unwrap() as usize, p["value"].as_str().unwrap().to_string()))
            .collect();
        let mut dropped = vec![];
        for (key, (tags, active)) in self.tags.iter_mut() {
            for (pos, value) in &patterns {
                if tags.iter().any(|t| t.split('/').nth(*pos) == Some(value.as_str())) {
                    active[*pos] = event == "move-in";
                }
            }
            let visible = tags.iter().any(|t| {
                t.split('/').enumerate().filter(|(_, s)| !s.is_empty()).all(|(p, _)| active.get(p) == Some(&true))
            });
            if !visible {
                dropped.push(key.clone());
            }
        }
        for key in dropped {
            self.tags.remove(&key);
            self.rows.remove(&key);
        }
    }

    /// Requests until up-to-date (non-live).
    pub async fn catch_up(&mut self) {
        self.up_to_date = false;
        for _ in 0..10_000 {
            let r = self.step(false).await;
            if r.status == 200 && r.header("electric-up-to-date").is_some() {
                return;
            }
        }
        panic!("never caught up");
    }

    /// Live requests until the rows satisfy `done` (or the timeout passes).
    pub async fn live_until(&mut self, timeout: Duration, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "live sync did not converge; rows: {:?}",
                self.rows.keys().collect::<Vec<_>>()
            );
            if self.handle.is_none() || !self.up_to_date {
                self.catch_up().await;
            } else {
                self.step(true).await;
            }
        }
    }

    /// Rows as sorted JSON objects (for comparing with an oracle).
    pub fn sorted_rows(&self) -> Vec<Value> {
        let mut v: Vec<Value> = self.rows.values().map(|r| Value::Object(r.clone())).collect();
        v.sort_by_key(|a| a.to_string());
        v
    }
}

pub fn form_urlencoded_serialize(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", pct(k), pct(v))).collect::<Vec<_>>().join("&")
}

/// Percent-encodes a query parameter value.
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `SELECT` rows as JSON objects with every value as Postgres text (the wire format), sorted.
pub async fn oracle(client: &tokio_postgres::Client, table: &str, columns: &[&str], where_sql: &str) -> Vec<Value> {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!("'{c}', CASE WHEN \"{c}\" IS NULL THEN NULL ELSE concat(\"{c}\") END"))
        .collect();
    let sql = format!(
        "SELECT json_build_object({})::text FROM {table}{}",
        cols.join(", "),
        if where_sql.is_empty() { String::new() } else { format!(" WHERE {where_sql}") }
    );
    let rows = client.query(sql.as_str(), &[]).await.unwrap_or_else(|e| panic!("oracle {sql}: {e}"));
    let mut v: Vec<Value> = rows.iter().map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap()).collect();
    v.sort_by_key(|a| a.to_string());
    v
}

/// Path of the built `ferrite` binary (integration tests of this crate only).
pub fn ferrite_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferrite"))
}

/// Asserts two sorted row lists are equal, printing only the differing rows (capped) on failure.
pub fn assert_same_rows(got: &[Value], expected: &[Value], context: &str) {
    if got == expected {
        return;
    }
    let g: std::collections::BTreeSet<String> = got.iter().map(|v| v.to_string()).collect();
    let e: std::collections::BTreeSet<String> = expected.iter().map(|v| v.to_string()).collect();
    let extra: Vec<&String> = g.difference(&e).take(10).collect();
    let missing: Vec<&String> = e.difference(&g).take(10).collect();
    panic!(
        "{context}: got {} rows, expected {}; extra (first 10): {extra:?}; missing (first 10): {missing:?}",
        got.len(),
        expected.len()
    );
}

/// A server child process, killed (SIGKILL) when dropped so a failing test leaves none behind.
pub struct ServerProcess(pub Child);

impl ServerProcess {
    pub fn kill_9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ferrite serve` as a child process on `port`, with small chunks and short long-polls.
pub fn spawn_server(db_url: &str, data_dir: &std::path::Path, port: u16) -> ServerProcess {
    spawn_server_with_env(db_url, data_dir, port, &[])
}

/// [`spawn_server`] with extra environment variables (config overrides, test failpoints).
pub fn spawn_server_with_env(
    db_url: &str,
    data_dir: &std::path::Path,
    port: u16,
    env: &[(&str, &str)],
) -> ServerProcess {
    spawn_server_with_args(db_url, data_dir, port, &[], env)
}

/// [`spawn_server_with_env`] with further `ferrite serve` arguments (say, `--config <file>`).
pub fn spawn_server_with_args(
    db_url: &str,
    data_dir: &std::path::Path,
    port: u16,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> ServerProcess {
    ServerProcess(
        Command::new(ferrite_bin())
            .args(["serve", "--port", &port.to_string(), "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("DATABASE_URL", db_url)
            .env("FERRITE_CHUNK_BYTES", "10000")
            .env("FERRITE_LONG_POLL_TIMEOUT_MS", "1000")
            .env("FERRITE_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ferrite serve"),
    )
}

/// A TCP port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `ferrite dev` (its own Postgres under the given directory) and the lines it printed
/// until it was ready. Dropping it interrupts it, so Postgres stops cleanly, and kills it if it
/// has not exited within 10 s.
pub struct DevProcess {
    pub child: Child,
    pub printed: Vec<String>,
}

impl DevProcess {
    /// Starts `ferrite dev` on a free HTTP port and `pg_port`; returns once it is ready.
    pub fn start(dir: &Path, pg_port: u16) -> DevProcess {
        Self::start_example(dir, pg_port, "pipeline-editor")
    }

    /// [`DevProcess::start`] with `--example <example>`.
    pub fn start_example(dir: &Path, pg_port: u16, example: &str) -> DevProcess {
        let mut cmd = Command::new(ferrite_bin());
        cmd.args(["dev", "--example", example, "--port", "0", "--pg-port", &pg_port.to_string(), "--dir"]).arg(dir);
        Self::spawn(cmd)
    }

    /// Runs `cmd` (a `ferrite dev`, however invoked: it must not fork it off) and returns once it
    /// printed "Press Ctrl-C" (its last line before it serves), or panics with what it printed.
    pub fn spawn(mut cmd: Command) -> DevProcess {
        use std::io::{BufRead, BufReader};
        let child = cmd
            .env("FERRITE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ferrite dev");
        // Owned by the guard from the start: a failed wait below still stops it.
        let mut dev = DevProcess { child, printed: vec![] };
        let stdout = dev.child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(90))
                .unwrap_or_else(|e| panic!("ferrite dev never said it was ready ({e}); it printed {:#?}", dev.printed));
            let ready = line.starts_with("Press Ctrl-C");
            dev.printed.push(line);
            if ready {
                // Keep draining its output so the child never blocks on a full pipe.
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return dev;
            }
        }
    }

    /// The `export NAME=value` lines it printed for a shell (`FERRITE_URL`, `FERRITE_TOKEN`).
    pub fn exports(&self) -> Vec<String> {
        self.printed.iter().filter(|l| l.starts_with("export FERRITE_")).cloned().collect()
    }

    /// The value of a printed `export NAME=value` line.
    pub fn exported(&self, name: &str) -> Option<String> {
        let prefix = format!("export {name}=");
        self.printed.iter().find_map(|l| l.strip_prefix(&prefix)).map(String::from)
    }

    /// What it printed after `label:` (`"Postgres"`, `"Editor"`, `"Shape API"`, …).
    pub fn printed_value(&self, label: &str) -> Option<String> {
        let prefix = format!("{label}:");
        self.printed.iter().find_map(|l| l.trim().strip_prefix(&prefix)).map(|v| v.trim().to_string())
    }

    /// Interrupts it (Ctrl-C) and waits for it to exit.
    pub fn interrupt_and_wait(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("ferrite dev did not stop on Ctrl-C");
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
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

/// Reads a shape from the start (`query`: its parameters, URL-encoded) until up-to-date, through
/// `base` (a server, a cache, another node): its handle, the offset to go on from, and the
/// inserted rows' values in order. Any other status than 200 fails the test.
pub async fn read_to_head(
    http: &reqwest::Client,
    base: &str,
    query: &str,
    token: Option<&str>,
) -> (String, String, Vec<Value>) {
    let mut url = format!("{base}/v1/shape?{query}&offset=-1");
    let mut rows = Vec::new();
    loop {
        let mut req = http.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        if status != 200 {
            panic!("{url}: {status} {}", r.text().await.unwrap_or_default());
        }
        let handle = r.headers()["electric-handle"].to_str().unwrap().to_string();
        let offset = r.headers()["electric-offset"].to_str().unwrap().to_string();
        let done = r.headers().contains_key("electric-up-to-date");
        let body: Vec<Value> = r.json().await.unwrap();
        rows.extend(body.into_iter().filter_map(|m| m.get("value").cloned()));
        if done {
            return (handle, offset, rows);
        }
        url = format!("{base}/v1/shape?{query}&handle={handle}&offset={offset}");
    }
}

/// Reads a shape to up-to-date with `token`; the rows' values, or the refusing status and body.
pub async fn read_shape(base: &str, token: Option<&str>, params: &[(&str, &str)]) -> Result<Vec<Value>, (u16, String)> {
    let client = reqwest::Client::new();
    let mut handle: Option<String> = None;
    let mut offset = "-1".to_string();
    let mut rows = std::collections::BTreeMap::new();
    for _ in 0..100 {
        let mut q: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        q.push(("offset".into(), offset.clone()));
        if let Some(h) = &handle {
            q.push(("handle".into(), h.clone()));
        }
        let mut req = client.get(format!("{base}/v1/shape")).query(&q);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = send(req).await;
        match r.status {
            200 => {}
            409 => {
                handle = r.header("electric-handle");
                offset = "-1".into();
                rows.clear();
                continue;
            }
            s => return Err((s, r.text)),
        }
        handle = r.header("electric-handle");
        offset = r.header("electric-offset").unwrap();
        for m in r.body.as_array().unwrap() {
            if let Some(k) = m["key"].as_str() {
                match m["headers"]["operation"].as_str() {
                    Some("delete") => {
                        rows.remove(k);
                    }
                    Some(_) => {
                        let entry = rows.entry(k.to_string()).or_insert_with(|| json!({}));
                        entry.as_object_mut().unwrap().extend(m["value"].as_object().unwrap().clone());
                    }
                    None => {}
                }
            }
        }
        if r.header("electric-up-to-date").is_some() {
            return Ok(rows.into_values().collect());
        }
    }
    panic!("never up to date");
}

pub async fn post_tx(base: &str, token: Option<&str>, body: Value) -> Resp {
    let mut req = reqwest::Client::new().post(format!("{base}/v1/transactions")).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    send(req).await
}

/// An HS256 token signed with `secret` carrying `claims` plus a subject and an expiry an hour
/// away, unless `claims` sets them.
pub fn hs256_token(secret: &str, claims: Value) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let mut c = json!({"sub": "user", "exp": exp});
    c.as_object_mut().unwrap().extend(claims.as_object().unwrap().clone());
    encode(&Header::new(Algorithm::HS256), &c, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

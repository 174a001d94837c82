//! Several `ferrite serve` processes of one database in a cluster over a real nats-server (with
//! JetStream): one leads (follows the slot, publishes its shapes to the stream), the others apply
//! the stream, answer live reads from their copy, pass the other shape reads to the leader and
//! take over with the same shapes when it dies; writes go through any node; presence crosses
//! nodes and leaves with a dead node.

use crate::common::*;
use ferrite_harness::nats::LocalNats;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One node: its process, base URL and data directory.
struct Node {
    process: ServerProcess,
    base: String,
    _dir: tempfile::TempDir,
}

fn node(db: &TestDb, nats: &LocalNats, name: &str, env: &[(&str, &str)]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut all = vec![("FERRITE_CLUSTER__NATS_URL", nats.url()), ("FERRITE_CLUSTER__NODE_NAME", name.to_string())];
    all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let process = spawn_server_with_env(&db.url, &dir.path().join("shapes"), port, &env);
    Node { process, base: format!("http://127.0.0.1:{port}"), _dir: dir }
}

/// The node's `/v1/health` (its `cluster` part), when it answers.
async fn health(base: &str) -> Option<(u16, Value)> {
    let r = reqwest::get(format!("{base}/v1/health")).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json::<Value>().await.ok()?))
}

async fn role(base: &str) -> Option<String> {
    let (status, h) = health(base).await?;
    (status == 200).then(|| h["cluster"]["role"].as_str().map(String::from)).flatten()
}

/// Waits until every node answers 200 and sees all the others, and exactly one leads; returns
/// the leader's index.
async fn settled(nodes: &[&Node]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = vec![];
        let mut all_see_all = true;
        for (i, n) in nodes.iter().enumerate() {
            match health(&n.base).await {
                Some((200, h)) => {
                    all_see_all &= h["cluster"]["peers"].as_array().map_or(0, Vec::len) == nodes.len() - 1;
                    if h["cluster"]["role"] == "leader" {
                        leaders.push(i);
                    }
                }
                _ => all_see_all = false,
            }
        }
        if all_see_all && leaders.len() == 1 {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "the cluster never settled: leaders {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post_presence(base: &str, room: &str, client: &str, state: Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/presence"))
        .json(&json!({"room": room, "client_id": client, "state": state}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn members(base: &str, room: &str) -> Vec<Value> {
    let r = reqwest::get(format!("{base}/v1/presence?room={room}")).await.unwrap();
    r.json::<Value>().await.unwrap()["members"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_nodes_and_leaves_with_a_dead_node() {
    let db = TestDb::new().await;
    let nats = LocalNats::start().expect("nats-server starts");
    // Members would stay a minute after their node dies if only their TTL removed them.
    let ttl = [("FERRITE_PRESENCE_TTL_SECS", "60")];
    let mut a = node(&db, &nats, "a", &ttl);
    let b = node(&db, &nats, "b", &ttl);
    settled(&[&a, &b]).await;

    post_presence(&a.base, "pipelines:1", "client-1", json!({"cursor": [1, 2]})).await;
    wait_until("a's member seen on b", Duration::from_secs(10), || async {
        members(&b.base, "pipelines:1").await.iter().any(|m| m["state"] == json!({"cursor": [1, 2]}))
    })
    .await;
    let on_a = members(&a.base, "pipelines:1").await;
    assert_eq!(on_a, members(&b.base, "pipelines:1").await, "one member, the same id on both nodes");
    // A member of b's own, and a move of a's cursor: both nodes see both.
    post_presence(&b.base, "pipelines:1", "client-2", json!({"cursor": [5, 5]})).await;
    post_presence(&a.base, "pipelines:1", "client-1", json!({"cursor": [3, 4]})).await;
    for base in [&a.base, &b.base] {
        wait_until("both members, the new cursor", Duration::from_secs(10), || async {
            let m = members(base, "pipelines:1").await;
            m.len() == 2 && m.iter().any(|m| m["state"] == json!({"cursor": [3, 4]}))
        })
        .await;
    }
    // A long-poll on b is woken by a change on a.
    let offset =
        reqwest::get(format!("{}/v1/presence?room=pipelines:1", b.base)).await.unwrap().json::<Value>().await.unwrap()
            ["offset"]
            .clone();
    let poll = tokio::spawn({
        let url = format!("{}/v1/presence?room=pipelines:1&live=true&offset={offset}", b.base);
        async move { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() }
    });
    post_presence(&a.base, "pipelines:1", "client-1", json!({"cursor": [9, 9]})).await;
    let woken = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("b's long-poll woken").unwrap();
    assert!(woken["members"].as_array().unwrap().iter().any(|m| m["state"] == json!({"cursor": [9, 9]})), "{woken}");

    // a dies: its member leaves b's room after the node timeout, long before the TTL.
    let killed = Instant::now();
    a.process.kill_9();
    wait_until("the dead node's member gone from b", Duration::from_secs(15), || async {
        let m = members(&b.base, "pipelines:1").await;
        m.len() == 1 && m[0]["state"] == json!({"cursor": [5, 5]})
    })
    .await;
    println!("a dead node's presence members left the other node's room {:?} after the kill", killed.elapsed());
}

/// What `ferrite cluster status --url <base>` prints (it must succeed: a node leads).
fn cluster_status(base: &str) -> String {
    let out = std::process::Command::new(ferrite_bin()).args(["cluster", "status", "--url", base]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

async fn shape_rows(base: &str) -> (String, String, Vec<Value>) {
    read_to_head(&reqwest::Client::new(), base, "table=items", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_leads_followers_pass_reads_to_it_and_take_over_when_it_dies() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL); INSERT INTO items VALUES (1, 1);")
        .await
        .unwrap();
    let nats = LocalNats::start().expect("nats-server starts");
    let mut nodes = [node(&db, &nats, "a", &[]), node(&db, &nats, "b", &[])];
    let leader = settled(&[&nodes[0], &nodes[1]]).await;
    let follower = 1 - leader;
    let (lb, fb) = (nodes[leader].base.clone(), nodes[follower].base.clone());
    // `ferrite cluster status`, asked of the follower, names both nodes and the leader.
    let text = cluster_status(&fb);
    let leader_name = ["a", "b"][leader];
    let leader_line = text.lines().find(|l| l.starts_with(&format!("{leader_name} "))).unwrap_or_default();
    assert!(leader_line.contains("leader") && leader_line.contains(&lb), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with(["a", "b"][follower]) && l.contains("follower") && l.contains("this node")),
        "{text}"
    );
    // A follower's lag is its distance behind the leader in the shape stream.
    assert!(text.lines().any(|l| l.contains("follower") && l.contains(" msgs")), "{text}");

    // Reads through the follower are the leader's: same handle, same rows, live changes.
    let (handle, offset, rows) = shape_rows(&fb).await;
    assert_eq!(rows, vec![json!({"id": "1", "n": "1"})]);
    let (leaders_handle, _, _) = shape_rows(&lb).await;
    assert_eq!(handle, leaders_handle);
    let forwarded = |base: String| async move {
        let m = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        m.lines()
            .find_map(|l| l.strip_prefix("ferrite_cluster_forwarded_requests_total ")?.parse::<u64>().ok())
            .unwrap()
    };
    assert!(forwarded(fb.clone()).await >= 1, "the follower counts what it passed on");
    assert_eq!(forwarded(lb.clone()).await, 0, "the leader passes nothing on");
    // Once the stream has brought the shape to the follower, it answers live reads itself.
    wait_until("the follower holds the shape", Duration::from_secs(10), || async {
        health(&fb).await.is_some_and(|(_, h)| h["shapes"] == 1)
    })
    .await;
    let passed_on = forwarded(fb.clone()).await;
    let live =
        tokio::spawn(reqwest::get(format!("{fb}/v1/shape?table=items&handle={handle}&offset={offset}&live=true")));
    // A write through the follower: applied in Postgres, seen live through it.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let tx = json!({"id": 1, "hlc": format!("{now_ms}-0"), "mutations": [{"op": "insert", "table": "items", "value": {"id": 2, "n": 2}}]});
    let r = post_tx(&fb, None, json!({"client_id": "c1", "transactions": [tx]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["results"][0]["status"], "applied", "{}", r.text);
    let live = live.await.unwrap().unwrap();
    assert_eq!(live.status(), 200);
    let body: Vec<Value> = live.json().await.unwrap();
    assert_eq!(body[0]["value"], json!({"id": "2", "n": "2"}), "{body:?}");
    assert_eq!(forwarded(fb.clone()).await, passed_on, "the live read was answered from the follower's copy");
    // A catch-up at the open end places a boundary: the leader's to answer (then every node
    // answers that URL the same).
    let r = reqwest::get(format!("{fb}/v1/shape?table=items&handle={handle}&offset={offset}")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(forwarded(fb.clone()).await, passed_on + 1, "passed to the leader");

    // A watch (one held request for several shapes) and an SSE stream through the follower are
    // the leader's too, woken and fed as changes come.
    let (_, offset, _) = shape_rows(&fb).await;
    let watch = tokio::spawn({
        let url = format!("{fb}/v1/watch");
        let body = json!({"shapes": [format!("table=items&handle={handle}&offset={offset}")]});
        async move { reqwest::Client::new().post(url).json(&body).send().await.unwrap() }
    });
    let sse =
        reqwest::get(format!("{fb}/v1/shape?table=items&handle={handle}&offset={offset}&live=true&live_sse=true"))
            .await
            .unwrap();
    assert_eq!(sse.status(), 200);
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    pg.execute("INSERT INTO items VALUES (5, 5)", &[]).await.unwrap();
    let watched = watch.await.unwrap();
    assert_eq!(watched.status(), 200);
    assert_eq!(watched.json::<Value>().await.unwrap()["changed"], json!([0]));
    let mut events = sse.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"id\":\"5\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut events))
            .await
            .expect("the SSE stream through the follower carries the insert")
            .expect("stream open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(events);

    // The leader dies; the follower takes over within 10 s and serves the table again.
    let killed = Instant::now();
    nodes[leader].process.kill_9();
    wait_until("the follower leads", Duration::from_secs(10), || async {
        role(&fb).await.as_deref() == Some("leader")
    })
    .await;
    let takeover = killed.elapsed();
    // The shape came with the stream: the same handle goes on where it was (no 409).
    let r = reqwest::get(format!("{fb}/v1/shape?table=items&handle={handle}&offset={offset}")).await.unwrap();
    assert_eq!(r.status(), 200);
    let (new_handle, offset, rows) = shape_rows(&fb).await;
    assert_eq!(new_handle, handle);
    assert_eq!(rows.len(), 3, "rows 1, 2 and 5");
    let live =
        tokio::spawn(reqwest::get(format!("{fb}/v1/shape?table=items&handle={handle}&offset={offset}&live=true")));
    pg.execute("INSERT INTO items VALUES (3, 3)", &[]).await.unwrap();
    let body: Vec<Value> = live.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(body[0]["value"], json!({"id": "3", "n": "3"}), "{body:?}");
    println!("leader killed → the follower leads after {takeover:?}");
}

/// `deploy/cluster/run-local.sh` as its README tells: three nodes, nats-server and nginx on
/// this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_script_runs_three_nodes_behind_nginx() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (7);")
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let nodes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let (nats_port, nginx_port) = (free_port(), free_port());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = std::process::Command::new("bash")
        .arg(root.join("deploy/cluster/run-local.sh"))
        .env("DATABASE_URL", &db.url)
        .env("FERRITE", ferrite_bin())
        .env("FERRITE_LOG", "warn")
        .env("NODE_PORTS", nodes.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" "))
        .env("NATS_PORT", nats_port.to_string())
        .env("NGINX_PORT", nginx_port.to_string())
        .env("STATE_DIR", state.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Stopped with SIGTERM, which the script passes on to what it started.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let _ = self.0.wait();
        }
    }
    let script = Stop(script);
    let edge = format!("http://127.0.0.1:{nginx_port}");
    let first = format!("http://127.0.0.1:{}", nodes[0]);
    wait_until("every node up, seeing the two others and the leader", Duration::from_secs(60), || async {
        for port in &nodes {
            match health(&format!("http://127.0.0.1:{port}")).await {
                Some((200, h)) if h["cluster"]["peers"].as_array().map_or(0, Vec::len) == 2 => {}
                _ => return false,
            }
        }
        true
    })
    .await;
    wait_until("nginx answers", Duration::from_secs(30), || async {
        reqwest::get(format!("{edge}/nginx_status")).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let (_, _, rows) = shape_rows(&edge).await;
    assert_eq!(rows, vec![json!({"id": "7"})]);
    let text = cluster_status(&first);
    for name in ["node-1", "node-2", "node-3"] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing: {text}");
    }
    assert_eq!(text.matches(" leader ").count(), 1, "{text}");
    drop(script);
}

/// A reader that follows one shape and switches node when the one it talks to goes away (or
/// has no leader for a moment), keeping its handle, offset and cursor: the ids it received, in
/// order.
struct Follower {
    bases: Vec<String>,
    at: usize,
    handle: String,
    offset: String,
    cursor: Option<String>,
    ids: Vec<i64>,
    refetches: usize,
}

impl Follower {
    async fn start(bases: Vec<String>) -> Follower {
        let (handle, offset, rows) = shape_rows(&bases[0]).await;
        let ids = rows.iter().map(|r| r["id"].as_str().unwrap().parse().unwrap()).collect();
        Follower { bases, at: 0, handle, offset, cursor: None, ids, refetches: 0 }
    }

    /// One live request (on the next node when this one cannot be reached).
    async fn step(&mut self, http: &reqwest::Client) {
        let cursor = self.cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let url = format!(
            "{}/v1/shape?table=items&handle={}&offset={}&live=true{cursor}",
            self.bases[self.at], self.handle, self.offset
        );
        let r = match http.get(&url).send().await {
            Ok(r) => r,
            Err(_) => {
                self.at = (self.at + 1) % self.bases.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
        };
        match r.status().as_u16() {
            200 => {}
            409 => {
                self.refetches += 1;
                return;
            }
            // The node is going away (or knows no leader for a moment): another one.
            _ => {
                self.at = (self.at + 1) % self.bases.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
        }
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
        let (offset, cursor) = (h("electric-offset"), h("electric-cursor"));
        let Ok(body) = r.json::<Vec<Value>>().await else {
            self.at = (self.at + 1) % self.bases.len();
            return;
        };
        for m in body {
            if m["headers"]["operation"] == "insert" {
                self.ids.push(m["value"]["id"].as_str().unwrap().parse().unwrap());
            }
        }
        self.offset = offset.unwrap_or_default();
        self.cursor = cursor;
    }
}

/// Runs each reader in a task of its own until it has `expected` ids (or a minute passed);
/// with how many ids each has so far.
fn run_readers(
    readers: Vec<Follower>,
    expected: usize,
    http: &reqwest::Client,
) -> (Vec<tokio::task::JoinHandle<Follower>>, Vec<Arc<AtomicUsize>>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress: Vec<Arc<AtomicUsize>> = (0..readers.len()).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut tasks = vec![];
    for (mut r, seen) in readers.into_iter().zip(progress.clone()) {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            while r.ids.len() < expected && Instant::now() < deadline {
                r.step(&http).await;
                seen.store(r.ids.len(), Ordering::Relaxed);
            }
            r
        }));
    }
    (tasks, progress)
}

/// Waits until the slowest reader of [`run_readers`] has `n` ids.
async fn slowest_reader_has(progress: &[Arc<AtomicUsize>], n: usize) {
    wait_until("every reader far enough", Duration::from_secs(30), || {
        let slowest = progress.iter().map(|p| p.load(Ordering::Relaxed)).min().unwrap_or(0);
        async move { slowest >= n }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_followers_readers_go_on_at_another_node_and_every_node_answers_the_same_bytes() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 20);")
        .await
        .unwrap();
    let nats = LocalNats::start().expect("nats-server starts");
    let mut nodes = [node(&db, &nats, "a", &[]), node(&db, &nats, "b", &[]), node(&db, &nats, "c", &[])];
    let leader = settled(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (doomed, other) = (followers[0], followers[1]);

    // The same finished (handle, offset) from every node: the same bytes and headers.
    let (handle, offset, _) = shape_rows(&nodes[leader].base).await;
    pg.execute("INSERT INTO items VALUES (21)", &[]).await.unwrap();
    let mut answers = vec![];
    for n in &nodes {
        let url = format!("{}/v1/shape?table=items&handle={handle}&offset={offset}", n.base);
        // Until the insert is in the log (the first answer pins the chunk; the rest repeat it).
        let r = loop {
            let r = reqwest::get(&url).await.unwrap();
            assert_eq!(r.status(), 200);
            if r.headers()["electric-has-data"] == "true" {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let headers: Vec<String> =
            ["electric-handle", "electric-offset", "etag", "cache-control", "electric-schema", "content-type"]
                .iter()
                .map(|k| format!("{k}: {:?}", r.headers().get(*k)))
                .collect();
        use sha2::Digest;
        let body = r.bytes().await.unwrap();
        answers.push((format!("{:x}", sha2::Sha256::digest(&body)), headers));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");

    // Readers on a follower, a steady stream of numbered writes, the follower killed half way:
    // the readers go on at another node with the same handle and offset, and see every number
    // exactly once.
    const WRITES: i64 = 60;
    let http = reqwest::Client::new();
    let mut readers = vec![];
    for _ in 0..3 {
        readers.push(Follower::start(vec![nodes[doomed].base.clone(), nodes[other].base.clone()]).await);
    }
    let writer = tokio::spawn(async move {
        for id in 22..22 + WRITES {
            pg.execute("INSERT INTO items VALUES ($1)", &[&id]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let expected: Vec<i64> = (1..22 + WRITES).collect();
    let (tasks, progress) = run_readers(readers, expected.len(), &http);
    // The follower is killed half way through the writes.
    slowest_reader_has(&progress, (21 + WRITES / 3) as usize).await;
    nodes[doomed].process.kill_9();
    let killed = true;
    let mut readers = vec![];
    for t in tasks {
        readers.push(t.await.unwrap());
    }
    writer.await.unwrap();
    assert!(killed);
    for r in &readers {
        assert_eq!(r.refetches, 0, "no 409: the leader and its handles did not change");
        assert_eq!(r.ids, expected, "every number once, in order");
        assert_eq!(r.bases[r.at], nodes[other].base, "went on at the other follower");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shape_read_only_through_a_follower_does_not_expire_on_the_leader() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1);").await.unwrap();
    let nats = LocalNats::start().expect("nats-server starts");
    // Idle shapes expire after 2 s (checked every 5 s).
    let ttl = [("FERRITE_SHAPE_TTL_SECS", "2")];
    let nodes = [node(&db, &nats, "a", &ttl), node(&db, &nats, "b", &ttl)];
    let leader = settled(&[&nodes[0], &nodes[1]]).await;
    let fb = nodes[1 - leader].base.clone();
    let (handle, mut offset, _) = shape_rows(&fb).await;
    wait_until("the follower holds the shape", Duration::from_secs(10), || async {
        health(&fb).await.is_some_and(|(_, h)| h["shapes"] == 1)
    })
    .await;
    // Long-polls answered by the follower alone, for several expiry rounds: the follower tells
    // the leader the shape is in use, so it stays (no 409), and changes keep coming.
    let started = Instant::now();
    let mut n = 1;
    while started.elapsed() < Duration::from_secs(13) {
        n += 1;
        pg.execute("INSERT INTO items VALUES ($1)", &[&n]).await.unwrap();
        let r =
            reqwest::get(format!("{fb}/v1/shape?table=items&handle={handle}&offset={offset}&live=true")).await.unwrap();
        assert_eq!(r.status(), 200, "after {:?}", started.elapsed());
        offset = r.headers()["electric-offset"].to_str().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r =
        reqwest::get(format!("{}/v1/shape?table=items&handle={handle}&offset=-1", nodes[leader].base)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["electric-handle"], handle.as_str(), "the leader kept the shape");
}

/// Live reads of a shape through `base` from (`handle`, `offset`) until `done` holds for a
/// message; every message read on the way, and where the reads stopped.
async fn read_until(
    base: &str,
    query: &str,
    handle: &str,
    mut offset: String,
    done: impl Fn(&Value) -> bool,
) -> (Vec<Value>, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let mut seen = vec![];
    loop {
        assert!(Instant::now() < deadline, "never came: {seen:?}");
        let url = format!("{base}/v1/shape?{query}&handle={handle}&offset={offset}&live=true");
        let r = http.get(url).send().await.expect("the node answers");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        offset = r.headers()["electric-offset"].to_str().unwrap().to_string();
        let body: Vec<Value> = r.json().await.unwrap();
        let found = body.iter().any(&done);
        seen.extend(body);
        if found {
            return (seen, offset);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shape_with_a_subquery_goes_on_at_the_new_leader_with_its_moves() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute(
        "CREATE TABLE members (user_id text, team_id int, PRIMARY KEY (user_id, team_id));
         CREATE TABLE items (id int PRIMARY KEY, team_id int NOT NULL);
         INSERT INTO members VALUES ('u1', 1); INSERT INTO items VALUES (1, 1), (2, 2), (3, 3);",
    )
    .await
    .unwrap();
    let nats = LocalNats::start().expect("nats-server starts");
    let mut nodes = [node(&db, &nats, "a", &[]), node(&db, &nats, "b", &[])];
    let leader = settled(&[&nodes[0], &nodes[1]]).await;
    let fb = nodes[1 - leader].base.clone();
    let query = form_urlencoded_serialize(&[
        ("table".into(), "items".into()),
        ("where".into(), "team_id IN (SELECT team_id FROM members WHERE user_id = 'u1')".into()),
    ]);
    let (handle, offset, rows) = read_to_head(&reqwest::Client::new(), &fb, &query, None).await;
    assert_eq!(rows, vec![json!({"id": "1", "team_id": "1"})]);
    let id_is = |id: &'static str| move |m: &Value| m["value"]["id"] == id;
    // A move-in on the leader's watch.
    pg.execute("INSERT INTO members VALUES ('u1', 2)", &[]).await.unwrap();
    let (_, offset) = read_until(&fb, &query, &handle, offset, id_is("2")).await;
    // Its digest, asked of the follower, is the leader's replay (the follower passes it on).
    let digest = |offset: String| {
        let url = format!("{fb}/v1/shape/digest?{query}&handle={handle}&offset={offset}");
        async move {
            let r = get(&url).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.body["digest"].as_str().unwrap().split(':').next().unwrap().to_string()
        }
    };
    assert_eq!(digest(offset.clone()).await, "2", "items 1 and 2");

    // The leader dies. The shape, its subquery's state and its queue came with the stream: the
    // new leader goes on with the same handle (no 409), moves in and out as before.
    nodes[leader].process.kill_9();
    wait_until("the follower leads", Duration::from_secs(10), || async {
        role(&fb).await.as_deref() == Some("leader")
    })
    .await;
    pg.execute("INSERT INTO members VALUES ('u1', 3)", &[]).await.unwrap();
    let (_, offset) = read_until(&fb, &query, &handle, offset, id_is("3")).await;
    pg.execute("DELETE FROM members WHERE team_id = 1", &[]).await.unwrap();
    let (_, offset) = read_until(&fb, &query, &handle, offset, |m| m["headers"]["event"] == "move-out").await;
    pg.execute("INSERT INTO items VALUES (4, 2), (5, 1)", &[]).await.unwrap();
    let (seen, offset) = read_until(&fb, &query, &handle, offset, id_is("4")).await;
    assert!(seen.iter().all(|m| m["value"]["id"] != "5"), "item 5's team moved out: {seen:?}");
    assert_eq!(digest(offset).await, "3", "items 2, 3 and 4, replayed by the new leader");
}

/// Sends `signal` (`STOP`, `CONT`) to a node's process.
fn signal(node: &Node, signal: &str) {
    let status =
        std::process::Command::new("kill").arg(format!("-{signal}")).arg(node.process.0.id().to_string()).status();
    assert!(status.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_lock_while_frozen_stops_and_the_new_leader_keeps_the_shapes() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1);").await.unwrap();
    let nats = LocalNats::start().expect("nats-server starts");
    let mut nodes = [node(&db, &nats, "a", &[]), node(&db, &nats, "b", &[])];
    let leader = settled(&[&nodes[0], &nodes[1]]).await;
    let fb = nodes[1 - leader].base.clone();
    let (handle, offset, _) = shape_rows(&fb).await;

    // The leader freezes, and its database session (the lock's) is cut meanwhile: the other
    // node takes over and goes on with the same shape.
    signal(&nodes[leader], "STOP");
    let holders = pg.query("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted", &[]).await.unwrap();
    assert_eq!(holders.len(), 1, "one leadership lock");
    let pid: i32 = holders[0].get(0);
    pg.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    wait_until("the other node leads", Duration::from_secs(10), || async {
        role(&fb).await.as_deref() == Some("leader")
    })
    .await;
    pg.execute("INSERT INTO items VALUES (2)", &[]).await.unwrap();
    let r = reqwest::get(format!("{fb}/v1/shape?table=items&handle={handle}&offset={offset}&live=true")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Vec<Value> = r.json().await.unwrap();
    assert_eq!(body[0]["value"], json!({"id": "2"}), "{body:?}");

    // Thawed, the deposed leader finds it no longer leads (its lock, or the stream, tells it)
    // and stops with an error, for its supervisor to start it again as a follower.
    signal(&nodes[leader], "CONT");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = nodes[leader].process.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the deposed leader is still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "it stops with an error: {status:?}");
    assert_eq!(role(&fb).await.as_deref(), Some("leader"));
    let (h, _, rows) = shape_rows(&fb).await;
    assert_eq!((h, rows.len()), (handle, 2));
}

/// Postgres's WAL position now.
async fn wal_lsn(pg: &tokio_postgres::Client) -> u64 {
    ferrite_pg::replication::current_wal_lsn(pg).await.unwrap()
}

/// The position Ferrite's slot has confirmed (0 while it has none).
async fn slot_confirmed(pg: &tokio_postgres::Client) -> Option<u64> {
    ferrite_pg::replication::slot_status(pg, "ferrite_slot").await.unwrap().map(|s| s.confirmed_flush_lsn)
}

/// The ids of `items` rows in the shape stream's messages from `from` to its current end (the
/// log records hold each row's JSON verbatim); returns the next sequence to read.
async fn ids_in_stream(
    stream: &async_nats::jetstream::stream::Stream,
    from: u64,
    ids: &mut std::collections::HashSet<i64>,
) -> u64 {
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let re = |payload: &[u8], ids: &mut std::collections::HashSet<i64>| {
        let text = String::from_utf8_lossy(payload);
        for part in text.split("\"value\":{\"id\":\"").skip(1) {
            if let Some(n) = part.split('"').next().and_then(|n| n.parse().ok()) {
                ids.insert(n);
            }
        }
    };
    for seq in from..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        re(&m.payload, ids);
    }
    last + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leaders_readers_go_on_at_the_new_leader_with_every_number_once() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 20);")
        .await
        .unwrap();
    let nats = LocalNats::start().expect("nats-server starts");
    let mut nodes = [node(&db, &nats, "a", &[]), node(&db, &nats, "b", &[]), node(&db, &nats, "c", &[])];
    let leader = settled(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();

    // Two readers starting on each node (those on the leader fall over to the next node).
    const WRITES: i64 = 80;
    let http = reqwest::Client::new();
    let mut readers = vec![];
    for i in 0..6 {
        let mut order = bases.clone();
        order.rotate_left(i % 3);
        readers.push(Follower::start(order).await);
    }
    // A steady stream of numbered writes, each with a WAL position at or past its commit.
    let committed: Arc<std::sync::Mutex<Vec<(i64, u64)>>> = Arc::default();
    let writer = tokio::spawn({
        let committed = committed.clone();
        async move {
            for id in 21..21 + WRITES {
                pg.execute("INSERT INTO items VALUES ($1)", &[&id]).await.unwrap();
                let at = wal_lsn(&pg).await;
                committed.lock().unwrap().push((id, at));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // Meanwhile: whatever the slot has confirmed is in the stream (read after the slot, so
    // anything confirmed by then must be there). (The test without NATS shows it for certain:
    // there the slot must not move at all.)
    let checker = tokio::spawn({
        let committed = committed.clone();
        let (url, nats_url) = (db.url.clone(), nats.url());
        async move {
            let pg = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(pg.1);
            let pg = pg.0;
            let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
            let stream = js.get_stream("FERRITE_ferrite_slot").await.unwrap();
            let (mut next, mut ids, mut checks) = (1, std::collections::HashSet::new(), 0);
            while committed.lock().unwrap().len() < WRITES as usize {
                let Some(confirmed) = slot_confirmed(&pg).await else { continue };
                let done: Vec<(i64, u64)> = committed.lock().unwrap().clone();
                next = ids_in_stream(&stream, next, &mut ids).await;
                for (id, at) in done {
                    if at <= confirmed {
                        assert!(ids.contains(&id), "the slot confirmed {confirmed:x}, past row {id} (committed by {at:x}), which the stream does not hold");
                        checks += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            checks
        }
    });
    let expected: Vec<i64> = (1..21 + WRITES).collect();
    let (tasks, progress) = run_readers(readers, expected.len(), &http);
    slowest_reader_has(&progress, (20 + WRITES / 3) as usize).await;
    // The leader dies half way; another node leads within 10 s.
    let killed = Instant::now();
    nodes[leader].process.kill_9();
    let survivors: Vec<String> = (0..3).filter(|i| *i != leader).map(|i| bases[i].clone()).collect();
    wait_until("another node leads", Duration::from_secs(10), || {
        let survivors = survivors.clone();
        async move {
            for b in &survivors {
                if role(b).await.as_deref() == Some("leader") {
                    return true;
                }
            }
            false
        }
    })
    .await;
    let takeover = killed.elapsed();
    let mut readers = vec![];
    for t in tasks {
        readers.push(t.await.unwrap());
    }
    writer.await.unwrap();
    let checks = checker.await.unwrap();
    assert!(checks > 0, "the slot's position was compared with the stream");
    for r in &readers {
        assert_eq!(r.refetches, 0, "no 409: the new leader holds the same handles");
        assert_eq!(r.ids, expected, "every number once, in order");
        assert_ne!(r.bases[r.at], bases[leader], "went on away from the dead leader");
    }
    println!("leader killed → another node leads after {takeover:?}; {checks} slot/stream comparisons");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_the_nodes_go_on_and_presence_comes_back_with_it() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1);")
        .await
        .unwrap();
    let mut nats = LocalNats::start().expect("nats-server starts");
    let nodes = [node(&db, &nats, "a", &[]), node(&db, &nats, "b", &[])];
    let leader = settled(&[&nodes[0], &nodes[1]]).await;
    let fb = nodes[1 - leader].base.clone();
    let (handle, offset, _) = shape_rows(&fb).await;

    nats.kill();
    // Heartbeats stop, and the nodes forget each other...
    wait_until("the follower no longer hears the leader", Duration::from_secs(15), || async {
        health(&fb).await.is_some_and(|(_, h)| h["cluster"]["peers"].as_array().is_some_and(Vec::is_empty))
    })
    .await;
    // ...but the follower finds the leader in the database: it is ready, and reads of what the
    // shape stream holds work through it.
    assert_eq!(health(&fb).await.map(|(s, _)| s), Some(200));
    let r = reqwest::get(format!("{fb}/v1/shape?table=items&handle={handle}&offset=-1")).await.unwrap();
    assert_eq!(r.status(), 200);
    let rows: Vec<Value> = r.json().await.unwrap();
    assert_eq!(rows[0]["value"], json!({"id": "1"}), "{rows:?}");
    assert_eq!(role(&nodes[leader].base).await.as_deref(), Some("leader"), "leadership is Postgres's, not NATS's");
    // A change made now waits for the stream: nothing is served, nor confirmed to Postgres,
    // that the other nodes could not take over. (Watched for a second: the slot stays before it.)
    let pg = db.client().await;
    let before = wal_lsn(&pg).await;
    pg.execute("INSERT INTO items VALUES (2)", &[]).await.unwrap();
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(1) {
        let confirmed = slot_confirmed(&pg).await.expect("the slot");
        assert!(
            confirmed <= before,
            "the slot confirmed {confirmed:X}, past the insert (after {before:X}), without the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let live =
        tokio::spawn(reqwest::get(format!("{fb}/v1/shape?table=items&handle={handle}&offset={offset}&live=true")));

    // NATS comes back: the change arrives, the nodes hear each other again and presence crosses
    // between them.
    nats.restart().expect("nats-server restarts");
    let mut body: Vec<Value> = live.await.unwrap().unwrap().json().await.unwrap();
    let mut offset = offset;
    let deadline = Instant::now() + Duration::from_secs(30);
    while body.iter().all(|m| m["value"] != json!({"id": "2"})) {
        assert!(Instant::now() < deadline, "the change made without NATS never arrived");
        let r =
            reqwest::get(format!("{fb}/v1/shape?table=items&handle={handle}&offset={offset}&live=true")).await.unwrap();
        offset = r.headers()["electric-offset"].to_str().unwrap().to_string();
        body = r.json().await.unwrap();
    }
    settled(&[&nodes[0], &nodes[1]]).await;
    post_presence(&nodes[0].base, "room", "c1", json!({"back": true})).await;
    wait_until("presence crosses nodes again", Duration::from_secs(10), || async {
        members(&nodes[1].base, "room").await.iter().any(|m| m["state"] == json!({"back": true}))
    })
    .await;
}

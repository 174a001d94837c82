//! Several Rust clients on one pipeline (filtered shapes of a steps and a comments table, some
//! transactions writing both), each going offline at random and writing concurrently —
//! conflicting columns, deletes against updates, inserts — through a fault-injecting proxy per
//! client (requests refused, answers lost or cut, delays, duplicates, old requests replayed
//! late, connections cut while offline), then all coming back on a clean network: every replica
//! ends equal to Postgres, with every transaction applied exactly once. Seeded and replayable:
//! `FERRITE_SEEDS=1,2,3` picks seeds, `FERRITE_SEEDS=1000` runs seeds 0..1000 (default 300).

use crate::common::fault_proxy;
use crate::common::*;
use fault_proxy::{FaultCounts, FaultProxy, Faults};
use ferrite_client::{Change, Client, ClientError, ShapeDef, TokenSource, Values};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::time::{Duration, Instant};

fn seeds() -> Vec<u64> {
    match std::env::var("FERRITE_SEEDS") {
        Ok(s) if s.contains(',') => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Ok(s) => (0..s.trim().parse().unwrap_or(8)).collect(),
        Err(_) => (0..300).collect(),
    }
}

fn text(pairs: &[(&str, Option<String>)]) -> Values {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

async fn oracle(c: &tokio_postgres::Client, table: &str) -> Vec<Vec<Value>> {
    c.query(&format!("SELECT id::bigint, name, note FROM {table} WHERE pipeline_id = 1 ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            vec![r.get::<_, i64>(0).into(), r.get::<_, Option<String>>(1).into(), r.get::<_, Option<String>>(2).into()]
        })
        .collect()
}

fn local(client: &Client, table: &str) -> Vec<Vec<Value>> {
    client.query(&format!("SELECT id, name, note FROM {table} ORDER BY id"), &[]).unwrap()
}

/// Seeds run at once (each on its own table and clients; the run is latency-bound).
const PARALLEL_SEEDS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_after_random_offline_concurrent_writes() {
    let db = TestDb::new().await;
    let c = std::sync::Arc::new(db.client().await);
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let mut totals = FaultCounts::default();
    let mut running = tokio::task::JoinSet::new();
    let add = |totals: &mut FaultCounts, joined: Result<FaultCounts, tokio::task::JoinError>| {
        *totals += joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    };
    for seed in seeds() {
        if running.len() == PARALLEL_SEEDS {
            let joined = running.join_next().await.unwrap();
            add(&mut totals, joined);
        }
        running.spawn(run_seed(seed, s.base.clone(), c.clone(), dir.path().to_path_buf()));
    }
    while let Some(joined) = running.join_next().await {
        add(&mut totals, joined);
    }
    println!("faults injected over all seeds: {totals:?}");
    // The run must actually have exercised every fault.
    let FaultCounts { requests, offline, refused, lost, cut, duplicated, replayed } = totals;
    assert!(
        requests > 0 && offline > 0 && refused > 0 && lost > 0 && cut > 0 && duplicated > 0 && replayed > 0,
        "{totals:?}"
    );
}

/// One seed: three clients behind their own proxies on a fresh table; returns the faults met.
async fn run_seed(
    seed: u64,
    server: String,
    c: std::sync::Arc<tokio_postgres::Client>,
    dir: std::path::PathBuf,
) -> FaultCounts {
    let table = format!("steps_{seed}");
    // Comments (name = author, note = body) share transactions with steps: a transaction over
    // two shapes must stay whole until both show it.
    let comments = format!("comments_{seed}");
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, pipeline_id int NOT NULL, name text, note text);
         INSERT INTO {table} SELECT i, 1, 'name' || i, 'note' || i FROM generate_series(1, 12) i;
         INSERT INTO {table} SELECT i, 2, 'other' || i, NULL FROM generate_series(101, 104) i;
         CREATE TABLE {comments} (id int PRIMARY KEY, pipeline_id int NOT NULL, name text, note text);
         INSERT INTO {comments} SELECT i, 1, 'author' || i, 'comment' || i FROM generate_series(1, 4) i;"
    ))
    .await
    .unwrap();
    // Every client follows pipeline 1; pipeline 2 must stay out of their replicas and untouched.
    let def = ShapeDef::table(&table).filter("pipeline_id = 1");
    let cdef = ShapeDef::table(&comments).filter("pipeline_id = 1");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut proxies = vec![];
    for i in 0..3u64 {
        proxies.push(FaultProxy::start(&server, seed * 16 + i, Faults::CHAOTIC).await);
    }
    let clients: Vec<Client> = proxies
        .iter()
        .enumerate()
        .map(|(i, p)| Client::open(dir.join(format!("{seed}-{i}.db")), &p.base, TokenSource::None).unwrap())
        .collect();
    let mut rejected = vec![];
    for cl in &clients {
        // The first sync may meet faults too; it just has to get there.
        while survivable(cl.sync(&def).await).is_none() {}
        while survivable(cl.sync(&cdef).await).is_none() {}
    }
    let mut online = vec![true; clients.len()];
    let mut next_id = [1000, 2000, 3000];
    for step in 0..40 {
        let i = rng.gen_range(0..clients.len());
        let cl = &clients[i];
        let id = rng.gen_range(1..=14).to_string();
        let value = format!("s{seed}c{i}t{step}");
        match rng.gen_range(0..10) {
            0..=3 => {
                let col = if rng.gen_bool(0.5) { "name" } else { "note" };
                let mut changes = vec![Change::Update {
                    table: table.clone(),
                    key: text(&[("id", Some(id))]),
                    set: text(&[(col, Some(value.clone()))]),
                }];
                if rng.gen_bool(0.3) {
                    let comment = rng.gen_range(1..=4).to_string();
                    changes.push(Change::Update {
                        table: comments.clone(),
                        key: text(&[("id", Some(comment))]),
                        set: text(&[("note", Some(value))]),
                    });
                }
                written(cl.write(&changes));
            }
            4 => {
                written(cl.write(&[Change::Delete { table: table.clone(), key: text(&[("id", Some(id))]) }]));
            }
            5 => {
                next_id[i] += 1;
                let values = text(&[
                    ("id", Some(next_id[i].to_string())),
                    ("pipeline_id", Some("1".into())),
                    ("name", Some(value.clone())),
                    ("note", None),
                ]);
                // A new step and a comment on it, together.
                let comment = text(&[
                    ("id", Some(next_id[i].to_string())),
                    ("pipeline_id", Some("1".into())),
                    ("name", Some(format!("client {i}"))),
                    ("note", Some(format!("about {value}"))),
                ]);
                cl.write(&[
                    Change::Insert { table: table.clone(), values },
                    Change::Insert { table: comments.clone(), values: comment },
                ])
                .unwrap();
            }
            6 => {
                online[i] = !online[i];
                proxies[i].set_online(online[i]);
            }
            _ => {
                // Offline, these fail at once (nothing may be lost); online they meet faults.
                if let Some(report) = survivable(cl.push().await) {
                    rejected.extend(report.rejected);
                }
                // One shape or both, in either order: shapes lag each other.
                let (first, second) = if rng.gen_bool(0.5) { (&def, &cdef) } else { (&cdef, &def) };
                survivable(cl.sync(first).await);
                if rng.gen_bool(0.5) {
                    survivable(cl.sync(second).await);
                }
            }
        }
    }
    // Everyone comes back, on a clean network.
    for p in &proxies {
        p.set_online(true);
        p.set_faults(Faults::NONE);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for cl in &clients {
            rejected.extend(cl.push().await.unwrap().rejected);
            cl.sync(&def).await.unwrap();
            cl.sync(&cdef).await.unwrap();
        }
        let truth = oracle(&c, &table).await;
        let comments_truth = oracle(&c, &comments).await;
        let mut equal = true;
        for cl in &clients {
            let m = cl.metrics().unwrap();
            equal &= m.pending == 0
                && m.unconfirmed == 0
                && local(cl, &table) == truth
                && local(cl, &comments) == comments_truth;
        }
        if equal {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: replicas never converged\ntruth {truth:?}\n{:?}\ncomments {comments_truth:?}\n{:?}\n(pending, unconfirmed): {:?}",
            clients.iter().map(|cl| local(cl, &table)).collect::<Vec<_>>(),
            clients.iter().map(|cl| local(cl, &comments)).collect::<Vec<_>>(),
            clients.iter().map(|cl| cl.metrics().map(|m| (m.pending, m.unconfirmed)).unwrap()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let other: i64 = c
        .query_one(&format!("SELECT count(*) FROM {table} WHERE pipeline_id = 2 AND name LIKE 'other%'"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(other, 4, "seed {seed}: another pipeline's steps were touched");
    // Ids are unique per client, so a constraint rejection could only mean a transaction
    // was applied twice.
    assert!(
        !rejected.iter().any(|r| r.error.as_ref().is_some_and(|e| e.code == ferrite_client::RejectionCode::Constraint)),
        "seed {seed}: a transaction was applied twice: {rejected:?}"
    );
    let mut met = FaultCounts::default();
    for (i, p) in proxies.iter().enumerate() {
        let c = p.counts();
        if std::env::var("FERRITE_SEEDS").is_ok() {
            println!("seed {seed} client {i}: {c:?}");
        }
        met += c;
    }
    met
}

/// A local write of random ids: an update or delete of a row this replica does not have (ids 13
/// and 14 never exist, others may be deleted) is refused locally and writes nothing.
fn written(r: Result<u64, ClientError>) {
    match r {
        Ok(_) | Err(ClientError::NoRow { .. }) => {}
        Err(e) => panic!("local write failed: {e}"),
    }
}

/// The outcome of a client call over a faulty network: faults of the network are expected and
/// survived (`None`); anything else (a local database error, a refusal) fails the test.
fn survivable<T>(r: Result<T, ClientError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(ClientError::Unreachable(_)) => None,
        Err(e) => panic!("not a network fault: {e}"),
    }
}

//! Several Rust clients on one table, each going offline at random and writing concurrently —
//! conflicting columns, deletes against updates, inserts — then all coming back: every replica
//! ends equal to Postgres. Seeded and replayable: `FERRITE_SEEDS=1,2,3` picks seeds,
//! `FERRITE_SEEDS=1000` runs seeds 0..1000 (default 200). (A fault-injecting proxy between
//! clients and server is not part of this test yet.)

mod common;
use common::*;
use ferrite_client::{Change, Client, ShapeDef, TokenSource, Values};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::time::{Duration, Instant};

fn seeds() -> Vec<u64> {
    match std::env::var("FERRITE_SEEDS") {
        Ok(s) if s.contains(',') => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Ok(s) => (0..s.trim().parse().unwrap_or(8)).collect(),
        Err(_) => (0..200).collect(),
    }
}

fn text(pairs: &[(&str, Option<String>)]) -> Values {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

async fn oracle(c: &tokio_postgres::Client, table: &str) -> Vec<Vec<Value>> {
    c.query(&format!("SELECT id::bigint, a, b FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| vec![r.get::<_, i64>(0).into(), r.get::<_, Option<String>>(1).into(), r.get::<_, Option<String>>(2).into()])
        .collect()
}

fn local(client: &Client, table: &str) -> Vec<Vec<Value>> {
    client.query(&format!("SELECT id, a, b FROM {table} ORDER BY id"), &[]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_after_random_offline_concurrent_writes() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let s = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    for seed in seeds() {
        let table = format!("items_{seed}");
        c.batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, a text, b text);
             INSERT INTO {table} SELECT i, 'a' || i, 'b' || i FROM generate_series(1, 12) i;"
        ))
        .await
        .unwrap();
        let def = ShapeDef::table(&table);
        let mut rng = StdRng::seed_from_u64(seed);
        let clients: Vec<Client> = (0..3)
            .map(|i| Client::open(dir.path().join(format!("{seed}-{i}.db")), &s.base, TokenSource::None).unwrap())
            .collect();
        for cl in &clients {
            cl.sync(&def).await.unwrap();
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
                    let col = if rng.gen_bool(0.5) { "a" } else { "b" };
                    cl.write(&[Change::Update { table: table.clone(), key: text(&[("id", Some(id))]), set: text(&[(col, Some(value))]) }]).unwrap();
                }
                4 => {
                    cl.write(&[Change::Delete { table: table.clone(), key: text(&[("id", Some(id))]) }]).unwrap();
                }
                5 => {
                    next_id[i] += 1;
                    let values = text(&[("id", Some(next_id[i].to_string())), ("a", Some(value.clone())), ("b", None)]);
                    cl.write(&[Change::Insert { table: table.clone(), values }]).unwrap();
                }
                6 => online[i] = !online[i],
                _ if online[i] => {
                    cl.push().await.unwrap();
                    cl.sync(&def).await.unwrap();
                }
                _ => {}
            }
        }
        // Everyone comes back online.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for cl in &clients {
                cl.push().await.unwrap();
                cl.sync(&def).await.unwrap();
            }
            let truth = oracle(&c, &table).await;
            let mut equal = true;
            for cl in &clients {
                equal &= cl.pending().unwrap() == 0 && local(cl, &table) == truth;
            }
            if equal {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "seed {seed}: replicas never converged\ntruth {truth:?}\n{:?}",
                clients.iter().map(|cl| local(cl, &table)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

//! A full disk under the shape store: a real server whose data directory is a small tmpfs that a
//! filler file fills up. Appends fail with a clear error and metric, replication pauses without
//! confirming, existing shapes are still served, a new shape is refused with 503 + retry-after
//! and leaves nothing behind, and everything resumes when the filler goes — every change once,
//! in order, without a refetch.

use crate::common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrite_harness::tmpfs::Tmpfs;

/// Writes zeros to `path` until the filesystem is full; the write must fail with ENOSPC.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for block in [64 * 1024, 4096, 512] {
        let zeros = vec![0u8; block];
        loop {
            match f.write_all(&zeros) {
                Ok(()) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
    }
    f.sync_all().ok();
}

/// A metric's value in `/metrics` text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

async fn metrics(base: &str) -> String {
    get(&format!("{base}/metrics")).await.text
}

/// The shape directories (and other entries) in the data directory.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_directory_pauses_replication_keeps_serving_and_resumes_without_loss_or_duplicates() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, pad text NOT NULL);
         INSERT INTO items SELECT g, 'seed' FROM generate_series(1, 50) g;
         CREATE TABLE tiny (id int PRIMARY KEY);
         INSERT INTO tiny VALUES (1);
         CREATE TABLE wide (id int PRIMARY KEY, pad text NOT NULL);
         INSERT INTO wide SELECT g, repeat('w', 1000) FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let tmpfs = Tmpfs::mount(4 * 1024 * 1024);
    let data = tmpfs.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = spawn_server_with_env(&db.url, &data, port, &[]);
    wait_healthy(&base).await;

    let mut live = ShapeReader::new(&base, &[("table", "items")]);
    live.catch_up().await;
    assert_eq!(live.rows.len(), 50);
    let (handle, first_offset) = (live.handle.clone().unwrap(), live.offset.clone());
    // A change that went through before the disk filled.
    c.execute("UPDATE items SET pad = 'before' WHERE id = 1", &[]).await.unwrap();
    live.live_until(Duration::from_secs(20), |r| r.rows["\"public\".\"items\"/\"1\""]["pad"] == "before").await;
    // A second shape whose log has room left in its last page for one small row.
    let mut small = ShapeReader::new(&base, &[("table", "tiny")]);
    small.catch_up().await;
    let before_full = entries(&data);

    fill(&tmpfs.path().join("filler"));
    // Each transaction is larger than the free rest of any page a log already has, so none can
    // be written while the filler is there.
    let pad = "x".repeat(2000);
    let mut after_first = 0;
    for t in 0..10 {
        let from = 51 + t * 10;
        if t == 0 {
            // The first transaction also reaches the small shape, whose log can take it while
            // the other's cannot: whichever log the driver writes first, the small one's write
            // must become durable and visible once the rest of the transaction is written.
            c.batch_execute(&format!(
                "BEGIN; INSERT INTO tiny VALUES (2); \
                 INSERT INTO items SELECT g, '{pad}' FROM generate_series({from}, {from} + 9) g; COMMIT"
            ))
            .await
            .unwrap();
        } else {
            c.execute("INSERT INTO items SELECT g, $2 FROM generate_series($1::int, $1::int + 9) g", &[&from, &pad])
                .await
                .unwrap();
        }
        if t == 0 {
            after_first = ferrite_pg::replication::current_wal_lsn(&c).await.unwrap();
        }
    }
    // Appends fail: the error count and the gauge go up, and stay up over several retries.
    let m = base.clone();
    wait_until("the storage_full gauge and three failed retries", Duration::from_secs(30), || {
        let m = m.clone();
        async move {
            let t = metrics(&m).await;
            metric(&t, "ferrite_storage_full") == Some(1.0)
                && metric(&t, "ferrite_storage_write_errors_total").is_some_and(|n| n >= 3.0)
        }
    })
    .await;
    // Nothing past what is durable is confirmed to Postgres.
    let slot = ferrite_pg::replication::slot_status(&c, "ferrite_slot").await.unwrap().expect("the slot");
    assert!(
        slot.confirmed_flush_lsn < after_first,
        "the slot was confirmed to {:X} while the first transaction written on a full disk ended by {after_first:X}",
        slot.confirmed_flush_lsn
    );

    // Serving goes on: a new client reads the shape from the start, another from an offset.
    let mut fresh = ShapeReader::new(&base, &[("table", "items")]);
    fresh.catch_up().await;
    assert_eq!(fresh.handle.as_deref(), Some(handle.as_str()), "the same shape");
    assert_eq!(fresh.rows.len(), 50, "what is durable, nothing of the unwritten transactions");
    assert_eq!(fresh.rows["\"public\".\"items\"/\"1\""]["pad"], "before");
    let r = get(&format!("{base}/v1/shape?table=items&handle={handle}&offset={first_offset}")).await;
    assert_eq!(r.status, 200, "catch-up from an earlier offset: {}", r.text);
    assert!(r.text.contains("\"before\""), "the change logged before the disk filled: {}", r.text);
    // A live request at the head is answered (by its timeout: nothing new is durable).
    let r = live.step(true).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(live.rows.len(), 50);

    // A new shape cannot be stored: 503 + retry-after, and nothing of it stays on disk.
    let new_shape = format!("{base}/v1/shape?table=items&where={}&offset=-1", pct("id > 75"));
    let r = get(&new_shape).await;
    assert_eq!(r.status, 503, "a new shape on a full disk: {}", r.text);
    assert!(r.header("retry-after").is_some(), "with retry-after");
    assert_eq!(r.body["code"], "storage_full", "{}", r.text);
    let d = data.clone();
    let expected_entries = before_full.clone();
    wait_until("no directory of the refused shape left", Duration::from_secs(10), || {
        let (d, e) = (d.clone(), expected_entries.clone());
        async move { entries(&d) == e }
    })
    .await;
    // Two pages free: a new shape's files fit, its 100 KB snapshot does not (or, when a retry
    // of the stream holds those pages at that moment, its files do not): 503 + retry-after all
    // the same, and nothing of it left.
    {
        // (Closed at once: an open file keeps its space after it is deleted.)
        let filler = std::fs::OpenOptions::new().write(true).open(tmpfs.path().join("filler")).unwrap();
        filler.set_len(filler.metadata().unwrap().len() - 8192).unwrap();
    }
    let r = get(&format!("{base}/v1/shape?table=wide&offset=-1")).await;
    assert_eq!(r.status, 503, "a new shape whose snapshot does not fit: {}", r.text);
    assert!(r.header("retry-after").is_some(), "with retry-after");
    assert_eq!(r.body["code"], "storage_full", "{}", r.text);
    let (d, e) = (data.clone(), before_full.clone());
    wait_until("no directory of the refused shape left", Duration::from_secs(10), || {
        let (d, e) = (d.clone(), e.clone());
        async move { entries(&d) == e }
    })
    .await;
    let slot = ferrite_pg::replication::slot_status(&c, "ferrite_slot").await.unwrap().expect("the slot");
    assert!(slot.confirmed_flush_lsn < after_first, "still not confirmed");

    // Space returns: everything resumes within a few seconds.
    std::fs::remove_file(tmpfs.path().join("filler")).unwrap();
    let expected = oracle(&c, "items", &["id", "pad"], "").await;
    assert_eq!(expected.len(), 150);
    live.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
    assert_eq!(live.refetches, 0, "resumed without a refetch");
    // Each new row arrived once, in commit order.
    let inserted: Vec<i64> = live
        .seen_ops
        .iter()
        .filter(|(_, op, _)| op == "insert")
        .map(|(key, _, _)| key.rsplit('/').next().unwrap().trim_matches('"').parse().unwrap())
        .filter(|id| *id > 50)
        .collect();
    assert_eq!(inserted, (51..=150).collect::<Vec<i64>>(), "every row once, in order");
    let tiny = oracle(&c, "tiny", &["id"], "").await;
    assert_eq!(tiny.len(), 2);
    small.live_until(Duration::from_secs(20), |r| r.sorted_rows() == tiny).await;
    assert_eq!(small.refetches, 0);
    let t = metrics(&base).await;
    assert_eq!(metric(&t, "ferrite_storage_full"), Some(0.0), "the gauge is back to 0");
    // The slot moves on, and a new shape can be made again.
    let end = ferrite_pg::replication::current_wal_lsn(&c).await.unwrap();
    let cc = &c;
    wait_until("the slot confirmed past the rows", Duration::from_secs(20), || async move {
        ferrite_pg::replication::slot_status(cc, "ferrite_slot").await.unwrap().unwrap().confirmed_flush_lsn >= end
    })
    .await;
    let mut narrow = ShapeReader::new(&base, &[("table", "items"), ("where", "id > 75")]);
    narrow.catch_up().await;
    assert_eq!(narrow.rows.len(), 75);
    let mut wide = ShapeReader::new(&base, &[("table", "wide")]);
    wide.catch_up().await;
    assert_eq!(wide.rows.len(), 100);
    // A fresh reader of the first shape sees the same rows.
    let mut again = ShapeReader::new(&base, &[("table", "items")]);
    again.catch_up().await;
    assert_eq!(again.sorted_rows(), expected);
    drop(server);
}

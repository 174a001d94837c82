use super::shape_log::*;
use ferrite_protocol::offset::LogOffset;

fn slice(o: ReadOutcome) -> LogSlice {
    match o {
        ReadOutcome::Data(s) => s,
        other => panic!("expected data, got {other:?}"),
    }
}

fn snapshot_log(dir: &std::path::Path, chunk_bytes: u64) -> ShapeLog {
    let log = ShapeLog::create(dir, chunk_bytes).unwrap();
    log.append_snapshot(&[b"{\"s\":1}".as_slice()]).unwrap();
    log.close_snapshot_chunk().unwrap();
    log.append_snapshot(&[b"{\"s\":2}".as_slice()]).unwrap();
    log.close_snapshot_chunk().unwrap();
    log.complete_snapshot();
    log.sync(true).unwrap();
    log
}

#[test]
fn snapshot_chunks_then_head_then_pinned_immutability() {
    let dir = tempfile::tempdir().unwrap();
    let log = snapshot_log(dir.path(), 1 << 20);
    let first = slice(log.read(None, true, 0).unwrap());
    assert_eq!(first.body, b"{\"s\":1}");
    assert_eq!(first.end, LogOffset::snapshot_chunk(0));
    assert!(!first.up_to_date);
    let second = slice(log.read(Some(first.end), true, 0).unwrap());
    assert_eq!(second.body, b"{\"s\":2}");
    let head = slice(log.read(Some(second.end), true, 5).unwrap());
    assert_eq!(head.count, 0);
    assert_eq!(head.end, LogOffset::SNAPSHOT_END);
    assert!(head.up_to_date);
    assert_eq!(log.read(Some(head.end), true, 5).unwrap(), ReadOutcome::AtHead);

    log.append(&[(LogOffset::new(100, 0), b"{\"c\":1}".as_slice()), (LogOffset::new(100, 2), b"{\"c\":2}".as_slice())])
        .unwrap();
    // Not durable yet: invisible to live readers.
    assert_eq!(log.read_live(LogOffset::SNAPSHOT_END).unwrap(), ReadOutcome::AtHead);
    log.sync(true).unwrap();
    let pinned = slice(log.read(Some(LogOffset::SNAPSHOT_END), true, 100).unwrap());
    assert_eq!(pinned.body, b"{\"c\":1},{\"c\":2}");
    assert_eq!(pinned.end, LogOffset::new(100, 2));
    log.append(&[(LogOffset::new(200, 0), b"{\"c\":3}".as_slice())]).unwrap();
    log.sync(true).unwrap();
    // Same request, same entries and end, even though more data arrived — but no longer
    // up-to-date: the boundary is not the head any more.
    assert!(pinned.up_to_date);
    let again = slice(log.read(Some(LogOffset::SNAPSHOT_END), true, 200).unwrap());
    assert_eq!(again, LogSlice { up_to_date: false, ..pinned.clone() });
    let next = slice(log.read(Some(pinned.end), true, 200).unwrap());
    assert_eq!(next.body, b"{\"c\":3}");
    // An offset inside a transaction means "after that transaction" (SSE resumes at `<lsn>_0`).
    let mid = slice(log.read_live(LogOffset::new(100, 0)).unwrap());
    assert_eq!(mid.body, b"{\"c\":3}");
}

#[test]
fn recovery_drops_partial_units_and_keeps_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let pinned;
    {
        let log = snapshot_log(dir.path(), 1 << 20);
        log.append(&[(LogOffset::new(10, 0), b"{\"a\":1}".as_slice())]).unwrap();
        log.sync(true).unwrap();
        pinned = slice(log.read(Some(LogOffset::SNAPSHOT_END), true, 10).unwrap());
        log.append(&[(LogOffset::new(20, 0), b"{\"b\":1}".as_slice())]).unwrap();
        log.sync(true).unwrap();
    }
    // Simulate a torn write: half a record at the end.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("log")).unwrap();
        f.write_all(&[42, 0, 0, 0, 1, 2]).unwrap();
    }
    let log = ShapeLog::recover(dir.path(), 1 << 20, true).unwrap();
    assert_eq!(log.last_written_tx(), 20);
    assert_eq!(
        slice(log.read(Some(LogOffset::SNAPSHOT_END), true, 0).unwrap()),
        LogSlice { up_to_date: false, ..pinned.clone() }
    );
    let rest = slice(log.read(Some(pinned.end), true, 0).unwrap());
    assert_eq!(rest.body, b"{\"b\":1}");
    log.append(&[(LogOffset::new(30, 0), b"{\"c\":1}".as_slice())]).unwrap();
    log.sync(true).unwrap();
    let live = slice(log.read_live(LogOffset::new(20, 0)).unwrap());
    assert_eq!(live.body, b"{\"c\":1}");
}

#[test]
fn unfinished_snapshot_is_not_readable_past_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let log = ShapeLog::create(dir.path(), 1 << 20).unwrap();
    assert_eq!(log.read(None, true, 0).unwrap(), ReadOutcome::NotReady);
    log.append_snapshot(&[b"{}".as_slice()]).unwrap();
    log.close_snapshot_chunk().unwrap();
    assert_eq!(log.read(None, true, 0).unwrap(), ReadOutcome::NotReady, "not durable yet");
    log.sync(true).unwrap();
    assert_eq!(slice(log.read(None, true, 0).unwrap()).end, LogOffset::snapshot_chunk(0));
    assert_eq!(log.read(Some(LogOffset::snapshot_chunk(0)), true, 0).unwrap(), ReadOutcome::NotReady);
}

/// A JSON message of exactly `len` bytes.
fn message(tag: u64, len: usize) -> Vec<u8> {
    let mut m = format!("{{\"k\":\"{tag}\",\"v\":\"").into_bytes();
    let pad = len - m.len() - 2;
    m.extend(std::iter::repeat_n(b'x', pad));
    m.extend_from_slice(b"\"}");
    assert_eq!(m.len(), len);
    m
}

fn append(log: &ShapeLog, tx: &[(LogOffset, Vec<u8>)]) {
    log.append(&tx.iter().map(|(o, m)| (*o, m.as_slice())).collect::<Vec<_>>()).unwrap();
}

/// Every non-live response from `from` on, as a client reads them, with the offset each was
/// requested at.
fn read_all(log: &ShapeLog, from: Option<LogOffset>) -> Vec<(Option<LogOffset>, LogSlice)> {
    let mut at = from;
    let mut out = vec![];
    loop {
        match log.read(at, true, 0).unwrap() {
            ReadOutcome::Data(s) => {
                let end = s.end;
                let done = s.up_to_date;
                out.push((at, s));
                at = Some(end);
                if done {
                    return out;
                }
            }
            ReadOutcome::AtHead => return out,
            ReadOutcome::NotReady => panic!("not ready"),
        }
    }
}

/// The response's size on the wire: `[` + messages + `]`.
fn wire_len(s: &LogSlice) -> u64 {
    s.body.len() as u64 + 2
}

fn within(size: u64, chunk: u64) -> bool {
    size * 10 >= chunk * 8 && size * 10 <= chunk * 12
}

fn joined(messages: &[&[u8]]) -> Vec<u8> {
    messages.join(b",".as_slice())
}

#[test]
fn a_large_transaction_is_split_into_chunk_sized_responses() {
    const CHUNK: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let log = snapshot_log(dir.path(), CHUNK);
    // A small transaction, one of about five chunks (ops 0, 2, 4, …), a small one again.
    let small = |tx: u64| vec![(LogOffset::new(tx, 0), message(tx, 60))];
    let big: Vec<(LogOffset, Vec<u8>)> =
        (0..50u64).map(|i| (LogOffset::new(20, 2 * i), message(1000 + i, 90 + (i as usize * 7) % 40))).collect();
    let txs = [small(10), big, small(30)];
    for t in &txs {
        append(&log, t);
    }
    log.sync(true).unwrap();
    let all: Vec<&[u8]> = txs.iter().flatten().map(|(_, m)| m.as_slice()).collect();

    let responses = read_all(&log, Some(LogOffset::SNAPSHOT_END));
    assert!(responses.len() >= 5, "{} responses", responses.len());
    let mut concatenated: Vec<&[u8]> = vec![];
    let mut inside = 0;
    for (i, (_, s)) in responses.iter().enumerate() {
        let last = i + 1 == responses.len();
        if !last {
            assert!(within(wire_len(s), CHUNK), "response {i} has {} bytes", wire_len(s));
        }
        assert_eq!(s.up_to_date, last, "up-to-date only at the head, at a transaction's end");
        if s.end.tx == 20 && s.end != LogOffset::new(20, 98) {
            inside += 1;
            assert_ne!(s.end.op, 0, "no boundary inside a transaction is labelled <lsn>_0");
        }
        let mut start = 0;
        for &e in &s.item_ends {
            concatenated.push(&s.body[start..e]);
            start = e + 1;
        }
    }
    assert!(inside >= 3, "the big transaction spans several responses");
    assert_eq!(concatenated, all, "the pieces put together are the whole, in order");
    assert_eq!(responses.last().unwrap().1.end, LogOffset::new(30, 0));

    // Immutable: the same requests get the same answers, and live reads see the same pieces.
    for (at, s) in &responses {
        assert_eq!(&slice(log.read(*at, true, 0).unwrap()), s);
        assert_eq!(slice(log.read_live(at.unwrap()).unwrap()).body, s.body);
    }
    // An SSE client resuming at `<lsn>_0` after an up-to-date has the whole transaction.
    assert_eq!(slice(log.read_live(LogOffset::new(20, 0)).unwrap()).body, message(30, 60));

    // More data: every earlier response stays as it was, the former head without up-to-date.
    append(&log, &small(40));
    log.sync(true).unwrap();
    for (i, (at, s)) in responses.iter().enumerate() {
        let again = slice(log.read(*at, true, 0).unwrap());
        assert_eq!(again, LogSlice { up_to_date: s.up_to_date && i + 1 < responses.len(), ..s.clone() });
    }
}

#[test]
fn no_boundary_inside_a_transaction_right_after_op_0() {
    const CHUNK: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let log = snapshot_log(dir.path(), CHUNK);
    // Op 0 alone fills a chunk: the boundary goes after op 2 instead.
    append(
        &log,
        &[
            (LogOffset::new(50, 0), message(1, 1100)),
            (LogOffset::new(50, 2), message(2, 100)),
            (LogOffset::new(50, 4), message(3, 100)),
        ],
    );
    log.sync(true).unwrap();
    let first = slice(log.read(Some(LogOffset::SNAPSHOT_END), true, 0).unwrap());
    assert_eq!(first.end, LogOffset::new(50, 2));
    assert_eq!(first.body, joined(&[&message(1, 1100), &message(2, 100)]));
    assert!(!first.up_to_date);
    let rest = slice(log.read(Some(first.end), true, 0).unwrap());
    assert_eq!(rest.body, message(3, 100));
    assert!(rest.up_to_date);
    // `<lsn>_0` still means after the whole transaction.
    assert_eq!(log.read(Some(LogOffset::new(50, 0)), true, 0).unwrap(), ReadOutcome::AtHead);
}

#[test]
fn the_log_closes_snapshot_chunks_by_size() {
    const CHUNK: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let log = ShapeLog::create(dir.path(), CHUNK).unwrap();
    let rows: Vec<Vec<u8>> = (0..45u64).map(|i| message(i, 80 + (i as usize * 13) % 50)).collect();
    let mut closed = 0;
    for batch in rows.chunks(7) {
        let batch: Vec<&[u8]> = batch.iter().map(|r| r.as_slice()).collect();
        closed += log.append_snapshot(&batch).unwrap() as usize;
    }
    let end = message(999, 70);
    log.append_snapshot(&[end.as_slice()]).unwrap();
    log.close_snapshot_chunk().unwrap();
    log.complete_snapshot();
    log.sync(true).unwrap();
    assert!(closed >= 3);

    let responses = read_all(&log, None);
    let (head, chunks) = responses.split_last().unwrap();
    assert!(chunks.len() >= 4);
    assert_eq!((head.1.count, head.1.end, head.1.up_to_date), (0, LogOffset::SNAPSHOT_END, true));
    let mut concatenated: Vec<&[u8]> = vec![];
    for (k, (_, s)) in chunks.iter().enumerate() {
        assert_eq!(s.end, LogOffset::snapshot_chunk(k as u64), "snapshot chunks are labelled 0_k");
        if k + 1 < chunks.len() {
            assert!(within(wire_len(s), CHUNK), "chunk {k} has {} bytes", wire_len(s));
        }
        let mut start = 0;
        for &e in &s.item_ends {
            concatenated.push(&s.body[start..e]);
            start = e + 1;
        }
    }
    let mut expected: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
    expected.push(&end);
    assert_eq!(concatenated, expected);
}

#[test]
fn recovery_drops_a_torn_split_transaction_with_its_boundaries() {
    const CHUNK: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let big = |tx: u64| -> Vec<(LogOffset, Vec<u8>)> {
        (0..40u64).map(|i| (LogOffset::new(tx, 2 * i), message(tx * 100 + i, 100))).collect()
    };
    let before;
    let kept_len;
    {
        let log = snapshot_log(dir.path(), CHUNK);
        append(&log, &big(10));
        log.sync(true).unwrap();
        before = read_all(&log, Some(LogOffset::SNAPSHOT_END));
        kept_len = log.size_bytes();
        // The next big transaction is written (its boundaries too) but the log file loses its
        // end: a crash before the sync.
        let chunks_len = || std::fs::metadata(dir.path().join("chunks")).unwrap().len();
        let boundaries_before = chunks_len();
        append(&log, &big(20));
        assert!(chunks_len() > boundaries_before, "the torn transaction's boundaries reached the disk");
        let written = log.size_bytes();
        drop(log);
        let f = std::fs::OpenOptions::new().write(true).open(dir.path().join("log")).unwrap();
        f.set_len(kept_len + (written - kept_len) * 3 / 4).unwrap();
    }
    let log = ShapeLog::recover(dir.path(), CHUNK, true).unwrap();
    assert_eq!(log.last_written_tx(), 10);
    assert_eq!(log.size_bytes(), kept_len);
    // The first transaction's responses are as they were (the head one without up-to-date
    // once more is logged).
    append(&log, &big(30));
    log.sync(true).unwrap();
    for (at, s) in &before {
        assert_eq!(slice(log.read(*at, true, 0).unwrap()), LogSlice { up_to_date: false, ..s.clone() });
    }
    // And the rest is the new transaction, whole, in pieces within the chunk size.
    let rest = read_all(&log, Some(before.last().unwrap().1.end));
    let mut count = 0;
    for (i, (_, s)) in rest.iter().enumerate() {
        assert!(s.body.windows(6).all(|w| w != b"\"k\":\"2"), "nothing of the torn transaction");
        if i + 1 < rest.len() {
            assert!(within(wire_len(s), CHUNK));
        }
        count += s.count;
    }
    assert_eq!(count, 40);
}

/// Overwrites the last `n` bytes of `path` with garbage.
fn damage_tail(path: &std::path::Path, n: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(&vec![0xAB; n as usize], len - n).unwrap();
}

#[test]
fn a_live_reader_at_the_head_is_served_the_last_sync_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let log = snapshot_log(dir.path(), 1 << 20);
    log.append(&[(LogOffset::new(100, 0), b"{\"a\":1}".as_slice()), (LogOffset::new(100, 1), b"{\"a\":2}".as_slice())])
        .unwrap();
    log.sync(true).unwrap();
    log.append(&[(LogOffset::new(200, 0), b"{\"b\":1}".as_slice()), (LogOffset::new(200, 1), b"{\"b\":2}".as_slice())])
        .unwrap();
    log.sync(true).unwrap();
    // What the file holds, read the way catch-up reads it: the same as the tail.
    let from_file = slice(log.read(Some(LogOffset::new(100, 1)), false, 0).unwrap());
    assert_eq!(from_file.body, b"{\"b\":1},{\"b\":2}");
    assert_eq!(slice(log.read_live(LogOffset::new(100, 1)).unwrap()), from_file);
    // The tail comes from memory: damaging the file's copy does not reach it, while a reader
    // further behind (who reads the file) sees the damage.
    damage_tail(&dir.path().join("log"), 4);
    assert_eq!(slice(log.read_live(LogOffset::new(100, 1)).unwrap()), from_file);
    assert!(log.read_live(LogOffset::SNAPSHOT_END).is_err(), "a reader behind reads the (damaged) file");
}

#[test]
fn no_tail_after_a_snapshot_or_a_large_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = snapshot_log(dir.path(), 1 << 20);
    // The snapshot's own sync leaves nothing for live readers to take from memory.
    damage_tail(&dir.path().join("log"), 2);
    assert!(log.read_live(LogOffset::snapshot_chunk(0)).is_err(), "read from the file");
    let dir = tempfile::tempdir().unwrap();
    let log = snapshot_log(dir.path(), 1 << 20);
    let big = format!("{{\"big\":\"{}\"}}", "x".repeat(8 * 1024));
    log.append(&[(LogOffset::new(100, 0), big.as_bytes())]).unwrap();
    log.sync(true).unwrap();
    assert_eq!(slice(log.read_live(LogOffset::SNAPSHOT_END).unwrap()).body, big.as_bytes());
    damage_tail(&dir.path().join("log"), 2);
    assert!(log.read_live(LogOffset::SNAPSHOT_END).is_err(), "too large to keep: read from the file");
}

#[test]
fn the_journal_gives_back_log_writes_the_files_lost() {
    use super::journal::{replay, Journal, JOURNAL_FILE};
    use std::io::Write;
    let data = tempfile::tempdir().unwrap();
    let shape = data.path().join("shape-1");
    std::fs::create_dir(&shape).unwrap();
    // Small chunks: each record closes one, so the journal carries boundaries too.
    let log = snapshot_log(&shape, 8);
    let log_len = std::fs::metadata(shape.join("log")).unwrap().len();
    let chunks_len = std::fs::metadata(shape.join("chunks")).unwrap().len();
    log.append(&[(LogOffset::new(100, 1), b"{\"a\":1}".as_slice()), (LogOffset::new(100, 2), b"{\"a\":2}".as_slice())])
        .unwrap();
    let (entry, end) = log.journal_entry().expect("small writes are journaled");
    assert!(!entry.chunks_bytes.is_empty(), "the unit closed chunks");
    let mut journal = Journal::open(data.path()).unwrap();
    let gone = super::JournalEntry { log_pos: 0, log_bytes: b"x".to_vec(), chunks_pos: 0, chunks_bytes: vec![] };
    journal.write(&[("shape-1", &entry), ("dropped-shape", &gone)]).unwrap();
    log.sync_journaled(end).unwrap();
    let served = slice(log.read_live(LogOffset::SNAPSHOT_END).unwrap());
    assert_eq!(served.body, b"{\"a\":1}");
    assert!(log.journal_entry().is_none(), "nothing unsynced left");
    drop(log);
    // A power cut took the logs' writes (only the journal was flushed) and tore a record the
    // journal was writing.
    for (name, len) in [("log", log_len), ("chunks", chunks_len)] {
        std::fs::OpenOptions::new().write(true).open(shape.join(name)).unwrap().set_len(len).unwrap();
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.path().join(JOURNAL_FILE))
        .unwrap()
        .write_all(&[9, 0, 0])
        .unwrap();

    assert_eq!(replay(data.path()).unwrap(), 1, "the dropped shape's record is skipped, the torn one ignored");
    let log = ShapeLog::recover(&shape, 8, true).unwrap();
    assert_eq!(log.last_written_tx(), 100);
    assert_eq!(slice(log.read(Some(LogOffset::SNAPSHOT_END), true, 0).unwrap()), LogSlice { lsn: 0, ..served });
    let rest = slice(log.read(Some(LogOffset::new(100, 1)), true, 0).unwrap());
    assert_eq!(rest.body, b"{\"a\":2}");
    // Replaying twice writes the same bytes again; opening empties the journal.
    assert_eq!(replay(data.path()).unwrap(), 1);
    let _journal = Journal::open(data.path()).unwrap();
    assert_eq!(replay(data.path()).unwrap(), 0);
}

#[test]
fn writes_after_a_journal_entry_are_fsynced_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = snapshot_log(dir.path(), 1 << 20);
    log.append(&[(LogOffset::new(100, 0), b"{\"a\":1}".as_slice())]).unwrap();
    let (_entry, end) = log.journal_entry().unwrap();
    // Another writer appends before the entry is published: publishing then fsyncs the log
    // rather than marking bytes durable that the journal does not hold.
    log.append(&[(LogOffset::new(200, 0), b"{\"b\":1}".as_slice())]).unwrap();
    log.sync_journaled(end).unwrap();
    assert_eq!(log.durable_offset(), LogOffset::new(200, 0));
    assert!(log.journal_entry().is_none());
}

/// A replication sink that keeps what it is given (or refuses it, while `fail` is set).
#[derive(Default)]
struct RecordingSink {
    ops: parking_lot::Mutex<Vec<super::replica::FileOp>>,
    fail: std::sync::atomic::AtomicBool,
}

impl super::replica::WriteSink for RecordingSink {
    fn publish(&self, ops: Vec<super::replica::FileOp>) -> std::io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("the stream is away"));
        }
        self.ops.lock().extend(ops);
        Ok(())
    }
    fn publish_later(&self, ops: Vec<super::replica::FileOp>) {
        self.ops.lock().extend(ops);
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_replicated_log_sends_every_byte_before_readers_see_it_and_a_copy_applied_from_it_is_identical() {
    use std::sync::atomic::Ordering;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("leader").join("h-1");
    std::fs::create_dir_all(&dir).unwrap();
    let log = snapshot_log(&dir, 20);
    let sink = std::sync::Arc::new(RecordingSink::default());
    // From here on (a node taking over): the files as they are, then every later write.
    sink.ops.lock().extend(log.replica_baseline());
    log.replicate_to(sink.clone());
    // (The baseline says how long the files are; the copy starts from the same bytes.)
    let copy_root = root.path().join("follower");
    std::fs::create_dir_all(copy_root.join("h-1")).unwrap();
    for f in ["log", "chunks"] {
        std::fs::copy(dir.join(f), copy_root.join("h-1").join(f)).unwrap();
    }

    // The stream away: the sync fails and readers see nothing of the write.
    sink.fail.store(true, Ordering::Relaxed);
    log.append(&[(LogOffset::new(100, 0), b"{\"c\":1}".as_slice())]).unwrap();
    assert!(log.sync(true).is_err());
    assert_eq!(log.read_live(LogOffset::SNAPSHOT_END).unwrap(), ReadOutcome::AtHead);
    sink.fail.store(false, Ordering::Relaxed);
    log.sync(true).unwrap();
    assert_eq!(slice(log.read_live(LogOffset::SNAPSHOT_END).unwrap()).body, b"{\"c\":1}");

    // The driver's way: several writes taken at once, then marked, so the sync sends nothing more.
    log.append(&[(LogOffset::new(200, 0), b"{\"c\":2}".as_slice()), (LogOffset::new(200, 1), b"{\"c\":3}".as_slice())])
        .unwrap();
    let (ops, upto) = log.unpublished().unwrap();
    assert!(!ops.is_empty());
    sink.ops.lock().extend(ops);
    log.mark_published(upto);
    let before = sink.ops.lock().len();
    log.sync(true).unwrap();
    assert_eq!(sink.ops.lock().len(), before, "nothing sent twice");
    // A boundary pinned by a read is sent too (every node answers the request the same).
    let pinned = slice(log.read(Some(LogOffset::new(100, 0)), true, 200).unwrap());
    assert_eq!(pinned.end, LogOffset::new(200, 1));

    let applier = super::replica::Applier::new(&copy_root);
    for op in sink.ops.lock().iter() {
        applier.apply(op).unwrap();
    }
    for f in ["log", "chunks"] {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), std::fs::read(copy_root.join("h-1").join(f)).unwrap(), "{f}");
    }
    // And the copy reopens as the same log.
    let reopened = ShapeLog::recover(&copy_root.join("h-1"), 20, true).unwrap();
    assert_eq!(
        slice(reopened.read(Some(LogOffset::new(100, 0)), true, 200).unwrap()),
        slice(log.read(Some(LogOffset::new(100, 0)), true, 200).unwrap())
    );
}

use ferrite_harness::tmpfs::Tmpfs;

/// Fills the filesystem of `path` (a file written until ENOSPC), then gives `free` bytes back.
fn fill_leaving(path: &std::path::Path, free: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    for block in [64 * 1024, 4096] {
        let zeros = vec![0u8; block];
        while f.write_all(&zeros).is_ok() {}
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(free)).unwrap();
}

fn files(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    (std::fs::read(dir.join("log")).unwrap(), std::fs::read(dir.join("chunks")).unwrap())
}

#[test]
fn an_append_that_fails_half_way_on_a_full_disk_leaves_the_log_as_it_was() {
    let fs = Tmpfs::mount(1024 * 1024);
    let dir = fs.path().join("shape");
    std::fs::create_dir(&dir).unwrap();
    let log = snapshot_log(&dir, 4096);
    append(&log, &[(LogOffset::new(100, 0), message(1, 100))]);
    log.sync(true).unwrap();
    let before = files(&dir);
    let end = log.end_offset();
    // Two pages free: the first part of a 64 KiB transaction is written, then ENOSPC.
    fill_leaving(&fs.path().join("filler"), 8192);
    let big: Vec<(LogOffset, Vec<u8>)> = (0..64).map(|i| (LogOffset::new(200, i * 2), message(i, 1000))).collect();
    let entries: Vec<(LogOffset, &[u8])> = big.iter().map(|(o, m)| (*o, m.as_slice())).collect();
    let err = log.append(&entries).unwrap_err();
    assert!(super::is_out_of_space(&err), "{err}");
    assert_eq!(files(&dir), before, "both files byte for byte as before the transaction");
    assert_eq!(log.end_offset(), end, "nothing advanced in memory");
    assert_eq!(log.last_written_tx(), 100, "the transaction is written again on replay");
    // A small transaction that fits is written right after the last whole one.
    append(&log, &[(LogOffset::new(150, 0), message(2, 50))]);
    log.sync(true).unwrap();
    // Space returns: the failed transaction goes in whole, and the log reopens as written.
    std::fs::remove_file(fs.path().join("filler")).unwrap();
    log.append(&entries).unwrap();
    log.sync(true).unwrap();
    let expected = read_all(&log, None);
    drop(log);
    let reopened = ShapeLog::recover(&dir, 4096, true).unwrap();
    assert_eq!(reopened.end_offset(), LogOffset::new(200, 126));
    assert_eq!(read_all(&reopened, None), expected);
    let bodies: Vec<u8> = expected.iter().flat_map(|(_, s)| s.body.clone()).collect();
    assert_eq!(
        bodies.windows(message(1, 100).len()).filter(|w| *w == message(1, 100).as_slice()).count(),
        1,
        "the first transaction once"
    );
}

#[test]
fn a_catch_up_read_at_the_head_is_served_without_a_pin_when_the_disk_is_full() {
    let fs = Tmpfs::mount(1024 * 1024);
    let dir = fs.path().join("shape");
    std::fs::create_dir(&dir).unwrap();
    let log = snapshot_log(&dir, 1 << 20);
    // Pinned boundaries until the next one would need a new page of `chunks` (40-byte records:
    // 102 fill 4,080 bytes of the first page).
    let mut at = LogOffset::SNAPSHOT_END;
    let mut tx = 100;
    while std::fs::metadata(dir.join("chunks")).unwrap().len() < 102 * 40 {
        append(&log, &[(LogOffset::new(tx, 0), message(tx, 60))]);
        log.sync(true).unwrap();
        at = slice(log.read(Some(at), true, tx).unwrap()).end;
        tx += 1;
    }
    assert_eq!(std::fs::metadata(dir.join("chunks")).unwrap().len(), 102 * 40);
    append(&log, &[(LogOffset::new(tx, 0), message(tx, 60))]);
    log.sync(true).unwrap();
    fill_leaving(&fs.path().join("filler"), 0);
    let chunks = std::fs::read(dir.join("chunks")).unwrap();
    // The durable transaction is served all the same, up to date.
    let head = slice(log.read(Some(at), true, tx).unwrap());
    assert_eq!(head.body, message(tx, 60));
    assert_eq!(head.end, LogOffset::new(tx, 0));
    assert!(head.up_to_date);
    assert_eq!(std::fs::read(dir.join("chunks")).unwrap(), chunks, "nothing half written");
    // With space again, the same read pins its end as usual.
    std::fs::remove_file(fs.path().join("filler")).unwrap();
    assert_eq!(slice(log.read(Some(at), true, tx).unwrap()), head);
    assert_eq!(std::fs::metadata(dir.join("chunks")).unwrap().len(), 103 * 40);
}

/// Open descriptors of this process on files under `dir` (`/proc/self/fd`; other tests'
/// files lie in their own temporary directories, so running alongside them does not count).
fn open_files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .collect()
}

/// One descriptor a shape (its `log`), however the log is used: creating it, writing snapshot
/// chunks and transactions that close chunks, syncing (fsync or journal), pinning a boundary,
/// recovering it, replicating it. The `chunks` file is opened only for a moment. A server
/// keeps twice as many shapes within the open-file limit for it (see `shapes_within`).
#[test]
fn a_log_holds_one_open_file_however_it_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let only_log = |what: &str| {
        let open = open_files_under(dir.path());
        assert_eq!(open, vec![dir.path().canonicalize().unwrap().join("log")], "after {what}");
    };
    let log = ShapeLog::create(dir.path(), 20).unwrap();
    only_log("create");
    log.append_snapshot(&[message(1, 30).as_slice(), message(2, 30).as_slice()]).unwrap();
    log.close_snapshot_chunk().unwrap();
    log.complete_snapshot();
    log.sync(true).unwrap();
    only_log("a snapshot of chunks, fsynced");
    append(&log, &[(LogOffset::new(100, 0), message(3, 30)), (LogOffset::new(100, 1), message(4, 30))]);
    only_log("a transaction closing chunks");
    log.sync(true).unwrap();
    only_log("its fsync");
    append(&log, &[(LogOffset::new(200, 1), message(5, 30))]);
    let (entry, end) = log.journal_entry().unwrap();
    assert!(!entry.chunks_bytes.is_empty(), "the entry carries a boundary");
    log.sync_journaled(end).unwrap();
    only_log("a sync through the journal");
    append(&log, &[(LogOffset::new(300, 1), b"{}".to_vec())]);
    log.sync(true).unwrap();
    let pinned = slice(log.read(Some(LogOffset::new(200, 1)), true, 300).unwrap());
    assert_eq!(pinned.end, LogOffset::new(300, 1));
    only_log("a catch-up read pinning a boundary");
    // What a sink would be sent (all of it: this log never had one): the boundary records
    // come from memory, the same bytes as the file's.
    let (ops, _) = log.unpublished().unwrap();
    let sent: Vec<u8> = ops
        .iter()
        .filter_map(|op| match op {
            super::replica::FileOp::Write { file: super::replica::ShapeFile::Chunks, pos: 0, bytes, .. } => {
                Some(bytes.clone())
            }
            _ => None,
        })
        .next()
        .unwrap();
    assert_eq!(sent, std::fs::read(dir.path().join("chunks")).unwrap());
    only_log("taking what a sink would be sent");
    drop(log);
    assert!(open_files_under(dir.path()).is_empty(), "a dropped log holds nothing");

    // A torn write at the end: half a record.
    let log_len = std::fs::metadata(dir.path().join("log")).unwrap().len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("log")).unwrap();
        f.write_all(&[42, 0, 0, 0, 1, 2]).unwrap();
    }
    let log = ShapeLog::recover(dir.path(), 20, true).unwrap();
    only_log("recovery of a torn tail");
    assert_eq!(log.durable_offset(), LogOffset::new(300, 1));
    assert_eq!(std::fs::metadata(dir.path().join("log")).unwrap().len(), log_len, "the torn rest is cut");
    let sink = std::sync::Arc::new(RecordingSink::default());
    log.replicate_to(sink.clone());
    append(&log, &[(LogOffset::new(400, 1), message(6, 30))]);
    log.sync(true).unwrap();
    only_log("a replicated sync");
    assert!(
        sink.ops
            .lock()
            .iter()
            .any(|op| matches!(op, super::replica::FileOp::Write { file: super::replica::ShapeFile::Chunks, .. })),
        "the boundary went to the other nodes"
    );
    log.cut_to_end().unwrap();
    only_log("a cut to the end");
}

/// A shape removed while a writer still holds its log (its directory is deleted on another
/// thread): writes and syncs go on without failing, as they did into the deleted files when
/// both were kept open, rather than failing the replication driver's batch again and again.
#[test]
fn a_log_whose_directory_was_removed_still_takes_writes() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("h-1");
    std::fs::create_dir_all(&dir).unwrap();
    let log = snapshot_log(&dir, 20);
    std::fs::remove_dir_all(&dir).unwrap();
    append(&log, &[(LogOffset::new(100, 0), message(1, 30)), (LogOffset::new(100, 1), message(2, 30))]);
    log.sync(true).unwrap();
    assert_eq!(log.durable_offset(), LogOffset::new(100, 1));
    assert!(matches!(log.read(Some(LogOffset::SNAPSHOT_END), true, 100).unwrap(), ReadOutcome::Data(_)));
    assert!(!log.follow_replica().unwrap());
}

/// Every live reader a sync wakes at the same offset is handed the same tail (not a copy), and
/// what one of them keeps on it ([`Tail::shared`]) is there for the others: the HTTP layer
/// builds a change's response once for all its readers that way.
#[test]
fn live_readers_at_one_offset_share_one_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = snapshot_log(dir.path(), 1 << 20);
    log.append(&[(LogOffset::new(100, 0), b"{\"a\":1}".as_slice())]).unwrap();
    log.sync(true).unwrap();
    let tail = |log: &ShapeLog| match log.live_span(LogOffset::SNAPSHOT_END) {
        LiveSpan::Tail(t) => t,
        other => panic!("expected the tail, got {other:?}"),
    };
    let (a, b) = (tail(&log), tail(&log));
    assert!(std::sync::Arc::ptr_eq(&a, &b), "one tail for every reader");
    let kept = a.shared::<std::sync::atomic::AtomicUsize>().unwrap();
    kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(b.shared::<std::sync::atomic::AtomicUsize>().unwrap().load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(b.shared::<String>().is_none(), "one type per tail");
    // The same messages a read of the file gives.
    assert_eq!(a.slice(), &slice(log.read(Some(LogOffset::SNAPSHOT_END), false, 0).unwrap()));
    // The next sync leaves a new tail, for the readers after it; the old offset reads the file.
    log.append(&[(LogOffset::new(200, 0), b"{\"b\":1}".as_slice())]).unwrap();
    log.sync(true).unwrap();
    assert!(matches!(log.live_span(LogOffset::SNAPSHOT_END), LiveSpan::Bytes(_)));
    match log.live_span(LogOffset::new(100, 0)) {
        LiveSpan::Tail(t) => assert_eq!(t.slice().body, b"{\"b\":1}"),
        other => panic!("expected the new tail, got {other:?}"),
    }
}

/// The on-demand digest's replay reads a log's messages in order up to an offset, in pieces,
/// whatever their size: messages larger than a piece and messages split across pieces come
/// back whole.
#[test]
fn a_scan_returns_the_messages_up_to_an_offset_across_read_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let log = snapshot_log(dir.path(), 1 << 30);
    // 40 transactions of three messages, 30 bytes to 300 KiB each: ~18 MiB, read 1 MiB at a time.
    let mut all: Vec<(LogOffset, Vec<u8>)> = vec![];
    for tx in 1..=40u64 {
        let unit: Vec<(LogOffset, Vec<u8>)> = (0..3)
            .map(|op| {
                (
                    LogOffset::new(tx * 10, op * 2),
                    message(tx * 3 + op, 30 + ((tx * 7919 + op * 104_729) % 300_000) as usize),
                )
            })
            .collect();
        append(&log, &unit);
        all.extend(unit);
    }
    log.sync(true).unwrap();
    let scanned = |upto: LogOffset| {
        let mut seen: Vec<(LogOffset, Vec<u8>)> = vec![];
        log.scan(upto, |o, json| {
            seen.push((o, json.to_vec()));
            Ok(true)
        })
        .map(|()| seen)
    };
    let snapshot = scanned(LogOffset::SNAPSHOT_END).unwrap();
    assert_eq!(snapshot.iter().map(|(_, j)| j.as_slice()).collect::<Vec<_>>(), [b"{\"s\":1}".as_slice(), b"{\"s\":2}"]);
    let everything = scanned(LogOffset::new(400, 4)).unwrap();
    assert_eq!(everything[2..], all[..]);
    // Up to the middle of transaction 20 (a boundary there), and `<lsn>_0` meaning the whole of it.
    assert_eq!(scanned(LogOffset::new(200, 2)).unwrap()[2..], all[..59]);
    assert_eq!(scanned(LogOffset::new(200, 0)).unwrap()[2..], all[..60]);
    // Stopped by the caller.
    let mut n = 0;
    log.scan(LogOffset::new(400, 4), |_, _| {
        n += 1;
        Ok(n < 5)
    })
    .unwrap();
    assert_eq!(n, 5);
    // Past the durable end (a reader at the head holds such a position): everything durable,
    // not what is written but not synced yet.
    log.append(&[(LogOffset::new(500, 0), b"{\"c\":9}".as_slice())]).unwrap();
    assert_eq!(scanned(LogOffset::new(600, 0)).unwrap(), everything);
    // A damaged record in the middle (the file rewritten under the open log) is an error, not
    // a short replay.
    let path = dir.path().join("log");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = log.scan(LogOffset::new(400, 4), |_, _| Ok(true)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

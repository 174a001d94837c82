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
    log.append(&[(LogOffset::snapshot_chunk(0), b"{\"s\":1}".as_slice())], false).unwrap();
    log.close_chunk(LogOffset::snapshot_chunk(0)).unwrap();
    log.append(&[(LogOffset::snapshot_chunk(1), b"{\"s\":2}".as_slice())], false).unwrap();
    log.close_chunk(LogOffset::snapshot_chunk(1)).unwrap();
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

    log.append(
        &[(LogOffset::new(100, 0), b"{\"c\":1}".as_slice()), (LogOffset::new(100, 2), b"{\"c\":2}".as_slice())],
        true,
    )
    .unwrap();
    // Not durable yet: invisible to live readers.
    assert_eq!(log.read_live(LogOffset::SNAPSHOT_END).unwrap(), ReadOutcome::AtHead);
    log.sync(true).unwrap();
    let pinned = slice(log.read(Some(LogOffset::SNAPSHOT_END), true, 100).unwrap());
    assert_eq!(pinned.body, b"{\"c\":1},{\"c\":2}");
    assert_eq!(pinned.end, LogOffset::new(100, 2));
    log.append(&[(LogOffset::new(200, 0), b"{\"c\":3}".as_slice())], true).unwrap();
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
fn size_boundaries_never_split_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = snapshot_log(dir.path(), 30);
    for tx in 1..=5u64 {
        log.append(
            &[
                (LogOffset::new(tx, 0), b"{\"0123456789\":1}".as_slice()),
                (LogOffset::new(tx, 2), b"{\"x\":2}".as_slice()),
            ],
            true,
        )
        .unwrap();
    }
    log.sync(true).unwrap();
    let mut at = LogOffset::SNAPSHOT_END;
    let mut seen = 0;
    loop {
        match log.read(Some(at), true, 0).unwrap() {
            ReadOutcome::Data(s) => {
                assert!(s.count % 2 == 0, "a chunk must hold whole transactions");
                seen += s.count;
                at = s.end;
            }
            ReadOutcome::AtHead => break,
            ReadOutcome::NotReady => unreachable!(),
        }
    }
    assert_eq!(seen, 10);
}

#[test]
fn recovery_drops_partial_units_and_keeps_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let pinned;
    {
        let log = snapshot_log(dir.path(), 1 << 20);
        log.append(&[(LogOffset::new(10, 0), b"{\"a\":1}".as_slice())], true).unwrap();
        log.sync(true).unwrap();
        pinned = slice(log.read(Some(LogOffset::SNAPSHOT_END), true, 10).unwrap());
        log.append(&[(LogOffset::new(20, 0), b"{\"b\":1}".as_slice())], true).unwrap();
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
    log.append(&[(LogOffset::new(30, 0), b"{\"c\":1}".as_slice())], true).unwrap();
    log.sync(true).unwrap();
    let live = slice(log.read_live(LogOffset::new(20, 0)).unwrap());
    assert_eq!(live.body, b"{\"c\":1}");
}

#[test]
fn unfinished_snapshot_is_not_readable_past_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let log = ShapeLog::create(dir.path(), 1 << 20).unwrap();
    assert_eq!(log.read(None, true, 0).unwrap(), ReadOutcome::NotReady);
    log.append(&[(LogOffset::snapshot_chunk(0), b"{}".as_slice())], false).unwrap();
    log.close_chunk(LogOffset::snapshot_chunk(0)).unwrap();
    assert_eq!(log.read(None, true, 0).unwrap(), ReadOutcome::NotReady, "not durable yet");
    log.sync(true).unwrap();
    assert_eq!(slice(log.read(None, true, 0).unwrap()).end, LogOffset::snapshot_chunk(0));
    assert_eq!(log.read(Some(LogOffset::snapshot_chunk(0)), true, 0).unwrap(), ReadOutcome::NotReady);
}

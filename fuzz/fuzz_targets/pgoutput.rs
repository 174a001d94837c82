//! The replication stream from bytes: pgoutput decoding and transaction assembly, as the stream
//! task does with what the walsender sends.
//!
//! Input: frames, each a big-endian u16 length and that many bytes. Every frame is decoded as a
//! pgoutput message; frames starting with `w` or `k` go to the assembler as raw CopyData, others
//! are wrapped in an XLogData header first (so the fuzzer needs not rediscover it).
#![no_main]

use bytes::Bytes;
use ferrite_pg::replication::pgoutput::decode;
use ferrite_pg::replication::stream::{parse_copy_data, Assembler, Change, CopyData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut assembler = Assembler::default();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let frame = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[2 + frame.len()..];
        let _ = decode(frame);
        let copy = if matches!(frame.first(), Some(b'w' | b'k')) {
            Bytes::copy_from_slice(frame)
        } else {
            let mut wrapped = vec![b'w'];
            wrapped.extend_from_slice(&[0; 24]);
            wrapped.extend_from_slice(frame);
            Bytes::from(wrapped)
        };
        let msg = match parse_copy_data(copy) {
            Ok(CopyData::XLogData(msg)) => msg,
            Ok(CopyData::Keepalive { .. }) | Err(_) => continue,
        };
        // The stream ends at its first error (the server reconnects), so the fuzzer does too.
        let Ok(done) = assembler.apply(msg) else { return };
        if let Some(txn) = done {
            assert!(!txn.changes.is_empty(), "an empty transaction was delivered");
            for change in &txn.changes {
                let (relation, rows): (_, Vec<&Vec<Option<String>>>) = match change {
                    Change::Insert { relation, new } => (relation, vec![new]),
                    Change::Update { relation, old, new } => (relation, old.iter().chain([new]).collect()),
                    Change::Delete { relation, old } => (relation, vec![old]),
                    Change::Truncate { .. } => continue,
                };
                for row in rows {
                    assert_eq!(row.len(), relation.columns.len(), "row width differs from its relation's");
                }
            }
        }
    }
});

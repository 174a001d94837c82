//! On-disk framing of shape-log entries and chunk boundaries.
//!
//! Log record: `[u32 payload_len][u32 crc32(payload)][payload]`, payload =
//! `[u64 tx][u64 op][u8 flags][json bytes]`. `FLAG_COMMIT` marks the last record of a unit (a
//! transaction's messages for this shape, or a snapshot row); recovery cuts the file after the
//! last such record, so a crash never leaves half a transaction behind.
//!
//! Boundary record (fixed 40 bytes): `[u64 tx][u64 op][u64 pos][u64 lsn][u32 flags][u32 crc]`.

use ferrite_protocol::offset::LogOffset;

/// Header bytes before a log record's payload.
pub const RECORD_HEADER: usize = 8;
/// Fixed bytes at the start of a payload (tx, op, flags).
pub const PAYLOAD_FIXED: usize = 17;
/// Size of one boundary record.
pub const BOUNDARY_SIZE: usize = 40;
/// The record ends a unit that must be kept whole.
pub const FLAG_COMMIT: u8 = 1;
/// Boundary flag: a response ending here ends with `up-to-date`.
pub const BOUNDARY_UP_TO_DATE: u32 = 1;
/// Boundary flag: the boundary lies inside a unit (a transaction split across chunks); recovery
/// drops it with the unit if the unit's end did not survive.
pub const BOUNDARY_MID_UNIT: u32 = 2;

/// Appends one framed record to `out`.
pub fn encode_record(out: &mut Vec<u8>, offset: LogOffset, flags: u8, json: &[u8]) {
    let len = (PAYLOAD_FIXED + json.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&offset.tx.to_le_bytes());
    out.extend_from_slice(&offset.op.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(json);
    let crc = crc32fast::hash(&out[start + RECORD_HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record read back from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of the message.
    pub offset: LogOffset,
    /// Record flags.
    pub flags: u8,
    /// The message JSON.
    pub json: &'a [u8],
    /// Total framed length in bytes.
    pub len: usize,
}

/// Decodes the record at the start of `buf`; `None` if incomplete or corrupt.
pub fn decode_record(buf: &[u8]) -> Option<Record<'_>> {
    if buf.len() < RECORD_HEADER {
        return None;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().ok()?);
    if len < PAYLOAD_FIXED || buf.len() < RECORD_HEADER + len {
        return None;
    }
    let payload = &buf[RECORD_HEADER..RECORD_HEADER + len];
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let tx = u64::from_le_bytes(payload[0..8].try_into().ok()?);
    let op = u64::from_le_bytes(payload[8..16].try_into().ok()?);
    Some(Record {
        offset: LogOffset { tx, op },
        flags: payload[16],
        json: &payload[PAYLOAD_FIXED..],
        len: RECORD_HEADER + len,
    })
}

/// A chunk boundary: a response that starts before it never extends past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boundary {
    /// Offset of the last entry of the chunk (what the response reports in `electric-offset`).
    pub offset: LogOffset,
    /// Byte position in the log file just after that entry.
    pub pos: u64,
    /// `global_last_seen_lsn` recorded when the boundary was made.
    pub lsn: u64,
    /// `BOUNDARY_*` flags.
    pub flags: u32,
}

impl Boundary {
    /// Encodes the fixed-size record.
    pub fn encode(&self) -> [u8; BOUNDARY_SIZE] {
        let mut b = [0u8; BOUNDARY_SIZE];
        b[0..8].copy_from_slice(&self.offset.tx.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.op.to_le_bytes());
        b[16..24].copy_from_slice(&self.pos.to_le_bytes());
        b[24..32].copy_from_slice(&self.lsn.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        let crc = crc32fast::hash(&b[0..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a fixed-size record; `None` if corrupt.
    pub fn decode(b: &[u8]) -> Option<Boundary> {
        if b.len() < BOUNDARY_SIZE {
            return None;
        }
        let crc = u32::from_le_bytes(b[36..40].try_into().ok()?);
        if crc32fast::hash(&b[0..36]) != crc {
            return None;
        }
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().unwrap_or([0; 8]));
        Some(Boundary {
            offset: LogOffset { tx: u(0..8), op: u(8..16) },
            pos: u(16..24),
            lsn: u(24..32),
            flags: u32::from_le_bytes(b[32..36].try_into().ok()?),
        })
    }

    /// Whether a response ending here carries `up-to-date`.
    pub fn up_to_date(&self) -> bool {
        self.flags & BOUNDARY_UP_TO_DATE != 0
    }

    /// Whether the boundary lies inside a unit.
    pub fn mid_unit(&self) -> bool {
        self.flags & BOUNDARY_MID_UNIT != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_detect_damage() {
        let mut buf = Vec::new();
        encode_record(&mut buf, LogOffset::new(7, 2), FLAG_COMMIT, b"{\"a\":1}");
        let r = decode_record(&buf).unwrap();
        assert_eq!(r.offset, LogOffset::new(7, 2));
        assert_eq!(r.json, b"{\"a\":1}");
        assert_eq!(r.len, buf.len());
        assert!(decode_record(&buf[..buf.len() - 1]).is_none());
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_record(&bad).is_none());
    }

    #[test]
    fn boundaries_round_trip() {
        let b = Boundary { offset: LogOffset::new(9, 4), pos: 1234, lsn: 99, flags: BOUNDARY_UP_TO_DATE };
        assert_eq!(Boundary::decode(&b.encode()), Some(b));
        let mut e = b.encode();
        e[3] ^= 1;
        assert!(Boundary::decode(&e).is_none());
    }
}

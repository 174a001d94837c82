//! Decoder for pgoutput logical replication messages, protocol version 1.
//!
//! Reference: "Logical Replication Message Formats" in the Postgres docs. Version 1 is all Ferrite
//! needs (no streamed in-progress transactions, no two-phase commit), and every Postgres since 10
//! speaks it. Values are requested in text format, so each column arrives as Postgres text output
//! (formatted under the walsender's session settings).
//!
//! The decoder is a pure function of the bytes, so it can be tested without a server and never
//! panics on malformed input: every read is bounds-checked and reported as [`DecodeError`].

use bytes::Bytes;
use std::sync::Arc;

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01 UTC).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A malformed or unsupported pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode pgoutput message: {0}")]
pub struct DecodeError(pub String);

/// A table as described by a pgoutput `Relation` message.
///
/// Postgres sends one before the first change to a table in each session and again whenever the
/// table's definition changed, so comparing it with the known [`ferrite_protocol::schema::TableSchema`]
/// is how schema changes are noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// `pg_class.oid` of the table (the same id [`crate::introspect::load_table_by_oid`] takes).
    pub oid: u32,
    /// Schema name (`pg_catalog` when pgoutput sends the empty string).
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Published columns in attribute order (dropped and generated columns excluded).
    pub columns: Vec<RelationColumn>,
    /// True when the table has `REPLICA IDENTITY FULL`, i.e. updates and deletes carry the
    /// complete old row.
    pub replica_identity_full: bool,
}

impl Relation {
    /// `"schema"."name"`, for messages.
    pub fn quoted_name(&self) -> String {
        ferrite_protocol::relation::QualifiedName::new(self.schema.clone(), self.name.clone()).quoted()
    }
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// `atttypmod` (-1 when none).
    pub typmod: i32,
    /// Part of the replica identity key (for `REPLICA IDENTITY FULL`, every column).
    pub is_key: bool,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// SQL NULL (`'n'`).
    Null,
    /// A TOASTed value that did not change and was not sent (`'u'`).
    UnchangedToast,
    /// The value in text format (`'t'`).
    Text(String),
}

/// Which old row an update or delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldTupleKind {
    /// `'K'`: only the replica identity key columns are set, the rest are null.
    Key,
    /// `'O'`: the complete old row (`REPLICA IDENTITY FULL`).
    Full,
}

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldTuple {
    /// Key-only or full.
    pub kind: OldTupleKind,
    /// Values in column order.
    pub values: Vec<TupleValue>,
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum PgOutputMessage {
    /// `B`: a transaction starts.
    Begin {
        /// LSN of the commit record.
        final_lsn: u64,
        /// Commit time, microseconds since 2000-01-01 UTC.
        commit_time: i64,
        /// Transaction id (32-bit xid).
        xid: u32,
    },
    /// `C`: the transaction commits.
    Commit {
        /// Flags (unused, 0).
        flags: u8,
        /// LSN of the commit record.
        commit_lsn: u64,
        /// End LSN of the transaction (what to confirm once it is durable).
        end_lsn: u64,
        /// Commit time, microseconds since 2000-01-01 UTC.
        commit_time: i64,
    },
    /// `O`: replication origin of the transaction (ignored by Ferrite).
    Origin {
        /// Origin's commit LSN.
        lsn: u64,
        /// Origin name.
        name: String,
    },
    /// `R`: a table description.
    Relation(Arc<Relation>),
    /// `Y`: a type description (ignored by Ferrite, which only needs type OIDs).
    Type {
        /// Type OID.
        oid: u32,
        /// Schema.
        schema: String,
        /// Type name.
        name: String,
    },
    /// `I`: a row was inserted.
    Insert {
        /// Relation oid.
        relation_id: u32,
        /// The new row.
        new: Vec<TupleValue>,
    },
    /// `U`: a row was updated.
    Update {
        /// Relation oid.
        relation_id: u32,
        /// The old row (full with REPLICA IDENTITY FULL; key-only when the key changed under
        /// the default identity; absent otherwise).
        old: Option<OldTuple>,
        /// The new row; unchanged TOASTed values are [`TupleValue::UnchangedToast`].
        new: Vec<TupleValue>,
    },
    /// `D`: a row was deleted.
    Delete {
        /// Relation oid.
        relation_id: u32,
        /// The old row (key-only or full).
        old: OldTuple,
    },
    /// `T`: tables were truncated.
    Truncate {
        /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
        options: u8,
        /// Truncated relations.
        relation_ids: Vec<u32>,
    },
    /// `M`: a `pg_logical_emit_message` message (ignored by Ferrite).
    Message {
        /// Whether it was emitted transactionally.
        transactional: bool,
        /// Its LSN.
        lsn: u64,
        /// Prefix.
        prefix: String,
        /// Content.
        content: Bytes,
    },
}

/// Decodes one pgoutput message (the payload of an XLogData message).
pub fn decode(data: &[u8]) -> Result<PgOutputMessage, DecodeError> {
    let mut r = Reader { buf: data, pos: 0 };
    let tag = r.u8()?;
    let msg = match tag {
        b'B' => PgOutputMessage::Begin { final_lsn: r.u64()?, commit_time: r.i64()?, xid: r.u32()? },
        b'C' => {
            PgOutputMessage::Commit { flags: r.u8()?, commit_lsn: r.u64()?, end_lsn: r.u64()?, commit_time: r.i64()? }
        }
        b'O' => PgOutputMessage::Origin { lsn: r.u64()?, name: r.cstr()? },
        b'R' => {
            let oid = r.u32()?;
            let schema = r.cstr()?;
            let name = r.cstr()?;
            let identity = r.u8()?;
            let ncols = r.i16()?;
            if ncols < 0 {
                return Err(DecodeError(format!("negative column count {ncols} in relation {name}")));
            }
            let mut columns = Vec::with_capacity(ncols as usize);
            for _ in 0..ncols {
                let flags = r.u8()?;
                columns.push(RelationColumn {
                    is_key: flags & 1 == 1,
                    name: r.cstr()?,
                    type_oid: r.u32()?,
                    typmod: r.i32()?,
                });
            }
            let schema = if schema.is_empty() { "pg_catalog".to_string() } else { schema };
            PgOutputMessage::Relation(Arc::new(Relation {
                oid,
                schema,
                name,
                columns,
                replica_identity_full: identity == b'f',
            }))
        }
        b'Y' => PgOutputMessage::Type { oid: r.u32()?, schema: r.cstr()?, name: r.cstr()? },
        b'I' => {
            let relation_id = r.u32()?;
            r.expect(b'N', "insert")?;
            PgOutputMessage::Insert { relation_id, new: r.tuple()? }
        }
        b'U' => {
            let relation_id = r.u32()?;
            let mut old = None;
            let mut marker = r.u8()?;
            if marker == b'K' || marker == b'O' {
                let kind = if marker == b'K' { OldTupleKind::Key } else { OldTupleKind::Full };
                old = Some(OldTuple { kind, values: r.tuple()? });
                marker = r.u8()?;
            }
            if marker != b'N' {
                return Err(DecodeError(format!("update: expected 'N', got {:?}", marker as char)));
            }
            PgOutputMessage::Update { relation_id, old, new: r.tuple()? }
        }
        b'D' => {
            let relation_id = r.u32()?;
            let kind = match r.u8()? {
                b'K' => OldTupleKind::Key,
                b'O' => OldTupleKind::Full,
                other => return Err(DecodeError(format!("delete: expected 'K' or 'O', got {:?}", other as char))),
            };
            PgOutputMessage::Delete { relation_id, old: OldTuple { kind, values: r.tuple()? } }
        }
        b'T' => {
            let n = r.u32()?;
            let options = r.u8()?;
            // Each id takes 4 bytes: reject counts the message cannot hold before allocating.
            if (n as usize).saturating_mul(4) > r.remaining() {
                return Err(DecodeError(format!("truncate of {n} relations in a message of {} bytes", data.len())));
            }
            let relation_ids = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            PgOutputMessage::Truncate { options, relation_ids }
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = r.u64()?;
            let prefix = r.cstr()?;
            let len = r.u32()? as usize;
            let content = Bytes::copy_from_slice(r.bytes(len)?);
            PgOutputMessage::Message { transactional: flags & 1 == 1, lsn, prefix, content }
        }
        other => {
            return Err(DecodeError(format!(
                "unknown message type {:?} (only protocol version 1 without streaming is supported)",
                other as char
            )))
        }
    };
    if r.remaining() != 0 {
        return Err(DecodeError(format!("{} trailing bytes after a {:?} message", r.remaining(), tag as char)));
    }
    Ok(msg)
}

/// Bounds-checked big-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError(format!("message truncated: needed {n} bytes at offset {}", self.pos)));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| DecodeError(format!("unterminated string at offset {}", self.pos)))?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| DecodeError(format!("string at offset {} is not UTF-8", self.pos)))?
            .to_string();
        self.pos += end + 1;
        Ok(s)
    }

    fn expect(&mut self, want: u8, what: &str) -> Result<(), DecodeError> {
        let got = self.u8()?;
        if got != want {
            return Err(DecodeError(format!("{what}: expected {:?}, got {:?}", want as char, got as char)));
        }
        Ok(())
    }

    fn tuple(&mut self) -> Result<Vec<TupleValue>, DecodeError> {
        let n = self.i16()?;
        if n < 0 {
            return Err(DecodeError(format!("negative column count {n} in tuple")));
        }
        let mut values = Vec::with_capacity(n as usize);
        for i in 0..n {
            let value = match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => {
                    let len = self.i32()?;
                    if len < 0 {
                        return Err(DecodeError(format!("negative length {len} for column {i}")));
                    }
                    let raw = self.bytes(len as usize)?;
                    let text = std::str::from_utf8(raw)
                        .map_err(|_| DecodeError(format!("text value of column {i} is not UTF-8")))?;
                    TupleValue::Text(text.to_string())
                }
                b'b' => {
                    return Err(DecodeError(format!(
                        "column {i} arrived in binary format, which Ferrite never requests"
                    )))
                }
                other => {
                    return Err(DecodeError(format!("unknown tuple value kind {:?} for column {i}", other as char)))
                }
            };
            values.push(value);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn text(out: &mut Vec<u8>, s: &str) {
        out.push(b't');
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    #[test]
    fn decodes_begin_and_commit() {
        let mut m = vec![b'B'];
        m.extend_from_slice(&0x16_B374_D848u64.to_be_bytes());
        m.extend_from_slice(&123i64.to_be_bytes());
        m.extend_from_slice(&756u32.to_be_bytes());
        assert_eq!(
            decode(&m).unwrap(),
            PgOutputMessage::Begin { final_lsn: 0x16_B374_D848, commit_time: 123, xid: 756 }
        );

        let mut m = vec![b'C', 0];
        m.extend_from_slice(&10u64.to_be_bytes());
        m.extend_from_slice(&20u64.to_be_bytes());
        m.extend_from_slice(&30i64.to_be_bytes());
        assert_eq!(
            decode(&m).unwrap(),
            PgOutputMessage::Commit { flags: 0, commit_lsn: 10, end_lsn: 20, commit_time: 30 }
        );
    }

    #[test]
    fn decodes_relation_and_tuples() {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16384u32.to_be_bytes());
        cstr(&mut m, "");
        cstr(&mut m, "items");
        m.push(b'f');
        m.extend_from_slice(&2i16.to_be_bytes());
        m.push(1);
        cstr(&mut m, "id");
        m.extend_from_slice(&23u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        m.push(0);
        cstr(&mut m, "big");
        m.extend_from_slice(&25u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        let PgOutputMessage::Relation(rel) = decode(&m).unwrap() else { panic!("not a relation") };
        assert_eq!(rel.schema, "pg_catalog");
        assert!(rel.replica_identity_full);
        assert_eq!(rel.columns.len(), 2);
        assert!(rel.columns[0].is_key && !rel.columns[1].is_key);

        let mut m = vec![b'U'];
        m.extend_from_slice(&16384u32.to_be_bytes());
        m.push(b'O');
        m.extend_from_slice(&2i16.to_be_bytes());
        text(&mut m, "1");
        text(&mut m, "héllo");
        m.push(b'N');
        m.extend_from_slice(&2i16.to_be_bytes());
        text(&mut m, "1");
        m.push(b'u');
        assert_eq!(
            decode(&m).unwrap(),
            PgOutputMessage::Update {
                relation_id: 16384,
                old: Some(OldTuple {
                    kind: OldTupleKind::Full,
                    values: vec![TupleValue::Text("1".into()), TupleValue::Text("héllo".into())]
                }),
                new: vec![TupleValue::Text("1".into()), TupleValue::UnchangedToast],
            }
        );
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        assert!(decode(&[]).is_err());
        assert!(decode(b"B\0\0").is_err());
        assert!(decode(b"Z").is_err());
        // Insert whose text value claims more bytes than present.
        let mut m = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b't'];
        m.extend_from_slice(&1000i32.to_be_bytes());
        m.extend_from_slice(b"abc");
        assert!(decode(&m).is_err());
        // Binary values are refused.
        let m = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b'b', 0, 0, 0, 0];
        assert!(decode(&m).unwrap_err().0.contains("binary"));
        // Truncate claiming a huge count.
        let m = vec![b'T', 0xff, 0xff, 0xff, 0xff, 0];
        assert!(decode(&m).is_err());
        // Every prefix of a valid message fails cleanly.
        let mut full = vec![b'I', 0, 0, 0, 7, b'N', 0, 2, b'n'];
        text(&mut full, "x");
        assert!(decode(&full).is_ok());
        for i in 0..full.len() {
            assert!(decode(&full[..i]).is_err());
        }
    }
}

//! The shape store's changes as data: what a cluster's leader sends and its followers apply, so
//! that every node holds the same shape directories, byte for byte.
//!
//! Shape logs only ever grow (a log, its `chunks` file and a relational shape's queue are
//! appended to; recovery may cut a torn tail, and an emptied queue is cut to nothing: a
//! [`FileOp::SetLen`]); a shape's `shape.json`, a relational shape's checkpoint and a shared
//! node's stored state are replaced whole ([`FileOp::Meta`], [`FileOp::Replace`]); a shape
//! directory, or a node's file, goes away whole. So a handful of operations describe every
//! change, and a follower that applies them in order ends with exactly the leader's files — as a
//! crash would have left them at that point, which is what a node taking over recovers from.
//! Writes are positional: applying one twice (a message redelivered) changes nothing. One more,
//! [`FileOp::Processed`], says how far the leader has processed the replication stream, which a
//! follower serving reads reports in its `up-to-date` messages as the leader would.
//!
//! The leader hands them to a [`WriteSink`] *before* it lets readers see what they describe
//! (see `ShapeLog::sync`), so whatever a client was shown is on every node that took the
//! stream, and a follower that takes over can go on serving the same handles and offsets.
//!
//! Encoding: a sequence of ops, each `[u8 tag][u16 dir length][dir]…` (`Processed`: `[u8
//! tag][u64 lsn]`; little-endian), small enough to read at a glance and to bound: [`decode`]
//! refuses directory names that are not a single plain path component and lengths past the end
//! of the message.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The files of a shape directory that change by positional writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShapeFile {
    /// The entries (`log`).
    Log,
    /// The chunk boundaries (`chunks`).
    Chunks,
    /// A shape with subqueries: the transactions waiting for a move-in (`queue.log`, see
    /// [`crate::shapes::spill`]).
    Queue,
}

impl ShapeFile {
    fn name(self) -> &'static str {
        match self {
            ShapeFile::Log => "log",
            ShapeFile::Chunks => "chunks",
            ShapeFile::Queue => "queue.log",
        }
    }

    fn tag(self) -> u8 {
        match self {
            ShapeFile::Log => 0,
            ShapeFile::Chunks => 1,
            ShapeFile::Queue => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<ShapeFile> {
        match tag {
            0 => Some(ShapeFile::Log),
            1 => Some(ShapeFile::Chunks),
            2 => Some(ShapeFile::Queue),
            _ => None,
        }
    }
}

/// One change of the shape store. `dir` is a shape directory's name (its handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    /// `bytes` written at `pos` of a shape's file.
    Write { dir: String, file: ShapeFile, pos: u64, bytes: Vec<u8> },
    /// A shape's file cut (or grown) to `len` bytes.
    SetLen { dir: String, file: ShapeFile, len: u64 },
    /// A shape's `shape.json` replaced by `bytes` (its directory created if new).
    Meta { dir: String, bytes: Vec<u8> },
    /// A shape directory removed.
    Remove { dir: String },
    /// A whole file replaced by `bytes`: a shape with subqueries' checkpoint, or (`dir` the
    /// nodes' directory) the stored state of a shared dependency node.
    Replace { dir: String, name: String, bytes: Vec<u8> },
    /// A file of the nodes' directory removed (its node went with its last shape).
    RemoveFile { dir: String, name: String },
    /// The leader has processed the replication stream up to this commit LSN (what its
    /// `up-to-date` messages report): a follower serving reads reports the same.
    Processed { lsn: u64 },
}

/// Where a leader's shape store sends its changes (see the module docs).
pub trait WriteSink: Send + Sync {
    /// Sends `ops` and returns once they are safely stored (acknowledged by the stream); an
    /// error means they may not be, and the caller must not let readers see them.
    fn publish(&self, ops: Vec<FileOp>) -> io::Result<()>;
    /// Sends `ops` after everything handed over before, without waiting: for what nothing
    /// visible waits on yet but which must not be overtaken by later changes (removals, pinned
    /// boundaries), and for what is written under a lock that readers take (a relational
    /// shape's checkpoint and queue) — a later [`WriteSink::publish`] or [`WriteSink::flush`]
    /// returns only once these are stored too.
    fn publish_later(&self, ops: Vec<FileOp>);
    /// Returns once everything handed over before is stored (the replication driver, before it
    /// confirms a position to Postgres).
    fn flush(&self) -> io::Result<()>;
}

const TAG_WRITE: u8 = 1;
const TAG_SET_LEN: u8 = 2;
const TAG_META: u8 = 3;
const TAG_REMOVE: u8 = 4;
const TAG_PROCESSED: u8 = 5;
const TAG_REPLACE: u8 = 6;
const TAG_REMOVE_FILE: u8 = 7;

/// Bytes an op takes encoded, to split a batch into messages of bounded size.
pub fn encoded_len(op: &FileOp) -> usize {
    if let FileOp::Processed { .. } = op {
        return 9;
    }
    3 + match op {
        FileOp::Write { dir, bytes, .. } => dir.len() + 1 + 8 + 4 + bytes.len(),
        FileOp::SetLen { dir, .. } => dir.len() + 1 + 8,
        FileOp::Meta { dir, bytes } => dir.len() + 4 + bytes.len(),
        FileOp::Remove { dir } => dir.len(),
        FileOp::Replace { dir, name, bytes } => dir.len() + 2 + name.len() + 4 + bytes.len(),
        FileOp::RemoveFile { dir, name } => dir.len() + 2 + name.len(),
        FileOp::Processed { .. } => unreachable!("counted above"),
    }
}

/// Appends `op` to `out`.
pub fn encode(op: &FileOp, out: &mut Vec<u8>) {
    let dir_of = |out: &mut Vec<u8>, tag: u8, dir: &str| {
        out.push(tag);
        out.extend_from_slice(&(dir.len() as u16).to_le_bytes());
        out.extend_from_slice(dir.as_bytes());
    };
    match op {
        FileOp::Write { dir, file, pos, bytes } => {
            dir_of(out, TAG_WRITE, dir);
            out.push(file.tag());
            out.extend_from_slice(&pos.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        FileOp::SetLen { dir, file, len } => {
            dir_of(out, TAG_SET_LEN, dir);
            out.push(file.tag());
            out.extend_from_slice(&len.to_le_bytes());
        }
        FileOp::Meta { dir, bytes } => {
            dir_of(out, TAG_META, dir);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        FileOp::Remove { dir } => dir_of(out, TAG_REMOVE, dir),
        FileOp::Replace { dir, name, bytes } => {
            dir_of(out, TAG_REPLACE, dir);
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        FileOp::RemoveFile { dir, name } => {
            dir_of(out, TAG_REMOVE_FILE, dir);
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        FileOp::Processed { lsn } => {
            out.push(TAG_PROCESSED);
            out.extend_from_slice(&lsn.to_le_bytes());
        }
    }
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad shape-store message at byte {at}: {what}")]
pub struct DecodeError {
    at: usize,
    what: &'static str,
}

/// The ops of one message, or why it is not one. A directory name must be one plain path
/// component (no `/`, not `.` or `..`, not empty, not hidden), so a message can only ever touch
/// shape directories.
pub fn decode(mut msg: &[u8]) -> Result<Vec<FileOp>, DecodeError> {
    let total = msg.len();
    let mut ops = Vec::new();
    while !msg.is_empty() {
        let at = total - msg.len();
        let err = |what| DecodeError { at, what };
        let mut take = |n: usize| -> Result<&[u8], DecodeError> {
            if msg.len() < n {
                return Err(err("truncated"));
            }
            let (head, rest) = msg.split_at(n);
            msg = rest;
            Ok(head)
        };
        let tag = take(1)?[0];
        if tag == TAG_PROCESSED {
            ops.push(FileOp::Processed { lsn: u64::from_le_bytes(take(8)?.try_into().unwrap()) });
            continue;
        }
        let dir_len = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
        let dir = std::str::from_utf8(take(dir_len)?).map_err(|_| err("directory name not UTF-8"))?.to_string();
        // Whole files may also be the nodes' (their directory); everything else is a shape's.
        let nodes_ok = matches!(tag, TAG_REPLACE | TAG_REMOVE_FILE) && dir == crate::shapes::nodes::NODES_DIR;
        if !plain_name(&dir) && !nodes_ok {
            return Err(err("not a shape directory name"));
        }
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap()) as usize;
        ops.push(match tag {
            TAG_WRITE => {
                let file = ShapeFile::from_tag(take(1)?[0]).ok_or(err("unknown file"))?;
                let pos = u64_of(take(8)?);
                let n = u32_of(take(4)?);
                FileOp::Write { dir, file, pos, bytes: take(n)?.to_vec() }
            }
            TAG_SET_LEN => {
                let file = ShapeFile::from_tag(take(1)?[0]).ok_or(err("unknown file"))?;
                FileOp::SetLen { dir, file, len: u64_of(take(8)?) }
            }
            TAG_META => {
                let n = u32_of(take(4)?);
                FileOp::Meta { dir, bytes: take(n)?.to_vec() }
            }
            TAG_REMOVE => FileOp::Remove { dir },
            TAG_REPLACE | TAG_REMOVE_FILE => {
                let n = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
                let name = std::str::from_utf8(take(n)?).map_err(|_| err("file name not UTF-8"))?.to_string();
                if !plain_name(&name) || RESERVED.contains(&name.as_str()) {
                    return Err(err("not a file a whole-file operation may touch"));
                }
                if tag == TAG_REMOVE_FILE {
                    FileOp::RemoveFile { dir, name }
                } else {
                    let n = u32_of(take(4)?);
                    FileOp::Replace { dir, name, bytes: take(n)?.to_vec() }
                }
            }
            _ => return Err(err("unknown operation")),
        });
    }
    Ok(ops)
}

/// Files only their own operations change (positional writes, `Meta`).
const RESERVED: [&str; 4] = ["log", "chunks", "queue.log", "shape.json"];

fn plain_name(dir: &str) -> bool {
    !dir.is_empty()
        && dir.len() <= 255
        && !dir.starts_with('.')
        && !dir.contains(['/', '\\', '\0'])
        && dir != crate::shapes::nodes::NODES_DIR
}

/// Applies ops to a data directory (a follower's copy of the leader's shape store).
pub struct Applier {
    root: PathBuf,
}

impl Applier {
    /// An applier writing under `root` (the node's data directory).
    pub fn new(root: &Path) -> Applier {
        Applier { root: root.to_path_buf() }
    }

    /// Applies one op. Files are not fsynced here: a follower's copy is made durable at once
    /// when it takes over (one `syncfs`), and a node starting replays the stream anyway.
    pub fn apply(&self, op: &FileOp) -> io::Result<()> {
        match op {
            FileOp::Write { dir, file, pos, bytes } => {
                let dir = self.root.join(dir);
                std::fs::create_dir_all(&dir)?;
                let f = OpenOptions::new().write(true).create(true).truncate(false).open(dir.join(file.name()))?;
                f.write_all_at(bytes, *pos)
            }
            FileOp::SetLen { dir, file, len } => {
                let dir = self.root.join(dir);
                std::fs::create_dir_all(&dir)?;
                let f = OpenOptions::new().write(true).create(true).truncate(false).open(dir.join(file.name()))?;
                f.set_len(*len)
            }
            FileOp::Meta { dir, bytes } => {
                let dir = self.root.join(dir);
                std::fs::create_dir_all(&dir)?;
                let tmp = dir.join("shape.json.tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, dir.join("shape.json"))
            }
            FileOp::Remove { dir } => match std::fs::remove_dir_all(self.root.join(dir)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            FileOp::Replace { dir, name, bytes } => {
                let dir = self.root.join(dir);
                std::fs::create_dir_all(&dir)?;
                let tmp = dir.join(format!(".{name}.tmp"));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, dir.join(name))
            }
            FileOp::RemoveFile { dir, name } => match std::fs::remove_file(self.root.join(dir).join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            // Not a file: the follower takes it itself.
            FileOp::Processed { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<FileOp> {
        vec![
            FileOp::Meta { dir: "h-1".into(), bytes: b"{}".to_vec() },
            FileOp::Write { dir: "h-1".into(), file: ShapeFile::Log, pos: 0, bytes: b"hello".to_vec() },
            FileOp::Write { dir: "h-1".into(), file: ShapeFile::Chunks, pos: 40, bytes: vec![7; 40] },
            FileOp::SetLen { dir: "h-1".into(), file: ShapeFile::Log, len: 3 },
            FileOp::Remove { dir: "h-2".into() },
            FileOp::Processed { lsn: 0x1_2345_6789 },
            FileOp::Write { dir: "h-1".into(), file: ShapeFile::Queue, pos: 0, bytes: b"q".to_vec() },
            FileOp::Replace { dir: "h-1".into(), name: "links.json".into(), bytes: b"{\"a\":1}".to_vec() },
            FileOp::Replace {
                dir: crate::shapes::nodes::NODES_DIR.into(),
                name: "ab.json".into(),
                bytes: b"[]".to_vec(),
            },
            FileOp::RemoveFile { dir: crate::shapes::nodes::NODES_DIR.into(), name: "cd.json".into() },
        ]
    }

    #[test]
    fn ops_round_trip_and_their_encoded_length_is_exact() {
        let mut buf = Vec::new();
        for op in sample() {
            let before = buf.len();
            encode(&op, &mut buf);
            assert_eq!(buf.len() - before, encoded_len(&op), "{op:?}");
        }
        assert_eq!(decode(&buf).unwrap(), sample());
    }

    #[test]
    fn hostile_messages_are_refused_not_followed() {
        for dir in ["..", ".", "", "a/b", "../x", ".hidden", crate::shapes::nodes::NODES_DIR] {
            let mut buf = Vec::new();
            encode(&FileOp::Remove { dir: dir.into() }, &mut buf);
            assert!(decode(&buf).is_err(), "{dir:?} accepted");
        }
        let mut buf = Vec::new();
        encode(&sample()[1], &mut buf);
        for cut in 0..buf.len() - 1 {
            assert!(decode(&buf[..cut + 1]).is_err() || cut + 1 == buf.len());
        }
        // A length past the end.
        let mut bad = buf.clone();
        bad[3 + 3 + 1 + 8] = 0xff;
        assert!(decode(&bad).is_err());
        assert!(decode(&[9, 1, 0, b'x']).is_err(), "unknown tag");
        // Whole-file operations: only plain names, never the files that have their own.
        for (dir, name) in [("h-1", "log"), ("h-1", "shape.json"), ("h-1", "../x"), ("h-1", ".."), ("..", "a.json")] {
            let mut buf = Vec::new();
            encode(&FileOp::Replace { dir: dir.into(), name: name.into(), bytes: vec![] }, &mut buf);
            assert!(decode(&buf).is_err(), "{dir}/{name} accepted");
        }
    }

    #[test]
    fn applying_twice_or_out_of_order_writes_ends_with_the_same_files() {
        let root = tempfile::tempdir().unwrap();
        let a = Applier::new(root.path());
        for op in sample() {
            a.apply(&op).unwrap();
        }
        for op in sample() {
            a.apply(&op).unwrap();
        }
        let dir = root.path().join("h-1");
        assert_eq!(std::fs::read(dir.join("log")).unwrap(), b"hel");
        assert_eq!(std::fs::read(dir.join("chunks")).unwrap().len(), 80);
        assert_eq!(std::fs::read(dir.join("shape.json")).unwrap(), b"{}");
        assert!(!root.path().join("h-2").exists());
    }
}

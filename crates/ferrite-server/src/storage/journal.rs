//! The storage journal: one file (`journal` in the data directory) through which the
//! replication driver makes many shape logs durable at once.
//!
//! A transaction that reaches a thousand shapes writes to a thousand log files. Making them
//! durable one fsync at a time costs a thousand disk flushes; `syncfs` costs one, but flushes
//! everything dirty on the filesystem (Postgres's files too, when they share it). Instead the
//! driver copies what each log gained since its last sync (a few hundred bytes for a live
//! change, see [`ShapeLog::journal_entry`](super::ShapeLog::journal_entry)) into one journal
//! record per log, writes them together and makes the journal durable with one `fdatasync` —
//! then the logs' own writes may stay in the page cache. On start, before any shape is
//! opened, [`replay`] writes every whole journal record into its log again (the writes are
//! positioned and the bytes the same, so doing it twice is harmless) and fsyncs those files;
//! then the journal starts empty. When it passes [`CHECKPOINT_BYTES`], one `syncfs` makes every
//! log durable where it lies and the journal is emptied.
//!
//! A record: `[u32 payload_len][u32 crc32(payload)][payload]`, payload = `[u16 dir_len][dir
//! (the shape directory's name)][u64 log_pos][u32 log_len][log bytes][u64 chunks_pos][u32
//! chunks_len][chunks bytes]`. A torn or damaged record ends the replay: what follows it was
//! never confirmed to Postgres (the driver confirms only after the journal is durable), so
//! replication delivers it again.

use super::shape_log::JournalEntry;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The journal's file name in the data directory.
pub const JOURNAL_FILE: &str = "journal";
/// Past this size the next batch first makes every log durable where it lies (one `syncfs`) and
/// empties the journal.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;
/// Record header: payload length and CRC.
const HEADER: usize = 8;

/// The open journal (see the module docs).
pub struct Journal {
    file: File,
    len: u64,
}

impl Journal {
    /// Opens the journal of `data_dir`, empty: call [`replay`] first.
    pub fn open(data_dir: &Path) -> io::Result<Journal> {
        let path = data_dir.join(JOURNAL_FILE);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        file.set_len(0)?;
        file.sync_all()?;
        super::shape_log::sync_dir(data_dir)?;
        Ok(Journal { file, len: 0 })
    }

    /// Whether the journal is past [`CHECKPOINT_BYTES`]: time for [`Journal::checkpoint`].
    pub fn wants_checkpoint(&self) -> bool {
        self.len > CHECKPOINT_BYTES
    }

    /// Makes every write on the filesystem durable where it lies (`syncfs`), then empties the
    /// journal. Call only when no log was written since its last sync or journal record.
    pub fn checkpoint(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which `self` keeps open.
        if unsafe { libc::syncfs(self.file.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        Ok(())
    }

    /// Appends one record per `(shape directory name, entry)` and makes them durable together.
    pub fn write(&mut self, entries: &[(&str, &JournalEntry)]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(
            entries.iter().map(|(d, e)| HEADER + 2 + d.len() + 24 + e.log_bytes.len() + e.chunks_bytes.len()).sum(),
        );
        for (dir, e) in entries {
            encode(&mut buf, dir, e)?;
        }
        if buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all_at(&buf, self.len) {
            // A record half written (the disk is full) goes: the next write starts where this
            // one did, with nothing of it left after its end.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.file.sync_data()?;
        self.len += buf.len() as u64;
        Ok(())
    }
}

fn encode(out: &mut Vec<u8>, dir: &str, e: &JournalEntry) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "journal record too large");
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.extend_from_slice(&u16::try_from(dir.len()).map_err(|_| too_big())?.to_le_bytes());
    out.extend_from_slice(dir.as_bytes());
    out.extend_from_slice(&e.log_pos.to_le_bytes());
    out.extend_from_slice(&u32::try_from(e.log_bytes.len()).map_err(|_| too_big())?.to_le_bytes());
    out.extend_from_slice(&e.log_bytes);
    out.extend_from_slice(&e.chunks_pos.to_le_bytes());
    out.extend_from_slice(&u32::try_from(e.chunks_bytes.len()).map_err(|_| too_big())?.to_le_bytes());
    out.extend_from_slice(&e.chunks_bytes);
    let payload = &out[start + HEADER..];
    let len = u32::try_from(payload.len()).map_err(|_| too_big())?;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// One decoded record.
struct Record<'a> {
    dir: &'a str,
    log_pos: u64,
    log: &'a [u8],
    chunks_pos: u64,
    chunks: &'a [u8],
}

/// Decodes the record at the start of `buf`: the record and its length, or `None` when it is
/// torn or damaged.
fn decode(buf: &[u8]) -> Option<(Record<'_>, usize)> {
    let len = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    let payload = buf.get(HEADER..HEADER.checked_add(len)?)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = payload.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let dir_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let dir = std::str::from_utf8(take(dir_len)?).ok()?;
    let log_pos = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let log_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let log = take(log_len)?;
    let chunks_pos = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let chunks_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let chunks = take(chunks_len)?;
    Some((Record { dir, log_pos, log, chunks_pos, chunks }, HEADER + len))
}

/// Writes every whole record of `data_dir`'s journal into its shape's files again and makes
/// them durable (see the module docs); returns how many records were replayed. A record whose
/// shape directory or files are gone (the shape was dropped) is skipped. The journal itself is left as
/// it is: [`Journal::open`] empties it once this succeeded.
pub fn replay(data_dir: &Path) -> io::Result<usize> {
    let path = data_dir.join(JOURNAL_FILE);
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut touched: std::collections::HashSet<PathBuf> = Default::default();
    let mut replayed = 0;
    let mut pos = 0;
    while let Some((r, len)) = decode(&raw[pos..]) {
        pos += len;
        // A name from the journal is only ever a directory directly under `data_dir`.
        if r.dir.is_empty() || r.dir.contains('/') || r.dir == "." || r.dir == ".." {
            continue;
        }
        let dir = data_dir.join(r.dir);
        if !dir.is_dir() {
            continue;
        }
        for (name, at, bytes) in [("log", r.log_pos, r.log), ("chunks", r.chunks_pos, r.chunks)] {
            if bytes.is_empty() {
                continue;
            }
            let file = dir.join(name);
            let f = match OpenOptions::new().write(true).open(&file) {
                Ok(f) => f,
                // A shape without its files is unreadable and dropped when the registry opens.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            f.write_all_at(bytes, at)?;
            touched.insert(file);
        }
        replayed += 1;
    }
    for file in &touched {
        File::open(file)?.sync_data()?;
    }
    if pos < raw.len() {
        tracing::info!(bytes = raw.len() - pos, "storage journal: dropped a torn last record (never confirmed)");
    }
    Ok(replayed)
}

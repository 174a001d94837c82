//! One shape's append-only log on disk, with the chunk boundaries that make catch-up responses
//! immutable.
//!
//! Files in the shape's directory: `log` (framed entries, see [`super::record`]) and `chunks`
//! (boundary records). Only `log` stays open while the log lives: the boundaries are also held
//! in memory, and a boundary is written once per chunk of the log (or when a catch-up read pins
//! one), so `chunks` is opened for each such write, fsync or cut and closed again. A server
//! then needs one descriptor a shape, not two, and holds twice as many shapes within the same
//! open-file limit. Writers append and call [`ShapeLog::sync`]; readers only ever see data that
//! `sync` has made durable, so a response can never show something a crash could take back.
//! What was written since the last sync is also kept in memory while it is small, so that the
//! replication driver can make many logs durable with one write to the storage journal (see
//! [`super::journal`]) instead of an fsync of each, and so that live readers waiting at the
//! head are served the newest messages without reading them back from the file (the *tail*).
//!
//! The log places every boundary itself: after any operation, once the open chunk holds
//! `chunk_bytes` of response body (each message's JSON and its separating comma), so every
//! response stays within about `chunk_bytes` however large a transaction is. A transaction may
//! therefore span several responses; only the one holding its last operation (the message with
//! `last: true`) carries it to its end, and `up-to-date` is only ever sent at a transaction's end.
//! A boundary inside a transaction is labelled with the offset of the operation before it, and a
//! read after that offset resumes right after that operation (see [`resume_point`]).
//!
//! A non-live read at offset `o` returns the entries after `o` up to the first boundary after `o`.
//! If the read reaches the open end of the log it *pins* a boundary there (durably, before
//! answering), so the same request is answered with the same entries forever after. Such a
//! response ends with `up-to-date` only while its boundary is still the log's head; once more is
//! logged, the same entries are served without it, so the reader goes on reading.

use super::record::*;
use super::replica::{FileOp, ShapeFile, WriteSink};
use ferrite_protocol::offset::LogOffset;
use parking_lot::{Mutex, RwLock};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// What a reader gets for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSlice {
    /// The messages, JSON texts joined by `,` (no surrounding brackets).
    pub body: Vec<u8>,
    /// Number of messages in `body`.
    pub count: usize,
    /// End position in `body` of each message (SSE sends them one by one).
    pub item_ends: Vec<usize>,
    /// Offset the client continues from (`electric-offset`).
    pub end: LogOffset,
    /// Whether the response ends with an `up-to-date` control message.
    pub up_to_date: bool,
    /// `global_last_seen_lsn` recorded with the boundary when it was pinned (0 when not
    /// pinned); the head's up-to-date is reported with the server's LSN at the time of reading.
    pub lsn: u64,
}

/// Outcome of [`ShapeLog::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Entries (or a boundary) after the requested offset.
    Data(LogSlice),
    /// Nothing after the offset yet: the reader is at the durable head.
    AtHead,
    /// The snapshot has not produced the chunk the reader needs yet.
    NotReady,
}

struct Inner {
    /// Bytes written to `log` (durable or not).
    end_pos: u64,
    /// Offset of the last written entry.
    end_offset: LogOffset,
    /// Bytes made durable by the last sync (readers see up to here).
    durable_pos: u64,
    durable_offset: LogOffset,
    /// Durable boundaries, in order.
    boundaries: Vec<Boundary>,
    /// Boundaries written since the last sync.
    pending: Vec<Boundary>,
    bytes_since_boundary: u64,
    dirty: bool,
    /// The snapshot is finished and spliced; readers may go past its chunks.
    snapshot_complete: bool,
    /// Set by [`ShapeLog::complete_snapshot`], published to readers by the next sync together
    /// with the transactions spliced in after the snapshot.
    snapshot_complete_pending: bool,
    /// What was written since the last sync, while small (see [`Recent`]).
    recent: Recent,
    /// How much of `log` and how many boundary records of `chunks` the replication sink has
    /// (a cluster's leader: see [`super::replica`]); unused without a sink.
    published: Published,
}

/// How much of a log's two files a [`WriteSink`] has taken: `log` bytes and `chunks` records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    log_pos: u64,
    boundaries: usize,
}

/// The bytes written to a log since its last sync, copied while they stay under
/// [`RECENT_MAX_BYTES`]: the journal entry that can make them durable, and the makings of the
/// next [`Tail`].
#[derive(Default)]
struct Recent {
    /// Too much was written (or a write the copy cannot follow): the log must be fsynced.
    overflowed: bool,
    /// Something other than whole live transactions was written (snapshot rows, a boundary):
    /// the next sync leaves no tail.
    no_tail: bool,
    /// `log` bytes from the durable end on.
    log: Vec<u8>,
    /// Position in `chunks` of the first boundary written since the sync, and the boundaries'
    /// bytes from there.
    chunks_pos: u64,
    chunks: Vec<u8>,
}

/// Copies of unsynced bytes stop above this (the journal is for the many small appends of live
/// changes; a snapshot or a large transaction is fsynced where it lies).
const RECENT_MAX_BYTES: usize = 64 * 1024;
/// A tail is kept only for messages up to this size: every shape keeps its last one until the
/// next change, and most live changes are a row or two.
const TAIL_MAX_BYTES: usize = 4 * 1024;

/// The messages of one sync, kept for live readers: what a read after `after` would return.
///
/// Every live reader waiting at `after` is woken by that sync and answered from the same tail,
/// so what they are answered with is built once and kept here too (see [`Tail::shared`]): the
/// hundredth reader of a change gets bytes the first one built.
pub struct Tail {
    after: LogOffset,
    slice: LogSlice,
    /// What the HTTP layer builds from this tail for its readers (its own type; see
    /// [`Tail::shared`]).
    shared: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail").field("after", &self.after).field("slice", &self.slice).finish_non_exhaustive()
    }
}

impl Tail {
    /// The messages: what a live read after the tail's offset returns.
    pub fn slice(&self) -> &LogSlice {
        &self.slice
    }

    /// A value of type `T` kept with this tail, made on first use: the HTTP layer keeps the
    /// responses it built from the tail there, for the other readers woken by the same sync.
    /// (One type per tail: `None` when another type took the place first.)
    pub fn shared<T: std::any::Any + Send + Sync + Default>(&self) -> Option<&T> {
        self.shared.get_or_init(|| Box::new(T::default())).downcast_ref()
    }
}

/// What makes a log's unsynced writes durable through the storage journal: the bytes and where
/// they go (see [`ShapeLog::journal_entry`]).
#[derive(Debug, Clone)]
pub struct JournalEntry {
    /// Position in `log` of `log_bytes`.
    pub log_pos: u64,
    pub log_bytes: Vec<u8>,
    /// Position in `chunks` of `chunks_bytes` (boundary records).
    pub chunks_pos: u64,
    pub chunks_bytes: Vec<u8>,
}

/// A shape's log. Cheap when idle: one file handle (`log`) and the boundary list.
pub struct ShapeLog {
    dir: PathBuf,
    chunk_bytes: u64,
    /// The entries file. Positioned reads and writes need no lock; `inner` orders them.
    log: File,
    inner: Mutex<Inner>,
    /// The messages the last sync made durable, for live readers at the head before it; always
    /// the tail of the current durable offset, or none (changed only with `inner` held, when the
    /// durable offset moves). Outside `inner` so that the many readers a sync wakes at once
    /// take a shared lock of their own rather than queueing for the log's.
    tail: RwLock<Option<Arc<Tail>>>,
    durable_tx: watch::Sender<LogOffset>,
    /// The directory's name, what the storage journal records for this log.
    dir_name: String,
    /// Where writes go before readers may see them, on a cluster's leader.
    sink: std::sync::OnceLock<Arc<dyn WriteSink>>,
}

impl ShapeLog {
    /// Creates an empty log in `dir` (which must exist).
    pub fn create(dir: &Path, chunk_bytes: u64) -> io::Result<ShapeLog> {
        let log = open_rw(&dir.join("log"), true)?;
        // Created empty now (recovery and the journal's replay expect it), then closed.
        drop(open_rw(&dir.join(CHUNKS_FILE), true)?);
        Ok(Self::from_parts(dir, chunk_bytes, log, 0, LogOffset::default(), vec![], 0, false))
    }

    /// Reopens a log after a restart or crash: drops anything after the last whole unit and any
    /// boundary beyond it. `snapshot_complete` comes from the shape's metadata.
    pub fn recover(dir: &Path, chunk_bytes: u64, snapshot_complete: bool) -> io::Result<ShapeLog> {
        let log = Self::open_existing(dir, chunk_bytes, snapshot_complete, Recovery::Cut)?;
        log.log.sync_data()?;
        if let Some(chunks) = log.open_chunks()? {
            chunks.sync_data()?;
        }
        Ok(log)
    }

    /// [`ShapeLog::recover`] without making the log durable: for a caller that recovers many
    /// logs and then makes the whole data directory durable at once (one `syncfs`, see
    /// `Registry::open`) before anything reads them. Two fsyncs per shape were most of a start
    /// with thousands of shapes.
    pub fn recover_unsynced(dir: &Path, chunk_bytes: u64, snapshot_complete: bool) -> io::Result<ShapeLog> {
        Self::open_existing(dir, chunk_bytes, snapshot_complete, Recovery::Cut)
    }

    /// Opens a cluster follower's copy of a log (see [`super::replica`]), whose snapshot is
    /// complete, without cutting anything: the rest of a unit may still be on its way.
    pub fn open_replica(dir: &Path, chunk_bytes: u64) -> io::Result<ShapeLog> {
        Self::open_existing(dir, chunk_bytes, true, Recovery::Keep)
    }

    fn open_existing(
        dir: &Path,
        chunk_bytes: u64,
        snapshot_complete: bool,
        recovery: Recovery,
    ) -> io::Result<ShapeLog> {
        let log = open_rw(&dir.join("log"), false)?;
        // Open only while recovering: dropped at the end of this function.
        let chunks = open_rw(&dir.join(CHUNKS_FILE), false)?;
        let mut raw = Vec::new();
        {
            let len = chunks.metadata()?.len();
            raw.resize(len as usize, 0);
            chunks.read_exact_at(&mut raw, 0)?;
        }
        let mut boundaries: Vec<Boundary> = raw.chunks(BOUNDARY_SIZE).map_while(Boundary::decode).collect();
        let file_len = log.metadata()?.len();
        boundaries.retain(|b| b.pos <= file_len);
        // Scan forward from the last boundary at a unit's end to find the last whole unit (a
        // boundary inside a unit may be followed by a torn rest of that unit).
        let anchor = boundaries.iter().rposition(|b| !b.mid_unit());
        let start = anchor.map_or(0, |i| boundaries[i].pos);
        let mut buf = vec![0u8; (file_len - start) as usize];
        log.read_exact_at(&mut buf, start)?;
        let mut pos = 0usize;
        let mut good_end = 0usize;
        let mut good_offset = anchor.map(|i| boundaries[i].offset).unwrap_or_default();
        // (end position, body bytes) of each record, to count the open chunk's bytes below.
        let mut records = vec![];
        while let Some(r) = decode_record(&buf[pos..]) {
            pos += r.len;
            records.push((start + pos as u64, r.json.len() as u64 + 1));
            if r.flags & FLAG_COMMIT != 0 {
                good_end = pos;
                good_offset = r.offset;
            }
        }
        let end_pos = start + good_end as u64;
        // Boundaries inside a unit that did not survive go with it.
        boundaries.retain(|b| b.pos <= end_pos);
        if recovery == Recovery::Cut {
            // Cut only what is to be cut: a cut to the same length still dirties the inode (its
            // times), which made each start's fsyncs several times slower. (What survived may
            // not have been durable yet — a crash after a write, before its sync — and is
            // served from now on: the caller makes it durable, see `recover`.)
            if file_len != end_pos {
                log.set_len(end_pos)?;
            }
            let chunks_len = (boundaries.len() * BOUNDARY_SIZE) as u64;
            if raw.len() as u64 != chunks_len {
                chunks.set_len(chunks_len)?;
            }
        }
        let mut end_offset = good_offset;
        if snapshot_complete && end_offset < LogOffset::SNAPSHOT_END {
            end_offset = LogOffset::SNAPSHOT_END;
        }
        let open_from = boundaries.last().map_or(0, |b| b.pos);
        let since = records.iter().filter(|&&(e, _)| e > open_from && e <= end_pos).map(|&(_, n)| n).sum();
        drop(chunks);
        Ok(Self::from_parts(dir, chunk_bytes, log, end_pos, end_offset, boundaries, since, snapshot_complete))
    }

    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        dir: &Path,
        chunk_bytes: u64,
        log: File,
        end_pos: u64,
        end_offset: LogOffset,
        boundaries: Vec<Boundary>,
        bytes_since_boundary: u64,
        snapshot_complete: bool,
    ) -> ShapeLog {
        let (durable_tx, _) = watch::channel(end_offset);
        let boundaries_len = boundaries.len();
        ShapeLog {
            dir: dir.to_path_buf(),
            dir_name: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            chunk_bytes: chunk_bytes.max(1),
            log,
            inner: Mutex::new(Inner {
                end_pos,
                end_offset,
                durable_pos: end_pos,
                durable_offset: end_offset,
                boundaries,
                pending: vec![],
                bytes_since_boundary,
                dirty: false,
                snapshot_complete,
                snapshot_complete_pending: snapshot_complete,
                recent: Recent::default(),
                published: Published { log_pos: end_pos, boundaries: boundaries_len },
            }),
            tail: RwLock::new(None),
            durable_tx,
            sink: std::sync::OnceLock::new(),
        }
    }

    /// The directory holding this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The name of the directory holding this log (what the storage journal records).
    pub fn dir_name(&self) -> &str {
        &self.dir_name
    }

    /// Offset of the last durable entry (`0_inf` for a finished snapshot with no changes yet).
    pub fn durable_offset(&self) -> LogOffset {
        self.inner.lock().durable_offset
    }

    /// Offset of the last entry written (durable or not).
    pub fn end_offset(&self) -> LogOffset {
        self.inner.lock().end_offset
    }

    /// Highest transaction LSN written (durable or not): replay skips transactions at or below it.
    pub fn last_written_tx(&self) -> u64 {
        self.inner.lock().end_offset.tx
    }

    /// Bytes in the log file.
    #[cfg(test)]
    pub fn size_bytes(&self) -> u64 {
        self.inner.lock().end_pos
    }

    /// The convergence digest the log's last message carrying one holds (`ferrite_digest`: a
    /// transaction's last message, or `snapshot-end`), read back from the file chunk by chunk
    /// from its end; `None` when no message has one (a shape logged before digests existed).
    pub fn last_digest(&self) -> io::Result<Option<ferrite_protocol::digest::Digest>> {
        const HEADER: &[u8] = b"\"ferrite_digest\":\"";
        let (mut end, starts): (u64, Vec<u64>) = {
            let inner = self.inner.lock();
            let mut starts: Vec<u64> = inner.boundaries.iter().map(|b| b.pos).filter(|&p| p < inner.end_pos).collect();
            starts.insert(0, 0);
            starts.dedup();
            (inner.end_pos, starts)
        };
        for &start in starts.iter().rev() {
            if start >= end {
                continue;
            }
            let mut buf = vec![0u8; (end - start) as usize];
            self.log.read_exact_at(&mut buf, start)?;
            let mut pos = 0usize;
            let mut found = None;
            while let Some(r) = decode_record(&buf[pos..]) {
                pos += r.len;
                // The header is always the message's last (right before the closing `}}`), so a
                // column of that name in a row's value is never taken for it.
                if let Some(at) = r.json.windows(HEADER.len()).rposition(|w| w == HEADER) {
                    let rest = &r.json[at + HEADER.len()..];
                    let text = rest
                        .iter()
                        .position(|&b| b == b'"')
                        .filter(|&n| &rest[n..] == b"\"}}")
                        .and_then(|n| std::str::from_utf8(&rest[..n]).ok());
                    found = text.and_then(ferrite_protocol::digest::Digest::parse).or(found);
                }
            }
            if found.is_some() {
                return Ok(found);
            }
            end = start;
        }
        Ok(None)
    }

    /// Watch the durable offset: live readers wait on it.
    pub fn subscribe(&self) -> watch::Receiver<LogOffset> {
        self.durable_tx.subscribe()
    }

    /// Appends one stream transaction's messages for this shape (a unit: recovery keeps it whole
    /// or drops it). A boundary goes after any message once the open chunk has reached
    /// `chunk_bytes` — except right after a message at op 0 that is not the transaction's last:
    /// `<lsn>_0` is what SSE clients resume at, meaning "after that whole transaction", so no
    /// boundary inside a transaction may be labelled with it (the chunk takes one more message).
    pub fn append(&self, entries: &[(LogOffset, &[u8])]) -> io::Result<()> {
        let n = entries.len();
        self.write_unit(entries.iter().enumerate().map(|(i, &(offset, json))| {
            let last = i + 1 == n;
            let may_close = last || offset.op != 0 || offset.tx == 0;
            (offset, json, if last { FLAG_COMMIT } else { 0 }, may_close)
        }))?;
        Ok(())
    }

    /// Appends rows of the initial snapshot. The rows of chunk `k` are labelled `0_k` (the
    /// offset a client holds after reading that chunk); a chunk is closed after any row once it
    /// has reached `chunk_bytes`. Each row is a unit of its own (an unfinished snapshot is thrown
    /// away on restart anyway). Returns true if a chunk was closed: the caller syncs, so readers
    /// waiting for it can go on.
    pub fn append_snapshot(&self, rows: &[&[u8]]) -> io::Result<bool> {
        let mut inner = self.inner.lock();
        inner.recent.no_tail = true;
        let mut k = (inner.boundaries.len() + inner.pending.len()) as u64;
        let mut buf = Vec::with_capacity(rows.iter().map(|r| r.len() + RECORD_HEADER + PAYLOAD_FIXED).sum());
        let mut closed = vec![];
        let mut since = inner.bytes_since_boundary;
        for row in rows {
            encode_record(&mut buf, LogOffset::snapshot_chunk(k), FLAG_COMMIT, row);
            since += row.len() as u64 + 1;
            if since >= self.chunk_bytes {
                closed.push(Boundary {
                    offset: LogOffset::snapshot_chunk(k),
                    pos: inner.end_pos + buf.len() as u64,
                    lsn: 0,
                    flags: 0,
                });
                since = 0;
                k += 1;
            }
        }
        self.write_locked(&mut inner, &buf, since, &closed)?;
        if !rows.is_empty() {
            // The last row is in chunk `k`, unless it closed chunk `k - 1`.
            inner.end_offset = match closed.last() {
                Some(b) if b.pos == inner.end_pos => b.offset,
                _ => LogOffset::snapshot_chunk(k),
            };
        }
        Ok(!closed.is_empty())
    }

    /// Closes the snapshot's open chunk, if it holds anything (the caller then completes the
    /// snapshot: its last chunk holds the `snapshot-end` message).
    pub fn close_snapshot_chunk(&self) -> io::Result<()> {
        let mut inner = self.inner.lock();
        let last_pos = inner.pending.last().or(inner.boundaries.last()).map_or(0, |b| b.pos);
        if inner.end_pos == last_pos {
            return Ok(());
        }
        let k = (inner.boundaries.len() + inner.pending.len()) as u64;
        let b = Boundary { offset: LogOffset::snapshot_chunk(k), pos: inner.end_pos, lsn: 0, flags: 0 };
        self.write_boundaries(&mut inner, &[b])?;
        inner.end_offset = inner.end_offset.max(b.offset);
        inner.dirty = true;
        inner.recent.no_tail = true;
        Ok(())
    }

    /// Writes one unit's records, closing a chunk after a record when it is allowed to
    /// (`may_close`) and the open chunk has reached `chunk_bytes`.
    fn write_unit<'a>(&self, records: impl Iterator<Item = (LogOffset, &'a [u8], u8, bool)>) -> io::Result<()> {
        let mut inner = self.inner.lock();
        let mut buf = Vec::new();
        let mut closed = vec![];
        let mut since = inner.bytes_since_boundary;
        let mut last_offset = None;
        for (offset, json, flags, may_close) in records {
            encode_record(&mut buf, offset, flags, json);
            since += json.len() as u64 + 1;
            last_offset = Some(offset);
            if may_close && since >= self.chunk_bytes {
                let mid = if flags & FLAG_COMMIT == 0 { BOUNDARY_MID_UNIT } else { 0 };
                closed.push(Boundary { offset, pos: inner.end_pos + buf.len() as u64, lsn: 0, flags: mid });
                since = 0;
            }
        }
        let Some(last_offset) = last_offset else {
            return Ok(());
        };
        self.write_locked(&mut inner, &buf, since, &closed)?;
        inner.end_offset = last_offset;
        Ok(())
    }

    /// Writes `buf` at the end of the log, then the boundaries placed inside it.
    ///
    /// All or nothing: when a write fails half way (the disk is full: `ENOSPC`), both files are
    /// cut back to where they ended before and nothing in memory moves, so the log is exactly
    /// as before the unit and the same unit can be written again later (the replication driver
    /// replays it from the slot's confirmed position). Without the cut, a partial unit would lie
    /// past the log's end, for a later shorter write to leave its rest behind.
    fn write_locked(&self, inner: &mut Inner, buf: &[u8], since: u64, closed: &[Boundary]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.log.write_all_at(buf, inner.end_pos) {
            self.cut_back(inner);
            return Err(e);
        }
        if let Err(e) = self.write_boundaries(inner, closed) {
            self.cut_back(inner);
            return Err(e);
        }
        inner.end_pos += buf.len() as u64;
        inner.dirty = true;
        let recent = &mut inner.recent;
        if !recent.overflowed && recent.log.len() + buf.len() <= RECENT_MAX_BYTES {
            recent.log.extend_from_slice(buf);
        } else {
            recent.overflowed = true;
            recent.log = Vec::new();
        }
        inner.bytes_since_boundary = since;
        Ok(())
    }

    /// Cuts `log` and `chunks` back to the ends `inner` records, after a write that failed half
    /// way. Cutting frees space rather than taking it, so it works on a full disk; should it fail
    /// anyway, recovery cuts the torn rest on the next start (it ends at the last whole unit).
    fn cut_back(&self, inner: &Inner) {
        let chunks = ((inner.boundaries.len() + inner.pending.len()) * BOUNDARY_SIZE) as u64;
        let log = self.log.set_len(inner.end_pos);
        let chunks = self.open_chunks().and_then(|f| f.map_or(Ok(()), |f| f.set_len(chunks)));
        if let Err(e) = log.and(chunks) {
            tracing::error!(dir = %self.dir.display(), error = %e, "could not cut a shape log back after a failed write");
        }
    }

    /// Marks the initial snapshot finished: after the next sync the open end of the log is
    /// readable.
    pub fn complete_snapshot(&self) {
        let mut inner = self.inner.lock();
        inner.recent.no_tail = true;
        inner.snapshot_complete_pending = true;
        if inner.end_offset < LogOffset::SNAPSHOT_END {
            inner.end_offset = LogOffset::SNAPSHOT_END;
        }
        inner.dirty = true;
    }

    /// Writes boundaries (in log order) to the `chunks` file; they become visible to readers
    /// with the next sync, together with the entries before them. The file is closed again
    /// right after: the sync that makes them durable opens it once more (see
    /// [`ShapeLog::open_chunks`]).
    fn write_boundaries(&self, inner: &mut Inner, bs: &[Boundary]) -> io::Result<()> {
        if bs.is_empty() {
            return Ok(());
        }
        let at = ((inner.boundaries.len() + inner.pending.len()) * BOUNDARY_SIZE) as u64;
        let raw: Vec<u8> = bs.iter().flat_map(|b| b.encode()).collect();
        if let Some(chunks) = self.open_chunks()? {
            if let Err(e) = chunks.write_all_at(&raw, at) {
                // Nothing half written stays behind (see `write_locked`).
                let _ = chunks.set_len(at);
                return Err(e);
            }
        }
        inner.pending.extend_from_slice(bs);
        inner.bytes_since_boundary = 0;
        let recent = &mut inner.recent;
        recent.no_tail = true;
        if recent.chunks.is_empty() {
            recent.chunks_pos = at;
        }
        if recent.chunks_pos + recent.chunks.len() as u64 == at {
            recent.chunks.extend_from_slice(&raw);
        } else {
            recent.overflowed = true;
        }
        Ok(())
    }

    /// Makes everything written so far durable and visible to readers.
    /// `fsync_files = false` is for callers that already synced the whole filesystem.
    pub fn sync(&self, fsync_files: bool) -> io::Result<()> {
        if let Some(sink) = self.sink.get() {
            // To the other nodes first, without holding the log (readers take it): the sync
            // below finds nothing left to send unless a writer slipped in meanwhile.
            loop {
                let (ops, upto) = {
                    let inner = self.inner.lock();
                    if !inner.dirty {
                        return Ok(());
                    }
                    self.unpublished_locked(&inner)?
                };
                if ops.is_empty() {
                    break;
                }
                sink.publish(ops)?;
                self.mark_published(upto);
            }
        }
        let mut inner = self.inner.lock();
        if !inner.dirty {
            return Ok(());
        }
        self.sync_locked(&mut inner, fsync_files)?;
        let offset = inner.durable_offset;
        drop(inner);
        self.durable_tx.send_replace(offset);
        Ok(())
    }

    fn sync_locked(&self, inner: &mut Inner, fsync_files: bool) -> io::Result<()> {
        if let Some(sink) = self.sink.get() {
            // What readers are about to see goes to the other nodes first. (It went already on
            // every path — the driver's, many logs at once, see `unpublished`; `sync`'s — but
            // for what a writer added since, sent here holding the log.)
            let (ops, upto) = self.unpublished_locked(inner)?;
            if !ops.is_empty() {
                sink.publish(ops)?;
                inner.published = upto;
            }
        }
        if fsync_files {
            self.log.sync_data()?;
            if !inner.pending.is_empty() {
                if let Some(chunks) = self.open_chunks()? {
                    chunks.sync_data()?;
                }
            }
        }
        let pending = std::mem::take(&mut inner.pending);
        inner.boundaries.extend(pending);
        let recent = std::mem::take(&mut inner.recent);
        *self.tail.write() = (inner.snapshot_complete && inner.snapshot_complete_pending)
            .then(|| Tail::of(recent, inner.durable_offset, inner.end_offset))
            .flatten()
            .map(Arc::new);
        inner.durable_pos = inner.end_pos;
        inner.durable_offset = inner.end_offset;
        inner.snapshot_complete = inner.snapshot_complete_pending;
        inner.dirty = false;
        Ok(())
    }

    /// Takes in what the shape stream added to a follower's copy since the last call: the new
    /// whole units of `log` and the boundaries of `chunks` up to them, which become visible to
    /// readers (live ones are woken). A unit still partly on its way waits for its rest.
    /// Returns whether anything became visible.
    pub fn follow_replica(&self) -> io::Result<bool> {
        let mut inner = self.inner.lock();
        let known = inner.boundaries.len();
        // A `stat` of the file first: it is opened only when the stream brought boundaries.
        let records = match std::fs::metadata(self.dir.join(CHUNKS_FILE)) {
            Ok(m) => m.len() as usize / BOUNDARY_SIZE,
            // The shape was removed meanwhile: nothing more to take in.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !self.dir.exists() => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut fresh = vec![];
        if let Some(chunks) = self.open_chunks()?.filter(|_| records > known) {
            let mut raw = vec![0u8; (records - known) * BOUNDARY_SIZE];
            chunks.read_exact_at(&mut raw, (known * BOUNDARY_SIZE) as u64)?;
            fresh = raw.chunks(BOUNDARY_SIZE).map_while(Boundary::decode).collect();
        }
        let file_len = self.log.metadata()?.len();
        let (mut end_pos, mut end_offset) = (inner.end_pos, inner.end_offset);
        if file_len > end_pos {
            let mut buf = vec![0u8; (file_len - end_pos) as usize];
            self.log.read_exact_at(&mut buf, end_pos)?;
            let (mut pos, mut good_end) = (0usize, 0usize);
            while let Some(r) = decode_record(&buf[pos..]) {
                pos += r.len;
                if r.flags & FLAG_COMMIT != 0 {
                    good_end = pos;
                    end_offset = end_offset.max(r.offset);
                }
            }
            end_pos += good_end as u64;
        }
        let fresh: Vec<Boundary> = fresh.into_iter().take_while(|b| b.pos <= end_pos).collect();
        if fresh.is_empty() && end_pos == inner.end_pos {
            return Ok(false);
        }
        inner.boundaries.extend(fresh);
        // The open chunk's body bytes, as the writer would count them.
        let open_from = inner.boundaries.last().map_or(0, |b| b.pos);
        let mut since = 0;
        if end_pos > open_from {
            let mut buf = vec![0u8; (end_pos - open_from) as usize];
            self.log.read_exact_at(&mut buf, open_from)?;
            let mut pos = 0;
            while let Some(r) = decode_record(&buf[pos..]) {
                pos += r.len;
                since += r.json.len() as u64 + 1;
            }
        }
        inner.bytes_since_boundary = since;
        inner.end_pos = end_pos;
        inner.durable_pos = end_pos;
        inner.end_offset = end_offset;
        inner.durable_offset = end_offset;
        inner.published = Published { log_pos: end_pos, boundaries: inner.boundaries.len() };
        *self.tail.write() = None;
        drop(inner);
        self.durable_tx.send_replace(end_offset);
        Ok(true)
    }

    /// Whether a read after `after` ends at a boundary already placed (a chunk that every node
    /// answers the same), rather than at the open end, where a read pins a new one.
    pub fn has_chunk_after(&self, after: LogOffset) -> bool {
        let after = resume_point(after);
        let inner = self.inner.lock();
        inner.boundaries.last().is_some_and(|b| b.offset > after)
    }

    /// Cuts the files after the last whole unit and boundary taken in (a follower's copy that
    /// becomes the leader's: a unit that never arrived whole is dropped, as recovery would).
    pub fn cut_to_end(&self) -> io::Result<()> {
        let inner = self.inner.lock();
        self.log.set_len(inner.end_pos)?;
        self.log.sync_data()?;
        match self.open_chunks()? {
            Some(chunks) => {
                chunks.set_len((inner.boundaries.len() * BOUNDARY_SIZE) as u64)?;
                chunks.sync_data()
            }
            None => Ok(()),
        }
    }

    /// Sends every later write of this log to `sink` before readers see it (a node taking over
    /// a cluster's leadership). The files as they are now are what the other nodes hold, after
    /// [`ShapeLog::replica_baseline`].
    pub fn replicate_to(&self, sink: Arc<dyn WriteSink>) {
        let _ = self.sink.set(sink);
    }

    /// The files' lengths as ops: what a recovered log was cut to, for the other nodes to cut
    /// their copies the same way.
    pub fn replica_baseline(&self) -> Vec<FileOp> {
        let inner = self.inner.lock();
        let dir = self.dir_name.clone();
        let chunks = ((inner.boundaries.len() + inner.pending.len()) * BOUNDARY_SIZE) as u64;
        vec![
            FileOp::SetLen { dir: dir.clone(), file: ShapeFile::Log, len: inner.end_pos },
            FileOp::SetLen { dir, file: ShapeFile::Chunks, len: chunks },
        ]
    }

    /// The writes the sink has not taken yet, and how far they reach: the replication driver
    /// sends those of all the logs of a batch at once, then tells each log with
    /// [`ShapeLog::mark_published`], so its sync has nothing left to send.
    pub fn unpublished(&self) -> io::Result<(Vec<FileOp>, Published)> {
        let inner = self.inner.lock();
        self.unpublished_locked(&inner)
    }

    /// Records that the sink holds the writes [`ShapeLog::unpublished`] returned with `upto`.
    pub fn mark_published(&self, upto: Published) {
        let mut inner = self.inner.lock();
        inner.published.log_pos = inner.published.log_pos.max(upto.log_pos);
        inner.published.boundaries = inner.published.boundaries.max(upto.boundaries);
    }

    fn unpublished_locked(&self, inner: &Inner) -> io::Result<(Vec<FileOp>, Published)> {
        let upto = Published { log_pos: inner.end_pos, boundaries: inner.boundaries.len() + inner.pending.len() };
        let mut ops = Vec::new();
        let from = inner.published;
        if upto.log_pos > from.log_pos {
            let mut bytes = vec![0u8; (upto.log_pos - from.log_pos) as usize];
            self.log.read_exact_at(&mut bytes, from.log_pos)?;
            ops.push(FileOp::Write { dir: self.dir_name.clone(), file: ShapeFile::Log, pos: from.log_pos, bytes });
        }
        if upto.boundaries > from.boundaries {
            // The records as `chunks` holds them, from memory (where they are kept in file
            // order, the durable ones then those written since the sync): no need to open it.
            let pos = (from.boundaries * BOUNDARY_SIZE) as u64;
            let bytes: Vec<u8> =
                inner.boundaries.iter().chain(&inner.pending).skip(from.boundaries).flat_map(|b| b.encode()).collect();
            debug_assert_eq!(bytes.len(), (upto.boundaries - from.boundaries) * BOUNDARY_SIZE);
            ops.push(FileOp::Write { dir: self.dir_name.clone(), file: ShapeFile::Chunks, pos, bytes });
        }
        Ok((ops, upto))
    }

    /// The log's writes since its last sync as a journal entry, or `None` when there are none
    /// or they were too large to copy (then [`ShapeLog::sync`] with `fsync_files` it is). After
    /// the entry is durable in the journal, [`ShapeLog::sync_journaled`] publishes it.
    pub fn journal_entry(&self) -> Option<(JournalEntry, LogOffset)> {
        let inner = self.inner.lock();
        if !inner.dirty || inner.recent.overflowed {
            return None;
        }
        let entry = JournalEntry {
            log_pos: inner.durable_pos,
            log_bytes: inner.recent.log.clone(),
            chunks_pos: inner.recent.chunks_pos,
            chunks_bytes: inner.recent.chunks.clone(),
        };
        Some((entry, inner.end_offset))
    }

    /// Publishes writes made durable by the journal entry [`ShapeLog::journal_entry`] returned
    /// when the log's end was `end`. Anything written after that entry is fsynced here first
    /// (the journal does not hold it).
    pub fn sync_journaled(&self, end: LogOffset) -> io::Result<()> {
        let mut inner = self.inner.lock();
        if !inner.dirty {
            return Ok(());
        }
        let fsync = inner.end_offset != end;
        self.sync_locked(&mut inner, fsync)?;
        let offset = inner.durable_offset;
        drop(inner);
        self.durable_tx.send_replace(offset);
        Ok(())
    }

    /// Opens the `chunks` file for one write, fsync, cut or read; the caller drops it right
    /// after, so an idle log holds only `log` open.
    ///
    /// An fsync through this new descriptor makes durable what one opened earlier wrote (both
    /// are the same file's pages), and a write-back error that nobody has seen yet is reported
    /// to a descriptor opened after it (Linux 4.16 on), so boundaries are as durable as when
    /// one descriptor was kept open for all of it.
    ///
    /// `None` when the shape's directory is gone: the shape was removed (its files are deleted
    /// on another thread) while a writer or reader still held it. A descriptor kept open
    /// would have written into the deleted file without complaint; so the boundary is kept in
    /// memory only, rather than failing the writer (the replication driver would retry the
    /// batch forever).
    fn open_chunks(&self) -> io::Result<Option<File>> {
        match open_rw(&self.dir.join(CHUNKS_FILE), false) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !self.dir.exists() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Raw fd of the log file, for `syncfs` batching.
    pub fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.log.as_raw_fd()
    }

    /// Reads the entries after `after` (`None` = from the very start; see [`resume_point`] for
    /// what an offset inside a transaction means), up to the next boundary.
    /// `pin` (non-live requests) makes a read that reaches the open end fix a boundary there.
    /// `head_lsn` is the `global_last_seen_lsn` to record with a pinned boundary.
    pub fn read(&self, after: Option<LogOffset>, pin: bool, head_lsn: u64) -> io::Result<ReadOutcome> {
        let after = after.map(resume_point);
        let (start_pos, boundary) = {
            let mut inner = self.inner.lock();
            let idx = match after {
                None => 0,
                Some(o) => inner.boundaries.partition_point(|b| b.offset <= o),
            };
            let start_pos = if idx == 0 { 0 } else { inner.boundaries[idx - 1].pos };
            if let Some(b) = inner.boundaries.get(idx) {
                // A boundary pinned when it was the head says "up-to-date" only while it still
                // is: a reader arriving after more was logged continues past it instead of
                // being told it has everything. (The entries served stay the same.)
                let mut b = *b;
                if b.offset < inner.durable_offset {
                    b.flags &= !BOUNDARY_UP_TO_DATE;
                }
                (start_pos, b)
            } else if !inner.snapshot_complete {
                return Ok(ReadOutcome::NotReady);
            } else if after.is_some_and(|o| inner.end_offset <= o) {
                return Ok(ReadOutcome::AtHead);
            } else {
                if pin && inner.dirty {
                    // Pin only durable data, and keep boundaries in file order: make everything
                    // written so far durable first (the writer appends whole units under this
                    // lock, so the end is always at a unit boundary).
                    self.sync_locked(&mut inner, true)?;
                    self.durable_tx.send_replace(inner.durable_offset);
                }
                if after.is_some_and(|o| inner.durable_offset <= o) {
                    return Ok(ReadOutcome::AtHead);
                }
                let b = Boundary {
                    offset: inner.durable_offset,
                    pos: inner.durable_pos,
                    lsn: head_lsn,
                    flags: BOUNDARY_UP_TO_DATE,
                };
                let at = (inner.boundaries.len() * BOUNDARY_SIZE) as u64;
                let pinned = match pin {
                    false => false,
                    true => match self.open_chunks().and_then(|chunks| match chunks {
                        Some(chunks) => {
                            chunks.write_all_at(&b.encode(), at).and_then(|()| chunks.sync_data()).inspect_err(|_| {
                                let _ = chunks.set_len(at);
                            })
                        }
                        // The shape was removed: its readers are told so next.
                        None => Ok(()),
                    }) {
                        Ok(()) => true,
                        Err(e) => {
                            if !super::is_out_of_space(&e) {
                                return Err(e);
                            }
                            // The disk is full: what is durable is still served, without a
                            // boundary (a later read at the same offset may then reach further).
                            tracing::warn!(dir = %self.dir.display(), error = %e,
                                "the data directory is full: a catch-up response is served without pinning its end");
                            false
                        }
                    },
                };
                if pinned {
                    inner.boundaries.push(b);
                    inner.bytes_since_boundary = 0;
                    if let Some(sink) = self.sink.get() {
                        // The other nodes place it too, so every node answers this request
                        // the same. Not waited for: the entries are in the stream already,
                        // and a new leader that lacks the boundary still serves what follows
                        // its offset (it places its own); the stream keeps it ahead of every
                        // later boundary.
                        let (ops, upto) = self.unpublished_locked(&inner)?;
                        sink.publish_later(ops);
                        inner.published = upto;
                    }
                }
                (start_pos, b)
            }
        };
        let (body, count, item_ends) = self.read_messages(start_pos, boundary.pos, after)?;
        Ok(ReadOutcome::Data(LogSlice {
            body,
            count,
            item_ends,
            end: boundary.offset,
            up_to_date: boundary.up_to_date(),
            lsn: boundary.lsn,
        }))
    }

    /// Reads what follows `after` for live requests (long-poll and SSE): up to the durable head,
    /// without pinning boundaries (live responses are not cached for long), but never more than
    /// one chunk at a time.
    #[cfg(test)]
    pub fn read_live(&self, after: LogOffset) -> io::Result<ReadOutcome> {
        match self.live_span(after) {
            LiveSpan::Bytes(span) => self.read_span(span),
            LiveSpan::Tail(tail) => Ok(ReadOutcome::Data(tail.slice.clone())),
            LiveSpan::NotReady => Ok(ReadOutcome::NotReady),
            LiveSpan::AtHead => Ok(ReadOutcome::AtHead),
        }
    }

    /// Works out what [`ShapeLog::read_live`] would read, without reading it: callers read small
    /// spans (a reader at the head) in place and hand big ones to a blocking thread.
    pub fn live_span(&self, after: LogOffset) -> LiveSpan {
        let after = resume_point(after);
        // The readers a sync wakes at the head it left: served from the tail, without the log's
        // lock (a tail is only ever the current durable offset's, see `tail`).
        if let Some(tail) = self.tail.read().as_ref().filter(|t| t.after == after) {
            return LiveSpan::Tail(tail.clone());
        }
        let inner = self.inner.lock();
        if !inner.snapshot_complete {
            return LiveSpan::NotReady;
        }
        if inner.durable_offset <= after {
            return LiveSpan::AtHead;
        }
        let idx = inner.boundaries.partition_point(|b| b.offset <= after);
        let start = if idx == 0 { 0 } else { inner.boundaries[idx - 1].pos };
        // A reader far behind gets one chunk at a time, so memory stays bounded.
        LiveSpan::Bytes(match inner.boundaries.get(idx) {
            Some(b) if b.offset < inner.durable_offset => {
                Span { after, start, end: b.pos, end_offset: b.offset, up_to_date: false }
            }
            _ => Span { after, start, end: inner.durable_pos, end_offset: inner.durable_offset, up_to_date: true },
        })
    }

    /// Reads a span planned by [`ShapeLog::live_span`]. The bytes are durable, so they never
    /// change under the reader.
    pub fn read_span(&self, span: Span) -> io::Result<ReadOutcome> {
        let (body, count, item_ends) = self.read_messages(span.start, span.end, Some(span.after))?;
        Ok(ReadOutcome::Data(LogSlice {
            body,
            count,
            item_ends,
            end: span.end_offset,
            up_to_date: span.up_to_date,
            lsn: 0,
        }))
    }
}

impl ShapeLog {
    /// Reads the records in `start..end` (whole records, durable) and joins the JSON of those
    /// after `after` with `,`: the body, the message count and each message's end in the body.
    /// Hands the durable messages up to `upto` (as a read after `upto` would resume, see
    /// [`resume_point`]) to `each`, in log order, reading the file in pieces of about
    /// [`SCAN_PIECE_BYTES`] — the replay behind a relational shape's on-demand digest. An
    /// offset past the durable end (a reader at the head is given the head's position, e.g.
    /// `<lsn>_0`) covers everything durable. Stops early, without an error, when `each` returns
    /// `false`; an error when the bytes are damaged.
    pub fn scan(&self, upto: LogOffset, mut each: impl FnMut(LogOffset, &[u8]) -> io::Result<bool>) -> io::Result<()> {
        let upto = resume_point(upto);
        let end = self.inner.lock().durable_pos;
        let damaged = || io::Error::new(io::ErrorKind::InvalidData, "shape log is damaged");
        let (mut buf, mut start, mut pos) = (Vec::new(), 0usize, 0u64);
        loop {
            while let Some(r) = decode_record(&buf[start..]) {
                if r.offset > upto || !each(r.offset, r.json)? {
                    return Ok(());
                }
                start += r.len;
            }
            let pending = buf.len() - start;
            // The bytes the next record needs (its header says how many, once read).
            let needed = match buf.get(start..start + RECORD_HEADER) {
                Some(header) => RECORD_HEADER + u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize,
                None => RECORD_HEADER,
            };
            if pending >= needed || pos >= end {
                // A whole record that does not decode, or a torn one at the durable end.
                return if pending == 0 { Ok(()) } else { Err(damaged()) };
            }
            buf.drain(..start);
            start = 0;
            let want = (SCAN_PIECE_BYTES.max(needed - pending) as u64).min(end - pos) as usize;
            let at = buf.len();
            buf.resize(at + want, 0);
            self.log.read_exact_at(&mut buf[at..], pos)?;
            pos += want as u64;
        }
    }

    fn read_messages(
        &self,
        start: u64,
        end: u64,
        after: Option<LogOffset>,
    ) -> io::Result<(Vec<u8>, usize, Vec<usize>)> {
        let mut buf = vec![0u8; (end - start) as usize];
        self.log.read_exact_at(&mut buf, start)?;
        let mut body = Vec::with_capacity(buf.len());
        let mut count = 0;
        let mut item_ends = Vec::new();
        let mut pos = 0;
        while let Some(r) = decode_record(&buf[pos..]) {
            pos += r.len;
            if after.is_some_and(|o| r.offset <= o) {
                continue;
            }
            if count > 0 {
                body.push(b',');
            }
            body.extend_from_slice(r.json);
            item_ends.push(body.len());
            count += 1;
        }
        if pos != buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "shape log is damaged"));
        }
        Ok((body, count, item_ends))
    }
}

impl Tail {
    /// The tail a sync leaves: the messages written since the previous durable offset
    /// `after`, up to `end`, when they are whole live transactions small enough to keep.
    fn of(recent: Recent, after: LogOffset, end: LogOffset) -> Option<Tail> {
        if recent.overflowed || recent.no_tail || recent.log.is_empty() || recent.log.len() > TAIL_MAX_BYTES {
            return None;
        }
        let after = resume_point(after);
        let mut body = Vec::with_capacity(recent.log.len());
        let mut item_ends = Vec::new();
        let mut pos = 0;
        while let Some(r) = decode_record(&recent.log[pos..]) {
            pos += r.len;
            if r.offset <= after {
                // Not what a read after `after` returns (never expected: logs only grow).
                return None;
            }
            if !item_ends.is_empty() {
                body.push(b',');
            }
            body.extend_from_slice(r.json);
            item_ends.push(body.len());
        }
        if pos != recent.log.len() {
            return None;
        }
        let count = item_ends.len();
        Some(Tail {
            after,
            slice: LogSlice { body, count, item_ends, end, up_to_date: true, lsn: 0 },
            shared: std::sync::OnceLock::new(),
        })
    }
}

/// Where a read "after `o`" resumes.
///
/// Snapshot offsets (`0_k`, `0_inf`) and offsets inside a transaction other than `<lsn>_0` are
/// exact: after that operation. A boundary inside a transaction is labelled with the offset of
/// its last operation, so a reader resumes right after it and gets the rest of the transaction.
/// `<lsn>_0` is what SSE clients resume at after an `up-to-date` (`<global_last_seen_lsn>_0`);
/// `up-to-date` only ever follows whole transactions, and no boundary inside a transaction is
/// labelled `<lsn>_0` (see [`ShapeLog::append`]), so it means "after that whole transaction".
/// (At a transaction's end the two readings agree.)
pub fn resume_point(o: LogOffset) -> LogOffset {
    if o.tx > 0 && o.op == 0 {
        o.whole_transaction()
    } else {
        o
    }
}

/// What a live read will cover: see [`ShapeLog::live_span`].
#[derive(Debug, Clone)]
pub enum LiveSpan {
    /// These bytes of the log.
    Bytes(Span),
    /// The messages the last sync made durable, kept in memory (nothing to read), with what
    /// was built from them for the readers before.
    Tail(Arc<Tail>),
    /// The snapshot has not finished.
    NotReady,
    /// Nothing after the offset yet.
    AtHead,
}

/// A byte range of durable log entries for one live read.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    after: LogOffset,
    start: u64,
    end: u64,
    end_offset: LogOffset,
    up_to_date: bool,
}

impl Span {
    /// Bytes to read.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// How much of the log [`ShapeLog::scan`] reads at a time.
const SCAN_PIECE_BYTES: usize = 1 << 20;

/// The boundary records' file in a shape's directory.
const CHUNKS_FILE: &str = "chunks";

/// What opening an existing log does with a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// Cut it (after a restart or crash: it can never be completed).
    Cut,
    /// Keep it (a follower's copy, whose unit's rest may still arrive).
    Keep,
}

fn open_rw(path: &Path, create_new: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create_new {
        o.create(true).truncate(true);
    }
    o.open(path)
}

/// Flushes a directory entry (after creating or renaming files in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

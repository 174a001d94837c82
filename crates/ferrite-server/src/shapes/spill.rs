//! The queue of a relational shape: transactions that wait while its snapshot or a move-in
//! reads rows. Each is appended to a file in the shape's directory as it arrives, so a long wait
//! costs disk rather than memory and the queue survives a restart; they are read back in order,
//! at most [`MEMORY_WINDOW`] of them held in memory at a time. Only their xids and LSNs stay in
//! memory for all of them (what splicing by visibility looks at).
//!
//! File format: records of `[payload length: u32 LE][crc32 of payload: u32 LE][payload: JSON of
//! a QueuedTxn]`. A torn or corrupt record at the tail (a crash while appending) ends the queue
//! and is cut off when the file is reopened.

use super::relational::QueuedTxn;
use crate::storage::replica::{FileOp, ShapeFile, WriteSink};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many queued transactions are held in memory at most; the rest wait in the file.
pub const MEMORY_WINDOW: usize = 256;

/// The file in a shape's directory.
const QUEUE_FILE: &str = "queue.log";

/// A file-backed FIFO of transactions (see the module documentation).
pub struct SpillQueue {
    path: PathBuf,
    /// Open while transactions are queued or unsynced; closed when the queue is empty and
    /// durable (most of a relational shape's life), so an idle shape holds only its log open.
    file: Option<File>,
    /// Byte offset of the first transaction not yet taken.
    start: u64,
    /// Byte offset of the end of the last record.
    end: u64,
    /// Transactions read into memory: those from `start` up to `loaded_end`, each with the
    /// offset just after it.
    window: VecDeque<(QueuedTxn, u64)>,
    loaded_end: u64,
    /// xid and commit LSN of every queued transaction, in order.
    ids: VecDeque<(u32, u64)>,
    /// Appended to since the last sync.
    dirty: bool,
    /// On a cluster's leader: where the file's changes go before it is made durable, and the
    /// shape directory's name (see [`crate::storage::replica`]).
    sink: Option<(Arc<dyn WriteSink>, String)>,
    /// Bytes of the file the sink has.
    published: u64,
    /// The file was emptied since the sink last got its changes.
    cut: bool,
}

impl SpillQueue {
    /// An empty queue whose file (in `dir`) is created on the first push.
    pub fn new(dir: &Path) -> SpillQueue {
        SpillQueue {
            path: dir.join(QUEUE_FILE),
            file: None,
            start: 0,
            end: 0,
            window: VecDeque::new(),
            loaded_end: 0,
            ids: VecDeque::new(),
            dirty: false,
            sink: None,
            published: 0,
            cut: false,
        }
    }

    /// The queue as it was left in `dir`, starting at byte offset `start` (what a checkpoint
    /// recorded): records after a torn tail are cut off; a `start` beyond the file's end means
    /// the queue was emptied (and the file truncated) after the checkpoint.
    pub fn reopen(dir: &Path, start: u64) -> io::Result<SpillQueue> {
        let mut q = SpillQueue::new(dir);
        let mut file = match OpenOptions::new().read(true).write(true).open(&q.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(q),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if start >= len {
            file.set_len(0)?;
            return Ok(q);
        }
        let mut pos = start;
        file.seek(SeekFrom::Start(pos))?;
        let mut reader = io::BufReader::new(&file);
        while let Some((txn, size)) = read_record(&mut reader)? {
            pos += size;
            q.ids.push_back((txn.xid, txn.commit_lsn));
        }
        drop(reader);
        file.set_len(pos)?;
        q.start = start;
        q.end = pos;
        q.loaded_end = start;
        q.file = Some(file);
        q.release_if_idle();
        Ok(q)
    }

    /// Closes the file when nothing is queued and nothing unsynced: it is opened again on the
    /// next push (or read of what a sink still lacks).
    fn release_if_idle(&mut self) {
        if self.ids.is_empty() && !self.dirty {
            self.file = None;
        }
    }

    /// Appends a transaction.
    pub fn push(&mut self, txn: QueuedTxn) -> io::Result<()> {
        let payload = serde_json::to_vec(&txn).map_err(io::Error::other)?;
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let file = self.file()?;
        file.seek(SeekFrom::End(0))?;
        file.write_all(&record)?;
        let fully_loaded = self.loaded_end == self.end;
        self.end += record.len() as u64;
        self.ids.push_back((txn.xid, txn.commit_lsn));
        if fully_loaded && self.window.len() < MEMORY_WINDOW {
            self.window.push_back((txn, self.end));
            self.loaded_end = self.end;
        }
        self.dirty = true;
        Ok(())
    }

    /// Takes the first transaction, reading more from the file when the window is empty.
    pub fn pop(&mut self) -> io::Result<Option<QueuedTxn>> {
        if self.window.is_empty() && self.loaded_end < self.end {
            self.load()?;
        }
        let Some((txn, after)) = self.window.pop_front() else { return Ok(None) };
        self.ids.pop_front();
        self.start = after;
        Ok(Some(txn))
    }

    /// xid and commit LSN of every queued transaction, in order.
    pub fn ids(&self) -> &VecDeque<(u32, u64)> {
        &self.ids
    }

    /// Queued transactions.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Byte offset of the first queued transaction (for a checkpoint).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Commit LSN of the last transaction ever queued in the file, if any is left.
    pub fn last_lsn(&self) -> Option<u64> {
        self.ids.back().map(|(_, lsn)| *lsn)
    }

    /// Empties the file once nothing is queued (call after a checkpoint recorded that).
    pub fn reset_if_empty(&mut self) -> io::Result<()> {
        if self.is_empty() && self.end > 0 {
            match &self.file {
                Some(f) => f.set_len(0)?,
                None => match OpenOptions::new().write(true).open(&self.path) {
                    Ok(f) => f.set_len(0)?,
                    // The shape's directory went (the shape was removed): nothing to cut.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                },
            }
            self.cut = true;
            self.published = 0;
            self.start = 0;
            self.end = 0;
            self.loaded_end = 0;
            self.window.clear();
        }
        self.release_if_idle();
        Ok(())
    }

    /// Sends every later change of the file to `sink` before it is made durable (a cluster's
    /// leader; `dir` is the shape directory's name). Returns what the other nodes need to cut
    /// their copy as this one is (a reopened queue drops a torn tail).
    pub fn replicate_to(&mut self, sink: Arc<dyn WriteSink>, dir: &str) -> Vec<FileOp> {
        self.sink = Some((sink, dir.to_string()));
        self.published = self.end;
        self.cut = false;
        vec![FileOp::SetLen { dir: dir.to_string(), file: ShapeFile::Queue, len: self.end }]
    }

    /// The file's changes the sink does not have yet (see [`SpillQueue::replicate_to`]).
    fn unpublished(&mut self, dir: &str) -> io::Result<Vec<FileOp>> {
        let mut ops = Vec::new();
        if self.cut {
            ops.push(FileOp::SetLen { dir: dir.to_string(), file: ShapeFile::Queue, len: 0 });
        }
        if self.end > self.published {
            let (from, end) = (self.published, self.end);
            let mut bytes = vec![0u8; (end - from) as usize];
            let file = self.file()?;
            file.seek(SeekFrom::Start(from))?;
            file.read_exact(&mut bytes)?;
            ops.push(FileOp::Write { dir: dir.to_string(), file: ShapeFile::Queue, pos: from, bytes });
        }
        Ok(ops)
    }

    /// Makes what was appended durable (on a cluster's leader, sent to the other nodes first).
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some((sink, dir)) = self.sink.clone() {
            // Not waited for (its shape is locked): ahead of the checkpoint and the log units
            // that follow it in the stream, which are waited for.
            let ops = self.unpublished(&dir)?;
            if !ops.is_empty() {
                sink.publish_later(ops);
                self.published = self.end;
                self.cut = false;
            }
        }
        if self.dirty {
            if let Some(f) = &self.file {
                f.sync_data()?;
            }
            self.dirty = false;
        }
        self.release_if_idle();
        Ok(())
    }

    fn file(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path)?;
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("opened"))
    }

    /// Reads the next window of transactions from the file.
    fn load(&mut self) -> io::Result<()> {
        let mut pos = self.loaded_end;
        let end = self.end;
        let mut loaded = Vec::new();
        {
            let file = self.file()?;
            file.seek(SeekFrom::Start(pos))?;
            let mut reader = io::BufReader::new(&*file);
            while loaded.len() < MEMORY_WINDOW && pos < end {
                match read_record(&mut reader)? {
                    Some((txn, size)) => {
                        pos += size;
                        loaded.push((txn, pos));
                    }
                    None => {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "the shape's queue file is corrupt"))
                    }
                }
            }
        }
        self.window.extend(loaded);
        self.loaded_end = pos;
        Ok(())
    }
}

/// One record and its size in bytes; `None` at the end of the file or at a torn or corrupt
/// record.
fn read_record(reader: &mut impl Read) -> io::Result<Option<(QueuedTxn, u64)>> {
    let mut header = [0u8; 8];
    if !read_full(reader, &mut header)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let mut payload = vec![0u8; len];
    if !read_full(reader, &mut payload)? || crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    match serde_json::from_slice(&payload) {
        Ok(txn) => Ok(Some((txn, 8 + len as u64))),
        Err(_) => Ok(None),
    }
}

/// Fills `buf`; false when the input ends first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..])? {
            0 => return Ok(false),
            n => got += n,
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::relational::{ChangeKind, OwnedChange};

    fn txn(i: u64) -> QueuedTxn {
        QueuedTxn {
            xid: i as u32,
            commit_lsn: 100 + i,
            changes: vec![OwnedChange { index: 0, oid: 7, kind: ChangeKind::Insert(vec![Some(i.to_string())]) }],
        }
    }

    /// More transactions than the memory window come back in order, across a reopen at the
    /// recorded start, with a torn tail cut off.
    #[test]
    fn spills_and_reads_back_in_order_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = SpillQueue::new(dir.path());
        let n = (MEMORY_WINDOW * 3 + 7) as u64;
        for i in 0..n {
            q.push(txn(i)).unwrap();
        }
        assert_eq!(q.window.len(), MEMORY_WINDOW, "only a window is held in memory");
        for i in 0..10 {
            assert_eq!(q.pop().unwrap().unwrap().xid, i as u32);
        }
        q.sync().unwrap();
        let start = q.start();
        // A torn record at the tail, as a crash in the middle of an append leaves it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(QUEUE_FILE))
            .unwrap()
            .write_all(&[9, 0, 0])
            .unwrap();
        let mut q = SpillQueue::reopen(dir.path(), start).unwrap();
        assert_eq!(q.len() as u64, n - 10);
        assert_eq!(q.last_lsn(), Some(100 + n - 1));
        for i in 10..n {
            assert_eq!(q.pop().unwrap().unwrap().xid, i as u32);
        }
        assert!(q.pop().unwrap().is_none());
        q.reset_if_empty().unwrap();
        assert_eq!(std::fs::metadata(dir.path().join(QUEUE_FILE)).unwrap().len(), 0);
        assert!(q.file.is_none(), "an empty, durable queue holds no file open");
        // Appending again after emptying, and a checkpoint start beyond the file: empty.
        q.push(txn(1)).unwrap();
        assert!(SpillQueue::reopen(dir.path(), 1 << 20).unwrap().is_empty());
        // Taken and synced: closed again, and still cut when emptied.
        assert_eq!(q.pop().unwrap().unwrap().xid, 1);
        q.sync().unwrap();
        assert!(q.file.is_none());
        q.reset_if_empty().unwrap();
        assert_eq!(std::fs::metadata(dir.path().join(QUEUE_FILE)).unwrap().len(), 0);
        q.push(txn(2)).unwrap();
        assert_eq!(SpillQueue::reopen(dir.path(), 0).unwrap().len(), 1);
    }
}

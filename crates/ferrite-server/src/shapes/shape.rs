//! A live shape: its compiled filter, its log, and where it is in its life (snapshotting, ready).

use super::relational::Links;
use crate::storage::ShapeLog;
use ferrite_core::shape::{finish_transaction_with, PendingMessage, ShapeDefinition, ShapeFilter};
use ferrite_protocol::digest::Digest;
use ferrite_protocol::offset::LogOffset;
use ferrite_protocol::schema::TableSchema;
use ferrite_protocol::snapshot_info::SnapshotInfo;
use parking_lot::Mutex;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use tokio::sync::watch;

/// What a shape's metadata file holds; enough to reopen the shape after a restart.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ShapeMeta {
    /// The shape's handle (also its directory name).
    pub handle: String,
    /// The definition clients asked for.
    pub definition: ShapeDefinition,
    /// The table schema the shape was compiled against.
    pub table: TableSchema,
    /// Initial snapshot visibility, once taken.
    pub snapshot: Option<SnapshotInfo>,
    /// Whether the initial snapshot was completely written.
    pub complete: bool,
    /// The tables the where clause's subqueries read (a relational shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inner_tables: Vec<TableSchema>,
    /// The secret salt of the shape's tags (a relational shape).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag_salt: String,
}

/// A transaction's messages held back while the initial snapshot is being taken.
#[derive(Debug)]
pub struct BufferedTxn {
    /// 32-bit xid from the stream.
    pub xid: u32,
    /// Commit LSN.
    pub commit_lsn: u64,
    /// Messages for this shape.
    pub messages: Vec<PendingMessage>,
}

/// Where a shape is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Snapshot running; stream transactions wait here.
    Snapshotting {
        /// Transactions that arrived since the shape was registered with the router.
        buffer: Vec<BufferedTxn>,
    },
    /// Snapshot written; transactions go straight to the log unless the snapshot holds them.
    Ready(SnapshotInfo),
}

/// Why a shape stopped serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Rotated (truncate, schema change, DELETE, eviction): clients must refetch.
    Rotated,
    /// The initial snapshot failed.
    SnapshotFailed(String),
    /// The initial snapshot exceeded `max_shape_size` (the client must ask for less).
    TooLarge(String),
    /// The initial snapshot could not be written: the data directory is full (`ENOSPC`). The
    /// client is told to retry (503 + `retry-after`); nothing of the shape is kept.
    StorageFull(String),
}

/// One shape. Shared by the router (writer) and HTTP handlers (readers).
pub struct Shape {
    /// Process-local id for routing tables.
    pub id: u64,
    /// The handle clients hold.
    pub handle: String,
    /// The definition.
    pub definition: ShapeDefinition,
    /// The compiled filter.
    pub filter: ShapeFilter,
    /// The `electric-schema` header value.
    pub schema_header: String,
    /// The log.
    pub log: ShapeLog,
    /// Phase, guarded so that the snapshot-to-stream splice is atomic.
    pub phase: Mutex<Phase>,
    /// Unix seconds of the last request for this shape (idle expiry).
    pub last_used: AtomicU64,
    /// Position in the process-wide order of uses: least recently used first for eviction
    /// (seconds are too coarse to order shapes used within the same second).
    pub use_order: AtomicU64,
    /// Salt of the tags of a relational shape (empty otherwise).
    pub tag_salt: String,
    /// The live state of a relational shape (its where clause has subqueries), `None` for a
    /// plain one: see [`super::relational`].
    pub links: Option<Mutex<Links>>,
    /// See [`Shape::routed_by_value`]; fixed by the definition, so decided once.
    by_value: bool,
    /// Tables other than its own whose rows a relational shape is offered: those its deep
    /// subqueries read (see [`Shape::follows_rows_of`]).
    deep_reads: Vec<u32>,
    removed: watch::Sender<Option<Removal>>,
    /// The convergence digest of the shape's rows at the log's end (see [`DigestState`]).
    digest: Mutex<DigestState>,
}

/// Where a shape's convergence digest ([`ferrite_protocol::digest`]) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DigestState {
    /// Not read back from the log yet (a shape reopened after a restart): read at the next
    /// transaction.
    Unread,
    /// The digest after the last transaction appended.
    Known(Digest),
    /// The shape keeps none: relational, changes-only, or logged before digests existed.
    None,
}

impl Shape {
    /// Assembles a shape around an open log; `now_secs` (Unix seconds) counts as its last use.
    pub fn new(
        id: u64,
        handle: String,
        definition: ShapeDefinition,
        filter: ShapeFilter,
        log: ShapeLog,
        phase: Phase,
        now_secs: u64,
    ) -> Shape {
        let schema_header = ferrite_protocol::schema::electric_schema_header(&filter.table, &filter.selected);
        let (removed, _) = watch::channel(None);
        let links = Links::new(&filter, log.dir());
        let by_value = links.as_ref().is_some_and(Links::value_routed)
            && filter.where_clause.as_ref().and_then(|w| w.equality_index_term()).is_none();
        let deep: Vec<ferrite_where::Subquery> =
            filter.subqueries().iter().filter(|q| super::relational::is_deep(&filter, q)).cloned().collect();
        let deep_reads = ferrite_core::shape::subquery_tables(&deep).iter().map(|t| t.oid).collect();
        Shape {
            deep_reads,
            tag_salt: String::new(),
            links: links.map(Mutex::new),
            by_value,
            id,
            handle,
            definition,
            filter,
            schema_header,
            log,
            phase: Mutex::new(phase),
            last_used: AtomicU64::new(now_secs),
            use_order: AtomicU64::new(next_use()),
            removed,
            digest: Mutex::new(DigestState::Unread),
        }
    }

    /// The shape with its tags salted with `salt` (a relational shape's secret).
    pub fn with_tag_salt(mut self, salt: String) -> Shape {
        self.tag_salt = salt;
        self
    }

    /// Whether the shape's where clause has subqueries.
    pub fn is_relational(&self) -> bool {
        self.links.is_some()
    }

    /// Whether changes of the shape's table reach it through the value index
    /// ([`super::value_index`]) rather than its table's routes: a relational shape whose every
    /// alternative needs a positive subquery test, without an equality the router indexes.
    pub fn routed_by_value(&self) -> bool {
        self.by_value
    }

    /// Puts the values that entered or left the shape's subqueries' results (as its clients
    /// know them or are owed them) into `index`, when it is routed by value.
    pub fn update_value_index(self: &Arc<Self>, index: &super::value_index::ValueIndex) {
        let Some(links) = &self.links else { return };
        let (changes, every_change) = {
            let mut l = links.lock();
            (l.take_index_changes(), l.wants_every_change())
        };
        if self.by_value {
            // The values first, then whether it still needs every change: never a moment
            // when a change it needs reaches neither way.
            let me = ShapeRef(self.clone());
            index.apply(self.filter.table.oid, &me, changes);
            if every_change {
                index.add_loading(self.filter.table.oid, &me);
            } else {
                index.loaded(self.filter.table.oid, &me);
            }
            // Removed meanwhile (the registry marks a shape before taking it out of the index):
            // take out what this added.
            if self.removed().is_some() {
                index.remove(self.filter.table.oid, &me);
            }
        }
    }

    /// The schema of table `oid` as the shape was built with it: its own table, or a table its
    /// subqueries read.
    pub fn schema_of(&self, oid: u32) -> Option<Arc<TableSchema>> {
        if self.filter.table.oid == oid {
            return Some(self.filter.table.clone());
        }
        self.filter.tables_read().into_iter().find(|t| t.oid == oid)
    }

    /// Records a request at `now_secs` (Unix seconds, from the server's clock), for LRU and TTL.
    pub fn touch(&self, now_secs: u64) {
        self.last_used.store(now_secs, AtomicOrdering::Relaxed);
        self.use_order.store(next_use(), AtomicOrdering::Relaxed);
    }

    /// Watch for removal: live requests end with 409 (or 503) when it fires.
    pub fn removal(&self) -> watch::Receiver<Option<Removal>> {
        self.removed.subscribe()
    }

    /// Whether (and why) the shape was removed.
    pub fn removed(&self) -> Option<Removal> {
        self.removed.borrow().clone()
    }

    /// For a relational shape owed rows (a move-in pending), the LSN its log is complete through
    /// (see [`super::relational::Links::complete_lsn`]); `None` otherwise. Read before the log.
    pub fn complete_lsn(&self) -> Option<u64> {
        self.links.as_ref().and_then(|l| l.lock().complete_lsn())
    }

    /// Whether a change of table `oid` is offered to this relational shape as a row change: its
    /// own table's, and those its deep subqueries read. The others' changes reach it as the
    /// deltas of their shared nodes ([`super::nodes`]).
    pub fn follows_rows_of(&self, oid: u32) -> bool {
        oid == self.filter.table.oid || self.deep_reads.contains(&oid)
    }

    /// A receiver that sees the shape removed (for a task that waits on something else too).
    pub fn removed_watch(&self) -> watch::Receiver<Option<Removal>> {
        self.removed.subscribe()
    }

    /// Marks the shape removed and wakes its waiters.
    pub fn mark_removed(&self, why: Removal) {
        self.removed.send_replace(Some(why));
    }

    /// Whether the shape keeps a convergence digest: a plain shape (no subqueries, no time) whose
    /// log holds its rows (not changes only).
    pub fn keeps_digest(&self) -> bool {
        self.filter.has_digest() && self.definition.log == ferrite_core::shape::LogMode::Full
    }

    /// Sets the digest a new shape's snapshot ended with (`None`: it keeps none).
    pub fn start_digest(&self, digest: Option<Digest>) {
        *self.digest.lock() = match digest {
            Some(d) if self.keeps_digest() => DigestState::Known(d),
            _ => DigestState::None,
        };
    }

    /// The digest at the log's end, read back from the log the first time after a restart.
    fn current_digest(&self) -> io::Result<Option<Digest>> {
        let mut state = self.digest.lock();
        if *state == DigestState::Unread {
            *state = match self.keeps_digest() {
                true => self.log.last_digest()?.map_or(DigestState::None, DigestState::Known),
                false => DigestState::None,
            };
        }
        Ok(match *state {
            DigestState::Known(d) => Some(d),
            _ => None,
        })
    }

    /// Applies one stream transaction's messages. Returns true if the log was written.
    pub fn apply_transaction(&self, xid: u32, commit_lsn: u64, messages: Vec<PendingMessage>) -> io::Result<bool> {
        let mut phase = self.phase.lock();
        match &mut *phase {
            Phase::Snapshotting { buffer } => {
                buffer.push(BufferedTxn { xid, commit_lsn, messages });
                Ok(false)
            }
            Phase::Ready(info) => {
                if info.contains(xid, commit_lsn) || commit_lsn <= self.log.last_written_tx() {
                    return Ok(false);
                }
                self.append(commit_lsn, &messages)?;
                Ok(true)
            }
        }
    }

    /// Ends the snapshot phase: appends the buffered transactions the snapshot does not contain
    /// and switches to streaming, atomically with respect to [`Shape::apply_transaction`].
    pub fn finish_snapshot(&self, info: SnapshotInfo) -> io::Result<()> {
        let mut phase = self.phase.lock();
        self.log.complete_snapshot();
        if let Phase::Snapshotting { buffer } = &mut *phase {
            for txn in std::mem::take(buffer) {
                if !info.contains(txn.xid, txn.commit_lsn) && txn.commit_lsn > self.log.last_written_tx() {
                    self.append(txn.commit_lsn, &txn.messages)?;
                }
            }
        }
        *phase = Phase::Ready(info);
        Ok(())
    }

    fn append(&self, commit_lsn: u64, messages: &[PendingMessage]) -> io::Result<()> {
        // The digest after the transaction rides on its last message; it is kept only once the
        // log took the transaction.
        let after = self.current_digest()?.map(|mut d| {
            for m in messages {
                d.apply(m.digest);
            }
            d
        });
        let rendered = finish_transaction_with(messages, after.as_ref());
        let entries: Vec<(LogOffset, &[u8])> =
            rendered.iter().map(|(op, json)| (LogOffset::new(commit_lsn, *op), json.as_bytes())).collect();
        self.log.append(&entries)?;
        if let Some(d) = after {
            *self.digest.lock() = DigestState::Known(d);
        }
        Ok(())
    }
}

/// The next tick of the use order (see [`Shape::use_order`]).
fn next_use() -> u64 {
    static USES: AtomicU64 = AtomicU64::new(0);
    USES.fetch_add(1, AtomicOrdering::Relaxed)
}

/// A shape as a routing-table entry: compared by id.
#[derive(Clone)]
pub struct ShapeRef(pub Arc<Shape>);

impl PartialEq for ShapeRef {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for ShapeRef {}
impl PartialOrd for ShapeRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ShapeRef {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.id.cmp(&other.0.id)
    }
}
impl Hash for ShapeRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state)
    }
}
impl std::fmt::Debug for ShapeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shape({})", self.0.handle)
    }
}

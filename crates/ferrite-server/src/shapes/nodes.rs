//! Dependency nodes shared between shapes: one live result per distinct subquery (`team_id IN
//! (SELECT team_id FROM team_members WHERE user_id = 'ann')` is one node however many shapes ask
//! it), fed each change of its table once, whose per-transaction delta — the values that entered
//! and left the result — goes to the shapes that use it ([`super::relational`] applies it
//! against what each shape's clients know). A change to an inner table therefore costs one node
//! update, and reaches only the shapes whose subquery's result it changed.
//!
//! A node is born *loading*: registered for its table's changes (buffered), its result read in
//! a REPEATABLE READ snapshot, then — once the stream has delivered every transaction that
//! snapshot holds — the buffered transactions it does not hold are applied and the node is
//! *live*, before any shape subscribes to it. From then on each transaction after the one it
//! went live at is applied as the stream delivers it.
//!
//! A node's state is persisted in `_nodes/<hash of its query>.json` with the commit LSN it is at,
//! written after the batch's shape logs, queues and checkpoints are durable (so everything a
//! shape derived from the node's deltas is on disk before the node says it is past them) and
//! before the replication slot is confirmed. After a restart, the stream replays from the slot's
//! position: a node skips what it already has, and the shapes skip what they already have.
//! A node is dropped with the last shape that uses it.

use super::relational::{ChangeKind, OwnedChange, QueuedTxn};
use super::shape::ShapeRef;
use ferrite_core::deps::{self, DependencyNode, Projected};
use ferrite_protocol::key::row_key;
use ferrite_protocol::snapshot_info::SnapshotInfo;
use ferrite_where::Subquery;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use tokio::sync::watch;

/// Directory (inside the shapes directory) holding node states.
pub const NODES_DIR: &str = "_nodes";

/// Every shared node of a server.
pub struct NodeHub {
    dir: PathBuf,
    inner: Mutex<Hub>,
    /// On a cluster's leader, where stored states go before they are written (see
    /// [`crate::storage::replica`]).
    sink: std::sync::OnceLock<std::sync::Arc<dyn crate::storage::replica::WriteSink>>,
}

#[derive(Default)]
struct Hub {
    nodes: HashMap<String, Shared>,
    /// Node keys by the oid of the table they read.
    by_table: HashMap<u32, Vec<String>>,
}

/// Where a node is in its life.
enum Phase {
    /// Its result is being read; its table's transactions wait here.
    Loading(Vec<QueuedTxn>),
    /// It follows the stream.
    Live,
}

struct Shared {
    query: Subquery,
    phase: Phase,
    node: DependencyNode,
    /// Commit LSN of the last transaction applied (or that it went live after).
    applied_through: u64,
    /// Shapes holding it (created, being created, or restored).
    holders: usize,
    /// The shapes that get its deltas, with the number of their dependency on it.
    subscribers: Vec<(ShapeRef, usize)>,
    /// Changed since its state was last written.
    dirty: bool,
    /// Tells those waiting for it that it is live (`true`) or gone (its load failed).
    live: watch::Sender<Option<bool>>,
}

/// The stored state of a node.
#[derive(serde::Serialize, serde::Deserialize)]
struct NodeImage {
    key: String,
    applied_through: u64,
    rows: Vec<(String, Projected)>,
}

/// What [`NodeHub::acquire`] found.
pub struct Acquired {
    /// The node's key ([`node_key`]).
    pub key: String,
    /// The caller created it and must load it ([`NodeHub::finish_loading`], or
    /// [`NodeHub::abandon`] on failure); otherwise it waits on `live`.
    pub fresh: bool,
    /// `Some(true)` once live, `Some(false)` if its load failed.
    pub live: watch::Receiver<Option<bool>>,
}

/// The key shared nodes are found by: the subquery's table (by oid, so a re-created table is a
/// new node), columns, filter and parameters.
pub fn node_key(query: &Subquery) -> String {
    format!("{}:{}", query.table.oid, query.key())
}

fn file_name(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.json")
}

impl NodeHub {
    /// The hub of the shapes directory `shapes_dir`.
    pub fn new(shapes_dir: &Path) -> io::Result<NodeHub> {
        let dir = shapes_dir.join(NODES_DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(NodeHub { dir, inner: Mutex::new(Hub::default()), sink: std::sync::OnceLock::new() })
    }

    /// Takes a hold on the node of `query`, creating it (loading, its table's transactions
    /// buffered from now on) when there is none.
    pub fn acquire(&self, query: &Subquery) -> Acquired {
        let key = node_key(query);
        let mut hub = self.inner.lock();
        if let Some(n) = hub.nodes.get_mut(&key) {
            n.holders += 1;
            return Acquired { key, fresh: false, live: n.live.subscribe() };
        }
        let (live, rx) = watch::channel(None);
        let shared = Shared {
            query: query.clone(),
            phase: Phase::Loading(Vec::new()),
            node: DependencyNode::new(),
            applied_through: 0,
            holders: 1,
            subscribers: Vec::new(),
            dirty: false,
            live,
        };
        hub.by_table.entry(query.table.oid).or_default().push(key.clone());
        hub.nodes.insert(key.clone(), shared);
        Acquired { key, fresh: true, live: rx }
    }

    /// Ends a node's load: its result `rows` (all columns of its table) as read in snapshot
    /// `info`, which the stream has passed (its driver has processed every transaction up to
    /// commit LSN `processed`). Applies the buffered transactions the snapshot does not hold,
    /// writes the node's state durably, and makes it live.
    pub fn finish_loading(
        &self,
        key: &str,
        info: &SnapshotInfo,
        rows: Vec<Vec<Option<String>>>,
        processed: u64,
    ) -> io::Result<()> {
        let mut hub = self.inner.lock();
        let Some(n) = hub.nodes.get_mut(key) else { return Ok(()) };
        let Phase::Loading(buffer) = std::mem::replace(&mut n.phase, Phase::Live) else { return Ok(()) };
        for row in rows {
            let value: Projected = n.query.columns.iter().map(|&c| row.get(c).cloned().flatten()).collect();
            let row_key = row_key(&n.query.table, &row);
            // The node keeps every row its filter selects; values with a NULL never match.
            n.node.seed(row_key, value);
        }
        for txn in buffer.iter().filter(|t| !info.contains(t.xid, t.commit_lsn)) {
            for change in &txn.changes {
                feed(&mut n.node, &n.query, &change.kind);
            }
            n.node.finish_transaction();
        }
        n.applied_through = processed.max(buffer.last().map_or(0, |t| t.commit_lsn));
        let image = image(key, n);
        drop(hub);
        let bytes = serde_json::to_vec(&image).map_err(io::Error::other)?;
        if let Some(sink) = self.sink.get() {
            let (dir, name) = (NODES_DIR.to_string(), file_name(key));
            sink.publish(vec![crate::storage::replica::FileOp::Replace { dir, name, bytes: bytes.clone() }])?;
        }
        write_durably(&self.dir.join(file_name(key)), &bytes)?;
        if let Some(n) = self.inner.lock().nodes.get(key) {
            n.live.send_replace(Some(true));
        }
        Ok(())
    }

    /// Drops a hold on a node; the node goes with its last holder.
    pub fn release(&self, key: &str) {
        let mut hub = self.inner.lock();
        let Some(n) = hub.nodes.get_mut(key) else { return };
        n.holders = n.holders.saturating_sub(1);
        if n.holders > 0 {
            return;
        }
        let n = hub.nodes.remove(key).expect("present");
        n.live.send_replace(Some(false));
        remove_key(&mut hub.by_table, n.query.table.oid, key);
        drop(hub);
        self.forget_file(file_name(key));
    }

    /// Sends every later change of the stored states to `sink` first (a cluster's leader).
    pub fn replicate_to(&self, sink: std::sync::Arc<dyn crate::storage::replica::WriteSink>) {
        let _ = self.sink.set(sink);
    }

    /// Removes a stored state (on a cluster's leader, on the other nodes too).
    fn forget_file(&self, name: String) {
        let _ = std::fs::remove_file(self.dir.join(&name));
        if let Some(sink) = self.sink.get() {
            sink.publish_later(vec![crate::storage::replica::FileOp::RemoveFile { dir: NODES_DIR.to_string(), name }]);
        }
    }

    /// Gives up loading node `key` (its result could not be read): it goes, and those waiting
    /// for it are told (`Some(false)`: they acquire again rather than release).
    pub fn abandon(&self, key: &str) {
        let mut hub = self.inner.lock();
        let loading = hub.nodes.get(key).is_some_and(|n| matches!(n.phase, Phase::Loading(_)));
        if !loading {
            return;
        }
        let n = hub.nodes.remove(key).expect("present");
        n.live.send_replace(Some(false));
        remove_key(&mut hub.by_table, n.query.table.oid, key);
    }

    /// Reopens the node of `query` for a shape restored after a restart: the live node when
    /// another shape restored it already, else its stored state. Returns its key, or `None`
    /// when it has no stored state (the shape must start over).
    pub fn restore(&self, query: &Subquery) -> io::Result<Option<String>> {
        let key = node_key(query);
        let mut hub = self.inner.lock();
        if let Some(n) = hub.nodes.get_mut(&key) {
            n.holders += 1;
            return Ok(Some(key));
        }
        let bytes = match std::fs::read(self.dir.join(file_name(&key))) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let image: NodeImage =
            serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if image.key != key {
            return Ok(None);
        }
        let mut node = DependencyNode::new();
        for (k, v) in image.rows {
            node.seed(k, v);
        }
        let (live, _) = watch::channel(Some(true));
        hub.by_table.entry(query.table.oid).or_default().push(key.clone());
        hub.nodes.insert(
            key.clone(),
            Shared {
                query: query.clone(),
                phase: Phase::Live,
                node,
                applied_through: image.applied_through,
                holders: 1,
                subscribers: Vec::new(),
                dirty: false,
                live,
            },
        );
        Ok(Some(key))
    }

    /// Sends the deltas of node `key` to dependency number `dep` of `shape` from the next
    /// transaction on (called with the registry's routes locked, so that a transaction reaches
    /// the shape either through all its routes or through none).
    pub fn subscribe(&self, key: &str, shape: ShapeRef, dep: usize) {
        if let Some(n) = self.inner.lock().nodes.get_mut(key) {
            n.subscribers.push((shape, dep));
        }
    }

    /// Stops sending deltas to `shape` (removed) and drops its holds.
    pub fn unsubscribe(&self, shape: &ShapeRef, keys: &[String]) {
        {
            let mut hub = self.inner.lock();
            for key in keys {
                if let Some(n) = hub.nodes.get_mut(key) {
                    n.subscribers.retain(|(s, _)| s != shape);
                }
            }
        }
        for key in keys {
            self.release(key);
        }
    }

    /// Feeds one transaction's changes of tables nodes read (`changes`: index, table oid and
    /// change, in order): each node applies them once (or buffers them while loading). Returns,
    /// per subscribed shape, the deltas to offer it as changes of the transaction.
    pub fn feed_transaction(
        &self,
        commit_lsn: u64,
        xid: u32,
        changes: &[(usize, u32, ChangeKind)],
    ) -> Vec<(ShapeRef, OwnedChange)> {
        let mut hub = self.inner.lock();
        let mut out = Vec::new();
        let keys: Vec<String> = {
            let mut keys: Vec<String> =
                changes.iter().flat_map(|(_, oid, _)| hub.by_table.get(oid).cloned().unwrap_or_default()).collect();
            keys.sort_unstable();
            keys.dedup();
            keys
        };
        for key in keys {
            let Some(n) = hub.nodes.get_mut(&key) else { continue };
            let oid = n.query.table.oid;
            let mine = changes.iter().filter(|(_, o, _)| *o == oid);
            match &mut n.phase {
                Phase::Loading(buffer) => {
                    let changes: Vec<OwnedChange> =
                        mine.map(|(i, o, k)| OwnedChange { index: *i, oid: *o, kind: k.clone() }).collect();
                    buffer.push(QueuedTxn { xid, commit_lsn, changes });
                }
                Phase::Live if commit_lsn > n.applied_through => {
                    let mut first = None;
                    for (i, _, kind) in mine {
                        first.get_or_insert(*i);
                        feed(&mut n.node, &n.query, kind);
                    }
                    n.applied_through = commit_lsn;
                    // Its rows may have changed even when its values did not (a second row with
                    // a value already in): the stored state must follow either way, or a
                    // restart past this transaction would forget the row.
                    n.dirty = true;
                    let delta = n.node.finish_transaction();
                    if delta.is_empty() {
                        continue;
                    }
                    let complete = |v: &Projected| !v.iter().any(Option::is_none);
                    let entered: Vec<Projected> = delta.entered.into_iter().filter(complete).collect();
                    let left: Vec<Projected> = delta.left.into_iter().filter(complete).collect();
                    for (shape, dep) in &n.subscribers {
                        let kind = ChangeKind::Result { dep: *dep, entered: entered.clone(), left: left.clone() };
                        out.push((shape.clone(), OwnedChange { index: first.unwrap_or(0), oid, kind }));
                    }
                }
                Phase::Live => {}
            }
        }
        out
    }

    /// The tables nodes read (their changes must reach [`NodeHub::feed_transaction`]).
    pub fn tables(&self) -> Vec<u32> {
        self.inner.lock().by_table.keys().copied().collect()
    }

    /// Writes the state of every node changed since its last write, durably. Called after the
    /// batch's shape files are durable and before the slot is confirmed (see the module
    /// documentation).
    pub fn checkpoint(&self) -> io::Result<()> {
        let images: Vec<NodeImage> = {
            let mut hub = self.inner.lock();
            hub.nodes
                .iter_mut()
                .filter(|(_, n)| n.dirty)
                .map(|(k, n)| {
                    n.dirty = false;
                    image(k, n)
                })
                .collect()
        };
        let encoded: Vec<(String, Vec<u8>)> = images
            .iter()
            .map(|image| Ok((file_name(&image.key), serde_json::to_vec(image).map_err(io::Error::other)?)))
            .collect::<io::Result<_>>()?;
        if let (Some(sink), false) = (self.sink.get(), encoded.is_empty()) {
            let dir = NODES_DIR.to_string();
            sink.publish(
                encoded
                    .iter()
                    .map(|(name, bytes)| crate::storage::replica::FileOp::Replace {
                        dir: dir.clone(),
                        name: name.clone(),
                        bytes: bytes.clone(),
                    })
                    .collect(),
            )?;
        }
        for (name, bytes) in &encoded {
            write_durably(&self.dir.join(name), bytes)?;
        }
        Ok(())
    }

    /// Nodes and the rows they hold (for `/metrics` and `/v1/health`).
    pub fn stats(&self) -> (usize, usize) {
        let hub = self.inner.lock();
        (hub.nodes.len(), hub.nodes.values().map(|n| n.node.len()).sum())
    }

    /// Deletes the stored states no node has (left behind by a crash between a node's last
    /// holder going and its file being removed).
    pub fn remove_orphans(&self) {
        let known: Vec<String> = self.inner.lock().nodes.keys().map(|k| file_name(k)).collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                self.forget_file(name);
            }
        }
    }
}

fn remove_key(by_table: &mut HashMap<u32, Vec<String>>, oid: u32, key: &str) {
    if let Some(keys) = by_table.get_mut(&oid) {
        keys.retain(|k| k != key);
        if keys.is_empty() {
            by_table.remove(&oid);
        }
    }
}

fn image(key: &str, n: &Shared) -> NodeImage {
    NodeImage {
        key: key.to_string(),
        applied_through: n.applied_through,
        rows: n.node.rows().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    super::relational::sync_file_and_dir(path)
}

/// Feeds one change of the node's table to its result.
fn feed(node: &mut DependencyNode, query: &Subquery, kind: &ChangeKind) {
    use ferrite_where::subquery::NoSets;
    let table = &query.table;
    let upsert = |node: &mut DependencyNode, row: &[Option<String>]| {
        let key = row_key(table, row);
        if node.apply(query, deps::RowChange::Upsert { key: &key, row }, &NoSets).is_err() {
            // A row Postgres could not evaluate either is not in the result.
            let _ = node.apply(query, deps::RowChange::Delete { key: &key }, &NoSets);
        }
    };
    match kind {
        ChangeKind::Insert(new) => upsert(node, new),
        ChangeKind::Update(old, new) => {
            let old_key = row_key(table, old);
            if old_key != row_key(table, new) {
                let _ = node.apply(query, deps::RowChange::Delete { key: &old_key }, &NoSets);
            }
            upsert(node, new)
        }
        ChangeKind::Delete(old) => {
            let key = row_key(table, old);
            let _ = node.apply(query, deps::RowChange::Delete { key: &key }, &NoSets);
        }
        ChangeKind::Truncate => node.clear(),
        ChangeKind::Result { .. } => {}
    }
}

//! The set of shapes: lookup by handle and by definition, the routing tables, persistence of
//! shape metadata, LRU eviction and idle expiry.

use super::shape::{Phase, Removal, Shape, ShapeMeta, ShapeRef};
use crate::router::TableRoutes;
use crate::storage::replica::{FileOp, WriteSink};
use crate::storage::shape_log::write_atomic;
use crate::storage::ShapeLog;
use ferrite_core::shape::{ShapeDefinition, ShapeError, ShapeFilter, ShapeTables};
use ferrite_protocol::clock::Clock;
use ferrite_protocol::schema::TableSchema;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Routing tables, keyed by table oid.
pub type Routes = HashMap<u32, TableRoutes<ShapeRef>>;

#[derive(Default)]
struct Inner {
    by_handle: HashMap<String, Arc<Shape>>,
    by_definition: HashMap<ShapeDefinition, Arc<Shape>>,
    routes: Routes,
}

/// All shapes of a server.
pub struct Registry {
    dir: PathBuf,
    chunk_bytes: u64,
    inner: RwLock<Inner>,
    next_id: AtomicU64,
    last_handle_micros: Mutex<u64>,
    /// The server's clock: handles and idle expiry read it.
    clock: Clock,
    /// Relational shapes by the values of their subqueries (see [`super::value_index`]).
    pub value_index: super::value_index::ValueIndex,
    /// The subqueries' live results, shared between shapes (see [`super::nodes`]).
    pub nodes: super::nodes::NodeHub,
    /// The storage journal through which the replication driver makes many logs durable at
    /// once (see [`crate::storage::journal`]).
    pub journal: Mutex<crate::storage::Journal>,
    /// On a cluster's leader, where every change of the shape store goes before readers see it
    /// (see [`crate::storage::replica`]); set once, at [`Registry::take_over`].
    sink: std::sync::OnceLock<Arc<dyn WriteSink>>,
}

/// Why a shape on disk is being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// At start, before anything is served: recovered without an fsync each, the whole data
    /// directory made durable once at the end ([`Registry::open`]).
    Start,
    /// At a cluster takeover, while readers are being served: recovered and made durable one by
    /// one.
    TakeOver,
    /// A cluster follower's copy, opened for reading as the stream brings it.
    Replica,
}

/// Metadata file name inside a shape directory.
const META_FILE: &str = "shape.json";

impl Registry {
    /// Opens the registry in `dir`, reopening every shape whose snapshot completed and deleting
    /// the rest (an unfinished snapshot cannot be resumed; clients holding it get 409). Handles
    /// and idle expiry read `clock`.
    pub fn open(dir: &Path, chunk_bytes: u64, clock: Clock) -> io::Result<Registry> {
        std::fs::create_dir_all(dir)?;
        // What the journal made durable goes back into the logs before any log is opened.
        let replayed = crate::storage::journal::replay(dir)?;
        if replayed > 0 {
            tracing::info!(records = replayed, "storage journal replayed into the shape logs");
        }
        let journal = Mutex::new(crate::storage::Journal::open(dir)?);
        let reg = Registry {
            dir: dir.to_path_buf(),
            chunk_bytes,
            inner: RwLock::new(Inner::default()),
            next_id: AtomicU64::new(1),
            last_handle_micros: Mutex::new(0),
            clock,
            value_index: Default::default(),
            nodes: super::nodes::NodeHub::new(dir)?,
            journal,
            sink: std::sync::OnceLock::new(),
        };
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if !path.is_dir() || path.file_name().is_some_and(|n| n == super::nodes::NODES_DIR) {
                continue;
            }
            match reg.open_shape(&path, Opening::Start) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(dir = %path.display(), "dropping shape whose snapshot did not finish");
                    let _ = std::fs::remove_dir_all(&path);
                }
                // Out of file descriptors: the shape is fine, this process cannot hold it.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    tracing::warn!(dir = %path.display(), error = %e, "open-file limit reached: shape left on disk, not opened");
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "dropping unreadable shape");
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
        reg.nodes.remove_orphans();
        // What recovery kept (and cut) made durable at once, before anything reads it.
        let root = std::fs::File::open(dir)?;
        // SAFETY: syncfs only reads the descriptor, which `root` keeps open.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&root)) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(reg)
    }

    /// Opens a shape the shape stream brought to a cluster follower's data directory, for
    /// reading, once its snapshot is complete (false until then, and for a shape with
    /// subqueries, whose state the stream does not carry: the leader serves those). It grows as
    /// the stream does ([`Registry::follow_replica`]); at a takeover it becomes this node's own.
    pub fn open_replica(&self, path: &Path) -> io::Result<bool> {
        self.open_shape(path, Opening::Replica)
    }

    /// Takes in what the stream added to the follower's copy of shape `dir` (see
    /// [`ShapeLog::follow_replica`]); false when no shape of that name is open.
    pub fn follow_replica(&self, dir: &str) -> io::Result<bool> {
        match self.get(dir) {
            Some(shape) => shape.log.follow_replica(),
            None => Ok(false),
        }
    }

    fn open_shape(&self, path: &Path, opening: Opening) -> io::Result<bool> {
        let replica = opening == Opening::Replica;
        let meta: ShapeMeta = serde_json::from_slice(&std::fs::read(path.join(META_FILE))?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let (true, Some(info)) = (meta.complete, meta.snapshot.clone()) else {
            return Ok(false);
        };
        if replica && !meta.inner_tables.is_empty() {
            return Ok(false);
        }
        let tables = ShapeTables::new(meta.inner_tables.iter().cloned().map(Arc::new), &meta.definition);
        let filter = ShapeFilter::compile_with(&meta.definition, Arc::new(meta.table.clone()), &tables)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.message))?;
        if replica && filter.is_relational() {
            return Ok(false);
        }
        let log = match opening {
            Opening::Replica => ShapeLog::open_replica(path, self.chunk_bytes)?,
            Opening::Start => ShapeLog::recover_unsynced(path, self.chunk_bytes, true)?,
            Opening::TakeOver => ShapeLog::recover(path, self.chunk_bytes, true)?,
        };
        if let Some(sink) = self.sink.get() {
            // What recovery cut, the other nodes cut too; what follows goes to them first.
            sink.publish(log.replica_baseline())?;
            log.replicate_to(sink.clone());
        }
        if let Some(micros) = meta.handle.rsplit('-').next().and_then(|m| m.parse::<u64>().ok()) {
            let mut last = self.last_handle_micros.lock();
            *last = (*last).max(micros);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shape =
            Shape::new(id, meta.handle, meta.definition, filter, log, Phase::Ready(info), self.clock.wall_secs())
                .with_tag_salt(meta.tag_salt);
        if let Some(links) = &shape.links {
            // A relational shape goes on from its checkpoint: what its clients were given and
            // are owed, its queue; and from the stored states of the shared nodes it uses.
            let mut held = Vec::new();
            let mut usable = true;
            for (_, _, query) in super::relational::Links::node_keys(&shape.filter) {
                match self.nodes.restore(&query)? {
                    Some(key) => held.push(key),
                    None => usable = false,
                }
            }
            let restored = if usable { super::relational::Links::restore(&shape)? } else { None };
            match restored {
                Some(restored) => {
                    let mut links = links.lock();
                    *links = restored;
                    if let Some(sink) = self.sink.get().filter(|_| !replica) {
                        // (Nothing reads the shape yet: not indexed.)
                        sink.publish(links.replicate_to(sink.clone(), shape.log.dir_name()))?;
                    }
                }
                None => {
                    tracing::info!(handle = %shape.handle, "a shape with subqueries has no usable checkpoint");
                    for key in held {
                        self.nodes.release(&key);
                    }
                    return Ok(false);
                }
            }
            shape.log.sync(true)?;
        }
        self.index(Arc::new(shape));
        Ok(true)
    }

    fn index(&self, shape: Arc<Shape>) {
        let mut inner = self.inner.write();
        let oid = shape.filter.table.oid;
        if shape.routed_by_value() {
            inner.routes.entry(oid).or_default().add_passive(ShapeRef(shape.clone()));
            if shape.links.as_ref().is_some_and(|l| l.lock().loading()) {
                self.value_index.add_loading(oid, &ShapeRef(shape.clone()));
            }
            shape.update_value_index(&self.value_index);
        } else {
            let term = shape.filter.where_clause.as_ref().and_then(|w| w.equality_index_term());
            inner.routes.entry(oid).or_default().add(ShapeRef(shape.clone()), term);
        }
        // A relational shape gets the deltas of the shared nodes of its subqueries, and follows
        // the tables its deep subqueries read.
        for (dep, key, _) in super::relational::Links::node_keys(&shape.filter) {
            self.nodes.subscribe(&key, ShapeRef(shape.clone()), dep);
        }
        for (oid, term) in inner_routes(&shape) {
            inner.routes.entry(oid).or_default().add(ShapeRef(shape.clone()), term);
        }
        inner.by_definition.insert(shape.definition.clone(), shape.clone());
        inner.by_handle.insert(shape.handle.clone(), shape);
    }

    /// The shape with this handle, if it exists.
    pub fn get(&self, handle: &str) -> Option<Arc<Shape>> {
        self.inner.read().by_handle.get(handle).cloned()
    }

    /// The current shape for this definition, if any.
    pub fn find(&self, def: &ShapeDefinition) -> Option<Arc<Shape>> {
        self.inner.read().by_definition.get(def).cloned()
    }

    /// Number of shapes.
    pub fn len(&self) -> usize {
        self.inner.read().by_handle.len()
    }

    /// Relational shapes that were reading rows moving in (after a restart: the reads to
    /// start again).
    pub fn moving_in(&self) -> Vec<Arc<Shape>> {
        self.inner
            .read()
            .by_handle
            .values()
            .filter(|s| s.links.as_ref().is_some_and(|l| l.lock().moving_in()))
            .cloned()
            .collect()
    }

    /// Shapes whose where clause reads the clock (after a restart: the clocks to follow again).
    pub fn following_clock(&self) -> Vec<Arc<Shape>> {
        self.inner.read().by_handle.values().filter(|s| s.filter.reads_time()).cloned().collect()
    }

    /// What relational shapes hold right now (for `/metrics` and `/v1/health`).
    pub fn relational_stats(&self) -> crate::metrics::RelationalStats {
        let mut stats = crate::metrics::RelationalStats::default();
        (stats.dependency_nodes, stats.dependency_rows) = self.nodes.stats();
        for shape in self.inner.read().by_handle.values() {
            if let Some(links) = &shape.links {
                let links = links.lock();
                stats.shapes += 1;
                stats.moving_in += usize::from(links.moving_in());
                stats.queued_transactions += links.queued();
            }
        }
        stats
    }

    /// Read access to the routing tables; held while a batch of transactions is routed, so a shape
    /// is either fully registered for a transaction or not at all.
    pub fn routes(&self) -> RoutesGuard<'_> {
        RoutesGuard(self.inner.read())
    }

    /// Creates a shape in the snapshotting phase and registers it with the router. From this
    /// moment every routed transaction is buffered for it until its snapshot finishes.
    /// `tables` are those its subqueries read.
    pub fn create(
        &self,
        def: ShapeDefinition,
        table: TableSchema,
        tables: &ShapeTables,
    ) -> Result<Arc<Shape>, CreateError> {
        let filter = ShapeFilter::compile_with(&def, Arc::new(table.clone()), tables).map_err(CreateError::Shape)?;
        let handle = self.new_handle(&def);
        let path = self.dir.join(&handle);
        std::fs::create_dir_all(&path).map_err(CreateError::Io)?;
        // A shape whose files could not all be written (a full disk) leaves nothing behind.
        let cleanup = |e: io::Error| {
            let _ = std::fs::remove_dir_all(&path);
            CreateError::Io(e)
        };
        let (inner_tables, tag_salt) = if filter.is_relational() {
            let inner: Vec<TableSchema> = filter.tables_read().iter().map(|t| (**t).clone()).collect();
            (inner, new_salt())
        } else {
            (vec![], String::new())
        };
        let meta = ShapeMeta {
            handle: handle.clone(),
            definition: def.clone(),
            table,
            snapshot: None,
            complete: false,
            inner_tables,
            tag_salt: tag_salt.clone(),
        };
        self.write_meta(&path, &meta).map_err(cleanup)?;
        let log = ShapeLog::create(&path, self.chunk_bytes).map_err(cleanup)?;
        let sink = self.sink.get();
        if let Some(sink) = sink {
            log.replicate_to(sink.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let phase = Phase::Snapshotting { buffer: vec![] };
        let shape =
            Arc::new(Shape::new(id, handle, def, filter, log, phase, self.clock.wall_secs()).with_tag_salt(tag_salt));
        if let (Some(sink), Some(links)) = (sink, &shape.links) {
            // (A new queue: nothing for the other nodes to cut.)
            links.lock().replicate_to(sink.clone(), shape.log.dir_name());
        }
        self.index(shape.clone());
        Ok(shape)
    }

    /// Records that a shape's snapshot is complete, so it survives restarts.
    pub fn persist_ready(&self, shape: &Shape, info: &ferrite_protocol::snapshot_info::SnapshotInfo) -> io::Result<()> {
        let inner_tables: Vec<TableSchema> = shape.filter.tables_read().iter().map(|t| (**t).clone()).collect();
        let meta = ShapeMeta {
            handle: shape.handle.clone(),
            definition: shape.definition.clone(),
            table: (*shape.filter.table).clone(),
            snapshot: Some(info.clone()),
            complete: true,
            inner_tables,
            tag_salt: shape.tag_salt.clone(),
        };
        self.write_meta(shape.log.dir(), &meta)
    }

    /// Writes a shape's metadata; on a cluster's leader, the other nodes get it first.
    fn write_meta(&self, dir: &Path, meta: &ShapeMeta) -> io::Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some(sink) = self.sink.get() {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            sink.publish(vec![FileOp::Meta { dir: name, bytes: bytes.clone() }])?;
        }
        write_atomic(&dir.join(META_FILE), &bytes)
    }

    /// Makes this registry a cluster leader's: every change from now on goes to `sink` first,
    /// and the shapes the shape stream brought into the data directory are opened as after a
    /// crash — a shape with subqueries from its checkpoint, queue and the shared nodes' stored
    /// states, which the stream carries too. Those that cannot be (an unfinished snapshot, a
    /// checkpoint the log does not reach) are removed, here and on the other nodes. Returns
    /// (opened, removed).
    pub fn take_over(&self, sink: Arc<dyn WriteSink>) -> io::Result<(usize, usize)> {
        if self.sink.set(sink.clone()).is_err() {
            return Err(io::Error::other("this registry already leads"));
        }
        self.nodes.replicate_to(sink.clone());
        let (mut opened, mut removed) = (0, 0);
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if !path.is_dir() || path.file_name().is_some_and(|n| n == super::nodes::NODES_DIR) {
                continue;
            }
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
            if !holds_a_shape(&path) {
                continue;
            }
            if let Some(shape) = self.get(&name) {
                // A copy this node served from while following: now its own, cut where its
                // last whole unit ends (as recovery would), the other nodes' copies too.
                shape.log.follow_replica()?;
                shape.log.cut_to_end()?;
                sink.publish(shape.log.replica_baseline())?;
                shape.log.replicate_to(sink.clone());
                opened += 1;
                continue;
            }
            match self.open_shape(&path, Opening::TakeOver) {
                Ok(true) => opened += 1,
                Ok(false) | Err(_) => {
                    sink.publish(vec![FileOp::Remove { dir: name }])?;
                    std::fs::remove_dir_all(&path)?;
                    removed += 1;
                }
            }
        }
        // Stored node states no shape restored (here and on the other nodes).
        self.nodes.remove_orphans();
        Ok((opened, removed))
    }

    /// Removes a shape: clients holding its handle get 409 from now on; its files are deleted.
    pub fn remove(&self, handle: &str, why: Removal) -> Option<Arc<Shape>> {
        let shape = {
            let mut inner = self.inner.write();
            let shape = inner.by_handle.remove(handle)?;
            if inner.by_definition.get(&shape.definition).is_some_and(|s| s.id == shape.id) {
                inner.by_definition.remove(&shape.definition);
            }
            // Marked first: an update of its routing index racing with this sees the mark and
            // takes back what it added (`Shape::update_value_index`).
            shape.mark_removed(why.clone());
            self.value_index.remove(shape.filter.table.oid, &ShapeRef(shape.clone()));
            let mut oids = vec![shape.filter.table.oid];
            oids.extend(inner_routes(&shape).into_iter().map(|(oid, _)| oid));
            for oid in oids {
                if let Some(routes) = inner.routes.get_mut(&oid) {
                    routes.remove(&ShapeRef(shape.clone()));
                    if routes.is_empty() {
                        inner.routes.remove(&oid);
                    }
                }
            }
            shape
        };
        let keys: Vec<String> =
            super::relational::Links::node_keys(&shape.filter).into_iter().map(|(_, k, _)| k).collect();
        self.nodes.unsubscribe(&ShapeRef(shape.clone()), &keys);
        tracing::info!(handle = %shape.handle, reason = ?why, "shape removed");
        if let Some(sink) = self.sink.get() {
            sink.publish_later(vec![FileOp::Remove { dir: shape.log.dir_name().to_string() }]);
        }
        let dir = shape.log.dir().to_path_buf();
        std::thread::spawn(move || {
            let _ = std::fs::remove_dir_all(dir);
        });
        Some(shape)
    }

    /// Removes every shape on the table with this oid (truncate, schema change) and, when
    /// `readers` is set, every shape whose subqueries read it (a schema change there).
    pub fn remove_table(&self, oid: u32, readers: bool) -> usize {
        let handles: Vec<String> = self
            .inner
            .read()
            .by_handle
            .values()
            .filter(|s| s.filter.table.oid == oid || (readers && s.filter.tables_read().iter().any(|t| t.oid == oid)))
            .map(|s| s.handle.clone())
            .collect();
        for h in &handles {
            self.remove(h, Removal::Rotated);
        }
        handles.len()
    }

    /// Removes every shape (rotated: clients get 409 and start over), as when the replication
    /// slot was lost and what follows would have a gap; returns how many.
    pub fn rotate_all(&self) -> usize {
        let handles: Vec<String> = self.inner.read().by_handle.keys().cloned().collect();
        for h in &handles {
            self.remove(h, Removal::Rotated);
        }
        handles.len()
    }

    /// Where changes go before readers see them, on a cluster's leader.
    pub fn sink(&self) -> Option<&Arc<dyn WriteSink>> {
        self.sink.get()
    }

    /// Evicts least-recently-used shapes until fewer than `max` remain.
    pub fn evict_to(&self, max: usize) {
        loop {
            let victim = {
                let inner = self.inner.read();
                if inner.by_handle.len() < max.max(1) {
                    return;
                }
                inner.by_handle.values().min_by_key(|s| s.use_order.load(Ordering::Relaxed)).map(|s| s.handle.clone())
            };
            match victim {
                Some(h) => {
                    self.remove(&h, Removal::Rotated);
                }
                None => return,
            }
        }
    }

    /// Records a request for `shape` now (for LRU and TTL).
    pub fn touch(&self, shape: &Shape) {
        shape.touch(self.clock.wall_secs());
    }

    /// The handles of the shapes requested within the last `secs` (what a cluster follower
    /// tells the leader: see [`crate::cluster::usage`]).
    pub fn used_within(&self, secs: u64) -> Vec<String> {
        let since = self.clock.wall_secs().saturating_sub(secs);
        let inner = self.inner.read();
        inner
            .by_handle
            .values()
            .filter(|s| s.last_used.load(Ordering::Relaxed) >= since)
            .map(|s| s.handle.clone())
            .collect()
    }

    /// Removes shapes not requested for `ttl_secs`.
    pub fn expire_idle(&self, ttl_secs: u64) -> usize {
        let cutoff = self.clock.wall_secs().saturating_sub(ttl_secs);
        let idle: Vec<String> = self
            .inner
            .read()
            .by_handle
            .values()
            .filter(|s| s.last_used.load(Ordering::Relaxed) < cutoff)
            .map(|s| s.handle.clone())
            .collect();
        for h in &idle {
            self.remove(h, Removal::Rotated);
        }
        idle.len()
    }

    /// A never-reused handle: `<definition hash>-<unix micros>`, micros strictly increasing.
    fn new_handle(&self, def: &ShapeDefinition) -> String {
        let hash = crc32fast::hash(serde_json::to_string(def).unwrap_or_default().as_bytes());
        let now = self.clock.since_epoch().as_micros() as u64;
        let mut last = self.last_handle_micros.lock();
        let micros = now.max(*last + 1);
        *last = micros;
        format!("{hash}-{micros}")
    }
}

/// Read guard over the routing tables.
pub struct RoutesGuard<'a>(RwLockReadGuard<'a, Inner>);

impl RoutesGuard<'_> {
    /// The routes of a table, if any shape is on it.
    pub fn table(&self, oid: u32) -> Option<&TableRoutes<ShapeRef>> {
        self.0.routes.get(&oid)
    }
}

/// Why a shape could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The definition does not compile against the table.
    #[error("{0}")]
    Shape(ShapeError),
    /// Storage failed.
    #[error("shape storage error: {0}")]
    Io(io::Error),
}

/// A column and the texts a row's value of it must be one of (see
/// [`ferrite_where::WhereClause::equality_index_term`]).
type EqualityTerm = (usize, Vec<String>);

/// The tables a relational shape is routed on besides its own — those its subqueries read, at
/// any depth — each with the equality term of the subquery reading it when exactly one
/// outermost subquery reads it (and no nested one). It is offered the rows of those its deep
/// subqueries read; the others only tell it of schema changes (their changes reach it as their
/// shared nodes' deltas).
fn inner_routes(shape: &Shape) -> Vec<(u32, Option<EqualityTerm>)> {
    let subqueries = shape.filter.subqueries();
    let nested: Vec<ferrite_where::Subquery> =
        subqueries.iter().flat_map(|q| q.filter.iter().flat_map(|f| f.subqueries().iter().cloned())).collect();
    let read_nested = ferrite_core::shape::subquery_tables(&nested);
    shape
        .filter
        .tables_read()
        .iter()
        // Its own table's changes reach it as the shape's own.
        .filter(|t| t.oid != shape.filter.table.oid)
        .map(|t| {
            let readers: Vec<_> = subqueries.iter().filter(|s| s.table.oid == t.oid).collect();
            let term = match (readers.as_slice(), read_nested.iter().any(|n| n.oid == t.oid)) {
                ([q], false) => q.filter.as_ref().and_then(|f| f.equality_index_term()),
                _ => None,
            };
            (t.oid, term)
        })
        .collect()
}

/// Whether directory `path` holds a shape's files (what a cluster node may clear or remove).
pub fn holds_a_shape(path: &Path) -> bool {
    path.is_dir() && [META_FILE, "log", "chunks"].iter().any(|f| path.join(f).is_file())
}

/// A new secret salt for a relational shape's tags.
fn new_salt() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

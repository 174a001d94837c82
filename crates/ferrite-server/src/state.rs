//! Shared server state and the one place that creates shapes (Postgres checks, publication,
//! registry entry, snapshot task).

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::shapes::registry::CreateError;
use crate::shapes::snapshot::take_initial_snapshot;
use crate::shapes::{Registry, Removal, Shape};
use ferrite_core::shape::{ShapeDefinition, ShapeError, ShapeFilter, ShapeTables};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Postgres connections for presence admission checks (one indexed row read each).
const PRESENCE_CONNECTIONS: usize = 2;

/// How many recent transaction arrival times are kept.
pub const RECEIPTS: usize = 8192;
/// How long a request for a new shape waits for the replication slot to exist before it is
/// answered 503 + retry-after (see [`AppState::wait_for_slot`]).
pub const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a shape request could not get a shape.
#[derive(Debug, thiserror::Error)]
pub enum ShapeRequestError {
    /// Bad definition: answered 400 with `errors.<field>`.
    #[error("{message}")]
    Invalid {
        /// Request field at fault.
        field: &'static str,
        /// Message for the client.
        message: String,
    },
    /// The table's read rule cannot be applied to the caller's token (a claim that does not
    /// read as its column's type, or a rule that does not fit the table): 403, fail closed.
    #[error("{0}")]
    Forbidden(String),
    /// Postgres cannot be reached: 503 + retry-after.
    #[error("Database is unreachable: {0}")]
    DatabaseUnreachable(String),
    /// This node follows a cluster's leader, which alone makes shapes: 503 + retry-after (the
    /// retry goes to the leader).
    #[error("this node of the cluster does not make shapes; retry")]
    NotLeader,
    /// Postgres cannot give what a new shape needs yet, because of a transaction that stays
    /// open (the replication slot is still being created, or a lock on the table is held):
    /// 503 + retry-after, with `code` and `message` in the body. Nothing of the shape is kept.
    #[error("{message}")]
    NotYet {
        /// Machine-readable reason (`replication_slot_not_ready`, `table_locked`).
        code: &'static str,
        /// What is waited for, for the client and the log.
        message: String,
    },
    /// The data directory is full (`ENOSPC`), so a new shape cannot be stored: 503 +
    /// retry-after (existing shapes are still served).
    #[error("the data directory is full: {0}")]
    StorageFull(String),
    /// Anything else: 500 without details beyond the message.
    #[error("{0}")]
    Internal(String),
}

impl From<ShapeError> for ShapeRequestError {
    fn from(e: ShapeError) -> Self {
        if e.field == ShapeError::RULE {
            return ShapeRequestError::Forbidden(e.message);
        }
        ShapeRequestError::Invalid { field: e.field, message: e.message }
    }
}

/// Everything request handlers and background tasks share.
pub struct AppState {
    /// Configuration.
    pub config: ServerConfig,
    /// The shapes.
    pub registry: Arc<Registry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Commit LSN of the last transaction the server processed (`global_last_seen_lsn`).
    pub global_lsn: Arc<AtomicU64>,
    /// True once the replication stream has connected (health reports `active`).
    pub replication_ready: Arc<AtomicBool>,
    /// True once the replication slot exists (made, or found, by the replication driver); false
    /// again while an invalidated slot is being made anew. New shapes wait for it
    /// ([`AppState::wait_for_slot`]).
    pub slot_ready: tokio::sync::watch::Sender<bool>,
    /// When recent transactions arrived from Postgres (commit LSN, instant), newest last; lets
    /// benchmarks split latency into replication delay and engine-added time. Bounded.
    pub receipts: parking_lot::Mutex<std::collections::VecDeque<(u64, std::time::Instant)>>,
    /// Applies client transactions (the write path).
    pub writer: crate::writes::apply::Writer,
    /// Token verification and table access rules.
    pub auth: Arc<crate::auth::Auth>,
    /// Presence rooms (in memory only).
    pub presence: crate::presence::Presence,
    /// Connections for presence admission checks, apart from the write path's.
    pub presence_pool: crate::pool::Pool<ferrite_pg::prepared::PreparedClient>,
    /// How many requests each route and each caller may hold at once.
    pub admission: crate::admission::Admission,
    /// Connections for initial and subset snapshots (`snapshot_concurrency` of them).
    pub snapshot_pool: crate::pool::Pool<tokio_postgres::Client>,
    /// Compressed shape responses, made once and served many times.
    pub compressed: crate::http::compression::Cache,
    /// Digests of relational shapes, computed on demand by replaying their logs.
    pub replayed_digests: crate::shapes::replayed_digest::ReplayedDigests,
    /// Where the server reads the time (see [`ferrite_protocol::clock`]); the registry,
    /// presence and the writer hold clones of it.
    pub clock: ferrite_protocol::clock::Clock,
    /// The current replication stream's progress: how far it handed transactions over and how
    /// far the driver processed them (a move-in waits until its snapshot is covered).
    pub stream: parking_lot::Mutex<Arc<ferrite_pg::replication::StreamProgress>>,
    /// This node's place in a cluster (set once at start when `[cluster] nats_url` is given).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Why this server must stop by itself (a cluster leader deposed: what it holds may differ
    /// from the stream, so it starts again as a follower); see [`AppState::halt`].
    pub halted: tokio::sync::watch::Sender<Option<String>>,
    /// True once the server is shutting down: held live requests answer at once, as at their
    /// timeout (long-polls, `/v1/watch`), and streams end (SSE), so every client gets a clean
    /// end and reconnects — to this server restarted, or another node.
    pub draining: tokio::sync::watch::Sender<bool>,
    /// Set by the replication driver once it stopped for a shutdown with the slot confirmed.
    pub replication_stopped: tokio::sync::watch::Sender<bool>,
    create_lock: Mutex<()>,
    db: Mutex<Option<tokio_postgres::Client>>,
    published: parking_lot::Mutex<HashSet<u32>>,
}

/// Bytes of compressed shape responses kept for reuse.
const COMPRESSED_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl AppState {
    /// Resolves once the server is shutting down (see [`AppState::draining`]): what a held
    /// request waits on beside its own news and deadline.
    pub async fn drained(&self) {
        let mut rx = self.draining.subscribe();
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Asks the process to stop: [`crate::RunningServer::halted`] resolves with `why`. Used when
    /// this node can no longer be trusted to serve (a deposed cluster leader).
    pub fn halt(&self, why: String) {
        tracing::error!(reason = %why, "the server must stop");
        self.halted.send_if_modified(|h| {
            let first = h.is_none();
            if first {
                *h = Some(why);
            }
            first
        });
    }

    /// Builds the state around an opened registry (opened on the same `clock`); the error names
    /// a setting that cannot be used (auth keys that do not load, a bad table policy), so the
    /// server refuses to start rather than run with part of its configuration ignored.
    pub fn new(
        config: ServerConfig,
        registry: Arc<Registry>,
        clock: ferrite_protocol::clock::Clock,
    ) -> Result<AppState, String> {
        let auth = Arc::new(crate::auth::Auth::from_config(&config)?);
        Ok(AppState {
            writer: crate::writes::apply::Writer::new(&config, auth.clone(), clock.clone())?,
            auth,
            presence: crate::presence::Presence::new(
                crate::presence::PresenceLimits {
                    ttl: std::time::Duration::from_secs(config.presence_ttl_secs),
                    max_members: config.presence_max_members,
                    max_rooms: config.presence_max_rooms,
                },
                clock.clone(),
            ),
            presence_pool: crate::pool::Pool::new(&config.database_url, PRESENCE_CONNECTIONS),
            admission: crate::admission::Admission::new(crate::admission::AdmissionLimits {
                shape_initial: config.max_concurrent_initial,
                shape_existing: config.max_concurrent_existing,
                writes: config.max_concurrent_writes,
                presence: config.max_concurrent_presence,
                per_subject: config.max_requests_per_subject,
            }),
            snapshot_pool: crate::pool::Pool::new(&config.database_url, config.snapshot_concurrency),
            compressed: crate::http::compression::Cache::new(COMPRESSED_CACHE_BYTES),
            replayed_digests: Default::default(),
            clock,
            config,
            registry,
            metrics: Arc::new(Metrics::default()),
            global_lsn: Arc::new(AtomicU64::new(0)),
            replication_ready: Arc::new(AtomicBool::new(false)),
            slot_ready: tokio::sync::watch::channel(false).0,
            receipts: parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(RECEIPTS)),
            stream: parking_lot::Mutex::new(Arc::new(Default::default())),
            cluster: std::sync::OnceLock::new(),
            halted: tokio::sync::watch::channel(None).0,
            draining: tokio::sync::watch::channel(false).0,
            replication_stopped: tokio::sync::watch::channel(false).0,
            create_lock: Mutex::new(()),
            db: Mutex::new(None),
            published: parking_lot::Mutex::new(HashSet::new()),
        })
    }

    /// Arrival time of the transaction that committed at `commit_lsn`, if still remembered.
    pub fn receipt_of(&self, commit_lsn: u64) -> Option<std::time::Instant> {
        self.receipts.lock().iter().rev().find(|(l, _)| *l == commit_lsn).map(|(_, t)| *t)
    }

    /// Records the engine-added latency of a live response whose last transaction committed at
    /// `commit_lsn` (when its arrival is still remembered).
    pub fn observe_live_delivery(&self, commit_lsn: u64) {
        if let Some(t) = self.receipt_of(commit_lsn) {
            self.metrics.live_delivery.observe(t.elapsed());
        }
    }

    /// A connection for catalog queries, reconnecting if the last one broke.
    pub async fn with_db<T>(
        &self,
        f: impl for<'c> FnOnce(
            &'c tokio_postgres::Client,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'c>>,
    ) -> Result<T, ShapeRequestError> {
        let mut guard = self.db.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let client = ferrite_pg::connect::connect(&self.config.database_url)
                .await
                .map_err(|e| ShapeRequestError::DatabaseUnreachable(e.to_string()))?;
            *guard = Some(client);
        }
        match guard.as_ref() {
            Some(c) => Ok(f(c).await),
            None => Err(ShapeRequestError::DatabaseUnreachable("no connection".into())),
        }
    }

    /// Waits (at most [`SLOT_WAIT`]) until the replication slot exists. A new shape's snapshot
    /// must be taken after the slot was created: a transaction that commits before the slot's
    /// starting point is never streamed, so one the snapshot missed (open while it was taken)
    /// would be lost. At the first start Postgres creates the slot only once every transaction
    /// open at that moment has ended — with a long one open, new shapes are refused with
    /// 503 + retry-after until then, while existing shapes are served.
    async fn wait_for_slot(&self) -> Result<(), ShapeRequestError> {
        if *self.slot_ready.borrow() {
            return Ok(());
        }
        let mut ready = self.slot_ready.subscribe();
        let made = matches!(tokio::time::timeout(SLOT_WAIT, ready.wait_for(|r| *r)).await, Ok(Ok(_)));
        match made {
            true => Ok(()),
            false => Err(ShapeRequestError::NotYet {
                code: "replication_slot_not_ready",
                message: "The replication slot is not ready: Postgres creates it once the transactions open \
                          on it have ended (a long-running transaction holds it back). Retry later."
                    .into(),
            }),
        }
    }

    /// The shape for `def`, created (and its snapshot started) if there is none.
    pub async fn get_or_create(self: &Arc<Self>, def: &ShapeDefinition) -> Result<Arc<Shape>, ShapeRequestError> {
        if let Some(s) = self.registry.find(def) {
            return Ok(s);
        }
        if self.cluster.get().is_some_and(|c| !c.leading()) {
            // (A follower serves the leader's shapes it holds; new ones are the leader's.)
            return Err(ShapeRequestError::NotLeader);
        }
        self.wait_for_slot().await?;
        let _guard = self.create_lock.lock().await;
        if let Some(s) = self.registry.find(def) {
            return Ok(s);
        }
        let name = def.table.clone();
        let table = self
            .with_db(|c| Box::pin(async move { ferrite_pg::introspect::load_table(c, &name).await }))
            .await?
            .map_err(|e| ShapeRequestError::DatabaseUnreachable(e.to_string()))?;
        let Some(table) = table else {
            return Err(ShapeRequestError::Invalid {
                field: "table",
                message: format!(
                    "Table {} does not exist. If the table name contains capitals or special characters you must quote it.",
                    def.table.quoted()
                ),
            });
        };
        let tables = self.inner_tables(def).await?;
        // Validate before touching the publication.
        let filter = ShapeFilter::compile_with(def, Arc::new(table.clone()), &tables)?;
        let mut publish = vec![(table.oid, def.table.clone())];
        publish.extend(filter.tables_read().iter().map(|t| (t.oid, t.name.clone())));
        for (oid, name) in publish {
            if self.published.lock().contains(&oid) {
                continue;
            }
            let publication = self.config.publication.clone();
            let n = name.clone();
            self.with_db(|c| {
                Box::pin(async move { ferrite_pg::replication::add_table_to_publication(c, &publication, &n).await })
            })
            .await?
            .map_err(|e| {
                if e.is_lock_timeout() {
                    let message = format!(
                        "Postgres did not give the lock needed to replicate {name} within {} s: a transaction \
                         that wrote to the table is still open. Retry once it has ended.",
                        ferrite_pg::replication::DDL_LOCK_TIMEOUT.as_secs()
                    );
                    tracing::warn!(table = %name, "{message}");
                    ShapeRequestError::NotYet { code: "table_locked", message }
                } else {
                    ShapeRequestError::Internal(format!("could not add {name} to the publication: {e}"))
                }
            })?;
            self.published.lock().insert(oid);
        }
        self.registry.evict_to(self.config.max_shapes);
        // The shared results of its subqueries, live before the shape subscribes to them.
        let holds = self.hold_nodes(&filter).await?;
        let shape = self.registry.create(def.clone(), table, &tables).map_err(|e| match e {
            CreateError::Shape(e) => e.into(),
            CreateError::Io(e) => {
                self.metrics.storage_write_errors.fetch_add(1, Ordering::Relaxed);
                if crate::storage::is_out_of_space(&e) {
                    tracing::error!(data_dir = %self.config.data_dir.display(), error = %e,
                        "the data directory is full (ENOSPC): a new shape could not be stored");
                    ShapeRequestError::StorageFull(e.to_string())
                } else {
                    ShapeRequestError::Internal(format!("shape storage error: {e}"))
                }
            }
        })?;
        // The shape holds them now (released when it is removed).
        holds.keep();
        self.metrics.shapes_created.fetch_add(1, Ordering::Relaxed);
        tracing::info!(handle = %shape.handle, table = %def.table, "shape created");
        let state = self.clone();
        let s = shape.clone();
        tokio::spawn(async move { state.run_snapshot(s).await });
        Ok(shape)
    }

    /// Takes a hold on the shared node of each subquery of `filter` that is followed row by row
    /// ([`crate::shapes::nodes`]), loading the nodes that do not exist yet. Dropped before
    /// [`NodeHolds::keep`] (the request failed or was cancelled), it lets go of them.
    async fn hold_nodes(self: &Arc<Self>, filter: &ShapeFilter) -> Result<NodeHolds, ShapeRequestError> {
        let mut holds = NodeHolds { state: self.clone(), keys: Vec::new(), loading: None, kept: false };
        for (_, _, query) in crate::shapes::relational::Links::node_keys(filter) {
            let mut attempts = 0;
            loop {
                let acquired = self.registry.nodes.acquire(&query);
                if acquired.fresh {
                    holds.loading = Some(acquired.key.clone());
                    let (info, rows) = self.load_node(&query).await?;
                    let processed = self.stream.lock().processed_commit.load(Ordering::Acquire);
                    tokio::task::block_in_place(|| {
                        self.registry.nodes.finish_loading(&acquired.key, &info, rows, processed)
                    })
                    .map_err(|e| ShapeRequestError::Internal(format!("writing a dependency node: {e}")))?;
                    holds.loading = None;
                    holds.keys.push(acquired.key);
                    break;
                }
                // Another request is loading it.
                let mut live = acquired.live;
                let ready = loop {
                    if let Some(ready) = *live.borrow_and_update() {
                        break ready;
                    }
                    if live.changed().await.is_err() {
                        break false;
                    }
                };
                if ready {
                    holds.keys.push(acquired.key);
                    break;
                }
                // Its load failed (and its holds went with it): try again.
                attempts += 1;
                if attempts == 3 {
                    return Err(ShapeRequestError::DatabaseUnreachable("a subquery's result could not be read".into()));
                }
            }
        }
        Ok(holds)
    }

    /// Reads a new node's result (every row of its table its filter selects) in a snapshot,
    /// then waits until the stream has delivered every transaction the snapshot holds.
    async fn load_node(
        &self,
        query: &ferrite_where::Subquery,
    ) -> Result<(ferrite_protocol::snapshot_info::SnapshotInfo, Vec<Vec<Option<String>>>), ShapeRequestError> {
        use ferrite_pg::row_query::RowQuery;
        let unreachable = |e: String| ShapeRequestError::DatabaseUnreachable(e);
        let conn = self.snapshot_pool.get().await.map_err(|e| unreachable(e.to_string()))?;
        let snapshot =
            ferrite_pg::snapshot::Snapshot::begin(conn.client(), None).await.map_err(|e| unreachable(e.to_string()))?;
        let info = snapshot.info().clone();
        let mut rows = Vec::new();
        let (limit, mut bytes) = (self.config.max_shape_size, 0u64);
        let mut stream = snapshot
            .rows(&RowQuery::values(&query.table, query.filter.as_ref(), None, &[]))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        while let Some(row) = stream.values().await.map_err(|e| unreachable(e.to_string()))? {
            bytes += crate::shapes::snapshot::row_bytes(&row);
            if limit > 0 && bytes > limit {
                return Err(ShapeRequestError::Invalid {
                    field: "where",
                    message: format!(
                        "the result of a subquery on {} exceeds max_shape_size ({limit} bytes): narrow it",
                        query.table.name.quoted()
                    ),
                });
            }
            rows.push(row);
        }
        drop(stream);
        snapshot.commit().await.map_err(|e| unreachable(e.to_string()))?;
        conn.release();
        // Every transaction the snapshot holds must have reached the node's buffer, so that
        // those it does not hold are exactly the ones to apply on top.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut pause = std::time::Duration::from_millis(1);
        while !self.stream.lock().clone().covers(info.wal_lsn) {
            if std::time::Instant::now() > deadline {
                return Err(unreachable("the replication stream is behind; try again".into()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
        }
        Ok((info, rows))
    }

    /// The tables the subqueries of `def` (its where clause and its read rule) read, as
    /// Postgres has them now. Names in schemas clients cannot read are refused; names that do
    /// not exist are left out (compiling the clause then says so).
    async fn inner_tables(&self, def: &ShapeDefinition) -> Result<ShapeTables, ShapeRequestError> {
        let invalid = |message: String| ShapeRequestError::Invalid { field: "where", message };
        let mut names = Vec::new();
        if let Some(sql) = def.where_sql.as_deref().filter(|s| !s.trim().is_empty()) {
            names.extend(ferrite_where::tables_read(sql).map_err(|e| invalid(e.to_string()))?);
        }
        if let Some(rule) = &def.rule {
            names.extend(ferrite_where::tables_read(&rule.sql).unwrap_or_default());
        }
        // The read rules a client's subqueries are held to read tables of their own (a
        // membership): those are needed to compile them too.
        let ruled: Vec<ferrite_protocol::relation::QualifiedName> = names
            .iter()
            .filter_map(|n| def.inner_rules.get(&n.to_string()))
            .flat_map(|rule| ferrite_where::tables_read(&rule.sql).unwrap_or_default())
            .collect();
        names.extend(ruled);
        names.sort();
        names.dedup();
        if names.len() > ferrite_where::limits::MAX_SUBQUERIES {
            return Err(invalid(format!(
                "too many subqueries (the limit is {})",
                ferrite_where::limits::MAX_SUBQUERIES
            )));
        }
        let mut tables = Vec::new();
        for name in names {
            if name.is_reserved() {
                return Err(invalid(format!(
                    "{} is in a schema clients cannot read (Ferrite's own or Postgres's)",
                    name.quoted()
                )));
            }
            let n = name.clone();
            let table = self
                .with_db(|c| Box::pin(async move { ferrite_pg::introspect::load_table(c, &n).await }))
                .await?
                .map_err(|e| ShapeRequestError::DatabaseUnreachable(e.to_string()))?;
            tables.extend(table.map(Arc::new));
        }
        Ok(ShapeTables::new(tables, def))
    }

    async fn run_snapshot(self: Arc<Self>, shape: Arc<Shape>) {
        let result = async {
            let conn = self.snapshot_pool.get().await.map_err(|e| Removal::SnapshotFailed(e.to_string()))?;
            let cfg = &self.config;
            let (client, rows) = (conn.client(), &self.metrics.snapshot_rows);
            if let Some(links) = &shape.links {
                // A shape that reads the clock stands at the time of its snapshot.
                links.lock().start_at(ferrite_where::pg_micros(self.clock.wall()).unwrap_or_default());
            }
            let info = if shape.is_relational() {
                crate::shapes::snapshot::take_relational_snapshot(
                    client,
                    &shape,
                    cfg.chunk_bytes,
                    cfg.max_shape_size,
                    rows,
                )
                .await
            } else {
                take_initial_snapshot(client, &shape, cfg.chunk_bytes, cfg.max_shape_size, rows).await
            }
            .map_err(|e| match e {
                e @ crate::shapes::snapshot::SnapshotError::TooLarge { .. } => Removal::TooLarge(e.to_string()),
                crate::shapes::snapshot::SnapshotError::Io(e) => {
                    self.metrics.storage_write_errors.fetch_add(1, Ordering::Relaxed);
                    if crate::storage::is_out_of_space(&e) {
                        tracing::error!(data_dir = %cfg.data_dir.display(), handle = %shape.handle, error = %e,
                            "the data directory is full (ENOSPC): the shape's snapshot could not be written; \
                             the shape is dropped and its request answered 503");
                        Removal::StorageFull(e.to_string())
                    } else {
                        Removal::SnapshotFailed(format!("writing the snapshot failed: {e}"))
                    }
                }
                e => Removal::SnapshotFailed(e.to_string()),
            })?;
            // Its transaction committed: the connection is clean.
            conn.release();
            self.registry.persist_ready(&shape, &info).map_err(|e| Removal::SnapshotFailed(e.to_string()))?;
            if let Some(links) = &shape.links {
                shape.log.complete_snapshot();
                let move_in = tokio::task::block_in_place(|| links.lock().finish_loading(&shape, &info))
                    .map_err(|e| Removal::SnapshotFailed(e.to_string()))?;
                // Its values are known: it stops being a candidate for every change (unless a
                // deep dependency is stale already).
                shape.update_value_index(&self.registry.value_index);
                shape.finish_snapshot(info.clone()).map_err(|e| Removal::SnapshotFailed(e.to_string()))?;
                shape.log.sync(true).map_err(|e| Removal::SnapshotFailed(e.to_string()))?;
                if move_in {
                    tokio::spawn(run_move_in(self.clone(), shape.clone()));
                }
                if shape.filter.reads_time() {
                    tokio::spawn(follow_clock(self.clone(), shape.clone()));
                }
            }
            Ok::<_, Removal>(())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(handle = %shape.handle, "snapshot complete"),
            Err(why) => {
                tracing::warn!(handle = %shape.handle, reason = ?why, "snapshot failed");
                self.registry.remove(&shape.handle, why);
            }
        }
    }
}

/// Reads the rows moving into a relational shape and splices them into its log (see
/// [`crate::shapes::relational`]), as many times as values keep being owed. A failure to reach
/// Postgres is retried with backoff; the shape's transactions wait meanwhile, nothing is lost.
pub async fn run_move_in(state: Arc<AppState>, shape: Arc<Shape>) {
    use crate::shapes::relational::MoveInOutcome;
    let Some(links) = &shape.links else { return };
    let mut failures = 0u32;
    loop {
        if shape.removed().is_some() {
            return;
        }
        let Some(request) = links.lock().move_in_request() else { return };
        let started = std::time::Instant::now();
        let read = read_move_in(&state, &shape, &request).await;
        let (info, rows, results, clock) = match read {
            Ok(r) => r,
            Err(e) if e.contains("max_shape_size") => {
                tracing::warn!(handle = %shape.handle, error = %e, "move-in too large; the shape is removed");
                state.registry.remove(&shape.handle, Removal::TooLarge(e));
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(handle = %shape.handle, error = %e, attempt = failures, "move-in query failed; retrying");
                let wait = [50u64, 200, 1000, 5000][(failures as usize - 1).min(3)];
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                continue;
            }
        };
        failures = 0;
        state.metrics.move_in_time.observe(started.elapsed());
        // Every transaction the snapshot holds must have reached the shape first, so that the
        // rows land after them in its log: wait until the stream has passed the snapshot.
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            if shape.removed().is_some() {
                return;
            }
            if state.stream.lock().clone().covers(info.wal_lsn) {
                break;
            }
            // Quick when the stream is about to pass it; patient when replication is down.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
        }
        let outcome = tokio::task::block_in_place(|| {
            let outcome = links.lock().finish_move_in(&shape, &request, &info, &rows, results, &clock)?;
            shape.update_value_index(&state.registry.value_index);
            shape.log.sync(true)?;
            // Readable now: the log is complete again, unless more is owed.
            links.lock().settle();
            Ok::<_, std::io::Error>(outcome)
        });
        match outcome {
            Ok(MoveInOutcome::Done) => {
                state.metrics.move_ins.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(MoveInOutcome::Again) => {
                state.metrics.move_ins.fetch_add(1, Ordering::Relaxed);
            }
            // The snapshot does not hold a transaction the shape already applied: it committed
            // an instant ago. Read again.
            Ok(MoveInOutcome::TooEarly) => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
            Err(e) => {
                tracing::warn!(handle = %shape.handle, error = %e, "writing a move-in failed; the shape starts over");
                state.registry.remove(&shape.handle, Removal::Rotated);
                return;
            }
        }
    }
}

/// What a move-in read: the snapshot, the outer rows, the refreshed deep results, what the
/// clock moved.
type MoveInRead = (
    ferrite_protocol::snapshot_info::SnapshotInfo,
    Vec<Vec<Option<String>>>,
    Vec<std::collections::HashSet<ferrite_core::deps::Projected>>,
    crate::shapes::relational::ClockRead,
);

/// Reads, in one REPEATABLE READ snapshot, the results of the deep dependencies `request`
/// refreshes, then the rows of the shape's table that match its where clause and compare equal
/// to the values moving in (those `request` owes, and those that entered the refreshed
/// results). Bounded by `max_shape_size`.
async fn read_move_in(
    state: &AppState,
    shape: &Shape,
    request: &crate::shapes::relational::MoveInRequest,
) -> Result<MoveInRead, String> {
    use ferrite_pg::row_query::{Among, RowQuery};
    let conn = state.snapshot_pool.get().await.map_err(|e| e.to_string())?;
    let snapshot = ferrite_pg::snapshot::Snapshot::begin(conn.client(), None).await.map_err(|e| e.to_string())?;
    let info = snapshot.info().clone();
    let limit = state.config.max_shape_size;
    let mut bytes = 0u64;
    let mut count = |row: &[Option<String>]| -> Result<(), String> {
        bytes += crate::shapes::snapshot::row_bytes(row);
        if limit > 0 && bytes > limit {
            return Err(format!("the rows moving in exceed max_shape_size ({limit} bytes)"));
        }
        Ok(())
    };
    let mut among = request.among();
    let mut results = Vec::with_capacity(request.refresh.len());
    for refresh in &request.refresh {
        let q = &refresh.query;
        let mut stream = snapshot
            .rows(&RowQuery::values(&q.table, q.filter.as_ref(), None, &[]))
            .await
            .map_err(|e| e.to_string())?;
        let mut result = std::collections::HashSet::new();
        while let Some(row) = stream.values().await.map_err(|e| e.to_string())? {
            count(&row)?;
            let value: ferrite_core::deps::Projected =
                q.columns.iter().map(|&c| row.get(c).cloned().flatten()).collect();
            if !value.iter().any(Option::is_none) {
                result.insert(value);
            }
        }
        drop(stream);
        let moving = refresh.moving_in(&result);
        if !moving.is_empty() {
            among.push(Among {
                columns: refresh.outer_columns.clone(),
                values: moving.into_iter().map(|v| v.into_iter().map(Option::unwrap_or_default).collect()).collect(),
            });
        }
        results.push(result);
    }
    // The clock: the rows whose standing may differ between the shape's time and the new one,
    // and the next boundary after it.
    let mut clock = crate::shapes::relational::ClockRead::default();
    if let (Some((from, to)), Some(clause)) = (request.advance, shape.filter.where_clause.as_ref()) {
        let query = RowQuery::changing(&shape.filter.table, clause, &shape.filter.time_terms, from, to);
        let mut stream = snapshot.rows(&query).await.map_err(|e| e.to_string())?;
        while let Some(row) = stream.values().await.map_err(|e| e.to_string())? {
            count(&row)?;
            clock.rows.push(row);
        }
        drop(stream);
        clock.due =
            crate::shapes::snapshot::next_boundary(&snapshot, &shape.filter, to).await.map_err(|e| e.to_string())?;
    }
    let mut rows = Vec::new();
    // Nothing moving in: no rows to read (an empty restriction would read them all).
    if !among.is_empty() {
        let query = RowQuery::values(&shape.filter.table, shape.filter.where_clause.as_ref(), request.now, &among);
        let mut stream = snapshot.rows(&query).await.map_err(|e| e.to_string())?;
        while let Some(row) = stream.values().await.map_err(|e| e.to_string())? {
            count(&row)?;
            rows.push(row);
        }
    }
    snapshot.commit().await.map_err(|e| e.to_string())?;
    conn.release();
    Ok((info, rows, results, clock))
}

/// Holds on shared dependency nodes taken for a shape being created ([`AppState::hold_nodes`]).
struct NodeHolds {
    state: Arc<AppState>,
    keys: Vec<String>,
    /// A node this request was loading when it was dropped: those waiting for it are told.
    loading: Option<String>,
    kept: bool,
}

impl NodeHolds {
    /// The shape took them over.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for NodeHolds {
    fn drop(&mut self) {
        let nodes = &self.state.registry.nodes;
        if let Some(key) = self.loading.take() {
            nodes.abandon(&key);
        }
        if !self.kept {
            for key in &self.keys {
                nodes.release(key);
            }
        }
    }
}

/// Follows the clock for a shape whose where clause reads it: sleeps until its next time
/// boundary ([`crate::shapes::relational::Links::due`]) — woken sooner when a new row brings the
/// boundary forward, or when a test moves its manual clock — then asks for the shape's time to
/// advance, which a move-in makes ([`run_move_in`]). Ends when the shape is removed.
pub async fn follow_clock(state: Arc<AppState>, shape: Arc<Shape>) {
    let Some(links) = &shape.links else { return };
    let mut removed = shape.removed_watch();
    loop {
        if shape.removed().is_some() {
            return;
        }
        let (due, wake) = {
            let l = links.lock();
            if l.now().is_none() {
                return;
            }
            (l.due(), l.wake())
        };
        // Created before reading the clock, so that a change meanwhile still wakes the wait.
        let advanced = state.clock.advanced();
        let notified = wake.notified();
        let now = ferrite_where::pg_micros(state.clock.wall()).unwrap_or(i64::MAX);
        match due {
            Some(due) if due <= now => {
                if links.lock().request_advance(now) {
                    tokio::spawn(run_move_in(state.clone(), shape.clone()));
                }
                // The advance sets the next boundary (and wakes this task) when it is done; a
                // snapshot or move-in under way makes it first.
                tokio::select! {
                    _ = notified => {}
                    _ = advanced => {}
                    _ = removed.changed() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
            _ => {
                let sleep = due.map_or(std::time::Duration::from_secs(3600), |d| {
                    std::time::Duration::from_micros((d - now).max(0) as u64)
                });
                tokio::select! {
                    _ = notified => {}
                    _ = advanced => {}
                    _ = removed.changed() => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
        }
    }
}

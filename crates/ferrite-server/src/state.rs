//! Shared server state and the one place that creates shapes (Postgres checks, publication,
//! registry entry, snapshot task).

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::shapes::registry::CreateError;
use crate::shapes::snapshot::take_initial_snapshot;
use crate::shapes::{Registry, Removal, Shape};
use ferrite_core::shape::{ShapeDefinition, ShapeError, ShapeFilter};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Postgres connections for presence admission checks (one indexed row read each).
const PRESENCE_CONNECTIONS: usize = 2;

/// How many recent transaction arrival times are kept.
pub const RECEIPTS: usize = 8192;

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
    /// Where the server reads the time (see [`ferrite_protocol::clock`]); the registry,
    /// presence and the writer hold clones of it.
    pub clock: ferrite_protocol::clock::Clock,
    create_lock: Mutex<()>,
    db: Mutex<Option<tokio_postgres::Client>>,
    published: parking_lot::Mutex<HashSet<u32>>,
}

/// Bytes of compressed shape responses kept for reuse.
const COMPRESSED_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl AppState {
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
            clock,
            config,
            registry,
            metrics: Arc::new(Metrics::default()),
            global_lsn: Arc::new(AtomicU64::new(0)),
            replication_ready: Arc::new(AtomicBool::new(false)),
            receipts: parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(RECEIPTS)),
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

    /// The shape for `def`, created (and its snapshot started) if there is none.
    pub async fn get_or_create(self: &Arc<Self>, def: &ShapeDefinition) -> Result<Arc<Shape>, ShapeRequestError> {
        if let Some(s) = self.registry.find(def) {
            return Ok(s);
        }
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
        // Validate before touching the publication.
        ShapeFilter::compile(def, Arc::new(table.clone()))?;
        if !self.published.lock().contains(&table.oid) {
            let publication = self.config.publication.clone();
            let name = def.table.clone();
            self.with_db(|c| {
                Box::pin(async move { ferrite_pg::replication::add_table_to_publication(c, &publication, &name).await })
            })
            .await?
            .map_err(|e| ShapeRequestError::Internal(format!("could not add {} to the publication: {e}", def.table)))?;
            self.published.lock().insert(table.oid);
        }
        self.registry.evict_to(self.config.max_shapes);
        let shape = self.registry.create(def.clone(), table).map_err(|e| match e {
            CreateError::Shape(e) => e.into(),
            CreateError::Io(e) => ShapeRequestError::Internal(format!("shape storage error: {e}")),
        })?;
        self.metrics.shapes_created.fetch_add(1, Ordering::Relaxed);
        tracing::info!(handle = %shape.handle, table = %def.table, "shape created");
        let state = self.clone();
        let s = shape.clone();
        tokio::spawn(async move { state.run_snapshot(s).await });
        Ok(shape)
    }

    async fn run_snapshot(self: Arc<Self>, shape: Arc<Shape>) {
        let result = async {
            let conn = self.snapshot_pool.get().await.map_err(|e| Removal::SnapshotFailed(e.to_string()))?;
            let cfg = &self.config;
            let info = take_initial_snapshot(
                conn.client(),
                &shape,
                cfg.chunk_bytes,
                cfg.max_shape_size,
                &self.metrics.snapshot_rows,
            )
            .await
            .map_err(|e| match e {
                e @ crate::shapes::snapshot::SnapshotError::TooLarge { .. } => Removal::TooLarge(e.to_string()),
                e => Removal::SnapshotFailed(e.to_string()),
            })?;
            // Its transaction committed: the connection is clean.
            conn.release();
            self.registry.persist_ready(&shape, &info).map_err(|e| Removal::SnapshotFailed(e.to_string()))?;
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

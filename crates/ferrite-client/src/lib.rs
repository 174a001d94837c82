//! `ferrite-client`: an app's local replica of Ferrite shapes, in one SQLite file.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferrite_client::ClientError> {
//! use ferrite_client::{Client, ShapeDef, TokenSource};
//! let client = Client::open("app.db", "http://127.0.0.1:3000", TokenSource::None)?;
//! client.sync(&ShapeDef::table("steps").filter("pipeline_id = '7f3c…'")).await?;
//! let rows = client.query("SELECT name FROM steps ORDER BY position", &[])?;
//! # Ok(()) }
//! ```
//!
//! Each shape's rows land in a local table of the same name (or one you choose) that the app
//! queries with ordinary SQL. The shape's handle and offset are stored with its rows, in the same
//! SQLite transaction, so a restart resumes where it stopped without downloading again, and a
//! 409 (the server replaced the shape) starts the shape over without touching other data.
//!
//! [`Client::sync`] catches a shape up once; [`Client::subscribe`] keeps it live in the
//! background (pushing queued writes, reconnecting with backoff). [`Client::write`] applies a
//! transaction locally at once and queues it durably ([`outbox`]); [`Client::push`] sends the
//! queue; rejected transactions are rolled back locally, accepted ones stay until their txid
//! comes back through a shape.

#![warn(missing_docs)]

pub mod checksum;
mod fast_rows;
pub mod outbox;
mod shape;
pub mod store;
mod sync;
pub mod tags;
pub mod tree;

pub use checksum::Verification;
/// The wire protocol the client speaks (shared with the server).
pub use ferrite_protocol as protocol;
pub use ferrite_protocol::write_protocol::{Rejection, RejectionCode, TransactionResult};
pub use outbox::{Change, LostChange, Merge, QueuedTransaction, Values};
pub use shape::ShapeDef;
pub use sync::{ConnectionState, PushReport, Status, Subscription, SyncReport, DEFAULT_BACKOFF};
pub use tree::{Include, Tree, TreeReport};

use ferrite_protocol::clock::Clock;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A new random (version 4) UUID in its text form: the key for a row created offline, unique
/// without asking the server (the write protocol expects client-generated keys).
pub fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// How durable a local write is when [`Client::write`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Synced to the disk (fsync of the write-ahead log): survives power loss and OS crashes.
    #[default]
    Disk,
    /// Handed to the OS: survives the app crashing or being killed, not power loss; saves the
    /// fsync (a write then takes a fraction of a millisecond instead of a disk flush).
    Os,
}

/// Where the bearer token for each request comes from.
#[derive(Clone, Default)]
pub enum TokenSource {
    /// No token (`auth.mode = "insecure"`).
    #[default]
    None,
    /// The same token for every request.
    Static(String),
    /// Asked before every request (tokens that expire and get refreshed).
    Callback(Arc<dyn Fn() -> Option<String> + Send + Sync>),
}

impl TokenSource {
    fn token(&self) -> Option<String> {
        match self {
            TokenSource::None => None,
            TokenSource::Static(t) => Some(t.clone()),
            TokenSource::Callback(f) => f(),
        }
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The local database failed.
    #[error("local database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The server could not be reached (the client retries).
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server refused the request; `status` is its HTTP status.
    #[error("server answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// Seconds the server asked to wait (`retry-after`), if any.
        retry_after: Option<u64>,
    },
    /// The server sent something this client does not understand.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A local write names a table no shape has synced yet (its columns are unknown).
    #[error("local table {0} is not synced yet: sync its shape before writing to it")]
    NotSynced(String),
    /// A local write is malformed (unknown column, missing key).
    #[error("invalid write: {0}")]
    Invalid(String),
    /// An update or delete names a row the replica does not have (never synced into it, outside
    /// its shape, or already deleted locally): nothing was written. The app cannot have shown the
    /// row, so the write is a mistake; to create a row, insert it.
    #[error("invalid write: local table {table} has no row with key {key}: an update or delete needs the row in the replica (sync a shape that holds it; insert to create it)")]
    NoRow {
        /// The local table.
        table: String,
        /// The key, as a JSON object of column → text.
        key: String,
    },
    /// `max_offline_queue` transactions are already waiting to be pushed; nothing was written.
    #[error("the offline queue is full ({limit} transactions wait to be pushed): push before writing more")]
    QueueFull {
        /// The limit.
        limit: usize,
    },
    /// Another shape already syncs into this local table.
    #[error("local table {local_table} already holds another shape ({definition}); choose another with ShapeDef::into_table")]
    TableInUse {
        /// The table.
        local_table: String,
        /// The definition it holds.
        definition: String,
    },
}

/// Default most changes per transaction (the server's default `max_mutations_per_transaction`).
const DEFAULT_MAX_CHANGES: usize = 500;
/// Default most changes per push request (the server's default `max_mutations_per_request`).
const DEFAULT_BATCH_CHANGES: usize = 5_000;

pub(crate) struct Inner {
    /// The replica; locked only on blocking threads or briefly, never across an `.await`.
    pub(crate) db: Mutex<rusqlite::Connection>,
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: TokenSource,
    /// Most unsent transactions kept (`max_offline_queue`).
    pub(crate) max_queue: std::sync::atomic::AtomicUsize,
    /// Transactions per push request (`sync_batch_size`).
    pub(crate) batch: std::sync::atomic::AtomicUsize,
    /// Most changes in one transaction (`max_mutations_per_transaction`).
    pub(crate) max_changes: std::sync::atomic::AtomicUsize,
    /// Most changes in one push request of several transactions (`max_mutations_per_request`).
    pub(crate) batch_changes: std::sync::atomic::AtomicUsize,
    /// Running totals for [`Client::metrics`].
    pub(crate) counters: Counters,
    /// Waits between failed attempts of a subscription ([`Client::set_backoff`]).
    pub(crate) backoff: Mutex<Vec<std::time::Duration>>,
    /// How local writes are committed ([`Client::set_durability`]).
    pub(crate) durability: Mutex<Durability>,
    /// Bumped by every local write: subscriptions push at once and keep `Offline { pending }`
    /// current.
    pub(crate) outbox_changed: tokio::sync::watch::Sender<u64>,
    /// Serializes pushes.
    pub(crate) push_lock: tokio::sync::Mutex<()>,
    /// Where the time comes from: HLC stamps, when shapes last synced, retention.
    pub(crate) clock: Clock,
    /// How often shapes are compared with the server's digest ([`Client::set_checksum_interval`]).
    pub(crate) checksum_interval: Mutex<Option<std::time::Duration>>,
    /// Per local table: when it was last compared, and whether it is being repaired.
    pub(crate) checks: Mutex<std::collections::HashMap<String, CheckState>>,
}

/// Totals since the client was opened.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) bytes_received: std::sync::atomic::AtomicU64,
    pub(crate) bytes_sent: std::sync::atomic::AtomicU64,
    pub(crate) applied: std::sync::atomic::AtomicU64,
    pub(crate) merged: std::sync::atomic::AtomicU64,
    pub(crate) rejected: std::sync::atomic::AtomicU64,
    pub(crate) checksums_verified: std::sync::atomic::AtomicU64,
    pub(crate) checksum_mismatches: std::sync::atomic::AtomicU64,
    pub(crate) checksum_repairs: std::sync::atomic::AtomicU64,
    pub(crate) checksum_unrepaired: std::sync::atomic::AtomicU64,
}

/// When a shape was last checked against the server's digest ([`checksum`]).
pub(crate) struct CheckState {
    /// `None`: due at the next up-to-date (a shape read back from storage).
    pub(crate) last: Option<std::time::Instant>,
    /// Started over after a mismatch: checked again at its next up-to-date.
    pub(crate) repairing: bool,
    /// Still differed after being fetched afresh: not started over again.
    pub(crate) gave_up: bool,
}

impl CheckState {
    /// A shape first synced by this client now: its rows were just fetched, so its first check
    /// is an interval away.
    pub(crate) fn fresh(now: std::time::Instant) -> CheckState {
        CheckState { last: Some(now), repairing: false, gave_up: false }
    }
}

/// How often a shape is compared with the server's digest unless
/// [`Client::set_checksum_interval`] says otherwise.
pub const DEFAULT_CHECKSUM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// What an app can show about syncing (see [`Client::metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Local transactions not yet answered by the server.
    pub pending: usize,
    /// Transactions the server accepted whose changes have not come back through a shape yet
    /// (their rows still show the local version).
    pub unconfirmed: usize,
    /// When a shape last applied a response (Unix ms), if ever.
    pub last_sync_ms: Option<i64>,
    /// Response bytes received from the shape API since the client was opened.
    pub bytes_received: u64,
    /// Request bytes sent to `/v1/transactions` since the client was opened.
    pub bytes_sent: u64,
    /// Pushed transactions the server answered `applied`, since opening.
    pub applied: u64,
    /// … answered `merged` (the conflict policy kept other values for some columns).
    pub merged: u64,
    /// … answered `rejected` (rolled back locally).
    pub rejected: u64,
    /// Shapes compared with the server's digest ([`Client::verify`]), since opening.
    pub checksums_verified: u64,
    /// … found to differ from the server's rows.
    pub checksum_mismatches: u64,
    /// … started over (fetched afresh) because they differed.
    pub checksum_repairs: u64,
    /// … that still differed after being fetched afresh (logged as errors; not retried).
    pub checksum_unrepaired: u64,
}

/// A local replica: one SQLite file synced from one Ferrite server.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl Client {
    /// Opens (or creates) the replica at `path`, syncing from `server_url` (e.g.
    /// `http://127.0.0.1:3000`).
    pub fn open(path: impl AsRef<Path>, server_url: &str, token: TokenSource) -> Result<Client, ClientError> {
        Self::open_with_clock(path, server_url, token, Clock::system())
    }

    /// [`Client::open`], reading the time from `clock` instead of the system's: how a test
    /// checks shape retention ([`ShapeDef::retain_for`]) by advancing a
    /// [`ManualClock`](ferrite_protocol::clock::ManualClock) instead of waiting it out.
    pub fn open_with_clock(
        path: impl AsRef<Path>,
        server_url: &str,
        token: TokenSource,
        clock: Clock,
    ) -> Result<Client, ClientError> {
        let db = rusqlite::Connection::open(path)?;
        store::init(&db)?;
        outbox::init(&db)?;
        outbox::client_id(&db)?; // created once, with the file
        let mut db = db;
        store::drop_expired(&mut db, clock.wall_ms() as i64)?;

        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                db: Mutex::new(db),
                http,
                base: server_url.trim_end_matches('/').to_string(),
                token,
                max_queue: 1000.into(),
                batch: 100.into(),
                max_changes: DEFAULT_MAX_CHANGES.into(),
                batch_changes: DEFAULT_BATCH_CHANGES.into(),
                counters: Counters::default(),
                backoff: Mutex::new(DEFAULT_BACKOFF.to_vec()),
                durability: Mutex::new(Durability::default()),
                outbox_changed: tokio::sync::watch::Sender::new(0),
                push_lock: tokio::sync::Mutex::new(()),
                checksum_interval: Mutex::new(Some(DEFAULT_CHECKSUM_INTERVAL)),
                checks: Mutex::new(std::collections::HashMap::new()),
                clock,
            }),
        })
    }

    /// Runs a read-only query on the replica; rows as JSON values (integers, reals, text, null).
    pub fn query(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Vec<serde_json::Value>>, ClientError> {
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = db.prepare(sql)?;
        let n = stmt.column_count();
        let rows = stmt.query_map(params, |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => serde_json::Value::Null,
                        rusqlite::types::ValueRef::Integer(v) => v.into(),
                        rusqlite::types::ValueRef::Real(v) => v.into(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                        rusqlite::types::ValueRef::Blob(b) => format!("{b:?}").into(),
                    })
                })
                .collect()
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How often a synced shape is compared with the server's convergence digest
    /// ([`checksum`]): at its first up-to-date once `interval` has passed since the last check
    /// (or since the client started), default [`DEFAULT_CHECKSUM_INTERVAL`]. A check reads the
    /// whole local table, and for a relational shape (an include tree's members) asks the
    /// server, which replays the shape's log; `Duration::ZERO` checks at every up-to-date,
    /// `None` never.
    pub fn set_checksum_interval(&self, interval: Option<std::time::Duration>) {
        *self.inner.checksum_interval.lock().unwrap_or_else(|p| p.into_inner()) = interval;
    }

    /// Sets `max_offline_queue` (default 1,000) and `sync_batch_size` (default 100); the server
    /// advertises its values at `GET /v1/config`.
    pub fn set_limits(&self, max_offline_queue: usize, sync_batch_size: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.inner.max_queue.store(max_offline_queue.max(1), Relaxed);
        self.inner.batch.store(sync_batch_size.max(1), Relaxed);
    }

    /// Sets the most changes in one transaction (default 500; a bigger [`Client::write`] is
    /// refused locally, since the server would reject it) and in one push request of several
    /// transactions (default 5,000); the server advertises its `max_mutations_per_transaction`
    /// and `max_mutations_per_request` at `GET /v1/config`.
    pub fn set_mutation_limits(&self, per_transaction: usize, per_request: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.inner.max_changes.store(per_transaction.max(1), Relaxed);
        self.inner.batch_changes.store(per_request.max(1), Relaxed);
    }

    /// Sets the waits between a subscription's failed attempts (default [`DEFAULT_BACKOFF`]: 1, 2,
    /// 5, 10, 30 s; the last step repeats; each jittered by ±20%; a server's `retry-after` wins).
    /// An app on a metered link may want a longer tail, a test a shorter one.
    pub fn set_backoff(&self, schedule: &[std::time::Duration]) {
        *self.inner.backoff.lock().unwrap_or_else(|p| p.into_inner()) = schedule.to_vec();
    }

    /// Writes one transaction locally: visible at once in the local tables, queued durably for
    /// [`Client::push`]. Returns its client transaction id. Errors (nothing written) when the
    /// queue is full, the write names an unknown table, column or key, or an update or delete
    /// names a row the replica does not have ([`ClientError::NoRow`], also for a row an earlier
    /// change of the same transaction deleted).
    pub fn write(&self, changes: &[Change]) -> Result<u64, ClientError> {
        let max_changes = self.inner.max_changes.load(std::sync::atomic::Ordering::Relaxed);
        if changes.len() > max_changes {
            return Err(ClientError::Invalid(format!(
                "a transaction holds at most {max_changes} changes (the server's max_mutations_per_transaction), got {}",
                changes.len()
            )));
        }
        let max = self.inner.max_queue.load(std::sync::atomic::Ordering::Relaxed);
        let durability = *self.inner.durability.lock().unwrap_or_else(|p| p.into_inner());
        let mut db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        // Synced rows can be fetched again; a local write exists only here. So only the
        // outbox's commits pay for the disk flush.
        if durability == Durability::Disk {
            db.pragma_update(None, "synchronous", "FULL")?;
        }
        let written = outbox::write(&mut db, changes, max, self.inner.clock.wall_ms());
        if durability == Durability::Disk {
            db.pragma_update(None, "synchronous", "NORMAL")?;
        }
        drop(db);
        if written.is_ok() {
            self.inner.outbox_changed.send_modify(|n| *n += 1);
        }
        written
    }

    /// Sets how durable a local write is when [`Client::write`] returns (default
    /// [`Durability::Disk`]).
    pub fn set_durability(&self, durability: Durability) {
        *self.inner.durability.lock().unwrap_or_else(|p| p.into_inner()) = durability;
    }

    /// Transactions written locally and not yet answered by the server.
    pub fn pending(&self) -> Result<usize, ClientError> {
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        outbox::pending_count(&db)
    }

    /// The transactions in the outbox, oldest first: waiting to be pushed (or sent and not
    /// answered yet), and accepted ones waiting for their changes to come back through a shape.
    pub fn queued(&self) -> Result<Vec<QueuedTransaction>, ClientError> {
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        outbox::queued_transactions(&db)
    }

    /// Sync figures for the app to show.
    pub fn metrics(&self) -> Result<Metrics, ClientError> {
        use std::sync::atomic::Ordering::Relaxed;
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        let last_sync_ms: Option<i64> =
            db.query_row("SELECT max(last_sync_ms) FROM _ferrite_shapes", [], |r| r.get(0))?;
        let c = &self.inner.counters;
        Ok(Metrics {
            pending: outbox::pending_count(&db)?,
            unconfirmed: outbox::unconfirmed_count(&db)?,
            last_sync_ms,
            bytes_received: c.bytes_received.load(Relaxed),
            bytes_sent: c.bytes_sent.load(Relaxed),
            applied: c.applied.load(Relaxed),
            merged: c.merged.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            checksums_verified: c.checksums_verified.load(Relaxed),
            checksum_mismatches: c.checksum_mismatches.load(Relaxed),
            checksum_repairs: c.checksum_repairs.load(Relaxed),
            checksum_unrepaired: c.checksum_unrepaired.load(Relaxed),
        })
    }

    /// Drops the local rows of shapes unused beyond their retention ([`ShapeDef::retain_for`]),
    /// except tables with local writes still pending. Also runs when the replica is opened.
    /// Returns the local tables dropped.
    pub fn drop_expired(&self) -> Result<Vec<String>, ClientError> {
        let mut db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        store::drop_expired(&mut db, self.inner.clock.wall_ms() as i64)
    }

    /// Where a shape's sync stands locally (registering it on first use).
    pub fn position(&self, def: &ShapeDef) -> Result<store::ShapePosition, ClientError> {
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        let position = store::position(&db, def)?;
        // The first time this client touches a shape: rows read back from storage are compared
        // with the server's digest at their first up-to-date.
        let mut checks = self.inner.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.entry(def.local_table()).or_insert_with(|| match position.offset.as_str() {
            "-1" => CheckState::fresh(std::time::Instant::now()),
            _ => CheckState { last: None, repairing: false, gave_up: false },
        });
        Ok(position)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn new_uuids_are_version_4_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| super::new_uuid()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![8, 4, 4, 4, 12], "{id}");
            assert!(parts[2].starts_with('4') && "89ab".contains(&parts[3][..1]), "{id}");
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        }
    }
}

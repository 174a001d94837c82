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
//! Status so far covers the read half: [`Client::sync`] catches a shape up once;
//! [`Client::subscribe`] keeps it live in the background, reconnecting with backoff.
//! The write half (outbox, optimistic overlay) is not built yet.

mod shape;
pub mod store;
mod sync;

pub use shape::ShapeDef;
pub use sync::{Status, Subscription, SyncReport};

use std::path::Path;
use std::sync::{Arc, Mutex};

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
    /// Another shape already syncs into this local table.
    #[error("local table {local_table} already holds another shape ({definition}); choose another with ShapeDef::into_table")]
    TableInUse {
        /// The table.
        local_table: String,
        /// The definition it holds.
        definition: String,
    },
}

pub(crate) struct Inner {
    /// The replica; locked only on blocking threads or briefly, never across an `.await`.
    pub(crate) db: Mutex<rusqlite::Connection>,
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: TokenSource,
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
        let db = rusqlite::Connection::open(path)?;
        store::init(&db)?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner { db: Mutex::new(db), http, base: server_url.trim_end_matches('/').to_string(), token }),
        })
    }

    /// Runs a read-only query on the replica; rows as JSON values (integers, reals, text, null).
    pub fn query(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Result<Vec<Vec<serde_json::Value>>, ClientError> {
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

    /// Where a shape's sync stands locally (registering it on first use).
    pub fn position(&self, def: &ShapeDef) -> Result<store::ShapePosition, ClientError> {
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        store::position(&db, def)
    }
}

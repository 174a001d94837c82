//! Small pools of Postgres connections, one per use that must not starve the others: the write
//! path ([`crate::writes`]), presence admission ([`crate::presence`]) and snapshots
//! ([`crate::shapes::snapshot`]). A pool opens connections lazily, up to its size, and replaces
//! broken ones on the next checkout; a connection keeps whatever it caches (prepared statements)
//! for as long as it lives.
//!
//! A connection goes back to the pool only when its user says it is clean ([`Pooled::release`]:
//! no transaction open, no session lock held). Dropped any other way — an error, a panic, a
//! future or response body dropped half way — it is closed, which makes Postgres roll back its
//! transaction and release its locks: a stranger's half-applied work can never be committed by
//! the next request that draws the connection.

use ferrite_pg::prepared::PreparedClient;
use ferrite_pg::PgError;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection kind a pool can hold.
pub trait PoolConnection: Send + 'static {
    /// Wraps a freshly opened connection.
    fn open(client: tokio_postgres::Client) -> Self;
    /// Whether the connection is gone (then it is not reused).
    fn is_closed(&self) -> bool;
}

impl PoolConnection for tokio_postgres::Client {
    fn open(client: tokio_postgres::Client) -> Self {
        client
    }
    fn is_closed(&self) -> bool {
        tokio_postgres::Client::is_closed(self)
    }
}

impl PoolConnection for PreparedClient {
    fn open(client: tokio_postgres::Client) -> Self {
        PreparedClient::new(client)
    }
    fn is_closed(&self) -> bool {
        PreparedClient::is_closed(self)
    }
}

struct Inner<C> {
    url: String,
    size: usize,
    idle: Mutex<Vec<C>>,
    slots: Arc<Semaphore>,
}

/// Up to `size` connections to one database.
pub struct Pool<C> {
    inner: Arc<Inner<C>>,
}

/// A checked-out connection; returned to the pool by [`Pooled::release`], closed on any other
/// drop. Owns its place in the pool, so it can live as long as a streamed response.
pub struct Pooled<C: PoolConnection> {
    inner: Arc<Inner<C>>,
    client: Option<C>,
    _permit: OwnedSemaphorePermit,
}

/// Why no connection was handed out.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection stayed busy for the whole wait.
    #[error("all {0} connections are busy")]
    Busy(usize),
    /// Opening a connection failed.
    #[error("{0}")]
    Connect(#[from] PgError),
}

impl<C: PoolConnection> Pool<C> {
    /// A pool that opens connections lazily.
    pub fn new(url: &str, size: usize) -> Pool<C> {
        let size = size.max(1);
        let inner =
            Inner { url: url.to_string(), size, idle: Mutex::new(vec![]), slots: Arc::new(Semaphore::new(size)) };
        Pool { inner: Arc::new(inner) }
    }

    /// Waits for a free slot and returns a live connection.
    pub async fn get(&self) -> Result<Pooled<C>, PgError> {
        let permit =
            self.inner.slots.clone().acquire_owned().await.map_err(|_| PgError::Connection("pool closed".into()))?;
        self.checkout(permit).await
    }

    /// Like [`Pool::get`], but gives up with [`PoolError::Busy`] after `wait`.
    pub async fn get_within(&self, wait: Duration) -> Result<Pooled<C>, PoolError> {
        let permit = match tokio::time::timeout(wait, self.inner.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => return Err(PoolError::Busy(self.inner.size)),
        };
        Ok(self.checkout(permit).await?)
    }

    async fn checkout(&self, permit: OwnedSemaphorePermit) -> Result<Pooled<C>, PgError> {
        let reused = {
            let mut idle = self.inner.idle.lock();
            loop {
                match idle.pop() {
                    Some(c) if c.is_closed() => continue,
                    other => break other,
                }
            }
        };
        let client = match reused {
            Some(c) => c,
            None => C::open(ferrite_pg::connect::connect(&self.inner.url).await?),
        };
        Ok(Pooled { inner: self.inner.clone(), client: Some(client), _permit: permit })
    }
}

impl<C: PoolConnection> Pooled<C> {
    /// The connection.
    pub fn client(&self) -> &C {
        self.client.as_ref().expect("present until released or dropped")
    }

    /// Returns the connection to the pool. Call only when its session is clean: every
    /// transaction ended and every session lock released.
    pub fn release(mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                self.inner.idle.lock().push(c);
            }
        }
    }
}

impl<C: PoolConnection> Drop for Pooled<C> {
    /// Not released: the session state (an open transaction, a held lock) is unknown, so the
    /// connection is closed rather than reused.
    fn drop(&mut self) {
        self.client = None;
    }
}

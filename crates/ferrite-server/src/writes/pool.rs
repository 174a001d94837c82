//! A small pool of Postgres connections for applying client transactions: each request holds one
//! connection for its batch; broken connections are replaced on the next checkout. Connections
//! keep their prepared statements ([`PreparedClient`]) for as long as they live.

use ferrite_pg::prepared::PreparedClient;
use ferrite_pg::PgError;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Up to `size` connections to one database.
pub struct Pool {
    url: String,
    idle: Mutex<Vec<PreparedClient>>,
    slots: Arc<Semaphore>,
}

/// A checked-out connection; returned to the pool on drop unless it broke.
pub struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<PreparedClient>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    /// A pool that opens connections lazily.
    pub fn new(url: &str, size: usize) -> Pool {
        Pool { url: url.to_string(), idle: Mutex::new(vec![]), slots: Arc::new(Semaphore::new(size.max(1))) }
    }

    /// Waits for a free slot and returns a live connection.
    pub async fn get(&self) -> Result<Pooled<'_>, PgError> {
        let permit = self.slots.clone().acquire_owned().await.map_err(|_| PgError::Connection("pool closed".into()))?;
        let reused = {
            let mut idle = self.idle.lock();
            loop {
                match idle.pop() {
                    Some(c) if c.is_closed() => continue,
                    other => break other,
                }
            }
        };
        let client = match reused {
            Some(c) => c,
            None => PreparedClient::new(ferrite_pg::connect::connect(&self.url).await?),
        };
        Ok(Pooled { pool: self, client: Some(client), _permit: permit })
    }
}

impl Pooled<'_> {
    /// The connection.
    pub fn client(&self) -> &PreparedClient {
        self.client.as_ref().expect("present until drop")
    }

    /// Closes the connection instead of returning it to the pool: after an error its session
    /// state (an open transaction, a held lock) is unknown.
    pub fn discard(mut self) {
        self.client = None;
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                self.pool.idle.lock().push(c);
            }
        }
    }
}

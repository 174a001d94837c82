//! A connection that prepares each distinct statement once and reuses it.
//!
//! The write path runs the same few statements per table for every client transaction; parsing
//! and planning them again each time costs Postgres more CPU than executing them. Statements are
//! cached per connection by their SQL text (parameter types are fixed by the text, which always
//! spells its casts).
//!
//! Order matters: the write path pipelines statements (several queries in flight on one
//! connection, e.g. a row write, its result record and COMMIT), relying on each query being sent
//! when it is first polled. So every query goes out in full on its first poll — a cached
//! statement as Bind/Execute, an unknown one as an unnamed Parse/Bind/Execute — and a statement
//! seen for the first time is prepared for the cache only after it ran.

use crate::PgError;
use parking_lot::Mutex;
use std::collections::HashMap;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Statement};

/// Most statements kept per connection; beyond it the cache starts over (update statements vary
/// with the set of columns a client changes).
const MAX_STATEMENTS: usize = 512;

/// A parameter and its Postgres type.
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A client with a statement cache.
pub struct PreparedClient {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

impl PreparedClient {
    /// Wraps a connected client.
    pub fn new(client: Client) -> PreparedClient {
        PreparedClient { client, statements: Mutex::new(HashMap::new()) }
    }

    /// The underlying client (for simple-protocol batches).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Drops every cached statement (after the tables they refer to may have changed).
    pub fn forget_statements(&self) {
        self.statements.lock().clear();
    }

    fn cached(&self, sql: &str) -> Option<Statement> {
        self.statements.lock().get(sql).cloned()
    }

    /// Prepares `sql` for next time (after it ran unnamed). A failure only means no caching.
    async fn remember(&self, sql: &str, params: &[Param<'_>]) {
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        if let Ok(s) = self.client.prepare_typed(sql, &types).await {
            let mut cache = self.statements.lock();
            if cache.len() >= MAX_STATEMENTS {
                cache.clear();
            }
            cache.insert(sql.to_string(), s);
        }
    }

    fn values<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
        params.iter().map(|(v, _)| *v).collect()
    }

    /// All rows of a statement.
    pub async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, PgError> {
        if let Some(s) = self.cached(sql) {
            return Ok(self.client.query(&s, &Self::values(params)).await?);
        }
        let rows = self.client.query_typed(sql, params).await?;
        self.remember(sql, params).await;
        Ok(rows)
    }

    /// The row of a statement returning at most one.
    pub async fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, PgError> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            0 | 1 => Ok(rows.pop()),
            n => Err(PgError::Protocol(format!("expected at most one row, got {n}"))),
        }
    }

    /// The row of a statement returning exactly one.
    pub async fn query_one(&self, sql: &str, params: &[Param<'_>]) -> Result<Row, PgError> {
        self.query_opt(sql, params).await?.ok_or_else(|| PgError::Protocol("expected one row, got none".into()))
    }

    /// Runs a statement; returns the rows it affected.
    pub async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, PgError> {
        if let Some(s) = self.cached(sql) {
            return Ok(self.client.execute(&s, &Self::values(params)).await?);
        }
        let n = self.client.execute_typed(sql, params).await?;
        self.remember(sql, params).await;
        Ok(n)
    }
}

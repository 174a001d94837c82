//! A connection that prepares each distinct statement once and reuses it.
//!
//! The write path runs the same few statements per table for every client transaction; parsing
//! and planning them again each time costs Postgres more CPU than executing them. Statements are
//! cached per connection by their SQL text (parameter types are fixed by the text, which always
//! spells its casts). A cache hit needs no round trip, so concurrent queries on one connection
//! still go out in one pipelined batch.

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

    async fn statement(&self, sql: &str, params: &[Param<'_>]) -> Result<Statement, PgError> {
        if let Some(s) = self.statements.lock().get(sql) {
            return Ok(s.clone());
        }
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        let s = self.client.prepare_typed(sql, &types).await?;
        let mut cache = self.statements.lock();
        if cache.len() >= MAX_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn values<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
        params.iter().map(|(v, _)| *v).collect()
    }

    /// All rows of a statement.
    pub async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, PgError> {
        let s = self.statement(sql, params).await?;
        Ok(self.client.query(&s, &Self::values(params)).await?)
    }

    /// The row of a statement returning at most one.
    pub async fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, PgError> {
        let s = self.statement(sql, params).await?;
        Ok(self.client.query_opt(&s, &Self::values(params)).await?)
    }

    /// The row of a statement returning exactly one.
    pub async fn query_one(&self, sql: &str, params: &[Param<'_>]) -> Result<Row, PgError> {
        let s = self.statement(sql, params).await?;
        Ok(self.client.query_one(&s, &Self::values(params)).await?)
    }

    /// Runs a statement; returns the rows it affected.
    pub async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, PgError> {
        let s = self.statement(sql, params).await?;
        Ok(self.client.execute(&s, &Self::values(params)).await?)
    }
}

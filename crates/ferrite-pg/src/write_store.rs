//! Ferrite's own bookkeeping for the write path, kept in Postgres next to the data so it commits
//! atomically with it (schema `ferrite`):
//!
//! - `ferrite.clients`: per client id, the token subject it is bound to and the highest client
//!   transaction id applied — the exactly-once marker, locked for the duration of each client
//!   transaction so concurrent retries serialize.
//! - `ferrite.client_results`: the recorded result of each recent client transaction, returned
//!   again when a retry arrives.
//! - `ferrite.row_clocks`: per written row, the stamp of the last write to each column, the
//!   values Ferrite last wrote (to notice writes made directly in Postgres since), and for
//!   deleted rows the tombstone (last values and the delete's stamp).
//!
//! The server talks to these tables with ordinary SQL inside the client transaction; this module
//! owns their definition and the row-level SQL around them.

//! Every statement goes out with explicit parameter types (`*_typed`): one round trip each, no
//! separate prepare — the write path's throughput is bounded by round trips.

use crate::PgError;
use serde_json::Value;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient};

/// Creates the bookkeeping schema and tables if they do not exist (idempotent).
pub async fn ensure_write_store(client: &Client) -> Result<(), PgError> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS ferrite;
             CREATE TABLE IF NOT EXISTS ferrite.clients (
                 client_id text PRIMARY KEY,
                 subject text,
                 last_id bigint NOT NULL DEFAULT -1,
                 updated_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS ferrite.client_results (
                 client_id text NOT NULL,
                 id bigint NOT NULL,
                 result jsonb NOT NULL,
                 PRIMARY KEY (client_id, id));
             CREATE TABLE IF NOT EXISTS ferrite.row_clocks (
                 tbl text NOT NULL,
                 key text NOT NULL,
                 clocks jsonb NOT NULL,
                 known jsonb,
                 deleted text,
                 born text,
                 PRIMARY KEY (tbl, key));",
        )
        .await?;
    Ok(())
}

/// The exactly-once marker of one client, locked until the surrounding transaction ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientProgress {
    /// Token subject the client id is bound to (`None` when auth is off or not yet bound).
    pub subject: Option<String>,
    /// Highest client transaction id applied, -1 before the first.
    pub last_id: i64,
    /// The 32-bit xid of the surrounding transaction, as the read path reports it in
    /// `headers.txids` (the upsert gives the transaction its xid).
    pub xid: u32,
}

/// Creates the client's marker if needed and locks it (the upsert's row lock): concurrent
/// requests of one client wait here, so a retry always sees the outcome of the attempt it races
/// with. One round trip.
pub async fn lock_client(tx: &impl GenericClient, client_id: &str) -> Result<ClientProgress, PgError> {
    let row = tx
        .query_typed_one(
            "INSERT INTO ferrite.clients AS c (client_id) VALUES ($1) ON CONFLICT (client_id)
             DO UPDATE SET client_id = c.client_id
             RETURNING c.subject, c.last_id, (txid_current() % 4294967296)::bigint",
            &[(&client_id, Type::TEXT)],
        )
        .await?;
    Ok(ClientProgress { subject: row.get(0), last_id: row.get(1), xid: row.get::<_, i64>(2) as u32 })
}

/// Binds the client id to a token subject on first use.
pub async fn bind_subject(tx: &impl GenericClient, client_id: &str, subject: &str) -> Result<(), PgError> {
    tx.execute_typed(
        "UPDATE ferrite.clients SET subject = $2 WHERE client_id = $1",
        &[(&client_id, Type::TEXT), (&subject, Type::TEXT)],
    )
    .await?;
    Ok(())
}

/// The recorded result of a client transaction, if it is still kept.
pub async fn recorded_result(tx: &impl GenericClient, client_id: &str, id: i64) -> Result<Option<Value>, PgError> {
    let row = tx
        .query_typed_opt(
            "SELECT result FROM ferrite.client_results WHERE client_id = $1 AND id = $2",
            &[(&client_id, Type::TEXT), (&id, Type::INT8)],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Results kept per client for answering retries; older ones are pruned.
pub const RESULTS_KEPT: i64 = 10_000;

/// Records a client transaction's result and advances the client's marker to it (one round
/// trip; every thousandth id also prunes old results).
pub async fn record_result(tx: &impl GenericClient, client_id: &str, id: i64, result: &Value) -> Result<(), PgError> {
    tx.execute_typed(
        "WITH recorded AS (INSERT INTO ferrite.client_results (client_id, id, result) VALUES ($1, $2, $3))
         UPDATE ferrite.clients SET last_id = $2, updated_at = now() WHERE client_id = $1",
        &[(&client_id, Type::TEXT), (&id, Type::INT8), (result, Type::JSONB)],
    )
    .await?;
    if id % 1000 == 0 {
        tx.execute_typed(
            "DELETE FROM ferrite.client_results WHERE client_id = $1 AND id < $2",
            &[(&client_id, Type::TEXT), (&(id - RESULTS_KEPT), Type::INT8)],
        )
        .await?;
    }
    Ok(())
}

/// One row's clocks as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredClocks {
    /// Column → stamp text (`"<ms>-<counter>@<writer>"`).
    pub clocks: serde_json::Map<String, Value>,
    /// Column → text value Ferrite last wrote (or found), `null` for SQL NULL.
    pub known: Option<serde_json::Map<String, Value>>,
    /// For a deleted row: the delete's stamp text.
    pub deleted: Option<String>,
    /// Stamp text of the insert that created the row's current incarnation, when known.
    pub born: Option<String>,
}

/// Serializes writers of one row key until the transaction ends — also while the row does not
/// exist yet, which row locks cannot cover (two clients inserting the same key at once would
/// otherwise both see it absent and one would fail on the primary key). A transaction-scoped
/// advisory lock on a stable 64-bit hash of table and key; a hash collision only serializes two
/// unrelated rows.
pub async fn lock_row_key(tx: &impl GenericClient, table: &str, key: &str) -> Result<(), PgError> {
    tx.query_typed_one("SELECT pg_advisory_xact_lock($1)::text", &[(&row_key_hash(table, key), Type::INT8)])
        .await?;
    Ok(())
}

/// FNV-1a over `table`, a NUL and `key`: the same in every server process.
fn row_key_hash(table: &str, key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in table.bytes().chain(std::iter::once(0)).chain(key.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Loads (and locks) a row's clocks.
pub async fn load_clocks(tx: &impl GenericClient, table: &str, key: &str) -> Result<Option<StoredClocks>, PgError> {
    let row = tx
        .query_typed_opt(
            "SELECT clocks, known, deleted, born FROM ferrite.row_clocks WHERE tbl = $1 AND key = $2 FOR UPDATE",
            &[(&table, Type::TEXT), (&key, Type::TEXT)],
        )
        .await?;
    Ok(row.map(|r| {
        let obj = |v: Option<Value>| match v {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        };
        StoredClocks { clocks: obj(r.get(0)).unwrap_or_default(), known: obj(r.get(1)), deleted: r.get(2), born: r.get(3) }
    }))
}

/// Stores a row's clocks (insert or replace).
pub async fn save_clocks(tx: &impl GenericClient, table: &str, key: &str, c: &StoredClocks) -> Result<(), PgError> {
    let clocks = Value::Object(c.clocks.clone());
    let known = c.known.clone().map(Value::Object);
    tx.execute_typed(
        "INSERT INTO ferrite.row_clocks (tbl, key, clocks, known, deleted, born) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tbl, key) DO UPDATE
         SET clocks = EXCLUDED.clocks, known = EXCLUDED.known, deleted = EXCLUDED.deleted, born = EXCLUDED.born",
        &[
            (&table, Type::TEXT),
            (&key, Type::TEXT),
            (&clocks, Type::JSONB),
            (&known, Type::JSONB),
            (&c.deleted, Type::TEXT),
            (&c.born, Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}

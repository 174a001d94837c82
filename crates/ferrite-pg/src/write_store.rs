//! Ferrite's own bookkeeping for the write path, kept in Postgres next to the data so it commits
//! atomically with it (schema `ferrite`):
//!
//! - `ferrite.client_results`: the recorded result of each recent client transaction, written in
//!   the same Postgres transaction as its effects. The highest recorded id of a client is its
//!   exactly-once marker: an id at or below it is a retry, answered from here. A client is named
//!   by its *client key*: the client id, and with JWT auth `<client id>@<token subject>`, so two
//!   users' clients never share state even when they send the same client id (client ids cannot
//!   contain `@`, so the two forms never collide).
//! - `ferrite.row_clocks`: per written row, the stamp of the last write to each column, the
//!   values Ferrite last wrote (to notice writes made directly in Postgres since), the stamp of
//!   the insert that created it, and for deleted rows the tombstone (last values and the
//!   delete's stamp).
//! - `ferrite.audit`: the audit trail of client transactions ([`crate::audit`]).
//!
//! Concurrency: a request holds its client's session-level advisory lock from its first client
//! transaction to its last, so the requests of one client (say, a retry racing the original)
//! run one after the other and each sees what the other recorded. Writers of one row key are
//! serialized by a transaction-level advisory lock, which also covers rows that do not exist
//! yet. Both lock spaces are disjoint (the two-integer and the bigint forms of advisory locks
//! never collide), and a hash collision only serializes two unrelated clients or rows.
//!
//! Statements are prepared once per connection ([`PreparedClient`]) and carry explicit types.

use crate::prepared::{Param, PreparedClient};
use crate::PgError;
use serde_json::Value;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// Creates the bookkeeping schema and tables if they do not exist (idempotent, and safe when
/// several servers start at once: it runs under a transaction-level advisory lock).
///
/// Earlier versions bound client ids to their first token subject in `ferrite.clients`; their
/// recorded results are moved to the `<client id>@<subject>` client keys and that table dropped,
/// so no retry is applied twice across the upgrade.
pub async fn ensure_write_store(client: &Client) -> Result<(), PgError> {
    client
        .batch_execute(&format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(4991073711594410497);
             CREATE SCHEMA IF NOT EXISTS ferrite;
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
                 PRIMARY KEY (tbl, key));
             {}
             DO $$ BEGIN
               IF to_regclass('ferrite.clients') IS NOT NULL THEN
                 UPDATE ferrite.client_results r SET client_id = r.client_id || '@' || c.subject
                   FROM ferrite.clients c
                  WHERE c.client_id = r.client_id AND c.subject IS NOT NULL AND position('@' in r.client_id) = 0;
                 DROP TABLE ferrite.clients;
               END IF;
             END $$;
             COMMIT;",
            crate::audit::CREATE_SQL
        ))
        .await?;
    Ok(())
}

/// The name a client's state is kept under: its id, scoped by its token subject when there is
/// one (see the module docs).
pub fn client_key(client_id: &str, subject: Option<&str>) -> String {
    match subject {
        Some(s) => format!("{client_id}@{s}"),
        None => client_id.to_string(),
    }
}

/// The first key of client locks (`pg_advisory_lock(int, int)`): "FERR" (the cluster's
/// leadership lock has its own, [`crate::leadership::LEADER_LOCK_SPACE`]).
const CLIENT_LOCK_SPACE: i32 = 0x4645_5252;

/// FNV-1a over the given parts, separated by NUL: the same in every server process.
fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.into_iter().enumerate() {
        let sep: &[u8] = if i == 0 { b"" } else { b"\0" };
        for &b in sep.iter().chain(part.as_bytes()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn client_lock_key(client_id: &str) -> i32 {
    fnv1a([client_id]) as u32 as i32
}

/// A client's state when its request starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientProgress {
    /// Highest client transaction id recorded, -1 before the first.
    pub last_id: i64,
}

/// `client_id` here and below is the client key ([`client_key`]).
///
/// Takes the client's session lock (waiting for another request of the same client to finish)
/// and reads its progress. Release it with [`unlock_client`] — or close the connection.
///
/// The read is its own statement after the lock's (pipelined, one round trip): a statement's
/// snapshot is taken when it starts, so reading in the locking statement could miss what the
/// request it waited for recorded.
pub async fn lock_client(c: &PreparedClient, client_id: &str) -> Result<ClientProgress, PgError> {
    let key = client_lock_key(client_id);
    let lock_params: [Param<'_>; 2] = [(&CLIENT_LOCK_SPACE, Type::INT4), (&key, Type::INT4)];
    let read_params: [Param<'_>; 1] = [(&client_id, Type::TEXT)];
    let (_, row) = tokio::try_join!(
        biased;
        c.query_one("SELECT pg_advisory_lock($1, $2)::text", &lock_params),
        c.query_one(
            "SELECT coalesce((SELECT max(id) FROM ferrite.client_results WHERE client_id = $1), -1)",
            &read_params,
        )
    )?;
    Ok(ClientProgress { last_id: row.get(0) })
}

/// Releases the lock taken by [`lock_client`].
pub async fn unlock_client(c: &PreparedClient, client_id: &str) -> Result<(), PgError> {
    let key = client_lock_key(client_id);
    c.query_one("SELECT pg_advisory_unlock($1, $2)", &[(&CLIENT_LOCK_SPACE, Type::INT4), (&key, Type::INT4)]).await?;
    Ok(())
}

/// The recorded result of a client transaction, if it is still kept.
pub async fn recorded_result(c: &PreparedClient, client_id: &str, id: i64) -> Result<Option<Value>, PgError> {
    let row = c
        .query_opt(
            "SELECT result FROM ferrite.client_results WHERE client_id = $1 AND id = $2",
            &[(&client_id, Type::TEXT), (&id, Type::INT8)],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Results kept per client for answering retries; older ones are pruned (the newest is always
/// kept: it is the client's marker).
pub const RESULTS_KEPT: i64 = 10_000;

/// Records a client transaction's result — inside its Postgres transaction, or on its own (a
/// rejection). One statement, sent on first poll, so it can be pipelined with COMMIT.
pub async fn record_result(c: &PreparedClient, client_id: &str, id: i64, result: &Value) -> Result<(), PgError> {
    c.execute(
        "INSERT INTO ferrite.client_results (client_id, id, result) VALUES ($1, $2, $3)",
        &[(&client_id, Type::TEXT), (&id, Type::INT8), (result, Type::JSONB)],
    )
    .await?;
    Ok(())
}

/// Drops the client's results older than the last [`RESULTS_KEPT`] before `id` (the newest,
/// its marker, always stays). Cheap enough to run every thousand transactions.
pub async fn prune_results(c: &PreparedClient, client_id: &str, id: i64) -> Result<(), PgError> {
    c.execute(
        "DELETE FROM ferrite.client_results WHERE client_id = $1 AND id < $2",
        &[(&client_id, Type::TEXT), (&(id - RESULTS_KEPT), Type::INT8)],
    )
    .await?;
    Ok(())
}

/// Serializes writers of one row key until the transaction ends — also while the row does not
/// exist yet, which row locks cannot cover (two clients inserting the same key at once would
/// otherwise both see it absent and one would fail on the primary key). Returns the 32-bit xid
/// of the transaction, as the read path reports it in `headers.txids`.
pub async fn lock_row_key(c: &PreparedClient, table: &str, key: &str) -> Result<u32, PgError> {
    let lock = fnv1a([table, key]) as i64;
    let row = c
        .query_one(
            "SELECT pg_advisory_xact_lock($1)::text, (txid_current() % 4294967296)::bigint",
            &[(&lock, Type::INT8)],
        )
        .await?;
    Ok(row.get::<_, i64>(1) as u32)
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

impl StoredClocks {
    /// The clocks from the columns of a `ferrite.row_clocks` row (`None` when there is none).
    pub fn from_columns(
        clocks: Option<Value>,
        known: Option<Value>,
        deleted: Option<String>,
        born: Option<String>,
    ) -> Option<StoredClocks> {
        let obj = |v: Option<Value>| match v {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        };
        let clocks = obj(clocks)?;
        Some(StoredClocks { clocks, known: obj(known), deleted, born })
    }
}

/// The upsert of a `ferrite.row_clocks` row, with its parameters numbered from `first`: table,
/// key, clocks (jsonb), deleted, born; `known` is an SQL expression and `from` the rest of its
/// `SELECT` (empty, or `FROM w` when [`crate::write_table`] embeds it after a row write and
/// takes `known` from the written row).
pub fn save_clocks_sql(first: usize, known: &str, from: &str) -> String {
    let p = |i: usize| format!("${}", first + i);
    format!(
        "INSERT INTO ferrite.row_clocks (tbl, key, clocks, known, deleted, born)
         SELECT {}::text, {}::text, {}::jsonb, {known}, {}::text, {}::text {from}
         ON CONFLICT (tbl, key) DO UPDATE
         SET clocks = EXCLUDED.clocks, known = EXCLUDED.known, deleted = EXCLUDED.deleted, born = EXCLUDED.born",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4)
    )
}

/// Stores a row's clocks (insert or replace) on their own.
pub async fn save_clocks(c: &PreparedClient, table: &str, key: &str, s: &StoredClocks) -> Result<(), PgError> {
    let clocks = Value::Object(s.clocks.clone());
    let known = s.known.clone().map(Value::Object);
    c.execute(
        &save_clocks_sql(1, "$6::jsonb", ""),
        &[
            (&table, Type::TEXT),
            (&key, Type::TEXT),
            (&clocks, Type::JSONB),
            (&s.deleted, Type::TEXT),
            (&s.born, Type::TEXT),
            (&known, Type::JSONB),
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_separate_their_parts() {
        assert_eq!(fnv1a(["a"]), 0xaf63_dc4c_8601_ec8c, "FNV-1a of \"a\"");
        assert_ne!(fnv1a(["ab", "c"]), fnv1a(["a", "bc"]));
        assert_eq!(client_lock_key("device-1"), client_lock_key("device-1"));
    }
}

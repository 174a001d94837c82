//! The audit trail: `ferrite.audit`, one row per row a client transaction touched (or asked to
//! touch), written by the write path in the same Postgres transaction as the outcome it
//! describes, and deleted again after the configured retention.
//!
//! Columns:
//!
//! | column | meaning |
//! |---|---|
//! | `id` | `bigserial`, the order rows were recorded in |
//! | `at` | `timestamptz`, when the client transaction was applied (its Postgres transaction's start) |
//! | `subject` | the token's `sub` (jwt mode), NULL without auth |
//! | `client_id` | the client id the client sent (not scoped by subject) |
//! | `txn_id` | the client transaction's id |
//! | `tbl` | the table, `"schema"."name"` (as the mutation named it when it is not a valid name) |
//! | `row_key` | the primary key, a JSON object of column → text value (NULL when unknown) |
//! | `key` | the row's key in shape logs (`"schema"."name"/"<pk>"`), NULL when unknown |
//! | `op` | `insert`, `update` or `delete`: what the client asked for |
//! | `outcome` | `applied`, `merged` (the conflict policy kept some current values) or `rejected` |
//! | `reason` | why, for `merged` (which columns were kept) and `rejected` (the rejection's code and message) |
//! | `changes` | column → `{"old": …, "new": …}` of what changed (old from the row before the write); for a rejected row, `{"new": …}` of what was asked |
//!
//! All of a client transaction's rows go in with one prepared statement whose rows travel as a
//! single `jsonb` parameter ([`record_sql`]): values are bound, never written into SQL, and the
//! statement is pipelined with the transaction's COMMIT (no round trip of its own).

use crate::prepared::{Param, PreparedClient};
use crate::PgError;
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::types::Type;

/// The table's definition and indexes, run by [`crate::write_store::ensure_write_store`] (in its
/// transaction, under its lock). `at` serves the retention sweep, `key` the history of one row.
pub(crate) const CREATE_SQL: &str = "
    CREATE TABLE IF NOT EXISTS ferrite.audit (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        subject text,
        client_id text NOT NULL,
        txn_id bigint NOT NULL,
        tbl text NOT NULL,
        row_key jsonb,
        key text,
        op text NOT NULL,
        outcome text NOT NULL CHECK (outcome IN ('applied', 'merged', 'rejected')),
        reason text,
        changes jsonb NOT NULL DEFAULT '{}');
    CREATE INDEX IF NOT EXISTS audit_at ON ferrite.audit (at);
    CREATE INDEX IF NOT EXISTS audit_key ON ferrite.audit (key, id);";

/// Who sent a client transaction, for its audit rows.
#[derive(Debug, Clone, Copy)]
pub struct AuditActor<'a> {
    /// The token's subject (jwt mode).
    pub subject: Option<&'a str>,
    /// The client id as sent.
    pub client_id: &'a str,
    /// The client transaction's id.
    pub txn_id: i64,
}

/// One audit row's own columns (the [`AuditActor`] columns are shared by a transaction's rows).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// `"schema"."name"`.
    pub tbl: String,
    /// Primary key column → text value.
    pub row_key: Option<Value>,
    /// Shape-log key of the row.
    pub key: Option<String>,
    /// `insert`, `update` or `delete`.
    pub op: &'static str,
    /// `applied`, `merged` or `rejected`.
    pub outcome: &'static str,
    /// Why it was merged or rejected.
    pub reason: Option<String>,
    /// Column → `{"old", "new"}`.
    pub changes: Value,
}

impl AuditEntry {
    /// The row as an object of [`record_sql`]'s recordset.
    fn to_json(&self) -> Value {
        serde_json::json!({
            "tbl": self.tbl,
            "row_key": self.row_key,
            "key": self.key,
            "op": self.op,
            "outcome": self.outcome,
            "reason": self.reason,
            "changes": self.changes,
        })
    }
}

/// The rows of a transaction as the one `jsonb` parameter of [`record_sql`].
fn rows_json(entries: &[AuditEntry]) -> Value {
    Value::Array(entries.iter().map(AuditEntry::to_json).collect())
}

/// The statement recording a transaction's audit rows, parameters: subject, client id,
/// transaction id, rows (a JSON array of [`AuditEntry`]).
pub fn record_sql() -> &'static str {
    "INSERT INTO ferrite.audit (subject, client_id, txn_id, tbl, row_key, key, op, outcome, reason, changes)
     SELECT $1::text, $2::text, $3::bigint, r.tbl, r.row_key, r.key, r.op, r.outcome, r.reason, coalesce(r.changes, '{}')
       FROM jsonb_to_recordset($4::jsonb)
         AS r(tbl text, row_key jsonb, key text, op text, outcome text, reason text, changes jsonb)"
}

/// Records `entries` for one client transaction, in one statement (nothing is sent for none).
/// Inside the transaction's own Postgres transaction, so the rows commit or roll back with it.
pub async fn record(c: &PreparedClient, actor: AuditActor<'_>, entries: &[AuditEntry]) -> Result<(), PgError> {
    if entries.is_empty() {
        return Ok(());
    }
    let rows = rows_json(entries);
    let params: [Param<'_>; 4] = [
        (&actor.subject, Type::TEXT),
        (&actor.client_id, Type::TEXT),
        (&actor.txn_id, Type::INT8),
        (&rows, Type::JSONB),
    ];
    c.execute(record_sql(), &params).await?;
    Ok(())
}

/// Records the audit rows of several client transactions of one client (a group applied in one
/// Postgres transaction), in one statement: `actor`'s subject and client id, each transaction's
/// id with its rows (nothing is sent for none). Rows keep the order given.
pub async fn record_group(
    c: &PreparedClient,
    actor: AuditActor<'_>,
    transactions: &[(i64, Vec<AuditEntry>)],
) -> Result<(), PgError> {
    if transactions.iter().all(|(_, e)| e.is_empty()) {
        return Ok(());
    }
    let rows = Value::Array(
        transactions
            .iter()
            .flat_map(|(txn_id, entries)| {
                entries.iter().map(move |e| {
                    let mut row = e.to_json();
                    row["txn_id"] = Value::from(*txn_id);
                    row
                })
            })
            .collect(),
    );
    let params: [Param<'_>; 3] = [(&actor.subject, Type::TEXT), (&actor.client_id, Type::TEXT), (&rows, Type::JSONB)];
    c.execute(
        "INSERT INTO ferrite.audit (subject, client_id, txn_id, tbl, row_key, key, op, outcome, reason, changes)
         SELECT $1::text, $2::text, r.txn_id, r.tbl, r.row_key, r.key, r.op, r.outcome, r.reason, coalesce(r.changes, '{}')
           FROM jsonb_to_recordset($3::jsonb)
             AS r(txn_id bigint, tbl text, row_key jsonb, key text, op text, outcome text, reason text, changes jsonb)",
        &params,
    )
    .await?;
    Ok(())
}

/// Records a rejected transaction's result (`ferrite.client_results`) and its audit rows in one
/// statement, so both are kept or neither (its effects were rolled back before).
pub async fn record_rejection(
    c: &PreparedClient,
    client_key: &str,
    result: &Value,
    actor: AuditActor<'_>,
    entries: &[AuditEntry],
) -> Result<(), PgError> {
    if entries.is_empty() {
        return crate::write_store::record_result(c, client_key, actor.txn_id, result).await;
    }
    let rows = rows_json(entries);
    let sql = format!(
        "WITH recorded AS (INSERT INTO ferrite.client_results (client_id, id, result) VALUES ($5::text, $3::bigint, $6::jsonb)) {}",
        record_sql()
    );
    let params: [Param<'_>; 6] = [
        (&actor.subject, Type::TEXT),
        (&actor.client_id, Type::TEXT),
        (&actor.txn_id, Type::INT8),
        (&rows, Type::JSONB),
        (&client_key, Type::TEXT),
        (result, Type::JSONB),
    ];
    c.execute(&sql, &params).await?;
    Ok(())
}

/// Rows deleted per statement by [`sweep`]: small enough that no statement holds many row locks
/// or writes a burst of WAL (the table may be in the publication), large enough to keep up.
pub const SWEEP_BATCH: i64 = 5_000;

/// Deletes audit rows older than `retention` (by Postgres's clock), [`SWEEP_BATCH`] at a time,
/// pausing `pause` between batches; returns how many were deleted. Rows another sweeper (a
/// second server) holds are skipped, not waited for.
pub async fn sweep(c: &PreparedClient, retention: Duration, pause: Duration) -> Result<u64, PgError> {
    let seconds = retention.as_secs_f64();
    let mut total = 0;
    loop {
        let n = c
            .execute(
                "DELETE FROM ferrite.audit WHERE id IN (
                   SELECT id FROM ferrite.audit WHERE at < now() - make_interval(secs => $1::float8)
                    ORDER BY at LIMIT $2::bigint FOR UPDATE SKIP LOCKED)",
                &[(&seconds, Type::FLOAT8), (&SWEEP_BATCH, Type::INT8)],
            )
            .await?;
        total += n;
        if n < SWEEP_BATCH as u64 {
            return Ok(total);
        }
        tokio::time::sleep(pause).await;
    }
}

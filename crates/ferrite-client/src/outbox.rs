//! Local writes: applied at once to the local tables (the app reads its own writes through the
//! same tables) and queued in a durable outbox, in one SQLite transaction — a crash at any point
//! loses nothing and duplicates nothing (the server applies each client transaction id once).
//!
//! For every row a pending write touches, `_ferrite_shadow` keeps the server's version. Server
//! changes to such a row update the shadow, and the local row is rebuilt as the shadow with the
//! pending mutations replayed on top ("rebase"). A transaction leaves the outbox when the server
//! rejects it, or when every local table it touched shows it: its txid came back through that
//! table's shape, or that shape has caught up past the point where the txid was seen elsewhere
//! (a write that left no row in a shape never comes back through it). Either way its rows are
//! rebased without it — and not before, so a transaction across two tables never shows half
//! of it reverted while the second shape lags.
//!
//! A transaction whose answer was lost is *in doubt*: the server may have applied it, and its
//! txid may come through a shape before the client learns it (from the answer to the retry).
//! While any transaction is in doubt, the txids seen through shapes are remembered in
//! `_ferrite_txids_seen` (with the table and position), so an answer naming one of them counts
//! those sightings at once.

use crate::store::{self, key_columns, key_filter, quote, Affinity, LocalColumn};
use crate::ClientError;
use ferrite_protocol::hlc::Hlc;
use ferrite_protocol::snapshot_info::SnapshotInfo;
use ferrite_protocol::write_protocol::{ClientTransaction, Mutation, Status, TransactionResult};
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use serde_json::{json, Map, Value};

/// Column values as the server takes them: Postgres text, `None` for NULL.
pub use ferrite_protocol::write_protocol::Values;

/// A queued mutation as the outbox keeps it: the mutation as it will be sent, and the local table
/// it was made on (stored as the mutation's JSON with a `_local` field).
#[derive(serde::Serialize, serde::Deserialize)]
struct Queued {
    #[serde(flatten)]
    mutation: Mutation,
    #[serde(rename = "_local")]
    local: String,
}

impl Queued {
    /// The local change this mutation made.
    fn change(&self) -> Change {
        let table = self.local.clone();
        match &self.mutation {
            Mutation::Insert { value, .. } => Change::Insert { table, values: value.clone() },
            Mutation::Update { key, value, .. } => Change::Update { table, key: key.clone(), set: value.clone() },
            Mutation::Delete { key, .. } => Change::Delete { table, key: key.clone() },
        }
    }
}

/// The mutations of a stored transaction (a damaged entry reads as none).
fn queued(mutations: &str) -> Vec<Queued> {
    serde_json::from_str(mutations).unwrap_or_default()
}

/// One local change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new row (all its values, key included).
    Insert {
        /// Local table.
        table: String,
        /// Column → value.
        values: Values,
    },
    /// Some columns of a row.
    Update {
        /// Local table.
        table: String,
        /// Primary-key column → value.
        key: Values,
        /// Column → new value.
        set: Values,
    },
    /// Removal of a row.
    Delete {
        /// Local table.
        table: String,
        /// Primary-key column → value.
        key: Values,
    },
}

impl Change {
    fn table(&self) -> &str {
        match self {
            Change::Insert { table, .. } | Change::Update { table, .. } | Change::Delete { table, .. } => table,
        }
    }
}

/// Creates the outbox tables if needed.
pub fn init(db: &Connection) -> Result<(), ClientError> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS _ferrite_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         -- AUTOINCREMENT: a client transaction id is never reused, even after the outbox empties
         -- (the server treats an id at or below the last one it saw as a retry).
         CREATE TABLE IF NOT EXISTS _ferrite_outbox (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             hlc TEXT NOT NULL,
             mutations TEXT NOT NULL,
             txid TEXT,
             result TEXT,
             -- 1 once the transaction has been sent (its answer may be lost: it is in doubt).
             sent INTEGER NOT NULL DEFAULT 0,
             -- Local tables whose shapes showed it (JSON array), and the log position (LSN) where
             -- it was first seen.
             covered TEXT NOT NULL DEFAULT '[]',
             seen_lsn INTEGER);
         CREATE TABLE IF NOT EXISTS _ferrite_txids_seen (
             txid TEXT NOT NULL,
             local_table TEXT NOT NULL,
             lsn INTEGER,
             PRIMARY KEY (txid, local_table));
         -- Which rows each queued transaction touches, so rebuilding a row reads only the
         -- transactions on it (not the whole outbox).
         CREATE TABLE IF NOT EXISTS _ferrite_outbox_rows (
             local_table TEXT NOT NULL,
             key TEXT NOT NULL,
             outbox_id INTEGER NOT NULL,
             PRIMARY KEY (local_table, key, outbox_id)) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS _ferrite_outbox_rows_by_id ON _ferrite_outbox_rows (outbox_id);
         CREATE TABLE IF NOT EXISTS _ferrite_shadow (
             local_table TEXT NOT NULL,
             key TEXT NOT NULL,
             row TEXT,
             PRIMARY KEY (local_table, key));",
    )?;
    // Replicas created before the `sent` column.
    if !store::has_column(db, "_ferrite_outbox", "sent")? {
        db.execute_batch(
            "ALTER TABLE _ferrite_outbox ADD COLUMN sent INTEGER NOT NULL DEFAULT 1;
             ALTER TABLE _ferrite_outbox ADD COLUMN covered TEXT NOT NULL DEFAULT '[]';
             ALTER TABLE _ferrite_outbox ADD COLUMN seen_lsn INTEGER;",
        )?;
    }
    // Replicas created before `_ferrite_outbox_rows`: index their queued transactions once.
    let unindexed: Vec<(i64, String)> = db
        .prepare(
            "SELECT id, mutations FROM _ferrite_outbox o
             WHERE NOT EXISTS (SELECT 1 FROM _ferrite_outbox_rows r WHERE r.outbox_id = o.id)",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, mutations) in unindexed {
        for q in queued(&mutations) {
            let Ok((columns, _)) = table_info(db, &q.local) else { continue };
            index_row(db, &q.local, &key_text(&columns, q.mutation.key_source())?, id)?;
        }
    }
    Ok(())
}

/// Records that queued transaction `id` touches this row.
fn index_row(db: &Connection, local: &str, key: &str, id: i64) -> Result<(), ClientError> {
    db.prepare_cached("INSERT OR IGNORE INTO _ferrite_outbox_rows (local_table, key, outbox_id) VALUES (?1, ?2, ?3)")?
        .execute(params![local, key, id])?;
    Ok(())
}

fn meta(db: &Connection, key: &str) -> Result<Option<String>, ClientError> {
    Ok(db.query_row("SELECT value FROM _ferrite_meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

fn set_meta(db: &Connection, key: &str, value: &str) -> Result<(), ClientError> {
    db.execute("INSERT OR REPLACE INTO _ferrite_meta (key, value) VALUES (?1, ?2)", params![key, value])?;
    Ok(())
}

/// This replica's client id (created on first use).
pub fn client_id(db: &Connection) -> Result<String, ClientError> {
    if let Some(id) = meta(db, "client_id")? {
        return Ok(id);
    }
    let id = format!("replica-{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
    set_meta(db, "client_id", &id)?;
    Ok(id)
}

/// The next HLC value at wall time `wall_ms`, persisted so it never goes backwards across
/// restarts.
fn next_hlc(db: &Connection, wall_ms: u64) -> Result<Hlc, ClientError> {
    let last: Hlc = meta(db, "hlc")?.and_then(|h| h.parse().ok()).unwrap_or(Hlc::ZERO);
    let next = last.tick(wall_ms);
    set_meta(db, "hlc", &next.to_string())?;
    Ok(next)
}

/// The shape schema and server table of a local table.
fn table_info(db: &Connection, local: &str) -> Result<(Vec<LocalColumn>, String), ClientError> {
    let row: Option<(Option<String>, String)> = db
        .query_row("SELECT schema, definition FROM _ferrite_shapes WHERE local_table = ?1", [local], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((Some(schema), definition)) = row else {
        return Err(ClientError::NotSynced(local.to_string()));
    };
    let def: Value = serde_json::from_str(&definition).unwrap_or(Value::Null);
    Ok((store::parse_schema(&schema)?, def["table"].as_str().unwrap_or(local).to_string()))
}

/// The key text of a row (JSON array of its key values, in key order).
fn key_text(columns: &[LocalColumn], values: &Values) -> Result<String, ClientError> {
    let key: Vec<Value> = key_columns(columns)
        .iter()
        .map(|c| match values.get(&c.name) {
            Some(Some(v)) => Ok(Value::String(v.clone())),
            _ => Err(ClientError::Invalid(format!("missing primary key column {:?}", c.name))),
        })
        .collect::<Result<_, _>>()?;
    Ok(Value::Array(key).to_string())
}

/// The local row with this key, as text values (what the server would print).
fn read_row(
    db: &Connection,
    local: &str,
    columns: &[LocalColumn],
    key: &Values,
) -> Result<Option<Values>, ClientError> {
    let keys = key_columns(columns);
    let filter = key_filter(&keys);
    let sql = format!(
        "SELECT {} FROM {} WHERE {filter}",
        columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", "),
        quote(local)
    );
    let params = key_params(&keys, key);
    let refs: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
    db.query_row(&sql, refs.as_slice(), |r| {
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| Ok((c.name.clone(), c.affinity.to_text(r.get_ref(i)?))))
            .collect::<Result<Values, _>>()
    })
    .optional()
    .map_err(Into::into)
}

/// The key's values as SQLite stores them, in key-column order.
fn key_params(keys: &[&LocalColumn], key: &Values) -> Vec<rusqlite::types::Value> {
    keys.iter().map(|c| c.affinity.value(key.get(&c.name).cloned().flatten().as_deref())).collect()
}

/// Writes (or removes) the local row with this key.
fn write_row(
    db: &Connection,
    local: &str,
    columns: &[LocalColumn],
    key: &Values,
    row: Option<&Values>,
) -> Result<(), ClientError> {
    let keys = key_columns(columns);
    let filter = key_filter(&keys);
    let params = key_params(&keys, key);
    let refs: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
    db.execute(&format!("DELETE FROM {} WHERE {filter}", quote(local)), refs.as_slice())?;
    if let Some(row) = row {
        let cols: Vec<&LocalColumn> = columns.iter().filter(|c| row.contains_key(&c.name)).collect();
        let vals: Vec<rusqlite::types::Value> =
            cols.iter().map(|c| c.affinity.value(row[&c.name].as_deref())).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote(local),
            cols.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", "),
            (1..=cols.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
        );
        let refs: Vec<&dyn ToSql> = vals.iter().map(|p| p as &dyn ToSql).collect();
        db.execute(&sql, refs.as_slice())?;
    }
    Ok(())
}

fn apply_change(row: Option<Values>, change: &Change) -> Option<Values> {
    match change {
        Change::Insert { values, .. } => Some(values.clone()),
        Change::Update { set, .. } => row.map(|mut r| {
            r.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            r
        }),
        Change::Delete { .. } => None,
    }
}

fn change_key(change: &Change) -> &Values {
    match change {
        Change::Insert { values, .. } => values,
        Change::Update { key, .. } | Change::Delete { key, .. } => key,
    }
}

/// Queues one client transaction and applies it locally, in one SQLite transaction. Refuses
/// (typed error, nothing changed) when `max_queue` transactions are already waiting. `wall_ms`
/// is the client's clock, which the transaction's HLC follows.
pub fn write(db: &mut Connection, changes: &[Change], max_queue: usize, wall_ms: u64) -> Result<u64, ClientError> {
    let tx = db.transaction()?;
    let queued: i64 = tx.query_row("SELECT count(*) FROM _ferrite_outbox WHERE result IS NULL", [], |r| r.get(0))?;
    if queued as usize >= max_queue {
        return Err(ClientError::QueueFull { limit: max_queue });
    }
    let mut mutations = vec![];
    let mut touched = vec![];
    for change in changes {
        let local = change.table();
        let (columns, server_table) = table_info(&tx, local)?;
        for name in [change_key(change)].into_iter().chain(match change {
            Change::Update { set, .. } => Some(set),
            _ => None,
        }) {
            if let Some(bad) = name.keys().find(|k| !columns.iter().any(|c| &c.name == *k)) {
                return Err(ClientError::Invalid(format!("table {local} has no column {bad:?}")));
            }
        }
        let key_values: Values = key_columns(&columns)
            .iter()
            .map(|c| (c.name.clone(), change_key(change).get(&c.name).cloned().flatten()))
            .collect();
        let key = key_text(&columns, &key_values)?;
        touched.push((local.to_string(), key.clone()));
        // Remember the server's version before the first pending change to this row.
        let shadowed: bool = tx
            .query_row("SELECT 1 FROM _ferrite_shadow WHERE local_table = ?1 AND key = ?2", params![local, key], |_| {
                Ok(true)
            })
            .optional()?
            .is_some();
        let current = read_row(&tx, local, &columns, &key_values)?;
        if current.is_none() && !matches!(change, Change::Insert { .. }) {
            let key = serde_json::to_string(&key_values).map_err(|e| ClientError::Invalid(e.to_string()))?;
            return Err(ClientError::NoRow { table: local.to_string(), key });
        }
        // What the app saw of the row: server-wins tables apply a change only on top of it.
        let base: Option<Values> = current.as_ref().map(|row| match change {
            Change::Update { set, .. } => {
                row.iter().filter(|(c, _)| set.contains_key(*c)).map(|(c, v)| (c.clone(), v.clone())).collect()
            }
            _ => row.clone(),
        });
        if !shadowed {
            let row = current.as_ref().map(|r| json!(r).to_string());
            tx.execute(
                "INSERT INTO _ferrite_shadow (local_table, key, row) VALUES (?1, ?2, ?3)",
                params![local, key, row],
            )?;
        }
        write_row(&tx, local, &columns, &key_values, apply_change(current, change).as_ref())?;
        let mutation = match change {
            Change::Insert { values, .. } => Mutation::Insert { table: server_table, value: values.clone() },
            Change::Update { set, .. } => {
                Mutation::Update { table: server_table, key: key_values, value: set.clone(), base }
            }
            Change::Delete { .. } => Mutation::Delete { table: server_table, key: key_values, base },
        };
        mutations.push(Queued { mutation, local: local.to_string() });
    }
    let hlc = next_hlc(&tx, wall_ms)?;
    let mutations = serde_json::to_string(&mutations).map_err(|e| ClientError::Invalid(e.to_string()))?;
    tx.execute("INSERT INTO _ferrite_outbox (hlc, mutations) VALUES (?1, ?2)", params![hlc.to_string(), mutations])?;
    let id = tx.last_insert_rowid();
    for (local, key) in touched {
        index_row(&tx, &local, &key, id)?;
    }
    tx.commit()?;
    Ok(id as u64)
}

/// Transactions waiting to be sent (no result yet), oldest first, as request entries: at most
/// `limit` of them holding at most `max_changes` changes together (always at least one, which
/// the server then judges by its per-transaction limit). Marks them sent first (in doubt until
/// answered).
pub fn pending(db: &Connection, limit: usize, max_changes: usize) -> Result<Vec<ClientTransaction>, ClientError> {
    let mut stmt =
        db.prepare("SELECT id, hlc, mutations FROM _ferrite_outbox WHERE result IS NULL ORDER BY id LIMIT ?1")?;
    let rows =
        stmt.query_map([limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
    let mut out: Vec<ClientTransaction> = vec![];
    let mut changes = 0;
    for row in rows {
        let (id, hlc, mutations) = row?;
        let mutations: Vec<Mutation> = queued(&mutations).into_iter().map(|q| q.mutation).collect();
        if !out.is_empty() && changes + mutations.len() > max_changes {
            break;
        }
        changes += mutations.len();
        let hlc = hlc.parse().map_err(|e| ClientError::Protocol(format!("queued transaction {id}: {e}")))?;
        out.push(ClientTransaction { id: id as u64, hlc, mutations });
    }
    let mut sent = db.prepare_cached("UPDATE _ferrite_outbox SET sent = 1 WHERE id = ?1")?;
    for t in &out {
        sent.execute([t.id as i64])?;
    }
    Ok(out)
}

/// A transaction in the outbox (see [`queued_transactions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTransaction {
    /// Its client transaction id.
    pub id: u64,
    /// The local tables it changes, in the order first changed.
    pub tables: Vec<String>,
    /// How many changes it holds.
    pub changes: usize,
    /// Sent at least once (without an answer yet it is in doubt: the server may have applied it).
    pub sent: bool,
    /// The server accepted it; it waits for its changes to come back through the shapes.
    pub accepted: bool,
}

/// Every transaction in the outbox, oldest first.
pub fn queued_transactions(db: &Connection) -> Result<Vec<QueuedTransaction>, ClientError> {
    let mut stmt = db.prepare("SELECT id, mutations, sent, result IS NOT NULL FROM _ferrite_outbox ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?, r.get::<_, bool>(3)?))
    })?;
    let mut out = vec![];
    for row in rows {
        let (id, mutations, sent, accepted) = row?;
        let queued = queued(&mutations);
        let mut tables: Vec<String> = vec![];
        for q in &queued {
            if !tables.contains(&q.local) {
                tables.push(q.local.clone());
            }
        }
        out.push(QueuedTransaction { id: id as u64, tables, changes: queued.len(), sent, accepted });
    }
    Ok(out)
}

/// How many transactions have no result yet.
pub fn pending_count(db: &Connection) -> Result<usize, ClientError> {
    Ok(db.query_row("SELECT count(*) FROM _ferrite_outbox WHERE result IS NULL", [], |r| r.get::<_, i64>(0))? as usize)
}

/// How many transactions were accepted and wait for their txid to come through a shape.
pub fn unconfirmed_count(db: &Connection) -> Result<usize, ClientError> {
    Ok(db.query_row("SELECT count(*) FROM _ferrite_outbox WHERE result IS NOT NULL", [], |r| r.get::<_, i64>(0))?
        as usize)
}

/// A change of the user's that the server's conflict policy did not keep, in whole or in part
/// (its result was `merged`): which columns lost, and the values the user had written to them —
/// what an app shows ("yours was not kept") and what a "use mine" re-applies as a new edit.
#[derive(Debug, Clone, PartialEq)]
pub struct LostChange {
    /// The local table the change was made to.
    pub local_table: String,
    /// The server table, as the result names it.
    pub table: String,
    /// The row's primary key.
    pub key: Values,
    /// The columns that kept other values (all the change's columns when the row was deleted
    /// meanwhile).
    pub columns: Vec<String>,
    /// The user's values for those columns (empty for a delete that did not happen).
    pub mine: Values,
}

/// A transaction answered `merged`: what of it was not kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    /// The client transaction id.
    pub id: u64,
    /// Its changes that lost, per row.
    pub lost: Vec<LostChange>,
}

/// What [`record_results`] found: the rejections and the merges.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Results `rejected` (the transactions are rolled back locally).
    pub rejected: Vec<TransactionResult>,
    /// Results `merged`, with the user's lost values.
    pub merged: Vec<Merge>,
}

/// The lost changes of a merged transaction: each overridden row matched with the mutation that
/// wrote it (the last one on that row), and the user's values of the columns that lost.
fn lost_changes(mutations: &str, r: &TransactionResult) -> Vec<LostChange> {
    let queued = queued(mutations);
    r.overridden
        .iter()
        .map(|o| {
            let mut local_table = String::new();
            let mut mine = Values::new();
            for q in &queued {
                let (table, key_matches, value) = match &q.mutation {
                    Mutation::Insert { table, value } => {
                        (table, o.key.iter().all(|(c, v)| value.get(c) == Some(v)), Some(value))
                    }
                    Mutation::Update { table, key, value, .. } => (table, key == &o.key, Some(value)),
                    Mutation::Delete { table, key, .. } => (table, key == &o.key, None),
                };
                if table == &o.table && key_matches {
                    local_table = q.local.clone();
                    for c in &o.columns {
                        if let Some(v) = value.and_then(|v| v.get(c)) {
                            mine.insert(c.clone(), v.clone());
                        }
                    }
                }
            }
            LostChange { local_table, table: o.table.clone(), key: o.key.clone(), columns: o.columns.clone(), mine }
        })
        .collect()
}

/// Stores the server's results; rejected transactions leave the outbox and their rows are
/// rebased without them. Returns the rejections and what merged transactions lost.
pub fn record_results(db: &mut Connection, results: &[TransactionResult]) -> Result<Recorded, ClientError> {
    let tx = db.transaction()?;
    let mut rejected = vec![];
    let mut merged = vec![];
    for r in results {
        let id = r.id as i64;
        if r.status == Status::Merged && !r.overridden.is_empty() {
            let mutations: Option<String> = tx
                .query_row("SELECT mutations FROM _ferrite_outbox WHERE id = ?1", [id], |row| row.get(0))
                .optional()?;
            if let Some(m) = mutations {
                merged.push(Merge { id: r.id, lost: lost_changes(&m, r) });
            }
        }
        // Rejected, or committed without changing a row (its txid will never come back): the
        // server's version already is the truth for its rows.
        if r.status == Status::Rejected || r.unchanged {
            retire(&tx, id)?;
            if r.status == Status::Rejected {
                rejected.push(r.clone());
            }
            continue;
        }
        let txid = r.txid.as_deref();
        let recorded = serde_json::to_string(r).map_err(|e| ClientError::Protocol(e.to_string()))?;
        tx.execute("UPDATE _ferrite_outbox SET txid = ?2, result = ?3 WHERE id = ?1", params![id, txid, recorded])?;
        // Its txid may have come through shapes already, while it was in doubt.
        if let Some(txid) = txid {
            let sightings: Vec<(String, Option<i64>)> = tx
                .prepare_cached("SELECT local_table, lsn FROM _ferrite_txids_seen WHERE txid = ?1")?
                .query_map([txid], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (local, lsn) in sightings {
                cover(&tx, id, &local, lsn)?;
            }
        }
    }
    retire_covered(&tx)?;
    if !in_doubt(&tx)? {
        tx.execute("DELETE FROM _ferrite_txids_seen", [])?;
    }
    tx.commit()?;
    Ok(Recorded { rejected, merged })
}

/// Whether some sent transaction has no answer yet.
fn in_doubt(db: &Connection) -> Result<bool, ClientError> {
    Ok(db.query_row("SELECT EXISTS (SELECT 1 FROM _ferrite_outbox WHERE sent = 1 AND result IS NULL)", [], |r| {
        r.get(0)
    })?)
}

/// Notes the txids (with their log positions) that arrived through the shape of `local`.
/// Call inside the transaction that applied the shape changes, then [`retire_covered`].
pub fn txids_seen(tx: &Connection, local: &str, txids: &[(String, Option<i64>)]) -> Result<(), ClientError> {
    if !txids.is_empty() && in_doubt(tx)? {
        let mut remember = tx
            .prepare_cached("INSERT OR IGNORE INTO _ferrite_txids_seen (txid, local_table, lsn) VALUES (?1, ?2, ?3)")?;
        for (txid, lsn) in txids {
            remember.execute(params![txid, local, lsn])?;
        }
    }
    for (txid, lsn) in txids {
        let ids: Vec<i64> = tx
            .prepare_cached("SELECT id FROM _ferrite_outbox WHERE txid = ?1")?
            .query_map([txid], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            cover(tx, id, local, *lsn)?;
        }
    }
    Ok(())
}

/// Records that the shape of `local` showed transaction `id` (at `lsn`, when known).
fn cover(tx: &Connection, id: i64, local: &str, lsn: Option<i64>) -> Result<(), ClientError> {
    let Some((covered, seen)): Option<(String, Option<i64>)> = tx
        .query_row("SELECT covered, seen_lsn FROM _ferrite_outbox WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
    else {
        return Ok(());
    };
    let mut covered: Vec<String> = serde_json::from_str(&covered).unwrap_or_default();
    if !covered.iter().any(|c| c == local) {
        covered.push(local.to_string());
    }
    let seen = match (seen, lsn) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    tx.execute(
        "UPDATE _ferrite_outbox SET covered = ?2, seen_lsn = ?3 WHERE id = ?1",
        params![id, Value::from(covered).to_string(), seen],
    )?;
    Ok(())
}

/// Retires the answered transactions every touched local table shows: its shape brought the
/// txid, or has caught up past the position where the txid was seen (then it holds all the
/// transaction will ever bring it).
pub fn retire_covered(tx: &Connection) -> Result<(), ClientError> {
    let candidates: Vec<(i64, String, Option<i64>)> = tx
        .prepare_cached("SELECT id, covered, seen_lsn FROM _ferrite_outbox WHERE txid IS NOT NULL AND covered <> '[]'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (id, covered, seen_lsn) in candidates {
        let covered: Vec<String> = serde_json::from_str(&covered).unwrap_or_default();
        let touched: Vec<(String, Option<i64>)> = tx
            .prepare_cached(
                "SELECT DISTINCT r.local_table, s.last_lsn FROM _ferrite_outbox_rows r
                 LEFT JOIN _ferrite_shapes s ON s.local_table = r.local_table WHERE r.outbox_id = ?1",
            )?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let shown = touched.iter().all(|(local, last_lsn)| {
            covered.contains(local) || matches!((seen_lsn, last_lsn), (Some(seen), Some(last)) if last >= &seen)
        });
        if shown {
            retire(tx, id)?;
        }
    }
    Ok(())
}

/// Notes answered transactions whose effects the snapshot of `local`'s shape already contains
/// (after a shape starts over, their txids never come back through it as changes): that table
/// shows them. They retire through [`retire_covered`] once every table they touched shows them —
/// a snapshot of one table says nothing of another, whose shape may still lag.
pub fn cover_visible(tx: &Connection, local: &str, snapshot: &SnapshotInfo) -> Result<(), ClientError> {
    let answered: Vec<(i64, String)> = tx
        .prepare("SELECT id, txid FROM _ferrite_outbox WHERE txid IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, txid) in answered {
        let Ok(txid) = txid.parse::<u32>() else {
            continue;
        };
        if snapshot.includes(txid) {
            cover(tx, id, local, None)?;
        }
    }
    Ok(())
}

/// Takes a transaction out of the outbox and rebuilds the rows it touched without it.
fn retire(tx: &Connection, id: i64) -> Result<(), ClientError> {
    let touched = touched_rows(tx, id)?;
    tx.execute("DELETE FROM _ferrite_outbox WHERE id = ?1", [id])?;
    tx.execute("DELETE FROM _ferrite_outbox_rows WHERE outbox_id = ?1", [id])?;
    for (local, key) in touched {
        rebase(tx, &local, &key)?;
    }
    Ok(())
}

/// (local table, key text) of every row a queued transaction touches.
fn touched_rows(db: &Connection, id: i64) -> Result<Vec<(String, String)>, ClientError> {
    Ok(db
        .prepare_cached("SELECT local_table, key FROM _ferrite_outbox_rows WHERE outbox_id = ?1")?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

/// Whether a server change to this row must go to its shadow (a pending write covers it).
pub fn shadowed(tx: &Connection, local: &str, key: &str) -> Result<bool, ClientError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM _ferrite_shadow WHERE local_table = ?1 AND key = ?2")?
        .query_row(params![local, key], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Applies a server change to a shadowed row's server version, then rebases the row.
pub fn apply_to_shadow(
    tx: &Connection,
    local: &str,
    key: &str,
    op: &str,
    value: &Map<String, Value>,
) -> Result<(), ClientError> {
    let row: Option<String> = tx.query_row(
        "SELECT row FROM _ferrite_shadow WHERE local_table = ?1 AND key = ?2",
        params![local, key],
        |r| r.get(0),
    )?;
    let current: Option<Values> = row.and_then(|r| serde_json::from_str(&r).ok());
    let incoming: Values = value.iter().map(|(k, v)| (k.clone(), v.as_str().map(String::from))).collect();
    let next = match op {
        "insert" => Some(incoming),
        "update" => current.map(|mut r| {
            r.extend(incoming);
            r
        }),
        _ => None,
    };
    tx.execute(
        "UPDATE _ferrite_shadow SET row = ?3 WHERE local_table = ?1 AND key = ?2",
        params![local, key, next.map(|r| json!(r).to_string())],
    )?;
    rebase(tx, local, key)
}

/// The key text of a server row (as the shape sent it).
pub fn server_key(columns: &[LocalColumn], value: &Map<String, Value>) -> Option<String> {
    let key: Values = value.iter().map(|(k, v)| (k.clone(), v.as_str().map(String::from))).collect();
    key_text(columns, &key).ok()
}

/// After a shape starts over (409) its rows arrive again from scratch: forget the server
/// versions kept for rows with pending writes (the new snapshot brings them back) and rebuild
/// those rows from the pending writes alone; the snapshot then rebases them on what it brings.
pub fn restart_table(tx: &Connection, local: &str) -> Result<(), ClientError> {
    tx.execute("UPDATE _ferrite_shadow SET row = NULL WHERE local_table = ?1", [local])?;
    rebase_table(tx, local)
}

/// Rebuilds every row of `local` with pending writes.
pub fn rebase_table(tx: &Connection, local: &str) -> Result<(), ClientError> {
    let keys: Vec<String> = tx
        .prepare("SELECT key FROM _ferrite_shadow WHERE local_table = ?1")?
        .query_map([local], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for key in keys {
        rebase(tx, local, &key)?;
    }
    Ok(())
}

/// Rebuilds a local row: the server's version with the still-queued changes replayed on top;
/// drops the shadow when none are left.
fn rebase(tx: &Connection, local: &str, key: &str) -> Result<(), ClientError> {
    let Some(row): Option<Option<String>> = tx
        .query_row("SELECT row FROM _ferrite_shadow WHERE local_table = ?1 AND key = ?2", params![local, key], |r| {
            r.get(0)
        })
        .optional()?
    else {
        return Ok(());
    };
    let (columns, _) = table_info(tx, local)?;
    let mut current: Option<Values> = row.and_then(|r| serde_json::from_str(&r).ok());
    let mut still_pending = false;
    let mut stmt = tx.prepare_cached(
        "SELECT o.mutations FROM _ferrite_outbox_rows r JOIN _ferrite_outbox o ON o.id = r.outbox_id
         WHERE r.local_table = ?1 AND r.key = ?2 ORDER BY o.id",
    )?;
    let all: Vec<String> = stmt.query_map(params![local, key], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for mutations in all {
        for q in queued(&mutations) {
            if q.local != local {
                continue;
            }
            let change = q.change();
            if key_text(&columns, change_key(&change)).ok().as_deref() == Some(key) {
                still_pending = true;
                current = apply_change(current, &change);
            }
        }
    }
    let key_values: Values = serde_json::from_str::<Vec<Option<String>>>(key)
        .unwrap_or_default()
        .into_iter()
        .zip(key_columns(&columns))
        .map(|(v, c)| (c.name.clone(), v))
        .collect();
    write_row(tx, local, &columns, &key_values, current.as_ref())?;
    if !still_pending {
        tx.execute("DELETE FROM _ferrite_shadow WHERE local_table = ?1 AND key = ?2", params![local, key])?;
    }
    Ok(())
}

impl Affinity {
    /// The Postgres text of a stored value.
    fn to_text(self, v: rusqlite::types::ValueRef<'_>) -> Option<String> {
        use rusqlite::types::ValueRef as V;
        match v {
            V::Null => None,
            V::Integer(i) if self == Affinity::Boolean => Some(if i != 0 { "t".into() } else { "f".into() }),
            V::Integer(i) => Some(i.to_string()),
            V::Real(f) => Some(f.to_string()),
            V::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            V::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
        }
    }
}

//! The replication slot and publication Ferrite streams from, and the slot's health.
//!
//! These run on an ordinary connection ([`crate::connect::connect`]). Everything is idempotent and
//! safe against a concurrent Ferrite doing the same thing: "already exists" (SQLSTATE 42710) counts
//! as success.

use super::lsn::parse_lsn;
use crate::error::PgError;
use ferrite_protocol::relation::{quote_ident, QualifiedName};
use tokio_postgres::Client;

/// Position and WAL retention of a replication slot, for metrics and for resuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotStatus {
    /// Everything before this LSN has been confirmed by the consumer (0 if never).
    pub confirmed_flush_lsn: u64,
    /// Oldest WAL the slot still needs (0 if unknown, e.g. an invalidated slot).
    pub restart_lsn: u64,
    /// WAL bytes kept on the server because of this slot (`pg_current_wal_lsn() - restart_lsn`);
    /// grows without bound if the consumer stops confirming.
    pub retained_wal_bytes: u64,
    /// WAL that may still be written before the slot is in danger of being invalidated
    /// (`safe_wal_size`: what `max_slot_wal_keep_size` leaves); `None` when that is unlimited.
    pub safe_wal_bytes: Option<i64>,
    /// Postgres invalidated the slot (`wal_status = 'lost'`): the WAL it needed is gone.
    pub lost: bool,
}

/// Slot names are restricted by Postgres to lower-case letters, digits and underscores (at most
/// 63 bytes); checking here gives a clear error instead of one from deep inside the walsender,
/// and lets the name appear unquoted in `START_REPLICATION`.
pub fn validate_slot_name(slot: &str) -> Result<(), PgError> {
    let ok = !slot.is_empty()
        && slot.len() <= 63
        && slot.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PgError::InvalidName(format!(
            "replication slot name {slot:?} may contain only lower case letters, digits and underscores (at most 63)"
        )))
    }
}

fn ignore_duplicate(result: Result<(), tokio_postgres::Error>) -> Result<(), PgError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = PgError::from(e);
            if e.code() == Some("42710") {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// Creates the publication (empty; tables are added on demand by [`add_table_to_publication`])
/// and the durable logical slot using `pgoutput`, each only if missing.
///
/// The publication is created `WITH (publish_via_partition_root = true)` so changes to a
/// partitioned table arrive under the table's own name rather than its partitions'. Creating the
/// slot waits for transactions already running to finish (Postgres needs a consistent starting
/// point). An existing slot with another plugin or for another database is an error, not silently
/// reused.
pub async fn ensure_slot_and_publication(client: &Client, slot: &str, publication: &str) -> Result<(), PgError> {
    validate_slot_name(slot)?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", &[&publication])
        .await?
        .is_some();
    if !exists {
        let sql = format!("CREATE PUBLICATION {} WITH (publish_via_partition_root = true)", quote_ident(publication));
        ignore_duplicate(client.batch_execute(&sql).await)?;
    }
    let row = client
        .query_opt(
            "SELECT plugin::text, slot_type::text, database = current_database() \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    match row {
        Some(row) => {
            let plugin: Option<String> = row.try_get(0)?;
            let slot_type: Option<String> = row.try_get(1)?;
            let same_db: Option<bool> = row.try_get(2)?;
            if slot_type.as_deref() != Some("logical") || plugin.as_deref() != Some("pgoutput") || same_db != Some(true)
            {
                return Err(PgError::Config(format!(
                    "replication slot {slot:?} exists but is not a pgoutput logical slot of this database \
                     (type {slot_type:?}, plugin {plugin:?}); drop it or configure another slot name"
                )));
            }
            Ok(())
        }
        None => {
            let result = client
                .query_one("SELECT 1 FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
                .await
                .map(|_| ());
            ignore_duplicate(result)
        }
    }
}

/// How long the statements that set a table up for replication (`ALTER TABLE … REPLICA
/// IDENTITY FULL`, which needs an exclusive lock, and `ALTER PUBLICATION … ADD TABLE`) wait for
/// their lock. A transaction that wrote to the table and stays open holds a lock they conflict
/// with: without a bound the shape request would wait for it for ever — and, queued for the
/// exclusive lock, the ALTER would hold up every other reader and writer of the table behind it.
/// Past the bound the statement fails with SQLSTATE `55P03` ([`PgError::is_lock_timeout`]) and
/// the caller answers 503 + retry-after.
pub const DDL_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `sql` (one DDL statement, outside a transaction) with `lock_timeout` at
/// [`DDL_LOCK_TIMEOUT`], and the session's setting back afterwards however it ended.
async fn ddl_with_lock_timeout(client: &Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&format!("SET lock_timeout = {}", DDL_LOCK_TIMEOUT.as_millis())).await?;
    let result = client.batch_execute(sql).await;
    client.batch_execute("RESET lock_timeout").await?;
    result
}

/// Adds a table to the publication and makes sure it has `REPLICA IDENTITY FULL` (which Ferrite
/// needs for old rows in updates/deletes and for filling unchanged TOASTed values).
///
/// Idempotent: nothing is altered when the table is already a member and already FULL. For a
/// partitioned table every existing partition gets FULL too (the old row is logged per partition);
/// partitions attached later need it as well. `ALTER TABLE … REPLICA IDENTITY` requires owning
/// the table and briefly takes an exclusive lock.
pub async fn add_table_to_publication(
    client: &Client,
    publication: &str,
    table: &QualifiedName,
) -> Result<(), PgError> {
    let row = client
        .query_opt(
            "SELECT c.oid FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.schema, &table.name],
        )
        .await?
        .ok_or_else(|| PgError::TableNotFound(table.quoted()))?;
    let oid: u32 = row.try_get(0)?;

    let not_full = client
        .query(
            "SELECT n.nspname::text, c.relname::text \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE (c.oid = $1 OR c.oid IN (SELECT relid FROM pg_catalog.pg_partition_tree($1::oid::regclass))) \
               AND c.relreplident <> 'f' AND c.relkind IN ('r', 'p')",
            &[&oid],
        )
        .await?;
    for r in not_full {
        let name = QualifiedName::new(r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?);
        tracing::info!(table = %name, "setting REPLICA IDENTITY FULL");
        ddl_with_lock_timeout(client, &format!("ALTER TABLE {} REPLICA IDENTITY FULL", name.quoted())).await?;
    }

    let member = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            &[&publication, &table.schema, &table.name],
        )
        .await?
        .is_some();
    if !member {
        tracing::info!(table = %table, publication, "adding table to publication");
        let sql = format!("ALTER PUBLICATION {} ADD TABLE {}", quote_ident(publication), table.quoted());
        ignore_duplicate(ddl_with_lock_timeout(client, &sql).await)?;
    }
    Ok(())
}

/// The slot's confirmed and restart positions and the WAL it retains; `None` if there is no such
/// slot. Used for metrics (a growing `retained_wal_bytes` means Ferrite is not keeping up).
pub async fn slot_status(client: &Client, slot: &str) -> Result<Option<SlotStatus>, PgError> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, restart_lsn::text, \
                    COALESCE(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), 0)::int8, \
                    safe_wal_size, wal_status = 'lost' \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let lsn = |text: Option<String>| -> Result<u64, PgError> {
        match text {
            None => Ok(0),
            Some(t) => parse_lsn(&t).ok_or_else(|| PgError::Protocol(format!("cannot parse LSN {t:?}"))),
        }
    };
    let retained: i64 = row.try_get(2)?;
    Ok(Some(SlotStatus {
        confirmed_flush_lsn: lsn(row.try_get(0)?)?,
        restart_lsn: lsn(row.try_get(1)?)?,
        retained_wal_bytes: retained.max(0) as u64,
        safe_wal_bytes: row.try_get(3)?,
        lost: row.try_get::<_, Option<bool>>(4)?.unwrap_or(false),
    }))
}

/// Drops the slot if Postgres invalidated it (it retained more WAL than
/// `max_slot_wal_keep_size` allows, and the WAL it needed was removed): it can never stream
/// again, and [`ensure_slot_and_publication`] then makes a new one, which starts at the current
/// end of the WAL. Returns whether it was dropped — the caller must then treat everything it
/// derived from the old slot as having a gap.
pub async fn drop_slot_if_lost(client: &Client, slot: &str) -> Result<bool, PgError> {
    let lost = client
        .query_opt("SELECT wal_status = 'lost' FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await?
        .and_then(|r| r.get::<_, Option<bool>>(0))
        .unwrap_or(false);
    if lost {
        client.query_one("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&slot]).await?;
    }
    Ok(lost)
}

/// The server's current WAL insert position (`pg_current_wal_lsn()`), to compare with the slot's
/// confirmed position (replication lag) and to stamp snapshots.
pub async fn current_wal_lsn(client: &Client) -> Result<u64, PgError> {
    let row = client.query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[]).await?;
    let text: String = row.try_get(0)?;
    parse_lsn(&text).ok_or_else(|| PgError::Protocol(format!("cannot parse LSN {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        assert!(validate_slot_name("ferrite_slot_1").is_ok());
        assert!(validate_slot_name("").is_err());
        assert!(validate_slot_name("Upper").is_err());
        assert!(validate_slot_name("a-b").is_err());
        assert!(validate_slot_name(&"a".repeat(64)).is_err());
    }
}

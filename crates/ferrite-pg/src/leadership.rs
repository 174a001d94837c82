//! Which node of a cluster leads, decided by Postgres: the holder of a session-level advisory
//! lock named after the replication slot leads, and records where it can be reached in
//! `ferrite.cluster_leader`, so followers find it through the database they share — whatever
//! happens to the NATS the nodes talk over.
//!
//! The lock's first key is its own ([`LEADER_LOCK_SPACE`], "FELD"), apart from the client locks
//! of the write path ("FERR", [`crate::write_store`]), so no client id can ever hash onto it.

use crate::PgError;
use tokio_postgres::Client;

/// The first key of the leadership lock (`pg_try_advisory_lock(int, int)`): "FELD".
pub const LEADER_LOCK_SPACE: i32 = 0x4645_4C44;

/// Creates `ferrite.cluster_leader` if needed (idempotent; safe when several nodes start at
/// once: under a transaction-level advisory lock, as the write path's tables are).
pub async fn ensure_table(client: &Client) -> Result<(), PgError> {
    client
        .batch_execute(
            "BEGIN;
             SELECT pg_advisory_xact_lock(4991073711594410497);
             CREATE SCHEMA IF NOT EXISTS ferrite;
             CREATE TABLE IF NOT EXISTS ferrite.cluster_leader (
                 slot text PRIMARY KEY,
                 node text NOT NULL,
                 url text NOT NULL,
                 since timestamptz NOT NULL DEFAULT now());
             COMMIT;",
        )
        .await?;
    Ok(())
}

/// Makes Postgres notice within about 15 s that this session's node has gone silent (its host
/// powered off, the network cut) — not only when its process dies and the kernel closes the
/// socket — so the lock it may hold is released for another node to take. TCP keepalives of the
/// server side of the session: first probe after 5 s idle, then every 3 s, 3 unanswered close it.
pub async fn prepare_session(client: &Client) -> Result<(), PgError> {
    client
        .batch_execute("SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 3; SET tcp_keepalives_count = 3;")
        .await?;
    Ok(())
}

/// Takes the leadership lock of `slot` on this session if it is free; true when held now.
pub async fn try_lead(client: &Client, slot: &str) -> Result<bool, PgError> {
    let row = client.query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&LEADER_LOCK_SPACE, &slot]).await?;
    Ok(row.get(0))
}

/// Ends the session streaming `slot`, if any: a deposed leader's walsender (its process frozen,
/// or cut off from Postgres's view but not its socket) would otherwise keep the slot busy until
/// `wal_sender_timeout`. Call it holding the lock: whoever streams the slot then is not the
/// leader. Returns the process id ended.
pub async fn evict_slot_streamer(client: &Client, slot: &str) -> Result<Option<i32>, PgError> {
    let row = client
        .query_opt(
            "SELECT active_pid, pg_terminate_backend(active_pid) FROM pg_catalog.pg_replication_slots
             WHERE slot_name = $1 AND active_pid IS NOT NULL AND active_pid <> pg_backend_pid()",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Records this node as the leader of `slot` (call it holding the lock).
pub async fn record_leader(client: &Client, slot: &str, node: &str, url: &str) -> Result<(), PgError> {
    client
        .execute(
            "INSERT INTO ferrite.cluster_leader (slot, node, url, since) VALUES ($1, $2, $3, now())
             ON CONFLICT (slot) DO UPDATE SET node = excluded.node, url = excluded.url, since = excluded.since",
            &[&slot, &node, &url],
        )
        .await?;
    Ok(())
}

/// The node id and URL the last leader of `slot` recorded, if any (it may have died since).
pub async fn recorded_leader(client: &Client, slot: &str) -> Result<Option<(String, String)>, PgError> {
    let row = client.query_opt("SELECT node, url FROM ferrite.cluster_leader WHERE slot = $1", &[&slot]).await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

//! Leadership: exactly one node of a cluster follows the replication slot and keeps shapes.
//!
//! Every node tries to take a Postgres advisory lock named after the slot
//! ([`ferrite_pg::leadership`]) on a connection of its own, every [`TRY_EVERY`]. Until it gets
//! it, a node follows: it applies the shape stream to its data directory ([`super::stream`]).
//! The holder leads: it records its URL in `ferrite.cluster_leader` (followers read it there,
//! so they find the leader without NATS), applies the stream to its end and fences it (only it
//! can append from then on), opens the shapes the stream brought — the handles and offsets the
//! last leader served — ends any session still streaming the slot (a deposed leader that froze
//! would hold it until `wal_sender_timeout`), and runs the replication driver from the slot's
//! confirmed position. Postgres releases the lock when the holder's session ends — the
//! process killed, the connection cut, or (TCP keepalives on the session) the holder's host
//! silent for about 15 s — and the next node to try takes over.
//!
//! A leader checks its lock connection every [`HOLD_CHECK`]; when it is gone (or does not answer
//! within [`HOLD_TIMEOUT`]), so may be the lock, and the node stops following the slot at once
//! (Postgres also lets only one walsender use a slot, so two nodes never both stream it) and
//! halts: its files may hold writes it never published, so it starts again (its supervisor
//! restarts it) from an empty directory, as a follower. Should two nodes say they lead for a
//! moment, followers pass reads to the one that took the lock last, and the stream's fencing
//! stops the deposed one at its next write.

use super::Cluster;
use crate::state::AppState;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How often a follower tries to take the lock.
pub const TRY_EVERY: Duration = Duration::from_millis(500);
/// How often a leader checks that its lock connection is alive.
pub const HOLD_CHECK: Duration = Duration::from_secs(1);
/// A check not answered within this long counts as the connection lost.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(3);

/// Contends for leadership forever, leading whenever this node holds the lock.
pub async fn run(state: Arc<AppState>, cluster: Arc<Cluster>) {
    let js = async_nats::jetstream::new(cluster.client.clone());
    let follower = super::stream::Follower::start(
        state.clone(),
        cluster.client.clone(),
        state.config.slot_name.clone(),
        cluster.subject("files"),
    );
    let mut follower = Some(follower);
    loop {
        let client = match ferrite_pg::connect::connect(&state.config.database_url).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to Postgres for the cluster's leadership lock; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let slot = &state.config.slot_name;
        if let Err(e) = ferrite_pg::leadership::prepare_session(&client).await {
            // Only the loss of a whole host is noticed later without it; the lock still works.
            tracing::warn!(error = %e, "cannot set TCP keepalives on the leadership lock's session");
        }
        if let Err(e) = ferrite_pg::leadership::ensure_table(&client).await {
            tracing::warn!(error = %e, "cannot create ferrite.cluster_leader; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if !take_lock(&client, slot, &cluster).await {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if let Err(e) = ferrite_pg::leadership::record_leader(&client, slot, &cluster.node, &cluster.url).await {
            // The lock is what counts; followers also learn the leader from its heartbeats.
            tracing::warn!(error = %e, "cannot record this node as the leader");
        }
        let Some(following) = follower.take() else { return };
        let sink = match super::stream::take_over(&state, &js, &cluster, following).await {
            Ok(sink) => sink,
            Err(e) => return state.halt(format!("taking over the shape stream: {e}")),
        };
        let (opened, dropped) = match tokio::task::block_in_place(|| state.registry.take_over(sink.clone())) {
            Ok(counts) => counts,
            Err(e) => return state.halt(format!("opening the replicated shapes: {e}")),
        };
        match ferrite_pg::leadership::evict_slot_streamer(&client, slot).await {
            Ok(Some(pid)) => tracing::warn!(pid, "ended the deposed leader's replication session"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check who streams the slot"),
        }
        cluster.set_leading(true);
        state.metrics.cluster_leader.store(1, Ordering::Relaxed);
        tracing::info!(node = %cluster.node, name = %cluster.name, shapes = opened, dropped_shapes = dropped, "this node leads the cluster");
        // As at a start: relational shapes stopped in a move-in read its rows again, and those
        // that read the clock wait for their next boundary.
        for shape in state.registry.moving_in() {
            tokio::spawn(crate::state::run_move_in(state.clone(), shape));
        }
        for shape in state.registry.following_clock() {
            tokio::spawn(crate::state::follow_clock(state.clone(), shape));
        }
        let replication = crate::replication::spawn(state.clone());
        // Alive means answering within HOLD_TIMEOUT: a connection that hangs (a network cut
        // without a reset) may already have lost the lock on the Postgres side.
        while matches!(tokio::time::timeout(HOLD_TIMEOUT, client.simple_query("SELECT 1")).await, Ok(Ok(_))) {
            tokio::time::sleep(HOLD_CHECK).await;
        }
        drop(replication);
        cluster.set_leading(false);
        state.metrics.cluster_leader.store(0, Ordering::Relaxed);
        state.replication_ready.store(false, Ordering::Relaxed);
        state.metrics.replication_connected.store(0, Ordering::Relaxed);
        return state.halt(format!("node {} lost the cluster's leadership lock", cluster.node));
    }
}

/// Waits until the lock is taken on `client` (true) or the connection fails (false), noting
/// meanwhile the leader the database names.
async fn take_lock(client: &tokio_postgres::Client, slot: &str, cluster: &Cluster) -> bool {
    loop {
        match ferrite_pg::leadership::try_lead(client, slot).await {
            Ok(true) => return true,
            Ok(false) => {
                if let Ok(Some((node, url))) = ferrite_pg::leadership::recorded_leader(client, slot).await {
                    cluster.set_recorded_leader(node, url);
                }
                tokio::time::sleep(TRY_EVERY).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the leadership lock's connection failed");
                return false;
            }
        }
    }
}

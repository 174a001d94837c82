//! Presence across nodes: each node sends its local members' changes to
//! `ferrite.<slot>.presence` and takes the others' from there, so a reader on any node sees the
//! members of every node. A node's members leave with it when its heartbeat stops
//! ([`super::nodes`]).
//!
//! Plain NATS messages, not JetStream: presence is ephemeral, and a lost message is repaired by
//! the member's next heartbeat. A node that joins late learns the members of the others from
//! their next heartbeats (clients send one every few seconds).
//!
//! What arrives is checked like a client's post (room name length, state size) and taken only
//! from nodes whose heartbeat is current; messages over [`MAX_MESSAGE_BYTES`] are ignored.

use super::Cluster;
use crate::presence::PresenceChange;
use crate::state::AppState;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Largest presence message taken from another node (a member's state is at most 4 KiB).
const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Local changes waiting to be sent; beyond it they are dropped (presence is lossy).
const QUEUE: usize = 4096;
/// Longest room name taken from another node (as from a client).
const MAX_ROOM_LEN: usize = 256;

/// A local change as it travels.
#[derive(Serialize, Deserialize)]
struct Relayed {
    node: String,
    change: PresenceChange,
}

/// Starts relaying this node's presence and taking the others'.
pub fn start(state: Arc<AppState>, cluster: Arc<Cluster>) -> Vec<JoinHandle<()>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    state.presence.relay_to(tx);
    vec![tokio::spawn(send(state.clone(), cluster.clone(), rx)), tokio::spawn(receive(state, cluster))]
}

async fn send(state: Arc<AppState>, cluster: Arc<Cluster>, mut rx: mpsc::Receiver<PresenceChange>) {
    let subject = cluster.subject("presence");
    while let Some(change) = rx.recv().await {
        let Ok(bytes) = serde_json::to_vec(&Relayed { node: cluster.node.clone(), change }) else { continue };
        match cluster.client.publish(subject.clone(), bytes.into()).await {
            Ok(()) => {
                state.metrics.presence_relayed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "presence change not sent"),
        }
    }
}

async fn receive(state: Arc<AppState>, cluster: Arc<Cluster>) {
    let mut changes = cluster.subscribe("presence").await;
    while let Some(msg) = changes.next().await {
        if msg.payload.len() > MAX_MESSAGE_BYTES {
            continue;
        }
        let Ok(r) = serde_json::from_slice::<Relayed>(&msg.payload) else { continue };
        if r.node == cluster.node || !acceptable(&r.change) || !super::nodes::known(&cluster, &r.node) {
            continue;
        }
        state.metrics.presence_received.fetch_add(1, Ordering::Relaxed);
        state.presence.apply_remote(&r.node, r.change);
    }
}

/// Whether a change from another node is within what a client may post here.
fn acceptable(change: &PresenceChange) -> bool {
    match change {
        PresenceChange::Upsert { room, member, .. } => {
            !room.is_empty() && room.len() <= MAX_ROOM_LEN && member.member.len() <= 64
        }
        PresenceChange::Leave { room, member } => room.len() <= MAX_ROOM_LEN && member.len() <= 64,
    }
}

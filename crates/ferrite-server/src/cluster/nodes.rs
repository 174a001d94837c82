//! Who is in the cluster: every node sends a heartbeat to `ferrite.<slot>.nodes` every
//! [`HEARTBEAT`] with its name, URL and role; every node keeps the others it heard from within
//! [`NODE_TIMEOUT`]. A node that goes silent leaves the table, and its presence members leave
//! their rooms at once (rather than at each member's TTL).

use super::Cluster;
use crate::state::AppState;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is gone.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest heartbeat taken.
const MAX_BEAT_BYTES: usize = 4096;
/// Most other nodes tracked at once.
const MAX_NODES: usize = 1024;

/// Another node as its heartbeats describe it.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    /// Its node id.
    pub node: String,
    /// Its name.
    pub name: String,
    /// Its HTTP API.
    pub url: String,
    /// Whether it leads.
    pub leading: bool,
    /// When it took the lock, if it leads (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leading_since: Option<u64>,
    /// Its replication lag (bytes of WAL behind Postgres) when it leads.
    pub lag_bytes: u64,
    /// Its place in the shape stream (see [`super::stream`]): a follower behind the leader's is
    /// that many messages from holding what the leader serves.
    pub stream_seq: u64,
    /// When it was last heard from.
    #[serde(skip)]
    pub seen: Instant,
}

/// A heartbeat as it travels.
#[derive(Serialize, Deserialize)]
struct Beat {
    node: String,
    name: String,
    url: String,
    leading: bool,
    #[serde(default)]
    leading_since: Option<u64>,
    lag_bytes: u64,
    #[serde(default)]
    stream_seq: u64,
}

/// Sends this node's heartbeat every [`HEARTBEAT`], forever.
pub async fn heartbeat(state: Arc<AppState>, cluster: Arc<Cluster>) {
    let subject = cluster.subject("nodes");
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        let beat = Beat {
            node: cluster.node.clone(),
            name: cluster.name.clone(),
            url: cluster.url.clone(),
            leading: cluster.leading(),
            leading_since: cluster.leading_since(),
            lag_bytes: state.metrics.replication_lag_bytes(),
            stream_seq: state.metrics.cluster_stream_seq.load(Ordering::Relaxed),
        };
        let Ok(bytes) = serde_json::to_vec(&beat) else { continue };
        if let Err(e) = cluster.client.publish(subject.clone(), bytes.into()).await {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }
}

/// Keeps the table of other nodes, forever: takes their heartbeats and drops the silent ones.
pub async fn watch(state: Arc<AppState>, cluster: Arc<Cluster>) {
    let mut beats = cluster.subscribe("nodes").await;
    let mut check = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            Some(msg) = beats.next() => {
                if msg.payload.len() > MAX_BEAT_BYTES {
                    continue;
                }
                let Ok(b) = serde_json::from_slice::<Beat>(&msg.payload) else { continue };
                if b.node == cluster.node || b.node.len() > 64 || b.name.len() > 256 || b.url.len() > 1024 {
                    continue;
                }
                let mut peers = cluster.peers.lock();
                if peers.len() >= MAX_NODES && !peers.contains_key(&b.node) {
                    continue;
                }
                peers.insert(
                    b.node.clone(),
                    Peer {
                        node: b.node,
                        name: b.name,
                        url: b.url,
                        leading: b.leading,
                        leading_since: b.leading_since.filter(|_| b.leading),
                        lag_bytes: b.lag_bytes,
                        stream_seq: b.stream_seq,
                        seen: Instant::now(),
                    },
                );
            }
            _ = check.tick() => {
                let now = Instant::now();
                let dead: Vec<String> = {
                    let mut peers = cluster.peers.lock();
                    let dead = peers.values().filter(|p| now.duration_since(p.seen) > NODE_TIMEOUT).map(|p| p.node.clone()).collect::<Vec<_>>();
                    for n in &dead {
                        peers.remove(n);
                    }
                    state.metrics.cluster_nodes_seen.store(peers.len() as i64, Ordering::Relaxed);
                    dead
                };
                for node in dead {
                    let gone = state.presence.forget_node(&node);
                    tracing::info!(%node, members = gone, "a node of the cluster went silent");
                }
            }
        }
    }
}

/// Whether `node` is a live peer (its presence changes are taken only then, so a node's members
/// never outlive it).
pub fn known(cluster: &Cluster, node: &str) -> bool {
    cluster.peers.lock().contains_key(node)
}

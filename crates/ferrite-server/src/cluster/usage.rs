//! Which shapes readers use, told to the leader: a follower answers many reads from its own copy
//! (see [`super::forward::serves_here`]), which the leader never sees, and the leader alone
//! expires idle shapes and evicts the least recently used ones. So every [`every`] a follower
//! publishes to `ferrite.<slot>.used` the handles its readers asked for lately, and the leader
//! counts them as used. (Best effort over NATS core: a lost message only makes a shape look
//! idle one period longer than it is, a third of `shape_ttl_secs` at most.)

use super::Cluster;
use crate::state::AppState;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// How often a follower tells the leader what its readers used: every 5 s, or three times per
/// `shape_ttl_secs` when that is shorter.
pub fn every(ttl_secs: u64) -> Duration {
    Duration::from_millis((ttl_secs.saturating_mul(1000) / 3).clamp(200, 5000))
}
/// Most handles in one message (several messages when more were used).
const PER_MESSAGE: usize = 1000;
/// Largest message taken, and longest handle.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
const MAX_HANDLE_BYTES: usize = 256;

/// Sends, while this node follows, the handles its readers used since the last time.
pub async fn report(state: Arc<AppState>, cluster: Arc<Cluster>) {
    let subject = cluster.subject("used");
    let period = every(state.config.shape_ttl_secs);
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if cluster.leading() {
            continue;
        }
        let used = state.registry.used_within((period * 2).as_secs().max(2));
        for part in used.chunks(PER_MESSAGE) {
            let Ok(bytes) = serde_json::to_vec(part) else { continue };
            if let Err(e) = cluster.client.publish(subject.clone(), bytes.into()).await {
                tracing::debug!(error = %e, "shape use not sent to the leader");
            }
        }
    }
}

/// Takes the followers' reports, while this node leads: their shapes count as used now.
pub async fn take(state: Arc<AppState>, cluster: Arc<Cluster>) {
    let mut reports = cluster.subscribe("used").await;
    while let Some(msg) = reports.next().await {
        if !cluster.leading() || msg.payload.len() > MAX_MESSAGE_BYTES {
            continue;
        }
        let Ok(handles) = serde_json::from_slice::<Vec<String>>(&msg.payload) else { continue };
        for h in handles.iter().filter(|h| h.len() <= MAX_HANDLE_BYTES) {
            if let Some(shape) = state.registry.get(h) {
                state.registry.touch(&shape);
            }
        }
    }
}

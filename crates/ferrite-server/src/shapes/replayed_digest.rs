//! Convergence digests computed on demand (`GET /v1/shape/digest`), for the shapes whose digest
//! the server does not keep as it goes: relational shapes (and so include-tree members), whose
//! rows also leave through `move-out` events that name tag values, not rows, and shapes with
//! time windows. Keeping their digest incrementally would mean tracking every row of every such
//! shape in memory; instead the shape's log is replayed up to the client's offset with the rules
//! the clients apply ([`ferrite_protocol::replay`]), which costs about what an initial sync of
//! the shape costs, when a client asks (every ten minutes by default).
//!
//! Bounds: one replay runs at a time (they are CPU work, on a blocking thread), a request waits
//! at most [`PERMIT_WAIT`] for its turn (then 503), a replay reads at most
//! [`MAX_REPLAY_BYTES`] of log (a larger shape gets no digest), and a request that goes away
//! stops its replay at the next message. The last [`CACHED_ANSWERS`] answers are kept by handle
//! and offset — a log never changes below an offset it served, so neither does the answer —
//! and many clients of one shape at one offset cost one replay.

use crate::metrics::Metrics;
use crate::shapes::Shape;
use ferrite_core::shape::LogMode;
use ferrite_protocol::digest::Digest;
use ferrite_protocol::messages::ShapeMessage;
use ferrite_protocol::offset::LogOffset;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Log bytes one replay reads at most.
pub const MAX_REPLAY_BYTES: u64 = 512 << 20;
/// How long a request waits for the replay before it.
pub const PERMIT_WAIT: Duration = Duration::from_secs(10);
/// Answers kept.
pub const CACHED_ANSWERS: usize = 256;

/// What the server can say about a shape's rows at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The digest of the rows a client holds at the offset.
    Digest(Digest),
    /// No digest, and why (a changes-only log, a log too large to replay).
    Unknown(&'static str),
}

/// Why no answer could be computed now.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Other replays hold the turn: retry later.
    #[error("other digests are being computed; retry later")]
    Busy,
    /// The log could not be read.
    #[error("the shape log could not be replayed: {0}")]
    Failed(String),
}

/// The replays of one server: their turn and their answers.
pub struct ReplayedDigests {
    turn: tokio::sync::Semaphore,
    answers: Mutex<VecDeque<((String, LogOffset), Answer)>>,
}

impl Default for ReplayedDigests {
    fn default() -> Self {
        ReplayedDigests { turn: tokio::sync::Semaphore::new(1), answers: Mutex::new(VecDeque::new()) }
    }
}

impl ReplayedDigests {
    /// The digest of `shape`'s rows as a client holds them after reading its log up to
    /// `offset` (see the module documentation).
    pub async fn digest(
        &self,
        shape: &Arc<Shape>,
        offset: LogOffset,
        metrics: &Metrics,
    ) -> Result<Answer, ReplayError> {
        if shape.definition.log == LogMode::ChangesOnly {
            return Ok(Answer::Unknown("the shape's log holds changes only (log=changes_only), not its rows"));
        }
        let key = (shape.handle.clone(), offset);
        if let Some(answer) = self.cached(&key, metrics) {
            return Ok(answer);
        }
        let _turn = tokio::time::timeout(PERMIT_WAIT, self.turn.acquire())
            .await
            .map_err(|_| ReplayError::Busy)?
            .expect("never closed");
        // Another request may have computed it while this one waited.
        if let Some(answer) = self.cached(&key, metrics) {
            return Ok(answer);
        }
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let (s, flag) = (shape.clone(), stop.0.clone());
        let started = std::time::Instant::now();
        let answer = tokio::task::spawn_blocking(move || replay(&s, offset, &flag))
            .await
            .map_err(|e| ReplayError::Failed(e.to_string()))??;
        metrics.digest_replays.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(handle = %shape.handle, %offset, ?answer, ms = started.elapsed().as_millis() as u64,
            "replayed a shape's log for its digest");
        let mut answers = self.answers.lock();
        if answers.len() >= CACHED_ANSWERS {
            answers.pop_front();
        }
        answers.push_back((key, answer.clone()));
        Ok(answer)
    }

    /// The kept answer for `key`, counted as served from there.
    fn cached(&self, key: &(String, LogOffset), metrics: &Metrics) -> Option<Answer> {
        let answer = self.answers.lock().iter().rev().find(|(k, _)| k == key).map(|(_, a)| a.clone())?;
        metrics.digest_replays_cached.fetch_add(1, Ordering::Relaxed);
        Some(answer)
    }
}

/// Sets its flag when the request holding it is dropped (the client went away): the replay
/// checks it between messages.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Replays `shape`'s log up to `offset` (a blocking read of the file).
fn replay(shape: &Shape, offset: LogOffset, stop: &AtomicBool) -> Result<Answer, ReplayError> {
    let (mut replica, hasher) = shape.filter.replay();
    let mut read = 0u64;
    let mut too_large = false;
    shape
        .log
        .scan(offset, |_, json| {
            read += json.len() as u64;
            if read > MAX_REPLAY_BYTES {
                too_large = true;
                return Ok(false);
            }
            if stop.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("the request went away"));
            }
            let m = serde_json::from_slice::<ShapeMessage<'_>>(json).map_err(std::io::Error::other)?;
            replica.apply(&m).map_err(std::io::Error::other)?;
            Ok(true)
        })
        .map_err(|e| ReplayError::Failed(e.to_string()))?;
    if too_large {
        return Ok(Answer::Unknown("the shape's log is too large to replay for a digest"));
    }
    Ok(Answer::Digest(replica.digest(&hasher)))
}

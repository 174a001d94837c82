//! Live mode over server-sent events: each message as `data: <json>`, an `up-to-date` after
//! every batch, keep-alive comments in silence, and an end after `sse_timeout_secs` (clients
//! reconnect). Gzipped when the client accepts it, each batch decodable as soon as it arrives
//! (see [`super::compression::GzipEvents`]).

use super::compression::{Encoding, GzipEvents, Negotiated};
use super::params::ShapeRequest;
use super::response::{self as resp, set};
use super::shape::next_cursor;
use super::shape::{BodyKind, LiveBodies};
use crate::shapes::Shape;
use crate::state::AppState;
use crate::storage::{LiveSpan, LogSlice, ReadOutcome};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Response};
use ferrite_protocol::offset::LogOffset;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Starts an SSE response for `shape` from offset `o`.
/// The stream holds `ticket` (its admission) until it ends, not just until the response starts.
pub async fn stream(
    state: &Arc<AppState>,
    shape: Arc<Shape>,
    req: &ShapeRequest,
    o: LogOffset,
    encoding: Encoding,
    ticket: crate::admission::Ticket,
) -> Response<Body> {
    if shape.removed().is_some() {
        return match state.get_or_create(&shape.definition).await {
            Ok(s) if s.handle != shape.handle => resp::must_refetch(Some(&s.handle)),
            _ => resp::must_refetch(None),
        };
    }
    // Two batches in flight at most (each at most one chunk): a slow reader holds little memory.
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let timeout = Duration::from_secs(state.config.sse_timeout_secs);
    let keepalive = Duration::from_secs(state.config.sse_keepalive_secs.max(1));
    let metrics = state.metrics.clone();
    metrics.live_waiting.fetch_add(1, Ordering::Relaxed);
    let task_shape = shape.clone();
    let pump_state = state.clone();
    let stall = Duration::from_secs(state.config.slow_client_timeout_secs);
    let out = Outlet { tx, stall };
    tokio::spawn(async move {
        pump(pump_state, task_shape, o, out, timeout, keepalive).await;
        metrics.live_waiting.fetch_sub(1, Ordering::Relaxed);
        drop(ticket);
    });
    let mut r =
        if encoding == Encoding::Gzip {
            // Each batch as a gzip piece, then the trailer when the stream ends.
            let body = futures_util::stream::unfold((rx, Some(GzipEvents::new())), |(mut rx, gz)| async move {
                let mut gz = gz?;
                match rx.recv().await {
                    // A reader far behind gets whole chunks: compress those off the runtime.
                    Some(b) if b.len() > BLOCKING_PIECE_BYTES => {
                        let (piece, gz) = tokio::task::spawn_blocking(move || (gz.piece(&b), gz)).await.ok()?;
                        Some((Ok::<_, Infallible>(piece), (rx, Some(gz))))
                    }
                    Some(b) => {
                        let piece = gz.piece(&b);
                        Some((Ok(piece), (rx, Some(gz))))
                    }
                    None => Some((Ok(gz.finish()), (rx, None))),
                }
            });
            let mut r = Response::new(Body::from_stream(body));
            r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            let body = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
            });
            Response::new(Body::from_stream(body))
        };
    r.extensions_mut().insert(Negotiated);
    r.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    set(&mut r, "content-type", "text/event-stream");
    set(&mut r, "cache-control", &format!("public, max-age={}", state.config.sse_timeout_secs.saturating_sub(1)));
    set(&mut r, "x-accel-buffering", "no");
    set(&mut r, "electric-handle", &shape.handle);
    set(&mut r, "electric-offset", &o.to_string());
    set(&mut r, "electric-cursor", &next_cursor(state, req.cursor).to_string());
    r
}

/// One batch's events: each message as `data: <json>`, then `up-to-date` with `lsn` if given.
fn events(slice: &LogSlice, up_to_date_lsn: Option<u64>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(slice.body.len() + slice.count * 8 + 96);
    let mut start = 0;
    for &e in &slice.item_ends {
        bytes.extend_from_slice(b"data: ");
        bytes.extend_from_slice(&slice.body[start..e]);
        bytes.extend_from_slice(b"\n\n");
        start = e + 1;
    }
    if let Some(lsn) = up_to_date_lsn {
        bytes.extend_from_slice(format!("data: {}\n\n", ferrite_protocol::messages::up_to_date(lsn)).as_bytes());
    }
    bytes
}

/// Batches bigger than this are gzipped on a blocking thread.
const BLOCKING_PIECE_BYTES: usize = 64 * 1024;

/// The stream's sending end: a client that stops reading for `stall` is cut off.
struct Outlet {
    tx: mpsc::Sender<Bytes>,
    stall: Duration,
}

impl Outlet {
    /// False when the client is gone or stalled: the pump stops and the connection closes.
    async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send_timeout(bytes, self.stall).await.is_ok()
    }
}

/// Sends batches as they become durable. The `up-to-date` after each batch carries the LSN the
/// server has processed: clients resume at `<lsn>_0`, which lies at or after everything sent.
async fn pump(
    state: Arc<AppState>,
    shape: Arc<Shape>,
    mut at: LogOffset,
    out: Outlet,
    timeout: Duration,
    keepalive: Duration,
) {
    let end = Instant::now() + timeout;
    let mut changes = shape.log.subscribe();
    let mut removal = shape.removal();
    loop {
        if shape.removed().is_some() {
            return;
        }
        // Read the processed LSN before the log: everything of this shape up to it is then in
        // the slice, so a client resuming at `<lsn>_0` misses nothing.
        let processed = state.global_lsn.load(Ordering::Relaxed);
        let span = match shape.log.live_span(at) {
            LiveSpan::Tail(tail) => {
                // Every stream at `at` was woken by the sync that left this tail: one batch is
                // built for all of them (see `super::shape::LiveBodies`).
                let slice = tail.slice();
                let lsn = slice.end.tx.max(processed);
                let Some(bodies) = tail.shared::<LiveBodies>() else {
                    return;
                };
                let built = bodies.get_or_build(&state.metrics, BodyKind::Sse, lsn, "", || {
                    (String::new(), Default::default(), Bytes::from(events(slice, Some(lsn))))
                });
                at = slice.end;
                if !out.send(built.body.clone()).await {
                    return;
                }
                bodies.observe_delivery(&state, slice.end.tx);
                continue;
            }
            span => span,
        };
        match super::shape::read_span(&shape, span).await {
            Ok(ReadOutcome::Data(slice)) => {
                let lsn = slice.up_to_date.then(|| slice.end.tx.max(processed));
                at = slice.end;
                if !out.send(Bytes::from(events(&slice, lsn))).await {
                    return;
                }
                state.observe_live_delivery(slice.end.tx);
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(handle = %shape.handle, error = %e, "SSE read failed");
                return;
            }
        }
        let idle_until = (Instant::now() + keepalive).min(end);
        tokio::select! {
            _ = changes.changed() => {}
            _ = removal.changed() => return,
            // The server shuts down: the stream ends, the client resumes at its last offset.
            _ = state.drained() => return,
            // The client went away (its response body was dropped): end now, freeing the
            // stream's admission place, rather than at the next keep-alive.
            _ = out.tx.closed() => return,
            _ = tokio::time::sleep_until(idle_until.into()) => {
                if Instant::now() >= end {
                    return;
                }
                if !out.send(Bytes::from_static(b": keep-alive\n\n")).await {
                    return;
                }
            }
        }
    }
}

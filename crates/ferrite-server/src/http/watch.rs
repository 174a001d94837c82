//! `POST /v1/watch`: one held request that waits for any of several shapes to move past the
//! offsets a client holds — a Ferrite extension for browsers.
//!
//! A browser allows six HTTP/1.1 connections per origin. A client holding one long-poll per
//! shape runs out of them with an include tree of seven shapes, or two tabs of four, and then a
//! write waits for a free connection for up to a long-poll timeout. With a watch, a client holds
//! one request for all its shapes; when it answers which shapes have news, the client reads
//! them with ordinary (non-live, cacheable) `GET /v1/shape` requests, which end at once. The
//! Electric-compatible per-shape long-poll is unchanged.
//!
//! The body is `{"shapes": ["<query>", …]}`: each entry is the query string of the shape request
//! the client would send next (`table=…&where=…&handle=…&offset=…`), read exactly as
//! `GET /v1/shape` reads it — the caller's read rules included, so a watch can only wait on a
//! shape its caller may read. The answer is `{"changed": [i, …], "complete": [lsn | null, …]}`:
//! the indexes of the entries whose shape has data after their offset, went away, no longer
//! matches its handle, or cannot be waited on (the next shape request says why) — at once if
//! any, else when one does, or `[]` at the long-poll timeout; and per entry without news, the
//! log position (decimal LSN) its shape is complete through, as its up-to-date would say. A
//! watch never creates a shape.

use super::extract::{Admitted, AdmittedRoute, BoundedBody, Caller};
use super::response as resp;
use super::shape::query_pairs;
use crate::admission::Route;
use crate::shapes::Shape;
use crate::state::AppState;
use crate::storage::LiveSpan;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Response, StatusCode};
use ferrite_protocol::offset::{LogOffset, RequestOffset};
use futures_util::future::{select_all, FutureExt};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most shapes one watch waits on (an include tree has a handful; an app with more holds several
/// watches).
pub const MAX_WATCHED: usize = 100;

/// A watch holds a place among the requests on existing shapes, as one long-poll does.
pub struct WatchRoute;

impl AdmittedRoute for WatchRoute {
    const ROUTE: Route = Route::ShapeExisting;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchBody {
    shapes: Vec<String>,
}

/// `POST /v1/watch` (see the module docs).
pub async fn post(
    State(state): State<Arc<AppState>>,
    admitted: Admitted<WatchRoute>,
    BoundedBody { bytes, .. }: BoundedBody,
) -> Response<Body> {
    let Admitted { caller: Caller(who), ticket: _ticket, .. } = admitted;
    let body: WatchBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return resp::invalid_field("body", &format!("expected {{\"shapes\": [\"<query>\", …]}}: {e}")),
    };
    drop(bytes);
    if body.shapes.is_empty() {
        return resp::invalid_field("shapes", "name at least one shape to watch");
    }
    if body.shapes.len() > MAX_WATCHED {
        return resp::invalid_field("shapes", &format!("at most {MAX_WATCHED} shapes per watch"));
    }
    // Each entry is read as the shape request it stands for; a bad one is refused with the
    // message that request would get, naming its index.
    let mut watched = Vec::with_capacity(body.shapes.len());
    for (i, query) in body.shapes.iter().enumerate() {
        let pairs = query_pairs(&Some(query.clone()));
        let req = match super::shape::parse_request(&state, &pairs, None, who.as_ref()) {
            Ok(r) => r,
            Err(mut response) => {
                response.headers_mut().insert("ferrite-watch-index", HeaderValue::from(i));
                return response;
            }
        };
        let shape = match (&req.handle, req.offset) {
            (Some(h), RequestOffset::At(o)) => {
                state.registry.get(h).filter(|s| s.definition == req.definition).map(|s| (s, o))
            }
            _ => None,
        };
        watched.push(shape);
    }
    drop(body);
    let answer = {
        // Given back however the wait ends, also when the client hangs up half way.
        let _waiting = crate::metrics::Held::new(&state.metrics.live_waiting);
        wait(&state, &watched).await
    };
    let complete: Vec<Option<String>> = answer.complete.iter().map(|c| c.map(|lsn| lsn.to_string())).collect();
    let mut r = resp::json(StatusCode::OK, &serde_json::json!({ "changed": answer.changed, "complete": complete }));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// What a watch answers: the entries with news, and for each other entry the log position its
/// shape is complete through (no change after its offset up to there) — what its own long-poll
/// would have said as `global_last_seen_lsn` — so that a client holding several shapes at one
/// common point (an include tree) can move all of them on from one answer.
struct Answer {
    changed: Vec<usize>,
    complete: Vec<Option<u64>>,
}

/// How long an answer with news may wait for the server's processed position to reach the
/// changes it reports (it does within one transaction's routing), so the other entries can be
/// said complete through them.
const SETTLE: Duration = Duration::from_millis(50);

/// Waits until some watched shape has news (see the module docs), or the long-poll timeout.
async fn wait(state: &Arc<AppState>, watched: &[Option<(Arc<Shape>, LogOffset)>]) -> Answer {
    let deadline = Instant::now() + Duration::from_millis(state.config.long_poll_timeout_ms);
    let mut logs: Vec<_> = watched.iter().flatten().map(|(s, _)| (s.log.subscribe(), s.removal())).collect();
    let mut settle_until: Option<Instant> = None;
    loop {
        // The processed position first, then the logs (as a long-poll does): a log found with
        // nothing after its offset is complete through it.
        let processed = state.global_lsn.load(Ordering::Relaxed);
        let mut changed = vec![];
        let mut complete = vec![];
        let mut ahead = false;
        for (i, w) in watched.iter().enumerate() {
            let news = match w {
                None => true,
                Some((shape, o)) => {
                    let owed = shape.complete_lsn();
                    let has_data = match shape.log.live_span(*o) {
                        LiveSpan::NotReady | LiveSpan::AtHead => false,
                        LiveSpan::Bytes(_) | LiveSpan::Tail(_) => true,
                    };
                    // Past what the log holds and what the server has seen: the shape request
                    // answers that (out of bounds) at once.
                    let beyond = o.tx > processed && shape.log.durable_offset() < *o;
                    let news = shape.removed().is_some() || has_data || beyond;
                    ahead |= has_data && shape.log.durable_offset().tx > processed;
                    if !news {
                        complete.push(Some(processed.max(o.tx).min(owed.unwrap_or(u64::MAX))));
                    }
                    news
                }
            };
            if news {
                changed.push(i);
                complete.push(None);
            }
        }
        if !changed.is_empty() {
            // The news may be ahead of the processed position for a moment: wait for it (briefly)
            // so that the others are complete through the news.
            let settling = *settle_until.get_or_insert_with(|| Instant::now() + SETTLE);
            if ahead && Instant::now() < settling {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            return Answer { changed, complete };
        }
        let changes = logs.iter_mut().flat_map(|(log, removal)| [log.changed().boxed(), removal.changed().boxed()]);
        tokio::select! {
            _ = select_all(changes) => {}
            // The server shuts down: answered as at the timeout.
            _ = state.drained() => return Answer { changed, complete },
            _ = tokio::time::sleep_until(deadline.into()) => return Answer { changed, complete },
        }
    }
}

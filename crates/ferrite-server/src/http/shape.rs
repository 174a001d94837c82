//! `GET/HEAD/POST /v1/shape`: initial sync, catch-up, live long-poll, SSE and subset snapshots.

use super::compression::{self, Encoding};
use super::extract::{BoundedBody, Caller};
use super::params::{parse_shape_request, parse_subset_body, ShapeRequest};
use super::response::{self as resp, set, CACHE_INITIAL, CACHE_LIVE};
use crate::admission::Route;
use crate::shapes::shape::Removal;
use crate::shapes::Shape;
use crate::state::{AppState, ShapeRequestError};
use crate::storage::{LiveSpan, LogSlice, ReadOutcome, Tail};
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use ferrite_protocol::offset::{LogOffset, RequestOffset};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a non-live request waits for a snapshot chunk before asking the client to retry.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

/// Query pairs of a request.
pub fn query_pairs(q: &Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()).into_owned().collect()
}

/// Checks `secret`/`api_secret` when the server has one; `Some(401)` when it does not match.
pub fn check_secret(state: &AppState, pairs: &[(String, String)]) -> Option<Response<Body>> {
    let expected = state.config.secret.as_deref()?;
    let given = pairs.iter().rev().find(|(k, _)| k == "secret" || k == "api_secret").map(|(_, v)| v.as_str());
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        None
    } else {
        Some(resp::error(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"message": "Unauthorized - Invalid API secret"}),
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Maps a shape-resolution failure to Electric's responses.
pub fn request_error(e: ShapeRequestError) -> Response<Body> {
    match e {
        ShapeRequestError::Invalid { field, message } => resp::invalid_field(field, &message),
        ShapeRequestError::Forbidden(m) => resp::error(StatusCode::FORBIDDEN, &serde_json::json!({"message": m})),
        ShapeRequestError::DatabaseUnreachable(m) => {
            tracing::warn!(error = %m, "database unreachable");
            resp::unavailable(
                10,
                &serde_json::json!({"code": "database_unreachable", "error": "Database is unreachable"}),
            )
        }
        ShapeRequestError::NotLeader => resp::unavailable(
            1,
            &serde_json::json!({"code": "no_leader", "message": "this node of the cluster does not make shapes; retry"}),
        ),
        ShapeRequestError::StorageFull(m) => storage_full(&m),
        ShapeRequestError::NotYet { code, message } => {
            resp::unavailable(5, &serde_json::json!({"code": code, "message": message}))
        }
        ShapeRequestError::Internal(m) => resp::internal("shape request failed", &m),
    }
}

/// 503 + `retry-after` for a new shape that could not be stored because the data directory is
/// full: existing shapes are still served, a new one can be made once space returns.
fn storage_full(detail: &str) -> Response<Body> {
    resp::unavailable(
        10,
        &serde_json::json!({"code": "storage_full",
            "message": format!("The server's shape storage is full; the shape could not be created. Retry later. ({detail})")}),
    )
}

/// `GET` and `HEAD /v1/shape`: shape reads, with subset parameters in the query if any.
pub async fn get(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    caller: Caller,
    headers: HeaderMap,
) -> Response<Body> {
    handle(state, query, caller, headers, None).await
}

/// `POST /v1/shape`: a shape read whose subset parameters come in the body (an empty body: a
/// plain read). The caller is checked before the body is read.
pub async fn post(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    caller: Caller,
    headers: HeaderMap,
    body: BoundedBody,
) -> Response<Body> {
    handle(state, query, caller, headers, Some(body.bytes)).await
}

/// Serves a shape read (`body`: a POST's, already read).
///
/// A long-poll can wait for a long time, and ten thousand may wait at once: the request is
/// parsed in its own (boxed) future so the raw query, the body and all other headers are freed
/// before the wait, and each kind of response runs in its own boxed future, so a waiting request
/// holds only what its own kind needs.
async fn handle(
    state: Arc<AppState>,
    query: Option<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Option<Bytes>,
) -> Response<Body> {
    let (req, subject) = match Box::pin(read_request(&state, query, body, caller)).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    // Only `if-none-match` and `accept-encoding` matter from here on. Copy them: header values
    // share the connection's read buffer, which would otherwise stay allocated for as long as a
    // long-poll waits.
    let mut conditional = HeaderMap::new();
    for name in [header::IF_NONE_MATCH, header::ACCEPT_ENCODING] {
        for v in headers.get_all(&name).iter().filter_map(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
            conditional.append(name.clone(), v);
        }
    }
    drop(headers);
    let headers = conditional;

    let initial = req.offset == RequestOffset::BeforeAll;
    let route = if initial { Route::ShapeInitial } else { Route::ShapeExisting };
    let ticket = match state.admission.admit(route, subject.as_deref()) {
        Ok(t) => t,
        Err(why) => {
            state.metrics.requests_rejected.fetch_add(1, Ordering::Relaxed);
            return resp::refused(&why);
        }
    };
    drop(subject);

    let shape = match Box::pin(resolve(&state, &req)).await {
        Ok(Resolved::Shape(s)) => s,
        Ok(Resolved::Refetch(new_handle)) => return resp::must_refetch(new_handle.as_deref()),
        Err(e) => return request_error(e),
    };
    state.registry.touch(&shape);

    if let Some(subset) = &req.subset {
        return Box::pin(super::subset::response(&state, &shape, subset)).await;
    }
    let metrics = &state.metrics;
    match req.offset {
        RequestOffset::Now => {
            metrics.requests_catchup.fetch_add(1, Ordering::Relaxed);
            Box::pin(now_response(&state, &shape, &req)).await
        }
        RequestOffset::BeforeAll => {
            metrics.requests_initial.fetch_add(1, Ordering::Relaxed);
            Box::pin(catch_up(&state, &shape, &req, &headers, None)).await
        }
        RequestOffset::At(o) if req.live => {
            metrics.requests_live.fetch_add(1, Ordering::Relaxed);
            // Given back however the wait ends, also when the client hangs up half way.
            let _waiting = crate::metrics::Held::new(&metrics.live_waiting);
            if req.live_sse {
                let encoding = Encoding::negotiate_gzip(&headers);
                Box::pin(super::sse::stream(&state, shape, &req, o, encoding, ticket)).await
            } else {
                Box::pin(live(&state, &shape, &req, &headers, o)).await
            }
        }
        RequestOffset::At(o) => {
            metrics.requests_catchup.fetch_add(1, Ordering::Relaxed);
            Box::pin(catch_up(&state, &shape, &req, &headers, Some(o))).await
        }
    }
}

/// Parses a shape request: the subset of a POST body, every query parameter, and the caller's
/// read rule the shape is restricted to (the secret and the token were checked before); an
/// error is the response to send.
async fn read_request(
    state: &AppState,
    query: Option<String>,
    body: Option<Bytes>,
    caller: Caller,
) -> Result<(ShapeRequest, Option<String>), Response<Body>> {
    let pairs = query_pairs(&query);
    let body_subset = match body.as_deref().map(parse_subset_body) {
        None => None,
        Some(Ok(s)) => s,
        Some(Err((_, v))) => return Err(resp::error(StatusCode::BAD_REQUEST, &v)),
    };
    let req = parse_request(state, &pairs, body_subset, caller.identity())?;
    Ok((req, caller.0.map(|w| w.subject)))
}

/// A shape request from its query parameters (and a POST body's subset), restricted to what
/// `who` may read: the table's read rule, and the rule of every table a subquery reads.
/// (The error is the response to send, built once on a path that ends the request.)
#[allow(clippy::result_large_err)]
pub(super) fn parse_request(
    state: &AppState,
    pairs: &[(String, String)],
    body_subset: Option<super::params::SubsetParams>,
    who: Option<&crate::auth::Identity>,
) -> Result<ShapeRequest, Response<Body>> {
    let mut req = parse_shape_request(pairs, body_subset).map_err(|errors| resp::invalid(&errors))?;
    req.definition.rule = state.auth.read_filter(&req.definition.table, who).map_err(|e| resp::auth_refused(&e))?;
    // A subquery may only read a table the caller may read, and only as far as its rule lets
    // it: what a where clause cannot see directly it cannot probe through a subquery either.
    if let Some(sql) = req.definition.where_sql.as_deref().filter(|s| !s.trim().is_empty()) {
        let tables = ferrite_where::tables_read(sql).map_err(|e| resp::invalid_field("where", &e.to_string()))?;
        for table in tables {
            if let Some(rule) = state.auth.read_filter(&table, who).map_err(|e| resp::auth_refused(&e))? {
                req.definition.inner_rules.insert(table.to_string(), rule);
            }
        }
    }
    Ok(req)
}

pub(super) enum Resolved {
    Shape(Arc<Shape>),
    /// 409, towards the current shape of the definition when this node knows it.
    Refetch(Option<String>),
}

/// The shape a request reads: the handle's, or 409 towards the current shape of the definition
/// (on a cluster follower that does not hold it, a plain 409: the client's fresh start goes to
/// the leader).
pub(super) async fn resolve(state: &Arc<AppState>, req: &ShapeRequest) -> Result<Resolved, ShapeRequestError> {
    if let Some(h) = &req.handle {
        if let Some(s) = state.registry.get(h) {
            if s.definition == req.definition {
                return Ok(Resolved::Shape(s));
            }
        }
        return match state.get_or_create(&req.definition).await {
            Ok(current) => Ok(Resolved::Refetch(Some(current.handle.clone()))),
            Err(ShapeRequestError::NotLeader) => Ok(Resolved::Refetch(None)),
            Err(e) => Err(e),
        };
    }
    Ok(Resolved::Shape(state.get_or_create(&req.definition).await?))
}

/// Response for a shape that went away while the request waited.
async fn removed_response(state: &Arc<AppState>, shape: &Shape, why: Removal) -> Response<Body> {
    match why {
        Removal::Rotated => match state.get_or_create(&shape.definition).await {
            Ok(s) => resp::must_refetch(Some(&s.handle)),
            Err(_) => resp::must_refetch(None),
        },
        Removal::TooLarge(m) => {
            resp::error(StatusCode::BAD_REQUEST, &serde_json::json!({"code": "shape_too_large", "message": m}))
        }
        Removal::StorageFull(e) => storage_full(&e),
        Removal::SnapshotFailed(e) => resp::unavailable(
            10,
            &serde_json::json!({"code": "snapshot_failed", "message": format!("Failed to create the shape's snapshot: {e}")}),
        ),
    }
}

/// The tag of a response; a `unique` one (responses that must never revalidate: live timeouts,
/// `offset=now`) ends with the clock's Unix nanoseconds, made strictly increasing so that two
/// responses never share one, even within a clock tick or on a test's clock standing still.
fn etag(state: &AppState, handle: &str, req_offset: &str, resp_offset: &str, unique: bool) -> String {
    if unique {
        static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = state.clock.since_epoch().as_nanos() as u64;
        let next = |last: u64| now.max(last + 1);
        let t = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(next(last))).map_or(now, next);
        format!("\"{handle}:{req_offset}:{resp_offset}:{t}\"")
    } else {
        format!("\"{handle}:{req_offset}:{resp_offset}\"")
    }
}

fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    let bare = tag.trim_matches('"');
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().trim_start_matches("W/").trim_matches('"') == bare)
}

/// Bodies compressed on a blocking thread rather than the request's task from this size on.
const INLINE_COMPRESS_BYTES: usize = 64 * 1024;

/// A 200/304 shape response: body, compression and common headers.
///
/// The body is compressed when the client accepts gzip or brotli and the log entries make at
/// least [`compression::MIN_BYTES`]; the tag then names the coding (each coding is its own
/// representation), and the compressed bytes are kept in the server's cache under the tag and
/// the `up-to-date` LSN, which together fix the bytes: later requests for the same response
/// (catch-up responses are immutable; live readers at the same offset get the same answer) are
/// served from there.
#[allow(clippy::too_many_arguments)]
async fn shape_response(
    state: &AppState,
    shape: &Shape,
    req: &ShapeRequest,
    headers: &HeaderMap,
    slice: Option<&LogSlice>,
    offset: LogOffset,
    up_to_date_lsn: Option<u64>,
    complete_lsn: Option<u64>,
    cache_control: &str,
    unique_etag: bool,
) -> Response<Body> {
    let encoding = match slice {
        Some(s) if s.body.len() >= compression::MIN_BYTES => Encoding::negotiate(headers),
        _ => Encoding::Identity,
    };
    // The same entries are served with or without `up-to-date` (see `ShapeLog::read`), so the
    // tag tells the two apart.
    let end = if up_to_date_lsn.is_some() { format!("{offset}:u") } else { offset.to_string() };
    let tag = etag(state, &shape.handle, &req.offset_raw, &format!("{end}{}", encoding.etag_suffix()), unique_etag);
    let not_modified = if_none_match(headers, &tag);
    let mut r = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let key =
            (!unique_etag).then(|| format!("{tag}{}", up_to_date_lsn.map(|l| format!("/{l}")).unwrap_or_default()));
        let cached = match (&key, encoding) {
            (Some(k), Encoding::Gzip | Encoding::Brotli) => state.compressed.get(k),
            _ => None,
        };
        let body = match cached {
            Some(bytes) => bytes,
            None => {
                let body = json_array(slice, up_to_date_lsn);
                match encoding {
                    Encoding::Identity => Bytes::from(body),
                    e => {
                        let compressed = if body.len() <= INLINE_COMPRESS_BYTES {
                            compression::compress(e, &body)
                        } else {
                            match tokio::task::spawn_blocking(move || compression::compress(e, &body)).await {
                                Ok(c) => c,
                                Err(err) => return resp::internal("compressing a response", &err),
                            }
                        };
                        let compressed = Bytes::from(compressed);
                        if let Some(k) = key {
                            state.compressed.insert(k, compressed.clone());
                        }
                        compressed
                    }
                }
            }
        };
        json_response(body, encoding)
    };
    let named = Named {
        handle: HeaderValue::from_str(&shape.handle).ok(),
        offset: HeaderValue::from_str(&offset.to_string()).ok(),
        etag: HeaderValue::from_str(&tag).ok(),
    };
    let has_data = slice.is_some_and(|s| s.count > 0);
    finish_shape_response(&mut r, state, shape, req, &named, cache_control, has_data, up_to_date_lsn, complete_lsn);
    r
}

/// A 200 response with a shape body (JSON, in `encoding`).
fn json_response(body: Bytes, encoding: Encoding) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    if let Some(v) = encoding.header_value() {
        r.headers_mut().insert(header::CONTENT_ENCODING, v);
    }
    r
}

/// The header values naming a shape response: built per response, or once for every reader
/// of a change (see [`LiveBodies`]). `None`: not valid header text, left out.
#[derive(Clone, Default)]
pub(super) struct Named {
    handle: Option<HeaderValue>,
    offset: Option<HeaderValue>,
    etag: Option<HeaderValue>,
}

/// The headers of a 200/304 shape response after its body's own (`content-type`,
/// `content-encoding`), the same for a response built for one reader and one shared.
#[allow(clippy::too_many_arguments)]
fn finish_shape_response(
    r: &mut Response<Body>,
    state: &AppState,
    shape: &Shape,
    req: &ShapeRequest,
    named: &Named,
    cache_control: &str,
    has_data: bool,
    up_to_date_lsn: Option<u64>,
    complete_lsn: Option<u64>,
) {
    r.extensions_mut().insert(compression::Negotiated);
    let h = r.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    for (name, value) in [("electric-handle", &named.handle), ("electric-offset", &named.offset), ("etag", &named.etag)]
    {
        if let Some(v) = value {
            h.insert(name, v.clone());
        }
    }
    let cache_control = match cache_control {
        CACHE_LIVE => Some(HeaderValue::from_static(CACHE_LIVE)),
        other => HeaderValue::from_str(other).ok(),
    };
    if let Some(v) = cache_control {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert("electric-has-data", HeaderValue::from_static(if has_data { "true" } else { "false" }));
    if let Some(lsn) = up_to_date_lsn {
        h.insert("electric-up-to-date", HeaderValue::from_static(""));
        // A relational shape whose move-in is still to come is complete only up to an earlier
        // point than the up-to-date says (a Ferrite extension; include trees wait for it).
        if let Some(complete) = complete_lsn.filter(|c| *c < lsn) {
            set(r, "ferrite-complete-lsn", &complete.to_string());
        }
    }
    if req.live {
        let cursor = next_cursor(state, req.cursor);
        set(r, "electric-cursor", &cursor.to_string());
    } else {
        set(r, "electric-schema", &shape.schema_header);
    }
}

/// The live long-poll response for a reader woken at a shape log's tail (the messages of the
/// sync that woke it), `up-to-date` with `lsn`.
///
/// Every reader waiting at the same offset is woken by that sync: the first builds the body
/// (compressed if it asks for a coding) and the headers naming it, and keeps them on the tail;
/// the others are answered with the same bytes (see [`LiveBodies`]). The bytes are those
/// [`shape_response`] builds for the same read.
#[allow(clippy::too_many_arguments)]
fn tail_response(
    state: &AppState,
    shape: &Shape,
    req: &ShapeRequest,
    headers: &HeaderMap,
    tail: &Tail,
    lsn: u64,
    complete_lsn: Option<u64>,
) -> Response<Body> {
    let slice = tail.slice();
    let encoding =
        if slice.body.len() >= compression::MIN_BYTES { Encoding::negotiate(headers) } else { Encoding::Identity };
    let Some(bodies) = tail.shared::<LiveBodies>() else {
        // (Never: only this module keeps anything on a tail.)
        return resp::internal("answering a live request", &"the tail holds something else");
    };
    let built = bodies.get_or_build(&state.metrics, BodyKind::Json(encoding), lsn, &req.offset_raw, || {
        // As `shape_response` builds it (a tail is small: compressed in place).
        let end = format!("{}:u", slice.end);
        let tag = etag(state, &shape.handle, &req.offset_raw, &format!("{end}{}", encoding.etag_suffix()), false);
        let body = json_array(Some(slice), Some(lsn));
        let body = match encoding {
            Encoding::Identity => Bytes::from(body),
            e => {
                let key = format!("{tag}/{lsn}");
                match state.compressed.get(&key) {
                    Some(bytes) => bytes,
                    None => {
                        let compressed = Bytes::from(compression::compress(e, &body));
                        state.compressed.insert(key, compressed.clone());
                        compressed
                    }
                }
            }
        };
        let named = Named {
            handle: HeaderValue::from_str(&shape.handle).ok(),
            offset: HeaderValue::from_str(&slice.end.to_string()).ok(),
            etag: HeaderValue::from_str(&tag).ok(),
        };
        (tag, named, body)
    });
    let mut r = if if_none_match(headers, &built.tag) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        json_response(built.body.clone(), encoding)
    };
    finish_shape_response(
        &mut r,
        state,
        shape,
        req,
        &built.named,
        CACHE_LIVE,
        slice.count > 0,
        Some(lsn),
        complete_lsn,
    );
    bodies.observe_delivery(state, slice.end.tx);
    r
}

/// What a body built from a tail is for: a long-poll response (in a coding) or an SSE batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    Json(Encoding),
    Sse,
}

/// A response body built from a tail, with what names it.
pub(super) struct LiveBody {
    kind: BodyKind,
    /// The `global_last_seen_lsn` of its `up-to-date`.
    lsn: u64,
    /// The offset the reader sent, as sent (the tag repeats it; empty for SSE).
    offset_raw: Box<str>,
    /// The tag (empty for SSE), and the header values naming the response.
    tag: String,
    named: Named,
    /// The body's bytes, shared by every reader answered with it.
    pub(super) body: Bytes,
}

/// Bodies kept per tail: readers of one change differ at most in the `up-to-date` LSN (when the
/// server processed more while answering them), the coding and the spelling of their offset.
const LIVE_BODIES_KEPT: usize = 8;

/// What the live readers of one tail share (kept on it: [`Tail::shared`]): the bodies built for
/// them, and when the change arrived from Postgres.
#[derive(Default)]
pub(super) struct LiveBodies {
    /// Newest last. Built under the lock, so that readers woken together wait for the one
    /// build rather than each making its own.
    built: parking_lot::Mutex<Vec<Arc<LiveBody>>>,
    /// Arrival of the tail's last transaction, looked up once (`None` inside: forgotten).
    arrival: std::sync::OnceLock<Option<Instant>>,
}

impl LiveBodies {
    /// The body of `kind` with `up-to-date` at `lsn` for a reader that sent `offset_raw`:
    /// the one built before, or one `build` makes (tag, names, body) and that is kept.
    pub(super) fn get_or_build(
        &self,
        metrics: &crate::metrics::Metrics,
        kind: BodyKind,
        lsn: u64,
        offset_raw: &str,
        build: impl FnOnce() -> (String, Named, Bytes),
    ) -> Arc<LiveBody> {
        let mut built = self.built.lock();
        if let Some(b) = built.iter().find(|b| b.kind == kind && b.lsn == lsn && *b.offset_raw == *offset_raw) {
            metrics.live_bodies_shared.fetch_add(1, Ordering::Relaxed);
            return b.clone();
        }
        let (tag, named, body) = build();
        let b = Arc::new(LiveBody { kind, lsn, offset_raw: offset_raw.into(), tag, named, body });
        metrics.live_bodies_built.fetch_add(1, Ordering::Relaxed);
        if built.len() >= LIVE_BODIES_KEPT {
            built.remove(0);
        }
        built.push(b.clone());
        b
    }

    /// Records the engine-added latency of one more delivery of the tail whose last
    /// transaction committed at `commit_lsn` (its arrival looked up once for all readers).
    pub(super) fn observe_delivery(&self, state: &AppState, commit_lsn: u64) {
        if let Some(t) = *self.arrival.get_or_init(|| state.receipt_of(commit_lsn)) {
            state.metrics.live_delivery.observe(t.elapsed());
        }
    }
}

/// `[` the slice's messages, then `up-to-date` if given `]`.
fn json_array(slice: Option<&LogSlice>, up_to_date_lsn: Option<u64>) -> Vec<u8> {
    let mut body = Vec::with_capacity(slice.map_or(0, |s| s.body.len()) + 96);
    body.push(b'[');
    if let Some(s) = slice {
        body.extend_from_slice(&s.body);
    }
    if let Some(lsn) = up_to_date_lsn {
        if slice.is_some_and(|s| s.count > 0) {
            body.push(b',');
        }
        body.extend_from_slice(ferrite_protocol::messages::up_to_date(lsn).as_bytes());
    }
    body.push(b']');
    body
}

/// The next `electric-cursor` value.
pub fn next_cursor(state: &AppState, previous: Option<u64>) -> u64 {
    let now = state.clock.wall_secs();
    ferrite_protocol::cursor::next_cursor(now, state.config.long_poll_timeout_ms, previous)
}

fn catch_up_cache(state: &AppState, req: &ShapeRequest) -> String {
    if req.offset == RequestOffset::BeforeAll {
        CACHE_INITIAL.to_string()
    } else {
        format!(
            "public, max-age={}, stale-while-revalidate={}",
            state.config.cache_max_age, state.config.cache_stale_age
        )
    }
}

/// Non-live read: one chunk, immutable once served.
async fn catch_up(
    state: &Arc<AppState>,
    shape: &Arc<Shape>,
    req: &ShapeRequest,
    headers: &HeaderMap,
    after: Option<LogOffset>,
) -> Response<Body> {
    let mut changes = shape.log.subscribe();
    let mut removal = shape.removal();
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    loop {
        if let Some(why) = shape.removed() {
            return Box::pin(removed_response(state, shape, why)).await;
        }
        let global = state.global_lsn.load(Ordering::Relaxed);
        let complete = shape.complete_lsn();
        let outcome = {
            let shape = shape.clone();
            tokio::task::spawn_blocking(move || shape.log.read(after, true, global)).await
        };
        let outcome = match outcome {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return resp::internal("reading shape log", &e),
            Err(e) => return resp::internal("reading shape log", &e),
        };
        match outcome {
            ReadOutcome::Data(slice) => {
                let lsn = slice.up_to_date.then(|| global.max(slice.lsn).max(slice.end.tx));
                return shape_response(
                    state,
                    shape,
                    req,
                    headers,
                    Some(&slice),
                    slice.end,
                    lsn,
                    complete,
                    &catch_up_cache(state, req),
                    false,
                )
                .await;
            }
            ReadOutcome::AtHead => {
                let offset = after.unwrap_or_default();
                let lsn = global.max(offset.tx);
                return shape_response(
                    state,
                    shape,
                    req,
                    headers,
                    None,
                    offset,
                    Some(lsn),
                    complete,
                    &catch_up_cache(state, req),
                    false,
                )
                .await;
            }
            ReadOutcome::NotReady => {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = removal.changed() => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        return resp::unavailable(1, &serde_json::json!({"code": "snapshot_in_progress",
                            "message": "The shape's initial snapshot is still being taken, please retry"}));
                    }
                }
            }
        }
    }
}

/// `offset=now`: the latest offset at once, no history.
async fn now_response(state: &Arc<AppState>, shape: &Arc<Shape>, req: &ShapeRequest) -> Response<Body> {
    let mut changes = shape.log.subscribe();
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    // The latest offset is only meaningful once the snapshot is spliced with the stream.
    while shape.log.durable_offset() < LogOffset::SNAPSHOT_END {
        if let Some(why) = shape.removed() {
            return Box::pin(removed_response(state, shape, why)).await;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline.into()) => {
                return resp::unavailable(1, &serde_json::json!({"code": "snapshot_in_progress",
                    "message": "The shape's initial snapshot is still being taken, please retry"}));
            }
        }
    }
    let offset = shape.log.durable_offset();
    let lsn = state.global_lsn.load(Ordering::Relaxed).max(offset.tx);
    let headers = HeaderMap::new();
    let complete = shape.complete_lsn();
    Box::pin(shape_response(
        state,
        shape,
        req,
        &headers,
        None,
        offset,
        Some(lsn),
        complete,
        &catch_up_cache(state, req),
        true,
    ))
    .await
}

/// Long-poll: answer at once if there is data after `o`, else wait for it up to the timeout.
async fn live(
    state: &Arc<AppState>,
    shape: &Arc<Shape>,
    req: &ShapeRequest,
    headers: &HeaderMap,
    o: LogOffset,
) -> Response<Body> {
    let timeout = Duration::from_millis(state.config.long_poll_timeout_ms);
    // An offset past the shape's log is legitimate up to the LSN the server has processed (SSE
    // clients resume at `<global_last_seen_lsn>_0`); beyond that it is out of bounds.
    let beyond = |o: LogOffset| o.tx > state.global_lsn.load(Ordering::Relaxed) && shape.log.durable_offset() < o;
    let out_of_bounds = beyond(o);
    let deadline = Instant::now() + if out_of_bounds { timeout / 2 } else { timeout };
    let mut changes = shape.log.subscribe();
    let mut removal = shape.removal();
    // (Boxed: the wait stays small, see `a_waiting_long_poll_stays_small`.)
    let mut drained = Box::pin(state.drained());
    loop {
        if let Some(why) = shape.removed() {
            return Box::pin(removed_response(state, shape, why)).await;
        }
        // Processed LSN first, then the log (see `sse::pump`).
        let processed = state.global_lsn.load(Ordering::Relaxed);
        let complete = shape.complete_lsn();
        let span = match shape.log.live_span(o) {
            LiveSpan::Tail(tail) => {
                // Woken by the sync that left this tail, with every other reader at `o`: the
                // response is built once and shared (see `tail_response`).
                let lsn = tail.slice().end.tx.max(processed);
                return tail_response(state, shape, req, headers, &tail, lsn, complete);
            }
            span => span,
        };
        match read_span(shape, span).await {
            Ok(ReadOutcome::Data(slice)) => {
                let lsn = slice.up_to_date.then(|| slice.end.tx.max(processed));
                let response = Box::pin(shape_response(
                    state,
                    shape,
                    req,
                    headers,
                    Some(&slice),
                    slice.end,
                    lsn,
                    complete,
                    CACHE_LIVE,
                    false,
                ))
                .await;
                state.observe_live_delivery(slice.end.tx);
                return response;
            }
            Ok(_) => {}
            Err(e) => return resp::internal("reading shape log", &e),
        }
        // Woken by a change, or ended: at the deadline, or when the server shuts down (the
        // client is answered as at its timeout and asks again).
        let ended = tokio::select! {
            _ = changes.changed() => false,
            _ = removal.changed() => false,
            _ = &mut drained => true,
            _ = tokio::time::sleep_until(deadline.into()) => true,
        };
        if ended {
            if out_of_bounds && beyond(o) && !*state.draining.borrow() {
                return resp::invalid_field("offset", "out of bounds for this shape");
            }
            let complete = shape.complete_lsn();
            let lsn = state.global_lsn.load(Ordering::Relaxed).max(o.tx);
            return Box::pin(shape_response(
                state,
                shape,
                req,
                headers,
                None,
                o,
                Some(lsn),
                complete,
                CACHE_LIVE,
                true,
            ))
            .await;
        }
    }
}

/// Live spans up to this size are read on the request's own task: a reader at the head reads a
/// few hundred bytes from the page cache, cheaper than a hop to a blocking thread. Bigger spans
/// (a reader far behind) go to a blocking thread.
const INLINE_READ_BYTES: u64 = 64 * 1024;

/// Reads what a live read of `shape` planned as `span` covers (see
/// [`crate::storage::ShapeLog::live_span`]); a tail is copied (callers that can share it take
/// [`LiveSpan::Tail`] themselves).
pub(super) async fn read_span(shape: &Arc<Shape>, span: LiveSpan) -> std::io::Result<ReadOutcome> {
    match span {
        LiveSpan::NotReady => Ok(ReadOutcome::NotReady),
        LiveSpan::AtHead => Ok(ReadOutcome::AtHead),
        LiveSpan::Tail(tail) => Ok(ReadOutcome::Data(tail.slice().clone())),
        LiveSpan::Bytes(span) if span.len() <= INLINE_READ_BYTES => shape.log.read_span(span),
        LiveSpan::Bytes(span) => {
            let shape = shape.clone();
            tokio::task::spawn_blocking(move || shape.log.read_span(span)).await.map_err(std::io::Error::other)?
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every held long-poll keeps its request future alive; ten thousand of them must stay
    /// small (the RSS benchmark measures the total).
    #[test]
    fn the_shape_request_future_stays_small() {
        let cfg = crate::config::ServerConfig::default();
        let dir = tempfile::tempdir().unwrap();
        let clock = ferrite_protocol::clock::Clock::system();
        let registry = std::sync::Arc::new(crate::shapes::Registry::open(dir.path(), 10_000, clock.clone()).unwrap());
        let state = std::sync::Arc::new(crate::state::AppState::new(cfg, registry, clock).unwrap());
        let get = super::get(
            axum::extract::State(state.clone()),
            axum::extract::RawQuery(None),
            super::Caller(None),
            Default::default(),
        );
        let size = std::mem::size_of_val(&get);
        assert!(size <= 1536, "the shape GET handler future grew to {size} bytes");
        let post = super::post(
            axum::extract::State(state),
            axum::extract::RawQuery(None),
            super::Caller(None),
            Default::default(),
            super::BoundedBody::already_read(Default::default()),
        );
        let size = std::mem::size_of_val(&post);
        assert!(size <= 1536, "the shape POST handler future grew to {size} bytes");
    }

    /// The size of the future `f` returns, for arguments living as long as `'a`.
    fn returned_future_size<'a, F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            &'a std::sync::Arc<crate::state::AppState>,
            &'a std::sync::Arc<crate::shapes::Shape>,
            &'a super::ShapeRequest,
            &'a axum::http::HeaderMap,
            ferrite_protocol::offset::LogOffset,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// The readers of one change at one offset get one body: built for the first, the same
    /// bytes (not a copy) for the rest; a different `up-to-date` LSN, coding, offset spelling or
    /// kind of body is built once more.
    #[test]
    fn readers_of_one_tail_share_one_built_body() {
        use super::{BodyKind, Encoding, LiveBodies};
        use std::sync::atomic::Ordering::Relaxed;
        let metrics = crate::metrics::Metrics::default();
        let bodies = LiveBodies::default();
        let mut builds = 0;
        let mut get = |kind, lsn, offset: &str| {
            bodies.get_or_build(&metrics, kind, lsn, offset, || {
                builds += 1;
                (format!("tag{builds}"), Default::default(), axum::body::Bytes::from(format!("[body {builds}]")))
            })
        };
        let json = BodyKind::Json(Encoding::Identity);
        let got: Vec<_> = (0..100).map(|_| get(json, 7, "0_inf")).collect();
        assert!(got.iter().all(|b| b.body.as_ptr() == got[0].body.as_ptr() && b.tag == "tag1"), "one body, shared");
        assert_eq!(&got[0].body[..], b"[body 1]");
        assert_eq!(get(json, 8, "0_inf").tag, "tag2", "another up-to-date LSN: another body");
        assert_eq!(get(BodyKind::Json(Encoding::Gzip), 7, "0_inf").tag, "tag3");
        assert_eq!(get(json, 7, "0_inf.").tag, "tag4", "the tag repeats the offset as sent");
        assert_eq!(get(BodyKind::Sse, 7, "").tag, "tag5");
        assert_eq!(get(json, 7, "0_inf").tag, "tag1", "still kept");
        assert_eq!(builds, 5);
        assert_eq!(metrics.live_bodies_built.load(Relaxed), 5);
        assert_eq!(metrics.live_bodies_shared.load(Relaxed), 100);
    }

    /// What a held long-poll keeps while it waits is its `live` future (the handler's own is
    /// small, above): building the response, or answering a removed shape, happens in boxed
    /// futures of their own so that the wait does not carry their size. Ten thousand held
    /// long-polls × a few kilobytes is what the RSS benchmark's budget would lose.
    #[test]
    fn a_waiting_long_poll_stays_small() {
        let size = returned_future_size(super::live);
        assert!(size <= 768, "the live long-poll future grew to {size} bytes");
    }
}

//! The HTTP API: Electric v1 shape endpoints, writes, presence, health, metrics; CORS on the API routes.

pub mod compression;
pub mod digest;
pub mod extract;
pub mod foreign_keys;
pub mod listener;
pub mod params;
pub mod response;
pub mod shape;
pub mod sse;
pub mod subset;
pub mod watch;

use crate::state::AppState;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use axum::middleware::{self, Next};
use axum::routing::{get, MethodRouter};
use axum::Router;
use std::sync::Arc;

/// Version reported in `electric-server`.
pub const SERVER_VERSION: &str = concat!("Ferrite/", env!("CARGO_PKG_VERSION"));

/// Headers browsers may read from shape responses.
const EXPOSE_HEADERS: &str = "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,electric-up-to-date,electric-internal-known-error,electric-snapshot,retry-after,etag,ferrite-complete-lsn,ferrite-watch-index";
/// Request headers browsers may send (Authorization is for the auth layer).
const ALLOWED_REQUEST_HEADERS: [&str; 4] = ["if-none-match", "traceparent", "authorization", "content-type"];

/// Builds the router for a server state. `extra` routes (an embedder's, e.g. `ferrite dev`'s
/// sign-in and app) are mounted beside the API without CORS — only pages the server itself
/// serves may use them — and replace the root route (otherwise Electric's empty 200).
pub fn router(state: Arc<AppState>, extra: Option<Router>) -> Router {
    let shape_route: MethodRouter<Arc<AppState>> =
        get(shape::get).post(shape::post).delete(delete_shape).options(preflight);
    let api = Router::new()
        .route("/v1/shape", shape_route)
        .route("/v1/shape/digest", get(digest::get).options(preflight))
        .route("/v1/health", get(health).options(preflight))
        .route("/v1/config", get(client_config).options(preflight))
        .route("/v1/foreign-keys", get(foreign_keys::get).options(preflight))
        .route("/v1/auth/scope", get(auth_scope))
        .route("/v1/watch", axum::routing::post(watch::post).options(preflight))
        .route("/v1/transactions", axum::routing::post(crate::writes::handler).options(preflight))
        .route("/v1/presence", get(crate::presence::http::get).post(crate::presence::http::post).options(preflight))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let app = match extra {
        Some(extra) => api.merge(extra),
        None => api.route("/", get(|| async { StatusCode::OK })),
    };
    app.fallback(|| async { response::error(StatusCode::NOT_FOUND, &serde_json::json!({"message": "Not found"})) })
        .layer(middleware::from_fn_with_state(state, every_request))
        .layer(compression::layer())
}

/// What every request goes through, in one middleware (each layer of middleware costs every held
/// long-poll another boxed future, about a kilobyte — ten thousand of them wait at once): the
/// secret check, then the route, then the API routes' CORS headers, the `electric-server`
/// header and, in JWT mode, private caching (unless a shared cache asks in the caller's scope).
async fn every_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response<Body> {
    let cors = cors_methods(req.uri().path()).map(|methods| (req.headers().get(header::ORIGIN).cloned(), methods));
    // A follower of a cluster passes shape reads to the leader, and its answer back as it is,
    // unless its own copy answers them the same.
    if let Some(cluster) = state.cluster.get() {
        if !cluster.leading()
            && req.method() != Method::OPTIONS
            && crate::cluster::forward::is_leaders(req.uri().path())
            && !crate::cluster::forward::serves_here(&state.registry, &req)
        {
            return crate::cluster::forward::to_leader(cluster, &state.metrics, req).await;
        }
    }
    let in_callers_scope = state.auth.enabled() && asks_in_callers_scope(&state, &req);
    let mut r = match refused_without_secret(&state, &req) {
        Some(refused) => refused,
        None => next.run(req).await,
    };
    if let Some((origin, methods)) = cors {
        add_cors(&mut r, origin, methods);
    }
    r.headers_mut().insert("electric-server", HeaderValue::from_static(SERVER_VERSION));
    if state.auth.enabled() && !in_callers_scope {
        make_private(&mut r);
    }
    r
}

/// The request header in which a shared cache names the scope it keeps the response under.
const CACHE_SCOPE_HEADER: &str = "ferrite-cache-scope";

/// With `auth.shared_cache`: whether this shape read comes through a shared cache that keys it
/// by the caller's own cache scope ([`crate::auth::Auth::cache_scope`]), so its response may
/// stay `public`. A missing, stale or someone else's scope makes it private, as without the
/// setting: a cache that does not key by scope never gets a response it could hand to another
/// tenant.
fn asks_in_callers_scope(state: &AppState, req: &Request) -> bool {
    if !state.config.auth.shared_cache
        || req.uri().path() != "/v1/shape"
        || !(req.method() == Method::GET || req.method() == Method::HEAD)
    {
        return false;
    }
    let Some(claimed) = req.headers().get(CACHE_SCOPE_HEADER).and_then(|v| v.to_str().ok()) else { return false };
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.auth.authenticate(authorization) {
        Ok(who) => state.auth.cache_scope(who.as_ref()) == claimed,
        Err(_) => false,
    }
}

/// `GET /v1/auth/scope`: the check a shared cache runs at the edge before every shape read
/// (nginx's `auth_request`): 204 with the caller's cache scope in `ferrite-cache-scope`, or the
/// 401/403 the read itself would get for the token. A CORS preflight (the cache passes the
/// original method in `ferrite-original-method`) carries no token and needs none.
async fn auth_scope(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response<Body> {
    let preflight = headers.get("ferrite-original-method").is_some_and(|m| m.as_bytes() == b"OPTIONS");
    let scope = if preflight {
        "preflight".to_string()
    } else {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match state.auth.authenticate(authorization) {
            Ok(who) => state.auth.cache_scope(who.as_ref()),
            Err(e) => return response::auth_refused(&e),
        }
    };
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    response::set(&mut r, CACHE_SCOPE_HEADER, &scope);
    response::set(&mut r, "cache-control", "no-store");
    r
}

/// With `secret` configured, every `/v1` request must carry it as `secret=` (or `api_secret=`)
/// in its query — shapes, writes, presence and config alike — except `/v1/health` (load
/// balancers probe it; it tells nothing but whether replication runs) and CORS preflights
/// (which carry no credentials by design). The 401 to answer otherwise.
fn refused_without_secret(state: &AppState, req: &Request) -> Option<Response<Body>> {
    let path = req.uri().path();
    let exempt = !path.starts_with("/v1/") || path == "/v1/health" || req.method() == Method::OPTIONS;
    if exempt {
        return None;
    }
    let pairs = shape::query_pairs(&req.uri().query().map(String::from));
    shape::check_secret(state, &pairs)
}

/// The methods each API route allows, for its CORS headers (browsers call the API from any
/// origin); `None` for every other path — the embedder's routes (e.g. `ferrite dev`'s sign-in)
/// get no CORS headers, so only pages the server itself serves may use them. Keep in step with
/// the routes of [`router`].
fn cors_methods(path: &str) -> Option<&'static str> {
    Some(match path {
        "/v1/shape" => "GET, POST, HEAD, DELETE, OPTIONS",
        "/v1/transactions" | "/v1/watch" => "POST, OPTIONS",
        "/v1/presence" => "GET, POST, OPTIONS",
        "/v1/health" | "/v1/config" | "/v1/foreign-keys" | "/v1/shape/digest" | "/metrics" => "GET, HEAD",
        _ => return None,
    })
}

/// Adds the CORS headers of an API route answering a request from `origin`.
fn add_cors(r: &mut Response<Body>, origin: Option<HeaderValue>, methods: &'static str) {
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.unwrap_or(HeaderValue::from_static("*")));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
    h.append(header::VARY, HeaderValue::from_static("origin"));
}

/// In JWT mode a response depends on who asks (rules are applied server-side, so two tenants
/// can send the same URL): never let a shared cache keep it.
fn make_private(r: &mut Response<Body>) {
    let h = r.headers_mut();
    if let Some(cc) = h.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) {
        if let Some(rest) = cc.strip_prefix("public") {
            if let Ok(v) = HeaderValue::from_str(&format!("private{rest}")) {
                h.insert(header::CACHE_CONTROL, v);
            }
        }
    }
    h.append(header::VARY, HeaderValue::from_static("authorization"));
}

/// CORS preflight: 204 with the allowed request headers.
async fn preflight(headers: HeaderMap) -> Response<Body> {
    let requested = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|v| v.to_str().ok()).unwrap_or("");
    let allowed: Vec<String> = requested
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| ALLOWED_REQUEST_HEADERS.contains(&h.as_str()))
        .collect();
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    response::set(&mut r, "access-control-max-age", "86400");
    if !allowed.is_empty() {
        response::set(&mut r, "access-control-allow-headers", &allowed.join(", "));
    }
    r
}

/// `{"status":"active"}` once replication runs, `{"status":"starting"}` (202) before.
async fn health(State(state): State<Arc<AppState>>) -> Response<Body> {
    // Active while the replication stream is connected; while it (re)connects, Electric's
    // "starting" (202), so load balancers and clients can tell the server is not following
    // Postgres right now. Shape logs are still served meanwhile.
    let following = state.replication_ready.load(std::sync::atomic::Ordering::Relaxed)
        && state.metrics.replication_connected.load(std::sync::atomic::Ordering::Relaxed) == 1;
    // A follower of a cluster is ready when it knows a leader to pass shape reads to.
    let ready = match state.cluster.get() {
        Some(c) if !c.leading() => c.leader_url().is_some(),
        _ => following,
    };
    let (status, text) = if ready { (StatusCode::OK, "active") } else { (StatusCode::ACCEPTED, "starting") };
    let mut body = serde_json::json!({"status": text, "shapes": state.registry.len(), "relational": state.registry.relational_stats()});
    if let Some(c) = state.cluster.get() {
        body["cluster"] = serde_json::json!({
            "node": c.node,
            "name": c.name,
            "url": c.url,
            "role": if c.leading() { "leader" } else { "follower" },
            "nats": if c.connected() { "connected" } else { "disconnected" },
            "lag_bytes": state.metrics.replication_lag_bytes(),
            "stream_seq": state.metrics.cluster_stream_seq.load(std::sync::atomic::Ordering::Relaxed),
            "peers": c.peers(),
        });
    }
    let mut r = response::json(status, &body);
    response::set(&mut r, "cache-control", "no-cache, no-store, must-revalidate");
    r
}

/// The settings clients should follow: batch size, offline queue limit, clock skew allowed,
/// presence TTL and whether tokens are needed. Public (no secrets).
async fn client_config(State(state): State<Arc<AppState>>) -> Response<Body> {
    use ferrite_protocol::client_config::ClientConfig;
    let c = &state.config;
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let config = ClientConfig {
        sync_batch_size: n(c.sync_batch_size),
        max_mutations_per_transaction: Some(n(c.max_mutations_per_transaction)),
        max_mutations_per_request: Some(n(c.max_mutations_per_request)),
        max_offline_queue: n(c.max_offline_queue),
        max_clock_skew_ms: u32::try_from(c.max_clock_skew_ms).unwrap_or(u32::MAX),
        presence_ttl_secs: u32::try_from(c.presence_ttl_secs).unwrap_or(u32::MAX),
        auth_mode: c.auth.mode,
    };
    let mut r = response::json(StatusCode::OK, &serde_json::to_value(config).unwrap_or_default());
    response::set(&mut r, "cache-control", "no-cache");
    r
}

/// Prometheus metrics.
async fn metrics(State(state): State<Arc<AppState>>) -> Response<Body> {
    let body = state.metrics.render(state.registry.len(), state.registry.relational_stats());
    let mut r = Response::new(Body::from(body));
    response::set(&mut r, "content-type", "text/plain; version=0.0.4");
    r
}

/// `DELETE /v1/shape?table=…[&where…][&handle=H]` or `DELETE /v1/shape?handle=H`.
async fn delete_shape(State(state): State<Arc<AppState>>, method: Method, RawQuery(q): RawQuery) -> Response<Body> {
    debug_assert_eq!(method, Method::DELETE);
    let pairs = shape::query_pairs(&q);
    if !state.config.allow_shape_deletion {
        return response::error(StatusCode::METHOD_NOT_ALLOWED, &serde_json::json!({"message": "DELETE not allowed"}));
    }
    if state.auth.enabled() {
        // Shapes are shared by every caller with the same rule; no single caller owns one.
        return response::error(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"message": "DELETE is not available with auth.mode = \"jwt\""}),
        );
    }
    let handle = pairs.iter().rev().find(|(k, _)| k == "handle").map(|(_, v)| v.clone());
    let has_table = pairs.iter().any(|(k, _)| k == "table");
    let target = if has_table {
        let mut with_offset = pairs.clone();
        with_offset.retain(|(k, _)| k != "offset" && k != "handle" && k != "live");
        with_offset.push(("offset".into(), "-1".into()));
        let req = match params::parse_shape_request(&with_offset, None) {
            Ok(r) => r,
            Err(errors) => return response::invalid(&errors),
        };
        match state.registry.find(&req.definition) {
            Some(s) if handle.as_ref().is_some_and(|h| *h != s.handle) => {
                return response::error(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"message": "The specified shape definition and handle do not match. Please ensure the shape definition is correct or omit the shape handle from the request to obtain a new one."}),
                )
            }
            Some(s) => Some(s.handle.clone()),
            None => None,
        }
    } else if let Some(h) = handle {
        Some(h)
    } else {
        return response::invalid_field("handle", "can't be blank when table is missing");
    };
    let Some(target) = target else {
        return response::error(StatusCode::NOT_FOUND, &serde_json::json!({"message": "No existing shape found"}));
    };
    match state.registry.remove(&target, crate::shapes::Removal::Rotated) {
        Some(_) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::ACCEPTED;
            response::set(&mut r, "cache-control", "no-cache");
            r
        }
        None => response::error(StatusCode::NOT_FOUND, &serde_json::json!({"message": "No existing shape found"})),
    }
}

//! A follower answers the shape reads its copy of the leader's shapes can answer the same way
//! the leader would ([`serves_here`]: live reads and catch-ups of chunks already placed, of the
//! flat shapes the stream brought it), and passes every other one (`/v1/shape`, `/v1/watch`) to
//! the leader and its answer back, unchanged. Long-polls and SSE streams pass through as they
//! flow.
//!
//! A forwarded request carries `ferrite-forwarded`; a node that gets one while not leading (the
//! leadership moved meanwhile) answers 503 rather than pass it on again, and so does a follower
//! that knows no leader or cannot reach it: clients retry after `retry-after`.

use super::Cluster;
use crate::http::response as resp;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Response, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::OnceLock;

/// Marks a request one node passed to another.
const FORWARDED: &str = "ferrite-forwarded";

/// Whether a request to `path` is the leader's to answer (unless [`serves_here`]).
pub fn is_leaders(path: &str) -> bool {
    path == "/v1/shape" || path == "/v1/watch" || path == "/v1/shape/digest"
}

/// Whether this follower answers a shape read from its own copy: a `GET` (or `HEAD`) of a
/// shape it holds, at an offset inside the log, that is live (a long-poll or SSE stream pins
/// nothing) or ends at a chunk boundary already placed. Everything else is the leader's: a new
/// shape (`offset=-1`), `offset=now`, a subset, a catch-up at the open end (which places a
/// boundary: every node must answer that URL the same afterwards), `/v1/watch`.
pub fn serves_here(registry: &crate::shapes::registry::Registry, req: &Request) -> bool {
    use ferrite_protocol::offset::LogOffset;
    if !matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD) || req.uri().path() != "/v1/shape" {
        return false;
    }
    let pairs = crate::http::shape::query_pairs(&req.uri().query().map(String::from));
    let value = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    if pairs.iter().any(|(k, _)| k.starts_with("subset__")) {
        return false;
    }
    let (Some(handle), Some(offset)) = (value("handle"), value("offset")) else { return false };
    let Ok(offset) = offset.parse::<LogOffset>() else { return false };
    let Some(shape) = registry.get(handle) else { return false };
    value("live") == Some("true") || shape.log.has_chunk_after(offset)
}

/// Longest a follower waits to connect to the leader before answering 503 (a leader's host
/// that vanished would otherwise hold every read for the kernel's whole SYN retry time).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

fn client() -> &'static Client<HttpConnector, Body> {
    static CLIENT: OnceLock<Client<HttpConnector, Body>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

fn unavailable(why: &str) -> Response<Body> {
    resp::unavailable(1, &serde_json::json!({"code": "no_leader", "message": why}))
}

/// The leader's answer to `req`, or 503 when there is none to ask.
pub async fn to_leader(cluster: &Cluster, metrics: &crate::metrics::Metrics, req: Request) -> Response<Body> {
    metrics.cluster_forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if req.headers().contains_key(FORWARDED) {
        return unavailable("the leadership of the cluster is moving; retry");
    }
    let Some(leader) = cluster.leader_url() else {
        return unavailable("no node of the cluster leads right now; retry");
    };
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{leader}{path}").parse::<Uri>() else {
        return unavailable("the leader's URL is not usable");
    };
    parts.uri = uri;
    parts.headers.remove(header::HOST);
    parts.headers.remove(header::CONNECTION);
    if let Ok(v) = HeaderValue::from_str(&cluster.node) {
        parts.headers.insert(FORWARDED, v);
    }
    match client().request(Request::from_parts(parts, body)).await {
        Ok(r) => r.map(Body::new),
        Err(e) => {
            tracing::warn!(error = %e, %leader, "cannot reach the cluster's leader");
            unavailable("the cluster's leader cannot be reached; retry")
        }
    }
}

//! A follower passes shape reads (`/v1/shape`, `/v1/watch`) to the leader and its answer back,
//! unchanged — the leader's shape logs are the only ones until shape-log replication between
//! nodes is built. Long-polls and SSE streams pass through as they flow.
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

/// Whether a request to `path` is the leader's to answer.
pub fn is_leaders(path: &str) -> bool {
    path == "/v1/shape" || path == "/v1/watch"
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

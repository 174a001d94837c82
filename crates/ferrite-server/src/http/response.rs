//! Response builders: Electric's status codes, bodies, cache-control strings and headers.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use std::collections::BTreeMap;

/// `cache-control` for the first request of a shape (`offset=-1`).
pub const CACHE_INITIAL: &str = "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746";
/// `cache-control` for live long-poll responses.
pub const CACHE_LIVE: &str = "public, max-age=5, stale-while-revalidate=5";

/// The response for a refused caller: 401 (with `www-authenticate`) or 403.
pub fn auth_refused(e: &crate::auth::AuthError) -> Response<Body> {
    use crate::auth::AuthError;
    match e {
        AuthError::Unauthenticated(m) => {
            let mut r = error(StatusCode::UNAUTHORIZED, &serde_json::json!({"message": m}));
            set(&mut r, "www-authenticate", "Bearer error=\"invalid_token\"");
            r
        }
        AuthError::Forbidden(m) => error(StatusCode::FORBIDDEN, &serde_json::json!({"message": m})),
    }
}

/// A JSON response with the given status.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    r
}

/// An error response (≥ 400, not 409): never cached anywhere.
pub fn error(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut r = json(status, body);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert("surrogate-control", HeaderValue::from_static("no-store"));
    r
}

/// 400 `{"message":"Invalid request","errors":{field:[msg]}}`.
pub fn invalid(errors: &BTreeMap<String, Vec<String>>) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, &serde_json::json!({"message": "Invalid request", "errors": errors}))
}

/// 400 for a single field.
pub fn invalid_field(field: &str, message: &str) -> Response<Body> {
    let mut m = BTreeMap::new();
    m.insert(field.to_string(), vec![message.to_string()]);
    invalid(&m)
}

/// 409 must-refetch, pointing at the shape's new handle when there is one.
pub fn must_refetch(new_handle: Option<&str>) -> Response<Body> {
    let mut r = Response::new(Body::from(ferrite_protocol::messages::MUST_REFETCH));
    *r.status_mut() = StatusCode::CONFLICT;
    set(&mut r, "content-type", "application/json; charset=utf-8");
    let h = r.headers_mut();
    match new_handle.and_then(|n| HeaderValue::from_str(n).ok()) {
        Some(v) => {
            h.insert("electric-handle", v);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60, must-revalidate"));
        }
        None => {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=1, must-revalidate"));
        }
    }
    r
}

/// 503 with `retry-after`.
pub fn unavailable(retry_after_secs: u64, body: &serde_json::Value) -> Response<Body> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, body);
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// 500 without internals.
pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Response<Body> {
    tracing::error!(error = %err, "{context}");
    error(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({"error": "Internal server error"}))
}

/// Sets a header from a string, skipping values that are not valid header text.
pub fn set(r: &mut Response<Body>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// The answer to a request admission control refused: 503 + `retry-after` when a route is at its
/// limit (Electric's `concurrent_request_limit_exceeded`), 429 + `retry-after` when the caller
/// holds as many requests as one subject may.
pub fn refused(why: &crate::admission::Refusal) -> Response<Body> {
    use crate::admission::{Refusal, Route};
    match why {
        Refusal::Route { route, limit } => {
            let kind = match route {
                Route::ShapeInitial => "initial",
                Route::ShapeExisting => "existing",
                Route::Writes => "write",
                Route::Presence => "presence",
            };
            unavailable(
                5 + rand::random::<u64>() % 6,
                &serde_json::json!({"code": "concurrent_request_limit_exceeded",
                    "message": format!("Concurrent {kind} request limit exceeded (limit: {limit}), please retry")}),
            )
        }
        Refusal::Subject { limit } => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                &serde_json::json!({"code": "subject_request_limit_exceeded",
                    "message": format!("This user holds {limit} requests at once, the most allowed: close some (e.g. live shapes) or retry")}),
            );
            set(&mut r, "retry-after", "5");
            r
        }
    }
}

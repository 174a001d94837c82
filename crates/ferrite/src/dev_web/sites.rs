//! The lead forms' public tenant sites under `ferrite dev` (an example with
//! [`crate::examples::SiteQueries`]):
//!
//! - `GET /dev/tenants` → `[{"id", "slug", "name", "brand_color", "tagline"}]`, the sites;
//! - `POST /dev/site-token` `{"tenant": "<slug>"}` → `{"token", "expires_at", "tenant_id"}`: a
//!   short-lived token for one anonymous visitor of that tenant's site (`role = "visitor"`, the
//!   tenant's id, a random `sub`), which the example's rules let add leads to that tenant and
//!   nothing else — what a real site's backend would hand its pages;
//! - `/t/<slug>/…`: the app's page (it routes by path);
//! - `/pglite/{pglite.wasm, pglite.data, initdb.wasm}`: PGlite's assets for the app's local
//!   database, served from `web/node_modules` (installed by `npm ci` in `web/`; without it they
//!   answer 404 saying so).
//!
//! Same protections as the sign-in: same-origin pages of this machine only, JSON bodies only.

use super::app::{if_none_match, AppFile};
use super::sign_in::{foreign_origin, not_json};
use super::{error, json as json_response, DevWeb};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lifetime of a visitor's site token: a visit, not a session.
pub const SITE_TOKEN_TTL_SECS: u64 = 30 * 60;

/// Where PGlite's assets are (the npm install of `web/`, found from this crate's sources).
const PGLITE_DIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/node_modules/@electric-sql/pglite/dist");

/// The assets the app's worker loads, with their content types.
const PGLITE_FILES: &[(&str, &str)] = &[
    ("pglite.wasm", "application/wasm"),
    ("initdb.wasm", "application/wasm"),
    ("pglite.data", "application/octet-stream"),
];

/// Adds the routes of the module docs to `r`; `app` gives the page `/t/<slug>/…` serves.
pub fn routes(mut r: Router<Arc<DevWeb>>, app: &[AppFile]) -> Router<Arc<DevWeb>> {
    r = r
        .route("/dev/tenants", get(tenants))
        .route("/dev/site-token", post(site_token))
        .route("/pglite/{file}", get(pglite_asset));
    if let Some(index) = app.iter().find(|f| f.path == "/index.html").cloned() {
        for path in ["/t/{slug}", "/t/{slug}/", "/t/{slug}/{*rest}"] {
            let page = index.clone();
            r = r.route(path, get(move |headers: HeaderMap| async move { page.response(&headers) }));
        }
    }
    r
}

/// `GET /dev/tenants`.
async fn tenants(State(web): State<Arc<DevWeb>>, headers: HeaderMap) -> Response<Body> {
    if let Some(refused) = foreign_origin(&headers, &web.listen) {
        return refused;
    }
    let Some(sites) = web.sites else { return error(StatusCode::NOT_FOUND, &json!({"message": "no sites"})) };
    let sql = sites.tenants;
    match web.query(|c| Box::pin(async move { c.query_one(sql, &[]).await })).await {
        Ok(row) => {
            let text: String = row.get(0);
            json_response(StatusCode::OK, &serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
        }
        Err(response) => response,
    }
}

/// True for a tenant slug as the example's schema allows it.
fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 41
        && b[0] != b'-'
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `POST /dev/site-token`.
async fn site_token(State(web): State<Arc<DevWeb>>, headers: HeaderMap, body: axum::body::Bytes) -> Response<Body> {
    if let Some(refused) = foreign_origin(&headers, &web.listen) {
        return refused;
    }
    let Some(sites) = web.sites else { return error(StatusCode::NOT_FOUND, &json!({"message": "no sites"})) };
    if let Some(refused) = not_json(&headers, "/dev/site-token") {
        return refused;
    }
    let slug = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) => match o.get("tenant") {
            Some(Value::String(s)) if is_slug(s) => s.clone(),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &json!({"message": "Invalid request", "errors": {"tenant": ["must be a site's slug, e.g. \"acme\""]}}),
                )
            }
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                &json!({"message": "Request body must be a JSON object {\"tenant\": \"<slug>\"}"}),
            )
        }
    };
    let sql = sites.tenant_by_slug;
    let lookup = slug.clone();
    let found = web.query(|c| Box::pin(async move { c.query_opt(sql, &[&lookup]).await })).await;
    let tenant_id: String = match found {
        Ok(Some(row)) => row.get(0),
        Ok(None) => return error(StatusCode::NOT_FOUND, &json!({"message": format!("no site called {slug}")})),
        Err(response) => return response,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let expires_at = now + SITE_TOKEN_TTL_SECS;
    let claims = json!({
        "sub": format!("visitor-{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>()),
        "role": "visitor",
        "tenant_id": tenant_id,
        "iat": now,
        "exp": expires_at,
    });
    web.issue(&claims, expires_at, json!({ "tenant_id": tenant_id }))
}

/// `GET /pglite/<file>`: one of [`PGLITE_FILES`], revalidated by an ETag of its size and time.
async fn pglite_asset(headers: HeaderMap, Path(file): Path<String>) -> Response<Body> {
    let Some((name, content_type)) = PGLITE_FILES.iter().find(|(n, _)| *n == file) else {
        return error(StatusCode::NOT_FOUND, &json!({"message": format!("no PGlite asset called {file}")}));
    };
    let path = std::path::Path::new(PGLITE_DIST).join(name);
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) => m,
        Err(_) => {
            return error(
                StatusCode::NOT_FOUND,
                &json!({"message": format!("{name} is not installed: run `npm ci` in web/ (scripts/setup.sh does) and reload")}),
            )
        }
    };
    let modified = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    let etag = format!("\"{}-{modified}\"", meta.len());
    let mut r = if if_none_match(&headers, &etag) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let mut r = Response::new(Body::from(bytes));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                r
            }
            Err(e) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, &json!({"message": format!("reading {name}: {e}")}))
            }
        }
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert!(super::is_slug("acme") && super::is_slug("acme-2"));
        assert!(!super::is_slug("") && !super::is_slug("-acme") && !super::is_slug("Acme"));
        assert!(!super::is_slug("acme'; --") && !super::is_slug("../etc"));
        assert!(!super::is_slug(&"a".repeat(42)));
    }
}

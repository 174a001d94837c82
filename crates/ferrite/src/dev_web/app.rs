//! The bundled web app: files compiled into the binary (so `ferrite dev` works from a fresh
//! clone without a JavaScript toolchain), served with an ETag so browsers revalidate cheaply.
//! `no-cache` makes a browser ask every time it is online; offline, the app's service worker
//! answers from its own cache.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};

/// One file of the app.
#[derive(Debug, Clone)]
pub struct AppFile {
    /// URL path, e.g. `/app.js` (`/index.html` is also served at `/`).
    pub path: &'static str,
    /// `content-type` header.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static [u8],
}

impl AppFile {
    fn etag(&self) -> String {
        format!("\"{:08x}-{}\"", crc32fast::hash(self.body), self.body.len())
    }

    /// The file, or 304 when the request's `If-None-Match` names its current version.
    pub fn response(&self, headers: &HeaderMap) -> Response<Body> {
        let etag = self.etag();
        let mut r = if if_none_match(headers, &etag) {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let mut r = Response::new(Body::from(self.body));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
            r
        };
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        r
    }
}

/// Whether the request's `If-None-Match` names `etag` (the client's copy is current: 304).
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
}

/// The route of every file, plus `/` for `/index.html`.
pub fn routes(files: &[AppFile]) -> Vec<(String, AppFile)> {
    let mut out: Vec<(String, AppFile)> = files.iter().map(|f| (f.path.to_string(), f.clone())).collect();
    if let Some(index) = files.iter().find(|f| f.path == "/index.html") {
        out.push(("/".to_string(), index.clone()));
    }
    out
}

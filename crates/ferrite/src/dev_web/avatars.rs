//! `GET /avatars/<name>.svg`: the avatar a seeded user's `avatar_url` points at, drawn as the
//! user's initials on their colour (so the example needs no image files).

use super::{error, DevWeb};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;
use std::sync::Arc;

/// The SVG for the user whose `avatar_url` is this path; 404 if none.
pub async fn avatar(State(web): State<Arc<DevWeb>>, Path(file): Path<String>) -> Response<Body> {
    let url = format!("/avatars/{file}");
    let sql = web.queries.avatar;
    let found = web.query(|c| Box::pin(async move { c.query_opt(sql, &[&url]).await })).await;
    match found {
        Ok(Some(row)) => {
            let name: String = row.get(0);
            let color: String = row.get(1);
            let mut r = Response::new(Body::from(svg(&name, &color)));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
            r
        }
        Ok(None) => error(StatusCode::NOT_FOUND, &json!({"message": format!("no user has the avatar {file}")})),
        Err(response) => response,
    }
}

/// Up to two initials (first letters of the first and last word).
fn initials(name: &str) -> String {
    let words: Vec<&str> = name.split_whitespace().collect();
    let first = |w: &str| w.chars().next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
    match words.as_slice() {
        [] => "?".into(),
        [one] => first(one),
        [a, .., b] => first(a) + &first(b),
    }
}

/// A colour safe to put in an attribute: `#` and 3–8 hex digits, else a neutral grey.
fn safe_color(c: &str) -> &str {
    let hex = c.strip_prefix('#').unwrap_or("");
    if (3..=8).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        c
    } else {
        "#64748b"
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A 64×64 round avatar.
fn svg(name: &str, color: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"64\" height=\"64\" viewBox=\"0 0 64 64\" role=\"img\" aria-label=\"{label}\">\
<circle cx=\"32\" cy=\"32\" r=\"32\" fill=\"{color}\"/>\
<text x=\"32\" y=\"33\" text-anchor=\"middle\" dominant-baseline=\"central\" font-family=\"system-ui, sans-serif\" font-size=\"26\" font-weight=\"600\" fill=\"#fff\">{text}</text></svg>",
        label = xml_escape(name),
        color = safe_color(color),
        text = xml_escape(&initials(name)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_and_escaping() {
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("Edsger W. Dijkstra"), "ED");
        assert_eq!(initials("plato"), "P");
        assert_eq!(initials("  "), "?");
        let s = svg("<script>", "red\" onload=\"x");
        assert!(s.contains("&lt;script&gt;") && s.contains("#64748b") && !s.contains("onload"), "{s}");
    }
}

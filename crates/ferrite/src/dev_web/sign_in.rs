//! Dev sign-in for the examples (the people of each example — `users`, or the lead forms'
//! `staff` — read with its [`SignInQueries`]):
//!
//! - `GET /dev/users` → `[{"id", "name", "email", "avatar_url", "color", …}]`, the people a
//!   developer can sign in as (the pipeline editor adds each one's `teams`, the agents console
//!   their `role`);
//! - `POST /dev/token` `{"user_id": "<uuid>"}` → `{"token", "expires_at"}` (Unix seconds): an
//!   HS256 JWT signed with the server's `auth.secret`, with `sub` = the user's id, `name`, and
//!   the claims the example adds (the agents console's `role`, which its workflows rule reads;
//!   the lead forms' staff `role` and `tenant_id`; the pipeline editor's `role`, `admin` for the
//!   owner of a team, which only the audit trail's read rule reads). Nothing else of the
//!   pipeline editor's team structure is in it: its data rules read `team_members` live, so
//!   adding or removing a membership takes effect at once, with the same token.
//!
//! Any web page a developer visits could try to mint tokens from `localhost`: these routes send
//! no CORS headers (a cross-origin page cannot read their answers), refuse a request whose
//! `Origin` is another site, and `POST /dev/token` accepts only `application/json` bodies — which
//! a cross-origin page cannot send without a CORS preflight, which fails.

use super::{error, json as json_response, DevWeb};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How an example's sign-in reads its people: its own SQL, fixed at compile time (no caller
/// text reaches it; the user id is a bound parameter).
#[derive(Debug, Clone, Copy)]
pub struct SignInQueries {
    /// One row, one text column: the people one can sign in as, as a JSON array (built by
    /// Postgres) of objects with at least `id`, `name`, `email`, `avatar_url` and `color`.
    pub users: &'static str,
    /// For the user id `$1`: no row, or one row of `name` (text) and `claims` (a JSON object as
    /// text: further claims the token carries, e.g. `role` or `tenant_id`; `sub`, `name`, `iat`
    /// and `exp` are the sign-in's own and cannot be overridden).
    pub user: &'static str,
    /// For the avatar path `$1` (`/avatars/<name>.svg`): no row, or the `name` and `color` of
    /// the person whose `avatar_url` it is.
    pub avatar: &'static str,
}

/// Refuses a request from a page of another site: the `Host` must name this machine (a loopback
/// name, or the address the server listens on — which defeats DNS rebinding, where another
/// site's name resolves to this machine), and the `Origin`, when present, must be this server's
/// own (`http://<Host>`).
pub(crate) fn foreign_origin(headers: &HeaderMap, listen: &str) -> Option<Response<Body>> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let local = matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name == listen;
    let same_origin = match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => origin.to_str().ok().and_then(|o| o.strip_prefix("http://")) == Some(host),
    };
    if local && same_origin {
        return None;
    }
    Some(error(
        StatusCode::FORBIDDEN,
        &json!({"message": "the dev sign-in only answers pages served by this server on this machine (cross-origin request refused)"}),
    ))
}

/// A 415 unless the request's body is declared `application/json` (which a cross-origin page
/// cannot send without a preflight, which fails).
pub(crate) fn not_json(headers: &HeaderMap, route: &str) -> Option<Response<Body>> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    (!json_body).then(|| {
        error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &json!({"message": format!("POST {route} takes a JSON body: send content-type: application/json")}),
        )
    })
}

/// `GET /dev/users`.
pub async fn users(State(web): State<Arc<DevWeb>>, headers: HeaderMap) -> Response<Body> {
    if let Some(refused) = foreign_origin(&headers, &web.listen) {
        return refused;
    }
    let sql = web.queries.users;
    match web.query(|c| Box::pin(async move { c.query_one(sql, &[]).await })).await {
        Ok(row) => {
            let text: String = row.get(0);
            json_response(StatusCode::OK, &serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
        }
        Err(response) => response,
    }
}

/// True for the textual form of a UUID (`8-4-4-4-12` hex digits).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `POST /dev/token`.
pub async fn token(State(web): State<Arc<DevWeb>>, headers: HeaderMap, body: axum::body::Bytes) -> Response<Body> {
    if let Some(refused) = foreign_origin(&headers, &web.listen) {
        return refused;
    }
    if let Some(refused) = not_json(&headers, "/dev/token") {
        return refused;
    }
    let user_id = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) => match o.get("user_id") {
            Some(Value::String(s)) if is_uuid(s) => s.clone(),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &json!({"message": "Invalid request", "errors": {"user_id": ["must be a user's id (a uuid)"]}}),
                )
            }
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                &json!({"message": "Request body must be a JSON object {\"user_id\": \"<uuid>\"}"}),
            )
        }
    };
    let id = user_id.clone();
    let sql = web.queries.user;
    let found = web.query(|c| Box::pin(async move { c.query_opt(sql, &[&id]).await })).await;
    let (name, extra): (String, Option<String>) = match found {
        Ok(Some(row)) => (row.get(0), row.get(1)),
        Ok(None) => return error(StatusCode::NOT_FOUND, &json!({"message": format!("no user with id {user_id}")})),
        Err(response) => return response,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let expires_at = now + web.token_ttl_secs;
    let mut claims = serde_json::Map::new();
    if let Some(Value::Object(extra)) = extra.as_deref().and_then(|t| serde_json::from_str(t).ok()) {
        claims.extend(extra);
    }
    claims.extend([
        ("sub".to_string(), json!(user_id)),
        ("name".to_string(), json!(name)),
        ("iat".to_string(), json!(now)),
        ("exp".to_string(), json!(expires_at)),
    ]);
    web.issue(&Value::Object(claims), expires_at, json!({}))
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderMap, HeaderValue};

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn only_this_machines_own_pages_are_answered() {
        let ok =
            |host: &str, origin: Option<&str>| super::foreign_origin(&headers(host, origin), "127.0.0.1").is_none();
        assert!(ok("127.0.0.1:3000", None));
        assert!(ok("localhost:3000", Some("http://localhost:3000")));
        assert!(ok("[::1]:3000", Some("http://[::1]:3000")));
        assert!(!ok("localhost:3000", Some("http://evil.example")));
        assert!(!ok("localhost:3000", Some("http://localhost:4000")));
        assert!(!ok("localhost:3000", Some("null")));
        // DNS rebinding: another site's name pointing at this machine.
        assert!(!ok("evil.example:3000", Some("http://evil.example:3000")));
        assert!(!ok("evil.example:3000", None));
        assert!(super::foreign_origin(&headers("10.0.0.5:3000", None), "10.0.0.5").is_none());
    }

    #[test]
    fn uuids() {
        assert!(super::is_uuid("00000000-0000-4000-8000-0000000000a1"));
        assert!(!super::is_uuid("00000000-0000-4000-8000-0000000000a"));
        assert!(!super::is_uuid("'; DROP TABLE users; --"));
        assert!(!super::is_uuid(""));
    }
}

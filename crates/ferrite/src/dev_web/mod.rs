//! `ferrite dev` only: what a developer needs to try an example in a browser with real
//! authentication, mounted on the server through [`ferrite_server::start_with`]:
//!
//! - [`sign_in`]: `GET /dev/users` lists the example's seeded users, and
//!   `POST /dev/token` issues a real HS256 token for one of them (signed with the server's own
//!   `auth.secret`, so it is verified exactly like a production token);
//! - [`avatars`]: `GET /avatars/<name>.svg`, the users' initials on their colour;
//! - [`app`]: the example's bundled web app at `/`;
//! - [`sites`]: for the lead forms, the tenants' public sites (`/t/<slug>/`), site tokens for
//!   their visitors and PGlite's assets.
//!
//! They query the example's own tables (its people: `users`, or the lead forms' `staff`; the
//! editor's `team_members`; the lead forms' `tenants`), which is why they live here and not in
//! the generic server: `ferrite serve` never issues tokens. The routes are mounted
//! without CORS: only pages this server serves may use them.

pub mod app;
pub mod avatars;
pub mod sign_in;
pub mod sites;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tokio::sync::Mutex;

/// What the development routes need.
pub struct DevWeb {
    /// The database holding the example.
    pub database_url: String,
    /// The server's HS256 secret (`auth.secret`): tokens are signed with it.
    pub secret: String,
    /// The address the server listens on (a `Host` the sign-in accepts besides loopback names).
    pub listen: String,
    /// Lifetime of issued tokens. Short, so that a membership removed in the database stops
    /// granting access soon even to a client that does not ask for a new token.
    pub token_ttl_secs: u64,
    /// The web app's files, served at their paths (`/` serves `/index.html`).
    pub app: Vec<app::AppFile>,
    /// How the sign-in reads the example's people.
    pub queries: sign_in::SignInQueries,
    /// Public tenant sites, for an example that has them ([`sites`]).
    pub sites: Option<crate::examples::SiteQueries>,
    /// One connection for the sign-in's queries, opened on first use, reopened if it broke.
    db: Mutex<Option<tokio_postgres::Client>>,
}

/// Default lifetime of dev tokens.
pub const TOKEN_TTL_SECS: u64 = 15 * 60;

impl DevWeb {
    /// The development routes' settings.
    pub fn new(
        database_url: &str,
        secret: &str,
        listen: &str,
        app: Vec<app::AppFile>,
        queries: sign_in::SignInQueries,
    ) -> DevWeb {
        DevWeb {
            database_url: database_url.to_string(),
            secret: secret.to_string(),
            listen: listen.to_string(),
            token_ttl_secs: TOKEN_TTL_SECS,
            app,
            queries,
            sites: None,
            db: Mutex::new(None),
        }
    }

    /// Runs `query` on the sign-in's connection, (re)connecting first if needed.
    async fn query<T>(
        &self,
        query: impl for<'c> FnOnce(
            &'c tokio_postgres::Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>,
        >,
    ) -> Result<T, Response<Body>> {
        let mut guard = self.db.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let client = ferrite_pg::connect::connect(&self.database_url).await.map_err(|e| {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"code": "database_unreachable", "message": e.to_string()}),
                )
            })?;
            *guard = Some(client);
        }
        let Some(client) = guard.as_ref() else {
            return Err(error(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({})));
        };
        query(client).await.map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"message": format!("querying the example: {e}")}),
            )
        })
    }
}

impl DevWeb {
    /// `{"token", "expires_at", …extra}`: `claims` signed HS256 with the server's `auth.secret`
    /// (verified exactly like a production token), or the error response.
    pub(crate) fn issue(
        &self,
        claims: &serde_json::Value,
        expires_at: u64,
        extra: serde_json::Value,
    ) -> Response<Body> {
        let key = jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes());
        match jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), claims, &key) {
            Ok(token) => {
                let mut body = serde_json::json!({"token": token, "expires_at": expires_at});
                if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
                    body.extend(extra);
                }
                json(StatusCode::OK, &body)
            }
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"message": format!("signing the token: {e}")}),
            ),
        }
    }
}

/// A JSON response that no cache keeps.
pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An error response (`{"message": …}` and friends), never cached.
pub(crate) fn error(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    json(status, body)
}

/// The development routes (see the module docs): the sign-in, the avatars and one route per
/// app file.
pub fn router(web: DevWeb) -> Router {
    let web = Arc::new(web);
    let mut r = Router::new()
        .route("/dev/users", get(sign_in::users))
        .route("/dev/token", post(sign_in::token))
        .route("/avatars/{file}", get(avatars::avatar));
    for (path, file) in app::routes(&web.app) {
        r = r.route(&path, get(move |headers: axum::http::HeaderMap| async move { file.response(&headers) }));
    }
    if web.sites.is_some() {
        r = sites::routes(r, &web.app);
    }
    r.with_state(web)
}

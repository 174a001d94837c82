//! `ferrite dev` only: what a developer needs to try the pipeline-editor example in a browser
//! with real authentication —
//!
//! - [`sign_in`]: `GET /dev/users` lists the example's seeded users and their teams, and
//!   `POST /dev/token` issues a real HS256 token for one of them (signed with the server's own
//!   `auth.secret`, so it is verified exactly like a production token);
//! - [`avatars`]: `GET /avatars/<name>.svg`, the users' initials on their colour;
//! - [`app`]: the bundled editor app at `/`.
//!
//! These routes exist only when [`ServerConfig::dev`](crate::ServerConfig::dev) is set, which
//! no config file or environment variable can do: `ferrite serve` never issues tokens.

pub mod app;
pub mod avatars;
pub mod sign_in;

use crate::state::AppState;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// Settings of the development routes.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Lifetime of issued tokens. Short, so that a membership removed in the database stops
    /// granting access soon even to a client that does not ask for a new token.
    pub token_ttl_secs: u64,
    /// The web app's files, served at their paths (`/` serves `/index.html`).
    pub app: Vec<app::AppFile>,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions { token_ttl_secs: 15 * 60, app: vec![] }
    }
}

impl DevOptions {
    /// Checks that tokens can be issued: the server must verify HS256 tokens with a secret.
    pub fn validate(&self, cfg: &crate::ServerConfig) -> Result<(), String> {
        if cfg.auth.mode != "jwt" || cfg.auth.secret.is_none() {
            return Err("dev sign-in needs auth.mode = \"jwt\" with auth.secret (it signs HS256 tokens)".into());
        }
        if self.token_ttl_secs == 0 {
            return Err("dev token_ttl_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// The development routes (see the module docs): the sign-in, the avatars and one route per
/// app file.
pub fn router(options: &DevOptions) -> Router<Arc<AppState>> {
    let mut r = Router::new()
        .route("/dev/users", get(sign_in::users))
        .route("/dev/token", post(sign_in::token))
        .route("/avatars/{file}", get(avatars::avatar));
    for (path, file) in app::routes(&options.app) {
        r = r.route(&path, get(move |headers: axum::http::HeaderMap| async move { file.response(&headers) }));
    }
    r
}

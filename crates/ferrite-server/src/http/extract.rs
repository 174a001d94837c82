//! What every route takes from a request before doing its own work, as axum extractors: who is
//! calling ([`Caller`]; with the route's admission place, [`Admitted`]) and the body, read whole
//! within its size and time limits ([`BoundedBody`]).
//!
//! They exist so that each of these checks is written once and every route refuses the same
//! way: 401 (with `www-authenticate`) for a missing or bad token in jwt mode, 503 or 429 when
//! admission control says no, 413 for a body over the route's limit and 408 for a body that
//! does not arrive within `request_read_timeout_secs`. Axum runs a handler's extractors in the
//! order of its arguments, so a handler lists them in the order the checks must happen: the
//! caller first (an unauthenticated client cannot make the server wait for its body), the body
//! last.

use super::response as resp;
use crate::admission::{Refusal, Route, Ticket};
use crate::auth::{AuthError, Identity};
use crate::config::ServerConfig;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Response, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// The caller of a request, from its `Authorization` header: `None` when auth is off
/// (`auth.mode = "insecure"`), the verified token's identity in jwt mode. Routes need it to
/// apply the caller's table rules and to keep per-subject state and limits.
pub struct Caller(pub Option<Identity>);

impl Caller {
    /// The verified identity, for table rules (`None` when auth is off).
    pub fn identity(&self) -> Option<&Identity> {
        self.0.as_ref()
    }

    /// The token's subject, which admission control and per-user state are keyed by.
    pub fn subject(&self) -> Option<&str> {
        self.0.as_ref().map(|w| w.subject.as_str())
    }
}

/// A request refused because its token is missing or invalid (jwt mode).
#[derive(Debug)]
pub struct Unauthenticated(pub AuthError);

impl IntoResponse for Unauthenticated {
    /// 401 with `www-authenticate` and the reason as `{"message"}`.
    fn into_response(self) -> Response<Body> {
        resp::auth_refused(&self.0)
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Unauthenticated;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        state.auth.authenticate(authorization).map(Caller).map_err(Unauthenticated)
    }
}

/// A route whose requests take an admission place as soon as the caller is known (see
/// [`Admitted`]). Shape requests are not among them: their kind of place depends on the
/// offset, known only once the request is parsed.
pub trait AdmittedRoute {
    /// The admission limit the route's requests count against.
    const ROUTE: Route;
}

/// `POST /v1/transactions` ([`Route::Writes`]).
pub struct WritesRoute;

impl AdmittedRoute for WritesRoute {
    const ROUTE: Route = Route::Writes;
}

/// `GET/POST /v1/presence` ([`Route::Presence`]).
pub struct PresenceRoute;

impl AdmittedRoute for PresenceRoute {
    const ROUTE: Route = Route::Presence;
}

/// An authenticated caller holding its admission place on route `R`: the request counts
/// against the route's limit and the caller's per-subject limit for as long as the handler
/// keeps `ticket` (to the end of a long-poll, or moved into an SSE stream until it ends).
/// Taken before the body is read, so a flood of slow bodies is bounded by the same limits.
pub struct Admitted<R: AdmittedRoute> {
    /// Who is calling.
    pub caller: Caller,
    /// The request's places; dropping it gives them back.
    pub ticket: Ticket,
    route: PhantomData<fn() -> R>,
}

/// Why a request was not admitted: no valid token, or no place free.
#[derive(Debug)]
pub enum AdmissionRejection {
    /// No usable token (401).
    Unauthenticated(Unauthenticated),
    /// The route or the caller holds as many requests as allowed (503 or 429, `retry-after`).
    Refused(Refusal),
}

impl IntoResponse for AdmissionRejection {
    fn into_response(self) -> Response<Body> {
        match self {
            AdmissionRejection::Unauthenticated(u) => u.into_response(),
            AdmissionRejection::Refused(why) => resp::refused(&why),
        }
    }
}

impl<R: AdmittedRoute> FromRequestParts<Arc<AppState>> for Admitted<R> {
    type Rejection = AdmissionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await.map_err(AdmissionRejection::Unauthenticated)?;
        let ticket = state.admission.admit(R::ROUTE, caller.subject()).map_err(AdmissionRejection::Refused)?;
        Ok(Admitted { caller, ticket, route: PhantomData })
    }
}

/// How large a route's request body may be, and what its 413 says.
pub trait BodyLimit {
    /// The most bytes accepted.
    fn max_bytes(config: &ServerConfig) -> usize;
    /// The message of the 413 answer to a bigger body.
    fn too_large(max_bytes: usize) -> String;
}

/// `max_request_bytes`: the limit of subset bodies and transactions.
pub struct MaxRequestBytes;

impl BodyLimit for MaxRequestBytes {
    fn max_bytes(config: &ServerConfig) -> usize {
        config.max_request_bytes
    }

    fn too_large(max_bytes: usize) -> String {
        format!("Request body too large (limit: {max_bytes} bytes)")
    }
}

/// A request body read whole, at most `L`'s limit in size and within
/// `request_read_timeout_secs`, so that neither a huge body nor one trickling in a byte at a
/// time can hold the server's memory or a request's places.
pub struct BoundedBody<L: BodyLimit = MaxRequestBytes> {
    /// The body.
    pub bytes: Bytes,
    limit: PhantomData<fn() -> L>,
}

impl<L: BodyLimit> BoundedBody<L> {
    /// A body given as bytes, for tests that call a handler directly.
    #[cfg(test)]
    pub fn already_read(bytes: Bytes) -> Self {
        BoundedBody { bytes, limit: PhantomData }
    }
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyRejection {
    /// Over the limit, or the body broke off (413 with this message).
    TooLarge(String),
    /// Not received in time (408).
    TimedOut,
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response<Body> {
        match self {
            BodyRejection::TooLarge(message) => {
                resp::error(StatusCode::PAYLOAD_TOO_LARGE, &json!({ "message": message }))
            }
            BodyRejection::TimedOut => {
                resp::error(StatusCode::REQUEST_TIMEOUT, &json!({"message": "Request body not received in time"}))
            }
        }
    }
}

impl<L: BodyLimit> FromRequest<Arc<AppState>> for BoundedBody<L> {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let max = L::max_bytes(&state.config);
        let deadline = Duration::from_secs(state.config.request_read_timeout_secs);
        match tokio::time::timeout(deadline, axum::body::to_bytes(req.into_body(), max)).await {
            Ok(Ok(bytes)) => Ok(BoundedBody { bytes, limit: PhantomData }),
            Ok(Err(_)) => Err(BodyRejection::TooLarge(L::too_large(max))),
            Err(_) => Err(BodyRejection::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;

    const SECRET: &str = "extract-test-secret-0123456789abcdef";

    fn state(tweak: impl FnOnce(&mut ServerConfig)) -> (Arc<AppState>, tempfile::TempDir) {
        let mut cfg = ServerConfig::default();
        tweak(&mut cfg);
        let dir = tempfile::tempdir().unwrap();
        let clock = ferrite_protocol::clock::Clock::system();
        let registry = Arc::new(crate::shapes::Registry::open(dir.path(), 10, clock.clone()).unwrap());
        (Arc::new(AppState::new(cfg, registry, clock).unwrap()), dir)
    }

    fn request(authorization: Option<&str>, body: Body) -> Request {
        let mut b = Request::builder().method("POST").uri("/v1/transactions");
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(body).unwrap()
    }

    async fn body_text(r: Response<Body>) -> serde_json::Value {
        serde_json::from_slice(&axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_limit_and_refused_beyond() {
        let (state, _dir) = state(|c| c.max_request_bytes = 10);
        let ok = BoundedBody::<MaxRequestBytes>::from_request(request(None, Body::from("0123456789")), &state).await;
        assert_eq!(ok.ok().map(|b| b.bytes), Some(Bytes::from_static(b"0123456789")));
        let big = BoundedBody::<MaxRequestBytes>::from_request(request(None, Body::from("0123456789a")), &state).await;
        let rejection = big.err().expect("refused");
        assert_eq!(rejection, BodyRejection::TooLarge("Request body too large (limit: 10 bytes)".into()));
        let r = rejection.into_response();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers().get(header::CACHE_CONTROL).unwrap(), "no-store");
        assert_eq!(body_text(r).await, json!({"message": "Request body too large (limit: 10 bytes)"}));
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let (state, _dir) = state(|c| c.request_read_timeout_secs = 1);
        let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let started = std::time::Instant::now();
        let r = BoundedBody::<MaxRequestBytes>::from_request(request(None, Body::from_stream(never)), &state).await;
        assert_eq!(r.err(), Some(BodyRejection::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(900));
        let r = BodyRejection::TimedOut.into_response();
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(body_text(r).await, json!({"message": "Request body not received in time"}));
    }

    #[tokio::test]
    async fn admission_follows_authentication_and_places_are_given_back() {
        let (state, _dir) = state(|c| {
            c.auth.mode = AuthMode::Jwt;
            c.auth.secret = Some(SECRET.into());
            c.max_requests_per_subject = 1;
        });
        let (mut parts, _) = request(None, Body::empty()).into_parts();
        let refused = Caller::from_request_parts(&mut parts, &state).await.err().expect("no token");
        let r = refused.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_some());
        assert_eq!(body_text(r).await, json!({"message": "missing Authorization: Bearer <token> header"}));

        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "alice", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let (mut parts, _) = request(Some(&format!("Bearer {token}")), Body::empty()).into_parts();
        let held = Admitted::<WritesRoute>::from_request_parts(&mut parts, &state).await.expect("admitted");
        assert_eq!(held.caller.subject(), Some("alice"));
        match Admitted::<PresenceRoute>::from_request_parts(&mut parts, &state).await {
            Err(AdmissionRejection::Refused(Refusal::Subject { limit: 1 })) => {}
            Err(other) => panic!("expected the subject limit, got {other:?}"),
            Ok(_) => panic!("expected the subject limit, got a second place"),
        }
        drop(held);
        assert!(Admitted::<PresenceRoute>::from_request_parts(&mut parts, &state).await.is_ok(), "place given back");
    }
}

//! `POST /v1/presence` (join, heartbeat, leave) and `GET /v1/presence?room=…` (the room's
//! members: once, as a long-poll from an offset, or as a server-sent event stream).
//!
//! A post answers `{"offset", "ttl_secs", "member"}`: `member` is the poster's id in the room's
//! member list (client ids are never shown to other readers).
//!
//! Same auth as shapes. With `auth.mode = "jwt"` a room is named `<table>:<key>` after a row
//! (e.g. `pipelines:7f3c…`) and only callers whose read rule on that table admits the row may
//! join or read it; rooms of public tables are open to every authenticated caller.

use crate::auth::Identity;
use crate::http::extract::{Admitted, BodyLimit, BoundedBody, Caller, PresenceRoute};
use crate::http::response::{self as resp, set};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{Response, StatusCode};
use ferrite_protocol::relation::QualifiedName;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest room name accepted.
const MAX_ROOM_LEN: usize = 256;
/// Largest `state` accepted (serialized JSON bytes): presence is for small things.
const MAX_STATE_BYTES: usize = 4096;

/// The body limit of a presence post: a room name, a client id and a state of at most
/// [`MAX_STATE_BYTES`], whatever `max_request_bytes` allows other routes.
pub struct PresenceUpdate;

impl BodyLimit for PresenceUpdate {
    fn max_bytes(_: &crate::config::ServerConfig) -> usize {
        MAX_STATE_BYTES + MAX_ROOM_LEN + 1024
    }

    fn too_large(_: usize) -> String {
        "Presence update too large".into()
    }
}

/// Whether `who` may join and read `room`. A caller refused (its read rule no longer admits the
/// room's row — a membership revoked) also leaves the room, with all its clients.
async fn admit(state: &AppState, who: Option<&Identity>, room: &str) -> Result<(), Response<Body>> {
    let result = check(state, who, room).await;
    if let (Err(r), Some(w)) = (&result, who) {
        if r.status() == StatusCode::FORBIDDEN {
            state.presence.leave_subject(room, &w.subject);
        }
    }
    result
}

/// The check of [`admit`].
async fn check(state: &AppState, who: Option<&Identity>, room: &str) -> Result<(), Response<Body>> {
    if room.is_empty() || room.len() > MAX_ROOM_LEN {
        return Err(resp::invalid_field("room", &format!("must be 1 to {MAX_ROOM_LEN} bytes")));
    }
    if who.is_none() {
        return Ok(());
    }
    let forbidden = |m: String| resp::error(StatusCode::FORBIDDEN, &json!({ "message": m }));
    let Some((table, key)) = room.split_once(':') else {
        return Err(forbidden(format!(
            "room {room:?}: with auth.mode = \"jwt\" a room is named <table>:<key> after a row the caller can read"
        )));
    };
    let table = QualifiedName::parse(table).map_err(|e| forbidden(format!("room {room:?}: {e}")))?;
    match state.auth.read_filter(&table, who) {
        Err(e) => Err(forbidden(e.to_string())),
        Ok(None) => Ok(()),
        Ok(Some(rule)) => match super::rows::row_matches(&state.presence_pool, &state.writer, &table, key, &rule).await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(forbidden(format!("room {room:?} is not readable by this caller"))),
            Err(e) => Err(resp::unavailable(5, &json!({"code": "database_unreachable", "message": e}))),
        },
    }
}

/// `POST /v1/presence` with `{"room", "client_id", "state"}`; `"state": null` leaves the room.
pub async fn post(
    State(state): State<Arc<AppState>>,
    admitted: Admitted<PresenceRoute>,
    body: BoundedBody<PresenceUpdate>,
) -> Response<Body> {
    let Admitted { caller: Caller(who), ticket: _ticket, .. } = admitted;
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body.bytes) else {
        return resp::error(StatusCode::BAD_REQUEST, &json!({"message": "Request body must be a JSON object"}));
    };
    let Some(room) = body.get("room").and_then(Value::as_str) else {
        return resp::invalid_field("room", "must be a string");
    };
    let client_id = match body.get("client_id").and_then(Value::as_str) {
        Some(c) if ferrite_protocol::write_protocol::valid_client_id(c) => c,
        _ => return resp::invalid_field("client_id", "must be 1-128 characters of A-Z a-z 0-9 . _ -"),
    };
    let member_state = body.get("state").cloned().unwrap_or(Value::Null);
    if !matches!(member_state, Value::Object(_) | Value::Null) {
        return resp::invalid_field("state", "must be a JSON object (or null to leave)");
    }
    if member_state.to_string().len() > MAX_STATE_BYTES {
        return resp::invalid_field("state", &format!("must be at most {MAX_STATE_BYTES} bytes of JSON"));
    }
    if let Err(r) = admit(&state, who.as_ref(), room).await {
        return r;
    }
    let subject = who.as_ref().map(|w| w.subject.as_str());
    let ttl = state.config.presence_ttl_secs;
    if member_state.is_null() {
        let v = state.presence.leave(room, client_id, subject);
        return resp::json(StatusCode::OK, &json!({"offset": v, "ttl_secs": ttl}));
    }
    match state.presence.upsert(room, client_id, subject, member_state) {
        Ok((v, member)) => resp::json(StatusCode::OK, &json!({"offset": v, "ttl_secs": ttl, "member": member})),
        Err(e) => refused(&e),
    }
}

/// The response for a presence limit: 429 for a full room, 503 when the server holds too many
/// rooms (both with `retry-after`).
fn refused(e: &super::PresenceError) -> Response<Body> {
    let status = match e {
        super::PresenceError::RoomFull(_) => StatusCode::TOO_MANY_REQUESTS,
        super::PresenceError::TooManyRooms(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut r = resp::error(status, &json!({"message": e.to_string()}));
    set(&mut r, "retry-after", "5");
    r
}

fn snapshot_body(state: &AppState, room: &str) -> (u64, String) {
    let (v, members) = state.presence.snapshot(room);
    (v, json!({"room": room, "offset": v, "members": members}).to_string())
}

/// `GET /v1/presence?room=R[&offset=V][&live=true | &live_sse=true]`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    admitted: Admitted<PresenceRoute>,
    RawQuery(q): RawQuery,
) -> Response<Body> {
    // The ticket is held while a long-poll waits, and by an SSE stream until it ends.
    let Admitted { caller: Caller(who), ticket, .. } = admitted;
    let pairs = crate::http::shape::query_pairs(&q);
    let param = |k: &str| pairs.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(room) = param("room") else { return resp::invalid_field("room", "can't be blank") };
    let room = room.to_string();
    let offset = match param("offset").map(str::parse::<u64>) {
        None => None,
        Some(Ok(o)) => Some(o),
        Some(Err(_)) => return resp::invalid_field("offset", "must be a non-negative integer"),
    };
    let truthy = |k: &str| param(k).is_some_and(crate::http::params::truthy);
    let (live, sse) = (truthy("live"), truthy("live_sse"));
    if let Err(r) = admit(&state, who.as_ref(), &room).await {
        return r;
    }
    if sse {
        return match state.presence.subscribe(&room) {
            Ok(changes) => stream(state, room, changes, ticket),
            Err(e) => refused(&e),
        };
    }
    let mut rx = match state.presence.subscribe(&room) {
        Ok(rx) => rx,
        Err(e) => return refused(&e),
    };
    if live && offset == Some(*rx.borrow_and_update()) {
        // Nothing new for this reader yet: wait for a change or the long-poll timeout.
        let wait = Duration::from_millis(state.config.long_poll_timeout_ms);
        let _waiting = crate::metrics::Held::new(&state.metrics.presence_waiting);
        // (A server shutting down answers at once, as at the timeout.)
        tokio::select! {
            _ = tokio::time::timeout(wait, rx.changed()) => {}
            _ = state.drained() => {}
        }
    }
    drop(rx);
    let (_, body) = snapshot_body(&state, &room);
    let mut r = resp::json(StatusCode::OK, &serde_json::from_str(&body).unwrap_or(Value::Null));
    set(&mut r, "cache-control", "no-store");
    r
}

/// Members as `data:` events: the current state first, then after every change, with keep-alive
/// comments in silence, ending after `sse_timeout_secs` (clients reconnect).
fn stream(
    state: Arc<AppState>,
    room: String,
    mut changes: tokio::sync::watch::Receiver<u64>,
    ticket: crate::admission::Ticket,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let end = Instant::now() + Duration::from_secs(state.config.sse_timeout_secs);
    let keepalive = Duration::from_secs(state.config.sse_keepalive_secs.max(1));
    let stall = Duration::from_secs(state.config.slow_client_timeout_secs);
    tokio::spawn(async move {
        let _ticket = ticket;
        loop {
            changes.borrow_and_update();
            let (_, body) = snapshot_body(&state, &room);
            if tx.send_timeout(Bytes::from(format!("data: {body}\n\n")), stall).await.is_err() {
                return;
            }
            loop {
                let now = Instant::now();
                if now >= end {
                    return;
                }
                let wait = tokio::time::timeout(keepalive.min(end - now), changes.changed());
                let changed = tokio::select! {
                    changed = wait => changed,
                    // The client went away: end now, freeing the stream's admission place.
                    _ = tx.closed() => return,
                    // The server shuts down: the stream ends; the client reconnects.
                    _ = state.drained() => return,
                };
                match changed {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => {
                        if Instant::now() < end
                            && tx.send_timeout(Bytes::from_static(b": keep-alive\n\n"), stall).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    let mut r = Response::new(Body::from_stream(body));
    set(&mut r, "content-type", "text/event-stream");
    set(&mut r, "cache-control", "no-store");
    set(&mut r, "x-accel-buffering", "no");
    r
}

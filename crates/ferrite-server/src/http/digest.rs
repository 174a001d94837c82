//! `GET /v1/shape/digest`: the convergence digest of a shape's rows as a client holds them at
//! an offset, computed on demand by replaying the shape's log (see
//! [`crate::shapes::replayed_digest`]). A Ferrite extension, for the shapes whose messages carry
//! no `ferrite_digest` (relational shapes, include-tree members, time windows): a client asks when
//! a convergence check is due, with the parameters of its shape read, its handle and its offset.
//! The same read rules apply as to the shape read itself.

use super::extract::{Admitted, AdmittedRoute};
use super::response as resp;
use crate::admission::Route;
use crate::shapes::replayed_digest::{Answer, ReplayError};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{Response, StatusCode};
use ferrite_protocol::offset::RequestOffset;
use serde_json::json;
use std::sync::Arc;

/// Counts against the limit of requests that start reading a shape: a replay costs about what an
/// initial sync of the shape does.
pub struct DigestRoute;

impl AdmittedRoute for DigestRoute {
    const ROUTE: Route = Route::ShapeInitial;
}

/// `GET /v1/shape/digest?<shape parameters>&handle=…&offset=…`: `{"digest": "<rows>:<hex>"}`,
/// or `{"digest": null, "reason": …}` when the server cannot tell; 409 when the handle is not
/// the shape's any more, 400 for bad parameters.
pub async fn get(
    State(state): State<Arc<AppState>>,
    admitted: Admitted<DigestRoute>,
    RawQuery(q): RawQuery,
) -> Response<Body> {
    let Admitted { caller, ticket: _ticket, .. } = admitted;
    let pairs = super::shape::query_pairs(&q);
    let req = match super::shape::parse_request(&state, &pairs, None, caller.identity()) {
        Ok(r) => r,
        Err(response) => return response,
    };
    if req.subset.is_some() {
        return resp::invalid_field("subset", "a digest describes the whole shape: subset parameters are not allowed");
    }
    let RequestOffset::At(offset) = req.offset else {
        return resp::invalid_field(
            "offset",
            "a digest is of the rows at an offset the shape's log served (not -1 or now)",
        );
    };
    if req.handle.is_none() {
        return resp::invalid_field("handle", "a digest needs the handle of the shape read");
    }
    let shape = match super::shape::resolve(&state, &req).await {
        Ok(super::shape::Resolved::Shape(s)) => s,
        Ok(super::shape::Resolved::Refetch(new_handle)) => return resp::must_refetch(new_handle.as_deref()),
        Err(e) => return super::shape::request_error(e),
    };
    state.registry.touch(&shape);
    match state.replayed_digests.digest(&shape, offset, &state.metrics).await {
        Ok(answer) => {
            let body = match answer {
                Answer::Digest(d) => json!({ "digest": d.to_string() }),
                Answer::Unknown(why) => json!({ "digest": null, "reason": why }),
            };
            let mut r = resp::json(StatusCode::OK, &body);
            // The log never changes below an offset it served: nor does the answer.
            resp::set(&mut r, "cache-control", resp::CACHE_INITIAL);
            r
        }
        Err(ReplayError::Busy) => resp::unavailable(
            5,
            &json!({"code": "digest_busy", "message": "other convergence digests are being computed; retry later"}),
        ),
        Err(e @ ReplayError::Failed(_)) => resp::internal("shape digest failed", &e),
    }
}

//! The write path: `POST /v1/transactions` (see `docs/write-protocol.md`).
//!
//! [`handler`] parses and answers the HTTP request; [`apply`] applies each client transaction
//! exactly once under the table's conflict policy ([`policy`]), over connections of its own
//! [`crate::pool`].

pub mod apply;
pub mod policy;

use crate::http::extract::{Admitted, BoundedBody, Caller, WritesRoute};
use crate::http::response as resp;
use crate::state::AppState;
use apply::WriteError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, StatusCode};
use ferrite_protocol::write_protocol::TransactionsResponse;
use serde_json::json;
use std::sync::Arc;

/// `POST /v1/transactions`. The caller is authenticated and admitted (its place held until the
/// answer is built; the batch itself runs to completion in its own task) before the body is read.
pub async fn handler(
    State(state): State<Arc<AppState>>,
    admitted: Admitted<WritesRoute>,
    body: BoundedBody,
) -> Response<Body> {
    let Admitted { caller: Caller(who), ticket: _ticket, .. } = admitted;
    let req = match ferrite_protocol::write_protocol::parse_request(&body.bytes, state.config.sync_batch_size) {
        Ok(r) => r,
        Err(e) => {
            return resp::error(
                StatusCode::BAD_REQUEST,
                &json!({"message": "Invalid request", "errors": {e.field: [e.message]}}),
            )
        }
    };
    drop(body);
    let mutations: usize = req.transactions.iter().map(|t| t.mutations.len()).sum();
    let limit = state.config.max_mutations_per_request;
    if req.transactions.len() > 1 && mutations > limit {
        return resp::error(
            StatusCode::BAD_REQUEST,
            &json!({"message": "Invalid request", "errors": {"transactions": [
                format!("at most {limit} mutations per request (got {mutations}): send fewer transactions at once")]}}),
        );
    }
    // The batch runs in its own task: a client that hangs up mid-request does not cut it short
    // (its connection, transaction and client lock end cleanly, and the result is recorded for
    // the retry to read back).
    let task = {
        let state = state.clone();
        tokio::spawn(async move { state.writer.apply(&req, who.as_ref()).await })
    };
    let applied = match task.await {
        Ok(applied) => applied,
        Err(e) => return resp::internal("applying client transactions", &e),
    };
    match applied {
        Ok(results) => {
            for r in &results {
                state.metrics.count_write_result(r.status);
            }
            let body = serde_json::to_value(TransactionsResponse { results }).unwrap_or_default();
            resp::json(StatusCode::OK, &body)
        }
        Err(WriteError::Unavailable(m) | WriteError::Aborted(m)) => {
            tracing::warn!(error = %m, "applying client transactions failed");
            resp::unavailable(
                5,
                &json!({"code": "database_unreachable", "message": "Database is unreachable, please retry"}),
            )
        }
    }
}

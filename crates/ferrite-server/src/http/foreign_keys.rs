//! `GET /v1/foreign-keys?table=<name>`: the foreign keys between a table and the others, as
//! Postgres declares them. Clients compile an include tree (`pipelines` with their `steps`, the
//! steps' `connections`, …) into one shape per node whose where clause is a subquery on its
//! parent, and need to know which columns link the two. A Ferrite extension; the shape API itself
//! is unchanged.
//!
//! In jwt mode the caller must be able to read the table, and only keys to tables the caller can
//! read are listed (the others' names stay hidden). Tables in Ferrite's or Postgres's own schemas
//! are refused, as for shapes.

use super::extract::{Admitted, AdmittedRoute, Caller};
use super::response as resp;
use crate::admission::Route;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{Response, StatusCode};
use ferrite_protocol::relation::QualifiedName;
use serde_json::json;
use std::sync::Arc;

/// Counts against the limit of requests that start reading a shape: the next requests of a
/// client asking this are usually its shapes' first.
pub struct ForeignKeysRoute;

impl AdmittedRoute for ForeignKeysRoute {
    const ROUTE: Route = Route::ShapeInitial;
}

/// `GET /v1/foreign-keys?table=…`: `{"table": [schema, name], "foreign_keys": [{"name", "table",
/// "columns", "references", "referenced_columns"}]}`, tables as `[schema, name]`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    admitted: Admitted<ForeignKeysRoute>,
    RawQuery(q): RawQuery,
) -> Response<Body> {
    let Admitted { caller: Caller(who), ticket: _ticket, .. } = admitted;
    let pairs = super::shape::query_pairs(&q);
    let Some(raw) = pairs.iter().rev().find(|(k, _)| k == "table").map(|(_, v)| v.clone()) else {
        return resp::invalid_field("table", "table is required");
    };
    let table = match QualifiedName::parse(&raw) {
        Ok(t) => t,
        Err(e) => return resp::invalid_field("table", &e.to_string()),
    };
    if table.is_reserved() {
        return resp::invalid_field("table", "tables in Ferrite's or Postgres's own schemas cannot be read");
    }
    if let Err(e) = state.auth.read_filter(&table, who.as_ref()) {
        return resp::error(StatusCode::FORBIDDEN, &json!({ "message": e.to_string() }));
    }
    let name = table.clone();
    let keys = match state
        .with_db(|c| Box::pin(async move { ferrite_pg::introspect::foreign_keys(c, &name).await }))
        .await
    {
        Ok(Ok(Some(keys))) => keys,
        Ok(Ok(None)) => {
            return resp::invalid_field(
                "table",
                &format!(
                "Table {} does not exist. If the table name contains capitals or special characters you must quote it.",
                table.quoted()
            ),
            )
        }
        Ok(Err(e)) => return resp::unavailable(5, &json!({"code": "database_unreachable", "message": e.to_string()})),
        Err(e) => return resp::unavailable(5, &json!({"code": "database_unreachable", "message": e.to_string()})),
    };
    let visible = |t: &QualifiedName| !t.is_reserved() && state.auth.read_filter(t, who.as_ref()).is_ok();
    let listed: Vec<serde_json::Value> = keys
        .iter()
        .filter(|k| visible(&k.table) && visible(&k.references))
        .map(|k| {
            json!({
                "name": k.name,
                "table": [k.table.schema, k.table.name],
                "columns": k.columns,
                "references": [k.references.schema, k.references.name],
                "referenced_columns": k.referenced_columns,
            })
        })
        .collect();
    let mut r = resp::json(StatusCode::OK, &json!({"table": [table.schema, table.name], "foreign_keys": listed}));
    resp::set(&mut r, "cache-control", "no-cache");
    r
}

//! Subset snapshots (`subset__*` parameters or a POST body: progressive loading): the rows of a
//! shape matching an extra where clause, ordered and paged, read in a fresh REPEATABLE READ
//! snapshot and answered as `{"metadata": {…}, "data": [rows]}`.
//!
//! A subset takes one of the `snapshot_concurrency` snapshot connections (503 + `retry-after`
//! when none frees up in time) and is bounded before any row is sent: at most `max_subset_rows`
//! rows and, when `max_shape_size` is set, that many bytes of row JSON (400 `subset_too_large`
//! otherwise). The rows are then streamed as Postgres returns them, so the server holds one row
//! at a time. A client that hangs up mid-answer drops the stream, which closes the connection
//! (Postgres rolls the read-only transaction back) — nothing is left behind.

use super::response::{self as resp, set};
use super::shape::request_error;
use crate::shapes::Shape;
use crate::state::{AppState, ShapeRequestError};
use axum::body::{Body, Bytes};
use axum::http::{Response, StatusCode};
use ferrite_pg::row_query::{OrderBy, RowQuery, SubsetQuery};
use ferrite_pg::snapshot::Snapshot;
use ferrite_pg::PgError;
use ferrite_where::WhereClause;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Longest a subset's queries may run in Postgres.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a subset waits for a snapshot connection before it is answered 503.
const CONNECTION_WAIT: Duration = Duration::from_secs(10);

/// What the streaming task reports before the first byte: the answer's beginning, or the
/// response to send instead.
type Start = Result<String, Response<Body>>;

/// Subset snapshot: rows matching shape ∧ subset, in a fresh snapshot, streamed as a JSON object.
pub async fn response(
    state: &Arc<AppState>,
    shape: &Arc<Shape>,
    subset: &super::params::SubsetParams,
) -> Response<Body> {
    if shape.is_relational() {
        // Its rows would need tags saying why each is in the shape, at the subset's snapshot.
        return resp::invalid_field(
            "subset__where",
            "subsets of shapes whose where clause has subqueries or reads the current time are not supported yet",
        );
    }
    let table = &shape.filter.table;
    let where_clause = match &subset.where_sql {
        None => None,
        Some(sql) => match WhereClause::compile(sql, &subset.params, table) {
            Ok(w) => Some(w),
            Err(e) => {
                let field = if e.field() == "params" { "subset__params" } else { "subset__where" };
                return resp::invalid_field(field, &e.to_string());
            }
        },
    };
    let order_by = match &subset.order_by {
        None => vec![],
        Some(o) => match parse_order_by(o, table) {
            Ok(v) => v,
            Err(m) => return resp::invalid_field("subset__order_by", &m),
        },
    };
    let q = SubsetQuery { where_clause, order_by, limit: subset.limit, offset: subset.offset };
    let conn = match state.snapshot_pool.get_within(CONNECTION_WAIT).await {
        Ok(c) => c,
        Err(crate::pool::PoolError::Busy(n)) => {
            return resp::unavailable(
                2,
                &serde_json::json!({"code": "snapshot_concurrency_exceeded",
                    "message": format!("All {n} snapshot connections are busy, please retry")}),
            )
        }
        Err(crate::pool::PoolError::Connect(e)) => {
            return request_error(ShapeRequestError::DatabaseUnreachable(e.to_string()))
        }
    };
    let (start_tx, start_rx) = tokio::sync::oneshot::channel::<Start>();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let limits = Limits { rows: state.config.max_subset_rows, bytes: state.config.max_shape_size };
    let filter_shape = shape.clone();
    tokio::spawn(async move {
        let mut start = Some(start_tx);
        let outcome = stream_rows(conn, &filter_shape, &q, limits, &mut start, &tx).await;
        if let Err(e) = outcome {
            match start.take() {
                // Nothing sent yet: the handler answers with the error.
                Some(s) => {
                    let _ = s.send(Err(e));
                }
                // Mid-stream: abort the body, so the client sees a failed response rather than
                // a cut-off one it could take for whole.
                None => {
                    let _ = tx.send(Err(std::io::Error::other("subset snapshot failed mid-stream"))).await;
                }
            }
        }
    });
    let first = match start_rx.await {
        Ok(Ok(first)) => first,
        Ok(Err(response)) => return response,
        Err(_) => return resp::internal("subset snapshot", &"the snapshot task ended early"),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    // Fused: a compressing reader (see `super::compression`) may poll again after the end.
    let body =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(first)) }).chain(rest).fuse();
    let mut r = Response::new(Body::from_stream(body));
    set(&mut r, "content-type", "application/json; charset=utf-8");
    set(&mut r, "cache-control", "no-cache");
    set(&mut r, "electric-snapshot", "true");
    set(&mut r, "electric-handle", &shape.handle);
    set(&mut r, "electric-schema", &shape.schema_header);
    set(&mut r, "electric-offset", &shape.log.durable_offset().to_string());
    r
}

/// Bounds of one subset answer.
#[derive(Clone, Copy)]
struct Limits {
    /// Most rows.
    rows: u64,
    /// Most bytes of row JSON (0 = no limit).
    bytes: u64,
}

/// Runs the subset in its own snapshot on `conn`: checks the bounds, reports the answer's
/// beginning through `start`, then sends each row through `tx`. The connection goes back to the
/// pool only after COMMIT; any other end (an error, the client gone) closes it.
async fn stream_rows(
    conn: crate::pool::Pooled<tokio_postgres::Client>,
    shape: &Shape,
    q: &SubsetQuery,
    limits: Limits,
    start: &mut Option<tokio::sync::oneshot::Sender<Start>>,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), Response<Body>> {
    let failed = |e: PgError| resp::internal("subset snapshot", &e);
    let snapshot = Snapshot::begin(conn.client(), Some(STATEMENT_TIMEOUT)).await.map_err(failed)?;
    let mark = rand::random::<u32>() & 0x7fff_ffff;
    let query = RowQuery::subset(&shape.filter, q, mark);
    // Bounded before the first byte goes out: a LIMIT within the row cap needs no count unless
    // bytes are capped too.
    let counted = q.limit.is_none_or(|l| l > limits.rows) || limits.bytes > 0;
    if counted {
        let size = snapshot.count(&query, limits.rows).await.map_err(failed)?;
        let too_large = |what: String| {
            resp::error(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"code": "subset_too_large", "message": format!("{what}: ask for fewer rows (subset limit) or columns")}),
            )
        };
        if size.rows > limits.rows {
            return Err(too_large(format!("the subset has more than {} rows (max_subset_rows)", limits.rows)));
        }
        if limits.bytes > 0 && size.bytes > limits.bytes {
            return Err(too_large(format!("the subset is larger than {} bytes (max_shape_size)", limits.bytes)));
        }
    }
    let info = snapshot.info();
    let first = format!(
        "{{\"metadata\":{{\"xmin\":\"{}\",\"xmax\":\"{}\",\"xip_list\":[{}],\"database_lsn\":\"{}\",\"snapshot_mark\":{}}},\"data\":[",
        info.xmin,
        info.xmax,
        info.xip.iter().map(|x| format!("\"{x}\"")).collect::<Vec<_>>().join(","),
        info.wal_lsn,
        mark
    );
    let mut rows = snapshot.rows(&query).await.map_err(failed)?;
    if let Some(s) = start.take() {
        if s.send(Ok(first)).is_err() {
            return Ok(()); // the handler is gone
        }
    }
    let mut n = 0u64;
    while let Some(json) = rows.next().await.map_err(failed)? {
        let mut chunk = String::with_capacity(json.len() + 1);
        if n > 0 {
            chunk.push(',');
        }
        chunk.push_str(&json);
        n += 1;
        if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
            return Ok(()); // the client hung up: `conn` is dropped, closing the transaction
        }
    }
    if tx.send(Ok(Bytes::from_static(b"]}"))).await.is_err() {
        return Ok(());
    }
    snapshot.commit().await.map_err(failed)?;
    conn.release();
    Ok(())
}

/// Parses `col [ASC|DESC] [NULLS FIRST|LAST], …` against the table's columns.
pub fn parse_order_by(text: &str, table: &ferrite_protocol::schema::TableSchema) -> Result<Vec<OrderBy>, String> {
    let mut out = vec![];
    for (name, rest) in split_order_items(text)? {
        let idx = table.column_index(&name).ok_or_else(|| format!("unknown column {name:?} in order_by"))?;
        let words: Vec<String> = rest.split_whitespace().map(|w| w.to_ascii_uppercase()).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (descending, rest) = match words.as_slice() {
            ["DESC", rest @ ..] => (true, rest),
            ["ASC", rest @ ..] => (false, rest),
            rest => (false, rest),
        };
        let nulls_first = match rest {
            [] => None,
            ["NULLS", "FIRST"] => Some(true),
            ["NULLS", "LAST"] => Some(false),
            other => return Err(format!("unsupported order_by clause {:?}", other.join(" "))),
        };
        out.push(OrderBy { column: idx, descending, nulls_first });
    }
    Ok(out)
}

/// Splits an order-by list into (identifier, trailing words) items; identifiers may be quoted.
fn split_order_items(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut items = vec![];
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            name = ferrite_protocol::relation::read_quoted_identifier(&mut chars)
                .ok_or("unterminated quoted identifier in order_by")?;
        } else {
            while let Some(c) = chars.peek().copied() {
                if c.is_alphanumeric() || c == '_' {
                    name.push(c.to_ascii_lowercase());
                    chars.next();
                } else {
                    break;
                }
            }
        }
        if name.is_empty() {
            return Err("order_by must list column names".into());
        }
        let mut rest = String::new();
        let mut more = false;
        for c in chars.by_ref() {
            if c == ',' {
                more = true;
                break;
            }
            rest.push(c);
        }
        if !rest.chars().all(|c| c.is_ascii_alphabetic() || c.is_whitespace()) {
            return Err(format!("unsupported order_by expression near {:?}", rest.trim()));
        }
        items.push((name, rest));
        // A comma promises another item: `id,` is refused below as an empty name.
        if !more {
            return Ok(items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_order_by;
    use ferrite_protocol::relation::QualifiedName;
    use ferrite_protocol::schema::{Column, TableSchema, TypeKind};

    fn table(columns: &[&str]) -> TableSchema {
        let column = |name: &&str| Column {
            name: name.to_string(),
            type_oid: 25,
            type_name: "text".into(),
            base_type_name: "text".into(),
            dims: 0,
            kind: TypeKind::Base,
            typmod: -1,
            pk_index: None,
            not_null: false,
        };
        TableSchema { oid: 1, name: QualifiedName::new("public", "t"), columns: columns.iter().map(column).collect() }
    }

    #[test]
    fn order_by_reads_quoted_and_plain_names_with_their_directions() {
        let t = table(&["id", "Odd \"Name\"", "n"]);
        let order = parse_order_by(r#"ID desc nulls first, "Odd ""Name""" ASC , n"#, &t).unwrap();
        let got: Vec<_> = order.iter().map(|o| (o.column, o.descending, o.nulls_first)).collect();
        assert_eq!(got, vec![(0, true, Some(true)), (1, false, None), (2, false, None)]);
    }

    #[test]
    fn order_by_refuses_what_is_not_a_list_of_columns() {
        let t = table(&["id", "Odd"]);
        for (text, says) in [
            (r#""id"#, "unterminated quoted identifier"),
            ("odd", "unknown column \"odd\""),
            ("id + 1", "unsupported order_by expression"),
            ("id DESC NULLS", "unsupported order_by clause"),
            ("", "order_by must list column names"),
            ("id,", "order_by must list column names"),
        ] {
            let err = parse_order_by(text, &t).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}

//! Initial snapshots and subset snapshots: the SQL that reads a shape's rows from Postgres.
//!
//! Rows are rendered to protocol messages inside Postgres (one text column per row) so the server
//! only copies bytes. Values use each type's output function (`concat(col)`), the same text the
//! replication stream carries, under the session settings `ferrite_pg::connect` applies. The where
//! clause reaches Postgres only as the re-printed tree with bound parameters.

use super::shape::Shape;
use ferrite_core::shape::{json_str, LogMode, ShapeFilter};
use ferrite_protocol::key::key_sql;
use ferrite_protocol::relation::quote_ident;
use ferrite_protocol::snapshot_info::SnapshotInfo;
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::{Client, IsolationLevel};

/// Why a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Postgres refused or the connection broke.
    #[error("snapshot query failed: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// Writing the shape log failed.
    #[error("writing the snapshot failed: {0}")]
    Io(#[from] std::io::Error),
    /// Postgres answered something unexpected.
    #[error("unexpected answer from Postgres: {0}")]
    Protocol(String),
    /// The shape's rows exceed `max_shape_size`.
    #[error("the shape is larger than max_shape_size ({limit} bytes): narrow it with a where clause or fewer columns")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
}

fn text_of(filter: &ShapeFilter, i: usize) -> String {
    let c = quote_ident(&filter.table.columns[i].name);
    format!("(CASE WHEN {c} IS NULL THEN NULL ELSE concat({c}) END)")
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL rendering one row of the shape's table as an insert message. `extra_headers` is appended
/// inside `headers` verbatim (e.g. `,"snapshot_mark":7`).
pub fn row_message_sql(filter: &ShapeFilter, extra_headers: &str) -> String {
    let mut parts = vec![
        "'{\"key\":'".to_string(),
        format!("to_json({})::text", key_sql(&filter.table, |i| text_of(filter, i))),
        "',\"value\":{'".to_string(),
    ];
    for (n, &i) in filter.selected.iter().enumerate() {
        let name = format!("{}{}:", if n > 0 { "," } else { "" }, json_str(&filter.table.columns[i].name));
        parts.push(sql_literal(&name));
        parts.push(format!(
            "(CASE WHEN {c} IS NULL THEN 'null' ELSE to_json({t})::text END)",
            c = quote_ident(&filter.table.columns[i].name),
            t = text_of(filter, i)
        ));
    }
    let tail = format!(
        "}},\"headers\":{{\"operation\":\"insert\",\"relation\":{}{}}}}}",
        filter.relation_json(),
        extra_headers
    );
    parts.push(sql_literal(&tail));
    parts.join(" || ")
}

/// Parses `pg_lsn` text (`16/B374D848`).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Takes the initial snapshot of `shape` into its log, then splices in the stream transactions
/// buffered meanwhile. Returns the snapshot's visibility info (persisted by the caller).
/// `rows_written` counts the rows as they reach the shape log (the `snapshot_rows_total` metric).
pub async fn take_initial_snapshot(
    client: &mut Client,
    shape: &Shape,
    chunk_bytes: u64,
    max_shape_bytes: u64,
    rows_written: &std::sync::atomic::AtomicU64,
) -> Result<SnapshotInfo, SnapshotError> {
    let txn =
        client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
    let info = current_snapshot(&txn).await?;
    let filter = &shape.filter;
    // Rows go to the log in batches (one write each); the log closes chunks where they fill up.
    // A batch is at most a chunk, so each chunk becomes readable soon after it fills.
    let batch_limit = chunk_bytes.clamp(1, 64 * 1024) as usize;
    let mut batch: Vec<String> = Vec::new();
    let mut batch_bytes = 0usize;
    if shape.definition.log == LogMode::Full {
        let (where_sql, params) = match &filter.where_clause {
            Some(w) => {
                let (sql, params) = w.to_sql(1);
                (format!(" WHERE {sql}"), params)
            }
            None => (String::new(), vec![]),
        };
        let sql = format!("SELECT {} FROM {}{}", row_message_sql(filter, ""), filter.table.name.quoted(), where_sql);
        let rows = txn.query_raw(sql.as_str(), params.iter()).await?;
        pin_mut!(rows);
        let mut count = 0u64;
        let mut total_bytes = 0u64;
        while let Some(row) = rows.try_next().await? {
            let json: String = row.try_get(0)?;
            total_bytes += json.len() as u64;
            if max_shape_bytes > 0 && total_bytes > max_shape_bytes {
                return Err(SnapshotError::TooLarge { limit: max_shape_bytes });
            }
            batch_bytes += json.len();
            batch.push(json);
            count += 1;
            if batch_bytes >= batch_limit {
                write_rows(shape, &batch)?;
                rows_written.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                batch.clear();
                batch_bytes = 0;
            }
            if count.is_multiple_of(100_000) {
                tracing::info!(handle = %shape.handle, rows = count, "snapshot in progress");
            }
        }
    }
    txn.commit().await?;
    rows_written.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
    batch.push(ferrite_protocol::messages::snapshot_end(&info));
    write_rows(shape, &batch)?;
    shape.log.close_snapshot_chunk()?;
    shape.finish_snapshot(info.clone())?;
    shape.log.sync(true)?;
    Ok(info)
}

/// Appends snapshot rows; when that closed a chunk, makes it durable so readers can have it.
fn write_rows(shape: &Shape, rows: &[String]) -> std::io::Result<()> {
    let rows: Vec<&[u8]> = rows.iter().map(|r| r.as_bytes()).collect();
    if shape.log.append_snapshot(&rows)? {
        shape.log.sync(true)?;
    }
    Ok(())
}

/// A subset request (progressive loading): extra where, order, limit and offset on a shape.
#[derive(Debug, Clone, Default)]
pub struct SubsetQuery {
    /// Compiled subset where clause, ANDed with the shape's.
    pub where_clause: Option<ferrite_where::WhereClause>,
    /// `ORDER BY` items: (column index, descending, nulls first).
    pub order_by: Vec<(usize, bool, Option<bool>)>,
    /// `LIMIT`.
    pub limit: Option<u64>,
    /// `OFFSET`.
    pub offset: Option<u64>,
}

/// The `SELECT` of a subset query (one row message per row, `snapshot_mark` in each row's
/// headers) and its parameters.
pub fn subset_sql(filter: &ShapeFilter, q: &SubsetQuery, mark: u32) -> (String, Vec<Option<String>>) {
    let mut params: Vec<Option<String>> = vec![];
    let mut conds = vec![];
    for w in [filter.where_clause.as_ref(), q.where_clause.as_ref()].into_iter().flatten() {
        let (sql, p) = w.to_sql(params.len() + 1);
        conds.push(format!("({sql})"));
        params.extend(p);
    }
    let mut sql = format!(
        "SELECT {} AS row FROM {}",
        row_message_sql(filter, &format!(",\"snapshot_mark\":{mark}")),
        filter.table.name.quoted()
    );
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    if !q.order_by.is_empty() {
        let items: Vec<String> = q
            .order_by
            .iter()
            .map(|(i, desc, nulls_first)| {
                let mut s = quote_ident(&filter.table.columns[*i].name);
                if *desc {
                    s.push_str(" DESC");
                }
                match nulls_first {
                    Some(true) => s.push_str(" NULLS FIRST"),
                    Some(false) => s.push_str(" NULLS LAST"),
                    None => {}
                }
                s
            })
            .collect();
        sql.push_str(" ORDER BY ");
        sql.push_str(&items.join(", "));
    }
    if let Some(l) = q.limit {
        sql.push_str(&format!(" LIMIT {l}"));
    }
    if let Some(o) = q.offset {
        sql.push_str(&format!(" OFFSET {o}"));
    }
    (sql, params)
}

/// The visibility of the snapshot of the transaction running on `client` (its first query
/// fixes a REPEATABLE READ snapshot).
pub async fn current_snapshot(client: &impl tokio_postgres::GenericClient) -> Result<SnapshotInfo, SnapshotError> {
    let row = client.query_one("SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text", &[]).await?;
    let snap: &str = row.get(0);
    let lsn: &str = row.get(1);
    let lsn = parse_lsn(lsn).ok_or_else(|| SnapshotError::Protocol(format!("bad lsn {lsn:?}")))?;
    SnapshotInfo::parse(snap, lsn).ok_or_else(|| SnapshotError::Protocol(format!("bad snapshot {snap:?}")))
}

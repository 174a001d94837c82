//! Initial snapshots: a shape's rows, read from Postgres in one snapshot
//! ([`ferrite_pg::snapshot`]), written to its log in batches, then spliced with the stream
//! transactions buffered meanwhile.

use super::shape::Shape;
use ferrite_core::shape::LogMode;
use ferrite_core::tags::Tagger;
use ferrite_pg::row_query::RowQuery;
use ferrite_pg::snapshot::Snapshot;
use ferrite_pg::PgError;
use ferrite_protocol::digest::Digest;
use ferrite_protocol::snapshot_info::SnapshotInfo;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_postgres::Client;

/// Why a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Postgres refused, answered something unexpected, or the connection broke.
    #[error("snapshot query failed: {0}")]
    Postgres(#[from] PgError),
    /// Writing the shape log failed.
    #[error("writing the snapshot failed: {0}")]
    Io(#[from] std::io::Error),
    /// The shape's rows exceed `max_shape_size`.
    #[error("the shape is larger than max_shape_size ({limit} bytes): narrow it with a where clause or fewer columns")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
}

/// Takes the initial snapshot of `shape` into its log, then splices in the stream transactions
/// buffered meanwhile. Returns the snapshot's visibility info (persisted by the caller).
/// `rows_written` counts the rows as they reach the shape log (the `snapshot_rows_total` metric).
pub async fn take_initial_snapshot(
    client: &Client,
    shape: &Shape,
    chunk_bytes: u64,
    max_shape_bytes: u64,
    rows_written: &AtomicU64,
) -> Result<SnapshotInfo, SnapshotError> {
    let snapshot = Snapshot::begin(client, None).await?;
    let info = snapshot.info().clone();
    let mut batches = Batches::new(shape, chunk_bytes, max_shape_bytes, rows_written);
    // The snapshot's convergence digest, row by row as Postgres renders them.
    let mut digest = shape.keeps_digest().then(Digest::default);
    if shape.definition.log == LogMode::Full {
        let mut rows = snapshot.rows(&RowQuery::shape(&shape.filter)).await?;
        while let Some(json) = rows.next().await? {
            if let Some(d) = digest.as_mut() {
                match shape.filter.snapshot_row_hash(&json) {
                    Some(h) => d.add(h),
                    // (Never: Postgres renders every row as a message.)
                    None => digest = None,
                }
            }
            batches.push(json)?;
        }
    }
    snapshot.commit().await?;
    batches.finish(&info, digest.as_ref())?;
    shape.start_digest(digest);
    shape.finish_snapshot(info.clone())?;
    shape.log.sync(true)?;
    Ok(info)
}

/// Takes the initial snapshot of a relational shape: in one snapshot, the results of its
/// subqueries (which seed what its clients know, [`super::relational::Links::seed`]) and its
/// rows, rendered here with their tags. The caller then completes the log and applies the
/// transactions queued meanwhile ([`super::relational::Links::finish_loading`]).
pub async fn take_relational_snapshot(
    client: &Client,
    shape: &Shape,
    chunk_bytes: u64,
    max_shape_bytes: u64,
    rows_written: &AtomicU64,
) -> Result<SnapshotInfo, SnapshotError> {
    let links = shape.links.as_ref().expect("a relational shape");
    let tagger = Tagger::new(&shape.filter, &shape.tag_salt).expect("a relational shape has conditions");
    let snapshot = Snapshot::begin(client, None).await?;
    let info = snapshot.info().clone();
    let queries: Vec<RowQuery> =
        links.lock().subqueries().map(|q| RowQuery::values(&q.table, q.filter.as_ref(), None, &[])).collect();
    // The shape's time (set by the caller), for its rows and their next boundary.
    let now = links.lock().now();
    let mut total_bytes = 0u64;
    let mut too_large = |bytes: u64| {
        total_bytes += bytes;
        max_shape_bytes > 0 && total_bytes > max_shape_bytes
    };
    let mut results = Vec::with_capacity(queries.len());
    for query in &queries {
        let mut rows = snapshot.rows(query).await?;
        let mut result = Vec::new();
        while let Some(row) = rows.values().await? {
            if too_large(row_bytes(&row)) {
                return Err(SnapshotError::TooLarge { limit: max_shape_bytes });
            }
            result.push(row);
        }
        results.push(result);
    }
    let known = links.lock().seed(results);
    let mut batches = Batches::new(shape, chunk_bytes, max_shape_bytes, rows_written);
    // The subqueries' results count against the same limit.
    batches.total = total_bytes;
    if shape.definition.log == LogMode::Full {
        let query = RowQuery::values(&shape.filter.table, shape.filter.where_clause.as_ref(), now, &[]);
        let mut rows = snapshot.rows(&query).await?;
        while let Some(row) = rows.values().await? {
            let conditions = tagger.conditions();
            if conditions.holds(&conditions.active(&row, &known)) {
                batches.push(tagger.row(&row, &known, false))?;
            }
        }
    }
    if let Some(now) = now {
        let due = next_boundary(&snapshot, &shape.filter, now).await?;
        links.lock().set_due(due);
    }
    snapshot.commit().await?;
    batches.finish(&info, None)?;
    Ok(info)
}

/// The first instant after `after` at which a row of the shape's table may cross one of its
/// time boundaries, as the rows stand in `snapshot` (one `min()` per time term, which an index
/// on the compared column answers without a scan); `None` when none ever will.
pub async fn next_boundary(
    snapshot: &Snapshot<'_>,
    filter: &ferrite_core::shape::ShapeFilter,
    after: i64,
) -> Result<Option<i64>, PgError> {
    let Some(clause) = filter.where_clause.as_ref() else { return Ok(None) };
    let terms = &filter.time_terms;
    let mut due: Option<i64> = None;
    for (i, term) in terms.iter().enumerate() {
        let Some(query) = RowQuery::next_change(&filter.table, clause, terms, i, after) else { continue };
        let mut rows = snapshot.rows(&query).await?;
        while let Some(row) = rows.values().await? {
            let next = row.first().cloned().flatten().and_then(|v| term.next_change_of_text(&v, after));
            due = match (due, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    Ok(due)
}

/// What a row read as column texts counts against `max_shape_size`: its texts, and four bytes
/// per column (NULLs included), for the subqueries' results and the rows of move-ins alike.
pub fn row_bytes(row: &[Option<String>]) -> u64 {
    row.iter().map(|v| v.as_ref().map_or(4, |v| v.len() as u64 + 4)).sum()
}

/// Snapshot rows on their way to the log, in batches of at most a chunk (one write each): the
/// log closes chunks where they fill up, so each becomes readable soon after. Bounded by
/// `max_shape_size`; counted in the `snapshot_rows_total` metric as they are written.
struct Batches<'a> {
    shape: &'a Shape,
    limit: usize,
    max_bytes: u64,
    total: u64,
    count: u64,
    rows: Vec<String>,
    bytes: usize,
    written: &'a AtomicU64,
}

impl<'a> Batches<'a> {
    fn new(shape: &'a Shape, chunk_bytes: u64, max_bytes: u64, written: &'a AtomicU64) -> Batches<'a> {
        let limit = chunk_bytes.clamp(1, 64 * 1024) as usize;
        Batches { shape, limit, max_bytes, total: 0, count: 0, rows: Vec::new(), bytes: 0, written }
    }

    fn push(&mut self, json: String) -> Result<(), SnapshotError> {
        self.total += json.len() as u64;
        if self.max_bytes > 0 && self.total > self.max_bytes {
            return Err(SnapshotError::TooLarge { limit: self.max_bytes });
        }
        self.bytes += json.len();
        self.rows.push(json);
        self.count += 1;
        if self.bytes >= self.limit {
            self.write()?;
        }
        if self.count.is_multiple_of(100_000) {
            tracing::info!(handle = %self.shape.handle, rows = self.count, "snapshot in progress");
        }
        Ok(())
    }

    fn write(&mut self) -> std::io::Result<()> {
        write_rows(self.shape, &self.rows)?;
        self.written.fetch_add(self.rows.len() as u64, Ordering::Relaxed);
        self.rows.clear();
        self.bytes = 0;
        Ok(())
    }

    /// Writes the last rows with the `snapshot-end` message (carrying the snapshot's `digest`)
    /// and closes the snapshot's chunk.
    fn finish(mut self, info: &SnapshotInfo, digest: Option<&Digest>) -> std::io::Result<()> {
        self.written.fetch_add(self.rows.len() as u64, Ordering::Relaxed);
        self.rows.push(ferrite_protocol::messages::snapshot_end(info, digest));
        write_rows(self.shape, &self.rows)?;
        self.shape.log.close_snapshot_chunk()
    }
}

/// Appends snapshot rows; when that closed a chunk, makes it durable so readers can have it.
fn write_rows(shape: &Shape, rows: &[String]) -> std::io::Result<()> {
    let rows: Vec<&[u8]> = rows.iter().map(|r| r.as_bytes()).collect();
    if shape.log.append_snapshot(&rows)? {
        shape.log.sync(true)?;
    }
    Ok(())
}

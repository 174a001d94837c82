//! Reading rows in one consistent snapshot: a read-only REPEATABLE READ transaction, and the
//! visibility of its snapshot (`pg_current_snapshot()` and `pg_current_wal_insert_lsn()`), which
//! tells the server which streamed transactions the rows already contain
//! ([`SnapshotInfo::contains`]). Shapes' initial snapshots and subset snapshots both read this
//! way; what they read is a [`RowQuery`].

use crate::replication::parse_lsn;
use crate::row_query::RowQuery;
use crate::PgError;
use ferrite_protocol::snapshot_info::SnapshotInfo;
use futures_util::TryStreamExt;
use std::pin::Pin;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// How long a snapshot's queries wait for a lock on a table they read (see [`Snapshot::begin`]).
pub const SNAPSHOT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// An open read-only REPEATABLE READ transaction and its snapshot's visibility.
///
/// End it with [`Snapshot::commit`]. Dropped any other way, the transaction stays open on the
/// connection, so the caller must then close the connection rather than reuse it (the server's
/// pool closes every connection that is not explicitly released).
pub struct Snapshot<'c> {
    client: &'c Client,
    info: SnapshotInfo,
}

/// How many rows a query returns and the bytes of their messages (see [`Snapshot::count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCount {
    /// Rows, up to the bound asked for plus one.
    pub rows: u64,
    /// Bytes of those rows' message JSON.
    pub bytes: u64,
}

/// The rows of a [`RowQuery`] as Postgres sends them, each a message's JSON text; they are
/// streamed, so only one row at a time is held.
pub struct Rows(Pin<Box<tokio_postgres::RowStream>>);

impl Rows {
    /// The next row's message, `None` after the last.
    pub async fn next(&mut self) -> Result<Option<String>, PgError> {
        match self.0.try_next().await? {
            Some(row) => Ok(Some(row.try_get(0)?)),
            None => Ok(None),
        }
    }

    /// The next row of a [`RowQuery::values`] query: its columns' texts (`None`: NULL).
    pub async fn values(&mut self) -> Result<Option<Vec<Option<String>>>, PgError> {
        match self.0.try_next().await? {
            Some(row) => Ok(Some(row.try_get(0)?)),
            None => Ok(None),
        }
    }
}

/// The WAL position `lsn` as the end of the last record before it. At the start of a page the
/// insert position points past the page's header (24 bytes; 40 at the start of a segment), where
/// the next record will begin; the previous record ended at the page boundary, and a replication
/// stream that has sent everything reports that boundary. Waiting for the stream to reach the
/// header's end would wait for the next record anyone writes — seconds on an idle server.
pub fn record_boundary(lsn: u64, block_size: u64, segment_size: u64) -> u64 {
    const SHORT_PAGE_HEADER: u64 = 24;
    const LONG_PAGE_HEADER: u64 = 40;
    if segment_size > 0 && lsn % segment_size == LONG_PAGE_HEADER {
        lsn - LONG_PAGE_HEADER
    } else if block_size > 0 && lsn % block_size == SHORT_PAGE_HEADER && lsn % segment_size.max(1) != SHORT_PAGE_HEADER
    {
        lsn - SHORT_PAGE_HEADER
    } else {
        lsn
    }
}

impl<'c> Snapshot<'c> {
    /// Begins the transaction on `client` and fixes its snapshot. `statement_timeout` bounds each
    /// statement within it (`None`: the session's setting), so a query that could run long (a
    /// subset over a big table) cannot hold Postgres for ever; it ends with the transaction.
    pub async fn begin(client: &'c Client, statement_timeout: Option<Duration>) -> Result<Snapshot<'c>, PgError> {
        // A bounded wait for locks: a transaction holding an exclusive lock on a table read (an
        // open migration) fails the snapshot after SNAPSHOT_LOCK_TIMEOUT — the server answers
        // 503 + retry-after — instead of holding the request and a pooled connection for ever.
        let mut begin = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL lock_timeout = {}",
            SNAPSHOT_LOCK_TIMEOUT.as_millis()
        );
        if let Some(t) = statement_timeout {
            begin.push_str(&format!("; SET LOCAL statement_timeout = {}", t.as_millis()));
        }
        client.batch_execute(&begin).await?;
        // The first query fixes the REPEATABLE READ snapshot: this one, so the visibility
        // recorded is the snapshot's own.
        let row = client
            .query_one(
                "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text, \
                 current_setting('wal_block_size')::int8, pg_size_bytes(current_setting('wal_segment_size'))",
                &[],
            )
            .await?;
        let snapshot: &str = row.try_get(0)?;
        let lsn: &str = row.try_get(1)?;
        let lsn = parse_lsn(lsn).ok_or_else(|| PgError::Protocol(format!("bad lsn {lsn:?}")))?;
        let (block, segment): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
        let lsn = record_boundary(lsn, block as u64, segment as u64);
        let info = SnapshotInfo::parse(snapshot, lsn)
            .ok_or_else(|| PgError::Protocol(format!("bad snapshot {snapshot:?}")))?;
        Ok(Snapshot { client, info })
    }

    /// The snapshot's visibility: which transactions its rows contain.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// Runs `query` in the snapshot; its rows arrive as they are read.
    pub async fn rows(&self, query: &RowQuery) -> Result<Rows, PgError> {
        let stream = self.client.query_raw(query.sql(), query.params().iter()).await?;
        Ok(Rows(Box::pin(stream)))
    }

    /// Counts `query`'s rows and the bytes of their messages, reading no further than
    /// `at_most + 1` rows: enough to refuse an answer that would be too big before sending any
    /// of it.
    pub async fn count(&self, query: &RowQuery, at_most: u64) -> Result<RowCount, PgError> {
        let count = query.bounded_count(at_most);
        let params: Vec<&(dyn ToSql + Sync)> = count.params().iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let row = self.client.query_one(count.sql(), &params).await?;
        let (rows, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(RowCount { rows: rows.max(0) as u64, bytes: bytes.max(0) as u64 })
    }

    /// Commits the (read-only) transaction: the connection is clean again.
    pub async fn commit(self) -> Result<(), PgError> {
        self.client.batch_execute("COMMIT").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::record_boundary;

    const BLOCK: u64 = 8192;
    const SEGMENT: u64 = 16 * 1024 * 1024;

    #[test]
    fn a_position_just_past_a_page_header_is_the_page_boundary() {
        // Page 3291 starts at 26,959,872: the insert position after its short header.
        assert_eq!(record_boundary(26_959_896, BLOCK, SEGMENT), 26_959_872);
        // A segment starts with the long header.
        assert_eq!(record_boundary(2 * SEGMENT + 40, BLOCK, SEGMENT), 2 * SEGMENT);
        // Anywhere else the position stands.
        for lsn in [26_959_824, 26_959_880, 26_959_872, 2 * SEGMENT + 24, 2 * SEGMENT] {
            assert_eq!(record_boundary(lsn, BLOCK, SEGMENT), lsn, "{lsn}");
        }
    }
}

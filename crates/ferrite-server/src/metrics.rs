//! Server metrics, rendered in Prometheus text format at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters and gauges updated by the replication driver and the HTTP layer.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Transactions received from the replication stream.
    pub transactions: AtomicU64,
    /// Row changes received.
    pub changes: AtomicU64,
    /// Messages appended to shape logs.
    pub log_messages: AtomicU64,
    /// Shape logs synced to disk.
    pub log_syncs: AtomicU64,
    /// Commit LSN of the last processed transaction.
    pub last_commit_lsn: AtomicU64,
    /// LSN confirmed to Postgres (durable in every shape log).
    pub confirmed_lsn: AtomicU64,
    /// Postgres's current WAL position at the last check.
    pub server_wal_lsn: AtomicU64,
    /// WAL retained by the slot (bytes), at the last check.
    pub retained_wal_bytes: AtomicU64,
    /// Replication (re)connections.
    pub replication_connects: AtomicU64,
    /// 1 while the replication stream is connected.
    pub replication_connected: AtomicI64,
    /// Shape requests answered, by kind.
    pub requests_initial: AtomicU64,
    /// Non-initial shape requests.
    pub requests_catchup: AtomicU64,
    /// Live (long-poll and SSE) requests.
    pub requests_live: AtomicU64,
    /// Requests refused by admission control.
    pub requests_rejected: AtomicU64,
    /// Live requests currently waiting.
    pub live_waiting: AtomicI64,
    /// Shapes created.
    pub shapes_created: AtomicU64,
    /// Rows written by initial snapshots.
    pub snapshot_rows: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition. `shapes` is the current shape count.
    pub fn render(&self, shapes: usize) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, v: i128| {
            let _ = writeln!(out, "# HELP ferrite_{name} {help}\n# TYPE ferrite_{name} {kind}\nferrite_{name} {v}");
        };
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as i128;
        counter("replication_transactions_total", "Transactions received from Postgres.", "counter", g(&self.transactions));
        counter("replication_changes_total", "Row changes received from Postgres.", "counter", g(&self.changes));
        counter("shape_log_messages_total", "Messages appended to shape logs.", "counter", g(&self.log_messages));
        counter("shape_log_syncs_total", "Shape log fsyncs.", "counter", g(&self.log_syncs));
        counter("replication_last_commit_lsn", "Commit LSN of the last processed transaction.", "gauge", g(&self.last_commit_lsn));
        counter("replication_confirmed_lsn", "LSN confirmed to Postgres.", "gauge", g(&self.confirmed_lsn));
        let wal = g(&self.server_wal_lsn);
        let lag = if wal > 0 { (wal - g(&self.confirmed_lsn)).max(0) } else { 0 };
        counter("replication_lag_bytes", "Postgres WAL position minus the confirmed LSN.", "gauge", lag);
        counter("replication_retained_wal_bytes", "WAL retained by Ferrite's slot.", "gauge", g(&self.retained_wal_bytes));
        counter("replication_connects_total", "Replication (re)connections.", "counter", g(&self.replication_connects));
        counter("replication_connected", "1 while the replication stream is connected.", "gauge", self.replication_connected.load(Ordering::Relaxed) as i128);
        counter("shape_requests_initial_total", "Shape requests at offset -1.", "counter", g(&self.requests_initial));
        counter("shape_requests_catchup_total", "Non-live shape requests after the first.", "counter", g(&self.requests_catchup));
        counter("shape_requests_live_total", "Live shape requests (long-poll and SSE).", "counter", g(&self.requests_live));
        counter("shape_requests_rejected_total", "Shape requests refused by admission control.", "counter", g(&self.requests_rejected));
        counter("live_requests_waiting", "Live requests currently held open.", "gauge", self.live_waiting.load(Ordering::Relaxed) as i128);
        counter("shapes", "Shapes currently registered.", "gauge", shapes as i128);
        counter("shapes_created_total", "Shapes created.", "counter", g(&self.shapes_created));
        counter("snapshot_rows_total", "Rows written by initial snapshots.", "counter", g(&self.snapshot_rows));
        out
    }
}

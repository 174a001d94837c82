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
    /// Of those, the ones made durable through the storage journal (one journal record each
    /// instead of an fsync of the log).
    pub journal_records: AtomicU64,
    /// Commit LSN of the last processed transaction.
    pub last_commit_lsn: AtomicU64,
    /// LSN confirmed to Postgres (durable in every shape log).
    pub confirmed_lsn: AtomicU64,
    /// Postgres's current WAL position at the last check.
    pub server_wal_lsn: AtomicU64,
    /// WAL retained by the slot (bytes), at the last check.
    pub retained_wal_bytes: AtomicU64,
    /// WAL that may still be written before Postgres may invalidate the slot (bytes; -1 when
    /// `max_slot_wal_keep_size` is unlimited), at the last check.
    pub slot_safe_wal_bytes: AtomicI64,
    /// Times the slot was found invalidated and made anew (every shape started over).
    pub slot_invalidations: AtomicU64,
    /// Writes to the data directory that failed (shape logs, their chunk files, the storage
    /// journal, new shapes' files), whatever the reason.
    pub storage_write_errors: AtomicU64,
    /// 1 while writes fail because the data directory's filesystem is full (`ENOSPC`): the
    /// replication stream is paused, not confirmed, and retried every second until space returns.
    pub storage_full: AtomicI64,
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
    /// Live response bodies built from a shape log's tail (the messages of one sync): once per
    /// change and kind of body, however many readers were waiting for it.
    pub live_bodies_built: AtomicU64,
    /// Live responses answered with a body built before for another reader of the same change
    /// (what building once per change saves; with `live_bodies_built`, the sharing ratio).
    pub live_bodies_shared: AtomicU64,
    /// Shape logs replayed to answer `GET /v1/shape/digest` (see
    /// [`crate::shapes::replayed_digest`]).
    pub digest_replays: AtomicU64,
    /// `GET /v1/shape/digest` answers served from the kept answers of earlier replays.
    pub digest_replays_cached: AtomicU64,
    /// Presence long-polls currently waiting for a room to change.
    pub presence_waiting: AtomicI64,
    /// Shapes created.
    pub shapes_created: AtomicU64,
    /// Rows written by initial snapshots.
    pub snapshot_rows: AtomicU64,
    /// Client transactions by outcome: applied, merged, rejected.
    pub writes_applied: AtomicU64,
    /// See `writes_applied`.
    pub writes_merged: AtomicU64,
    /// See `writes_applied`.
    pub writes_rejected: AtomicU64,
    /// Engine-added latency of live delivery: from a transaction's arrival from Postgres to a
    /// live response carrying it being handed to the HTTP layer.
    pub live_delivery: Histogram,
    /// Move-ins completed by relational shapes (rows read because a subquery's result gained
    /// values).
    pub move_ins: AtomicU64,
    /// How long move-in queries take, snapshot to last row.
    pub move_in_time: Histogram,
    /// Transactions handed to relational shapes (one per shape a transaction was routed to).
    pub relational_offers: AtomicU64,
    /// Cluster: presence changes of local members sent to the other nodes.
    pub presence_relayed: AtomicU64,
    /// Cluster: presence changes received from other nodes.
    pub presence_received: AtomicU64,
    /// Cluster: other nodes heard from (heartbeats) within the node timeout.
    pub cluster_nodes_seen: AtomicI64,
    /// Cluster: 1 while this node leads (holds the lock, follows the slot).
    pub cluster_leader: AtomicI64,
    /// Cluster: shape reads this node (a follower) passed to the leader.
    pub cluster_forwarded: AtomicU64,
    /// Cluster: messages this node (leading) appended to the shape stream.
    pub cluster_stream_published: AtomicU64,
    /// Cluster: this node's place in the shape stream: the last message it applied while
    /// following, or appended while leading.
    pub cluster_stream_seq: AtomicU64,
    /// Cluster: shape-stream messages refused as malformed.
    pub cluster_stream_rejected: AtomicU64,
}

/// What relational shapes hold right now (see [`crate::shapes::relational`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RelationalStats {
    /// Shapes whose where clause has subqueries.
    pub shapes: usize,
    /// Live subquery results they share (dependency nodes: one per distinct subquery, whatever
    /// the number of shapes asking it; deep subqueries, read again from Postgres, have none).
    pub dependency_nodes: usize,
    /// Rows of those results.
    pub dependency_rows: usize,
    /// Shapes reading rows that move in right now.
    pub moving_in: usize,
    /// Transactions waiting for a snapshot or a move-in to finish.
    pub queued_transactions: usize,
}

/// One unit of a gauge, held for as long as what it counts lasts: taken by [`Held::new`], given
/// back when dropped — also when a request's future is dropped half way (the client hung up).
pub struct Held<'a>(&'a AtomicI64);

impl<'a> Held<'a> {
    /// Adds one to `gauge` until the returned value is dropped.
    pub fn new(gauge: &'a AtomicI64) -> Held<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Held(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Postgres's WAL position minus the confirmed LSN at the last check (0 before one).
    pub fn replication_lag_bytes(&self) -> u64 {
        let wal = self.server_wal_lsn.load(Ordering::Relaxed);
        if wal == 0 {
            return 0;
        }
        wal.saturating_sub(self.confirmed_lsn.load(Ordering::Relaxed))
    }

    /// Counts one client transaction's outcome.
    pub fn count_write_result(&self, status: ferrite_protocol::write_protocol::Status) {
        use ferrite_protocol::write_protocol::Status;
        let c = match status {
            Status::Applied => &self.writes_applied,
            Status::Merged => &self.writes_merged,
            Status::Rejected => &self.writes_rejected,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition. `shapes` is the current shape count, `relational` what
    /// relational shapes hold.
    pub fn render(&self, shapes: usize, relational: RelationalStats) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, v: i128| {
            let _ = writeln!(out, "# HELP ferrite_{name} {help}\n# TYPE ferrite_{name} {kind}\nferrite_{name} {v}");
        };
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as i128;
        counter(
            "replication_transactions_total",
            "Transactions received from Postgres.",
            "counter",
            g(&self.transactions),
        );
        counter("replication_changes_total", "Row changes received from Postgres.", "counter", g(&self.changes));
        counter("shape_log_messages_total", "Messages appended to shape logs.", "counter", g(&self.log_messages));
        counter(
            "shape_log_syncs_total",
            "Shape logs made durable (fsynced or journaled).",
            "counter",
            g(&self.log_syncs),
        );
        counter(
            "shape_log_journal_records_total",
            "Shape logs made durable through the storage journal instead of an fsync each.",
            "counter",
            g(&self.journal_records),
        );
        counter(
            "replication_last_commit_lsn",
            "Commit LSN of the last processed transaction.",
            "gauge",
            g(&self.last_commit_lsn),
        );
        counter("replication_confirmed_lsn", "LSN confirmed to Postgres.", "gauge", g(&self.confirmed_lsn));
        counter(
            "replication_lag_bytes",
            "Postgres WAL position minus the confirmed LSN.",
            "gauge",
            self.replication_lag_bytes() as i128,
        );
        counter(
            "replication_retained_wal_bytes",
            "WAL retained by Ferrite's slot.",
            "gauge",
            g(&self.retained_wal_bytes),
        );
        counter(
            "replication_slot_safe_wal_bytes",
            "WAL that may still be written before Postgres may invalidate Ferrite's slot (max_slot_wal_keep_size); -1 when unlimited.",
            "gauge",
            self.slot_safe_wal_bytes.load(Ordering::Relaxed) as i128,
        );
        counter(
            "replication_slot_invalidations_total",
            "Times Ferrite found its slot invalidated by Postgres and made a new one (every shape started over).",
            "counter",
            g(&self.slot_invalidations),
        );
        counter(
            "storage_write_errors_total",
            "Writes to the data directory that failed (shape logs, the storage journal, new shapes' files).",
            "counter",
            g(&self.storage_write_errors),
        );
        counter(
            "storage_full",
            "1 while writes to the data directory fail for lack of space: replication is paused (not confirmed) until space returns.",
            "gauge",
            self.storage_full.load(Ordering::Relaxed) as i128,
        );
        counter("replication_connects_total", "Replication (re)connections.", "counter", g(&self.replication_connects));
        counter(
            "replication_connected",
            "1 while the replication stream is connected.",
            "gauge",
            self.replication_connected.load(Ordering::Relaxed) as i128,
        );
        counter("shape_requests_initial_total", "Shape requests at offset -1.", "counter", g(&self.requests_initial));
        counter(
            "shape_requests_catchup_total",
            "Non-live shape requests after the first.",
            "counter",
            g(&self.requests_catchup),
        );
        counter(
            "shape_requests_live_total",
            "Live shape requests (long-poll and SSE).",
            "counter",
            g(&self.requests_live),
        );
        counter(
            "shape_requests_rejected_total",
            "Shape requests refused by admission control.",
            "counter",
            g(&self.requests_rejected),
        );
        counter(
            "live_requests_waiting",
            "Live requests currently held open.",
            "gauge",
            self.live_waiting.load(Ordering::Relaxed) as i128,
        );
        counter(
            "live_response_bodies_built_total",
            "Live response bodies built from the messages of one shape-log sync (once per change and kind of body).",
            "counter",
            g(&self.live_bodies_built),
        );
        counter(
            "live_response_bodies_shared_total",
            "Live responses answered with a body already built for another reader of the same change.",
            "counter",
            g(&self.live_bodies_shared),
        );
        counter(
            "digest_replays_total",
            "Shape logs replayed to compute a convergence digest on demand (GET /v1/shape/digest).",
            "counter",
            g(&self.digest_replays),
        );
        counter(
            "digest_replays_cached_total",
            "GET /v1/shape/digest answers served from an earlier replay at the same handle and offset.",
            "counter",
            g(&self.digest_replays_cached),
        );
        counter(
            "presence_requests_waiting",
            "Presence long-polls currently waiting for their room to change.",
            "gauge",
            self.presence_waiting.load(Ordering::Relaxed) as i128,
        );
        counter(
            "cluster_presence_relayed_total",
            "Presence changes of this node's members sent to the other nodes of the cluster.",
            "counter",
            g(&self.presence_relayed),
        );
        counter(
            "cluster_presence_received_total",
            "Presence changes received from other nodes of the cluster.",
            "counter",
            g(&self.presence_received),
        );
        counter(
            "cluster_nodes_seen",
            "Other nodes of the cluster whose heartbeat arrived within the node timeout.",
            "gauge",
            self.cluster_nodes_seen.load(Ordering::Relaxed) as i128,
        );
        counter(
            "cluster_forwarded_requests_total",
            "Shape reads this node passed to the cluster's leader while following.",
            "counter",
            g(&self.cluster_forwarded),
        );
        counter(
            "cluster_stream_published_total",
            "Messages this node appended to the cluster's shape stream while leading.",
            "counter",
            g(&self.cluster_stream_published),
        );
        counter(
            "cluster_stream_seq",
            "This node's place in the shape stream: the last message it applied (following) or appended (leading).",
            "gauge",
            g(&self.cluster_stream_seq),
        );
        counter(
            "cluster_stream_rejected_total",
            "Shape-stream messages this node refused as malformed (its copy may differ).",
            "counter",
            g(&self.cluster_stream_rejected),
        );
        counter(
            "cluster_leader",
            "1 while this node leads its cluster (holds the lock and follows the slot).",
            "gauge",
            self.cluster_leader.load(Ordering::Relaxed) as i128,
        );
        counter("shapes", "Shapes currently registered.", "gauge", shapes as i128);
        counter("shapes_created_total", "Shapes created.", "counter", g(&self.shapes_created));
        counter("snapshot_rows_total", "Rows written by initial snapshots.", "counter", g(&self.snapshot_rows));
        counter(
            "client_transactions_applied_total",
            "Client transactions applied as sent.",
            "counter",
            g(&self.writes_applied),
        );
        counter(
            "client_transactions_merged_total",
            "Client transactions committed with some values kept by the conflict policy.",
            "counter",
            g(&self.writes_merged),
        );
        counter(
            "client_transactions_rejected_total",
            "Client transactions rejected.",
            "counter",
            g(&self.writes_rejected),
        );
        counter("relational_shapes", "Shapes whose where clause has subqueries.", "gauge", relational.shapes as i128);
        counter(
            "dependency_nodes",
            "Live subquery results kept for relational shapes, one per distinct subquery (shared by the shapes asking it).",
            "gauge",
            relational.dependency_nodes as i128,
        );
        counter("dependency_rows", "Rows of those results.", "gauge", relational.dependency_rows as i128);
        counter(
            "move_ins_pending",
            "Relational shapes reading rows that move in.",
            "gauge",
            relational.moving_in as i128,
        );
        counter(
            "move_in_queued_transactions",
            "Transactions waiting for a relational shape's snapshot or move-in.",
            "gauge",
            relational.queued_transactions as i128,
        );
        counter("move_ins_total", "Move-ins completed.", "counter", g(&self.move_ins));
        counter(
            "relational_offers_total",
            "Transactions handed to relational shapes (one per shape a transaction was routed to).",
            "counter",
            g(&self.relational_offers),
        );
        self.live_delivery.render(
            &mut out,
            "ferrite_live_delivery_seconds",
            "From a transaction's arrival from Postgres to a live response carrying it.",
        );
        self.move_in_time.render(
            &mut out,
            "ferrite_move_in_query_seconds",
            "How long a move-in's query takes, snapshot to last row.",
        );
        out
    }
}

/// A latency histogram with log-spaced buckets (50 µs × 1.25ⁿ up to 10 s, about 12% apart),
/// fine enough to read medians and tails from, cheap enough to update on every response.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending.
    bounds: Vec<f64>,
    /// Count per bucket; the last one is `+Inf`.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        let mut bounds = vec![];
        let mut b = 50e-6;
        while b < 10.0 {
            bounds.push(b);
            b *= 1.25;
        }
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, counts, sum_micros: AtomicU64::new(0) }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < secs);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Forgets all observations (benchmarks use it to measure one phase).
    pub fn reset(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
        self.sum_micros.store(0, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile in seconds, interpolated within its bucket (NaN when empty).
    pub fn quantile(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 && (seen + c) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let hi = *self.bounds.get(i).unwrap_or(&(lo * 1.25));
                return lo + (hi - lo) * ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
            }
            seen += c;
        }
        *self.bounds.last().unwrap()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(b) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{b:.6}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_quantiles_fall_in_the_right_bucket() {
        let h = Histogram::default();
        assert!(h.quantile(0.5).is_nan());
        for ms in 1..=100u64 {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5) * 1000.0;
        let p99 = h.quantile(0.99) * 1000.0;
        assert!((44.0..=56.0).contains(&p50), "p50 {p50}");
        assert!((88.0..=112.0).contains(&p99), "p99 {p99}");
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 100"), "{out}");
        assert!(out.contains("x_seconds_count 100"));
    }
}

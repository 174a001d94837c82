//! The replication driver: follows Ferrite's slot, routes each transaction to its shapes, makes
//! the touched shape logs durable, and only then confirms the LSN to Postgres.
//!
//! Reconnects with backoff when Postgres restarts or the network drops. Replay after a restart is
//! idempotent: shapes skip transactions at or below the last one their log holds, and those their
//! initial snapshot already contains.

use crate::shapes::relational::{ChangeKind, OwnedChange, QueuedTxn};
use crate::shapes::shape::ShapeRef;
use crate::state::AppState;
use ferrite_core::shape::{PendingMessage, RowChange};
use ferrite_pg::replication::{Change, Relation, ReplicationConfig, Transaction};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Transactions routed before the touched logs are synced and the LSN confirmed.
const MAX_BATCH: usize = 512;
/// Above this many dirty logs one `syncfs` is cheaper than an fsync per file.
const SYNCFS_THRESHOLD: usize = 32;

/// A task stopped when this is dropped: the replication driver a leader runs (dropping it stops
/// the driver), and the stream task that goes with the driver however the driver ends.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Guards `task`.
    pub fn new(task: tokio::task::JoinHandle<()>) -> AbortOnDrop {
        AbortOnDrop(task)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts [`run`] in a task of its own, stopped when the returned guard is dropped.
pub fn spawn(state: Arc<AppState>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(run(state)))
}

/// Runs forever: connect, stream, route; on failure wait (1, 2, 5, 10, 30 s) and reconnect.
///
/// A stream that was running and failed is retried after 1 s — among others when the data
/// directory is full: the batch that could not be written is dropped unconfirmed, and every
/// second the stream is started again from the slot's confirmed position, so replication
/// resumes about a second after space returns (see [`Driver::storage_failure`]).
pub async fn run(state: Arc<AppState>) {
    let flushed = Arc::new(AtomicU64::new(0));
    let mut failures = 0usize;
    let mut driver = Driver {
        state: state.clone(),
        relational: HashMap::new(),
        relations: HashMap::new(),
        candidates: vec![],
        unsynced: HashMap::new(),
        full_since: None,
    };
    loop {
        if *state.draining.borrow() {
            return;
        }
        match connect(&state, flushed.clone()).await {
            Ok((mut rx, task)) => {
                let task = AbortOnDrop(task);
                state.metrics.replication_connects.fetch_add(1, Ordering::Relaxed);
                state.metrics.replication_connected.store(1, Ordering::Relaxed);
                state.replication_ready.store(true, Ordering::Relaxed);
                tracing::info!("replication stream connected");
                let result = driver.stream(&mut rx, &flushed).await;
                if result.is_ok() && *state.draining.borrow() {
                    // Shutting down: the driver stopped between batches; Postgres is told how
                    // far it got (a restart resumes there) before the stream goes.
                    confirm_before_stopping(&state, &flushed).await;
                    state.metrics.replication_connected.store(0, Ordering::Relaxed);
                    drop(task);
                    state.replication_stopped.send_replace(true);
                    tracing::info!("replication stopped for shutdown; the slot is confirmed");
                    return;
                }
                state.metrics.replication_connected.store(0, Ordering::Relaxed);
                drop(task);
                match result {
                    Ok(()) => tracing::warn!("replication stream ended; reconnecting"),
                    Err(e) => tracing::warn!(error = %e, "replication stream failed; reconnecting"),
                }
                failures = 1;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, attempt = failures, "cannot start replication");
            }
        }
        let wait = [1u64, 2, 5, 10, 30][failures.min(5).saturating_sub(1)];
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

type Stream = tokio::sync::mpsc::Receiver<Result<Transaction, ferrite_pg::replication::ReplicationError>>;

async fn connect(state: &AppState, flushed: Arc<AtomicU64>) -> Result<(Stream, tokio::task::JoinHandle<()>), String> {
    let cfg = &state.config;
    let client = ferrite_pg::connect::connect(&cfg.database_url).await.map_err(|e| e.to_string())?;
    if ferrite_pg::replication::drop_slot_if_lost(&client, &cfg.slot_name).await.map_err(|e| e.to_string())? {
        // Ferrite fell further behind than `max_slot_wal_keep_size` (down, or too slow) and
        // Postgres removed WAL the slot still needed: the changes in between are gone. A new
        // slot starts at the current end of the WAL, so every shape starts over (clients get
        // 409 and read it afresh) before anything is streamed from it — never a log with a gap.
        // New shapes wait for the new slot (their snapshots must come after its start).
        state.slot_ready.send_replace(false);
        let rotated = state.registry.rotate_all();
        state.metrics.slot_invalidations.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            slot = %cfg.slot_name,
            shapes = rotated,
            "Postgres invalidated the replication slot (it retained more WAL than max_slot_wal_keep_size): \
             made a new slot; every shape starts over"
        );
    }
    let ensure = ferrite_pg::replication::ensure_slot_and_publication(&client, &cfg.slot_name, &cfg.publication);
    tokio::pin!(ensure);
    let made = tokio::select! {
        made = &mut ensure => made,
        _ = tokio::time::sleep(Duration::from_secs(5)) => {
            // Creating a logical slot waits until every transaction open at that moment has
            // ended: say why nothing happens, and go on waiting.
            tracing::warn!(
                slot = %cfg.slot_name,
                "creating the replication slot waits for transactions open on Postgres to end; \
                 new shapes are answered 503 + retry-after until then (existing ones are served)"
            );
            ensure.await
        }
    };
    made.map_err(|e| e.to_string())?;
    state.slot_ready.send_replace(true);
    // Everything up to the slot's confirmed position is in the shape logs: clients that resume
    // at a `global_last_seen_lsn` from before a restart are not out of bounds.
    if let Ok(Some(slot)) = ferrite_pg::replication::slot_status(&client, &cfg.slot_name).await {
        state.global_lsn.fetch_max(slot.confirmed_flush_lsn, Ordering::Relaxed);
    }
    let rc = ReplicationConfig {
        url: cfg.database_url.clone(),
        slot: cfg.slot_name.clone(),
        publication: cfg.publication.clone(),
    };
    // A fresh count of what this stream hands over and what the driver processes of it.
    let progress = Arc::new(ferrite_pg::replication::StreamProgress::default());
    *state.stream.lock() = progress.clone();
    ferrite_pg::replication::start_replication_with(&rc, 0, flushed, progress).await.map_err(|e| e.to_string())
}

struct Driver {
    state: Arc<AppState>,
    /// Relational shapes offered transactions in the batch being processed.
    relational: HashMap<u64, ShapeRef>,
    /// Last relation seen per table oid, to notice schema changes once per change of relation.
    relations: HashMap<u32, Arc<Relation>>,
    candidates: Vec<ShapeRef>,
    /// Shapes whose logs took transactions of a batch that then failed (another shape's log
    /// could not be written, or the sync failed): written but not durable. The replay after
    /// the reconnect skips those transactions for them (their logs hold them), so they are
    /// made durable with the next batch, before anything past them is confirmed.
    unsynced: HashMap<u64, ShapeRef>,
    /// Since when writes fail for lack of space (the `storage_full` gauge is 1), and when that
    /// was last logged.
    full_since: Option<(std::time::Instant, std::time::Instant)>,
}

impl Driver {
    /// Counts and reports a failed write of the batch (`what` failed with `e`); the driver then
    /// returns the error, the stream is dropped without confirming the batch, and it starts
    /// again from the slot's confirmed position after 1 s. A full disk (`ENOSPC`) sets the
    /// `storage_full` gauge and is logged as such, naming the data directory — at once, then
    /// once a minute while it lasts — rather than as a replication fault.
    fn storage_failure(&mut self, what: &str, e: std::io::Error) -> String {
        let m = &self.state.metrics;
        m.storage_write_errors.fetch_add(1, Ordering::Relaxed);
        if !crate::storage::is_out_of_space(&e) {
            return format!("{what}: {e}");
        }
        m.storage_full.store(1, Ordering::Relaxed);
        let now = std::time::Instant::now();
        let due = match self.full_since {
            None => true,
            Some((_, logged)) => now.duration_since(logged) >= Duration::from_secs(60),
        };
        let since = self.full_since.map_or(now, |(since, _)| since);
        if due {
            self.full_since = Some((since, now));
            tracing::error!(
                data_dir = %self.state.config.data_dir.display(),
                error = %e,
                full_for_secs = now.duration_since(since).as_secs(),
                "the data directory is full (ENOSPC): shape logs cannot be written. Replication is paused \
                 (nothing past the last durable transaction is confirmed to Postgres) and retried every \
                 second; shapes are still served. Free space on that filesystem to resume."
            );
        } else {
            self.full_since = Some((since, self.full_since.map_or(now, |(_, l)| l)));
        }
        format!("{what}: the data directory is full: {e}")
    }

    /// A batch was written and made durable: if writes had been failing for lack of space,
    /// they no longer do.
    fn storage_ok(&mut self) {
        if let Some((since, _)) = self.full_since.take() {
            self.state.metrics.storage_full.store(0, Ordering::Relaxed);
            tracing::warn!(
                data_dir = %self.state.config.data_dir.display(),
                full_for_secs = since.elapsed().as_secs(),
                "the data directory has space again: replication resumed"
            );
        }
    }

    /// Routes batches until the stream ends (or fails), or the server shuts down — then it
    /// returns between batches, everything it took durable and marked in `flushed`.
    async fn stream(&mut self, rx: &mut Stream, flushed: &AtomicU64) -> Result<(), String> {
        loop {
            let first = tokio::select! {
                first = rx.recv() => first,
                _ = self.state.drained() => return Ok(()),
            };
            let Some(first) = first else { return Ok(()) };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(t) => batch.push(t),
                    Err(_) => break,
                }
            }
            {
                let now = std::time::Instant::now();
                let mut receipts = self.state.receipts.lock();
                for t in batch.iter().flatten() {
                    if receipts.len() == crate::state::RECEIPTS {
                        receipts.pop_front();
                    }
                    receipts.push_back((t.commit_lsn, now));
                }
            }
            // Logs left written but not durable by a failed batch go with this one.
            let mut dirty: HashMap<u64, ShapeRef> = std::mem::take(&mut self.unsynced);
            let carried: Vec<u64> = dirty.keys().copied().collect();
            let logged_before = self.state.metrics.log_messages.load(Ordering::Relaxed);
            let mut move_ins: Vec<ShapeRef> = Vec::new();
            let mut last: Option<(u64, u64)> = None;
            let mut failure = None;
            // Routing evaluates shape filters (bounded per row by the where clause limits) and
            // writes logs: CPU and file work, done off the async workers' hands so HTTP requests
            // keep being served meanwhile.
            let progress = self.state.stream.lock().clone();
            let routed = tokio::task::block_in_place(|| {
                for item in batch {
                    match item {
                        Ok(txn) => {
                            self.process(&txn, &mut dirty, &mut move_ins).map_err(|e| ("writing shape logs", e))?;
                            // Offered to every shape it concerns (a move-in waits for that).
                            progress.processed_commit.fetch_max(txn.commit_lsn, Ordering::AcqRel);
                            progress.processed.fetch_add(1, Ordering::AcqRel);
                            last = Some((txn.commit_lsn, txn.end_lsn));
                        }
                        Err(e) => {
                            failure = Some(e.to_string());
                            break;
                        }
                    }
                }
                self.flush_relational(&mut dirty).map_err(|e| ("writing relational shapes", e))?;
                Ok::<_, (&str, std::io::Error)>(())
            });
            if let Err((what, e)) = routed {
                // The transaction that failed left no trace in the log that failed (see
                // `ShapeLog::write_locked`); those before it, and its writes to other logs,
                // are made durable with the next batch (the replay skips them there).
                self.unsynced.extend(dirty);
                return Err(self.storage_failure(what, e));
            }
            // Whether this batch's own transactions were written (not only logs carried over
            // from a failed batch): only that says the disk takes appends again.
            let wrote = self.state.metrics.log_messages.load(Ordering::Relaxed) > logged_before
                || dirty.keys().any(|id| !carried.contains(id));
            if let Err(e) = self.sync(&dirty, last.map(|(commit, _)| commit)) {
                self.unsynced.extend(dirty);
                return Err(self.storage_failure("syncing shape logs", e));
            }
            if wrote {
                self.storage_ok();
            }
            // The shared nodes' states, now that what the shapes took from them is durable.
            if let Err(e) = tokio::task::block_in_place(|| self.state.registry.nodes.checkpoint()) {
                return Err(self.storage_failure("writing dependency nodes", e));
            }
            for shape in move_ins {
                tokio::spawn(crate::state::run_move_in(self.state.clone(), shape.0));
            }
            if let (Some(sink), Some(_)) = (self.state.registry.sink(), last) {
                // A cluster's leader: what the batch handed over without waiting (relational
                // checkpoints and queues) is in the stream before the position is confirmed.
                tokio::task::block_in_place(|| sink.flush()).map_err(|e| format!("publishing the batch: {e}"))?;
            }
            if let Some((commit, end)) = last {
                let m = &self.state.metrics;
                self.state.global_lsn.fetch_max(commit, Ordering::Relaxed);
                m.last_commit_lsn.store(commit, Ordering::Relaxed);
                flushed.fetch_max(end, Ordering::Relaxed);
                m.confirmed_lsn.store(flushed.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }

    /// Routes one transaction; shapes whose logs were written land in `dirty`, relational
    /// shapes that must now read rows moving in land in `move_ins`.
    fn process(
        &mut self,
        txn: &Transaction,
        dirty: &mut HashMap<u64, ShapeRef>,
        move_ins: &mut Vec<ShapeRef>,
    ) -> std::io::Result<()> {
        let m = self.state.metrics.clone();
        m.transactions.fetch_add(1, Ordering::Relaxed);
        m.changes.fetch_add(txn.changes.len() as u64, Ordering::Relaxed);
        let registry = self.state.registry.clone();
        let mut per_shape: HashMap<u64, (ShapeRef, Vec<PendingMessage>)> = HashMap::new();
        let mut relational: HashMap<u64, (ShapeRef, Vec<OwnedChange>)> = HashMap::new();
        // Truncated tables: their shapes start over (the shapes reading them through a subquery
        // see their results emptied). Tables whose schema changed: every shape on them or
        // reading them starts over.
        let mut truncated: Vec<u32> = vec![];
        let mut changed: Vec<u32> = vec![];
        {
            let routes = registry.routes();
            // Changes of the tables shared dependency nodes read, for them to apply once.
            let node_tables = registry.nodes.tables();
            let mut node_changes: Vec<(usize, u32, ChangeKind)> = vec![];
            for (i, change) in txn.changes.iter().enumerate() {
                let (relation, rows, row_change): (&Arc<Relation>, Vec<&[Option<String>]>, RowChange<'_>) = match change
                {
                    Change::Insert { relation, new } => (relation, vec![new], RowChange::Insert { new }),
                    Change::Update { relation, old, new } => match old {
                        Some(old) => (relation, vec![old, new], RowChange::Update { old, new }),
                        // Without the old row (not REPLICA IDENTITY FULL) moves cannot be judged;
                        // treat the new row as also the old one.
                        None => (relation, vec![new], RowChange::Update { old: new, new }),
                    },
                    Change::Delete { relation, old } => (relation, vec![old], RowChange::Delete { old }),
                    Change::Truncate { relations } => {
                        for r in relations {
                            truncated.push(r.oid);
                            if node_tables.contains(&r.oid) {
                                node_changes.push((i, r.oid, ChangeKind::Truncate));
                            }
                            let Some(table_routes) = routes.table(r.oid) else { continue };
                            for s in table_routes.shapes().filter(|s| {
                                s.0.is_relational() && s.0.filter.table.oid != r.oid && s.0.follows_rows_of(r.oid)
                            }) {
                                let change = OwnedChange { index: i, oid: r.oid, kind: ChangeKind::Truncate };
                                relational.entry(s.0.id).or_insert_with(|| (s.clone(), vec![])).1.push(change);
                            }
                        }
                        continue;
                    }
                };
                let Some(table_routes) = routes.table(relation.oid) else { continue };
                if changed.contains(&relation.oid) {
                    continue;
                }
                if self.relation_changed(relation, table_routes) {
                    changed.push(relation.oid);
                    continue;
                }
                if node_tables.contains(&relation.oid) {
                    node_changes.push((i, relation.oid, owned(row_change)));
                }
                table_routes.candidates(&rows, &mut self.candidates);
                let before = self.candidates.len();
                registry.value_index.candidates(relation.oid, &rows, &mut self.candidates);
                if self.candidates.len() > before {
                    self.candidates.sort_unstable();
                    self.candidates.dedup();
                }
                for shape in &self.candidates {
                    if truncated.contains(&shape.0.filter.table.oid) {
                        continue;
                    }
                    if shape.0.is_relational() {
                        if !shape.0.follows_rows_of(relation.oid) {
                            continue;
                        }
                        let change = OwnedChange { index: i, oid: relation.oid, kind: owned(row_change) };
                        relational.entry(shape.0.id).or_insert_with(|| (shape.clone(), vec![])).1.push(change);
                        continue;
                    }
                    let msgs = shape.0.filter.convert(row_change, i, txn.commit_lsn, txn.xid);
                    if !msgs.is_empty() {
                        per_shape.entry(shape.0.id).or_insert_with(|| (shape.clone(), vec![])).1.extend(msgs);
                    }
                }
            }
            // Each node applies the transaction once; its delta goes to the shapes using it.
            if !node_changes.is_empty() {
                for (shape, change) in registry.nodes.feed_transaction(txn.commit_lsn, txn.xid, &node_changes) {
                    relational.entry(shape.0.id).or_insert_with(|| (shape.clone(), vec![])).1.push(change);
                }
            }
        }
        for (id, (shape, msgs)) in per_shape {
            if truncated.contains(&shape.0.filter.table.oid) {
                continue;
            }
            let n = msgs.len() as u64;
            if shape.0.apply_transaction(txn.xid, txn.commit_lsn, msgs)? {
                m.log_messages.fetch_add(n, Ordering::Relaxed);
                dirty.insert(id, shape);
            }
        }
        // Each relational shape takes the transaction on its own state (in parallel when there
        // are many), then the shared value index learns what changed, one shape at a time.
        let relational: Vec<(ShapeRef, Vec<OwnedChange>)> = relational
            .into_values()
            .filter(|(shape, _)| shape.0.links.is_some() && !truncated.contains(&shape.0.filter.table.oid))
            .collect();
        m.relational_offers.fetch_add(relational.len() as u64, Ordering::Relaxed);
        let offers = crate::parallel::map(relational, |(shape, changes)| {
            let txn = QueuedTxn { xid: txn.xid, commit_lsn: txn.commit_lsn, changes };
            let offered = shape.0.links.as_ref().map(|links| links.lock().offer(&shape.0, txn));
            (shape, offered)
        });
        for (shape, offered) in offers {
            let Some(offered) = offered else { continue };
            let offered = offered?;
            let id = shape.0.id;
            shape.0.update_value_index(&registry.value_index);
            // Its log is written at the end of the batch, after its checkpoint (`flush_relational`).
            self.relational.insert(id, shape.clone());
            if offered.wrote {
                dirty.insert(id, shape.clone());
            }
            if offered.move_in {
                move_ins.push(shape);
            }
        }
        for oid in truncated {
            let n = registry.remove_table(oid, false);
            if n > 0 {
                tracing::info!(oid, shapes = n, "table truncated: shapes rotated");
            }
            self.relations.remove(&oid);
        }
        for oid in changed {
            let n = registry.remove_table(oid, true);
            if n > 0 {
                tracing::info!(oid, shapes = n, "the table's schema changed: shapes rotated");
            }
            self.relations.remove(&oid);
        }
        Ok(())
    }

    /// True if the relation's columns no longer match what the table's shapes were built for:
    /// names, types or type modifiers (`varchar(10)` → `varchar(20)` changes the schema clients
    /// are told). What a relation message cannot show — the primary key, which row keys are
    /// made of (every column is in the replica identity, which is FULL) — is checked against the
    /// catalog in the background ([`check_primary_key`]) whenever a new relation message arrives.
    fn relation_changed(&mut self, relation: &Arc<Relation>, routes: &crate::router::TableRoutes<ShapeRef>) -> bool {
        if self.relations.get(&relation.oid).is_some_and(|r| Arc::ptr_eq(r, relation)) {
            return false;
        }
        let changed = routes.shapes().any(|s| {
            let Some(table) = s.0.schema_of(relation.oid) else { return false };
            let cols = &table.columns;
            cols.len() != relation.columns.len()
                || cols
                    .iter()
                    .zip(&relation.columns)
                    .any(|(a, b)| a.name != b.name || a.type_oid != b.type_oid || a.typmod != b.typmod)
        });
        if !changed {
            self.relations.insert(relation.oid, relation.clone());
            let keys: Vec<Vec<usize>> =
                routes.shapes().filter_map(|s| s.0.schema_of(relation.oid)).map(|t| t.key_columns()).collect();
            tokio::spawn(check_primary_key(self.state.clone(), relation.oid, keys));
        }
        changed
    }

    /// Puts the batch's relational shape output into their logs: every changed checkpoint is
    /// written, then made durable (one `syncfs` when there are many), and only then are the log
    /// units they name appended — so a crash leaves each shape's log and checkpoint consistent.
    fn flush_relational(&mut self, dirty: &mut HashMap<u64, ShapeRef>) -> std::io::Result<()> {
        use crate::shapes::relational::{sync_file_and_dir, Links};
        let shapes: Vec<ShapeRef> = self.relational.drain().map(|(_, s)| s).collect();
        // Each shape's own files: in parallel when there are many.
        let staged_or_not = crate::parallel::map(shapes, |s| {
            let staged = match &s.0.links {
                Some(links) => links.lock().stage_checkpoint(&s.0),
                None => Ok(false),
            };
            (s, staged)
        });
        let mut shapes = Vec::with_capacity(staged_or_not.len());
        let mut staged = Vec::new();
        for (s, was_staged) in staged_or_not {
            if was_staged? {
                staged.push(s.clone());
            }
            shapes.push(s);
        }
        if staged.len() > SYNCFS_THRESHOLD {
            // SAFETY: syncfs only reads the descriptor, which the shape keeps open.
            if unsafe { libc::syncfs(staged[0].0.log.raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        } else {
            for s in &staged {
                sync_file_and_dir(&Links::checkpoint_path(&s.0))?;
            }
        }
        let appended = crate::parallel::map(shapes, |s| {
            let wrote = match &s.0.links {
                Some(links) => links.lock().append_outbox(&s.0),
                None => Ok(false),
            };
            (s, wrote)
        });
        for (s, wrote) in appended {
            if wrote? {
                dirty.insert(s.0.id, s);
            }
        }
        Ok(())
    }

    /// Makes the written logs durable and visible: when several logs were written, their small
    /// recent writes through one journal write and one `fdatasync` (see
    /// [`crate::storage::journal`]), the rest with an fsync each (one `syncfs` when there are
    /// many).
    /// `processed`: the batch's last commit, which a cluster's followers report as the leader's
    /// position (see [`crate::storage::replica::FileOp::Processed`]).
    fn sync(&self, dirty: &HashMap<u64, ShapeRef>, processed: Option<u64>) -> std::io::Result<()> {
        let progress = processed.map(|lsn| crate::storage::replica::FileOp::Processed { lsn });
        if dirty.is_empty() {
            if let (Some(sink), Some(op)) = (self.state.registry.sink(), progress) {
                // Nothing to wait for: no reader sees anything new.
                sink.publish_later(vec![op]);
            }
            return Ok(());
        }
        let m = &self.state.metrics;
        tokio::task::block_in_place(|| {
            if let Some(sink) = self.state.registry.sink() {
                // A cluster's leader: the other nodes get the batch's writes, in one message
                // while they fit, before any reader sees them and before the LSN is confirmed.
                let mut ops: Vec<_> = progress.into_iter().collect();
                let mut marks = Vec::with_capacity(dirty.len());
                for s in dirty.values() {
                    let (mut o, upto) = s.0.log.unpublished()?;
                    ops.append(&mut o);
                    marks.push((s, upto));
                }
                sink.publish(ops)?;
                for (s, upto) in marks {
                    s.0.log.mark_published(upto);
                }
            }
            let mut journal = self.state.registry.journal.lock();
            if journal.wants_checkpoint() {
                // Every log durable where it lies, the journal empty; this batch's writes then
                // go into the fresh journal as usual.
                journal.checkpoint()?;
            }
            let mut journaled = Vec::new();
            let mut direct = Vec::new();
            // One log alone is one flush either way: its own, which leaves nothing for the
            // kernel to write back later.
            let alone = dirty.len() == 1;
            for s in dirty.values() {
                match s.0.log.journal_entry().filter(|_| !alone) {
                    Some((entry, end)) => journaled.push((s, entry, end)),
                    None => direct.push(s),
                }
            }
            let use_syncfs = direct.len() > SYNCFS_THRESHOLD;
            if use_syncfs {
                // SAFETY: syncfs only reads the descriptor, which the shape keeps open.
                if unsafe { libc::syncfs(direct[0].0.log.raw_fd()) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for s in &direct {
                if let (Some(links), false) = (&s.0.links, use_syncfs) {
                    links.lock().sync_queue()?;
                }
                s.0.log.sync(!use_syncfs)?;
            }
            if !journaled.is_empty() {
                let records: Vec<(&str, &crate::storage::JournalEntry)> =
                    journaled.iter().map(|(s, e, _)| (s.0.log.dir_name(), e)).collect();
                journal.write(&records)?;
                m.journal_records.fetch_add(records.len() as u64, Ordering::Relaxed);
                for (s, _, end) in &journaled {
                    if let Some(links) = &s.0.links {
                        links.lock().sync_queue()?;
                    }
                    s.0.log.sync_journaled(*end)?;
                }
            }
            m.log_syncs.fetch_add(dirty.len() as u64, Ordering::Relaxed);
            Ok(())
        })
    }
}

/// Has the stream task report `flushed` to Postgres now, and waits (up to 2 s) until it has.
async fn confirm_before_stopping(state: &AppState, flushed: &AtomicU64) {
    let progress = state.stream.lock().clone();
    let target = flushed.load(Ordering::Acquire);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while progress.reported.load(Ordering::Acquire) < target && std::time::Instant::now() < deadline {
        progress.wanted.store(true, Ordering::Release);
        progress.nudge.notify_one();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An owned copy of a row change, to wait in a relational shape's queue.
fn owned(change: RowChange<'_>) -> ChangeKind {
    match change {
        RowChange::Insert { new } => ChangeKind::Insert(new.to_vec()),
        RowChange::Update { old, new } => ChangeKind::Update(old.to_vec(), new.to_vec()),
        RowChange::Delete { old } => ChangeKind::Delete(old.to_vec()),
    }
}

/// Rotates the shapes of table `oid` if its primary key is no longer the one they were built
/// with (`built_with`: each shape's key columns), which a relation message does not show. Run in
/// the background after a new relation message (a DDL on the table, or a new stream), so the
/// replication path never waits on the catalog; a shape that served a few changes keyed the old
/// way in the meantime is rotated all the same, and its clients start over.
async fn check_primary_key(state: Arc<AppState>, oid: u32, built_with: Vec<Vec<usize>>) {
    let Ok(conn) = state.snapshot_pool.get().await else { return };
    let table = ferrite_pg::introspect::load_table_by_oid(conn.client(), oid).await;
    conn.release();
    let Ok(Some(table)) = table else { return };
    let now = table.key_columns();
    if built_with.iter().any(|keys| *keys != now) {
        let n = state.registry.remove_table(oid, true);
        if n > 0 {
            tracing::info!(oid, shapes = n, "the table's primary key changed: shapes rotated");
        }
    }
}

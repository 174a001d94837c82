//! Relational shapes: shapes whose where clause has subqueries (or reads the clock), kept live
//! as the subqueries' results (or the time) change.
//!
//! For each subquery the shape keeps a [`Dependency`]: the values its clients have been given
//! the rows for (`loaded`), and the values whose rows are still owed to them (`pending`). The
//! live result itself is a shared node's ([`super::nodes`]: one per distinct subquery, fed each
//! change of its table once), which offers the shape, per transaction, the values that entered
//! and left it ([`ChangeKind::Result`]). A transaction is applied in two steps: each value that
//! entered or left a result flips a position of the where clause for the rows with that value —
//! to false at once (a `move-out` event, `loaded` updated), to true by a *move-in* (`pending`
//! until the rows are read); then the outer table's changes become messages, judged against
//! `loaded`, the results as the clients know them.
//!
//! A move-in reads the newly matching rows in a REPEATABLE READ snapshot. Transactions that
//! arrive meanwhile wait in the shape's queue; when the rows are in, the queue is split by
//! visibility in that snapshot (xids, not LSNs): the transactions the snapshot holds are applied
//! first, still without the new values (their effect on those rows is in the rows read), then the
//! `move-in` event, the rows (`is_move_in` inserts) and `snapshot-end`, then the rest with the
//! new values. The initial snapshot works the same way: the results and the shape's rows are
//! read in one snapshot, and the transactions queued meanwhile that it does not hold follow.
//! Nothing here ever answers 409: a long queue only means a longer wait (it spills to a file,
//! [`super::spill`]).
//!
//! A subquery with subqueries of its own, or on the shape's own table (a *deep* dependency), is
//! not followed row by row: any change to a table it reads marks it stale, and the next move-in
//! reads its result again in its snapshot, moving out what left it and in what entered it at the
//! splice.
//!
//! *Time.* A shape whose where clause compares rows with the current time
//! ([`ferrite_where::window`]) stands at one instant ([`Links::now`]): its snapshot, move-ins and
//! stream are all judged at it. When the clock passes the next boundary ([`Links::due`],
//! followed by [`crate::state::follow_clock`]), a move-in moves the shape to the clock's time:
//! it reads the rows whose standing may differ between the two instants and splices, at the same
//! place as a move-in's rows, a delete for each that left, an insert for each that entered.
//!
//! The state survives restarts: after a change of state the shape writes a checkpoint (what its
//! clients were given and are owed, where its queue starts, its time) together with the log
//! units it is about to append, made durable before they are appended
//! ([`Links::stage_checkpoint`], [`Links::append_outbox`]); [`Links::restore`] goes on from it,
//! with the shared nodes' stored states.

use super::shape::Shape;
use super::spill::SpillQueue;
use ferrite_core::deps::Projected;
use ferrite_core::shape::{finish_transaction, RowChange};
use ferrite_core::tags::{move_event, MoveKind, Pattern, Tagger};
use ferrite_pg::row_query::Among;
use ferrite_protocol::offset::LogOffset;
use ferrite_protocol::snapshot_info::SnapshotInfo;
use ferrite_where::{Membership, Position, Subquery, SubquerySets};
use std::collections::HashSet;
use std::io;

/// One change of a transaction that concerns a relational shape, owned so that it can wait in
/// the shape's queue.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OwnedChange {
    /// Position of the change in its transaction (message `op` = 2 × index).
    pub index: usize,
    /// The table changed.
    pub oid: u32,
    /// What happened.
    pub kind: ChangeKind,
}

/// What happened to a row (values aligned with its table's columns).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ChangeKind {
    /// A new row.
    Insert(Vec<Option<String>>),
    /// A changed row: before, after.
    Update(Vec<Option<String>>, Vec<Option<String>>),
    /// A removed row.
    Delete(Vec<Option<String>>),
    /// Every row of the table removed.
    Truncate,
    /// The values that entered and left the result of dependency number `dep`, as its shared
    /// node computed them from the transaction's changes of its table ([`super::nodes`]).
    Result {
        /// The shape's dependency.
        dep: usize,
        /// Values now in the result that were not.
        entered: Vec<Projected>,
        /// Values no longer in it.
        left: Vec<Projected>,
    },
}

/// A transaction's changes for one relational shape.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QueuedTxn {
    /// 32-bit xid.
    pub xid: u32,
    /// Commit LSN.
    pub commit_lsn: u64,
    /// Its changes to the shape's tables, in order.
    pub changes: Vec<OwnedChange>,
}

/// File in the shape's directory holding its [`Checkpoint`].
const CHECKPOINT_FILE: &str = "links.json";

/// What a relational shape needs to go on after a restart, with its log and its queue's file,
/// as it was after its last change of state (a subquery's result changed, a move-in): its
/// results, what its clients were given and are owed, where its queue starts, and the log units
/// that change was about to append (`redo`), so that a crash between writing the checkpoint and
/// appending them loses nothing. Written before those units are appended, and so before the
/// replication slot is confirmed past the change.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    stage: Stage,
    initial: Option<SnapshotInfo>,
    last_applied: Option<(u32, u64)>,
    offered_through: u64,
    /// Where the queue starts in its file ([`SpillQueue::start`]).
    queue_start: u64,
    deps: Vec<DependencyImage>,
    /// The log's last offset before the redo units.
    log_end: (u64, u64),
    /// Log units about to be appended: (offset as (tx, op), JSON).
    redo: Vec<Vec<((u64, u64), String)>>,
    /// The shape's time, next boundary and requested advance (see [`Links::now`]).
    #[serde(default)]
    now: Option<i64>,
    #[serde(default)]
    due: Option<i64>,
    #[serde(default)]
    advance_to: Option<i64>,
    /// See [`Links::complete_lsn`].
    #[serde(default)]
    owed_since: Option<u64>,
}

/// One dependency in a [`Checkpoint`] (its result is its shared node's, stored with it).
#[derive(serde::Serialize, serde::Deserialize)]
struct DependencyImage {
    loaded: Vec<Projected>,
    pending: Vec<Projected>,
    #[serde(default)]
    stale: bool,
}

/// One subquery of the shape's where clause and what the shape's clients know of its result.
struct Dependency {
    query: Subquery,
    /// The position of the where clause that tests it.
    position: usize,
    /// Whether that position is negated (`NOT IN`, `NOT EXISTS`).
    negated: bool,
    /// The outer table's columns it compares.
    outer_columns: Vec<usize>,
    /// The values whose rows the clients have been given (positive test) or told about
    /// (negated test): the result as the shape's messages are judged against.
    loaded: HashSet<Projected>,
    /// Values whose rows are owed: their position became true for them, but the rows have not
    /// been read yet.
    pending: HashSet<Projected>,
    /// Whether the subquery has subqueries of its own or reads the shape's table (a *deep*
    /// dependency): its result is then not followed row by row but read again from Postgres, in
    /// a move-in's snapshot, whenever a table it reads changes. Otherwise its result is a shared
    /// node's ([`super::nodes`]), whose deltas the shape is offered.
    deep: bool,
    /// Tables a deep dependency reads (its own and its nested subqueries').
    reads: Vec<u32>,
    /// A deep dependency's result may have changed since it was last read.
    stale: bool,
}

/// Where a relational shape is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Stage {
    /// The initial snapshot is being read; transactions queue.
    Loading,
    /// Transactions are applied as they come.
    Live,
    /// A move-in is reading rows; transactions queue.
    MovingIn,
}

/// What became of a transaction offered to the shape.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    /// The shape's log was written (it needs a sync).
    pub wrote: bool,
    /// A move-in must be started for the shape.
    pub move_in: bool,
}

/// What a move-in reads: for each subquery with owed values, the outer columns it compares and
/// those values; the rows the clock may move in or out; and the transaction after which they
/// were owed (the snapshot must hold it).
#[derive(Debug, Clone)]
pub struct MoveInRequest {
    /// The shape's time moves from the first instant to the second ([`crate::shapes::relational`]
    /// module documentation, "time"): the rows whose standing may differ are read again.
    pub advance: Option<(i64, i64)>,
    /// The instant the rows moving in are read at (the shape's time after the advance).
    pub now: Option<i64>,
    /// Subquery number, outer columns, values (texts, none NULL).
    pub values: Vec<(usize, Vec<usize>, Vec<Projected>)>,
    /// Deep dependencies whose results are read again: subquery number, the subquery, outer
    /// columns, whether negated, and the result as the clients know it now.
    pub refresh: Vec<Refresh>,
    /// xid and commit LSN of the last transaction applied before the request, if any.
    pub after: Option<(u32, u64)>,
}

impl MoveInRequest {
    /// The rows to read, as restrictions on the outer table.
    pub fn among(&self) -> Vec<Among> {
        self.values
            .iter()
            .map(|(_, columns, values)| Among {
                columns: columns.clone(),
                values: values.iter().map(|v| v.iter().map(|x| x.clone().unwrap_or_default()).collect()).collect(),
            })
            .collect()
    }
}

/// A deep dependency to read again in a move-in (see [`MoveInRequest::refresh`]).
#[derive(Debug, Clone)]
pub struct Refresh {
    /// Subquery number.
    pub sub: usize,
    /// The subquery (its filter printed for Postgres, nested subqueries and all).
    pub query: Subquery,
    /// The outer table's columns it is compared with.
    pub outer_columns: Vec<usize>,
    /// Whether its position is negated.
    pub negated: bool,
    /// Its result as the shape's clients know it.
    pub loaded: HashSet<Projected>,
}

impl Refresh {
    /// The values whose outer rows must be read when the result read is `result`: those that
    /// entered it (or, negated, left it).
    pub fn moving_in(&self, result: &HashSet<Projected>) -> Vec<Projected> {
        if self.negated {
            self.loaded.difference(result).cloned().collect()
        } else {
            result.difference(&self.loaded).cloned().collect()
        }
    }
}

/// What a move-in read for the clock ([`MoveInRequest::advance`]) in its snapshot.
#[derive(Debug, Default)]
pub struct ClockRead {
    /// Every row (all columns) whose standing may differ between the two instants.
    pub rows: Vec<Vec<Option<String>>>,
    /// The next boundary after the new time.
    pub due: Option<i64>,
}

/// How a finished move-in went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveInOutcome {
    /// Done; the shape is live again.
    Done,
    /// Done, and more values are owed: read again.
    Again,
    /// The snapshot was taken too early (it does not hold a transaction already applied, or
    /// holds a later one but not an earlier one): nothing was written; read again.
    TooEarly,
}

/// The live state of a relational shape (see the module documentation).
pub struct Links {
    deps: Vec<Dependency>,
    stage: Stage,
    queue: SpillQueue,
    /// xid and commit LSN of the last transaction applied.
    last_applied: Option<(u32, u64)>,
    /// Commit LSN of the last transaction offered (applied or queued): a replay after a
    /// restart skips what it already has.
    offered_through: u64,
    /// Log units (each a transaction's entries, or a move-in) made since the last
    /// [`Links::flush`], not yet in the log.
    outbox: Vec<Vec<(LogOffset, String)>>,
    /// Whether anything a checkpoint holds changed since the last [`Links::flush`].
    state_changed: bool,
    /// The initial snapshot: transactions it holds are in the shape already, however late the
    /// stream delivers them.
    initial: Option<SnapshotInfo>,
    /// Values whose `loaded`/`pending` membership changed since the last
    /// [`Links::take_index_changes`]: (dependency, value).
    touched: Vec<(usize, Projected)>,
    /// Whether every alternative of the where clause needs a positive subquery test: the shape
    /// is then routed by value ([`super::value_index`]).
    value_routed: bool,
    /// For a shape whose where clause reads the clock: the instant its rows are judged at (its
    /// *time*, [`ferrite_where::pg_micros`]), the same for its snapshot, its stream and its
    /// move-ins. `None` for a shape that does not read the clock.
    now: Option<i64>,
    /// The first instant after `now` at which a row of the shape may cross a time boundary.
    due: Option<i64>,
    /// An advance of the time asked for (to this instant), not yet made.
    advance_to: Option<i64>,
    /// Woken when `due` changes, for the task that waits for it ([`crate::state::follow_clock`]).
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// Commit LSN of the transaction since which rows are owed (a move-in or a deep result's
    /// refresh pending): the log is complete only up to just before it ([`Links::complete_lsn`]).
    owed_since: Option<u64>,
    /// On a cluster's leader, where the checkpoint goes before it is written (the queue has its
    /// own: [`Links::replicate_to`]).
    sink: Option<(std::sync::Arc<dyn crate::storage::replica::WriteSink>, String)>,
}

/// The subqueries' results as the shape's clients know them (`loaded`) and the shape's time,
/// for evaluation: a copy that outlives the lock (the initial snapshot's rows are rendered with
/// it).
pub struct Loaded {
    sets: Vec<HashSet<Projected>>,
    now: Option<i64>,
}

impl SubquerySets for Loaded {
    fn lookup(&self, index: usize, key: &[&str]) -> Membership {
        lookup(self.sets.get(index), key)
    }

    fn nulls(&self, index: usize) -> Membership {
        nulls(self.sets.get(index))
    }

    fn now(&self) -> Option<i64> {
        self.now
    }
}

/// The `loaded` results of a shape's dependencies, in place, at an instant, for evaluation.
struct Known<'a> {
    deps: &'a [Dependency],
    now: Option<i64>,
}

impl SubquerySets for Known<'_> {
    fn lookup(&self, index: usize, key: &[&str]) -> Membership {
        lookup(self.deps.get(index).map(|d| &d.loaded), key)
    }

    fn nulls(&self, index: usize) -> Membership {
        nulls(self.deps.get(index).map(|d| &d.loaded))
    }

    fn now(&self) -> Option<i64> {
        self.now
    }
}

/// Whether `key` is in a result as the clients know it (values with a NULL are never kept, so
/// `has_null` is false; see [`Links::seed`]). No result at all reads as empty.
fn lookup(set: Option<&HashSet<Projected>>, key: &[&str]) -> Membership {
    let value: Projected = key.iter().map(|k| Some(k.to_string())).collect();
    match set {
        Some(set) => Membership { contains: set.contains(&value), has_null: false, empty: set.is_empty() },
        None => Membership { empty: true, ..Membership::default() },
    }
}

fn nulls(set: Option<&HashSet<Projected>>) -> Membership {
    Membership { empty: set.is_none_or(|s| s.is_empty()), ..Membership::default() }
}

impl Links {
    /// The state of a shape compiled to `filter` (`None` unless it is relational). It starts
    /// loading: transactions queue until [`Links::seed`] and
    /// [`Links::finish_loading`].
    /// Its queue spills to a file in `dir` (the shape's directory).
    pub fn new(filter: &ferrite_core::shape::ShapeFilter, dir: &std::path::Path) -> Option<Links> {
        let conditions = filter.conditions.as_ref()?;
        let mut deps = Vec::new();
        for (sub, query) in filter.subqueries().iter().enumerate() {
            let position = conditions.position_of(sub)?;
            let Position::Subquery { negated, columns, .. } = &conditions.positions()[position] else { return None };
            let reads: Vec<u32> =
                ferrite_core::shape::subquery_tables(std::slice::from_ref(query)).iter().map(|t| t.oid).collect();
            deps.push(Dependency {
                query: query.clone(),
                position,
                negated: *negated,
                outer_columns: columns.clone(),
                loaded: HashSet::new(),
                pending: HashSet::new(),
                deep: is_deep(filter, query),
                reads,
                stale: false,
            });
        }
        let reads_own_table = deps.iter().any(|d| d.reads.contains(&filter.table.oid));
        Some(Links {
            deps,
            stage: Stage::Loading,
            queue: SpillQueue::new(dir),
            last_applied: None,
            offered_through: 0,
            outbox: Vec::new(),
            state_changed: false,
            initial: None,
            touched: Vec::new(),
            // A subquery on the shape's own table must see every change of it.
            value_routed: !reads_own_table
                && conditions.disjuncts().iter().all(|d| {
                    d.iter().any(|&p| matches!(conditions.positions()[p], Position::Subquery { negated: false, .. }))
                }),
            // Set when the snapshot is read ([`Links::start_at`]).
            now: filter.reads_time().then_some(0),
            due: None,
            advance_to: None,
            wake: Default::default(),
            owed_since: None,
            sink: None,
        })
    }

    /// While rows are owed (a move-in or a refresh pending), a position the shape's log is
    /// complete through: two bytes before the commit of the transaction that made them owed (a
    /// commit record is longer than that, so no transaction commits in between, and a move-in
    /// placed one byte after a transaction is never mistaken for one after this point); `None`
    /// when nothing is owed (the log is complete up to the stream's position). Read it before
    /// reading the log: entries after it may be partial (a move-in still to come).
    pub fn complete_lsn(&self) -> Option<u64> {
        self.owed_since.map(|l| l.saturating_sub(2))
    }

    /// Notes, after applying transaction `lsn`, whether rows are owed since then.
    fn note_owed(&mut self, lsn: u64) {
        if self.owes_moves() {
            self.owed_since.get_or_insert(lsn);
        }
    }

    /// Whether rows are owed (values moving in, deep results to read again).
    fn owes_moves(&self) -> bool {
        self.deps.iter().any(|d| !d.pending.is_empty() || d.stale)
    }

    /// After a move-in's log units are durable (readable): when nothing is owed any more, the log
    /// is complete again ([`Links::complete_lsn`]). Not sooner — a reader between the move-in's
    /// end and its units becoming readable would otherwise be told the log is complete.
    pub fn settle(&mut self) {
        if !self.owes_moves() {
            self.owed_since = None;
        }
    }

    /// Sets the shape's time before its initial snapshot is read at it.
    pub fn start_at(&mut self, now: i64) {
        if self.now.is_some() {
            self.now = Some(now);
        }
    }

    /// The shape's time (`None` when it does not read the clock).
    pub fn now(&self) -> Option<i64> {
        self.now
    }

    /// The next instant at which a row may cross a time boundary.
    pub fn due(&self) -> Option<i64> {
        self.due
    }

    /// Notified whenever [`Links::due`] changes.
    pub fn wake(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// Sets the next boundary as Postgres found it when the shape's time was set.
    pub fn set_due(&mut self, due: Option<i64>) {
        self.due = due;
        self.state_changed = true;
        self.wake.notify_one();
    }

    /// Brings the next boundary forward to `at` when that is sooner.
    fn lower_due(&mut self, at: Option<i64>) {
        if let Some(at) = at {
            if self.due.is_none_or(|d| at < d) {
                self.due = Some(at);
                self.state_changed = true;
                self.wake.notify_one();
            }
        }
    }

    /// The next boundaries of rows that entered the shape's view at its time.
    fn lower_due_for(&mut self, shape: &Shape, rows: &[&[Option<String>]]) {
        let (Some(now), Some(clause)) = (self.now, shape.filter.where_clause.as_ref()) else { return };
        let terms = &shape.filter.time_terms;
        let next = rows.iter().filter_map(|r| clause.next_change(terms, r, now)).min();
        self.lower_due(next);
    }

    /// Asks for the shape's time to move to `clock` (the server's clock now) when a boundary
    /// has been reached. Returns true when the caller must start the move-in that makes it (the
    /// shape was live); otherwise the move-in or snapshot under way makes it next.
    pub fn request_advance(&mut self, clock: i64) -> bool {
        let (Some(now), Some(due)) = (self.now, self.due) else { return false };
        if due > clock || clock <= now || self.advance_to.is_some_and(|a| a >= clock) {
            return false;
        }
        self.advance_to = Some(clock);
        self.state_changed = true;
        if self.stage == Stage::Live {
            self.stage = Stage::MovingIn;
            return true;
        }
        false
    }

    /// Whether the shape is routed by the values of its subqueries (see
    /// [`super::value_index`]); otherwise it is a candidate for every change of its table.
    pub fn value_routed(&self) -> bool {
        self.value_routed
    }

    /// Whether the initial snapshot is still being read.
    pub fn loading(&self) -> bool {
        self.stage == Stage::Loading
    }

    /// Whether the shape must be offered every change of its table, not only those its routing
    /// index picks: while its initial snapshot is read, and while a deep dependency is stale —
    /// the values that will enter it are known only once it is read again, and a change of a
    /// row with one of them (a delete committed while the move-in reads) must reach the shape's
    /// queue to be applied after the rows the move-in reads.
    pub fn wants_every_change(&self) -> bool {
        self.stage == Stage::Loading || self.deps.iter().any(|d| d.deep && d.stale)
    }

    /// The values that entered or left the shape's routing index since the last call.
    pub fn take_index_changes(&mut self) -> Vec<super::value_index::IndexChange> {
        let touched = std::mem::take(&mut self.touched);
        touched
            .into_iter()
            .filter(|(d, _)| !self.deps[*d].negated)
            .map(|(d, v)| {
                let dep = &self.deps[d];
                let indexed = dep.loaded.contains(&v) || dep.pending.contains(&v);
                (dep.outer_columns.clone(), v, indexed)
            })
            .collect()
    }

    /// Every value the shape's routing index holds (after a restart).
    fn touch_all(&mut self) {
        for (d, dep) in self.deps.iter().enumerate() {
            self.touched.extend(dep.loaded.iter().chain(dep.pending.iter()).map(|v| (d, v.clone())));
        }
    }

    /// The shared nodes the shape's dependencies use: (dependency, node key), the deep ones
    /// left out.
    pub fn node_keys(filter: &ferrite_core::shape::ShapeFilter) -> Vec<(usize, String, Subquery)> {
        filter
            .subqueries()
            .iter()
            .enumerate()
            .filter(|(_, q)| !is_deep(filter, q))
            .map(|(i, q)| (i, super::nodes::node_key(q), q.clone()))
            .collect()
    }

    /// The subqueries, in order.
    pub fn subqueries(&self) -> impl Iterator<Item = &Subquery> {
        self.deps.iter().map(|d| &d.query)
    }

    /// Loads the subqueries' results as the initial snapshot read them (`rows[i]`: every row of
    /// subquery `i`'s table that its where clause selects, all columns); returns them as the
    /// clients will know them, for rendering the snapshot's rows.
    pub fn seed(&mut self, rows: Vec<Vec<Vec<Option<String>>>>) -> Loaded {
        for (dep, rows) in self.deps.iter_mut().zip(rows) {
            for row in rows {
                let value: Projected = dep.query.columns.iter().map(|&c| row.get(c).cloned().flatten()).collect();
                if !value.iter().any(Option::is_none) {
                    dep.loaded.insert(value);
                }
            }
        }
        self.touch_all();
        Loaded { sets: self.deps.iter().map(|d| d.loaded.clone()).collect(), now: self.now }
    }

    /// Takes a transaction: applied at once when the shape is live, else queued.
    /// What the shape already holds — the transaction's place in its log, or in its queue — is
    /// skipped (a replay after a restart).
    pub fn offer(&mut self, shape: &Shape, txn: QueuedTxn) -> io::Result<Offered> {
        if txn.commit_lsn <= self.offered_through
            || txn.commit_lsn <= shape.log.last_written_tx()
            || self.initial.as_ref().is_some_and(|i| i.contains(txn.xid, txn.commit_lsn))
        {
            return Ok(Offered::default());
        }
        self.offered_through = txn.commit_lsn;
        if self.stage != Stage::Live {
            // Waits in the queue's file (synced with the shape's log, before the slot is
            // confirmed past it).
            self.queue.push(txn)?;
            return Ok(Offered { wrote: true, move_in: false });
        }
        self.apply(shape, &txn);
        let move_in = self.owes_rows();
        if move_in {
            self.stage = Stage::MovingIn;
        }
        // What it made waits in the outbox for the end of the batch (see `stage_checkpoint`).
        Ok(Offered { wrote: !self.outbox.is_empty(), move_in })
    }

    /// Ends loading: drops the queued transactions the snapshot `info` holds (as it will those
    /// the stream delivers later) and applies the rest on top of what it read — rows and
    /// subquery results alike, row by row, so the order in which transactions became visible
    /// does not matter. Returns whether a move-in must follow.
    pub fn finish_loading(&mut self, shape: &Shape, info: &SnapshotInfo) -> io::Result<bool> {
        self.initial = Some(info.clone());
        self.stage = Stage::MovingIn;
        let move_in = self.drain(shape)?;
        self.state_changed = true;
        self.flush(shape)?;
        Ok(move_in)
    }

    /// The values to read rows for; `None` when nothing is owed.
    pub fn move_in_request(&self) -> Option<MoveInRequest> {
        let after = self.last_applied;
        let advance = self.advance_to.zip(self.now).map(|(to, from)| (from, to));
        let values: Vec<(usize, Vec<usize>, Vec<Projected>)> = self
            .deps
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.pending.is_empty())
            .map(|(i, d)| (i, d.outer_columns.clone(), d.pending.iter().cloned().collect()))
            .collect();
        let refresh: Vec<Refresh> = self
            .deps
            .iter()
            .enumerate()
            .filter(|(_, d)| d.stale)
            .map(|(i, d)| Refresh {
                sub: i,
                query: d.query.clone(),
                outer_columns: d.outer_columns.clone(),
                negated: d.negated,
                loaded: d.loaded.clone(),
            })
            .collect();
        if values.is_empty() && refresh.is_empty() && advance.is_none() {
            return None;
        }
        Some(MoveInRequest { advance, now: self.advance_to.or(self.now), values, refresh, after })
    }

    /// Ends a move-in whose rows `rows` (all columns of the outer table) were read in snapshot
    /// `info` for `request`: splices them into the log between the queued transactions the
    /// snapshot holds and those it does not (see the module documentation).
    /// `results` are the refreshed deep dependencies' results read in the same snapshot, in the
    /// order of [`MoveInRequest::refresh`]; `clock` what it read for [`MoveInRequest::advance`].
    pub fn finish_move_in(
        &mut self,
        shape: &Shape,
        request: &MoveInRequest,
        info: &SnapshotInfo,
        rows: &[Vec<Option<String>>],
        results: Vec<HashSet<Projected>>,
        clock: &ClockRead,
    ) -> io::Result<MoveInOutcome> {
        if request.after.is_some_and(|(xid, lsn)| !info.contains(xid, lsn)) {
            return Ok(MoveInOutcome::TooEarly);
        }
        let ids = self.queue.ids();
        let visible = ids.iter().take_while(|(xid, lsn)| info.contains(*xid, *lsn)).count();
        if ids.iter().skip(visible).any(|(xid, lsn)| info.contains(*xid, *lsn)) {
            return Ok(MoveInOutcome::TooEarly);
        }
        for _ in 0..visible {
            if let Some(txn) = self.queue.pop()? {
                self.apply(shape, &txn);
            }
        }
        let tagger = tagger(shape);
        let lsn = self.last_applied.map_or(0, |(_, l)| l);
        // The clock first, judged against the results the clients hold: the rows it moved out
        // or in, as they stand in the snapshot (which is now where the log stands).
        if let Some((from, to)) = request.advance {
            let before = Known { deps: &self.deps, now: Some(from) };
            let after = Known { deps: &self.deps, now: Some(to) };
            let block: Vec<String> =
                clock.rows.iter().filter_map(|row| tagger.clock_change(row, &before, &after)).collect();
            if !block.is_empty() {
                self.push_block(shape, lsn, block);
            }
            self.now = Some(to);
            if self.advance_to.is_some_and(|a| a <= to) {
                self.advance_to = None;
            }
            self.due = clock.due;
            self.wake.notify_one();
        }
        // The values still owed at the snapshot: their rows are the ones read.
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut outs: Vec<Pattern> = Vec::new();
        // Deep dependencies take the result read in the snapshot: what left it moves out now,
        // what entered it moves in with the rows read (negated: the other way round).
        for (refresh, result) in request.refresh.iter().zip(results) {
            let dep = &mut self.deps[refresh.sub];
            let left: Vec<Projected> = dep.loaded.difference(&result).cloned().collect();
            let entered: Vec<Projected> = result.difference(&dep.loaded).cloned().collect();
            for v in &left {
                let into = if dep.negated { &mut patterns } else { &mut outs };
                into.push((dep.position, tagger.slot(&as_strs(v))));
                self.touched.push((refresh.sub, v.clone()));
            }
            for v in &entered {
                let into = if dep.negated { &mut outs } else { &mut patterns };
                into.push((dep.position, tagger.slot(&as_strs(v))));
                self.touched.push((refresh.sub, v.clone()));
            }
            dep.loaded = result;
            dep.stale = false;
        }
        for (i, _, values) in &request.values {
            let dep = &mut self.deps[*i];
            for v in values {
                self.touched.push((*i, v.clone()));
                if dep.pending.remove(v) {
                    patterns.push((dep.position, tagger.slot(&as_strs(v))));
                    if dep.negated {
                        dep.loaded.remove(v);
                    } else {
                        dep.loaded.insert(v.clone());
                    }
                }
            }
        }
        if !outs.is_empty() {
            self.push_block(shape, lsn, vec![move_event(MoveKind::Out, &outs, None)]);
        }
        if !patterns.is_empty() {
            let mut block = vec![move_event(MoveKind::In, &patterns, None)];
            let known = Known { deps: &self.deps, now: self.now };
            let mut moved: Vec<&[Option<String>]> = Vec::new();
            for row in rows {
                let active = tagger.conditions().active(row, &known);
                if tagger.conditions().holds(&active) {
                    block.push(tagger.row(row, &known, true));
                    moved.push(row);
                }
            }
            block.push(ferrite_protocol::messages::snapshot_end(info, None));
            self.push_block(shape, lsn, block);
            // Rows the stream never showed the shape (routed by value): their boundaries too.
            self.lower_due_for(shape, &moved);
        }
        let again = self.drain(shape)?;
        self.state_changed = true;
        self.flush(shape)?;
        Ok(if again { MoveInOutcome::Again } else { MoveInOutcome::Done })
    }

    /// Puts `block` in the outbox between the last transaction applied (at `lsn`) and the next
    /// one, which commits past `lsn + 1`; after any earlier block at the same place.
    fn push_block(&mut self, shape: &Shape, lsn: u64, block: Vec<String>) {
        let end = self.outbox.last().and_then(|u| u.last()).map_or(shape.log.end_offset(), |(o, _)| *o);
        let first_op = if end.tx == lsn + 1 { end.op + 1 } else { 1 };
        self.outbox.push(
            block
                .into_iter()
                .enumerate()
                .map(|(n, json)| (LogOffset::new(lsn + 1, first_op + n as u64), json))
                .collect(),
        );
    }

    /// Applies queued transactions until one leaves rows owed (true: a move-in must follow, the
    /// rest stays queued) or none is left (false: live again).
    fn drain(&mut self, shape: &Shape) -> io::Result<bool> {
        loop {
            if self.owes_rows() {
                self.stage = Stage::MovingIn;
                return Ok(true);
            }
            match self.queue.pop()? {
                // The initial snapshot holds it already.
                Some(txn) if self.initial.as_ref().is_some_and(|i| i.contains(txn.xid, txn.commit_lsn)) => {}
                Some(txn) => self.apply(shape, &txn),
                None => {
                    self.stage = Stage::Live;
                    return Ok(false);
                }
            }
        }
    }

    /// Sends every later checkpoint and queue change to `sink` before it is written or made
    /// durable (a cluster's leader; `dir` is the shape directory's name), so a node taking over
    /// restores the shape as this one would after a crash. Returns what the other nodes need to
    /// cut their copy of the queue as this one is.
    pub fn replicate_to(
        &mut self,
        sink: std::sync::Arc<dyn crate::storage::replica::WriteSink>,
        dir: &str,
    ) -> Vec<crate::storage::replica::FileOp> {
        self.sink = Some((sink.clone(), dir.to_string()));
        self.queue.replicate_to(sink, dir)
    }

    /// Makes the queue's file durable (with the shape's log, before the slot is confirmed).
    pub fn sync_queue(&mut self) -> io::Result<()> {
        self.queue.sync()
    }

    /// Puts what the last operations made into the log. When they changed what a checkpoint
    /// holds, the checkpoint is made durable first, with the log units about to be appended:
    /// after a crash the log either has them or gets them from the checkpoint (see
    /// [`Links::restore`]). Returns whether the log was written. The replication driver does
    /// the same in three steps over many shapes at once, so that one `syncfs` covers all their
    /// checkpoints: [`Links::stage_checkpoint`], then a sync, then [`Links::append_outbox`].
    fn flush(&mut self, shape: &Shape) -> io::Result<bool> {
        if self.stage_checkpoint(shape)? {
            sync_file_and_dir(&shape.log.dir().join(CHECKPOINT_FILE))?;
        }
        self.append_outbox(shape)
    }

    /// Writes the checkpoint (not yet durable) when the state changed since the last one;
    /// returns whether it did. Make it durable before [`Links::append_outbox`].
    pub fn stage_checkpoint(&mut self, shape: &Shape) -> io::Result<bool> {
        if !self.state_changed || self.stage == Stage::Loading {
            return Ok(false);
        }
        self.queue.sync()?;
        self.checkpoint(shape)?;
        Ok(true)
    }

    /// The checkpoint file of `shape`, to make durable after [`Links::stage_checkpoint`].
    pub fn checkpoint_path(shape: &Shape) -> std::path::PathBuf {
        shape.log.dir().join(CHECKPOINT_FILE)
    }

    /// Appends the outbox to the log (after the checkpoint that names it is durable); returns
    /// whether anything was written.
    pub fn append_outbox(&mut self, shape: &Shape) -> io::Result<bool> {
        if self.state_changed && self.stage != Stage::Loading {
            // A checkpoint was written for this state: the queue it names may be emptied.
            self.queue.reset_if_empty()?;
        }
        self.state_changed = false;
        let units = std::mem::take(&mut self.outbox);
        for unit in &units {
            let entries: Vec<(LogOffset, &[u8])> = unit.iter().map(|(o, json)| (*o, json.as_bytes())).collect();
            shape.log.append(&entries)?;
        }
        Ok(!units.is_empty())
    }

    /// Writes the checkpoint of this state and of the units about to be appended (see
    /// [`Checkpoint`]), without making it durable.
    fn checkpoint(&self, shape: &Shape) -> io::Result<()> {
        let end = shape.log.end_offset();
        let checkpoint = Checkpoint {
            stage: self.stage,
            initial: self.initial.clone(),
            last_applied: self.last_applied,
            offered_through: self.offered_through,
            queue_start: self.queue.start(),
            deps: self
                .deps
                .iter()
                .map(|d| DependencyImage {
                    loaded: d.loaded.iter().cloned().collect(),
                    pending: d.pending.iter().cloned().collect(),
                    stale: d.stale,
                })
                .collect(),
            log_end: (end.tx, end.op),
            redo: self
                .outbox
                .iter()
                .map(|unit| unit.iter().map(|(o, json)| ((o.tx, o.op), json.clone())).collect())
                .collect(),
            now: self.now,
            due: self.due,
            advance_to: self.advance_to,
            owed_since: self.owed_since,
        };
        let bytes = serde_json::to_vec(&checkpoint).map_err(io::Error::other)?;
        if let Some((sink, dir)) = &self.sink {
            // Not waited for here (the shape is locked, and readers take the lock): the log
            // units it names go after it, and are waited for before anyone reads them.
            let name = CHECKPOINT_FILE.to_string();
            sink.publish_later(vec![crate::storage::replica::FileOp::Replace {
                dir: dir.clone(),
                name,
                bytes: bytes.clone(),
            }]);
        }
        let path = shape.log.dir().join(CHECKPOINT_FILE);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)
    }

    /// The state a checkpoint holds, for shape `shape` (reopened after a restart with its
    /// log), after putting into its log what the checkpoint says was about to be appended and
    /// is not there. `None` when the log is shorter than the checkpoint says it was: it lost
    /// what was written before the checkpoint (a power loss) and the shape must start over.
    pub fn restore(shape: &Shape) -> io::Result<Option<Links>> {
        let bytes = match std::fs::read(shape.log.dir().join(CHECKPOINT_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let cp: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let Some(mut links) = Links::new(&shape.filter, shape.log.dir()) else { return Ok(None) };
        if cp.deps.len() != links.deps.len() {
            return Ok(None);
        }
        let end = shape.log.end_offset();
        if end < LogOffset::new(cp.log_end.0, cp.log_end.1) {
            return Ok(None);
        }
        for unit in &cp.redo {
            let Some(((tx, op), _)) = unit.last() else { continue };
            if LogOffset::new(*tx, *op) <= end {
                continue;
            }
            let entries: Vec<(LogOffset, &[u8])> =
                unit.iter().map(|((tx, op), json)| (LogOffset::new(*tx, *op), json.as_bytes())).collect();
            shape.log.append(&entries)?;
        }
        for (dep, image) in links.deps.iter_mut().zip(cp.deps) {
            dep.loaded = image.loaded.into_iter().collect();
            dep.pending = image.pending.into_iter().collect();
            dep.stale = image.stale;
        }
        links.stage = cp.stage;
        links.initial = cp.initial;
        links.owed_since = cp.owed_since;
        if links.now.is_some() {
            links.now = cp.now;
            links.due = cp.due;
            links.advance_to = cp.advance_to;
        }
        links.touch_all();
        links.last_applied = cp.last_applied;
        links.queue = SpillQueue::reopen(shape.log.dir(), cp.queue_start)?;
        links.offered_through = cp.offered_through.max(links.queue.last_lsn().unwrap_or(0));
        Ok(Some(links))
    }

    /// Whether a move-in must run: rows owed, a deep result to read again, or the clock to
    /// advance.
    fn owes_rows(&self) -> bool {
        self.advance_to.is_some() || self.owes_moves()
    }

    /// Transactions waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether rows are being read for values that moved in.
    pub fn moving_in(&self) -> bool {
        self.stage == Stage::MovingIn
    }

    /// Takes what entered and left the result of dependency `d` in a transaction: a value that
    /// left moves out at once (`outs`: a `move-out` pattern; negated: the other way round), one
    /// that entered is owed until a move-in reads its rows.
    fn take_delta(
        &mut self,
        d: usize,
        entered: &[Projected],
        left: &[Projected],
        tagger: &Tagger<'_>,
        outs: &mut Vec<Pattern>,
    ) {
        let Some(dep) = self.deps.get_mut(d) else { return };
        self.touched.extend(entered.iter().chain(left.iter()).map(|v| (d, v.clone())));
        for v in entered {
            if dep.negated {
                if !dep.pending.remove(v) && dep.loaded.insert(v.clone()) {
                    outs.push((dep.position, tagger.slot(&as_strs(v))));
                }
            } else if !dep.loaded.contains(v) {
                dep.pending.insert(v.clone());
            }
        }
        for v in left {
            if dep.negated {
                if dep.loaded.contains(v) {
                    dep.pending.insert(v.clone());
                }
            } else if !dep.pending.remove(v) && dep.loaded.remove(v) {
                outs.push((dep.position, tagger.slot(&as_strs(v))));
            }
        }
    }

    /// The results as the clients know them, at the shape's time.
    fn known(&self) -> Known<'_> {
        Known { deps: &self.deps, now: self.now }
    }

    /// Applies one transaction; what it means for the shape goes to the outbox.
    fn apply(&mut self, shape: &Shape, txn: &QueuedTxn) {
        self.last_applied = Some((txn.xid, txn.commit_lsn));
        let tagger = tagger(shape);
        let outer = shape.filter.table.oid;
        // 1. What the transaction did to the subqueries' results: the deltas of the shared
        // nodes, and the deep dependencies it made stale.
        let mut first_inner: Option<usize> = None;
        let mut outs: Vec<Pattern> = Vec::new();
        for change in &txn.changes {
            if let ChangeKind::Result { dep, entered, left } = &change.kind {
                first_inner.get_or_insert(change.index);
                self.state_changed = true;
                self.take_delta(*dep, entered, left, &tagger, &mut outs);
                continue;
            }
            if change.oid != outer {
                first_inner.get_or_insert(change.index);
            }
            for dep in self.deps.iter_mut().filter(|d| d.deep && d.reads.contains(&change.oid)) {
                dep.stale = true;
                self.state_changed = true;
            }
        }
        // 2. The outer table's changes, judged against the results as the clients know them.
        let mut messages = Vec::new();
        for change in txn.changes.iter().filter(|c| c.oid == outer) {
            let row_change = match &change.kind {
                ChangeKind::Insert(new) => RowChange::Insert { new },
                ChangeKind::Update(old, new) => RowChange::Update { old, new },
                ChangeKind::Delete(old) => RowChange::Delete { old },
                ChangeKind::Truncate | ChangeKind::Result { .. } => continue,
            };
            messages.extend(tagger.convert(row_change, change.index, txn.commit_lsn, txn.xid, &self.known()));
        }
        // New row versions may cross a time boundary before the next one known.
        if self.now.is_some() {
            let rows: Vec<&[Option<String>]> = txn
                .changes
                .iter()
                .filter(|c| c.oid == outer)
                .filter_map(|c| match &c.kind {
                    ChangeKind::Insert(new) | ChangeKind::Update(_, new) => Some(new.as_slice()),
                    _ => None,
                })
                .collect();
            self.lower_due_for(shape, &rows);
        }
        let mut entries: Vec<(u64, String)> = finish_transaction(&messages);
        if !outs.is_empty() {
            let op = 2 * first_inner.unwrap_or(0) as u64;
            entries.push((op, move_event(MoveKind::Out, &outs, Some(txn.xid))));
            entries.sort_by_key(|(op, _)| *op);
        }
        if !entries.is_empty() {
            self.outbox
                .push(entries.into_iter().map(|(op, json)| (LogOffset::new(txn.commit_lsn, op), json)).collect());
        }
        self.note_owed(txn.commit_lsn);
    }
}

/// Whether subquery `query` of `filter` is *deep*: it has subqueries of its own or reads the
/// shape's own table (whose changes are the shape's rows too), so it is read again from Postgres
/// rather than followed row by row.
pub fn is_deep(filter: &ferrite_core::shape::ShapeFilter, query: &Subquery) -> bool {
    query.filter.as_ref().is_some_and(|f| !f.subqueries().is_empty())
        || ferrite_core::shape::subquery_tables(std::slice::from_ref(query)).iter().any(|t| t.oid == filter.table.oid)
}

/// fsyncs a file and its directory (a renamed checkpoint).
pub fn sync_file_and_dir(path: &std::path::Path) -> io::Result<()> {
    std::fs::File::open(path)?.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn tagger(shape: &Shape) -> Tagger<'_> {
    Tagger::new(&shape.filter, &shape.tag_salt).expect("a relational shape has conditions")
}

fn as_strs(v: &Projected) -> Vec<Option<&str>> {
    v.iter().map(|x| x.as_deref()).collect()
}

//! The logical replication stream: whole committed transactions, in commit order, with
//! acknowledgement of what the consumer has made durable.
//!
//! A background task reads pgoutput messages from a walsender connection, assembles them into
//! [`Transaction`]s (relation cache, TOAST back-fill) and hands them to the consumer over a bounded
//! channel. The bound is the backpressure: when the consumer is slow the task stops reading, so
//! Postgres stops sending (and keeps the WAL). While waiting it still sends status updates, so the
//! walsender does not time the connection out.
//!
//! Acknowledgement is driven by the consumer: it stores in `flushed` the `end_lsn` of the last
//! transaction it has made durable, and the task reports that to Postgres (as write, flush and
//! apply position) within 100 ms of a change and at least every second. Postgres may then recycle
//! WAL up to there, and a later [`start_replication`] from 0 resumes after it. Postgres before 17
//! only writes a slot's confirmed position to disk when something else in the slot changes, so
//! after a server restart the last acknowledged transactions can arrive again: consumers must
//! replay idempotently (Ferrite's shape logs skip what they already hold). When the consumer has acknowledged everything
//! it was given and the stream is idle, the task also confirms the server's keepalive position, so
//! WAL written by unrelated tables and databases is not retained forever.
//!
//! Limitation: a transaction is held in memory until its commit arrives (pgoutput v1 does not
//! stream in-progress transactions), so a single huge transaction needs memory proportional to
//! its published changes.

use super::conn::ReplicationConnection;
use super::error::ReplicationError;
use super::lsn::format_lsn;
use super::pgoutput::{decode, OldTuple, OldTupleKind, PgOutputMessage, TupleValue, PG_EPOCH_OFFSET_MICROS};
pub use super::pgoutput::{Relation, RelationColumn};
use super::slot::validate_slot_name;
use bytes::Buf;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::{interval, Interval, MissedTickBehavior};

/// Transactions buffered between the stream task and the consumer.
const CHANNEL_CAPACITY: usize = 64;
/// How often a standby status update is sent, at least.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How often `flushed` is checked; an advance is reported at once rather than at the next
/// [`STATUS_INTERVAL`], which keeps the slot (and what a restart re-delivers) close to the
/// consumer's durable position.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long to retry when the slot is still held by a previous (dying) connection.
const SLOT_BUSY_RETRY: Duration = Duration::from_secs(10);

/// Where to stream from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// Connection URL (same syntax as [`crate::connect::connect`]); the user needs the
    /// `REPLICATION` attribute (or superuser).
    pub url: String,
    /// Logical slot (pgoutput), created by [`super::ensure_slot_and_publication`].
    pub slot: String,
    /// Publication whose tables are streamed.
    pub publication: String,
}

/// One committed transaction with its published changes, in the order they were made.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// 32-bit transaction id; equals `pg_current_xact_id()::xid` inside the transaction (clients
    /// match it against the txid a write returned).
    pub xid: u32,
    /// LSN of the commit record: the transaction's position in the log (Ferrite's offsets).
    pub commit_lsn: u64,
    /// LSN just past the commit record: store this in `flushed` once the transaction is durable.
    pub end_lsn: u64,
    /// Commit time in microseconds since the Unix epoch.
    pub commit_time_micros: i64,
    /// The changes; never empty (transactions without published changes are not delivered).
    pub changes: Vec<Change>,
}

/// One row change (or a truncate), values in Postgres text format aligned with
/// `relation.columns`.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A row was inserted.
    Insert {
        /// The table as of this change.
        relation: Arc<Relation>,
        /// The new row.
        new: Vec<Option<String>>,
    },
    /// A row was updated. Unchanged TOASTed values in `new` are already filled in from the old row.
    Update {
        /// The table as of this change.
        relation: Arc<Relation>,
        /// The old row: complete when `relation.replica_identity_full`; otherwise only the key
        /// columns are set (present only when the key changed), or `None`.
        old: Option<Vec<Option<String>>>,
        /// The complete new row.
        new: Vec<Option<String>>,
    },
    /// A row was deleted.
    Delete {
        /// The table as of this change.
        relation: Arc<Relation>,
        /// The old row: complete when `relation.replica_identity_full`, else only key columns set.
        old: Vec<Option<String>>,
    },
    /// Tables were truncated (all rows deleted at once; Ferrite rotates their shapes).
    Truncate {
        /// The truncated tables.
        relations: Vec<Arc<Relation>>,
    },
}

/// The receiving end of a replication stream.
pub type TransactionReceiver = mpsc::Receiver<Result<Transaction, ReplicationError>>;

/// Starts streaming from `start_lsn` (0 = slot's confirmed position) in a background task.
///
/// Transactions arrive in commit order on the returned receiver (bounded channel → backpressure).
/// The task answers keepalives and sends a standby status update at least every second with
/// write/flush/apply = the value in `flushed` (the consumer stores there the `end_lsn` up to which
/// it has made everything durable; when that covers everything delivered and the stream is idle,
/// the server's keepalive position is confirmed instead). On any error it sends `Err` once and
/// ends; the caller reconnects. Dropping the receiver or aborting the handle closes the
/// connection.
///
/// Errors before streaming starts (unreachable server, authentication, missing slot, slot in use
/// by another connection for longer than a few seconds) are returned directly.
pub async fn start_replication(
    cfg: &ReplicationConfig,
    start_lsn: u64,
    flushed: Arc<AtomicU64>,
) -> Result<(TransactionReceiver, tokio::task::JoinHandle<()>), ReplicationError> {
    start_replication_with(cfg, start_lsn, flushed, Arc::new(StreamProgress::default())).await
}

/// How far a stream has handed transactions to its consumer, and how far the consumer has
/// processed them: what tells a consumer that it has seen every transaction committed before a
/// WAL position (see [`StreamProgress::covers`]).
#[derive(Debug, Default)]
pub struct StreamProgress {
    /// Every transaction that committed before this position has been handed to the consumer:
    /// the server's position in its last keepalive received while no transaction was open.
    pub delivered_through: AtomicU64,
    /// Transactions handed to the consumer.
    pub delivered: AtomicU64,
    /// Transactions the consumer has processed (it counts them here).
    pub processed: AtomicU64,
    /// Highest commit LSN the consumer has processed (it records it here).
    pub processed_commit: AtomicU64,
    /// Set by anyone who wants a fresh server position soon: the stream then asks the server
    /// for a keepalive at once instead of waiting for its next one.
    pub wanted: std::sync::atomic::AtomicBool,
    /// Wakes the stream task when `wanted` is set.
    pub nudge: tokio::sync::Notify,
    /// The last position reported to Postgres as flushed (what the slot has confirmed, once the
    /// server takes it): a consumer stopping waits for it to reach what it made durable.
    pub reported: AtomicU64,
}

impl StreamProgress {
    /// Whether the consumer has processed every transaction that committed before `lsn`:
    /// it processed one committed at or after it (transactions come in commit order), or it
    /// has processed everything handed to it and the stream had handed over everything before
    /// `lsn`. When not, asks for a fresh position (see [`StreamProgress::wanted`]).
    pub fn covers(&self, lsn: u64) -> bool {
        if self.processed_commit.load(Ordering::Acquire) >= lsn {
            return true;
        }
        let through = self.delivered_through.load(Ordering::Acquire);
        let delivered = self.delivered.load(Ordering::Acquire);
        let processed = self.processed.load(Ordering::Acquire);
        if through >= lsn && processed >= delivered {
            return true;
        }
        self.wanted.store(true, Ordering::Release);
        self.nudge.notify_one();
        false
    }
}

/// [`start_replication`], reporting its progress in `progress`.
pub async fn start_replication_with(
    cfg: &ReplicationConfig,
    start_lsn: u64,
    flushed: Arc<AtomicU64>,
    progress: Arc<StreamProgress>,
) -> Result<(TransactionReceiver, tokio::task::JoinHandle<()>), ReplicationError> {
    validate_slot_name(&cfg.slot)?;
    let publication = ferrite_protocol::relation::quote_ident(&cfg.publication).replace('\'', "''");
    let command = format!(
        "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names '{}')",
        cfg.slot,
        format_lsn(start_lsn),
        publication
    );
    let started = Instant::now();
    let conn = loop {
        let mut conn = ReplicationConnection::connect(&cfg.url).await?;
        match conn.start_copy_both(&command).await {
            Ok(()) => break conn,
            // 55006 object_in_use: the slot's previous walsender has not exited yet.
            Err(e) if e.code() == Some("55006") && started.elapsed() < SLOT_BUSY_RETRY => {
                tracing::debug!(slot = %cfg.slot, "replication slot still active; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    };
    tracing::debug!(slot = %cfg.slot, start = %format_lsn(start_lsn), "replication streaming started");
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let slot = cfg.slot.clone();
    let handle = tokio::spawn(async move {
        let mut stream = Stream::new(conn, flushed, progress);
        match stream.run(&tx).await {
            Ok(()) => tracing::debug!(%slot, "replication stream consumer went away"),
            Err(e) => {
                tracing::debug!(%slot, error = %e, "replication stream failed");
                let _ = tx.send(Err(e)).await;
            }
        }
    });
    Ok((rx, handle))
}

/// A transaction between its Begin and Commit.
#[derive(Debug)]
struct PendingTxn {
    xid: u32,
    changes: Vec<Change>,
}

/// State of the stream task.
struct Stream {
    conn: ReplicationConnection,
    flushed: Arc<AtomicU64>,
    tick: Interval,
    /// When the last status update was sent.
    last_status: Instant,
    assembler: Assembler,
    /// `end_lsn` of the last transaction handed to the consumer.
    last_delivered_end: u64,
    /// Highest keepalive position seen while no transaction was open.
    idle_end: u64,
    /// Highest position reported to the server (never goes backwards).
    acked: u64,
    /// Shared with the consumer.
    progress: Arc<StreamProgress>,
}

impl Stream {
    fn new(conn: ReplicationConnection, flushed: Arc<AtomicU64>, progress: Arc<StreamProgress>) -> Stream {
        let mut tick = interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Stream {
            conn,
            flushed,
            tick,
            last_status: Instant::now(),
            assembler: Assembler::default(),
            last_delivered_end: 0,
            idle_end: 0,
            acked: 0,
            progress,
        }
    }

    /// Runs until an error (returned) or until the consumer goes away (`Ok`).
    async fn run(&mut self, tx: &mpsc::Sender<Result<Transaction, ReplicationError>>) -> Result<(), ReplicationError> {
        loop {
            tokio::select! {
                frame = self.conn.read_frame() => {
                    let frame = frame?;
                    match frame.tag {
                        b'd' => {
                            if let Some(txn) = self.handle_copy_data(frame.body)? {
                                if !self.deliver(tx, txn).await? {
                                    return Ok(());
                                }
                            }
                        }
                        // CopyDone, or CommandComplete/ReadyForQuery after a walsender finished at
                        // server shutdown: streaming is over either way.
                        b'c' | b'C' | b'Z' => {
                            return Err(ReplicationError::Closed("the server ended the replication stream".into()))
                        }
                        b'E' => return Err(ReplicationError::Server(crate::error::parse_error_fields(&frame.body))),
                        b'N' => {
                            let info = crate::error::parse_error_fields(&frame.body);
                            tracing::debug!(code = %info.code, "walsender notice: {}", info.message);
                        }
                        b'S' => {}
                        other => return Err(ReplicationError::Protocol(format!(
                            "unexpected message {:?} while streaming", other as char
                        ))),
                    }
                }
                _ = self.tick.tick() => self.maybe_send_status().await?,
                _ = self.progress.nudge.notified() => self.maybe_send_status().await?,
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    /// Hands a transaction to the consumer, keeping the walsender informed while the channel is
    /// full. Returns false when the consumer is gone.
    async fn deliver(
        &mut self,
        tx: &mpsc::Sender<Result<Transaction, ReplicationError>>,
        txn: Transaction,
    ) -> Result<bool, ReplicationError> {
        loop {
            tokio::select! {
                permit = tx.reserve() => {
                    let Ok(permit) = permit else { return Ok(false) };
                    self.last_delivered_end = self.last_delivered_end.max(txn.end_lsn);
                    permit.send(Ok(txn));
                    self.progress.delivered.fetch_add(1, Ordering::AcqRel);
                    return Ok(true);
                }
                _ = self.tick.tick() => self.maybe_send_status().await?,
            }
        }
    }

    /// Processes one CopyData message: XLogData (pgoutput) or a primary keepalive. Returns a
    /// transaction when one was committed.
    fn handle_copy_data(&mut self, body: bytes::Bytes) -> Result<Option<Transaction>, ReplicationError> {
        match parse_copy_data(body)? {
            CopyData::XLogData(msg) => self.assembler.apply(msg),
            CopyData::Keepalive { wal_end, reply_requested } => {
                if !self.assembler.in_transaction() {
                    self.idle_end = self.idle_end.max(wal_end);
                    // Every transaction before it was handed over before this keepalive.
                    self.progress.delivered_through.fetch_max(wal_end, Ordering::AcqRel);
                }
                if reply_requested {
                    // Answered on the next loop turn: an immediate tick with a forced update.
                    self.last_status = Instant::now() - STATUS_INTERVAL;
                    self.tick.reset_immediately();
                }
                Ok(None)
            }
        }
    }

    /// The position to report: what the consumer made durable, or — when it has everything it was
    /// given and no transaction is open — the last keepalive position. Never decreases.
    fn ack_position(&mut self) -> u64 {
        let flushed = self.flushed.load(Ordering::Acquire);
        let mut ack = self.acked.max(flushed);
        if !self.assembler.in_transaction() && flushed >= self.last_delivered_end {
            ack = ack.max(self.idle_end);
        }
        self.acked = ack;
        ack
    }

    /// Sends a status update when the position to report advanced or [`STATUS_INTERVAL`] passed.
    async fn maybe_send_status(&mut self) -> Result<(), ReplicationError> {
        let previous = self.acked;
        let ack = self.ack_position();
        let wanted = self.progress.wanted.swap(false, Ordering::AcqRel);
        if wanted || ack > previous || self.last_status.elapsed() >= STATUS_INTERVAL {
            self.send_status(ack, wanted).await?;
        }
        Ok(())
    }

    /// Sends a standby status update ('r') reporting `ack` as written, flushed and applied;
    /// `reply` asks the server for a keepalive at once (which carries its current position).
    async fn send_status(&mut self, ack: u64, reply: bool) -> Result<(), ReplicationError> {
        self.last_status = Instant::now();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64 - PG_EPOCH_OFFSET_MICROS)
            .unwrap_or(0);
        let mut msg = Vec::with_capacity(34);
        msg.push(b'r');
        msg.extend_from_slice(&ack.to_be_bytes());
        msg.extend_from_slice(&ack.to_be_bytes());
        msg.extend_from_slice(&ack.to_be_bytes());
        msg.extend_from_slice(&now.to_be_bytes());
        msg.push(u8::from(reply));
        self.conn.send_copy_data(&msg).await?;
        self.progress.reported.fetch_max(ack, Ordering::AcqRel);
        Ok(())
    }
}

/// One CopyData message of the replication stream.
///
/// Public (and hidden) only so that the fuzz target can drive [`parse_copy_data`] and
/// [`Assembler`] with bytes alone, without a socket; the server uses [`start_replication`].
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub enum CopyData {
    /// `w`: a pgoutput message (its WAL positions and send time are not needed).
    XLogData(PgOutputMessage),
    /// `k`: a primary keepalive.
    Keepalive {
        /// The server's current end of WAL.
        wal_end: u64,
        /// The server asks for a status update now.
        reply_requested: bool,
    },
}

/// Decodes the body of one CopyData message received while streaming.
#[doc(hidden)]
pub fn parse_copy_data(mut body: bytes::Bytes) -> Result<CopyData, ReplicationError> {
    let short = |what: &str| ReplicationError::Protocol(format!("short {what} message"));
    if body.is_empty() {
        return Err(short("CopyData"));
    }
    match body.get_u8() {
        b'w' => {
            if body.len() < 24 {
                return Err(short("XLogData"));
            }
            let _start = body.get_u64();
            let _wal_end = body.get_u64();
            let _send_time = body.get_i64();
            Ok(CopyData::XLogData(decode(&body)?))
        }
        b'k' => {
            if body.len() < 17 {
                return Err(short("keepalive"));
            }
            let wal_end = body.get_u64();
            let _send_time = body.get_i64();
            let reply_requested = body.get_u8() == 1;
            Ok(CopyData::Keepalive { wal_end, reply_requested })
        }
        other => Err(ReplicationError::Protocol(format!("unknown CopyData message {:?}", other as char))),
    }
}

/// Assembles pgoutput messages into [`Transaction`]s: keeps the relation cache and the
/// transaction between its Begin and Commit. A pure state machine (the stream task owns one), so
/// it is public — hidden — for the fuzz target, which feeds it arbitrary message sequences.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Assembler {
    relations: HashMap<u32, Arc<Relation>>,
    current: Option<PendingTxn>,
}

impl Assembler {
    /// True between a Begin and its Commit.
    pub fn in_transaction(&self) -> bool {
        self.current.is_some()
    }

    /// Applies one pgoutput message to the transaction being assembled.
    pub fn apply(&mut self, msg: PgOutputMessage) -> Result<Option<Transaction>, ReplicationError> {
        match msg {
            PgOutputMessage::Begin { xid, .. } => {
                if self.current.is_some() {
                    return Err(ReplicationError::Protocol("Begin inside an open transaction".into()));
                }
                self.current = Some(PendingTxn { xid, changes: vec![] });
                Ok(None)
            }
            PgOutputMessage::Commit { commit_lsn, end_lsn, commit_time, .. } => {
                let txn =
                    self.current.take().ok_or_else(|| ReplicationError::Protocol("Commit without Begin".into()))?;
                if txn.changes.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Transaction {
                    xid: txn.xid,
                    commit_lsn,
                    end_lsn,
                    commit_time_micros: commit_time.saturating_add(PG_EPOCH_OFFSET_MICROS),
                    changes: txn.changes,
                }))
            }
            PgOutputMessage::Relation(rel) => {
                self.relations.insert(rel.oid, rel);
                Ok(None)
            }
            PgOutputMessage::Origin { .. } | PgOutputMessage::Type { .. } | PgOutputMessage::Message { .. } => Ok(None),
            PgOutputMessage::Insert { relation_id, new } => {
                let relation = self.relation(relation_id)?;
                let new = row(&relation, new, "insert")?;
                self.push(Change::Insert { relation, new })
            }
            PgOutputMessage::Update { relation_id, old, new } => {
                let relation = self.relation(relation_id)?;
                let (old, new) = update_rows(&relation, old, new)?;
                self.push(Change::Update { relation, old, new })
            }
            PgOutputMessage::Delete { relation_id, old } => {
                let relation = self.relation(relation_id)?;
                let old = row(&relation, old.values, "delete")?;
                self.push(Change::Delete { relation, old })
            }
            PgOutputMessage::Truncate { relation_ids, .. } => {
                let relations = relation_ids.into_iter().map(|id| self.relation(id)).collect::<Result<Vec<_>, _>>()?;
                self.push(Change::Truncate { relations })
            }
        }
    }

    fn push(&mut self, change: Change) -> Result<Option<Transaction>, ReplicationError> {
        let txn = self
            .current
            .as_mut()
            .ok_or_else(|| ReplicationError::Protocol("row change outside a transaction".into()))?;
        txn.changes.push(change);
        Ok(None)
    }

    fn relation(&self, id: u32) -> Result<Arc<Relation>, ReplicationError> {
        self.relations
            .get(&id)
            .cloned()
            .ok_or_else(|| ReplicationError::Protocol(format!("change for relation {id} before its Relation message")))
    }
}

/// Converts a tuple to a row, refusing unchanged-TOAST markers (they only make sense in an
/// update's new row).
fn row(relation: &Relation, values: Vec<TupleValue>, what: &str) -> Result<Vec<Option<String>>, ReplicationError> {
    check_width(relation, values.len(), what)?;
    values
        .into_iter()
        .map(|v| match v {
            TupleValue::Null => Ok(None),
            TupleValue::Text(s) => Ok(Some(s)),
            TupleValue::UnchangedToast => {
                Err(ReplicationError::ReplicaIdentityNotFull { table: relation.quoted_name() })
            }
        })
        .collect()
}

/// The old and new rows of an update, with unchanged TOASTed values in the new row taken from the
/// full old row.
#[allow(clippy::type_complexity)]
fn update_rows(
    relation: &Relation,
    old: Option<OldTuple>,
    new: Vec<TupleValue>,
) -> Result<(Option<Vec<Option<String>>>, Vec<Option<String>>), ReplicationError> {
    check_width(relation, new.len(), "update")?;
    let full_old = matches!(old, Some(OldTuple { kind: OldTupleKind::Full, .. }));
    let old = match old {
        Some(t) => Some(row(relation, t.values, "update (old row)")?),
        None => None,
    };
    let mut out = Vec::with_capacity(new.len());
    for (i, v) in new.into_iter().enumerate() {
        out.push(match v {
            TupleValue::Null => None,
            TupleValue::Text(s) => Some(s),
            TupleValue::UnchangedToast => match (&old, full_old) {
                (Some(old), true) => old.get(i).cloned().flatten(),
                _ => return Err(ReplicationError::ReplicaIdentityNotFull { table: relation.quoted_name() }),
            },
        });
    }
    Ok((old, out))
}

fn check_width(relation: &Relation, n: usize, what: &str) -> Result<(), ReplicationError> {
    if n != relation.columns.len() {
        return Err(ReplicationError::Protocol(format!(
            "{what} on {} has {n} values but the relation has {} columns",
            relation.quoted_name(),
            relation.columns.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(full: bool) -> Relation {
        Relation {
            oid: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                RelationColumn { name: "id".into(), type_oid: 23, typmod: -1, is_key: true },
                RelationColumn { name: "big".into(), type_oid: 25, typmod: -1, is_key: full },
            ],
            replica_identity_full: full,
        }
    }

    #[test]
    fn fills_unchanged_toast_from_full_old_row() {
        let old = OldTuple {
            kind: OldTupleKind::Full,
            values: vec![TupleValue::Text("1".into()), TupleValue::Text("x".repeat(10))],
        };
        let (old, new) =
            update_rows(&rel(true), Some(old), vec![TupleValue::Text("2".into()), TupleValue::UnchangedToast]).unwrap();
        assert_eq!(new, vec![Some("2".into()), Some("x".repeat(10))]);
        assert_eq!(old.unwrap()[0].as_deref(), Some("1"));
    }

    #[test]
    fn unchanged_toast_without_full_old_row_names_the_table() {
        let err =
            update_rows(&rel(false), None, vec![TupleValue::Text("2".into()), TupleValue::UnchangedToast]).unwrap_err();
        assert!(matches!(&err, ReplicationError::ReplicaIdentityNotFull { table } if table == "\"public\".\"t\""));
        let key_only =
            OldTuple { kind: OldTupleKind::Key, values: vec![TupleValue::Text("1".into()), TupleValue::Null] };
        assert!(update_rows(
            &rel(false),
            Some(key_only),
            vec![TupleValue::Text("2".into()), TupleValue::UnchangedToast]
        )
        .is_err());
    }

    #[test]
    fn width_mismatch_is_an_error() {
        assert!(row(&rel(true), vec![TupleValue::Null], "insert").is_err());
    }

    /// `w` + start, end and send time around a pgoutput message.
    fn xlog(msg: &[u8]) -> bytes::Bytes {
        let mut b = vec![b'w'];
        b.extend_from_slice(&[0; 24]);
        b.extend_from_slice(msg);
        b.into()
    }

    #[test]
    fn assembles_copy_data_into_a_transaction() {
        let mut a = Assembler::default();
        let mut apply = |body: bytes::Bytes| match parse_copy_data(body).unwrap() {
            CopyData::XLogData(m) => a.apply(m).unwrap(),
            other => panic!("not XLogData: {other:?}"),
        };
        let mut relation = vec![b'R', 0, 0, 0, 1];
        relation.extend_from_slice(b"public\0t\0f\0\x01\x01id\0\0\0\0\x17\xff\xff\xff\xff");
        assert_eq!(apply(xlog(&relation)), None);
        let mut begin = vec![b'B'];
        begin.extend_from_slice(&[0; 16]);
        begin.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(apply(xlog(&begin)), None);
        assert_eq!(apply(xlog(b"I\0\0\0\x01N\0\x01t\0\0\0\x0242")), None);
        let mut commit = vec![b'C', 0];
        commit.extend_from_slice(&5u64.to_be_bytes());
        commit.extend_from_slice(&6u64.to_be_bytes());
        commit.extend_from_slice(&0i64.to_be_bytes());
        let txn = apply(xlog(&commit)).expect("a committed transaction");
        assert_eq!((txn.xid, txn.commit_lsn, txn.end_lsn), (7, 5, 6));
        assert!(matches!(&txn.changes[..], [Change::Insert { new, .. }] if new == &vec![Some("42".to_string())]));

        let mut keepalive = vec![b'k'];
        keepalive.extend_from_slice(&9u64.to_be_bytes());
        keepalive.extend_from_slice(&0i64.to_be_bytes());
        keepalive.push(1);
        assert_eq!(
            parse_copy_data(keepalive.into()).unwrap(),
            CopyData::Keepalive { wal_end: 9, reply_requested: true }
        );
        for bad in [&b""[..], b"w", b"k\0", b"x"] {
            assert!(parse_copy_data(bytes::Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}

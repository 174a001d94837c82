//! Applying client transactions exactly once, each in its own Postgres transaction together
//! with its recorded result.
//!
//! A request takes its client's lock for its whole batch and reads the client's marker (the
//! newest recorded result): a transaction at or below it is a retry and gets its recorded result
//! back. Otherwise its HLC is checked against the server clock and its mutations run — each one
//! takes its row key's lock, reads the row and its column clocks, asks the table's merge policy
//! ([`ferrite_core::merge`]) what to do, and writes the outcome with its new clocks — and the
//! result is recorded in the same Postgres transaction. A mutation that fails (unknown column,
//! bad value, constraint, write rule, server-wins conflict) rolls the whole Postgres transaction
//! back, so the client transaction is `rejected` with nothing of it applied; its rejection is
//! then recorded on its own and later transactions still run.
//!
//! Round trips are the cost that matters, so statements are pipelined: BEGIN goes out with the
//! first row's lock and read, each row's write goes out with the next row's lock and read
//! right behind it (so a transaction of n rows costs n + 1 round trips, not 2n), and a
//! transaction's last row write records the result in the same statement and carries COMMIT
//! along.
//!
//! The audit trail ([`ferrite_pg::audit`]): each mutation's outcome — the row's key, what
//! changed (old values from the row as read under its lock), merged or not — is collected as
//! it is applied, and the transaction's audit rows go out in one statement pipelined between
//! its last write and COMMIT, so they commit with it. A rejected transaction's rows are recorded
//! with its rejection, in one statement after the rollback; a retry answered from its recorded
//! result adds none. In a group of client transactions sharing a Postgres transaction (see
//! [`Writer::apply_locked`]) the rows of all of them, in transaction order, go out in one
//! statement with the group's COMMIT.

use crate::auth::{Auth, Identity, WriteKind};
use crate::pool::Pool;
use ferrite_core::merge::{self, Action, ColumnOrder, Current, Decision, Incoming, StoredRow, TablePolicy};
use ferrite_pg::audit::{self, AuditActor, AuditEntry};
use ferrite_pg::prepared::PreparedClient;
use ferrite_pg::write_store::{self, ClientProgress, StoredClocks};
use ferrite_pg::write_table::{self, ClockSave, RecordResult, WriteTable};
use ferrite_pg::PgError;
use ferrite_protocol::hlc::{Hlc, HlcClock, Stamp, DIRECT_WRITER};
use ferrite_protocol::key::row_key;
use ferrite_protocol::relation::QualifiedName;
use ferrite_protocol::write_protocol::{
    ClientTransaction, Mutation, Overridden, Rejection, RejectionCode, Status, TransactionResult, TransactionsRequest,
    Values,
};
use ferrite_where::{BoundRule, WhereClause};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Why a whole request could not be handled (nothing of it is applied past what is recorded).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Postgres is unreachable or failed mid-request; the client retries later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Postgres aborted the transaction to break a deadlock or a serialization conflict with a
    /// concurrent one; running it again is safe (nothing of it committed).
    #[error("transaction aborted by Postgres: {0}")]
    Aborted(String),
}

/// Attempts per client transaction when Postgres aborts it for a deadlock or serialization
/// conflict (mutations of several rows locked in different orders by concurrent clients).
const ATTEMPTS: usize = 4;

/// Client transactions that share one Postgres transaction at most (see
/// [`Writer::apply_locked`]). Each one that writes gets a subtransaction id, and Postgres keeps
/// up to 64 of a transaction's in its shared cache: past that every other session's snapshot
/// checks get slower, so a group stays well below.
const GROUP_TRANSACTIONS: usize = 48;
/// Mutations of one group at most: its row locks are held until the group commits, so a large
/// group would keep other clients' writes of the same rows waiting longer.
const GROUP_MUTATIONS: usize = 500;

/// Splits a request's transactions into the groups applied together: runs of consecutive
/// transactions within [`GROUP_TRANSACTIONS`] and [`GROUP_MUTATIONS`] (a transaction larger
/// than that is a group of its own).
fn groups(txns: &[ClientTransaction]) -> Vec<&[ClientTransaction]> {
    let mut out = vec![];
    let (mut start, mut mutations) = (0, 0);
    for (i, t) in txns.iter().enumerate() {
        let n = t.mutations.len();
        if i > start && (i - start == GROUP_TRANSACTIONS || mutations + n > GROUP_MUTATIONS) {
            out.push(&txns[start..i]);
            (start, mutations) = (i, 0);
        }
        mutations += n;
    }
    if start < txns.len() {
        out.push(&txns[start..]);
    }
    out
}

/// How a client transaction's Postgres work is framed.
#[derive(Clone, Copy)]
enum Frame<'g> {
    /// Its own Postgres transaction: BEGIN … COMMIT.
    Own,
    /// A savepoint inside its group's transaction (see [`Writer::apply_locked`]); its audit
    /// rows, once it is applied, wait in the group's [`GroupAudit`].
    Nested(&'g GroupAudit),
}

impl Frame<'_> {
    fn own(self) -> bool {
        matches!(self, Frame::Own)
    }

    fn begin(self) -> &'static str {
        match self {
            Frame::Own => "BEGIN",
            Frame::Nested(_) => "SAVEPOINT ferrite_txn",
        }
    }

    /// Ends it applied (in a group, the group's COMMIT makes it durable).
    fn end(self) -> &'static str {
        match self {
            Frame::Own => "COMMIT",
            Frame::Nested(_) => "RELEASE SAVEPOINT ferrite_txn",
        }
    }

    /// Undoes all of it (and nothing of the group's other transactions).
    fn undo(self) -> &'static str {
        match self {
            Frame::Own => "ROLLBACK",
            Frame::Nested(_) => "ROLLBACK TO SAVEPOINT ferrite_txn; RELEASE SAVEPOINT ferrite_txn",
        }
    }
}

/// The audit rows of a group's applied transactions, by transaction id: recorded in one
/// statement with the group's COMMIT (one statement per transaction was about a fifth of the
/// write path's cost).
#[derive(Default)]
struct GroupAudit(Mutex<Vec<(i64, Vec<AuditEntry>)>>);

impl GroupAudit {
    fn add(&self, txn_id: i64, entries: Vec<AuditEntry>) {
        if !entries.is_empty() {
            self.0.lock().push((txn_id, entries));
        }
    }
}

/// Applies client transactions; shared by all requests.
pub struct Writer {
    pool: Pool<PreparedClient>,
    policies: HashMap<QualifiedName, TablePolicy>,
    default_policy: TablePolicy,
    tables: Mutex<HashMap<QualifiedName, Arc<WriteTable>>>,
    clock: Mutex<HlcClock>,
    /// The server's clock, which the HLC reads.
    wall: ferrite_protocol::clock::Clock,
    store_ready: tokio::sync::OnceCell<()>,
    auth: Arc<Auth>,
    max_mutations: usize,
    /// Whether client transactions are recorded in `ferrite.audit` (`audit_retention` not off).
    audit: bool,
}

/// Why one mutation stops its transaction.
enum Stop {
    /// Rejected with a reason the client shows.
    Rejected(Rejection),
    /// Postgres aborted the transaction (deadlock, serialization failure): try it again.
    Aborted(String),
    /// Postgres failed in a way that is not about this transaction (connection, shutdown).
    Unavailable(String),
}

impl From<PgError> for Stop {
    fn from(e: PgError) -> Self {
        classify(e, None, None, false)
    }
}

/// Maps a Postgres error to a rejection (data and constraint errors) or an outage. A constraint's
/// DETAIL (e.g. the key of the row a unique constraint collided with) is passed on only with
/// `detail`: with auth on it could reveal rows outside the caller's read rule.
fn classify(e: PgError, table: Option<&str>, key: Option<&Values>, detail: bool) -> Stop {
    let reject = |code, message: String| {
        Stop::Rejected(Rejection { code, message, table: table.map(String::from), key: key.cloned(), current: None })
    };
    match e.db() {
        Some(db) if db.code.starts_with("23") => {
            let mut m = db.message.clone();
            if let Some(d) = db.detail.as_ref().filter(|_| detail) {
                m.push_str(&format!(" ({d})"));
            }
            reject(RejectionCode::Constraint, m)
        }
        // Data exceptions (bad input syntax, out of range), undefined column/table, wrong type.
        Some(db) if db.code.starts_with("22") || db.code.starts_with("42") => {
            reject(RejectionCode::Invalid, db.message.clone())
        }
        Some(db) if db.code.starts_with("40") => Stop::Aborted(db.message.clone()),
        _ if e.is_transient() => Stop::Unavailable(e.to_string()),
        _ => Stop::Unavailable(e.to_string()),
    }
}

/// A request-level outage from a Postgres error.
fn unavailable(e: PgError) -> WriteError {
    WriteError::Unavailable(e.to_string())
}

/// Errors that mean the table changed under a cached definition or statement: undefined
/// column or table, a cached plan whose result type changed.
fn schema_changed(e: &PgError) -> bool {
    e.db().is_some_and(|db| matches!(db.code.as_str(), "42703" | "42P01" | "0A000" | "42804"))
}

fn invalid(message: impl Into<String>, table: &str, key: Option<&Values>) -> Stop {
    Stop::Rejected(Rejection {
        code: RejectionCode::Invalid,
        message: message.into(),
        table: Some(table.to_string()),
        key: key.cloned(),
        current: None,
    })
}

/// Test failpoint: with `FERRITE_FAILPOINT=crash-after-commit` the process aborts right after a
/// client transaction commits, before any response is written — the crash the exactly-once
/// marker exists for. Read once.
fn crash_after_commit() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FERRITE_FAILPOINT").is_ok_and(|v| v == "crash-after-commit"))
}

impl Writer {
    /// A writer over `write_connections` Postgres connections with the configured table
    /// policies, stamping writes by `wall`; the error names a table whose settings cannot be used.
    pub fn new(
        config: &crate::config::ServerConfig,
        auth: Arc<Auth>,
        wall: ferrite_protocol::clock::Clock,
    ) -> Result<Writer, String> {
        let mut policies = HashMap::new();
        for (name, cfg) in &config.tables {
            let table = QualifiedName::parse(name).map_err(|e| format!("tables.{name}: {e}"))?;
            let policy =
                super::policy::table_policy(cfg, config.default_conflict).map_err(|e| format!("tables.{name}: {e}"))?;
            policies.insert(table, policy);
        }
        Ok(Writer {
            pool: Pool::new(&config.database_url, config.write_connections),
            policies,
            default_policy: super::policy::table_policy(&Default::default(), config.default_conflict)?,
            tables: Mutex::new(HashMap::new()),
            clock: Mutex::new(HlcClock::new(config.max_clock_skew_ms)),
            wall,
            store_ready: tokio::sync::OnceCell::new(),
            auth,
            max_mutations: config.max_mutations_per_transaction,
            audit: config.audit_retention.enabled(),
        })
    }

    /// Creates Ferrite's bookkeeping tables (the audit trail among them) if they do not exist,
    /// once per server; the server calls it at start so `ferrite.audit` can be read as a shape
    /// before the first write.
    pub async fn ensure_store(&self) -> Result<(), WriteError> {
        if self.store_ready.initialized() {
            return Ok(());
        }
        let conn = self.pool.get().await.map_err(|e| WriteError::Unavailable(e.to_string()))?;
        self.store_ready
            .get_or_try_init(|| async { write_store::ensure_write_store(conn.client().client()).await })
            .await
            .map_err(|e| WriteError::Unavailable(format!("creating the ferrite schema: {e}")))?;
        conn.release();
        Ok(())
    }

    /// Deletes audit rows older than `retention`, in bounded batches ([`audit::sweep`]);
    /// returns how many went.
    pub async fn sweep_audit(&self, retention: std::time::Duration) -> Result<u64, WriteError> {
        self.ensure_store().await?;
        let conn = self.pool.get().await.map_err(|e| WriteError::Unavailable(e.to_string()))?;
        let deleted =
            audit::sweep(conn.client(), retention, std::time::Duration::from_millis(50)).await.map_err(unavailable)?;
        conn.release();
        Ok(deleted)
    }

    /// Applies a request's transactions in order and returns one result per transaction.
    /// `who` is the caller when auth is on: the client's state is kept per (subject, client id),
    /// and each table's write rule is checked with its claims.
    ///
    /// The request holds its client's lock throughout (see [`write_store`]), so the client's
    /// marker read at the start stays true and is advanced here as transactions are recorded.
    /// The connection goes back to the pool only once the lock is released; after an error, or
    /// if this future is dropped half way, it is closed instead, which ends whatever transaction
    /// and lock it held. (The HTTP handler runs this in its own task, so a client that hangs up
    /// does not cut a batch short.)
    pub async fn apply(
        &self,
        req: &TransactionsRequest,
        who: Option<&Identity>,
    ) -> Result<Vec<TransactionResult>, WriteError> {
        let conn = self.pool.get().await.map_err(|e| WriteError::Unavailable(e.to_string()))?;
        self.store_ready
            .get_or_try_init(|| async { write_store::ensure_write_store(conn.client().client()).await })
            .await
            .map_err(|e| WriteError::Unavailable(format!("creating the ferrite schema: {e}")))?;
        let c = conn.client();
        let key = write_store::client_key(&req.client_id, who.map(|w| w.subject.as_str()));
        let outcome = async {
            let progress = write_store::lock_client(c, &key).await.map_err(unavailable)?;
            let results = self.apply_locked(c, &key, req, who, progress).await;
            write_store::unlock_client(c, &key).await.map_err(unavailable)?;
            results
        }
        .await;
        if outcome.is_ok() {
            conn.release();
        }
        outcome
    }

    /// `client_id` is the client key (id scoped by subject, see [`write_store::client_key`]).
    ///
    /// Consecutive transactions are applied in groups ([`groups`]): a group's client
    /// transactions share one Postgres transaction, each in its own savepoint, so a request of
    /// many pays for one commit per group instead of one per client transaction. Each still
    /// commits with its recorded result (the group commits them together), and a rejected one
    /// is rolled back to its savepoint alone, its rejection recorded in the group. A group that
    /// cannot commit as a whole — Postgres aborted it (deadlock, serialization), or a deferred
    /// constraint failed at COMMIT — left nothing behind and is applied again one client
    /// transaction per Postgres transaction, as a lone transaction always is.
    async fn apply_locked(
        &self,
        c: &PreparedClient,
        client_id: &str,
        req: &TransactionsRequest,
        who: Option<&Identity>,
        progress: ClientProgress,
    ) -> Result<Vec<TransactionResult>, WriteError> {
        let mut last_id = progress.last_id;
        let mut results = Vec::with_capacity(req.transactions.len());
        for group in groups(&req.transactions) {
            if group.len() > 1 {
                if let Some((applied, last)) = self.apply_group(c, client_id, who, group, last_id).await? {
                    results.extend(applied);
                    last_id = last;
                    continue;
                }
            }
            for txn in group {
                results.push(self.apply_next(c, client_id, who, txn, &mut last_id, Frame::Own).await?);
            }
        }
        Ok(results)
    }

    /// Applies `group` in one Postgres transaction ([`Frame::Nested`]); `None` when it was
    /// rolled back as a whole and must be applied again one by one (see [`Self::apply_locked`]).
    async fn apply_group(
        &self,
        c: &PreparedClient,
        client_id: &str,
        who: Option<&Identity>,
        group: &[ClientTransaction],
        mut last_id: i64,
    ) -> Result<Option<(Vec<TransactionResult>, i64)>, WriteError> {
        c.client().batch_execute("BEGIN").await.map_err(|e| unavailable(e.into()))?;
        let mut results = Vec::with_capacity(group.len());
        let audit = GroupAudit::default();
        for txn in group {
            match self.apply_next(c, client_id, who, txn, &mut last_id, Frame::Nested(&audit)).await {
                Ok(result) => results.push(result),
                Err(WriteError::Aborted(m)) => {
                    tracing::debug!(client_id, reason = %m, "a group of client transactions was aborted; applying them one by one");
                    c.client().batch_execute("ROLLBACK").await.map_err(|e| unavailable(e.into()))?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        let audited = audit.0.into_inner();
        let record = audit::record_group(c, actor(client_id, who, 0), &audited);
        let commit = async { c.client().batch_execute("COMMIT").await.map_err(PgError::from) };
        match tokio::try_join!(biased; record, commit) {
            Ok(_) => {}
            // A deferred constraint (or a serialization failure) at COMMIT: the transaction is
            // over and nothing of it kept; applied one by one, the failure is its own
            // transaction's rejection. (If recording the audit rows failed, Postgres answers
            // COMMIT with a rollback: the same.)
            Err(e) if e.db().is_some() => {
                tracing::debug!(client_id, error = %e, "a group of client transactions failed at COMMIT; applying them one by one");
                return Ok(None);
            }
            Err(e) => return Err(unavailable(e)),
        }
        if crash_after_commit() {
            std::process::abort();
        }
        Ok(Some((results, last_id)))
    }

    /// Applies (or answers a retry of) the client's next transaction in `frame`, moving
    /// `last_id`, the client's marker, past it.
    async fn apply_next(
        &self,
        c: &PreparedClient,
        client_id: &str,
        who: Option<&Identity>,
        txn: &ClientTransaction,
        last_id: &mut i64,
        frame: Frame<'_>,
    ) -> Result<TransactionResult, WriteError> {
        let id = i64::try_from(txn.id).unwrap_or(i64::MAX);
        if id <= *last_id {
            // A retry: answer what happened the first time.
            let recorded = write_store::recorded_result(c, client_id, id).await.map_err(unavailable)?;
            return Ok(match recorded.and_then(|v| serde_json::from_value(v).ok()) {
                Some(r) => r,
                None => rejected(txn.id, RejectionCode::Invalid, format!(
                    "transaction {} is at or below the last one applied for this client ({last_id}) and no result is recorded for it",
                    txn.id
                )),
            });
        }
        if txn.mutations.len() > self.max_mutations {
            let message =
                format!("at most {} mutations per transaction (got {})", self.max_mutations, txn.mutations.len());
            let result = rejected(txn.id, RejectionCode::Invalid, message);
            let result = self.record_rejection(c, client_id, who, txn, result, frame).await?;
            *last_id = id;
            return Ok(result);
        }
        let mut attempt = 1;
        let result = loop {
            match self.apply_one(c, client_id, who, txn, frame).await {
                // In a group, the whole group starts over (its other transactions' locks may be
                // what the deadlock was about).
                Err(WriteError::Aborted(m)) if frame.own() && attempt < ATTEMPTS => {
                    tracing::debug!(client_id, id = txn.id, attempt, reason = %m, "retrying an aborted client transaction");
                    attempt += 1;
                }
                Err(WriteError::Aborted(m)) if frame.own() => {
                    break Err(WriteError::Unavailable(format!("transaction aborted by Postgres: {m}")))
                }
                other => break other,
            }
        }?;
        // Old results are pruned each time the ids cross a multiple of 1,000 (a client's ids
        // may skip any given value).
        if id / 1000 != (*last_id).max(0) / 1000 {
            write_store::prune_results(c, client_id, id).await.map_err(unavailable)?;
        }
        *last_id = id;
        Ok(result)
    }

    /// One client transaction in one Postgres transaction, recorded with its result; or, when
    /// rejected, nothing of it and the rejection recorded on its own.
    async fn apply_one(
        &self,
        c: &PreparedClient,
        client_id: &str,
        who: Option<&Identity>,
        txn: &ClientTransaction,
        frame: Frame<'_>,
    ) -> Result<TransactionResult, WriteError> {
        let id = i64::try_from(txn.id).unwrap_or(i64::MAX);
        let stamp = match self.stamp(client_id, txn.hlc) {
            Ok(s) => s,
            Err((code, message)) => {
                return self.record_rejection(c, client_id, who, txn, rejected(txn.id, code, message), frame).await
            }
        };
        // BEGIN goes out in the same round trip as the first mutation's reads.
        let begin =
            async { c.client().batch_execute(frame.begin()).await.map_err(|e| Stop::Unavailable(e.to_string())) };
        let applied = tokio::try_join!(biased; begin, self.apply_mutations(c, txn, &stamp, who, client_id, frame))
            .map(|(_, applied)| applied);
        let MutationsOutcome { overridden, xid, changed, committed, audit } = match applied {
            Ok(done) => done,
            Err(stop) => {
                c.client().batch_execute(frame.undo()).await.map_err(|e| unavailable(e.into()))?;
                return match stop {
                    Stop::Rejected(rejection) => {
                        let result = rejection_result(txn.id, rejection);
                        self.record_rejection(c, client_id, who, txn, result, frame).await
                    }
                    Stop::Aborted(m) => Err(WriteError::Aborted(m)),
                    Stop::Unavailable(m) => Err(WriteError::Unavailable(m)),
                };
            }
        };
        if let Some(result) = committed {
            // The last row write carried the result record and COMMIT.
            if frame.own() && crash_after_commit() {
                std::process::abort();
            }
            return Ok(result);
        }
        let result = applied_result(txn.id, xid, overridden, changed);
        let actor = actor(client_id, who, id);
        if let Err(e) = record_and_commit(c, client_id, id, &result, actor, &audit, frame).await {
            // A deferred constraint fails at COMMIT: a rejection like any other constraint.
            return match classify(e, None, None, !self.auth.enabled()) {
                Stop::Rejected(rejection) => {
                    let _ = c.client().batch_execute(frame.undo()).await;
                    let result = rejection_result(txn.id, rejection);
                    self.record_rejection(c, client_id, who, txn, result, frame).await
                }
                Stop::Aborted(m) => Err(WriteError::Aborted(m)),
                Stop::Unavailable(m) => Err(WriteError::Unavailable(m)),
            };
        }
        if frame.own() && crash_after_commit() {
            std::process::abort();
        }
        Ok(result)
    }

    /// Records a rejected transaction's result on its own (its effects were rolled back), with
    /// its audit rows in the same statement — or, in a group, with the group's audit rows.
    async fn record_rejection(
        &self,
        c: &PreparedClient,
        client_id: &str,
        who: Option<&Identity>,
        txn: &ClientTransaction,
        result: TransactionResult,
        frame: Frame<'_>,
    ) -> Result<TransactionResult, WriteError> {
        let id = i64::try_from(result.id).unwrap_or(i64::MAX);
        let recorded = serde_json::to_value(&result).unwrap_or(Value::Null);
        let entries = if self.audit { self.rejected_entries(txn, result.error.as_ref()) } else { vec![] };
        match frame {
            Frame::Own => audit::record_rejection(c, client_id, &recorded, actor(client_id, who, id), &entries)
                .await
                .map_err(unavailable)?,
            // The audit rows with the group's others, in transaction order.
            Frame::Nested(group) => {
                write_store::record_result(c, client_id, id, &recorded).await.map_err(unavailable)?;
                group.add(id, entries);
            }
        }
        Ok(result)
    }

    /// The audit rows of a rejected transaction: one per mutation, with what it asked for.
    /// Its row key is known when the table's definition is cached (it is once a mutation of it
    /// was read) or the mutation names it (`key` of an update or delete).
    fn rejected_entries(&self, txn: &ClientTransaction, rejection: Option<&Rejection>) -> Vec<AuditEntry> {
        let why = rejection.map_or_else(|| "rejected".to_string(), |r| format!("{}: {}", r.code.as_str(), r.message));
        txn.mutations
            .iter()
            .map(|m| {
                let name = QualifiedName::parse(m.table()).ok();
                let table = name.as_ref().and_then(|n| self.tables.lock().get(n).cloned());
                let source = m.key_source();
                let key: Option<Values> = match &table {
                    Some(t) => t
                        .schema
                        .key_columns()
                        .into_iter()
                        .map(|i| {
                            let col = &t.schema.columns[i].name;
                            source.get(col).cloned().flatten().map(|v| (col.clone(), Some(v)))
                        })
                        .collect(),
                    None if !matches!(m, Mutation::Insert { .. }) => Some(source.clone()),
                    None => None,
                };
                let key_text = match (&table, &key) {
                    (Some(t), Some(k)) => Some(row_key(&t.schema, &aligned_vec(t, k))),
                    _ => None,
                };
                // The row the rejection names, or another row of the same transaction.
                let named = rejection.is_some_and(|r| {
                    r.table.as_deref() == Some(m.table())
                        && r.key.as_ref().is_none_or(|k| k.iter().all(|(c, v)| source.get(c) == Some(v)))
                });
                let changes: Map<String, Value> = m
                    .written()
                    .map(|w| w.iter().map(|(c, v)| (c.clone(), serde_json::json!({ "new": v }))).collect())
                    .unwrap_or_default();
                AuditEntry {
                    tbl: name.map_or_else(|| m.table().to_string(), |n| n.quoted()),
                    row_key: key.as_ref().map(values_json),
                    key: key_text,
                    op: op_name(m),
                    outcome: "rejected",
                    reason: Some(if named || rejection.and_then(|r| r.table.as_ref()).is_none() {
                        why.clone()
                    } else {
                        format!("rejected with its transaction ({why})")
                    }),
                    changes: Value::Object(changes),
                }
            })
            .collect()
    }

    /// The audit row of one applied mutation: what changed on the row (old values from the row
    /// as read under its lock, new ones as written), and whether the policy kept some current
    /// values. `None` when the audit trail is off.
    fn applied_entry(
        &self,
        m: &Mutation,
        read: &RowRead,
        action: Option<&Action>,
        overridden: &[String],
    ) -> Option<AuditEntry> {
        if !self.audit {
            return None;
        }
        let old: Option<Values> = read.row.as_ref().map(|(v, _)| aligned_map(&read.table, v));
        let before = |col: &str| old.as_ref().and_then(|o| o.get(col)).cloned().flatten();
        let mut changes = Map::new();
        match action {
            Some(Action::Insert { values, .. }) | Some(Action::Update { set: values, .. }) => {
                for (col, new) in values {
                    let was = before(col);
                    if old.is_none() || was != *new {
                        changes.insert(col.clone(), serde_json::json!({ "old": was, "new": new }));
                    }
                }
            }
            Some(Action::Delete { .. }) => {
                for (col, was) in old.iter().flatten() {
                    changes.insert(col.clone(), serde_json::json!({ "old": was, "new": null }));
                }
            }
            _ => {}
        }
        let merged = !overridden.is_empty();
        Some(AuditEntry {
            tbl: read.table_text.clone(),
            row_key: Some(values_json(&read.key)),
            key: Some(read.key_text.clone()),
            op: op_name(m),
            outcome: if merged { "merged" } else { "applied" },
            reason: merged.then(|| {
                format!(
                    "kept the current value of {} under the table's conflict policy (the incoming value lost to a newer or winning write)",
                    overridden.join(", ")
                )
            }),
            changes: Value::Object(changes),
        })
    }

    /// Checks the transaction's HLC against the server clock.
    fn stamp(&self, client_id: &str, hlc: Hlc) -> Result<Stamp, (RejectionCode, String)> {
        self.clock.lock().receive(hlc, self.wall.wall_ms()).map_err(|e| (RejectionCode::ClockSkew, e.to_string()))?;
        Ok(Stamp { hlc, client_id: client_id.to_string() })
    }

    /// Applies the mutations in order (see [`MutationsOutcome`]).
    async fn apply_mutations(
        &self,
        c: &PreparedClient,
        txn: &ClientTransaction,
        stamp: &Stamp,
        who: Option<&Identity>,
        client_id: &str,
        frame: Frame<'_>,
    ) -> Result<MutationsOutcome, Stop> {
        let mut overridden = vec![];
        let mut audit = vec![];
        let mut xid = None;
        let mut changed = false;
        let n = txn.mutations.len();
        let id = i64::try_from(txn.id).unwrap_or(i64::MAX);
        let mut read = match txn.mutations.first() {
            Some(m) => Some(self.read_row(c, m, who, None).await?),
            None => None,
        };
        for (i, m) in txn.mutations.iter().enumerate() {
            let Some(row) = read.take() else { break };
            let tail = (i + 1 == n).then(|| Tail {
                client_id,
                txn_id: txn.id,
                overridden: &overridden,
                actor: actor(client_id, who, id),
                audit: &audit,
                frame,
            });
            // The next row's lock and read go out right behind this row's write, in the same
            // round trip; a failure of this row's write is the one reported.
            let (sent, after) = sent_signal();
            let write = self.write_row(c, m, stamp, row, tail, sent);
            let (written, next) = match txn.mutations.get(i + 1) {
                Some(next) => {
                    let (w, r) = tokio::join!(biased; write, self.read_row(c, next, who, Some(after)));
                    (w, Some(r))
                }
                None => (write.await, None),
            };
            let written = written?;
            read = next.transpose()?;
            match written {
                RowOutcome::Committed { xid, result } => {
                    return Ok(MutationsOutcome {
                        overridden: vec![],
                        xid,
                        changed: true,
                        committed: Some(result),
                        audit: vec![],
                    });
                }
                RowOutcome::Applied { overridden: o, xid: x, wrote, audit: entry } => {
                    overridden.extend(o);
                    audit.extend(entry);
                    xid = Some(x);
                    changed |= wrote;
                }
            }
        }
        let xid = match xid {
            Some(x) => x,
            None => c.query_one("SELECT (txid_current() % 4294967296)::bigint", &[]).await?.get::<_, i64>(0) as u32,
        };
        Ok(MutationsOutcome { overridden, xid, changed, committed: None, audit })
    }

    /// The write-side definition of `table` (columns, key, statements), from the cache or, when
    /// not cached or `reload`, from the catalog over `c`; `None` if there is no such table.
    pub async fn table(
        &self,
        c: &PreparedClient,
        name: &QualifiedName,
        reload: bool,
    ) -> Result<Option<Arc<WriteTable>>, PgError> {
        if !reload {
            if let Some(t) = self.tables.lock().get(name).cloned() {
                return Ok(Some(t));
            }
        }
        let Some(t) = write_table::load_write_table(c.client(), name).await? else { return Ok(None) };
        let t = Arc::new(t);
        self.tables.lock().insert(name.clone(), t.clone());
        Ok(Some(t))
    }

    /// The table for a mutation, from the cache or the catalog; reloaded once when the mutation
    /// names a column the cached copy does not know (the table may have been altered).
    async fn table_for(&self, c: &PreparedClient, m: &Mutation) -> Result<(QualifiedName, Arc<WriteTable>), Stop> {
        let name = QualifiedName::parse(m.table()).map_err(|e| invalid(format!("table: {e}"), m.table(), None))?;
        if name.is_reserved() {
            return Err(Stop::Rejected(Rejection {
                code: RejectionCode::Forbidden,
                message: format!(
                    "table {} is in a schema clients cannot write (Ferrite's own or Postgres's)",
                    name.quoted()
                ),
                table: Some(m.table().to_string()),
                key: None,
                current: None,
            }));
        }
        let named = |t: &WriteTable| m.columns().all(|c| t.schema.column_index(c).is_some());
        if let Some(t) = self.table(c, &name, false).await? {
            if named(&t) {
                return Ok((name, t));
            }
        }
        match self.table(c, &name, true).await? {
            Some(t) => Ok((name, t)),
            None => Err(invalid(format!("table {} does not exist", name.quoted()), m.table(), None)),
        }
    }

    /// The caller's write rule, compiled against the table's schema; a rule with subqueries
    /// is compiled against the tables they read, loaded like the tables written. A write rule
    /// may read the current time too. The outer
    /// error is Postgres failing to load a table, the inner one a rule that does not compile.
    pub(crate) async fn compile_write_rule(
        &self,
        c: &PreparedClient,
        rule: &ferrite_where::BoundRule,
        schema: &ferrite_protocol::schema::TableSchema,
    ) -> Result<Result<WhereClause, ferrite_where::WhereError>, PgError> {
        // A subquery needs the word SELECT; most rules have none and skip the second parse.
        if !rule.sql.to_ascii_lowercase().contains("select") {
            return Ok(WhereClause::compile_rule_with(rule, schema, &RuleTables::default()));
        }
        let read = match ferrite_where::tables_read(&rule.sql) {
            Ok(read) => read,
            Err(e) => return Ok(Err(e)),
        };
        let mut catalog = RuleTables::default();
        for inner in read {
            if let Some(t) = self.table(c, &inner, false).await? {
                catalog.0.insert(inner, Arc::new(t.schema.clone()));
            }
        }
        Ok(WhereClause::compile_rule_with(rule, schema, &catalog))
    }

    /// Whether a caller with `read` access may see `values`, a row of `table`, now (a rule that
    /// reads the clock, by the server's). A read rule with subqueries does not compile here:
    /// such a caller is not shown the row (fail closed).
    fn readable(&self, read: &ReadAccess, table: &WriteTable, values: &Values) -> bool {
        match read {
            ReadAccess::All => true,
            ReadAccess::Nothing => false,
            // No tables to read: a rule with subqueries fails to compile.
            ReadAccess::Rule(rule) => WhereClause::compile_rule_with(rule, &table.schema, &RuleTables::default())
                .is_ok_and(|r| {
                    r.matches_at(&aligned_vec(table, values), &ferrite_where::subquery::NoSets, self.wall.wall())
                        .unwrap_or(false)
                }),
        }
    }

    /// The conflict policy of a table.
    fn policy(&self, name: &QualifiedName) -> &TablePolicy {
        self.policies.get(name).unwrap_or(&self.default_policy)
    }

    /// Why a statement of mutation `m` (on row `key` of `name`) failed. When the table changed
    /// under the cached copy, that copy and the statements built from it are dropped (reloaded
    /// on next use).
    fn reject(&self, c: &PreparedClient, name: &QualifiedName, m: &Mutation, key: &Values, e: PgError) -> Stop {
        if schema_changed(&e) {
            self.tables.lock().remove(name);
            c.forget_statements();
        }
        classify(e, Some(m.table()), Some(key), !self.auth.enabled())
    }

    /// Checks one mutation and reads its row and clocks under the row key's lock. Sends nothing
    /// before `after` fires: the previous mutation's last statement goes out first, so this read
    /// sees its effects (Postgres runs a connection's statements in the order they are sent).
    async fn read_row(
        &self,
        c: &PreparedClient,
        m: &Mutation,
        who: Option<&Identity>,
        after: Option<oneshot::Receiver<()>>,
    ) -> Result<RowRead, Stop> {
        if let Some(after) = after {
            let _ = after.await; // fired, or dropped when the previous mutation ended
        }
        // jwt mode: a table without a write rule is refused before it is looked up, so the answer
        // is the same whether or not it exists (a token cannot probe the database's tables).
        if let Ok(name) = QualifiedName::parse(m.table()) {
            if let Err(e) = self.auth.write_filter(&name, who) {
                return Err(Stop::Rejected(Rejection {
                    code: RejectionCode::Forbidden,
                    message: e.to_string(),
                    table: Some(m.table().to_string()),
                    key: None,
                    current: None,
                }));
            }
        }
        let (name, table) = self.table_for(c, m).await?;
        let schema = &table.schema;
        for c in m.columns() {
            if schema.column_index(c).is_none() {
                return Err(invalid(
                    format!("column {c:?} does not exist in table {}", name.quoted()),
                    m.table(),
                    Some(m.key_source()),
                ));
            }
        }
        // The row's key: from `key` (update/delete) or the inserted values.
        let key_source = m.key_source();
        let mut key = Values::new();
        for i in schema.key_columns() {
            let col = &schema.columns[i].name;
            match key_source.get(col) {
                Some(Some(v)) => {
                    key.insert(col.clone(), Some(v.clone()));
                }
                _ => return Err(invalid(format!("missing primary key column {col:?}"), m.table(), Some(key_source))),
            }
        }
        if let Mutation::Update { value, .. } = m {
            for (col, v) in &key {
                if value.get(col).is_some_and(|nv| nv != v) {
                    return Err(invalid(
                        format!("primary key column {col:?} cannot be updated: delete the row and insert a new one"),
                        m.table(),
                        Some(&key),
                    ));
                }
            }
        }
        let aligned: Vec<Option<String>> = schema.columns.iter().map(|c| key.get(&c.name).cloned().flatten()).collect();
        let key_text = row_key(schema, &aligned);
        if let Some(why) = merge::missing_base(self.policy(&name), &incoming(m)) {
            return Err(invalid(why, m.table(), Some(&key)));
        }
        let table_text = name.quoted();
        let reject_here = |e: PgError| self.reject(c, &name, m, &key, e);

        let forbidden = |message: String| forbidden(m.table(), &key, message);
        // The caller's write rule, compiled against the table; checked on the row before and after.
        let rule = match self.auth.write_filter(&name, who) {
            Err(e) => return Err(forbidden(e.to_string())),
            Ok(None) => None,
            Ok(Some(rule)) => Some(self.compile_write_rule(c, &rule, schema).await?.map_err(|e| {
                forbidden(format!("the write rule of table {} cannot be evaluated: {e}", name.quoted()))
            })?),
        };
        // The further conditions per kind of write (which applies is known once the row is read).
        let mut kinds: [Option<WhereClause>; 3] = [None, None, None];
        for (slot, kind) in kinds.iter_mut().zip(WriteKind::ALL) {
            if let Some(rule) = self.auth.kind_filter(&name, who, kind) {
                *slot = Some(self.compile_write_rule(c, &rule, schema).await?.map_err(|e| {
                    forbidden(format!("the {} rule of table {} cannot be evaluated: {e}", kind.name(), name.quoted()))
                })?);
            }
        }
        // Before taking any lock on the row: when the rule reads only columns the mutation gives
        // (its key and the values it writes), the row it asks for can be judged now. A request
        // of forbidden rows then costs no row lock (the check under the lock, on the row as it
        // is and as asked, says the same for these columns).
        if let (Some(rule), Some(written)) = (&rule, m.written()) {
            let given: Values = key.iter().chain(written).map(|(c, v)| (c.clone(), v.clone())).collect();
            let judged = rule.referenced_columns().iter().all(|i| given.contains_key(&schema.columns[*i].name));
            if judged && !rule_holds(c, &table, rule, &aligned_vec(&table, &given)).await.map_err(reject_here)? {
                return Err(forbidden(format!("row violates write rule for table {}", name.quoted())));
            }
        }

        // The key lock and the read of the row and its clocks in one round trip: tokio-postgres
        // sends concurrent queries in the order they are first polled (`biased;` makes try_join!
        // poll in the order written, and report the first statement's error rather than the
        // follow-on "transaction aborted" of the other), and Postgres runs them in that order:
        // the read happens under the lock.
        let (xid, (row, stored)) = tokio::try_join!(
            biased;
            write_store::lock_row_key(c, &table_text, &key_text),
            table.select_for_update_with_clocks(c, &key, &table_text, &key_text)
        )
        .map_err(reject_here)?;
        let read = match self.auth.read_filter(&name, who) {
            Ok(None) => ReadAccess::All,
            Ok(Some(rule)) => ReadAccess::Rule(rule),
            Err(_) => ReadAccess::Nothing,
        };
        Ok(RowRead { name, table, key, key_text, table_text, rule, kinds, read, xid, row, stored })
    }

    /// Applies one mutation to its row as read, in three steps: [`Self::decide`] what the
    /// table's policy makes of it, [`Self::write`] that to the row, and [`Self::record`] the
    /// bookkeeping the row write did not carry. `tail` is given for the transaction's last
    /// mutation (its row write may then record the result and commit); `sent` fires once this
    /// mutation's last statement has gone out, letting the next mutation's read follow it.
    async fn write_row(
        &self,
        c: &PreparedClient,
        m: &Mutation,
        stamp: &Stamp,
        read: RowRead,
        tail: Option<Tail<'_>>,
        mut sent: Sent,
    ) -> Result<RowOutcome, Stop> {
        let change = match self.decide(c, m, stamp, &read).await? {
            Decided::Unchanged { overridden } => {
                return Ok(RowOutcome::Applied {
                    audit: self.applied_entry(m, &read, None, &overridden),
                    overridden: overridden_of(m, &read.key, overridden),
                    xid: read.xid,
                    wrote: false,
                })
            }
            Decided::Change(change) => change,
        };
        let entry = self.applied_entry(m, &read, Some(&change.action), &change.overridden);
        let after = match self.write(c, m, &read, &change, tail, entry.as_ref(), &mut sent).await? {
            Written::Committed(result) => return Ok(RowOutcome::Committed { xid: read.xid, result }),
            Written::Row(after) => after,
        };
        // The new values as Postgres stored them (its text of a json or numeric value may differ
        // from what the client sent): a value equal to the old one once stored is no change.
        let entry = entry.map(|e| stored_changes(e, &read, after.as_deref()));
        // `sent` is held until the bookkeeping is saved too: the next mutation may be on the
        // same row and must read it.
        self.record(c, m, &read, change, after, entry).await
    }

    /// The decide step: the row as the merge policy sees it, the caller's write rule checked on
    /// it as it is and as the mutation asks for it, and the policy's decision
    /// ([`merge::decide`]). A conflict the policy reports is a rejection. Reads, never writes.
    async fn decide(&self, c: &PreparedClient, m: &Mutation, stamp: &Stamp, read: &RowRead) -> Result<Decided, Stop> {
        let table = &read.table;
        let reject_here = |e: PgError| self.reject(c, &read.name, m, &read.key, e);
        let current = self
            .current_state(c, table, read.row.as_ref(), read.stored.as_ref())
            .await
            .map_err(|e| self.reject(c, &read.name, m, &read.key, e))?;
        if let Current::Live(StoredRow { values, .. }) | Current::Deleted { tombstone: StoredRow { values, .. }, .. } =
            &current
        {
            // The row as it is, and as the mutation asks for it (whether or not the conflict
            // policy lets it through: asking for a forbidden row is refused either way).
            if read.violates(c, &aligned_vec(table, values)).await.map_err(reject_here)? {
                return Err(read.violation(m));
            }
            if let Some(asked) = m.written() {
                let mut proposed = values.clone();
                proposed.extend(asked.iter().map(|(c, v)| (c.clone(), v.clone())));
                if read.violates(c, &aligned_vec(table, &proposed)).await.map_err(reject_here)? {
                    return Err(read.violation(m));
                }
            }
        }

        // The further condition for what this write does to the row as it is now.
        let kind = match (&current, m) {
            (Current::Live(_), Mutation::Delete { .. }) => Some(WriteKind::Delete),
            (Current::Live(_), _) => Some(WriteKind::Update),
            (_, Mutation::Delete { .. }) => None,
            _ => Some(WriteKind::Insert),
        };
        if let Some(kind) = kind {
            if read.kind_violates(c, kind, &current, m).await.map_err(reject_here)? {
                return Err(forbidden(
                    m.table(),
                    &read.key,
                    format!("row violates the {} rule for table {}", kind.name(), read.name.quoted()),
                ));
            }
        }

        let schema = &table.schema;
        let kinds = |col: &str| match schema.column_index(col) {
            Some(i) => ColumnOrder::of(&schema.columns[i]),
            None => ColumnOrder::of_type_name("text"),
        };
        let Decision { action, overridden } = merge::decide(
            self.policy(&read.name),
            &kinds,
            &current,
            &merge::Mutation { op: incoming(m), stamp: stamp.clone() },
        );
        match action {
            Action::Nothing => Ok(Decided::Unchanged { overridden }),
            Action::Conflict { current } => {
                // The row as the server has it, when the caller may read it (its read rule, not
                // its write rule, says what it may see).
                let shown = match current {
                    None => Some(Value::Null),
                    Some(values) => self.readable(&read.read, table, &values).then(|| values_json(&values)),
                };
                Err(Stop::Rejected(Rejection {
                    code: RejectionCode::Conflict,
                    message: format!(
                        "the row changed since the client read it ({} has other values)",
                        read.name.quoted()
                    ),
                    table: Some(m.table().to_string()),
                    key: Some(read.key.clone()),
                    current: shown,
                }))
            }
            action => Ok(Decided::Change(Change {
                after: merge::apply(&current, &action),
                live_before: matches!(current, Current::Live(_)),
                action,
                overridden,
            })),
        }
    }

    /// The write step: the decided change made to the caller's table, each row write saving
    /// the row's new clocks in the same statement. The last mutation's row write, when no write
    /// rule must be checked afterwards, also records the transaction's result and carries
    /// COMMIT in its round trip, with the transaction's audit rows (`entry` is this
    /// mutation's) between them: if the write fails, Postgres answers COMMIT with a rollback,
    /// and the (biased) join reports the write's own error.
    // Each argument is a distinct part of the mutation's state; bundling them would only move
    // them into a struct built for this one call.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        c: &PreparedClient,
        m: &Mutation,
        read: &RowRead,
        change: &Change,
        tail: Option<Tail<'_>>,
        entry: Option<&AuditEntry>,
        sent: &mut Sent,
    ) -> Result<Written, Stop> {
        let RowRead { name, table, key, key_text, table_text, rule, xid, .. } = read;
        let reject_here = |e: PgError| self.reject(c, name, m, key, e);
        // The new bookkeeping; a row write saves it in the same statement.
        let clocks_json = match &change.after {
            Current::Live(row) => Value::Object(stamps_json(&row.clocks)),
            _ => Value::Null,
        };
        let mut save = ClockSave {
            table: table_text,
            key: key_text,
            clocks: &clocks_json,
            deleted: None,
            born: change.born_after(),
            record: None,
        };
        let single_write = match &change.action {
            Action::Insert { values, .. } if !change.live_before => Some((None, values)),
            Action::Insert { values, .. } => Some((Some(key), values)),
            Action::Update { set, .. } if !set.is_empty() => Some((Some(key), set)),
            _ => None,
        };
        if let (Some(tail), Some((update_key, values)), None) = (&tail, single_write, rule) {
            let own = overridden_of(m, key, change.overridden.clone());
            let result = applied_result(tail.txn_id, *xid, tail.overridden.iter().cloned().chain(own).collect(), true);
            let recorded = serde_json::to_value(&result).unwrap_or(Value::Null);
            save.record = Some(RecordResult {
                client_id: tail.client_id,
                id: i64::try_from(tail.txn_id).unwrap_or(i64::MAX),
                result: &recorded,
            });
            let write = async {
                match update_key {
                    None => table.insert(c, values, &save).await.map(|_| ()),
                    Some(k) => table.update(c, k, values, &save).await.map(|_| ()),
                }
            };
            let entries: Vec<AuditEntry> = tail.audit.iter().chain(entry).cloned().collect();
            let own = tail.frame.own();
            let audit = async {
                if own {
                    audit::record(c, tail.actor, &entries).await
                } else {
                    Ok(())
                }
            };
            let commit = async { c.client().batch_execute(tail.frame.end()).await.map_err(PgError::from) };
            tokio::try_join!(biased; write, audit, commit).map_err(reject_here)?;
            if let Frame::Nested(group) = tail.frame {
                group.add(tail.actor.txn_id, entries);
            }
            return Ok(Written::Committed(result));
        }
        // The row as Postgres stored it, when it is live afterwards.
        let after = match &change.action {
            Action::Insert { values, .. } if change.live_before => {
                sent.after(table.update(c, key, values, &save)).await.map_err(reject_here)?
            }
            Action::Insert { values, .. } => {
                Some(sent.after(table.insert(c, values, &save)).await.map_err(reject_here)?)
            }
            // Only the birth stamp moves: no row write (the record step saves the clocks).
            Action::Update { set, .. } if set.is_empty() => {
                table.select(c, key).await.map_err(reject_here)?.map(|r| r.0)
            }
            Action::Update { set, .. } => sent.after(table.update(c, key, set, &save)).await.map_err(reject_here)?,
            Action::Delete { .. } => {
                table.delete(c, key).await.map_err(reject_here)?;
                None
            }
            _ => None,
        };
        Ok(Written::Row(after))
    }

    /// The record step: the bookkeeping no row write carried (the clocks of a birth-only
    /// update, a row's tombstone), with the write rule checked on the row as it is afterwards.
    async fn record(
        &self,
        c: &PreparedClient,
        m: &Mutation,
        read: &RowRead,
        change: Change,
        after: Option<Vec<Option<String>>>,
        entry: Option<AuditEntry>,
    ) -> Result<RowOutcome, Stop> {
        let RowRead { name, table, key, key_text, table_text, xid, .. } = read;
        let reject_here = |e: PgError| self.reject(c, name, m, key, e);
        if let (Action::Update { set, .. }, Current::Live(row)) = (&change.action, &change.after) {
            if set.is_empty() {
                let stored = StoredClocks {
                    clocks: stamps_json(&row.clocks),
                    known: after.as_ref().map(|v| values_json_map(&aligned_map(table, v))),
                    deleted: None,
                    born: change.born_after(),
                };
                write_store::save_clocks(c, table_text, key_text, &stored).await.map_err(reject_here)?;
            }
        }
        match &change.after {
            Current::Live(_) => {
                if let Some(values) = &after {
                    if read.violates(c, values).await.map_err(reject_here)? {
                        return Err(read.violation(m));
                    }
                }
            }
            Current::Deleted { tombstone, deleted } => {
                if read.violates(c, &aligned_vec(table, &tombstone.values)).await.map_err(reject_here)? {
                    return Err(read.violation(m));
                }
                let stored = StoredClocks {
                    clocks: stamps_json(&tombstone.clocks),
                    known: Some(values_json_map(&tombstone.values)),
                    deleted: Some(deleted.to_string()),
                    born: tombstone.born.as_ref().map(|b| b.to_string()),
                };
                write_store::save_clocks(c, table_text, key_text, &stored).await.map_err(reject_here)?;
            }
            Current::Absent => {}
        }
        // Whether a row of the user's table changed (not so for bookkeeping-only outcomes).
        let wrote = match &change.action {
            Action::Insert { .. } | Action::Delete { .. } => true,
            Action::Update { set, .. } => !set.is_empty(),
            _ => false,
        };
        Ok(RowOutcome::Applied { overridden: overridden_of(m, key, change.overridden), xid: *xid, wrote, audit: entry })
    }

    /// The row as the merge policy sees it. Columns whose value differs from what Ferrite last
    /// wrote were changed directly in Postgres since: they count as written by [`DIRECT_WRITER`]
    /// at that transaction's commit time (exact with `track_commit_timestamp = on`; otherwise
    /// the time the change is noticed, so a direct write is never beaten by an older edit).
    async fn current_state(
        &self,
        c: &PreparedClient,
        table: &WriteTable,
        row: Option<&(Vec<Option<String>>, u32)>,
        stored: Option<&StoredClocks>,
    ) -> Result<Current, PgError> {
        let stored_stamps: BTreeMap<String, Stamp> = stored
            .map(|s| s.clocks.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.parse().ok()?))).collect())
            .unwrap_or_default();
        match row {
            Some((values, xmin)) => {
                let (values, xmin) = (aligned_map(table, values), *xmin);
                let mut clocks = stored_stamps;
                let known = stored.and_then(|s| s.known.as_ref());
                let changed: Vec<&String> = match (stored, known) {
                    // Written by Ferrite before: compare with what it wrote.
                    (Some(s), Some(k)) if s.deleted.is_none() => values
                        .iter()
                        .filter(|(c, v)| k.get(*c).map(json_text) != Some(v.as_deref()))
                        .map(|(c, _)| c)
                        .collect(),
                    // Deleted through Ferrite but present again, or never written by Ferrite:
                    // the current version is Postgres's own.
                    (Some(_), _) => values.keys().collect(),
                    // Never written through Ferrite: the row is as old as its commit, when
                    // Postgres can tell; otherwise it predates every client edit.
                    (None, _) => {
                        if let Some(micros) = write_table::commit_time_micros(c, xmin).await? {
                            let direct = Stamp::direct(micros.max(0) as u64);
                            for c in values.keys() {
                                clocks.insert(c.clone(), direct.clone());
                            }
                        }
                        vec![]
                    }
                };
                if !changed.is_empty() {
                    let direct = self.direct_stamp(c, xmin).await?;
                    for c in changed {
                        clocks.insert(c.clone(), direct.clone());
                    }
                }
                let born = stored.and_then(|s| s.born.as_deref()).and_then(|b| b.parse().ok());
                Ok(Current::Live(StoredRow { values, clocks, born }))
            }
            None => match stored {
                Some(s) if s.deleted.is_some() => {
                    let deleted = s
                        .deleted
                        .as_deref()
                        .and_then(|d| d.parse().ok())
                        .unwrap_or_else(|| Stamp { hlc: Hlc::ZERO, client_id: DIRECT_WRITER.to_string() });
                    let values = s
                        .known
                        .as_ref()
                        .map(|k| k.iter().map(|(c, v)| (c.clone(), json_text(v).map(String::from))).collect())
                        .unwrap_or_default();
                    let born = s.born.as_deref().and_then(|b| b.parse().ok());
                    Ok(Current::Deleted { tombstone: StoredRow { values, clocks: stored_stamps, born }, deleted })
                }
                // Never written by Ferrite, or deleted directly in Postgres.
                _ => Ok(Current::Absent),
            },
        }
    }

    async fn direct_stamp(&self, c: &PreparedClient, xmin: u32) -> Result<Stamp, PgError> {
        Ok(match write_table::commit_time_micros(c, xmin).await? {
            Some(micros) => Stamp::direct(micros.max(0) as u64),
            None => Stamp { hlc: self.clock.lock().now(self.wall.wall_ms()), client_id: DIRECT_WRITER.to_string() },
        })
    }
}

/// What a client transaction's mutations did.
struct MutationsOutcome {
    /// Columns the policy kept, per row.
    overridden: Vec<Overridden>,
    /// The transaction's xid.
    xid: u32,
    /// Whether any row of a user table changed (else its txid never reaches a shape).
    changed: bool,
    /// The result, when the last mutation's row write also recorded it and committed ([`Tail`]).
    committed: Option<TransactionResult>,
    /// The audit rows of the mutations, to record with the result (empty when committed).
    audit: Vec<AuditEntry>,
}

/// A mutation checked and its row read under its key lock, ready to be decided and written.
/// The tables a write rule's subqueries read, for compiling it.
#[derive(Default)]
struct RuleTables(HashMap<QualifiedName, Arc<ferrite_protocol::schema::TableSchema>>);

impl ferrite_where::Catalog for RuleTables {
    fn table(&self, name: &QualifiedName) -> Option<Arc<ferrite_protocol::schema::TableSchema>> {
        self.0.get(name).cloned()
    }
}

/// Whether `rule` holds for `values` as a row of `table`: evaluated here when it reads only the
/// row, by Postgres inside the write's transaction when it has subqueries or reads the current
/// time (then it is Postgres's `now()`, the transaction's start) ([`WriteTable::rule_holds`]).
pub(crate) async fn rule_holds(
    c: &PreparedClient,
    table: &WriteTable,
    rule: &WhereClause,
    values: &[Option<String>],
) -> Result<bool, PgError> {
    if rule.subqueries().is_empty() && !rule.reads_time() {
        return Ok(rule.matches(values).unwrap_or(false));
    }
    table.rule_holds(c, rule, values).await
}

struct RowRead {
    name: QualifiedName,
    table: Arc<WriteTable>,
    key: Values,
    key_text: String,
    table_text: String,
    /// The caller's write rule on the table, if any.
    rule: Option<WhereClause>,
    /// The caller's further conditions per kind of write (by [`WriteKind::index`]), if any.
    kinds: [Option<WhereClause>; 3],
    /// What the caller may read of the table (for a conflict's `current` row).
    read: ReadAccess,
    xid: u32,
    row: Option<(Vec<Option<String>>, u32)>,
    stored: Option<StoredClocks>,
}

impl RowRead {
    /// Whether the caller's write rule refuses `values` (in column order) as a row of the table.
    async fn violates(&self, c: &PreparedClient, values: &[Option<String>]) -> Result<bool, PgError> {
        match &self.rule {
            Some(rule) => Ok(!rule_holds(c, &self.table, rule, values).await?),
            None => Ok(false),
        }
    }

    /// Whether the caller's condition for a write of `kind` refuses it: checked on the row as it
    /// is (update, delete) and as the mutation asks for it (insert, update).
    async fn kind_violates(
        &self,
        c: &PreparedClient,
        kind: WriteKind,
        current: &Current,
        m: &Mutation,
    ) -> Result<bool, PgError> {
        let Some(rule) = &self.kinds[kind.index()] else { return Ok(false) };
        let before: Option<&Values> = match current {
            Current::Live(StoredRow { values, .. }) | Current::Deleted { tombstone: StoredRow { values, .. }, .. } => {
                Some(values)
            }
            Current::Absent => None,
        };
        if kind != WriteKind::Insert {
            if let Some(values) = before {
                if !rule_holds(c, &self.table, rule, &aligned_vec(&self.table, values)).await? {
                    return Ok(true);
                }
            }
        }
        if let (true, Some(asked)) = (kind != WriteKind::Delete, m.written()) {
            let mut proposed = before.cloned().unwrap_or_else(|| self.key.clone());
            proposed.extend(asked.iter().map(|(c, v)| (c.clone(), v.clone())));
            if !rule_holds(c, &self.table, rule, &aligned_vec(&self.table, &proposed)).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The rejection of mutation `m` for a row its caller's write rule refuses.
    fn violation(&self, m: &Mutation) -> Stop {
        forbidden(m.table(), &self.key, format!("row violates write rule for table {}", self.name.quoted()))
    }
}

/// The decide step's verdict on one mutation ([`Writer::decide`]), worked out from the row as
/// read before anything of the mutation is written.
// One lives at a time, briefly, and is moved once: boxing the change would only add an
// allocation per mutation.
#[allow(clippy::large_enum_variant)]
enum Decided {
    /// The policy keeps the row and its clocks as they are (every incoming value lost, or it
    /// changes nothing): there is nothing to write or record.
    Unchanged {
        /// Incoming columns whose values lost, reported in the result's `overridden`.
        overridden: Vec<String>,
    },
    /// A change for the write and record steps.
    Change(Change),
}

/// A change the merge policy decided on for one row.
struct Change {
    /// What to do to the row and its bookkeeping (never `Nothing` or `Conflict`).
    action: Action,
    /// Incoming columns whose values lost, reported in the result's `overridden`.
    overridden: Vec<String>,
    /// Whether the row exists in Postgres now: an insert over a live row is written as an
    /// update of it.
    live_before: bool,
    /// The row and its clocks afterwards ([`merge::apply`]): the clocks saved with the row, or
    /// the tombstone recorded (and checked against the write rule) when the row ends deleted.
    after: Current,
}

impl Change {
    /// The birth stamp the row's clocks are saved with (a live row's, as text).
    fn born_after(&self) -> Option<String> {
        match &self.after {
            Current::Live(row) => row.born.as_ref().map(|b| b.to_string()),
            _ => None,
        }
    }
}

/// What the write step ([`Writer::write`]) did to the caller's table.
enum Written {
    /// The row write also recorded the transaction's result and committed (see [`Tail`]):
    /// nothing is left to record, and the result is final.
    Committed(TransactionResult),
    /// The row as Postgres has it afterwards, when live (defaults and triggers included), for
    /// the record step: the write rule is checked on it, and a birth-only update's clocks are
    /// saved with it as the values Ferrite last saw.
    Row(Option<Vec<Option<String>>>),
}

/// What one mutation did, for its transaction's result.
enum RowOutcome {
    /// Applied; the transaction goes on (or commits) with its other mutations.
    Applied {
        /// The columns the policy kept for this row: they make the result `merged`.
        overridden: Option<Overridden>,
        /// The Postgres transaction's xid: the result's `txid`.
        xid: u32,
        /// Whether a row of the caller's table changed: a transaction that changed none has no
        /// txid to wait for in a shape (the result's `unchanged`).
        wrote: bool,
        /// The mutation's audit row (`None` when the audit trail is off).
        audit: Option<AuditEntry>,
    },
    /// The last mutation's row write recorded the transaction's result and committed it.
    Committed {
        /// The Postgres transaction's xid.
        xid: u32,
        /// The result, as recorded.
        result: TransactionResult,
    },
}

/// What a caller may read of a table.
enum ReadAccess {
    /// Every row (no auth, or a public table).
    All,
    /// The rows its bound read rule admits.
    Rule(BoundRule),
    /// Nothing (no read rule, not public).
    Nothing,
}

/// Fires once a mutation's last statement has gone out (or when the mutation ends, whichever
/// comes first), letting the next mutation's read go out behind it.
struct Sent(Option<oneshot::Sender<()>>);

fn sent_signal() -> (Sent, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    (Sent(Some(tx)), rx)
}

impl Sent {
    fn fire(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }

    /// Runs `statement` and fires once it has been sent (a query goes out on its first poll).
    async fn after<T>(&mut self, statement: impl std::future::Future<Output = T>) -> T {
        let (out, ()) = tokio::join!(biased; statement, async { self.fire() });
        out
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        self.fire();
    }
}

/// The change a mutation asks for, as the merge policy takes it.
fn incoming(m: &Mutation) -> Incoming {
    match m {
        Mutation::Insert { value, .. } => Incoming::Insert { values: value.clone() },
        Mutation::Update { value, base, .. } => Incoming::Update { set: value.clone(), base: base.clone() },
        Mutation::Delete { base, .. } => Incoming::Delete { base: base.clone() },
    }
}

/// A `forbidden` rejection of the row `key` of `table`.
fn forbidden(table: &str, key: &Values, message: String) -> Stop {
    Stop::Rejected(Rejection {
        code: RejectionCode::Forbidden,
        message,
        table: Some(table.to_string()),
        key: Some(key.clone()),
        current: None,
    })
}

/// The end of a client transaction, handed to its last mutation: what to record with COMMIT.
struct Tail<'a> {
    client_id: &'a str,
    txn_id: u64,
    /// Columns kept by the policy in the transaction's earlier mutations.
    overridden: &'a [Overridden],
    /// Who sent the transaction, for its audit rows.
    actor: AuditActor<'a>,
    /// The audit rows of the transaction's earlier mutations.
    audit: &'a [AuditEntry],
    /// How the transaction ends (COMMIT, or releasing its savepoint in a group).
    frame: Frame<'a>,
}

/// Who sent client transaction `id`: the client key's subject part is the token's, the rest
/// the client id as sent (client ids cannot contain `@`, see [`write_store::client_key`]).
fn actor<'a>(client_key: &'a str, who: Option<&'a Identity>, id: i64) -> AuditActor<'a> {
    let client_id = client_key.split_once('@').map_or(client_key, |(id, _)| id);
    AuditActor { subject: who.map(|w| w.subject.as_str()), client_id, txn_id: id }
}

/// `entry` with its changes' new values taken from `after`, the row as Postgres stored it (when
/// it is live), and the columns whose stored value equals the old one dropped.
fn stored_changes(mut entry: AuditEntry, read: &RowRead, after: Option<&[Option<String>]>) -> AuditEntry {
    let (Some(after), Value::Object(changes)) = (after, &mut entry.changes) else { return entry };
    let stored = aligned_map(&read.table, after);
    changes.retain(|col, change| {
        let Some(new) = stored.get(col) else { return true };
        let new = new.as_ref().map_or(Value::Null, |v| Value::String(v.clone()));
        let same = change.get("old").is_some_and(|old| *old == new);
        change["new"] = new;
        !same
    });
    entry
}

/// A mutation's kind, as the audit trail's `op` names it.
fn op_name(m: &Mutation) -> &'static str {
    match m {
        Mutation::Insert { .. } => "insert",
        Mutation::Update { .. } => "update",
        Mutation::Delete { .. } => "delete",
    }
}

/// The result of a committed client transaction.
fn applied_result(id: u64, xid: u32, overridden: Vec<Overridden>, changed: bool) -> TransactionResult {
    TransactionResult {
        id,
        status: if overridden.is_empty() { Status::Applied } else { Status::Merged },
        txid: Some(xid.to_string()),
        overridden,
        error: None,
        unchanged: !changed,
    }
}

/// Records `result` and the transaction's audit rows and commits, in one round trip (`biased`:
/// a failed INSERT is the error seen; Postgres then answers COMMIT with a rollback rather than
/// an error).
async fn record_and_commit(
    c: &PreparedClient,
    client_id: &str,
    id: i64,
    result: &TransactionResult,
    actor: AuditActor<'_>,
    entries: &[AuditEntry],
    frame: Frame<'_>,
) -> Result<(), PgError> {
    let recorded = serde_json::to_value(result).unwrap_or(Value::Null);
    let record = write_store::record_result(c, client_id, id, &recorded);
    let audit = async {
        if frame.own() {
            audit::record(c, actor, entries).await
        } else {
            Ok(())
        }
    };
    let commit = async { c.client().batch_execute(frame.end()).await.map_err(PgError::from) };
    tokio::try_join!(biased; record, audit, commit)?;
    if let Frame::Nested(group) = frame {
        group.add(id, entries.to_vec());
    }
    Ok(())
}

fn rejected(id: u64, code: RejectionCode, message: String) -> TransactionResult {
    rejection_result(id, Rejection { code, message, table: None, key: None, current: None })
}

/// The result of a rejected client transaction.
fn rejection_result(id: u64, rejection: Rejection) -> TransactionResult {
    TransactionResult {
        id,
        status: Status::Rejected,
        txid: None,
        overridden: vec![],
        error: Some(rejection),
        unchanged: false,
    }
}

fn overridden_of(m: &Mutation, key: &Values, columns: Vec<String>) -> Option<Overridden> {
    (!columns.is_empty()).then(|| Overridden { table: m.table().to_string(), key: key.clone(), columns })
}

/// A row as a name → value map.
fn aligned_map(table: &WriteTable, values: &[Option<String>]) -> Values {
    table.schema.columns.iter().zip(values).map(|(c, v)| (c.name.clone(), v.clone())).collect()
}

/// A name → value map as values in column order (missing columns NULL).
fn aligned_vec(table: &WriteTable, values: &Values) -> Vec<Option<String>> {
    table.schema.columns.iter().map(|c| values.get(&c.name).cloned().flatten()).collect()
}

fn json_text(v: &Value) -> Option<&str> {
    v.as_str()
}

fn values_json_map(values: &Values) -> Map<String, Value> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), v.as_ref().map(|s| Value::String(s.clone())).unwrap_or(Value::Null)))
        .collect()
}

fn values_json(values: &Values) -> Value {
    Value::Object(values_json_map(values))
}

fn stamps_json(clocks: &BTreeMap<String, Stamp>) -> Map<String, Value> {
    clocks.iter().map(|(k, s)| (k.clone(), Value::String(s.to_string()))).collect()
}

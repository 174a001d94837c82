//! Fetching shapes over the Electric v1 shape API and applying them to the replica.

use crate::store::{self, Batch, ShapePosition};
use crate::{Client, ClientError, ShapeDef};
use ferrite_protocol::client_config::ClientConfig;
use ferrite_protocol::write_protocol::{
    Status as ResultStatus, TransactionResult, TransactionsRequest, TransactionsResponse,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// What one [`Client::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// HTTP requests made.
    pub requests: usize,
    /// Row changes applied.
    pub changes: usize,
    /// 409s followed (the server replaced the shape; it was fetched again).
    pub refetches: usize,
}

/// A subscription's state, as a watchable value.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Catching up.
    Syncing,
    /// Up to date and waiting for changes.
    Synced,
    /// The server cannot be reached; retrying.
    Offline {
        /// Local transactions not yet pushed.
        pending: usize,
    },
    /// The server refused; retrying after `retry_in`.
    Error {
        /// What went wrong.
        reason: String,
        /// When the next attempt is.
        retry_in: Duration,
    },
}

/// Whether a subscription is talking to the server, as a watchable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// The last attempt could not reach the server; waiting to retry.
    Disconnected,
    /// Trying to reach the server (first attempt, or the first after a failure).
    Connecting,
    /// The server answered the last request.
    Connected,
}

/// Default waits between failed attempts (jittered by ±20%) unless the server says
/// `retry-after`; see [`Client::set_backoff`].
pub const DEFAULT_BACKOFF: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// What a subscription keeps live.
enum Target {
    Shape(ShapeDef),
    /// A tree, and the shapes it compiled to (once the server answered).
    Tree(crate::tree::Tree, Option<Vec<ShapeDef>>),
}

enum Step {
    /// Applied a response; whether it ended up to date.
    Applied { up_to_date: bool },
    /// 409: the shape starts over.
    Refetch,
    /// A local write arrived during a long-poll: the poll was dropped so the write goes out now.
    Interrupted,
}

impl Client {
    /// Catches `def` up from its stored position until the server says up-to-date. The next
    /// response downloads while the previous one is applied (in order, each with its position).
    pub async fn sync(&self, def: &ShapeDef) -> Result<SyncReport, ClientError> {
        let mut report = SyncReport::default();
        let mut pos = self.position(def)?;
        let mut applying: Option<tokio::task::JoinHandle<Result<usize, ClientError>>> = None;
        async fn finish(h: Option<tokio::task::JoinHandle<Result<usize, ClientError>>>) -> Result<usize, ClientError> {
            match h {
                Some(h) => h.await.map_err(|e| ClientError::Protocol(format!("local task failed: {e}")))?,
                None => Ok(0),
            }
        }
        loop {
            report.requests += 1;
            let fetched = self.fetch(def, &pos, false).await;
            report.changes += finish(applying.take()).await?;
            match fetched? {
                Fetched::Refetch(new_handle) => {
                    report.refetches += 1;
                    self.reset(def, new_handle).await?;
                    pos = self.position(def)?;
                }
                Fetched::Data(data) => {
                    pos = data.next.clone();
                    let done = pos.up_to_date;
                    let (client, shape) = (self.clone(), def.clone());
                    applying = Some(tokio::spawn(async move { client.apply_fetched(&shape, data).await }));
                    if done {
                        report.changes += finish(applying.take()).await?;
                        // Due a convergence check, and the replica differs: fetched afresh.
                        if self.check_convergence(def).await? {
                            report.refetches += 1;
                            pos = self.position(def)?;
                            continue;
                        }
                        return Ok(report);
                    }
                }
            }
        }
    }

    /// Keeps `def` live in the background: pushes queued local writes, catches up, then
    /// long-polls; after a failure waits (1, 2, 5, 10, 30 s, jittered, or the server's
    /// `retry-after`) and tries again.
    pub fn subscribe(&self, def: ShapeDef) -> Subscription {
        self.keep_live(Target::Shape(def))
    }

    /// Keeps an include tree live in the background, with one status for the whole tree: the
    /// shapes are caught up together and applied at a common point ([`Client::sync_tree`]),
    /// then long-polled together; a change to any of them catches the tree up again. (The
    /// long-poll only wakes it: the change is read again by the catch-up, so it travels twice.)
    pub fn subscribe_tree(&self, tree: crate::tree::Tree) -> Subscription {
        self.keep_live(Target::Tree(tree, None))
    }

    fn keep_live(&self, mut target: Target) -> Subscription {
        let (tx, rx) = watch::channel(Status::Syncing);
        let (connection_tx, connection) = watch::channel(ConnectionState::Connecting);
        let set_connection = move |state: ConnectionState| {
            connection_tx.send_if_modified(|c| std::mem::replace(c, state) != state);
        };
        let retry = Arc::new(Notify::new());
        let (client, wake) = (self.clone(), retry.clone());
        let mut outbox = self.inner.outbox_changed.subscribe();
        let task = tokio::spawn(async move {
            let mut failures = 0usize;
            let mut live = false;
            loop {
                if failures > 0 {
                    set_connection(ConnectionState::Connecting);
                }
                // Queued local writes go out first whenever the server is reachable (writes
                // made from here on interrupt the next long-poll).
                outbox.mark_unchanged();
                let pushed = match client.pending() {
                    Ok(0) => Ok(()),
                    Ok(_) => client.push().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                let stepped = match pushed {
                    Ok(()) => match &mut target {
                        Target::Shape(def) => client.step(def, live, &mut outbox).await,
                        Target::Tree(tree, shapes) => client.step_tree(tree, shapes, live, &mut outbox).await,
                    },
                    Err(e) => Err(e),
                };
                match stepped {
                    Ok(Step::Applied { up_to_date }) => {
                        failures = 0;
                        set_connection(ConnectionState::Connected);
                        live = up_to_date || live;
                        tx.send_replace(if up_to_date { Status::Synced } else { Status::Syncing });
                    }
                    Ok(Step::Refetch) => {
                        failures = 0;
                        set_connection(ConnectionState::Connected);
                        live = false;
                        tx.send_replace(Status::Syncing);
                    }
                    Ok(Step::Interrupted) => {}
                    Err(e) => {
                        let schedule = client.inner.backoff.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        let wait = backoff(&schedule, failures, retry_after(&e));
                        failures += 1;
                        // A refusal is still an answer: the server is reachable.
                        set_connection(match &e {
                            ClientError::Unreachable(_) => ConnectionState::Disconnected,
                            _ => ConnectionState::Connected,
                        });
                        tx.send_replace(match &e {
                            ClientError::Unreachable(_) => Status::Offline { pending: client.pending().unwrap_or(0) },
                            other => Status::Error { reason: other.to_string(), retry_in: wait },
                        });
                        tracing::debug!(error = %e, ?wait, "shape sync failed; retrying");
                        let until = tokio::time::Instant::now() + wait;
                        loop {
                            tokio::select! {
                                _ = tokio::time::sleep_until(until) => break,
                                _ = wake.notified() => break,
                                // Writes made offline: the status keeps counting them.
                                Ok(()) = outbox.changed() => {
                                    // (The borrow ends before the send: a watch holds one lock.)
                                    let offline = matches!(*tx.borrow(), Status::Offline { .. });
                                    if offline {
                                        tx.send_replace(Status::Offline { pending: client.pending().unwrap_or(0) });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        });
        Subscription { status: rx, connection, retry, task }
    }

    /// One request from the stored position; applies it (or starts over on 409). A long-poll
    /// gives way to a local write (`outbox` changes): nothing is applied and the caller pushes.
    async fn step(&self, def: &ShapeDef, live: bool, outbox: &mut watch::Receiver<u64>) -> Result<Step, ClientError> {
        let pos = self.position(def)?;
        let fetched = tokio::select! {
            biased;
            Ok(()) = outbox.changed(), if live => return Ok(Step::Interrupted),
            fetched = self.fetch(def, &pos, live) => fetched?,
        };
        match fetched {
            Fetched::Refetch(new_handle) => {
                self.reset(def, new_handle).await?;
                Ok(Step::Refetch)
            }
            Fetched::Data(data) => {
                let up_to_date = data.next.up_to_date;
                self.apply_fetched(def, data).await?;
                if up_to_date && self.check_convergence(def).await? {
                    return Ok(Step::Refetch);
                }
                Ok(Step::Applied { up_to_date })
            }
        }
    }

    /// A tree's step: when live, first waits for any of its shapes to change (or a long-poll to
    /// end); then catches the whole tree up to a common point.
    async fn step_tree(
        &self,
        tree: &crate::tree::Tree,
        shapes: &mut Option<Vec<ShapeDef>>,
        live: bool,
        outbox: &mut watch::Receiver<u64>,
    ) -> Result<Step, ClientError> {
        if shapes.is_none() {
            *shapes = Some(self.tree_shapes(tree).await?);
        }
        let defs = shapes.as_ref().expect("compiled");
        if live {
            let mut polls = Vec::with_capacity(defs.len());
            for def in defs {
                let pos = self.position(def)?;
                polls.push(Box::pin(async move { self.fetch(def, &pos, true).await }));
            }
            tokio::select! {
                biased;
                Ok(()) = outbox.changed() => return Ok(Step::Interrupted),
                (first, _, _) = futures_util::future::select_all(polls) => { first?; }
            }
        }
        self.sync_tree(tree).await?;
        Ok(Step::Applied { up_to_date: true })
    }

    pub(crate) async fn reset(&self, def: &ShapeDef, new_handle: Option<String>) -> Result<(), ClientError> {
        let inner = self.inner.clone();
        let def = def.clone();
        blocking(move || {
            store::reset(&mut inner.db.lock().unwrap_or_else(|p| p.into_inner()), &def, new_handle.as_deref())
        })
        .await
    }

    async fn apply_fetched(&self, def: &ShapeDef, data: Data) -> Result<usize, ClientError> {
        let inner = self.inner.clone();
        let def = def.clone();
        blocking(move || {
            let mut db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
            let batch = Batch { body: &data.body, next: &data.next, received_ms: inner.clock.wall_ms() as i64 };
            store::apply(&mut db, &def, data.schema.as_deref(), batch)
        })
        .await
    }

    /// One request from `pos` (nothing applied yet). The server splits a transaction bigger than
    /// its chunk size across responses; a response that ends inside one is completed with the
    /// following ones (catch-up requests), so every transaction is applied whole.
    pub(crate) async fn fetch(&self, def: &ShapeDef, pos: &ShapePosition, live: bool) -> Result<Fetched, ClientError> {
        let mut fetched = self.fetch_one(def, pos, live).await?;
        while let Fetched::Data(data) = &fetched {
            if !ends_inside_transaction(&data.body) {
                break;
            }
            match self.fetch_one(def, &data.next, false).await? {
                Fetched::Data(rest) => {
                    let Fetched::Data(data) = fetched else { unreachable!() };
                    fetched = Fetched::Data(Data {
                        body: join_arrays(&data.body, &rest.body),
                        next: rest.next,
                        schema: data.schema.or(rest.schema),
                        complete_lsn: rest.complete_lsn,
                    });
                }
                refetch => fetched = refetch,
            }
        }
        Ok(fetched)
    }

    /// One request from `pos`.
    async fn fetch_one(&self, def: &ShapeDef, pos: &ShapePosition, live: bool) -> Result<Fetched, ClientError> {
        let mut q = def.query();
        q.push(("offset".into(), pos.offset.clone()));
        if let Some(h) = &pos.handle {
            if pos.offset != "-1" || live {
                q.push(("handle".into(), h.clone()));
            }
        }
        let live = live && pos.offset != "-1";
        if live {
            q.push(("live".into(), "true".into()));
            if let Some(c) = &pos.cursor {
                q.push(("cursor".into(), c.clone()));
            }
        }
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(&q).finish();
        let req = self.inner.http.get(format!("{}/v1/shape?{query}", self.inner.base));
        let r = self.send(req).await?;
        let status = r.status().as_u16();
        let header = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
        if status == 409 {
            return Ok(Fetched::Refetch(header("electric-handle")));
        }
        if status != 200 {
            let retry_after = header("retry-after").and_then(|v| v.parse().ok());
            let body = r.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(String::from))
                .unwrap_or(body);
            return Err(ClientError::Refused { status, message, retry_after });
        }
        let next = ShapePosition {
            handle: header("electric-handle").or(pos.handle.clone()),
            offset: header("electric-offset")
                .ok_or_else(|| ClientError::Protocol("response without electric-offset".into()))?,
            cursor: header("electric-cursor").or(pos.cursor.clone()),
            schema: None,
            up_to_date: header("electric-up-to-date").is_some(),
        };
        let schema = header("electric-schema");
        let complete_lsn = header("ferrite-complete-lsn").and_then(|v| v.parse().ok());
        // Parsed where it is applied, on a blocking thread.
        let body = r.bytes().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
        self.inner.counters.bytes_received.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(Fetched::Data(Data { body, next, schema, complete_lsn }))
    }
}

impl Client {
    /// Sends a request with the caller's token; a transport failure means the server is
    /// unreachable (the client retries).
    pub(crate) async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        if let Some(t) = self.inner.token.token() {
            req = req.bearer_auth(t);
        }
        req.send().await.map_err(|e| ClientError::Unreachable(e.to_string()))
    }
}

/// Whether a response body (a JSON array of messages) stops inside a transaction: its last
/// change message is a transaction's (it has an `lsn`; snapshot rows have none) but not the
/// transaction's last (`"last": true`).
fn ends_inside_transaction(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(default)]
        headers: Headers,
    }
    #[derive(serde::Deserialize, Default)]
    struct Headers {
        #[serde(default)]
        operation: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        lsn: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        last: Option<bool>,
    }
    let Ok(messages) = serde_json::from_slice::<Vec<Message>>(body) else {
        return false;
    };
    messages
        .iter()
        .rev()
        .find(|m| m.headers.operation.is_some())
        .is_some_and(|m| m.headers.lsn.is_some() && m.headers.last != Some(true))
}

/// Two JSON arrays as one.
fn join_arrays(a: &[u8], b: &[u8]) -> bytes::Bytes {
    let inner = |x: &[u8]| -> Vec<u8> {
        let t = x.trim_ascii();
        t.strip_prefix(b"[").and_then(|t| t.strip_suffix(b"]")).unwrap_or(t).trim_ascii().to_vec()
    };
    let (a, b) = (inner(a), inner(b));
    let mut out = Vec::with_capacity(a.len() + b.len() + 3);
    out.push(b'[');
    out.extend_from_slice(&a);
    if !a.is_empty() && !b.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(&b);
    out.push(b']');
    out.into()
}

/// What a request brought.
pub(crate) enum Fetched {
    /// 409: start over at this handle.
    Refetch(Option<String>),
    /// Messages to apply.
    Data(Data),
}

/// A response's body (its messages) and the position after them.
pub(crate) struct Data {
    pub(crate) body: bytes::Bytes,
    pub(crate) next: ShapePosition,
    pub(crate) schema: Option<String>,
    /// `ferrite-complete-lsn`: a relational shape whose move-in is still to come is complete
    /// only up to this position (see [`crate::tree`]).
    pub(crate) complete_lsn: Option<u64>,
}

/// Runs SQLite work on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ClientError::Protocol(format!("local task failed: {e}")))?
}

fn retry_after(e: &ClientError) -> Option<u64> {
    match e {
        ClientError::Refused { retry_after, .. } => *retry_after,
        _ => None,
    }
}

/// The wait before attempt `failures + 1`: the schedule's step (the last one repeats), jittered.
fn backoff(schedule: &[Duration], failures: usize, retry_after: Option<u64>) -> Duration {
    if let Some(s) = retry_after {
        return Duration::from_secs(s);
    }
    let Some(last) = schedule.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    schedule[failures.min(last)].mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..1.2))
}

/// A shape (or an include tree) kept live in the background; stops when dropped.
pub struct Subscription {
    status: watch::Receiver<Status>,
    connection: watch::Receiver<ConnectionState>,
    retry: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// The subscription's status, to watch.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Whether the subscription is reaching the server, to watch.
    pub fn connection(&self) -> watch::Receiver<ConnectionState> {
        self.connection.clone()
    }

    /// Ends the wait after a failure and tries again now.
    pub fn retry_now(&self) {
        self.retry.notify_one();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_ending_inside_a_transaction_are_recognised_and_joined() {
        let change = |lsn: Option<&str>, last: bool| {
            let mut h = serde_json::json!({"operation": "insert"});
            if let Some(l) = lsn {
                h["lsn"] = l.into();
            }
            if last {
                h["last"] = true.into();
            }
            serde_json::json!({"key": "k", "value": {"id": "1"}, "headers": h})
        };
        let body = |msgs: Vec<Value>| serde_json::to_vec(&msgs).unwrap();
        let up_to_date = serde_json::json!({"headers": {"control": "up-to-date", "global_last_seen_lsn": "9"}});
        assert!(ends_inside_transaction(&body(vec![change(Some("7"), true), change(Some("9"), false)])));
        assert!(!ends_inside_transaction(&body(vec![change(Some("9"), false), change(Some("9"), true)])));
        assert!(!ends_inside_transaction(&body(vec![change(Some("9"), true), up_to_date.clone()])));
        assert!(!ends_inside_transaction(&body(vec![change(None, false), change(None, false)])), "snapshot rows");
        assert!(!ends_inside_transaction(b"[]"));
        assert!(!ends_inside_transaction(&body(vec![up_to_date])));
        assert_eq!(&join_arrays(b"[1,2]", b"[3]")[..], b"[1,2,3]");
        assert_eq!(&join_arrays(b"[]", b"[3]")[..], b"[3]");
        assert_eq!(&join_arrays(b"[1]", b"[]")[..], b"[1]");
    }

    #[test]
    fn backoff_follows_the_schedule_with_jitter_and_honours_retry_after() {
        for (failures, base) in [(0, 1.0), (1, 2.0), (2, 5.0), (3, 10.0), (4, 30.0), (9, 30.0)] {
            let d = backoff(&DEFAULT_BACKOFF, failures, None).as_secs_f64();
            assert!(d >= base * 0.8 && d <= base * 1.2, "{failures}: {d}");
        }
        assert_eq!(backoff(&DEFAULT_BACKOFF, 0, Some(7)), Duration::from_secs(7));
        assert_eq!(backoff(&[], 3, None), Duration::ZERO);
    }
}

/// What one [`Client::push`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushReport {
    /// Transactions sent.
    pub sent: usize,
    /// Answered `applied` or `merged` (their rows stay as written until their txid comes back
    /// through a shape).
    pub accepted: usize,
    /// Answered `rejected`: rolled back locally; the server's reasons (`error`).
    pub rejected: Vec<TransactionResult>,
    /// Answered `merged`: committed, but some columns kept other values (newer edits, or the
    /// row was deleted meanwhile) — which, and the values this client had written.
    pub merged: Vec<crate::outbox::Merge>,
}

impl Client {
    /// Sends every queued transaction, `sync_batch_size` per request (fewer when they hold more
    /// than `max_mutations_per_request` changes), and records the answers.
    /// A retry after a failure resends what had no answer; the server applies each id once.
    pub async fn push(&self) -> Result<PushReport, ClientError> {
        // One push at a time per replica (subscriptions and the app may all push).
        let _pushing = self.inner.push_lock.lock().await;
        let mut report = PushReport::default();
        loop {
            let batch = self.inner.batch.load(std::sync::atomic::Ordering::Relaxed);
            let changes = self.inner.batch_changes.load(std::sync::atomic::Ordering::Relaxed);
            let inner = self.inner.clone();
            let (client_id, txns) = blocking(move || {
                let db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
                Ok((crate::outbox::client_id(&db)?, crate::outbox::pending(&db, batch, changes)?))
            })
            .await?;
            if txns.is_empty() {
                return Ok(report);
            }
            let sent = txns.len();
            let request = TransactionsRequest { client_id, transactions: txns };
            let payload = serde_json::to_string(&request).map_err(|e| ClientError::Protocol(e.to_string()))?;
            self.inner.counters.bytes_sent.fetch_add(payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let req = self
                .inner
                .http
                .post(format!("{}/v1/transactions", self.inner.base))
                .header("content-type", "application/json")
                .body(payload);
            let r = self.send(req).await?;
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            let body = r.bytes().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
            if status != 200 {
                let message = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(String::from))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                return Err(ClientError::Refused { status, message, retry_after });
            }
            let TransactionsResponse { results } = serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol(format!("POST /v1/transactions answered: {e}")))?;
            if results.len() != sent {
                return Err(ClientError::Protocol(format!("{} results for {sent} transactions", results.len())));
            }
            report.sent += sent;
            for r in &results {
                let counter = match r.status {
                    ResultStatus::Applied => &self.inner.counters.applied,
                    ResultStatus::Merged => &self.inner.counters.merged,
                    ResultStatus::Rejected => &self.inner.counters.rejected,
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let inner = self.inner.clone();
            let recorded = results.clone();
            let recorded = blocking(move || {
                let mut db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
                crate::outbox::record_results(&mut db, &recorded)
            })
            .await?;
            report.accepted += results.len() - recorded.rejected.len();
            report.rejected.extend(recorded.rejected);
            report.merged.extend(recorded.merged);
        }
    }
}

impl Client {
    /// Adopts the server's client settings (`GET /v1/config`: `max_offline_queue`,
    /// `sync_batch_size`, `max_mutations_per_transaction`, `max_mutations_per_request`), so a
    /// deployment tunes its clients in one place.
    pub async fn configure_from_server(&self) -> Result<(), ClientError> {
        let r = self
            .inner
            .http
            .get(format!("{}/v1/config", self.inner.base))
            .send()
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        if !r.status().is_success() {
            return Err(ClientError::Refused {
                status: r.status().as_u16(),
                message: "GET /v1/config".into(),
                retry_after: None,
            });
        }
        let config: ClientConfig = r.json().await.map_err(|e| ClientError::Protocol(format!("/v1/config: {e}")))?;
        self.set_limits(config.max_offline_queue as usize, config.sync_batch_size as usize);
        // Servers before these limits do not advertise them: keep the defaults.
        if let (Some(t), Some(r)) = (config.max_mutations_per_transaction, config.max_mutations_per_request) {
            self.set_mutation_limits(t as usize, r as usize);
        }
        Ok(())
    }
}

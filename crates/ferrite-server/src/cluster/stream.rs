//! The shape store through NATS JetStream: the leader publishes every change of its shape
//! directories (see [`crate::storage::replica`]) to the stream `FERRITE_<slot>`, subject
//! `ferrite.<slot>.files`, before readers may see it; every follower applies the stream to its
//! own data directory, so when it takes over it holds the same handles and offsets, byte for
//! byte, and clients go on without a 409.
//!
//! - **Fencing.** Each message is published with `Nats-Expected-Last-Sequence` set to the
//!   sequence of the message before it, so only one node can append at a time. A node taking
//!   over first applies the stream to its end, then appends an empty *takeover* message that
//!   expects that end; once it is in, a deposed leader's next publish fails (its expected
//!   sequence is stale) and that node stops ([`crate::state::AppState::halt`]). If the deposed
//!   leader got one more message in first, the new one applies it and tries again.
//! - **Retries.** A publish that gets no answer is retried with the same `Nats-Msg-Id`, which
//!   JetStream's duplicate window (2 minutes) answers with the original sequence.
//! - **The slot.** The replication driver publishes a batch's writes and waits for the
//!   acknowledgement before it syncs the logs and confirms the batch's LSN: the slot's confirmed
//!   position is never ahead of the stream.
//! - **Followers** start from an empty data directory and apply the stream from its first
//!   message (the stream keeps the whole history: nothing compacts it yet).

use crate::state::AppState;
use crate::storage::replica::{self, Applier, FileOp, WriteSink};
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use futures_util::StreamExt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A message's payload stays under this (NATS's default `max_payload` is 1 MiB).
const MAX_MESSAGE: usize = 768 * 1024;

/// The stream's name for a slot (JetStream names cannot hold `.`; slot names are
/// `[a-z0-9_]`).
pub fn stream_name(slot: &str) -> String {
    format!("FERRITE_{slot}")
}

/// The stream of this cluster, created on first use.
pub async fn open(js: &jetstream::Context, slot: &str, subject: &str) -> Result<stream::Stream, String> {
    js.get_or_create_stream(stream::Config {
        name: stream_name(slot),
        subjects: vec![subject.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("opening the JetStream stream {}: {e}", stream_name(slot)))
}

/// Splits ops into message payloads under [`MAX_MESSAGE`] (a large write goes in pieces).
fn messages(ops: Vec<FileOp>) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut cur = Vec::new();
    let push = |op: &FileOp, cur: &mut Vec<u8>, out: &mut Vec<Vec<u8>>| {
        if !cur.is_empty() && cur.len() + replica::encoded_len(op) > MAX_MESSAGE {
            out.push(std::mem::take(cur));
        }
        replica::encode(op, cur);
    };
    for op in ops {
        match op {
            FileOp::Write { dir, file, pos, bytes } if bytes.len() > MAX_MESSAGE / 2 => {
                for (i, piece) in bytes.chunks(MAX_MESSAGE / 2).enumerate() {
                    let pos = pos + (i * (MAX_MESSAGE / 2)) as u64;
                    push(&FileOp::Write { dir: dir.clone(), file, pos, bytes: piece.to_vec() }, &mut cur, &mut out);
                }
            }
            op => push(&op, &mut cur, &mut out),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// What [`publish_one`] can end with besides a sequence.
enum Failure {
    /// Another node appended: this one no longer leads.
    Fenced,
}

/// Publishes one message expecting `last` before it; retries (same message id) until it is in.
async fn publish_one(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    last: u64,
    payload: Vec<u8>,
) -> Result<u64, Failure> {
    let payload = bytes::Bytes::from(payload);
    let mut wait = Duration::from_millis(50);
    loop {
        let publish =
            jetstream::context::Publish::build().payload(payload.clone()).message_id(id).expected_last_sequence(last);
        let error = match js.send_publish(subject.to_string(), publish).await {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if error.kind() == PublishErrorKind::WrongLastSequence {
            return Err(Failure::Fenced);
        }
        tracing::warn!(error = %error, "publishing to the shape stream failed; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

struct Job {
    ops: Vec<FileOp>,
    done: Option<std::sync::mpsc::SyncSender<Result<(), String>>>,
}

/// The leader's [`WriteSink`]: hands ops to one publisher (which keeps them in order) and waits
/// for JetStream's acknowledgement. The publisher runs on a thread of its own, with a runtime and
/// NATS connection of its own: callers wait for it holding locks that request handlers also
/// take, so it must never need one of the server's busy worker threads to make progress.
pub struct StreamSink {
    jobs: mpsc::UnboundedSender<Job>,
    fenced: Arc<AtomicBool>,
}

impl WriteSink for StreamSink {
    fn publish(&self, ops: Vec<FileOp>) -> io::Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.wait_for(ops)
    }

    fn publish_later(&self, ops: Vec<FileOp>) {
        if !ops.is_empty() {
            let _ = self.jobs.send(Job { ops, done: None });
        }
    }

    fn flush(&self) -> io::Result<()> {
        self.wait_for(Vec::new())
    }
}

impl StreamSink {
    /// Hands `ops` over (none: a barrier) and waits until they and everything before are stored.
    fn wait_for(&self, ops: Vec<FileOp>) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.fenced.load(Ordering::Acquire) || self.jobs.send(Job { ops, done: Some(tx) }).is_err() {
            return Err(io::Error::other("this node no longer leads the cluster"));
        }
        // (On a runtime worker, the runtime hands its other tasks to another thread meanwhile.)
        let answer = tokio::task::block_in_place(|| rx.recv());
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(io::Error::other("the shape stream's publisher stopped")),
        }
    }
}

/// Starts the publisher of a node that leads, appending after sequence `last` (see
/// [`StreamSink`] for why on a thread of its own).
fn start_sink(state: Arc<AppState>, subject: String, node: String, last: u64) -> io::Result<Arc<StreamSink>> {
    let (jobs, rx) = mpsc::unbounded_channel::<Job>();
    let fenced = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(StreamSink { jobs, fenced: fenced.clone() });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("ferrite-stream".into()).spawn(move || {
        runtime.block_on(async move {
            let url = state.config.cluster.nats_url.clone().unwrap_or_default();
            let connected = match super::server_addrs(&url) {
                Ok(addrs) => async_nats::ConnectOptions::new()
                    .name("ferrite shape stream")
                    .retry_on_initial_connect()
                    .connect(addrs)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match connected {
                Ok(client) => publish_jobs(state, jetstream::new(client), subject, node, last, rx, fenced).await,
                Err(e) => state.halt(format!("connecting the shape stream's publisher to NATS: {e}")),
            }
        })
    })?;
    Ok(sink)
}

/// Publishes the jobs in order; halts the node when another one appended to the stream.
async fn publish_jobs(
    state: Arc<AppState>,
    js: jetstream::Context,
    subject: String,
    node: String,
    mut last: u64,
    mut rx: mpsc::UnboundedReceiver<Job>,
    fenced: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    while let Some(job) = rx.recv().await {
        let mut result = Ok(());
        for payload in messages(job.ops) {
            n += 1;
            match publish_one(&js, &subject, &format!("{node}-{n}"), last, payload).await {
                Ok(seq) => {
                    last = seq;
                    state.metrics.cluster_stream_seq.store(seq, Ordering::Relaxed);
                    state.metrics.cluster_stream_published.fetch_add(1, Ordering::Relaxed);
                }
                Err(Failure::Fenced) => {
                    fenced.store(true, Ordering::Release);
                    result = Err("another node appended to the shape stream: this node no longer leads".to_string());
                    break;
                }
            }
        }
        if let Some(done) = job.done {
            let _ = done.send(result.clone());
        }
        if let Err(why) = result {
            state.halt(why);
            return;
        }
    }
}

/// A follower's copy of the stream: applies every message, in order, to the data directory.
pub struct Follower {
    /// Sequence of the last message applied.
    pub applied: watch::Receiver<u64>,
    /// The applying task, stopped with this.
    _task: crate::replication::AbortOnDrop,
}

impl Follower {
    /// Starts applying the stream from its first message.
    pub fn start(state: Arc<AppState>, client: async_nats::Client, slot: String, subject: String) -> Follower {
        let (tx, applied) = watch::channel(0u64);
        let task = tokio::spawn(follow(state, client, slot, subject, tx));
        Follower { applied, _task: crate::replication::AbortOnDrop::new(task) }
    }
}

async fn follow(
    state: Arc<AppState>,
    client: async_nats::Client,
    slot: String,
    subject: String,
    applied: watch::Sender<u64>,
) {
    let applier = Arc::new(Applier::new(&state.config.data_dir));
    let js = jetstream::new(client.clone());
    loop {
        let from = *applied.borrow() + 1;
        match follow_from(&state, &client, &js, &slot, &subject, from, &applier, &applied).await {
            Ok(()) => tracing::warn!("the shape stream's consumer ended; resuming"),
            Err(e) => tracing::warn!(error = %e, "following the shape stream failed; resuming"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Applies one message's ops to the data directory, then to the shapes this follower serves:
/// a shape whose snapshot completed opens for reading, one that grew shows what is whole, a
/// removed one goes (its readers are told to start over), and the leader's position moves.
fn apply(state: &Arc<AppState>, applier: &Applier, ops: &[FileOp]) -> io::Result<()> {
    let mut grown: Vec<&str> = Vec::new();
    for op in ops {
        applier.apply(op)?;
        match op {
            FileOp::Write { dir, .. } | FileOp::SetLen { dir, .. } => {
                if !grown.contains(&dir.as_str()) {
                    grown.push(dir);
                }
            }
            FileOp::Meta { dir, .. } if state.registry.get(dir).is_none() => {
                if let Err(e) = state.registry.open_replica(&state.config.data_dir.join(dir)) {
                    tracing::warn!(shape = %dir, error = %e, "cannot open a replicated shape; the leader serves it");
                }
            }
            FileOp::Remove { dir } => {
                state.registry.remove(dir, crate::shapes::shape::Removal::Rotated);
            }
            FileOp::Processed { lsn } => {
                state.global_lsn.fetch_max(*lsn, Ordering::Relaxed);
            }
            FileOp::Meta { .. } | FileOp::Replace { .. } | FileOp::RemoveFile { .. } => {}
        }
    }
    for dir in grown {
        state.registry.follow_replica(dir)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn follow_from(
    state: &Arc<AppState>,
    client: &async_nats::Client,
    js: &jetstream::Context,
    slot: &str,
    subject: &str,
    from: u64,
    applier: &Arc<Applier>,
    applied: &watch::Sender<u64>,
) -> Result<(), String> {
    let stream = open(js, slot, subject).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
            filter_subject: subject.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating the stream's consumer: {e}"))?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    // After NATS comes back the consumer is started again at once, rather than when its
    // heartbeats are missed (half a minute).
    let mut check = tokio::time::interval(Duration::from_millis(250));
    let mut was_down = false;
    loop {
        let message = tokio::select! {
            m = messages.next() => m,
            _ = check.tick() => {
                let up = client.connection_state() == async_nats::connection::State::Connected;
                if up && was_down {
                    return Err("NATS is back".into());
                }
                was_down |= !up;
                continue;
            }
        };
        let Some(message) = message else { return Ok(()) };
        let message = message.map_err(|e| e.to_string())?;
        let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
        if seq <= *applied.borrow() {
            continue;
        }
        match replica::decode(&message.payload) {
            Ok(ops) => {
                let (applier, state) = (applier.clone(), state.clone());
                tokio::task::spawn_blocking(move || apply(&state, &applier, &ops))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("applying message {seq} of the shape stream: {e}"))?;
            }
            Err(e) => {
                // Nothing this node can do about it but say so: its copy may now differ.
                state.metrics.cluster_stream_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(seq, error = %e, "a message of the shape stream was refused");
            }
        }
        state.metrics.cluster_stream_seq.store(seq, Ordering::Relaxed);
        applied.send_replace(seq);
    }
}

/// Makes this node the stream's only writer: applies the stream to its end (`follower`, then
/// stopped), appends the takeover message expecting that end, and returns the sink for the
/// leader's writes. Everything applied is made durable first (one `syncfs`).
pub async fn take_over(
    state: &Arc<AppState>,
    js: &jetstream::Context,
    cluster: &super::Cluster,
    follower: Follower,
) -> Result<Arc<StreamSink>, String> {
    let subject = cluster.subject("files");
    let slot = &state.config.slot_name;
    let mut stream = open(js, slot, &subject).await?;
    let mut applied = follower.applied.clone();
    loop {
        let last =
            stream.info().await.map_err(|e| format!("reading the shape stream's state: {e}"))?.state.last_sequence;
        applied.wait_for(|a| *a >= last).await.map_err(|_| "the stream's follower stopped".to_string())?;
        let id = format!("{}-takeover-{last}", cluster.node);
        let publish = jetstream::context::Publish::build()
            .payload(bytes::Bytes::new())
            .message_id(&id)
            .expected_last_sequence(last);
        let ack = match js.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(ack) => {
                drop(follower);
                let dir = state.config.data_dir.clone();
                tokio::task::spawn_blocking(move || sync_filesystem(&dir))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("syncing the replicated shapes: {e}"))?;
                tracing::info!(seq = ack.sequence, "took over the shape stream");
                return start_sink(state.clone(), subject, cluster.node.clone(), ack.sequence)
                    .map_err(|e| format!("starting the shape stream's publisher: {e}"));
            }
            // The deposed leader got a message in first: apply it too, then try again.
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot append the takeover message; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                stream = open(js, slot, &subject).await?;
            }
        }
    }
}

/// One `syncfs` of the filesystem holding `dir`.
fn sync_filesystem(dir: &std::path::Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes what a data directory held before this process (shape directories, the journal,
/// dependency nodes): a node of a cluster starts with nothing and takes the stream from its
/// start, since what it kept may hold writes it never published. Only what Ferrite puts there
/// goes (a directory with a shape's files, the nodes' directory, the journal): a `data_dir`
/// pointed at the wrong place loses nothing else.
pub fn clear_data_dir(dir: &std::path::Path) -> io::Result<usize> {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(0) };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if crate::shapes::registry::holds_a_shape(&path) || (path.is_dir() && name == crate::shapes::nodes::NODES_DIR) {
            std::fs::remove_dir_all(&path)?;
            removed += 1;
        } else if path.is_file() && name == crate::storage::journal::JOURNAL_FILE {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::replica::ShapeFile;

    #[test]
    fn clearing_a_data_directory_removes_only_what_ferrite_put_there() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        for (dir, file) in
            [("h-1", "shape.json"), ("h-2", "log"), (crate::shapes::nodes::NODES_DIR, "x"), ("photos", "cat.jpg")]
        {
            std::fs::create_dir_all(d.join(dir)).unwrap();
            std::fs::write(d.join(dir).join(file), b"x").unwrap();
        }
        std::fs::write(d.join(crate::storage::journal::JOURNAL_FILE), b"x").unwrap();
        std::fs::write(d.join("notes.txt"), b"x").unwrap();
        assert_eq!(clear_data_dir(d).unwrap(), 3);
        let mut left: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["notes.txt", "photos"]);
    }

    #[test]
    fn a_large_batch_is_split_into_bounded_messages_that_decode_to_the_same_bytes() {
        let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let ops = vec![
            FileOp::Meta { dir: "h".into(), bytes: b"{}".to_vec() },
            FileOp::Write { dir: "h".into(), file: ShapeFile::Log, pos: 10, bytes: big.clone() },
            FileOp::Remove { dir: "g".into() },
        ];
        let msgs = messages(ops);
        assert!(msgs.len() >= 3, "{}", msgs.len());
        assert!(msgs.iter().all(|m| m.len() <= MAX_MESSAGE));
        let root = tempfile::tempdir().unwrap();
        let applier = Applier::new(root.path());
        for m in &msgs {
            for op in replica::decode(m).unwrap() {
                applier.apply(&op).unwrap();
            }
        }
        let log = std::fs::read(root.path().join("h/log")).unwrap();
        assert_eq!(&log[10..], &big[..]);
    }
}

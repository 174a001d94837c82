//! Starting and stopping a server: storage, replication driver, maintenance and HTTP listener.

use crate::cluster::Cluster;
use crate::config::ServerConfig;
use crate::shapes::Registry;
use crate::state::AppState;
use ferrite_protocol::clock::Clock;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory could not be opened.
    #[error("cannot open the data directory {path}: {source}")]
    Storage {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The cluster's NATS could not be used.
    #[error("cannot join the cluster: {0}")]
    Cluster(String),
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running server; dropping it does not stop it, call [`RunningServer::shutdown`].
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    state: Arc<AppState>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    http: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting requests and background work.
    /// Held live requests are answered at once (long-polls as at their timeout; streams end),
    /// so clients get a clean end and reconnect; in-flight requests get up to 5 s; the
    /// replication driver stops between batches and the slot is confirmed to where it stopped
    /// (up to 5 s more), so a restart resumes there without replaying.
    pub async fn shutdown(self) {
        self.state.draining.send_replace(true);
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
        if self.state.metrics.replication_connected.load(Ordering::Relaxed) == 1 {
            let mut stopped = self.state.replication_stopped.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(5), stopped.wait_for(|s| *s)).await;
        }
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Resolves when the server must stop by itself, with why (a deposed cluster leader: its
    /// supervisor starts it again and it follows). Pending forever otherwise.
    pub async fn halted(&self) -> String {
        let mut rx = self.state.halted.subscribe();
        let why = match rx.wait_for(|h| h.is_some()).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => return std::future::pending().await,
        };
        why
    }

    /// Base URL, e.g. `http://127.0.0.1:3000`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A read-only view of the server's workings, for benchmarks and tests.
    pub fn observer(&self) -> Observer {
        Observer(self.state.clone())
    }
}

/// What benchmarks and tests may see of a running server: its metrics, its shapes, when
/// transactions arrived (and one cache they may empty). Cheap to clone.
#[derive(Clone)]
pub struct Observer(Arc<AppState>);

impl Observer {
    /// The counters and histograms `/metrics` renders.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.0.metrics
    }

    /// How many shapes the server holds.
    pub fn shape_count(&self) -> usize {
        self.0.registry.len()
    }

    /// Write requests holding an admission place now (admitted, body perhaps still arriving).
    pub fn writes_held(&self) -> usize {
        self.0.admission.writes_held()
    }

    /// Forgets every compressed response kept for reuse, so a benchmark can measure the cost
    /// of compressing a response the first time.
    pub fn forget_compressed_responses(&self) {
        self.0.compressed.clear();
    }

    /// When the transaction that committed at `commit_lsn` arrived from Postgres (recent ones
    /// only), so a benchmark can split latency into replication delay and the engine's own time.
    pub fn arrival_of(&self, commit_lsn: u64) -> Option<std::time::Instant> {
        self.0.receipt_of(commit_lsn)
    }
}

/// Opens storage, starts replication and serves HTTP.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    launch(config, None, Clock::system()).await
}

/// [`start`], with `extra` routes mounted beside the API (without CORS, and replacing the root
/// route): how `ferrite dev` adds its sign-in and the editor app without the generic server
/// knowing about either.
pub async fn start_with(config: ServerConfig, extra: Option<axum::Router>) -> Result<RunningServer, StartError> {
    launch(config, extra, Clock::system()).await
}

/// [`start`], reading the time from `clock` instead of the system's: how a test makes shapes
/// and presence members expire by advancing a [`ManualClock`](crate::ManualClock) rather than
/// by sleeping through their TTL. Request deadlines (long-poll, SSE, body reads) still run on
/// real time.
pub async fn start_with_clock(config: ServerConfig, clock: Clock) -> Result<RunningServer, StartError> {
    launch(config, None, clock).await
}

async fn launch(
    mut config: ServerConfig,
    extra: Option<axum::Router>,
    clock: Clock,
) -> Result<RunningServer, StartError> {
    config.validate().map_err(StartError::Config)?;
    let fd_limit = raise_fd_limit();
    if let Some(shapes) = shapes_within(fd_limit, config.max_shapes) {
        // Each open shape holds a file (its log); past the limit, requests would fail with EMFILE.
        tracing::warn!(
            fd_limit,
            max_shapes = config.max_shapes,
            kept = shapes,
            "the open-file limit allows fewer shapes than max_shapes (one file each, and connections): \
             keeping at most {shapes}; raise the limit (e.g. LimitNOFILE in systemd) to keep more"
        );
        config.max_shapes = shapes;
    }
    if config.cluster.nats_url.is_some() {
        // A node of a cluster holds only what the shape stream gives it (cluster::stream).
        let cleared = crate::cluster::stream::clear_data_dir(&config.data_dir)
            .map_err(|source| StartError::Storage { path: config.data_dir.display().to_string(), source })?;
        if cleared > 0 {
            tracing::info!(shapes = cleared, "cluster node: cleared the data directory; the shape stream fills it");
        }
    }
    let registry = Registry::open(&config.data_dir, config.chunk_bytes, clock.clone())
        .map_err(|source| StartError::Storage { path: config.data_dir.display().to_string(), source })?;
    tracing::info!(shapes = registry.len(), dir = %config.data_dir.display(), "shape storage opened");
    let addr_text = format!("{}:{}", config.listen, config.port);
    let listener = tokio::net::TcpListener::bind(&addr_text)
        .await
        .map_err(|source| StartError::Listen { addr: addr_text.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: addr_text, source })?;
    let state = Arc::new(AppState::new(config, Arc::new(registry), clock).map_err(StartError::Config)?);
    // Relational shapes stopped in the middle of a move-in read its rows again.
    for shape in state.registry.moving_in() {
        tokio::spawn(crate::state::run_move_in(state.clone(), shape));
    }
    // Shapes that read the clock wait for their next time boundary again.
    for shape in state.registry.following_clock() {
        tokio::spawn(crate::state::follow_clock(state.clone(), shape));
    }
    let mut tasks = vec![
        tokio::spawn(expire_shapes(state.clone())),
        tokio::spawn(refresh_replication_metrics(state.clone())),
        tokio::spawn(expire_presence(state.clone())),
        tokio::spawn(sweep_audit(state.clone())),
    ];
    match Cluster::join(&state.config, addr.port()).await.map_err(StartError::Cluster)? {
        // One node of a cluster follows the slot at a time: the one holding the lock.
        Some(cluster) => {
            let cluster = Arc::new(cluster);
            let _ = state.cluster.set(cluster.clone());
            tasks.push(tokio::spawn(crate::cluster::leader::run(state.clone(), cluster.clone())));
            tasks.push(tokio::spawn(crate::cluster::nodes::heartbeat(state.clone(), cluster.clone())));
            tasks.push(tokio::spawn(crate::cluster::nodes::watch(state.clone(), cluster.clone())));
            tasks.push(tokio::spawn(crate::cluster::usage::report(state.clone(), cluster.clone())));
            tasks.push(tokio::spawn(crate::cluster::usage::take(state.clone(), cluster.clone())));
            tasks.extend(crate::cluster::presence::start(state.clone(), cluster));
        }
        None => tasks.push(tokio::spawn(crate::replication::run(state.clone()))),
    }
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let app = crate::http::router(state.clone(), extra);
    let header_timeout = Duration::from_secs(state.config.request_read_timeout_secs);
    let max_header_bytes = state.config.max_header_bytes;
    let http = tokio::spawn(crate::http::listener::serve(listener, app, header_timeout, max_header_bytes, rx));
    tracing::info!(%addr, "listening");
    Ok(RunningServer { addr, state, tasks, shutdown, http })
}

/// Runs `work` every `period`, and at once whenever a test moves the server's clock on (see
/// [`Clock::advanced`]), so what expires by the clock expires as soon as a test's time has
/// passed.
async fn on_each_tick(state: &AppState, period: Duration, mut work: impl FnMut()) {
    let mut tick = tokio::time::interval(period);
    let mut advanced = state.clock.advanced();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut advanced => {}
        }
        // Made before the work, so an advance during it is not missed.
        advanced = state.clock.advanced();
        work();
    }
}

/// Drops presence members whose heartbeat stopped (checked every second).
async fn expire_presence(state: Arc<AppState>) {
    on_each_tick(&state, Duration::from_secs(1), || {
        state.presence.expire();
    })
    .await
}

/// Keeps the audit trail to its retention (`audit_retention`): creates `ferrite.audit` at start
/// (so it can be read as a shape before the first write), then deletes expired rows in bounded
/// batches every [`AuditRetention::sweep_interval`](crate::config::AuditRetention::sweep_interval).
/// Postgres being unreachable only delays the next sweep.
async fn sweep_audit(state: Arc<AppState>) {
    let (Some(retention), Some(period)) =
        (state.config.audit_retention.0, state.config.audit_retention.sweep_interval())
    else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.writer.sweep_audit(retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted audit rows past their retention"),
            Err(e) => tracing::debug!(error = %e, "audit retention sweep failed; trying again later"),
        }
    }
}

/// Expires idle shapes (checked every 5 s).
async fn expire_shapes(state: Arc<AppState>) {
    on_each_tick(&state, Duration::from_secs(5), || {
        if state.cluster.get().is_some_and(|c| !c.leading()) {
            // A follower's shapes are the leader's: they go when the stream removes them.
            return;
        }
        let expired = state.registry.expire_idle(state.config.shape_ttl_secs);
        if expired > 0 {
            tracing::info!(expired, "idle shapes expired");
        }
    })
    .await
}

/// Refreshes the replication metrics that need Postgres: its WAL position and the WAL the slot
/// retains (every 5 s).
async fn refresh_replication_metrics(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let slot = state.config.slot_name.clone();
        let status = state
            .with_db(|c| {
                Box::pin(async move {
                    let wal = ferrite_pg::replication::current_wal_lsn(c).await.ok();
                    let slot = ferrite_pg::replication::slot_status(c, &slot).await.ok().flatten();
                    (wal, slot)
                })
            })
            .await;
        if let Ok((wal, slot)) = status {
            if let Some(w) = wal {
                state.metrics.server_wal_lsn.store(w, Ordering::Relaxed);
            }
            if let Some(s) = slot {
                state.metrics.retained_wal_bytes.store(s.retained_wal_bytes, Ordering::Relaxed);
                state.metrics.slot_safe_wal_bytes.store(s.safe_wal_bytes.unwrap_or(-1), Ordering::Relaxed);
            }
        }
    }
}

/// Shapes keep their log files open; allow as many descriptors as the hard limit permits.
/// Returns the limit in force.
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return u64::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// How many shapes fit the open-file limit when `max_shapes` do not: one file each (its
/// `log`; see `storage::shape_log`), within half of the limit (the other half for
/// connections, held long-polls, Postgres, and the files a shape opens for a moment). `None`
/// when `max_shapes` fit.
fn shapes_within(fd_limit: u64, max_shapes: usize) -> Option<usize> {
    let fit = (fd_limit / 2).max(16) as usize;
    (max_shapes > fit).then_some(fit)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes_are_kept_within_the_open_file_limit() {
        // One file a shape, within half the limit.
        assert_eq!(super::shapes_within(20_000, 10_000), None, "this sandbox's limit holds 10,000");
        assert_eq!(super::shapes_within(20_000, 20_000), Some(10_000));
        assert_eq!(super::shapes_within(8_192, 10_000), Some(4_096));
        assert_eq!(super::shapes_within(1_048_576, 10_000), None);
        assert_eq!(super::shapes_within(u64::MAX, 10_000), None);
        assert_eq!(super::shapes_within(20, 100), Some(16), "a floor, however low the limit");
    }
}

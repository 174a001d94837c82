//! Several Ferrite nodes of one database: who leads, who is alive, and what they share over
//! NATS.
//!
//! Every node connects to the NATS server(s) of `[cluster] nats_url` and takes a random node id
//! for the life of its process. Subjects are named after the replication slot
//! (`ferrite.<slot>.…`), which every node of one cluster shares and no other cluster can, so two
//! clusters may use one NATS server.
//!
//! - [`leader`]: one node leads — it holds a Postgres advisory lock and is the only one to follow
//!   the replication slot and make shapes; the others follow and take over when it goes. The
//!   leader records its URL in the database, so followers find it even when NATS is away.
//! - [`nodes`]: every node says it is alive (with its role and URL) every second; the others
//!   keep a table of who is there, which tells followers where the leader is.
//! - [`stream`]: the leader publishes every change of its shape store to a JetStream stream
//!   before readers see it; followers apply it, so a follower that takes over serves the same
//!   handles and offsets.
//! - [`forward`]: a follower answers the reads its copy can answer as the leader would (live
//!   reads, chunks already placed) and passes the others to the leader.
//! - [`presence`]: every node's local presence changes reach the others; a dead node's members
//!   leave at once.
//! - [`usage`]: followers tell the leader which shapes their readers use, so the leader's idle
//!   expiry does not take them away.
//!
//! The NATS connection is made in the background and re-made after a loss (NATS's client does
//! both): while NATS is away, nodes go on leading, following and passing reads to the leader
//! (found in the database), and answer reads of what they hold; what changes meanwhile waits
//! for the stream, and presence stays on each node, until NATS is back.

pub mod forward;
pub mod leader;
pub mod nodes;
pub mod presence;
pub mod stream;
pub mod usage;

use crate::config::ServerConfig;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A node's membership of its cluster.
pub struct Cluster {
    /// The NATS connection.
    pub client: async_nats::Client,
    /// This process's id among the nodes (random, 64 bits in hex).
    pub node: String,
    /// This node's name for people (`cluster.node_name`, or `<listen>:<port>`).
    pub name: String,
    /// Where other nodes reach this node's HTTP API.
    pub url: String,
    /// `ferrite.<slot>`: the prefix of every subject of this cluster.
    pub prefix: String,
    leading: AtomicBool,
    /// When this node last took the lock (Unix ms; 0: never).
    leading_since: AtomicU64,
    /// The other nodes heard from lately, by node id.
    peers: Mutex<HashMap<String, nodes::Peer>>,
    /// The leader as `ferrite.cluster_leader` last named it (node id, URL).
    recorded_leader: Mutex<Option<(String, String)>>,
}

/// The NATS server addresses of a `nats_url` setting (comma-separated), or why it is not one.
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    let addrs: Result<Vec<_>, _> =
        url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(async_nats::ServerAddr::from_str).collect();
    match addrs {
        Ok(a) if a.is_empty() => Err("no NATS server given".into()),
        Ok(a) => Ok(a),
        Err(e) => Err(format!("{url:?} is not a NATS server URL: {e}")),
    }
}

impl Cluster {
    /// Connects to the cluster's NATS (in the background: this returns at once, and messages
    /// wait in the client until the connection is up); `None` for a single node.
    pub async fn join(config: &ServerConfig, port: u16) -> Result<Option<Cluster>, String> {
        let Some(url) = &config.cluster.nats_url else { return Ok(None) };
        let node = format!("{:016x}", rand::random::<u64>());
        let name = config.cluster.node_name.clone().unwrap_or_else(|| format!("{}:{port}", config.listen));
        let own_url = config
            .cluster
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{}:{port}", config.listen))
            .trim_end_matches('/')
            .to_string();
        let client = async_nats::ConnectOptions::new()
            .name(format!("ferrite {name}"))
            // A node's own messages are not news to it.
            .no_echo()
            .retry_on_initial_connect()
            .connect(server_addrs(url)?)
            .await
            .map_err(|e| format!("connecting to NATS at {url}: {e}"))?;
        tracing::info!(%node, %name, nats = %url, "joined the cluster");
        Ok(Some(Cluster {
            client,
            node,
            name,
            url: own_url,
            prefix: format!("ferrite.{}", config.slot_name),
            leading: AtomicBool::new(false),
            leading_since: AtomicU64::new(0),
            peers: Mutex::new(HashMap::new()),
            recorded_leader: Mutex::new(None),
        }))
    }

    /// A subject of this cluster: `ferrite.<slot>.<suffix>`.
    pub fn subject(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Subscribes to `ferrite.<slot>.<suffix>`, retrying until NATS takes the subscription.
    pub async fn subscribe(&self, suffix: &str) -> async_nats::Subscriber {
        let subject = self.subject(suffix);
        loop {
            match self.client.subscribe(subject.clone()).await {
                Ok(s) => return s,
                Err(e) => {
                    tracing::warn!(error = %e, %subject, "cannot subscribe; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Whether the NATS connection is up right now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Whether this node leads (holds the lock, follows the slot) right now.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    fn set_leading(&self, leading: bool) {
        if leading {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            self.leading_since.store(now as u64, Ordering::Release);
        }
        self.leading.store(leading, Ordering::Release);
    }

    /// When this node took the lock it holds (Unix ms), if it leads.
    pub fn leading_since(&self) -> Option<u64> {
        self.leading().then(|| self.leading_since.load(Ordering::Acquire))
    }

    /// The leader's URL, when another node leads: as the database names it (the lock holder
    /// records itself there), else as heartbeats say (of two that say so for a moment, the one
    /// that took the lock last).
    pub fn leader_url(&self) -> Option<String> {
        if let Some((node, url)) = self.recorded_leader.lock().as_ref() {
            if *node != self.node {
                return Some(url.clone());
            }
        }
        self.peers.lock().values().filter(|p| p.leading).max_by_key(|p| p.leading_since).map(|p| p.url.clone())
    }

    fn set_recorded_leader(&self, node: String, url: String) {
        *self.recorded_leader.lock() = Some((node, url));
    }

    /// The other nodes heard from lately.
    pub fn peers(&self) -> Vec<nodes::Peer> {
        let mut peers: Vec<nodes::Peer> = self.peers.lock().values().cloned().collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        peers
    }
}

//! Server configuration: the `[server]`-level keys of `ferrite.toml`.
//!
//! Every key has a default that works for `ferrite dev`; every key can be overridden by an
//! environment variable `FERRITE_<KEY>` (upper case), which the binary applies.

// The settings' value types, re-exported so a configuration can be written with this crate alone.
pub use ferrite_core::merge::{ConflictPolicy, Existence, Rule};
pub use ferrite_protocol::client_config::AuthMode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything the server needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Postgres connection URL (`postgres://user:pass@host:port/db`).
    pub database_url: String,
    /// Address to listen on.
    pub listen: String,
    /// HTTP port (0 = pick a free one).
    pub port: u16,
    /// Where shape logs live.
    pub data_dir: PathBuf,
    /// Logical replication slot owned by Ferrite.
    pub slot_name: String,
    /// Publication owned by Ferrite; tables join it on first use.
    pub publication: String,
    /// Shape-log chunk size: a catch-up response never spans more than one chunk.
    pub chunk_bytes: u64,
    /// How long a live request waits for changes before answering `up-to-date`.
    pub long_poll_timeout_ms: u64,
    /// How long an SSE stream stays open before the client reconnects.
    pub sse_timeout_secs: u64,
    /// Seconds of silence after which an SSE stream gets a keep-alive comment.
    pub sse_keepalive_secs: u64,
    /// Most shapes kept; the least recently used is evicted beyond it (its clients refetch).
    pub max_shapes: usize,
    /// Seconds without a request after which a shape is dropped.
    pub shape_ttl_secs: u64,
    /// If set, every `/v1` request except `/v1/health` must carry `secret=<value>` (or `api_secret`).
    pub secret: Option<String>,
    /// `max-age` for non-live catch-up responses.
    pub cache_max_age: u64,
    /// `stale-while-revalidate` for non-live catch-up responses.
    pub cache_stale_age: u64,
    /// Concurrent requests that create or start reading a shape (`offset=-1`); beyond → 503.
    pub max_concurrent_initial: usize,
    /// Concurrent other shape requests (including held live requests and SSE streams); beyond → 503.
    pub max_concurrent_existing: usize,
    /// Concurrent `POST /v1/transactions` requests (each waits for a write connection); beyond → 503.
    pub max_concurrent_writes: usize,
    /// Concurrent presence requests (including held long-polls and SSE streams); beyond → 503.
    pub max_concurrent_presence: usize,
    /// Requests one token subject may hold at once, all routes together (jwt mode); beyond → 429.
    pub max_requests_per_subject: usize,
    /// Allow `DELETE /v1/shape`.
    pub allow_shape_deletion: bool,
    /// Largest accepted request body.
    pub max_request_bytes: usize,
    /// Largest request line plus headers (431 beyond): bounds each connection's read buffer.
    /// A shape's where clause travels in the URL, so leave room for it (percent-encoded).
    pub max_header_bytes: usize,
    /// Snapshots running at once (initial and subset), each on a connection of its own.
    pub snapshot_concurrency: usize,
    /// Most rows in one subset snapshot answer (400 `subset_too_large` beyond).
    pub max_subset_rows: u64,
    /// Seconds a client may take to send a request's headers (or its body) before the
    /// connection is closed: slow or abandoned clients cannot hold connections open.
    pub request_read_timeout_secs: u64,
    /// Seconds a streaming (SSE) client may go without reading what it was sent before the
    /// stream is closed, so a stalled reader holds no server memory or task.
    pub slow_client_timeout_secs: u64,
    /// Most client transactions accepted in one `POST /v1/transactions`.
    pub sync_batch_size: usize,
    /// Most mutations in one client transaction; a bigger one is rejected (`invalid`, recorded,
    /// so the client rolls it back). Each mutation holds a lock until its transaction ends, and
    /// Postgres's lock table is shared by the whole cluster.
    pub max_mutations_per_transaction: usize,
    /// Most mutations in one `POST /v1/transactions` of several transactions (400 beyond: send
    /// fewer at once). A request of one transaction is judged by the per-transaction limit.
    pub max_mutations_per_request: usize,
    /// How far (ms) a client's HLC may run ahead of the server's before its transaction is
    /// rejected with `clock_skew`.
    pub max_clock_skew_ms: u64,
    /// Postgres connections used to apply client transactions.
    pub write_connections: usize,
    /// Largest initial snapshot of one shape (bytes of row JSON); a bigger shape is refused
    /// with 400 `shape_too_large`. 0 = no limit.
    pub max_shape_size: u64,
    /// The conflict policy of tables without their own `conflict`/`resolve`: `"lww"` or
    /// `"server-wins"`. (The clock is always a hybrid logical clock.)
    pub default_conflict: ConflictPolicy,
    /// How many unsent transactions a Ferrite client keeps offline before refusing new ones;
    /// advertised to clients at `GET /v1/config`.
    pub max_offline_queue: usize,
    /// Token verification (`[auth]`).
    pub auth: AuthConfig,
    /// Seconds a presence member stays in its room without a heartbeat.
    pub presence_ttl_secs: u64,
    /// Most members in one presence room; a join beyond it is refused (429).
    pub presence_max_members: usize,
    /// Most presence rooms held at once (with members or watchers); beyond it, 503.
    pub presence_max_rooms: usize,
    /// How long the audit trail (`ferrite.audit`: every client transaction's outcome, who sent
    /// it and what it changed) keeps its rows: `"30d"` (default), `"12h"`, `"90m"`, `"45s"` or
    /// plain seconds; `"off"` or `0` records nothing. Older rows are deleted in the background,
    /// in bounded batches.
    pub audit_retention: AuditRetention,
    /// Per-table settings (`[tables.<name>]`): conflict policy, row existence rule, access rules.
    pub tables: BTreeMap<String, TableConfig>,
    /// `[cluster]`: several Ferrite nodes of one database, talking over NATS.
    pub cluster: ClusterConfig,
}

/// How long audit rows are kept (`audit_retention`), or `None`: no audit trail at all. Written
/// as a number and a unit (`s`, `m`, `h`, `d`), plain seconds, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRetention(pub Option<std::time::Duration>);

impl Default for AuditRetention {
    /// Thirty days: long enough to answer "who changed this last month", short enough that the
    /// table stays small for a busy write path.
    fn default() -> Self {
        AuditRetention(Some(std::time::Duration::from_secs(30 * 24 * 3600)))
    }
}

impl AuditRetention {
    /// Whether client transactions are recorded at all.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// How often the background sweep looks for expired rows: a quarter of the retention,
    /// between one second and five minutes (so a row outlives its retention by at most that).
    pub fn sweep_interval(&self) -> Option<std::time::Duration> {
        let r = self.0?;
        Some((r / 4).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(300)))
    }
}

impl std::str::FromStr for AuditRetention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("off") {
            return Ok(AuditRetention(None));
        }
        let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
        let n: u64 = digits.parse().map_err(|_| {
            format!("audit_retention must be a number with a unit (s, m, h, d), or \"off\" (got {s:?})")
        })?;
        let scale = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 24 * 3600,
            other => return Err(format!("audit_retention: unknown unit {other:?} (use s, m, h or d)")),
        };
        let secs = n.checked_mul(scale).ok_or_else(|| format!("audit_retention is too long (got {s:?})"))?;
        Ok(AuditRetention((secs > 0).then(|| std::time::Duration::from_secs(secs))))
    }
}

impl std::fmt::Display for AuditRetention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some(d) if d.as_secs() % (24 * 3600) == 0 => write!(f, "{}d", d.as_secs() / (24 * 3600)),
            Some(d) if d.as_secs() % 3600 == 0 => write!(f, "{}h", d.as_secs() / 3600),
            Some(d) if d.as_secs() % 60 == 0 => write!(f, "{}m", d.as_secs() / 60),
            Some(d) => write!(f, "{}s", d.as_secs()),
        }
    }
}

impl Serialize for AuditRetention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for AuditRetention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Text with a unit, or plain seconds as a number.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(AuditRetention((n > 0).then(|| std::time::Duration::from_secs(n)))),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `[cluster]`: what a node needs to work with the other nodes of its cluster (every node of one
/// database and slot). Without `nats_url` the server is a single node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The NATS server(s) the nodes share, e.g. `nats://127.0.0.1:4222` (several: comma-separated).
    pub nats_url: Option<String>,
    /// This node's name in logs and the cluster's status; default `<listen>:<port>`.
    pub node_name: Option<String>,
    /// The URL other nodes reach this node's HTTP API at (followers send shape reads to the
    /// leader's); default `http://<listen>:<port>`.
    pub advertise_url: Option<String>,
}

/// `[auth]`: how requests prove who they are (see [`crate::auth`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `"insecure"` (default: no tokens, everything allowed) or `"jwt"`.
    pub mode: AuthMode,
    /// HS256 shared secret (at least 32 bytes).
    pub secret: Option<String>,
    /// PEM public key (RSA → RS256, EC P-256 → ES256).
    pub public_key_file: Option<PathBuf>,
    /// JWKS document with RS256/ES256 keys, chosen by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// Clock tolerance (seconds) for `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Lets a shared HTTP cache keep shape responses in jwt mode, keyed by the caller's cache
    /// scope (`GET /v1/auth/scope`, asked by the cache for every request): a response is marked
    /// `public` only when the request names the caller's own scope in `ferrite-cache-scope`
    /// (see `deploy/nginx`). Off: every shape response in jwt mode is `private`.
    pub shared_cache: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Insecure,
            secret: None,
            public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            shared_cache: false,
        }
    }
}

/// Write settings of one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableConfig {
    /// `"lww"` or `"server-wins"`; unset, the server's `default_conflict` (unless `resolve` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ConflictPolicy>,
    /// Ordered resolution rules instead of `conflict`, e.g. `["max(importance)", "lww"]`.
    pub resolve: Vec<Rule>,
    /// `"add-wins"` or `"delete-wins"` (default): whether a concurrent update revives a deleted row.
    pub existence: Existence,
    /// Per-column policy inside an `lww` table: column → `"lww"` or `"server-wins"`.
    pub columns: BTreeMap<String, ConflictPolicy>,
    /// JWT mode: where clause (may use `claims.<name>`) ANDed into every shape on the table.
    pub read: Option<String>,
    /// JWT mode: where clause every written row must satisfy before and after the change.
    pub write: Option<String>,
    /// JWT mode: a further condition (with `write`) on writes that create a row — an insert, or
    /// an update or insert that brings back a deleted one — checked on the row as asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insert: Option<String>,
    /// JWT mode: a further condition on writes that change a row that exists (an update, or an
    /// insert of a key that exists), checked on the row as it is and as asked. `"false"`: no
    /// caller may change existing rows (e.g. insert-only forms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    /// JWT mode: a further condition on deletes, checked on the row as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete: Option<String>,
    /// JWT mode: readable by every authenticated client without a `read` rule.
    pub public: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            listen: "127.0.0.1".into(),
            port: 3000,
            data_dir: PathBuf::from(".ferrite/shapes"),
            slot_name: "ferrite_slot".into(),
            publication: "ferrite_publication".into(),
            chunk_bytes: 10 * 1024 * 1024,
            long_poll_timeout_ms: 20_000,
            sse_timeout_secs: 60,
            sse_keepalive_secs: 21,
            max_shapes: 10_000,
            shape_ttl_secs: 7 * 24 * 3600,
            secret: None,
            cache_max_age: 60,
            cache_stale_age: 300,
            max_concurrent_initial: 300,
            max_concurrent_existing: 20_000,
            max_concurrent_writes: 1_000,
            max_concurrent_presence: 20_000,
            max_requests_per_subject: 200,
            allow_shape_deletion: false,
            max_request_bytes: 1024 * 1024,
            max_header_bytes: 256 * 1024,
            snapshot_concurrency: 4,
            max_subset_rows: 100_000,
            request_read_timeout_secs: 10,
            slow_client_timeout_secs: 30,
            sync_batch_size: 100,
            max_mutations_per_transaction: 500,
            max_mutations_per_request: 5_000,
            max_clock_skew_ms: 5 * 60 * 1000,
            write_connections: 8,
            max_shape_size: 0,
            default_conflict: ConflictPolicy::Lww,
            max_offline_queue: 1000,
            auth: AuthConfig::default(),
            presence_ttl_secs: 30,
            presence_max_members: 100,
            presence_max_rooms: 100_000,
            audit_retention: AuditRetention::default(),
            tables: BTreeMap::new(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Checks values that would make the server misbehave; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.chunk_bytes < 1024 {
            return Err(format!("chunk_bytes must be at least 1024 (got {})", self.chunk_bytes));
        }
        if self.long_poll_timeout_ms < 100 {
            return Err("long_poll_timeout_ms must be at least 100".into());
        }
        if self.max_shapes == 0 {
            return Err("max_shapes must be at least 1".into());
        }
        if self.request_read_timeout_secs == 0 {
            return Err("request_read_timeout_secs must be at least 1".into());
        }
        if self.slow_client_timeout_secs == 0 {
            return Err("slow_client_timeout_secs must be at least 1".into());
        }
        if self.sync_batch_size == 0 {
            return Err("sync_batch_size must be at least 1".into());
        }
        if self.max_mutations_per_transaction == 0
            || self.max_mutations_per_request < self.max_mutations_per_transaction
        {
            return Err(format!(
                "max_mutations_per_transaction must be at least 1 and at most max_mutations_per_request (got {} and {})",
                self.max_mutations_per_transaction, self.max_mutations_per_request
            ));
        }
        if self.write_connections == 0 {
            return Err("write_connections must be at least 1".into());
        }
        for (name, table) in &self.tables {
            crate::writes::policy::table_policy(table, self.default_conflict)
                .map_err(|e| format!("tables.{name}: {e}"))?;
        }
        crate::auth::Auth::from_config(self)?;
        if self.presence_ttl_secs == 0 {
            return Err("presence_ttl_secs must be at least 1".into());
        }
        if self.presence_max_members == 0 || self.presence_max_rooms == 0 {
            return Err("presence_max_members and presence_max_rooms must be at least 1".into());
        }
        if self.sse_timeout_secs < 2 {
            return Err("sse_timeout_secs must be at least 2".into());
        }
        if let Some(url) = &self.cluster.nats_url {
            crate::cluster::server_addrs(url).map_err(|e| format!("cluster.nats_url: {e}"))?;
        }
        if self.cluster.node_name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 128) {
            return Err("cluster.node_name must be 1 to 128 bytes".into());
        }
        if let Some(u) = &self.cluster.advertise_url {
            let ok = u.len() <= 1024
                && u.parse::<hyper::Uri>()
                    .is_ok_and(|uri| uri.scheme_str() == Some("http") && uri.host().is_some() && uri.path() == "/");
            if !ok {
                return Err(format!("cluster.advertise_url must be an http://host:port URL (got {u:?})"));
            }
        }
        for (key, v) in [("slot_name", &self.slot_name), ("publication", &self.publication)] {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                return Err(format!("{key} must be lower-case letters, digits and _ (got {v:?})"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn audit_retention_reads_units_and_off() {
        let r = |s: &str| s.parse::<AuditRetention>();
        assert_eq!(r("30d").unwrap().0, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(r("12h").unwrap().0, Some(Duration::from_secs(43_200)));
        assert_eq!(r("90m").unwrap().0, Some(Duration::from_secs(5_400)));
        assert_eq!(r("45").unwrap().0, Some(Duration::from_secs(45)));
        assert_eq!(r("off").unwrap(), AuditRetention(None));
        assert_eq!(r("0").unwrap(), AuditRetention(None));
        assert!(r("3w").unwrap_err().contains("unit"));
        assert!(r("soon").is_err());
        assert_eq!(AuditRetention::default().to_string(), "30d");
        assert_eq!(r("2s").unwrap().sweep_interval(), Some(Duration::from_secs(1)));
        assert_eq!(AuditRetention::default().sweep_interval(), Some(Duration::from_secs(300)));
        // As configured: text, or plain seconds as a number.
        let cfg: ServerConfig = serde_json::from_value(serde_json::json!({"audit_retention": "7d"})).unwrap();
        assert_eq!(cfg.audit_retention.0, Some(Duration::from_secs(7 * 86_400)));
        let cfg: ServerConfig = serde_json::from_value(serde_json::json!({"audit_retention": 0})).unwrap();
        assert!(!cfg.audit_retention.enabled());
    }
}

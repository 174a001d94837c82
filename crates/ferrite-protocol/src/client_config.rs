//! `GET /v1/config`: the settings a server asks its clients to follow, so a deployment tunes its
//! clients in one place.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Whether requests need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No tokens: every table is readable and writable.
    Insecure,
    /// Every shape, transaction and presence request carries `Authorization: Bearer <JWT>`.
    Jwt,
}

/// The body of `GET /v1/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct ClientConfig {
    /// Most transactions in one `POST /v1/transactions`.
    pub sync_batch_size: u32,
    /// Most changes in one transaction (a bigger one is rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub max_mutations_per_transaction: Option<u32>,
    /// Most changes in one request of several transactions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub max_mutations_per_request: Option<u32>,
    /// How many unsent transactions a client keeps before refusing new ones.
    pub max_offline_queue: u32,
    /// How far (ms) a client's clock may run ahead of the server's.
    pub max_clock_skew_ms: u32,
    /// Seconds a presence member stays without a heartbeat.
    pub presence_ttl_secs: u32,
    /// Whether requests need a token.
    pub auth_mode: AuthMode,
}

//! Errors of the replication connection and stream.

use crate::error::{DbErrorInfo, PgError};

/// Why the replication stream could not start or stopped.
///
/// The stream task sends exactly one of these and ends; the caller reconnects (from the slot's
/// confirmed position, so nothing is lost). [`ReplicaIdentityNotFull`](Self::ReplicaIdentityNotFull)
/// and [`Decode`](Self::Decode) will recur on reconnect until the cause is fixed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The URL, slot or publication name cannot be used.
    #[error("invalid replication settings: {0}")]
    Config(String),
    /// Network error talking to the walsender.
    #[error("replication connection I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection or ended the stream (e.g. Postgres restarting).
    #[error("replication connection closed: {0}")]
    Closed(String),
    /// Postgres answered with an `ErrorResponse` (SQLSTATE and message kept).
    #[error("replication error from Postgres: {0}")]
    Server(DbErrorInfo),
    /// Authentication could not be completed (method unsupported, password missing or wrong).
    #[error("replication authentication failed: {0}")]
    Auth(String),
    /// The server sent something the replication protocol does not allow here.
    #[error("replication protocol error: {0}")]
    Protocol(String),
    /// A pgoutput message could not be decoded.
    #[error(transparent)]
    Decode(#[from] super::pgoutput::DecodeError),
    /// An update carried unchanged-TOAST markers but no full old row to fill them from: the table
    /// does not have `REPLICA IDENTITY FULL` (Electric's `replica_not_full`).
    #[error("table {table} must have REPLICA IDENTITY FULL: an update left a TOASTed value out and there is no old row to take it from (ALTER TABLE {table} REPLICA IDENTITY FULL)")]
    ReplicaIdentityNotFull {
        /// `"schema"."table"` of the offending table.
        table: String,
    },
    /// Connecting or authenticating took too long.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl ReplicationError {
    /// The SQLSTATE when Postgres reported the error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ReplicationError::Server(info) => Some(&info.code),
            _ => None,
        }
    }
}

impl From<PgError> for ReplicationError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Db(info) => ReplicationError::Server(info),
            PgError::Connection(m) => ReplicationError::Closed(m),
            PgError::Config(m) | PgError::InvalidName(m) => ReplicationError::Config(m),
            other => ReplicationError::Protocol(other.to_string()),
        }
    }
}

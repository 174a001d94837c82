//! Typed errors for everything that talks to Postgres.
//!
//! Callers need two things from a failure: the text Postgres wrote (so an operator can act on it)
//! and the SQLSTATE (so code can tell "slot already exists" from "connection refused" without
//! matching on messages). [`PgError`] keeps both.

use std::fmt;

/// An error from a Postgres connection or statement.
///
/// Server-side errors keep Postgres's own message and SQLSTATE; everything else (unreachable
/// server, broken connection, bad URL, unexpected catalog contents) gets its own variant so callers
/// can decide whether retrying makes sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// Postgres answered with an `ErrorResponse`.
    #[error("{0}")]
    Db(DbErrorInfo),
    /// The server could not be reached, or the connection broke; retrying later may succeed.
    #[error("connection error: {0}")]
    Connection(String),
    /// The connection string or settings are unusable; retrying will not help.
    #[error("invalid connection settings: {0}")]
    Config(String),
    /// Postgres answered something this code does not expect (a catalog row of the wrong shape, a
    /// value that does not parse).
    #[error("unexpected answer from Postgres: {0}")]
    Protocol(String),
    /// A table named by the caller does not exist (or is not an ordinary/partitioned table).
    #[error("table {0} does not exist")]
    TableNotFound(String),
    /// A name the caller supplied is not acceptable to Postgres (e.g. a replication slot name).
    #[error("invalid name: {0}")]
    InvalidName(String),
}

/// The fields of a Postgres `ErrorResponse` that are worth keeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbErrorInfo {
    /// Severity as sent (`ERROR`, `FATAL`, `PANIC`).
    pub severity: String,
    /// Five-character SQLSTATE, e.g. `42P01`.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Optional `DETAIL`.
    pub detail: Option<String>,
    /// Optional `HINT`.
    pub hint: Option<String>,
}

impl fmt::Display for DbErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (SQLSTATE {})", self.severity, self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, "; DETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; HINT: {h}")?;
        }
        Ok(())
    }
}

impl PgError {
    /// The SQLSTATE when Postgres reported the error, so callers can branch on error classes.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Db(info) => Some(&info.code),
            _ => None,
        }
    }

    /// The database error details, when this is a server-side error.
    pub fn db(&self) -> Option<&DbErrorInfo> {
        match self {
            PgError::Db(info) => Some(info),
            _ => None,
        }
    }

    /// True when a statement gave up waiting for a lock (`lock_timeout`, SQLSTATE `55P03`): a
    /// transaction holding a conflicting lock is open; retrying once it ends succeeds.
    pub fn is_lock_timeout(&self) -> bool {
        self.code() == Some("55P03")
    }

    /// True when retrying on a fresh connection may help: the connection broke or the server is
    /// shutting down / starting up / overloaded (SQLSTATE classes 08, 53, 57P0x).
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Connection(_) => true,
            PgError::Db(info) => {
                info.code.starts_with("08") || info.code.starts_with("53") || info.code.starts_with("57P0")
            }
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            return PgError::Db(DbErrorInfo {
                severity: db.severity().to_string(),
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            });
        }
        // tokio-postgres puts the useful part ("Connection refused") in the source chain.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) {
            PgError::Connection(text)
        } else if text.contains("invalid connection string") || text.contains("configuration") {
            PgError::Config(text)
        } else {
            PgError::Connection(text)
        }
    }
}

/// Builds a [`DbErrorInfo`] from the raw fields of an `ErrorResponse`/`NoticeResponse` body
/// (pairs of a one-byte field type and a NUL-terminated string, ending with a 0 byte).
/// Used by the hand-written replication connection, which does not go through tokio-postgres.
pub(crate) fn parse_error_fields(body: &[u8]) -> DbErrorInfo {
    let mut info = DbErrorInfo {
        severity: "ERROR".into(),
        code: "XX000".into(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        rest = tail.get(end + 1..).unwrap_or(&[]);
        match kind {
            b'V' => info.severity = value,
            b'S' if info.severity == "ERROR" => info.severity = value,
            b'C' => info.code = value,
            b'M' => info.message = value,
            b'D' => info.detail = Some(value),
            b'H' => info.hint = Some(value),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_fields() {
        let body = b"SERROR\0VERROR\0C42704\0Mreplication slot \"x\" does not exist\0\0";
        let info = parse_error_fields(body);
        assert_eq!(info.code, "42704");
        assert_eq!(info.message, "replication slot \"x\" does not exist");
        assert_eq!(info.severity, "ERROR");
        let e = PgError::Db(info);
        assert_eq!(e.code(), Some("42704"));
        assert!(e.to_string().contains("SQLSTATE 42704"));
        // Truncated input does not panic.
        let info = parse_error_fields(b"C08006");
        assert_eq!(info.code, "08006");
    }
}

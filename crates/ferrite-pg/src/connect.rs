//! Ordinary (non-replication) connections with the session settings Ferrite's wire format needs.
//!
//! Every value Ferrite sends to clients is Postgres text output. Text output depends on session
//! settings (`DateStyle`, `TimeZone`, `IntervalStyle`, `bytea_output`, `extra_float_digits`), and
//! the snapshot path (ordinary connections) must produce exactly the same text as the replication
//! path (the walsender). Both therefore force the same settings that Electric forces
//! (reference §3.4). They are sent as startup `options`, so they hold for every statement of the
//! session, and `RESET ALL` returns to them rather than to the server's defaults.

use crate::error::PgError;
use std::str::FromStr;
use tokio_postgres::NoTls;

/// The session settings forced on every Ferrite connection, as `(name, value)` pairs.
///
/// Kept in one place so the snapshot connection and the replication connection cannot drift apart.
/// `DateStyle` is written `ISO,DMY` (no space) so it needs no escaping inside the `options`
/// startup parameter; Postgres reports it as `ISO, DMY` either way.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("bytea_output", "hex"),
    ("DateStyle", "ISO,DMY"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
    ("IntervalStyle", "iso_8601"),
];

/// The `options` startup parameter value that applies [`SESSION_SETTINGS`]:
/// `-c bytea_output=hex -c DateStyle=ISO,DMY …`.
pub fn session_options() -> String {
    SESSION_SETTINGS
        .iter()
        .map(|(k, v)| format!("-c {k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses a connection URL (or key=value string) and adds Ferrite's session settings to whatever
/// `options` it already carries (ours come last, so they win), plus an `application_name` when
/// none is given, so Ferrite's sessions are recognisable in `pg_stat_activity`.
pub fn config_for(url: &str) -> Result<tokio_postgres::Config, PgError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| PgError::Config(format!("cannot parse database URL: {e}")))?;
    let options = match config.get_options() {
        Some(existing) if !existing.trim().is_empty() => format!("{existing} {}", session_options()),
        _ => session_options(),
    };
    config.options(options);
    if config.get_application_name().is_none() {
        config.application_name("ferrite");
    }
    Ok(config)
}

/// Opens a connection (without TLS) and spawns its I/O task on the current Tokio runtime.
///
/// The session runs with [`SESSION_SETTINGS`], so `col::text` in any query yields the same text
/// that logical replication delivers for the same value (except `bool`, which pgoutput writes as
/// `t`/`f` while `::text` gives `true`/`false`). When the connection breaks, the spawned task ends
/// and logs the reason; the returned client then reports `is_closed()`.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, PgError> {
    let config = config_for(url)?;
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended with an error");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_appended() {
        let c = config_for("postgres://u@localhost:5432/db?options=-c%20work_mem%3D64MB").unwrap();
        let o = c.get_options().unwrap();
        assert!(o.starts_with("-c work_mem=64MB -c bytea_output=hex"));
        assert!(o.contains("-c DateStyle=ISO,DMY"));
        assert_eq!(c.get_application_name(), Some("ferrite"));
        assert!(config_for("postgres://u@host:notaport/db").is_err());
    }
}

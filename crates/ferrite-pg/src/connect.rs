//! Ordinary (non-replication) connections with the session settings Ferrite's wire format needs.
//!
//! Every value Ferrite sends to clients is Postgres text output. Text output depends on session
//! settings (`DateStyle`, `TimeZone`, `IntervalStyle`, `bytea_output`, `extra_float_digits`), and
//! the snapshot path (ordinary connections) must produce exactly the same text as the replication
//! path (the walsender). Both therefore force the same settings that Electric forces
//! (`docs/http-protocol.md#values`). They are sent as startup `options`, so they hold for every
//! statement of the session, and `RESET ALL` returns to them rather than to the server's defaults.
//!
//! TLS follows the URL's `sslmode` (libpq's default `prefer` when absent: TLS when the server
//! offers it, plain otherwise), with `sslrootcert`, `sslcert` and `sslkey`, as described in
//! [`crate::tls`]. Unix-socket hosts never use TLS. In a host list that mixes Unix sockets and TCP
//! hosts, a mode that requires TLS makes the Unix-socket hosts fail (the server refuses TLS there)
//! and the next host is tried.

use crate::error::PgError;
use crate::tls::TlsSettings;
use std::str::FromStr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{Host, SslMode};
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
    SESSION_SETTINGS.iter().map(|(k, v)| format!("-c {k}={v}")).collect::<Vec<_>>().join(" ")
}

/// Parses a connection URL (or key=value string) and adds Ferrite's session settings to whatever
/// `options` it already carries (ours come last, so they win), plus an `application_name` when
/// none is given, so Ferrite's sessions are recognisable in `pg_stat_activity`.
///
/// The TLS parameters are returned separately (tokio-postgres cannot hold them); the config's own
/// `ssl_mode` is set to the closest tokio-postgres mode. Both connection kinds parse URLs here.
pub fn config_for(url: &str) -> Result<(tokio_postgres::Config, TlsSettings), PgError> {
    let (tls, rest) = TlsSettings::split_url(url)?;
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
        // The reason is in the source ("invalid connection string" alone names no problem).
        let reason = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
        PgError::Config(format!("cannot parse database URL: {e}{reason}"))
    })?;
    config.ssl_mode(tls.mode.to_tokio_postgres());
    // With only `hostaddr`, the addresses serve as host names too: tokio-postgres will not start
    // TLS without a host name, and the replication connection connects by host.
    if config.get_hosts().is_empty() {
        for addr in config.get_hostaddrs().to_vec() {
            config.host(addr.to_string());
        }
    }
    let options = match config.get_options() {
        Some(existing) if !existing.trim().is_empty() => format!("{existing} {}", session_options()),
        _ => session_options(),
    };
    config.options(options);
    if config.get_application_name().is_none() {
        config.application_name("ferrite");
    }
    Ok((config, tls))
}

/// True when some host is reached over TCP (a host name or a `hostaddr`), i.e. TLS may be used:
/// Postgres never offers TLS on Unix sockets.
pub(crate) fn uses_tcp(config: &tokio_postgres::Config) -> bool {
    !config.get_hostaddrs().is_empty() || config.get_hosts().iter().any(|h| matches!(h, Host::Tcp(_)))
}

/// Opens a connection and spawns its I/O task on the current Tokio runtime. TLS is used as the
/// URL's `sslmode` says (see the module docs).
///
/// The session runs with [`SESSION_SETTINGS`], so `col::text` in any query yields the same text
/// that logical replication delivers for the same value (except `bool`, which pgoutput writes as
/// `t`/`f` while `::text` gives `true`/`false`). When the connection breaks, the spawned task ends
/// and logs the reason; the returned client then reports `is_closed()`.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, PgError> {
    let (mut config, tls) = config_for(url)?;
    // Unix sockets only: no TLS, whatever the mode (as libpq), and no certificate files read.
    let connector = if uses_tcp(&config) { tls.connector()? } else { None };
    match connector {
        Some(connector) => {
            let (client, connection) = config.connect(connector).await?;
            spawn_connection(connection);
            Ok(client)
        }
        None => {
            config.ssl_mode(SslMode::Disable);
            let (client, connection) = config.connect(NoTls).await?;
            spawn_connection(connection);
            Ok(client)
        }
    }
}

/// Drives a connection's I/O until it ends, logging why.
fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended with an error");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_appended() {
        let (c, tls) = config_for("postgres://u@localhost:5432/db?options=-c%20work_mem%3D64MB").unwrap();
        let o = c.get_options().unwrap();
        assert!(o.starts_with("-c work_mem=64MB -c bytea_output=hex"));
        assert!(o.contains("-c DateStyle=ISO,DMY"));
        assert_eq!(c.get_application_name(), Some("ferrite"));
        assert_eq!(tls.mode, crate::tls::SslMode::Prefer);
        assert_eq!(c.get_ssl_mode(), SslMode::Prefer);
        assert!(config_for("postgres://u@host:notaport/db").is_err());
    }

    #[test]
    fn tls_parameters_are_ours() {
        let (c, tls) =
            config_for("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=a").unwrap();
        assert_eq!(tls.mode, crate::tls::SslMode::VerifyFull);
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
        assert_eq!(c.get_application_name(), Some("a"));
        assert!(uses_tcp(&c));
        let (c, _) = config_for("host=/var/run/postgresql user=u sslmode=require").unwrap();
        assert!(!uses_tcp(&c));
        let (c, _) = config_for("hostaddr=127.0.0.1 user=u").unwrap();
        assert_eq!(c.get_hosts(), &[Host::Tcp("127.0.0.1".into())]);
        let err = config_for("postgres://u@h/db?sslmode=bogus").unwrap_err().to_string();
        assert!(err.contains("sslmode"), "{err}");
    }
}

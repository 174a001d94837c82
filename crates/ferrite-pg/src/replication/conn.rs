//! A minimal frontend/backend protocol client for walsender connections.
//!
//! tokio-postgres 0.7 cannot open `replication=database` connections nor handle `CopyBoth`, so
//! this module speaks the protocol itself, using `postgres-protocol` for message encoding and
//! authentication (md5, SCRAM-SHA-256[-PLUS]) and parsing the few backend messages a walsender
//! sends.
//!
//! The connection carries the same session settings as [`crate::connect`] (as startup `options`)
//! because pgoutput formats values with the walsender's settings: that is what makes replicated
//! text identical to `col::text` on an ordinary Ferrite connection.
//!
//! TLS follows the URL's `sslmode` exactly as for [`crate::connect`] (settings parsed in one place,
//! [`crate::tls`]): over TCP, unless the mode is `disable`, the client sends an SSLRequest and
//! wraps the socket in rustls when the server answers `S` (an `N` is fatal unless the mode is
//! `prefer`); with `sslnegotiation=direct` the handshake starts at once. Unix sockets never use
//! TLS. Over TLS, SCRAM uses channel binding (`SCRAM-SHA-256-PLUS`) when the server offers it;
//! `channel_binding=disable|prefer|require` is honoured as tokio-postgres does.

use super::error::ReplicationError;
use crate::connect::{config_for, uses_tcp};
use crate::error::parse_error_fields;
use crate::tls::{SslMode, TlsConnector};
use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use postgres_protocol::message::frontend;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::{ChannelBinding as ChannelBindingMode, Host, SslNegotiation};

/// How long connecting plus authenticating may take when the URL sets no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Unacknowledged data older than this makes the kernel drop the connection. The stream writes a
/// status update every second, so a vanished server is noticed within this time.
const TCP_USER_TIMEOUT_MS: libc::c_int = 30_000;

/// Byte stream of a connection: TCP (plain or TLS) or Unix socket.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One backend message: its type byte and body (without the length word).
#[derive(Debug, Clone)]
pub struct Frame {
    /// Message type, e.g. `b'd'` for CopyData.
    pub tag: u8,
    /// Message body.
    pub body: Bytes,
}

/// An authenticated `replication=database` connection.
///
/// Public so operator tooling can run replication commands (`IDENTIFY_SYSTEM`,
/// `READ_REPLICATION_SLOT`…) without a second implementation; the stream in
/// [`super::stream`] is built on it.
pub struct ReplicationConnection {
    io: Box<dyn Io>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    parameters: HashMap<String, String>,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection").field("parameters", &self.parameters).finish_non_exhaustive()
    }
}

impl ReplicationConnection {
    /// Connects to the server in `url` (same URL syntax as [`crate::connect::connect`]) as a
    /// logical-replication walsender for the URL's database, authenticating with trust,
    /// cleartext, md5, SCRAM-SHA-256 (with channel binding over TLS) or a client certificate.
    /// Hosts are tried in order; TLS as the URL's `sslmode` says (see the module docs).
    pub async fn connect(url: &str) -> Result<ReplicationConnection, ReplicationError> {
        let (config, tls) = config_for(url)?;
        // Certificate files are read only when some host is reached over TCP.
        let connector = if uses_tcp(&config) { tls.connector()? } else { None };
        let user = config
            .get_user()
            .ok_or_else(|| ReplicationError::Config("the database URL names no user".into()))?
            .to_string();
        let timeout = config.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let hosts = config.get_hosts();
        if hosts.is_empty() {
            return Err(ReplicationError::Config("the database URL names no host".into()));
        }
        let ports = config.get_ports();
        let mut last_error = None;
        for (i, host) in hosts.iter().enumerate() {
            let port = match ports.len() {
                0 => 5432,
                1 => ports[0],
                _ => ports.get(i).copied().unwrap_or(5432),
            };
            let one = Self::connect_one(host, port, &config, &user, tls.mode, connector.as_ref());
            let attempt = tokio::time::timeout(timeout, one).await;
            match attempt {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e @ (ReplicationError::Io(_) | ReplicationError::Closed(_)))) => last_error = Some(e),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    last_error = Some(ReplicationError::Timeout(format!(
                        "connecting to {host:?} port {port} took longer than {timeout:?}"
                    )))
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ReplicationError::Config("no host to connect to".into())))
    }

    async fn connect_one(
        host: &Host,
        port: u16,
        config: &tokio_postgres::Config,
        user: &str,
        mode: SslMode,
        connector: Option<&TlsConnector>,
    ) -> Result<ReplicationConnection, ReplicationError> {
        // `binding` is Some over TLS: the channel binding data, if the certificate allows it.
        let (io, binding): (Box<dyn Io>, Option<Option<Vec<u8>>>) = match host {
            Host::Tcp(name) => {
                let mut stream = tokio::net::TcpStream::connect((name.as_str(), port)).await?;
                stream.set_nodelay(true)?;
                configure_keepalive(&stream);
                match connector {
                    Some(connector) if negotiate_tls(&mut stream, mode, config.get_ssl_negotiation()).await? => {
                        let tls = connector
                            .handshake(name, stream)
                            .await
                            .map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
                        let binding = tls.tls_server_end_point();
                        (Box::new(tls), Some(binding))
                    }
                    _ => (Box::new(stream), None),
                }
            }
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                (Box::new(tokio::net::UnixStream::connect(path).await?), None)
            }
        };
        let mut conn = ReplicationConnection {
            io,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::with_capacity(1024),
            parameters: HashMap::new(),
        };
        let dbname = config.get_dbname().unwrap_or(user).to_string();
        let options = config.get_options().unwrap_or_default().to_string();
        let app = config.get_application_name().unwrap_or("ferrite").to_string();
        let params: [(&str, &str); 6] = [
            ("user", user),
            ("database", &dbname),
            ("replication", "database"),
            ("options", &options),
            ("application_name", &app),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut conn.write_buf)?;
        conn.flush().await?;
        conn.authenticate(user, config.get_password(), binding, config.get_channel_binding()).await?;
        Ok(conn)
    }

    /// Answers the server's authentication requests until `ReadyForQuery`. `tls_binding` is
    /// `Some` over TLS (holding the `tls-server-end-point` data when there is any); the SCRAM
    /// mechanism and channel-binding flag are chosen as tokio-postgres chooses them.
    async fn authenticate(
        &mut self,
        user: &str,
        password: Option<&[u8]>,
        tls_binding: Option<Option<Vec<u8>>>,
        binding_mode: ChannelBindingMode,
    ) -> Result<(), ReplicationError> {
        let need_password = || ReplicationError::Auth("the server asks for a password and the URL has none".into());
        let mut scram: Option<ScramSha256> = None;
        let mut bound = false;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'R' => {
                    let mut body = frame.body.clone();
                    if body.len() < 4 {
                        return Err(ReplicationError::Protocol("short authentication message".into()));
                    }
                    let code = body.get_i32();
                    match code {
                        0 => {
                            if binding_mode == ChannelBindingMode::Require && !bound {
                                return Err(ReplicationError::Auth(
                                    "channel_binding=require, but the server authenticated without SCRAM channel binding (is TLS in use?)"
                                        .into(),
                                ));
                            }
                        }
                        3 => {
                            let pw = password.ok_or_else(need_password)?;
                            frontend::password_message(pw, &mut self.write_buf)?;
                            self.flush().await?;
                        }
                        5 => {
                            let pw = password.ok_or_else(need_password)?;
                            if body.len() < 4 {
                                return Err(ReplicationError::Protocol("md5 request without salt".into()));
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = postgres_protocol::authentication::md5_hash(user.as_bytes(), pw, salt);
                            frontend::password_message(hash.as_bytes(), &mut self.write_buf)?;
                            self.flush().await?;
                        }
                        10 => {
                            let offered: Vec<String> = body
                                .split(|b| *b == 0)
                                .filter(|m| !m.is_empty())
                                .map(|m| String::from_utf8_lossy(m).into_owned())
                                .collect();
                            let offers = |m: &str| offered.iter().any(|o| o == m);
                            let binding_data = match (&tls_binding, binding_mode) {
                                (_, ChannelBindingMode::Disable) => None,
                                (Some(data), _) => data.clone(),
                                (None, _) => None,
                            };
                            // Over TLS without PLUS on offer, "y" (we could bind, the server did not
                            // offer it) lets the server detect a downgrade; without TLS, "n".
                            let (binding, mechanism) = match binding_data {
                                Some(data) if offers(SCRAM_SHA_256_PLUS) => {
                                    (ChannelBinding::tls_server_end_point(data), SCRAM_SHA_256_PLUS)
                                }
                                Some(_) => (ChannelBinding::unrequested(), SCRAM_SHA_256),
                                None => (ChannelBinding::unsupported(), SCRAM_SHA_256),
                            };
                            if !offers(mechanism) {
                                return Err(ReplicationError::Auth(format!(
                                    "no supported SASL mechanism offered (server offers {offered:?})"
                                )));
                            }
                            if mechanism != SCRAM_SHA_256_PLUS && binding_mode == ChannelBindingMode::Require {
                                return Err(ReplicationError::Auth(
                                    "channel_binding=require, but SCRAM-SHA-256-PLUS cannot be used (it needs TLS and a server certificate signed with RSA or ECDSA)".into(),
                                ));
                            }
                            bound = mechanism == SCRAM_SHA_256_PLUS;
                            let pw = password.ok_or_else(need_password)?;
                            let s = ScramSha256::new(pw, binding);
                            frontend::sasl_initial_response(mechanism, s.message(), &mut self.write_buf)?;
                            self.flush().await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| ReplicationError::Protocol("SASL continue before SASL start".into()))?;
                            s.update(&body).map_err(|e| ReplicationError::Auth(format!("SCRAM: {e}")))?;
                            frontend::sasl_response(s.message(), &mut self.write_buf)?;
                            self.flush().await?;
                        }
                        12 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| ReplicationError::Protocol("SASL final before SASL start".into()))?;
                            s.finish(&body).map_err(|e| ReplicationError::Auth(format!("SCRAM: {e}")))?;
                        }
                        other => {
                            return Err(ReplicationError::Auth(format!(
                                "unsupported authentication method (code {other}); use trust, password, md5 or scram-sha-256"
                            )))
                        }
                    }
                }
                b'S' => {
                    let mut parts = frame.body.split(|b| *b == 0);
                    if let (Some(k), Some(v)) = (parts.next(), parts.next()) {
                        self.parameters
                            .insert(String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned());
                    }
                }
                b'K' => {}
                b'Z' => return Ok(()),
                b'E' => return Err(ReplicationError::Server(parse_error_fields(&frame.body))),
                b'N' => log_notice(&frame.body),
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {:?} during startup",
                        other as char
                    )))
                }
            }
        }
    }

    /// A run-time parameter the server reported at startup (`server_version`, `DateStyle`,
    /// `TimeZone`, `IntervalStyle`, …), for checking that the session settings took effect.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// Runs a simple-protocol command and returns its rows as text (for replication commands such
    /// as `IDENTIFY_SYSTEM`, or plain SQL, which walsenders in database mode accept).
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        frontend::query(sql, &mut self.write_buf)?;
        self.flush().await?;
        let mut rows = vec![];
        let mut error = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'T' | b'C' | b'I' => {}
                b'D' => rows.push(parse_data_row(&frame.body)?),
                b'E' => error = Some(ReplicationError::Server(parse_error_fields(&frame.body))),
                b'N' => log_notice(&frame.body),
                b'S' => {}
                b'Z' => return error.map_or(Ok(rows), Err),
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {:?} in a simple query",
                        other as char
                    )))
                }
            }
        }
    }

    /// Sends a command that enters COPY BOTH mode (`START_REPLICATION`) and waits for the
    /// server's `CopyBothResponse`.
    pub async fn start_copy_both(&mut self, sql: &str) -> Result<(), ReplicationError> {
        frontend::query(sql, &mut self.write_buf)?;
        self.flush().await?;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'W' => return Ok(()),
                b'E' => return Err(ReplicationError::Server(parse_error_fields(&frame.body))),
                b'N' => log_notice(&frame.body),
                b'S' => {}
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "expected CopyBothResponse, got message {:?}",
                        other as char
                    )))
                }
            }
        }
    }

    /// Reads the next backend message.
    ///
    /// Cancel-safe: bytes already read stay in the connection's buffer, so this can be used in
    /// `tokio::select!` next to a timer. End of stream is [`ReplicationError::Closed`].
    pub async fn read_frame(&mut self) -> Result<Frame, ReplicationError> {
        loop {
            if self.read_buf.len() >= 5 {
                let len = u32::from_be_bytes([self.read_buf[1], self.read_buf[2], self.read_buf[3], self.read_buf[4]]);
                if len < 4 || len > i32::MAX as u32 {
                    return Err(ReplicationError::Protocol(format!("invalid message length {len}")));
                }
                let total = len as usize + 1;
                if self.read_buf.len() >= total {
                    let mut frame = self.read_buf.split_to(total).freeze();
                    let tag = frame[0];
                    frame.advance(5);
                    return Ok(Frame { tag, body: frame });
                }
                self.read_buf.reserve(total - self.read_buf.len());
            }
            let n = self.io.read_buf(&mut self.read_buf).await?;
            if n == 0 {
                return Err(ReplicationError::Closed("the server closed the connection".into()));
            }
        }
    }

    /// Sends one CopyData message (e.g. a standby status update) and flushes it.
    pub async fn send_copy_data(&mut self, payload: &[u8]) -> Result<(), ReplicationError> {
        let len = u32::try_from(payload.len() + 4)
            .map_err(|_| ReplicationError::Protocol("CopyData payload too large".into()))?;
        self.write_buf.extend_from_slice(b"d");
        self.write_buf.extend_from_slice(&len.to_be_bytes());
        self.write_buf.extend_from_slice(payload);
        self.flush().await
    }

    /// Politely ends the session (`Terminate`); errors are irrelevant at that point.
    pub async fn terminate(mut self) {
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
    }

    async fn flush(&mut self) -> Result<(), ReplicationError> {
        let buf = self.write_buf.split();
        self.io.write_all(&buf).await?;
        self.io.flush().await?;
        Ok(())
    }
}

/// Asks the server for TLS on a fresh TCP connection, per libpq's `sslmode`/`sslnegotiation`
/// rules; true when the TLS handshake should follow. `N` means plain for `prefer` and an error
/// otherwise. Reads exactly one byte, so nothing the server sends before the handshake can end up
/// in the (later encrypted) stream's buffer.
async fn negotiate_tls(
    stream: &mut tokio::net::TcpStream,
    mode: SslMode,
    negotiation: SslNegotiation,
) -> Result<bool, ReplicationError> {
    if negotiation == SslNegotiation::Direct {
        if !mode.requires_tls() {
            return Err(ReplicationError::Config(format!(
                "sslmode={mode} may not be used with sslnegotiation=direct (use sslmode=require or stronger)"
            )));
        }
        return Ok(true);
    }
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    stream.write_all(&request).await?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => Ok(true),
        b'N' if mode.requires_tls() => Err(ReplicationError::Io(std::io::Error::other(format!(
            "the server does not support TLS, and sslmode={mode} requires it"
        )))),
        b'N' => Ok(false),
        other => Err(ReplicationError::Protocol(format!("unexpected answer {other:#04x} to SSLRequest"))),
    }
}

/// Parses a DataRow body into text values.
fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, ReplicationError> {
    let bad = || ReplicationError::Protocol("malformed DataRow".into());
    let mut b = body;
    if b.len() < 2 {
        return Err(bad());
    }
    let n = b.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if b.len() < 4 {
            return Err(bad());
        }
        let len = b.get_i32();
        if len < 0 {
            row.push(None);
        } else {
            let len = len as usize;
            if b.len() < len {
                return Err(bad());
            }
            row.push(Some(String::from_utf8_lossy(&b[..len]).into_owned()));
            b.advance(len);
        }
    }
    Ok(row)
}

fn log_notice(body: &[u8]) {
    let info = parse_error_fields(body);
    tracing::debug!(severity = %info.severity, code = %info.code, "replication connection notice: {}", info.message);
}

/// TCP keepalive plus `TCP_USER_TIMEOUT`, so a server that vanishes without closing the
/// connection (network partition, VM gone) is detected instead of hanging the stream forever.
fn configure_keepalive(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: fd is a valid socket owned by `stream`; value is a c_int as the options expect.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(option = name, error = %std::io::Error::last_os_error(), "setsockopt failed");
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    #[cfg(target_os = "linux")]
    {
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 30);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
        set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_data_rows() {
        let mut body = vec![0u8, 2];
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"abc");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(parse_data_row(&body).unwrap(), vec![Some("abc".to_string()), None]);
        assert!(parse_data_row(&body[..6]).is_err());
    }
}

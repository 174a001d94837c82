//! TLS for both kinds of Postgres connection (ordinary and replication), with rustls, chosen the
//! way libpq chooses it: by the `sslmode`, `sslrootcert`, `sslcert` and `sslkey` parameters of the
//! database URL.
//!
//! tokio-postgres only understands `sslmode=disable|prefer|require` and rejects the other
//! parameters, and the replication connection does not go through tokio-postgres at all. So this
//! module is the one place that reads them: [`TlsSettings::split_url`] takes them out of the URL
//! (the rest goes to `tokio_postgres::Config`), and [`TlsSettings::connector`] builds the
//! [`TlsConnector`] that both [`crate::connect`] and [`crate::replication::conn`] use.
//!
//! | `sslmode` | TLS | server certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | only with `sslrootcert` (then as `verify-ca`) |
//! | `require` | always | only with `sslrootcert` (then as `verify-ca`) |
//! | `verify-ca` | always | chain, against `sslrootcert` or the system roots; not the host name |
//! | `verify-full` | always | chain and host name |
//!
//! Differences from libpq: `sslmode=allow` is refused; without `sslrootcert`, `verify-ca` and
//! `verify-full` use the system's root certificates (libpq would look for
//! `~/.postgresql/root.crt`); a `sslrootcert` that cannot be read is an error in every mode; and
//! `sslcert`/`sslkey` have no default files. `sslrootcert=system` means the system roots and, as
//! in libpq 16, implies (and only allows) `verify-full`. With `prefer`, only a server that
//! declines TLS gets a plain connection; a failed handshake is an error, as with tokio-postgres.
//! Unix-socket connections never use TLS (Postgres does not offer it there).
//!
//! Sessions offer ALPN `postgresql` (as libpq 17 does, so `sslnegotiation=direct` works) and
//! provide `tls-server-end-point` channel binding data, so SCRAM authentication uses
//! `SCRAM-SHA-256-PLUS` over TLS, and `channel_binding=require` can be honoured.

use crate::error::PgError;
use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The URL parameters this module owns (tokio-postgres would reject all but `sslmode`, and
/// misread `sslmode=verify-*`).
const TLS_PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// How much TLS a connection insists on: libpq's `sslmode` (see the module docs for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server supports it, plain otherwise (libpq's and Ferrite's default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked unless `sslrootcert` is given.
    Require,
    /// TLS with the certificate chain checked, but not the host name.
    VerifyCa,
    /// TLS with the certificate chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    /// The URL spelling, e.g. `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// True when a connection without TLS is not acceptable.
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }

    /// The closest tokio-postgres mode: it decides whether to send an SSLRequest and whether an
    /// 'N' answer is fatal; the certificate checks are done by our [`TlsConnector`].
    pub fn to_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SslMode {
    type Err = PgError;

    fn from_str(s: &str) -> Result<SslMode, PgError> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(PgError::Config("sslmode=allow is not supported: use sslmode=prefer (or disable)".into())),
            other => Err(PgError::Config(format!(
                "invalid sslmode {other:?}: expected disable, prefer, require, verify-ca or verify-full"
            ))),
        }
    }
}

/// Where the certificates that a server's certificate must chain to come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file of one or more CA certificates (`sslrootcert=<path>`).
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

/// The TLS part of a database URL, parsed by libpq's rules.
///
/// Kept apart from `tokio_postgres::Config` because tokio-postgres cannot express it, and shared
/// by the ordinary and the replication connection so they cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// `sslmode`, [`SslMode::Prefer`] when absent.
    pub mode: SslMode,
    /// `sslrootcert`: what the server certificate is checked against.
    pub root_cert: Option<RootCerts>,
    /// `sslcert` and `sslkey`: a client certificate (PEM, may include intermediates) and its
    /// private key (PEM: PKCS#8, PKCS#1 or SEC1), for servers that authenticate clients by
    /// certificate.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl TlsSettings {
    /// Takes the TLS parameters out of a connection URL (`postgres://…?sslmode=…`) or key=value
    /// string (`host=… sslmode=…`) and returns them with the rest of the string, ready for
    /// `tokio_postgres::Config::from_str`. Other parameters are left exactly as written.
    ///
    /// Errors name the parameter: an unknown `sslmode`, `sslcert` without `sslkey`, a weak mode
    /// with `sslrootcert=system`.
    pub fn split_url(url: &str) -> Result<(TlsSettings, String), PgError> {
        let (found, rest) = match url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")) {
            Some(body) => split_url_params(url, url.len() - body.len())?,
            None => split_key_value_params(url),
        };
        let mut mode = None;
        let mut root_cert = None;
        let mut cert = None;
        let mut key = None;
        // As in libpq, a parameter given twice takes its last value; an empty value means unset.
        for (name, value) in found {
            let value = (!value.is_empty()).then_some(value);
            match name.as_str() {
                "sslmode" => mode = value,
                "sslrootcert" => root_cert = value,
                "sslcert" => cert = value,
                "sslkey" => key = value,
                _ => unreachable!("only TLS_PARAMS are collected"),
            }
        }
        let root_cert = root_cert.map(|v| if v == "system" { RootCerts::System } else { RootCerts::File(v.into()) });
        let mode = match mode {
            Some(m) => m.parse()?,
            None if root_cert == Some(RootCerts::System) => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if root_cert == Some(RootCerts::System) && mode != SslMode::VerifyFull {
            return Err(PgError::Config(format!(
                "sslmode={mode} may not be used with sslrootcert=system: use sslmode=verify-full"
            )));
        }
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            (Some(_), None) => return Err(PgError::Config("sslcert is set but sslkey is not: give both".into())),
            (None, Some(_)) => return Err(PgError::Config("sslkey is set but sslcert is not: give both".into())),
        };
        Ok((TlsSettings { mode, root_cert, client_cert }, rest))
    }

    /// Builds the connector for these settings, reading the certificate files now (so a rotated
    /// file takes effect on the next connection); `None` for `sslmode=disable`.
    ///
    /// Errors name the parameter whose file cannot be read or holds nothing usable.
    pub fn connector(&self) -> Result<Option<TlsConnector>, PgError> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match (&self.root_cert, self.mode) {
            (Some(RootCerts::File(path)), _) => Some(Arc::new(load_roots(path)?)),
            (Some(RootCerts::System), _) | (None, SslMode::VerifyCa | SslMode::VerifyFull) => Some(system_roots()?),
            (None, _) => None,
        };
        let verifier = Verifier { roots, check_name: self.mode == SslMode::VerifyFull, provider: provider.clone() };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Config(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = load_certs(cert, "sslcert")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| param_error("sslkey", key, e))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| PgError::Config(format!("sslcert/sslkey cannot be used: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Some(TlsConnector { config: Arc::new(config), settings: Arc::new(self.clone()) }))
    }

    /// A short description for error messages, e.g. `sslmode=verify-full, sslrootcert=/etc/ca.pem`.
    fn describe(&self) -> String {
        match &self.root_cert {
            Some(RootCerts::File(p)) => format!("sslmode={}, sslrootcert={}", self.mode, p.display()),
            Some(RootCerts::System) => format!("sslmode={}, sslrootcert=system", self.mode),
            None => format!("sslmode={}", self.mode),
        }
    }
}

/// Splits the query string of a `postgres://` URL; `prefix_len` is the length of the scheme.
///
/// The query starts at the first `?` after the credentials: tokio-postgres ends the credentials at
/// the first `@`, so a password may contain a raw `?`.
fn split_url_params(url: &str, prefix_len: usize) -> Result<(Vec<(String, String)>, String), PgError> {
    let body = &url[prefix_len..];
    let after_credentials = body.find('@').map_or(0, |i| i + 1);
    let Some(q) = body[after_credentials..].find('?') else {
        return Ok((vec![], url.to_string()));
    };
    let query_start = prefix_len + after_credentials + q;
    let decode = |s: &str, what: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|v| v.into_owned())
            .map_err(|_| PgError::Config(format!("the {what} of URL parameter {s:?} is not UTF-8")))
    };
    let mut found = vec![];
    let mut kept = vec![];
    for pair in url[query_start + 1..].split('&') {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(raw_key, "name")?;
        if TLS_PARAMS.contains(&key.as_str()) {
            found.push((key, decode(raw_value, "value")?));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        url[..query_start].to_string()
    } else {
        format!("{}?{}", &url[..query_start], kept.join("&"))
    };
    Ok((found, rest))
}

/// Splits a libpq key=value string (`host=h sslmode='verify-full'`), following tokio-postgres's
/// grammar: values are bare words or single-quoted, with backslash escapes. Whatever does not
/// parse is left in place for tokio-postgres to report.
fn split_key_value_params(s: &str) -> (Vec<(String, String)>, String) {
    let mut found = vec![];
    let mut kept: Vec<&str> = vec![];
    let mut chars = s.char_indices().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut chars);
        let Some(&(start, _)) = chars.peek() else { break };
        let mut end_of_key = start;
        while let Some((i, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            end_of_key = i + c.len_utf8();
        }
        let key = &s[start..end_of_key];
        skip_ws(&mut chars);
        let parsed = if chars.next_if(|(_, c)| *c == '=').is_some() {
            skip_ws(&mut chars);
            let mut value = String::new();
            let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
            let mut closed = !quoted;
            while let Some(&(_, c)) = chars.peek() {
                if (quoted && c == '\'') || (!quoted && c.is_whitespace()) {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
            if quoted && chars.next_if(|(_, c)| *c == '\'').is_some() {
                closed = true;
            }
            closed.then_some(value)
        } else {
            None
        };
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        match parsed {
            Some(value) if TLS_PARAMS.contains(&key) => found.push((key.to_string(), value)),
            Some(_) => kept.push(&s[start..end]),
            None => {
                kept.push(&s[start..]);
                break;
            }
        }
    }
    (found, kept.join(" "))
}

fn param_error(param: &str, path: &Path, e: impl std::fmt::Display) -> PgError {
    PgError::Config(format!("{param}={}: {e}", path.display()))
}

/// Every certificate in a PEM file; an empty file is an error.
fn load_certs(path: &Path, param: &str) -> Result<Vec<CertificateDer<'static>>, PgError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| param_error(param, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| param_error(param, path, e))?;
    if certs.is_empty() {
        return Err(param_error(param, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, PgError> {
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(load_certs(path, "sslrootcert")?);
    if added == 0 {
        return Err(param_error("sslrootcert", path, "none of its certificates can be used as a trust anchor"));
    }
    Ok(store)
}

/// The operating system's root certificates, loaded once per process.
fn system_roots() -> Result<Arc<RootCertStore>, PgError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added > 0 {
                return Ok(Arc::new(store));
            }
            let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
            Err(format!(
                "no system root certificates found{}: install the CA certificates (e.g. the ca-certificates package) \
                 or name a CA file with sslrootcert=<path>",
                if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
            ))
        })
        .clone()
        .map_err(PgError::Config)
}

/// Checks the server certificate as the `sslmode` asks: nothing (`prefer`/`require` without
/// roots), the chain (`verify-ca`, or any mode with `sslrootcert`), or chain and name
/// (`verify-full`). Handshake signatures are always verified.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            // (rustls exports ParsedCertificate from `server`; it parses any end-entity certificate.)
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
            if self.check_name {
                rustls::client::verify_server_name(&cert, server_name)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Wraps a connected socket in TLS according to a URL's [`TlsSettings`]; cheap to clone.
///
/// Used directly by the replication connection (after its own SSLRequest exchange) and, through
/// its `MakeTlsConnect` implementation, by tokio-postgres for ordinary connections.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    settings: Arc<TlsSettings>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Runs the TLS handshake over `stream` (whose server has already agreed to TLS) for server
    /// `host`, the name or IP address from the URL (what `verify-full` checks, and the SNI).
    ///
    /// Errors say what failed and under which settings, e.g. `invalid peer certificate:
    /// UnknownIssuer (host db.example.com, sslmode=verify-full, sslrootcert=/etc/ca.pem)`.
    pub async fn handshake<S>(&self, host: &str, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?} is not a host name usable for TLS"))
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        match connector.connect(name, stream).await {
            Ok(inner) => Ok(TlsStream { inner }),
            Err(e) => Err(io::Error::new(e.kind(), format!("{e} (host {host}, {})", self.settings.describe()))),
        }
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for TlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = HostTlsConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<HostTlsConnector> {
        // Also called for Unix sockets (with an empty host); the handshake is never run there.
        Ok(HostTlsConnector { connector: self.clone(), host: host.to_string() })
    }
}

/// A [`TlsConnector`] bound to one server name: what tokio-postgres asks for per host.
pub struct HostTlsConnector {
    connector: TlsConnector,
    host: String,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for HostTlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move { self.connector.handshake(&self.host, stream).await })
    }
}

/// An established TLS session over `S`.
pub struct TlsStream<S> {
    inner: tokio_rustls::client::TlsStream<S>,
}

impl<S> TlsStream<S> {
    /// The `tls-server-end-point` channel binding data (RFC 5929): a hash of the server's
    /// certificate, with the hash function of the certificate's signature (SHA-256 for MD5 and
    /// SHA-1), as Postgres computes it for `SCRAM-SHA-256-PLUS`. `None` when the signature
    /// algorithm is not one Postgres supports for channel binding (e.g. Ed25519 or RSA-PSS).
    pub fn tls_server_end_point(&self) -> Option<Vec<u8>> {
        let cert = self.inner.get_ref().1.peer_certificates()?.first()?;
        tls_server_end_point(cert)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        match self.tls_server_end_point() {
            Some(data) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(data),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

/// `tls-server-end-point` data for a DER certificate (see [`TlsStream::tls_server_end_point`]).
fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    // Signature algorithm OIDs (DER contents) and the hash Postgres uses for each.
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    use ring::digest::{SHA256, SHA384, SHA512};
    let oid = signature_algorithm_oid(cert)?;
    let algorithm = match oid {
        o if o == ECDSA_SHA1 => &SHA256,
        [prefix @ .., last] if prefix == RSA => match last {
            4 | 5 | 11 => &SHA256, // md5, sha1, sha256 WithRSAEncryption
            12 => &SHA384,
            13 => &SHA512,
            _ => return None,
        },
        [prefix @ .., last] if prefix == ECDSA_SHA2 => match last {
            2 => &SHA256,
            3 => &SHA384,
            4 => &SHA512,
            _ => return None,
        },
        _ => return None,
    };
    Some(ring::digest::digest(algorithm, cert).as_ref().to_vec())
}

/// The OID of `Certificate.signatureAlgorithm` (the element after `tbsCertificate`).
fn signature_algorithm_oid(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, certificate, _) = der_element(cert)? else { return None };
    let (_, _tbs, rest) = der_element(certificate)?;
    let (0x30, algorithm, _) = der_element(rest)? else { return None };
    let (0x06, oid, _) = der_element(algorithm)? else { return None };
    Some(oid)
}

/// One DER element: its tag, contents and the bytes after it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (TlsSettings, String) {
        TlsSettings::split_url(url).unwrap()
    }

    #[test]
    fn url_parameters_are_taken_out_and_the_rest_kept_verbatim() {
        let (tls, rest) = split("postgres://u:p%3Fw@h:5432/db?options=-c%20a%3Db&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(RootCerts::File("/etc/ca.pem".into())));
        assert_eq!(rest, "postgres://u:p%3Fw@h:5432/db?options=-c%20a%3Db&application_name=x");

        let (tls, rest) = split("postgresql://u@h/db?sslmode=require");
        assert_eq!(tls, TlsSettings { mode: SslMode::Require, ..Default::default() });
        assert_eq!(rest, "postgresql://u@h/db");

        // A raw '?' in the password is part of the credentials, as tokio-postgres reads it.
        let (tls, rest) = split("postgres://u:a?b@h/db?sslmode=disable&sslcert=/c.pem&sslkey=/k.pem");
        assert_eq!(tls.mode, SslMode::Disable);
        assert_eq!(tls.client_cert, Some(("/c.pem".into(), "/k.pem".into())));
        assert_eq!(rest, "postgres://u:a?b@h/db");

        let (tls, rest) = split("postgres://u@h/db");
        assert_eq!(tls, TlsSettings::default());
        assert_eq!(tls.mode, SslMode::Prefer);
        assert_eq!(rest, "postgres://u@h/db");

        // Last one wins; an empty value means unset.
        let (tls, _) = split("postgres://u@h/db?sslmode=require&sslmode=verify-ca&sslrootcert=");
        assert_eq!(tls, TlsSettings { mode: SslMode::VerifyCa, ..Default::default() });
    }

    #[test]
    fn key_value_parameters_are_taken_out() {
        let (tls, rest) =
            split("host=h  user=u sslmode = 'verify-ca' sslrootcert='/a b/c\\'s.pem' options='-c x=y' dbname=d");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert, Some(RootCerts::File("/a b/c's.pem".into())));
        assert_eq!(rest, "host=h user=u options='-c x=y' dbname=d");
        // Unparseable input is left for tokio-postgres to report.
        let (_, rest) = split("host=h sslmode=require broken");
        assert_eq!(rest, "host=h broken");
        let (_, rest) = split("host='unterminated");
        assert_eq!(rest, "host='unterminated");
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let err = TlsSettings::split_url("postgres://u@h/db?sslmode=verify_full").unwrap_err().to_string();
        assert!(err.contains("sslmode") && err.contains("verify_full"), "{err}");
        let err = TlsSettings::split_url("postgres://u@h/db?sslmode=allow").unwrap_err().to_string();
        assert!(err.contains("sslmode=allow"), "{err}");
        let err = TlsSettings::split_url("postgres://u@h/db?sslcert=/c.pem").unwrap_err().to_string();
        assert!(err.contains("sslkey"), "{err}");
        let err =
            TlsSettings::split_url("postgres://u@h/db?sslrootcert=system&sslmode=require").unwrap_err().to_string();
        assert!(err.contains("sslrootcert=system"), "{err}");
        let (tls, _) = split("postgres://u@h/db?sslrootcert=system");
        assert_eq!((tls.mode, tls.root_cert), (SslMode::VerifyFull, Some(RootCerts::System)));

        let missing = TlsSettings {
            mode: SslMode::VerifyCa,
            root_cert: Some(RootCerts::File("/nonexistent/ca.pem".into())),
            client_cert: None,
        };
        let err = missing.connector().unwrap_err().to_string();
        assert!(err.contains("sslrootcert=/nonexistent/ca.pem"), "{err}");
        // Disable never reads any file.
        assert!(TlsSettings { mode: SslMode::Disable, ..missing }.connector().unwrap().is_none());
    }

    #[test]
    fn der_walk_finds_the_signature_algorithm() {
        // SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID 1.2.840.10045.4.3.3 }, BIT STRING }
        let cert = [
            0x30, 0x11, 0x30, 0x00, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03, 0x03, 0x01,
            0x00,
        ];
        assert_eq!(signature_algorithm_oid(&cert), Some(&cert[8..16]));
        assert_eq!(tls_server_end_point(&cert).map(|h| h.len()), Some(48));
        assert_eq!(signature_algorithm_oid(&cert[..10]), None);
        assert_eq!(der_element(&[0x30, 0x82, 0x01]), None);
    }
}

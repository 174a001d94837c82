//! TLS against a real server, for both connection kinds (tokio-postgres and the hand-written
//! walsender client): `sslmode` semantics, certificate and host name checks, SCRAM with channel
//! binding and client certificates over TLS, and the plain fallback of `prefer`.
//!
//! The TLS cluster only accepts `hostssl` TCP connections (plus Unix-socket ones), so a client
//! that silently skipped TLS would be refused and these tests would fail.

mod common;

use common::next_txn;
use ferrite_pg::cluster::{ClusterSetup, LocalCluster};
use ferrite_pg::connect::connect;
use ferrite_pg::replication::conn::ReplicationConnection;
use ferrite_pg::replication::{
    add_table_to_publication, ensure_slot_and_publication, start_replication, Change, ReplicationConfig,
};
use ferrite_protocol::relation::QualifiedName;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate and its key (both PEM) for `common_name`, valid for the `names` (DNS names
    /// or IP addresses) and `usage`.
    fn issue(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A cluster that requires TLS on TCP, with the client-side files the tests need.
struct TlsServer {
    cluster: LocalCluster,
    /// Holds the client-side files below.
    _dir: tempfile::TempDir,
    /// The CA that signed the server's (and the client's) certificate.
    ca: PathBuf,
    /// A CA that signed nothing of this server's.
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TlsServer {
    /// The server certificate names only `localhost`, so `127.0.0.1` is a host name mismatch.
    fn start() -> TlsServer {
        let ca = Ca::new("Ferrite test CA");
        let (server_cert, server_key) = ca.issue("localhost", &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = ca.issue("cert_user", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let other_ca = Ca::new("Some other CA");
        let setting = |k: &str, v: &str| (k.to_string(), v.to_string());
        let setup = ClusterSetup {
            settings: vec![
                setting("ssl", "on"),
                setting("ssl_cert_file", "server.crt"),
                setting("ssl_key_file", "server.key"),
                setting("ssl_ca_file", "client_ca.crt"),
            ],
            files: vec![
                ("server.crt".into(), server_cert.into_bytes()),
                ("server.key".into(), server_key.into_bytes()),
                ("client_ca.crt".into(), ca.cert.pem().into_bytes()),
            ],
            hba: Some(
                "local all all trust\n\
                 hostssl all cert_user 127.0.0.1/32 cert\n\
                 hostssl all scram_user 127.0.0.1/32 scram-sha-256\n\
                 hostssl all all 127.0.0.1/32 trust\n"
                    .into(),
            ),
        };
        let cluster = LocalCluster::temporary_with(setup).expect("start a PostgreSQL cluster with TLS");
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        TlsServer {
            ca: write("ca.pem", &ca.cert.pem()),
            other_ca: write("other_ca.pem", &other_ca.cert.pem()),
            client_cert: write("client.crt", &client_cert),
            client_key: write("client.key", &client_key),
            cluster,
            _dir: dir,
        }
    }

    /// A URL for database `db` as `user` on `host`, with extra query parameters.
    fn url(&self, user: &str, host: &str, db: &str, params: &str) -> String {
        format!("postgres://{user}@{host}:{}/{db}?{params}", self.cluster.port())
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Whether the session of an ordinary connection is encrypted, per the server.
async fn ssl_in_use(url: &str) -> bool {
    let client = connect(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
    client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

/// Whether the session of a replication connection is encrypted, per the server; also runs
/// `IDENTIFY_SYSTEM`, the walsender's own command.
async fn replication_ssl_in_use(url: &str) -> bool {
    let mut conn =
        ReplicationConnection::connect(url).await.unwrap_or_else(|e| panic!("replication connect {url}: {e}"));
    let system = conn.simple_query("IDENTIFY_SYSTEM").await.unwrap();
    assert_eq!(system.len(), 1, "IDENTIFY_SYSTEM returns one row");
    let rows = conn.simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").await.unwrap();
    conn.terminate().await;
    match rows[0][0].as_deref() {
        Some("t") => true,
        Some("f") => false,
        other => panic!("pg_stat_ssl.ssl = {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_queries_and_the_replication_stream() {
    let s = TlsServer::start();
    s.cluster.create_database("tls_db").unwrap();
    let url = s.url("postgres", "127.0.0.1", "tls_db", "sslmode=require");
    assert!(ssl_in_use(&url).await);
    assert!(replication_ssl_in_use(&url).await);

    // One transaction through the replication stream, over TLS.
    let client = connect(&url).await.unwrap();
    client.batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text)").await.unwrap();
    ensure_slot_and_publication(&client, "ferrite_slot", "ferrite_pub").await.unwrap();
    add_table_to_publication(&client, "ferrite_pub", &QualifiedName::new("public", "items")).await.unwrap();
    let cfg = ReplicationConfig { url: url.clone(), slot: "ferrite_slot".into(), publication: "ferrite_pub".into() };
    let (mut rx, task) = start_replication(&cfg, 0, Arc::new(AtomicU64::new(0))).await.expect("start replication");
    client.batch_execute("INSERT INTO items VALUES (1, 'over tls')").await.unwrap();
    let t = next_txn(&mut rx).await;
    match &t.changes[..] {
        [Change::Insert { new, .. }] => assert_eq!(new[1].as_deref(), Some("over tls")),
        other => panic!("expected one insert, got {other:?}"),
    }
    task.abort();

    // Without sslmode (libpq's default, prefer) and with prefer, TLS is used too.
    let default = s.url("postgres", "127.0.0.1", "tls_db", "application_name=x");
    assert!(ssl_in_use(&default).await);
    assert!(replication_ssl_in_use(&default).await);
    let prefer = s.url("postgres", "127.0.0.1", "tls_db", "sslmode=prefer");
    assert!(ssl_in_use(&prefer).await);
    assert!(replication_ssl_in_use(&prefer).await);

    // A key=value string with only an address (no host name) works too.
    let hostaddr = format!("hostaddr=127.0.0.1 port={} user=postgres dbname=tls_db sslmode=require", s.cluster.port());
    assert!(ssl_in_use(&hostaddr).await);
    assert!(replication_ssl_in_use(&hostaddr).await);

    // disable really sends no TLS: the server has no rule for unencrypted TCP.
    let disable = s.url("postgres", "127.0.0.1", "tls_db", "sslmode=disable");
    let err = connect(&disable).await.unwrap_err();
    assert_eq!(err.code(), Some("28000"), "{err}");
    assert!(err.to_string().contains("no encryption"), "{err}");
    let err = ReplicationConnection::connect(&disable).await.unwrap_err();
    assert_eq!(err.code(), Some("28000"), "{err}");

    // Unix sockets never use TLS, whatever the mode (as libpq).
    let socket = format!(
        "postgres://postgres@/tls_db?host={}&port={}&sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        s.cluster.socket_dir().display(),
        s.cluster.port()
    );
    assert!(!ssl_in_use(&socket).await);
    assert!(!replication_ssl_in_use(&socket).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_host_names_are_checked_as_sslmode_says() {
    let s = TlsServer::start();
    let ca = format!("sslrootcert={}", path(&s.ca));
    let other_ca = format!("sslrootcert={}", path(&s.other_ca));

    // verify-full: the right CA and a name in the certificate.
    let url = s.url("postgres", "localhost", "postgres", &format!("sslmode=verify-full&{ca}"));
    assert!(ssl_in_use(&url).await);
    assert!(replication_ssl_in_use(&url).await);

    // A certificate from another CA is refused, by verify-full and verify-ca, and by require
    // when a root certificate is given (libpq then behaves as verify-ca).
    for mode in ["verify-full", "verify-ca", "require", "prefer"] {
        let url = s.url("postgres", "localhost", "postgres", &format!("sslmode={mode}&{other_ca}"));
        let err = connect(&url).await.expect_err(mode).to_string();
        assert!(err.contains("certificate") && err.contains("UnknownIssuer"), "{mode}: {err}");
        let err = ReplicationConnection::connect(&url).await.expect_err(mode).to_string();
        assert!(err.contains("certificate") && err.contains("UnknownIssuer"), "{mode}: {err}");
    }

    // 127.0.0.1 is not a name in the certificate: verify-full refuses, verify-ca accepts.
    let url = s.url("postgres", "127.0.0.1", "postgres", &format!("sslmode=verify-full&{ca}"));
    let err = connect(&url).await.unwrap_err().to_string();
    assert!(err.contains("not valid for name"), "{err}");
    let err = ReplicationConnection::connect(&url).await.unwrap_err().to_string();
    assert!(err.contains("not valid for name"), "{err}");
    let url = s.url("postgres", "127.0.0.1", "postgres", &format!("sslmode=verify-ca&{ca}"));
    assert!(ssl_in_use(&url).await);
    assert!(replication_ssl_in_use(&url).await);

    // key=value connection strings work the same way.
    let kv = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{}'",
        s.cluster.port(),
        path(&s.ca)
    );
    assert!(ssl_in_use(&kv).await);
    assert!(replication_ssl_in_use(&kv).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_with_channel_binding_and_client_certificates_work_over_tls() {
    let s = TlsServer::start();
    let admin = connect(&s.url("postgres", "127.0.0.1", "postgres", "sslmode=require")).await.unwrap();
    admin
        .batch_execute(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 's3cret'; \
             CREATE ROLE cert_user LOGIN REPLICATION;",
        )
        .await
        .unwrap();

    // channel_binding=require proves SCRAM-SHA-256-PLUS (tls-server-end-point) was used.
    for binding in ["prefer", "require"] {
        let url =
            s.url("scram_user:s3cret", "127.0.0.1", "postgres", &format!("sslmode=require&channel_binding={binding}"));
        assert!(ssl_in_use(&url).await, "{binding}");
        assert!(replication_ssl_in_use(&url).await, "{binding}");
    }
    let url = s.url("scram_user:s3cret", "127.0.0.1", "postgres", "sslmode=require&channel_binding=disable");
    assert!(replication_ssl_in_use(&url).await);
    let wrong = s.url("scram_user:wrong", "127.0.0.1", "postgres", "sslmode=require");
    assert_eq!(connect(&wrong).await.unwrap_err().code(), Some("28P01"));
    assert_eq!(ReplicationConnection::connect(&wrong).await.unwrap_err().code(), Some("28P01"));

    // Authentication by client certificate (the CN names the user).
    let certs = format!(
        "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        path(&s.ca),
        path(&s.client_cert),
        path(&s.client_key)
    );
    let url = s.url("cert_user", "localhost", "postgres", &certs);
    assert!(ssl_in_use(&url).await);
    assert!(replication_ssl_in_use(&url).await);
    let without =
        s.url("cert_user", "localhost", "postgres", &format!("sslmode=verify-full&sslrootcert={}", path(&s.ca)));
    assert_eq!(connect(&without).await.unwrap_err().code(), Some("28000"));
    assert_eq!(ReplicationConnection::connect(&without).await.unwrap_err().code(), Some("28000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falls_back_to_plain_on_a_server_without_tls() {
    let cluster = LocalCluster::temporary().expect("start a PostgreSQL cluster");
    let base = cluster.url("postgres");
    for params in ["", "?sslmode=prefer", "?sslmode=disable"] {
        let url = format!("{base}{params}");
        assert!(!ssl_in_use(&url).await, "{url}");
        assert!(!replication_ssl_in_use(&url).await, "{url}");
    }
    for mode in ["require", "verify-ca", "verify-full"] {
        // Given a root certificate so verify-* does not depend on the machine's trust store.
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), Ca::new("unused").cert.pem()).unwrap();
        let url = format!("{base}?sslmode={mode}&sslrootcert={}", path(ca.path()));
        let err = connect(&url).await.unwrap_err().to_string();
        assert!(err.contains("does not support TLS"), "{mode}: {err}");
        let err = ReplicationConnection::connect(&url).await.unwrap_err().to_string();
        assert!(err.contains("does not support TLS"), "{mode}: {err}");
    }
}

#[tokio::test]
async fn bad_tls_parameters_are_clear_errors() {
    // Nothing listens on port 1: these must fail before connecting, naming the parameter.
    let cases = [
        ("sslmode=verify", "sslmode"),
        ("sslmode=require&sslrootcert=/nonexistent/ca.pem", "sslrootcert=/nonexistent/ca.pem"),
        ("sslmode=require&sslcert=/nonexistent/c.pem&sslkey=/nonexistent/k.pem", "sslcert=/nonexistent/c.pem"),
        ("sslmode=require&sslcert=/nonexistent/c.pem", "sslkey"),
    ];
    for (params, expected) in cases {
        let url = format!("postgres://postgres@127.0.0.1:1/db?{params}");
        let err = connect(&url).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{params}: {err}");
        let err = ReplicationConnection::connect(&url).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{params}: {err}");
    }
}

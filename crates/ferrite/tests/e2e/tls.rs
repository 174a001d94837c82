//! A Ferrite server whose `database_url` asks for TLS (`sslmode=require`) syncs a shape, snapshot
//! and live changes, against a Postgres that refuses unencrypted TCP connections.

use crate::common::{ShapeReader, TestDb, TestServer};
use ferrite_pg::cluster::{ClusterSetup, LocalCluster};
use std::time::Duration;

/// A cluster with a throwaway CA's certificate for localhost/127.0.0.1 that only accepts TLS on
/// TCP (`hostssl` only; Unix-socket connections stay trusted, as in every test cluster).
fn tls_cluster() -> LocalCluster {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "Ferrite test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
    let setup = ClusterSetup {
        settings: [("ssl", "on"), ("ssl_cert_file", "server.crt"), ("ssl_key_file", "server.key")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec(),
        files: vec![
            ("server.crt".into(), server_cert.pem().into_bytes()),
            ("server.key".into(), server_key.serialize_pem().into_bytes()),
        ],
        hba: Some("local all all trust\nhostssl all all 127.0.0.1/32 trust\n".into()),
    };
    LocalCluster::temporary_with(setup).expect("start a PostgreSQL cluster with TLS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_syncs_a_shape_over_tls() {
    let cluster = tls_cluster();
    let url = format!("{}?sslmode=require", cluster.create_database("ferrite_test").unwrap());
    let db = TestDb { cluster, url };
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'snapshot');")
        .await
        .unwrap();
    // Proof that the URL's TLS is in force: unencrypted TCP is refused by this server.
    let plain = db.url.replace("sslmode=require", "sslmode=disable");
    let err = ferrite_pg::connect::connect(&plain).await.unwrap_err();
    assert_eq!(err.code(), Some("28000"), "{err}");

    let s = TestServer::start(&db).await;
    let mut shape = ShapeReader::new(&s.base, &[("table", "items")]);
    shape.catch_up().await;
    let names = |r: &ShapeReader| r.rows.values().map(|row| row["name"].clone()).collect::<Vec<_>>();
    assert_eq!(names(&shape), vec![serde_json::json!("snapshot")]);

    client.batch_execute("INSERT INTO items VALUES (2, 'live')").await.unwrap();
    shape.live_until(Duration::from_secs(20), |r| r.rows.len() == 2).await;
    assert!(names(&shape).contains(&serde_json::json!("live")));

    // The server's walsender session is encrypted.
    let walsender_ssl: Vec<bool> = client
        .query("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_replication r USING (pid)", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(walsender_ssl, vec![true]);
}

//! LocalCluster against the real PostgreSQL binaries: settings, data reuse, ports, restarts.

mod common;

use ferrite_pg::cluster::LocalCluster;
use ferrite_pg::connect::connect;
use std::os::unix::fs::PermissionsExt;

async fn show(client: &tokio_postgres::Client, name: &str) -> String {
    client.query_one(&format!("SHOW {name}"), &[]).await.expect("SHOW").get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_cluster_has_the_settings_ferrite_needs() {
    let cluster = LocalCluster::temporary().expect("start");
    let url = cluster.url("postgres");
    assert_eq!(url, format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port()));
    assert!(cluster.data_dir().join("PG_VERSION").exists());
    assert!(cluster.data_dir().join("postgres.log").exists());
    let client = connect(&url).await.expect("connect");
    assert_eq!(show(&client, "wal_level").await, "logical");
    assert_eq!(show(&client, "max_replication_slots").await, "20");
    assert_eq!(show(&client, "max_wal_senders").await, "20");
    assert_eq!(show(&client, "max_connections").await, "200");
    assert_eq!(show(&client, "listen_addresses").await, "127.0.0.1");
    assert_eq!(show(&client, "server_encoding").await, "UTF8");
    assert_eq!(show(&client, "fsync").await, "on");
    // The session settings `connect` forces (`docs/http-protocol.md#values`).
    assert_eq!(show(&client, "DateStyle").await, "ISO, DMY");
    assert_eq!(show(&client, "TimeZone").await, "UTC");
    assert_eq!(show(&client, "IntervalStyle").await, "iso_8601");
    assert_eq!(show(&client, "bytea_output").await, "hex");
    assert_eq!(show(&client, "extra_float_digits").await, "1");
    // They survive RESET ALL (startup options are the session defaults).
    client.batch_execute("SET DateStyle = 'SQL, MDY'; RESET ALL").await.unwrap();
    assert_eq!(show(&client, "DateStyle").await, "ISO, DMY");
    // The server never runs as root (Postgres would refuse): check the postmaster's uid.
    let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    let pid = pid_file.lines().next().unwrap().trim();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_ne!(uid_line.split_whitespace().nth(1), Some("0"), "{uid_line}");
    let dir = cluster.data_dir().to_path_buf();
    drop(client);
    drop(cluster);
    assert!(!dir.exists(), "temporary directory removed on drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_reuses_an_existing_data_directory() {
    let base = tempfile::tempdir().unwrap();
    // Parents must be searchable by the postgres user when we run as root.
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = base.path().join("pgdata");

    let mut first = LocalCluster::start(&data, None).expect("first start");
    let port = first.port();
    let url = first.create_database("keep").expect("create db");
    assert_eq!(first.create_database("keep").expect("idempotent"), url);
    {
        let c = connect(&url).await.unwrap();
        c.batch_execute("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1), (2)").await.unwrap();
    }
    first.stop();
    drop(first);
    assert!(data.join("PG_VERSION").exists(), "a non-temporary data dir is kept");
    assert!(base.path().join("pgdata.sockets").is_dir(), "socket directory next to the data dir");

    let second = LocalCluster::start(&data, Some(port)).expect("second start");
    assert_eq!(second.port(), port, "the freed preferred port is used again");
    let c = connect(&second.url("keep")).await.unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM kept", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);

    // A second LocalCluster on a running data dir adopts the server.
    let adopted = LocalCluster::start(&data, None).expect("adopt");
    assert_eq!(adopted.port(), second.port());
    drop(c);
    drop(adopted); // stops the shared server
    drop(second); // nothing left to stop; must not panic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_replaced_by_a_free_one() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap().port();
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cluster = LocalCluster::start(&base.path().join("d"), Some(taken)).expect("start");
    assert_ne!(cluster.port(), taken);
    connect(&cluster.url("postgres")).await.expect("connect on the replacement port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_non_empty_directory_that_is_not_a_cluster() {
    let base = tempfile::tempdir().unwrap();
    std::fs::write(base.path().join("precious.txt"), "data").unwrap();
    let err = LocalCluster::start(base.path(), None).unwrap_err();
    assert!(err.to_string().contains("not a PostgreSQL data directory"), "{err}");
    assert!(base.path().join("precious.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_port_and_survives_a_crash() {
    let (mut cluster, url) = common::cluster_with_db("crash");
    let port = cluster.port();
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)").await.unwrap();

    cluster.restart().expect("clean restart");
    assert_eq!(cluster.port(), port);
    assert!(c.query_one("SELECT 1", &[]).await.is_err(), "old connections are gone");
    let c = connect(&url).await.expect("reconnect after restart");
    c.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();

    cluster.kill_postmaster().expect("kill");
    assert!(connect(&url).await.is_err(), "nothing listens after the kill");
    cluster.restart().expect("restart after crash");
    assert_eq!(cluster.port(), port);
    let c = connect(&url).await.expect("reconnect after crash recovery");
    let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 2, "committed rows survive the crash");
}

//! Shared helpers for ferrite-pg's integration tests: a throwaway cluster with a database, and
//! waiting helpers for the replication stream.
#![allow(dead_code)]

use ferrite_pg::cluster::LocalCluster;
use ferrite_pg::replication::{ReplicationError, Transaction};
use std::time::Duration;
use tokio::sync::mpsc::Receiver;

/// A fresh cluster with database `db`; returns the cluster and the database URL.
pub fn cluster_with_db(db: &str) -> (LocalCluster, String) {
    let cluster = LocalCluster::temporary().expect("start a temporary PostgreSQL cluster");
    let url = cluster.create_database(db).expect("create database");
    (cluster, url)
}

/// The next stream item, failing the test after 30 s.
pub async fn next(rx: &mut Receiver<Result<Transaction, ReplicationError>>) -> Result<Transaction, ReplicationError> {
    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("replication stream ended without an error"),
        Err(_) => panic!("no transaction within 30 s"),
    }
}

/// The next transaction; panics on a stream error.
pub async fn next_txn(rx: &mut Receiver<Result<Transaction, ReplicationError>>) -> Transaction {
    match next(rx).await {
        Ok(t) => t,
        Err(e) => panic!("replication error: {e}"),
    }
}

/// Asserts nothing arrives for `wait`.
pub async fn assert_quiet(rx: &mut Receiver<Result<Transaction, ReplicationError>>, wait: Duration) {
    if let Ok(item) = tokio::time::timeout(wait, rx.recv()).await {
        panic!("expected no transaction, got {item:?}");
    }
}

/// Runs statements in one transaction and returns its xid as `pg_current_xact_id()::xid`.
pub async fn txn(client: &mut tokio_postgres::Client, sql: &str) -> u32 {
    let t = client.transaction().await.expect("begin");
    let xid: String = t.query_one("SELECT pg_current_xact_id()::xid::text", &[]).await.expect("xid").get(0);
    t.batch_execute(sql).await.expect("statements");
    t.commit().await.expect("commit");
    xid.parse().expect("xid is a number")
}

//! The error when the PostgreSQL binaries cannot be found (own test binary: it sets an
//! environment variable other tests must not see).

use ferrite_pg::cluster::{ClusterError, LocalCluster};

#[test]
fn missing_binaries_give_one_clear_line() {
    // SAFETY: this test binary has a single test, so no other thread reads the environment.
    unsafe { std::env::set_var("FERRITE_PG_BIN", "/nonexistent/ferrite-test/bin") };
    let err = LocalCluster::temporary().unwrap_err();
    assert!(matches!(err, ClusterError::BinariesNotFound(_)), "{err:?}");
    let msg = err.to_string();
    assert!(!msg.contains('\n'));
    assert!(msg.contains("initdb"), "{msg}");
    assert!(msg.contains("apt-get install postgresql"), "{msg}");
    assert!(msg.contains("FERRITE_PG_BIN=/nonexistent/ferrite-test/bin"), "{msg}");
}

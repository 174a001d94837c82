//! Logical replication: slot and publication management, the walsender connection, the pgoutput
//! decoder and the transaction stream the server consumes.
//!
//! - [`slot`]: create the slot/publication, add tables (with `REPLICA IDENTITY FULL`), slot health.
//! - [`conn`]: a `replication=database` protocol connection (tokio-postgres has none).
//! - [`pgoutput`]: decoding of pgoutput protocol v1 messages.
//! - [`stream`]: assembling messages into [`Transaction`]s and acknowledging progress.
//! - [`lsn`]: LSN text ⇄ `u64`.
//!
//! The commonly used items are re-exported here.

pub mod conn;
pub mod error;
pub mod lsn;
pub mod pgoutput;
pub mod slot;
pub mod stream;

pub use error::ReplicationError;
pub use lsn::{format_lsn, parse_lsn};
pub use slot::{
    add_table_to_publication, current_wal_lsn, drop_slot_if_lost, ensure_slot_and_publication, slot_status, SlotStatus,
    DDL_LOCK_TIMEOUT,
};
pub use stream::{
    start_replication, start_replication_with, Change, Relation, RelationColumn, ReplicationConfig, StreamProgress,
    Transaction, TransactionReceiver,
};

//! Postgres I/O for Ferrite.
//!
//! Everything that talks to Postgres lives here, so the rest of Ferrite deals in plain data
//! ([`ferrite_protocol::schema::TableSchema`], [`replication::Transaction`], message rows):
//!
//! - [`connect`]: ordinary connections with the session settings that make Postgres text output
//!   match what logical replication sends (`docs/http-protocol.md#values`).
//! - [`introspect`]: table schemas from the catalog.
//! - [`snapshot`] and [`row_query`]: reading a shape's rows, as protocol messages rendered by
//!   Postgres, in one REPEATABLE READ snapshot whose visibility is recorded (initial snapshots and
//!   subset snapshots).
//! - [`replication`]: slot/publication setup, the walsender protocol, pgoutput decoding and the
//!   transaction stream with durable-position acknowledgement.
//! - [`cluster`]: throwaway/dev clusters from the local PostgreSQL binaries, for tests and
//!   `ferrite dev`.
//! - [`leadership`]: which node of a Ferrite cluster leads (an advisory lock) and where it is.
//! - [`error`]: [`PgError`], which keeps Postgres's message and SQLSTATE.
//! - [`write_store`] and [`write_table`]: the write path's bookkeeping tables (exactly-once
//!   markers, recorded results, column clocks) and the row-level SQL that applies mutations,
//!   over [`prepared`] connections that prepare each statement once; [`audit`]: the audit
//!   trail of client transactions kept next to them.
//!
//! - [`tls`]: TLS (rustls) for both connection kinds, chosen by the URL's libpq-style `sslmode`,
//!   `sslrootcert`, `sslcert` and `sslkey` parameters.

#![warn(missing_docs)]

pub mod audit;
pub mod cluster;
pub mod connect;
pub mod error;
pub mod introspect;
pub mod leadership;
pub mod prepared;
pub mod replication;
pub mod row_query;
pub mod snapshot;
pub mod tls;
pub mod write_store;
pub mod write_table;

pub use error::PgError;

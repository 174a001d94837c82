//! Ferrite's pure logic: everything here is deterministic and free of I/O so it can be unit- and
//! property-tested in isolation, and shared by the server and the clients.

pub mod cursor;
pub mod hlc;
pub mod key;
pub mod merge;
pub mod offset;
pub mod relation;
pub mod schema;
pub mod shape;
pub mod snapshot_info;
pub mod where_clause;
pub mod write_protocol;

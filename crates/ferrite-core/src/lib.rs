//! Ferrite's pure logic: everything here is deterministic and free of I/O so it can be unit- and
//! property-tested in isolation, and shared by the server and the clients.

pub mod offset;
pub mod relation;
pub mod schema;
pub mod where_clause;
pub mod cursor;
pub mod key;
pub mod shape;
pub mod snapshot_info;
pub mod write_protocol;
pub mod hlc;
pub mod merge;

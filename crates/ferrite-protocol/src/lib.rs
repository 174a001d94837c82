//! Ferrite's wire protocol: what travels between the server and its clients, as types and pure
//! functions — no I/O, no SQL parser — so the server, the Rust client and (through generated
//! TypeScript) the web client agree on one definition.
//!
//! - [`offset`], [`cursor`]: positions in a shape's log and the live-request cursor;
//! - [`relation`], [`schema`], [`key`]: table names as `?table=` spells them, the columns a shape
//!   describes (`electric-schema`), and row keys as messages carry them;
//! - [`messages`]: the row changes and control messages of a shape response;
//! - [`digest`]: the convergence digest of a shape's rows, computed alike by the server and the
//!   clients to notice a replica that drifted, and [`replay`]: what a replica holds after a
//!   shape's messages, for shapes whose digest the server computes on demand;
//! - [`snapshot_info`]: snapshot visibility (`snapshot-end`), to tell whether a transaction is in
//!   a snapshot;
//! - [`hlc`]: hybrid logical clocks that stamp client transactions, and [`clock`]: where the
//!   server and the client read the time (the system's, or a test's manual clock);
//! - [`write_protocol`]: `POST /v1/transactions` requests and results, and [`client_config`]:
//!   what `GET /v1/config` tells clients.
//!
//! The web client's TypeScript types for these messages are generated from the definitions here
//! (`web/client/src/protocol.ts`; a test fails when they are out of date).

#![warn(missing_docs)]

pub mod client_config;
pub mod clock;
pub mod cursor;
pub mod digest;
pub mod hlc;
pub mod key;
pub mod messages;
pub mod offset;
pub mod relation;
pub mod replay;
pub mod schema;
pub mod snapshot_info;
pub mod tags;
pub mod write_protocol;

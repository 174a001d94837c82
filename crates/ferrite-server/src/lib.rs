//! Ferrite's server: shape registry, change router, shape log storage and the HTTP API.
//!
//! Data flow: [`replication`] follows the slot and hands each transaction to the shapes the
//! [`router`] finds for it; each shape ([`shapes`]) appends to its log ([`storage`]); [`http`]
//! serves logs by offset. [`writes`] applies client transactions (`POST /v1/transactions`).
//! [`auth`] checks tokens and table rules, [`presence`] keeps who is where, [`cluster`] shares
//! it with the other nodes of a cluster. [`start`] wires it together.
//!
//! The library's surface is deliberately small: [`start`] (or [`start_with`], to mount extra
//! routes, or [`start_with_clock`], to run on a test's [`ManualClock`]), its [`config`], and the
//! [`RunningServer`] (with an [`Observer`] for benchmarks and tests). Everything else is private
//! to the crate.

#![warn(missing_docs)]

mod admission;
mod auth;
mod cluster;
pub mod config;
mod http;
mod metrics;
mod parallel;
mod pool;
mod presence;
mod replication;
mod router;
mod server;
mod shapes;
mod state;
mod storage;
mod writes;

pub use config::ServerConfig;
pub use ferrite_protocol::clock::{Clock, ManualClock};
pub use metrics::{Histogram, Metrics};
pub use server::{start, start_with, start_with_clock, Observer, RunningServer, StartError};

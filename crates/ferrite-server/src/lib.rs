//! Ferrite's server: shape registry, change router, shape log storage and the HTTP API.
//!
//! Data flow: [`replication`] follows the slot and hands each transaction to the shapes the
//! [`router`] finds for it; each shape ([`shapes`]) appends to its log ([`storage`]); [`http`]
//! serves logs by offset. [`writes`] applies client transactions (`POST /v1/transactions`).
//! [`auth`] checks tokens and table rules, [`presence`] keeps who is where; [`dev`] adds
//! `ferrite dev`'s sign-in and editor app. [`server::start`] wires it together.

pub mod admission;
pub mod auth;
pub mod config;
pub mod dev;
pub mod http;
pub mod metrics;
pub mod pool;
pub mod presence;
pub mod replication;
pub mod router;
pub mod server;
pub mod shapes;
pub mod state;
pub mod storage;
pub mod writes;

pub use config::ServerConfig;
pub use server::{start, RunningServer};

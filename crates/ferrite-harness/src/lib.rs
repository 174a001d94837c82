//! Helper processes for Ferrite's tests and benchmarks, each on free loopback ports in its own
//! temporary directory and stopped when dropped (a failing test leaves none behind). Postgres
//! clusters are `ferrite_pg::cluster`'s; this crate holds the others.
#![warn(missing_docs)]

pub mod nats;
pub mod nginx;
pub mod varnish;

/// A TCP port on 127.0.0.1 free right now (the OS picks it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

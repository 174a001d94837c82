//! Helper processes for Ferrite's tests and benchmarks, each on free loopback ports in its own
//! temporary directory and stopped when dropped (a failing test leaves none behind). Postgres
//! clusters are `ferrite_pg::cluster`'s; this crate holds the others.
#![warn(missing_docs)]

pub mod nats;
pub mod nginx;
pub mod tmpfs;
pub mod varnish;

use std::process::Child;
use std::time::{Duration, Instant};

/// The first of `paths` that exists, or an error naming the Debian package to install.
fn find_binary(paths: &[&'static str], package: &str) -> Result<&'static str, String> {
    paths
        .iter()
        .copied()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| format!("{package} not found: install it (apt-get install {package})"))
}

/// Waits until `child` accepts connections on 127.0.0.1:`port`. If it exits first or `timeout`
/// passes, it is killed and the error says what failed (`what`) and why (`why()`: its log).
fn wait_listening(
    child: &mut Child,
    port: u16,
    timeout: Duration,
    what: &str,
    why: impl FnOnce() -> String,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if child.try_wait().map_err(|e| e.to_string())?.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not start on port {port}: {}", why().trim()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on 127.0.0.1 free right now (the OS picks it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

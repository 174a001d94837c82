//! Debian's `nats-server` (with JetStream, its store in a temporary directory) on a free port.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running nats-server; killed when dropped.
pub struct LocalNats {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl LocalNats {
    /// Starts nats-server on 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> Result<LocalNats, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = crate::free_port().map_err(|e| e.to_string())?;
        let child = spawn(port, dir.path())?;
        Ok(LocalNats { child, port, dir })
    }

    /// Kills the server (SIGKILL): the nodes lose NATS.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same store, after [`LocalNats::kill`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.child = spawn(self.port, self.dir.path())?;
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Starts nats-server on `port` with its store in `dir` and waits until it accepts connections.
fn spawn(port: u16, dir: &Path) -> Result<Child, String> {
    let bin = crate::find_binary(
        &["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"],
        "nats-server",
    )?;
    let mut child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting nats-server: {e}"))?;
    crate::wait_listening(&mut child, port, Duration::from_secs(20), "nats-server", String::new)?;
    Ok(child)
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

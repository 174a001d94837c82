//! Debian's Varnish run with `deploy/varnish/ferrite.vcl` as shipped, only the backend's address
//! changed, on a free port.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running varnishd (in the foreground, stopped with SIGTERM when dropped).
pub struct LocalVarnish {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl LocalVarnish {
    /// Starts varnishd with `deploy/varnish/ferrite.vcl` in front of `backend` (`host:port`).
    pub fn start(backend: &str) -> Result<LocalVarnish, String> {
        let bin = crate::find_binary(&["/usr/sbin/varnishd", "/usr/local/sbin/varnishd"], "varnish")?;
        let (host, port) = backend.rsplit_once(':').ok_or("backend must be host:port")?;
        let vcl = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/varnish/ferrite.vcl"))
            .map_err(|e| format!("deploy/varnish/ferrite.vcl: {e}"))?
            .replace(".host = \"127.0.0.1\";", &format!(".host = \"{host}\";"))
            .replace(".port = \"3000\";", &format!(".port = \"{port}\";"));
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // varnishd's compiler may run as another user: the directory must be reachable.
        fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let vcl_path = dir.path().join("ferrite.vcl");
        fs::write(&vcl_path, vcl).map_err(|e| e.to_string())?;
        let listen = crate::free_port().map_err(|e| e.to_string())?;
        let log = fs::File::create(dir.path().join("varnishd.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .args(["-F", "-j", "none", "-s", "malloc,256m", "-a", &format!("127.0.0.1:{listen}")])
            // Sized for ten thousand live clients, as deploy/README.md says to run it.
            .args(["-p", "listen_depth=16384", "-p", "thread_pool_max=10000", "-f"])
            .arg(&vcl_path)
            .arg("-n")
            .arg(dir.path().join("work"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting varnishd: {e}"))?;
        let log = dir.path().join("varnishd.log");
        crate::wait_listening(&mut child, listen, Duration::from_secs(30), "varnishd", || {
            fs::read_to_string(&log).unwrap_or_default()
        })?;
        Ok(LocalVarnish { child, port: listen, _dir: dir })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Client connections varnishd holds open right now (from `/proc/net/tcp`): Varnish's own
    /// request counters are summed lazily, and miss requests parked on an object being fetched.
    pub fn connections(&self) -> usize {
        let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let port = format!(":{:04X}", self.port);
        table
            .lines()
            .skip(1)
            .filter(|l| {
                let mut f = l.split_whitespace();
                let local = f.nth(1).unwrap_or("");
                let state = f.nth(1).unwrap_or("");
                local.ends_with(&port) && state == "01"
            })
            .count()
    }
}

impl Drop for LocalVarnish {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

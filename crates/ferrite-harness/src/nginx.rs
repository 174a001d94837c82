//! Debian's nginx run with one of the configurations Ferrite ships in `deploy/nginx`, so the
//! tests and benchmarks check the very files operators deploy. Only two lines are changed: the
//! upstream's `server` line (the Ferrite nodes under test) and the `listen` line (a free port).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `deploy/nginx` directory of this checkout.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx")
}

/// nginx's counters (`stub_status`).
#[derive(Debug, Clone, Copy)]
pub struct NginxStatus {
    /// Connections nginx is working on: reading a request, waiting for the upstream or a cache
    /// lock, writing a response.
    pub busy: u64,
    /// Requests received since it started.
    pub requests: u64,
}

/// A running nginx; stopped (SIGTERM: workers exit too) when dropped.
pub struct LocalNginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl LocalNginx {
    /// Starts nginx with `deploy/nginx/<config>` in front of `upstreams` (`host:port` each) and
    /// waits until it accepts connections. The error quotes nginx's own message.
    pub fn start(config: &str, upstreams: &[String]) -> Result<LocalNginx, String> {
        let nginx =
            crate::find_binary(&["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"], "nginx")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let conf = dir.path().join("conf");
        let prefix = dir.path().join("prefix");
        fs::create_dir_all(&conf).and_then(|_| fs::create_dir_all(&prefix)).map_err(|e| e.to_string())?;
        let port = crate::free_port().map_err(|e| e.to_string())?;
        let servers: String = upstreams.iter().map(|u| format!("server {u};\n    ")).collect();
        for entry in fs::read_dir(deploy_dir()).map_err(|e| format!("{}: {e}", deploy_dir().display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|e| e == "conf") {
                let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
                let text = text
                    .replace("server 127.0.0.1:3000;\n    ", &servers)
                    .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"));
                fs::write(conf.join(path.file_name().unwrap_or_default()), text).map_err(|e| e.to_string())?;
            }
        }
        let log = dir.path().join("nginx.log");
        let log_file = fs::File::create(&log).map_err(|e| e.to_string())?;
        // `user` only matters (and is only honoured) when started as root: the workers then
        // run as root too, and can reach the temporary directory.
        let globals = format!("daemon off; pid {}; user root;", dir.path().join("nginx.pid").display());
        let mut child = Command::new(nginx)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(conf.join(config))
            .args(["-e", "stderr", "-g", &globals])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting nginx: {e}"))?;
        crate::wait_listening(&mut child, port, Duration::from_secs(20), "nginx", || {
            fs::read_to_string(&log).unwrap_or_default()
        })?;
        Ok(LocalNginx { child, port, dir })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// nginx's own counters, from its `stub_status` page at `/nginx_status` (which counts the
    /// request asking for it).
    pub fn status(&self) -> Result<NginxStatus, String> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        conn.write_all(b"GET /nginx_status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
        let mut text = String::new();
        conn.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let body = text.split("\r\n\r\n").nth(1).ok_or("no body in nginx's status answer")?;
        let field = |name: &str| -> u64 {
            body.split_whitespace().skip_while(|w| *w != name).nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        // "server accepts handled requests\n <accepts> <handled> <requests>"
        let requests = body.lines().nth(2).and_then(|l| l.split_whitespace().nth(2)?.parse().ok()).unwrap_or(0);
        Ok(NginxStatus { busy: field("Reading:") + field("Writing:"), requests })
    }

    /// What nginx wrote to its error log so far (warnings included).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("nginx.log")).unwrap_or_default()
    }
}

impl Drop for LocalNginx {
    fn drop(&mut self) {
        // SIGTERM: nginx's fast shutdown, which stops the workers too (SIGKILL would orphan them).
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

//! Throwaway and development PostgreSQL clusters built from the local server binaries.
//!
//! Tests need a real Postgres with `wal_level=logical` (Ferrite's correctness claims are about
//! Postgres's behaviour, so no mocks), and `ferrite dev` needs one that survives restarts. Both
//! use [`LocalCluster`]: it finds `initdb`/`pg_ctl`, initialises a data directory when needed,
//! writes the settings Ferrite depends on, and starts the server on a free port.
//!
//! Postgres refuses to run as root. When this process is root, every Postgres command runs as the
//! `postgres` system user (the equivalent of `runuser -u postgres --`: the child switches uid/gid
//! and drops supplementary groups before `exec`), and the directories it needs are chowned to it.
//!
//! Settings are written to `ferrite.conf` in the data directory (included from
//! `postgresql.conf`), rewritten on every start so a changed port takes effect. The server log goes
//! to `postgres.log` in the data directory; start failures quote its tail.
//!
//! Tests that need more (TLS: certificate files, `ssl = on`, `hostssl` rules) describe it in a
//! [`ClusterSetup`] for [`LocalCluster::temporary_with`].

use crate::connect::connect;
use crate::error::PgError;
use std::collections::HashSet;
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Name of the settings file Ferrite owns inside the data directory.
const CONF_FILE: &str = "ferrite.conf";
/// Name of the server log file inside the data directory.
const LOG_FILE: &str = "postgres.log";
/// Ports are drawn from below the Linux ephemeral range (32768+) so a port we pick is not
/// grabbed in the meantime as the local end of some outgoing connection.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;
/// Longest socket directory we use; `sun_path` holds 107 bytes including `.s.PGSQL.NNNNN.lock`.
const MAX_SOCKET_DIR_LEN: usize = 80;

/// Ports handed to clusters by this process, so two clusters started concurrently in one test
/// binary never race for the same port.
static PORTS_TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Why a local cluster could not be created, started or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `initdb`/`pg_ctl` are not installed where we look (`FERRITE_PG_BIN`,
    /// `/usr/lib/postgresql/{17,16,15,14}/bin`, `PATH`).
    #[error("PostgreSQL server binaries (initdb, pg_ctl) not found{0}: install postgresql (e.g. apt-get install postgresql) or set FERRITE_PG_BIN to the directory containing them")]
    BinariesNotFound(String),
    /// Running as root but there is no `postgres` user to run the server as.
    #[error("running as root, but there is no `postgres` system user to run PostgreSQL as: create one (useradd --system postgres) or run as an unprivileged user")]
    NoPostgresUser,
    /// Running as root, the `postgres` user cannot reach the directory (typically a parent such
    /// as `/root` or a private temporary directory is not searchable by others).
    #[error("the postgres user cannot access {0}: choose a directory whose parents are searchable by others (e.g. not under /root), or chmod o+x its parents")]
    NotAccessible(PathBuf),
    /// The data directory exists, is not empty, and is not a Postgres data directory; we refuse to
    /// touch it rather than risk someone's files.
    #[error("{0} is not empty and is not a PostgreSQL data directory (no PG_VERSION); choose another directory")]
    NotADataDirectory(PathBuf),
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `initdb`, `pg_ctl` or the server itself failed; `output` has their output and the log tail.
    #[error("{command} failed: {output}")]
    Command {
        /// The command that failed, e.g. `pg_ctl start`.
        command: String,
        /// Its output plus the relevant part of the server log.
        output: String,
    },
    /// No free TCP port could be found.
    #[error("no free TCP port found for PostgreSQL")]
    NoFreePort,
    /// A SQL command against the cluster failed (e.g. `CREATE DATABASE`).
    #[error("{0}")]
    Database(#[from] PgError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// The uid/gid Postgres commands run as when this process is root.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

/// Extra server configuration for [`LocalCluster::temporary_with`], for tests that need more than
/// the defaults — typically TLS: certificate files, `ssl = on` and `hostssl` rules.
#[derive(Debug, Clone, Default)]
pub struct ClusterSetup {
    /// Extra `postgresql.conf` settings as `(name, value)`, e.g. `("ssl", "on")`. Values are
    /// quoted for you. They come after Ferrite's own settings (so they win) and survive restarts.
    pub settings: Vec<(String, String)>,
    /// Files written into the data directory before the server first starts, as `(file name,
    /// contents)`: owned by the server's user with mode 0600, as Postgres demands of a TLS key.
    /// Settings can name them relative to the data directory (`("ssl_key_file", "server.key")`).
    pub files: Vec<(String, Vec<u8>)>,
    /// Replaces `pg_hba.conf` when set; the default trusts every local and TCP connection.
    pub hba: Option<String>,
}

/// A PostgreSQL cluster (one data directory, one postmaster) managed by this process.
///
/// Dropping it stops the server (`pg_ctl stop -m fast`); a temporary cluster's directory is
/// removed afterwards. Nothing in `Drop` panics.
#[derive(Debug)]
pub struct LocalCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    owner: Option<Owner>,
    running: bool,
    /// [`ClusterSetup::settings`], rewritten into `ferrite.conf` on every start.
    extra_settings: Vec<(String, String)>,
    /// Keeps a temporary cluster's directory alive; declared last so it is removed after `Drop`
    /// has stopped the server.
    temp: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Starts a cluster in `data_dir`, initialising it first when the directory is missing or
    /// empty and reusing it otherwise (so `ferrite dev` keeps its data between runs).
    ///
    /// `port` is a preference: when it is taken (or `None`), a free port is chosen; read the
    /// actual one with [`port`](Self::port). If a server is already running on this data
    /// directory (e.g. left over from a killed `ferrite dev`), it is adopted as is.
    pub fn start(data_dir: &Path, port: Option<u16>) -> Result<LocalCluster, ClusterError> {
        let data_dir = absolute(data_dir)?;
        let parent = data_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let name = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "pgdata".into());
        let socket_dir = parent.join(format!("{name}.sockets"));
        Self::start_in(data_dir, socket_dir, port, None, ClusterSetup::default())
    }

    /// Starts a fresh cluster in a new temporary directory on a free port — what tests use. The
    /// directory is deleted when the cluster is dropped.
    pub fn temporary() -> Result<LocalCluster, ClusterError> {
        Self::temporary_with(ClusterSetup::default())
    }

    /// [`temporary`](Self::temporary) with extra settings, files and client authentication rules
    /// (for tests of TLS, say), applied before the server first starts.
    pub fn temporary_with(setup: ClusterSetup) -> Result<LocalCluster, ClusterError> {
        let temp = tempfile::Builder::new()
            .prefix("ferrite-pg-")
            .tempdir()
            .map_err(io_err("creating a temporary directory"))?;
        let data_dir = temp.path().join("data");
        let socket_dir = temp.path().join("sock");
        Self::start_in(data_dir, socket_dir, None, Some(temp), setup)
    }

    fn start_in(
        data_dir: PathBuf,
        socket_dir: PathBuf,
        port: Option<u16>,
        temp: Option<tempfile::TempDir>,
        setup: ClusterSetup,
    ) -> Result<LocalCluster, ClusterError> {
        let existing_version = std::fs::read_to_string(data_dir.join("PG_VERSION")).ok();
        let bin_dir = find_binaries(existing_version.as_deref().map(str::trim))?;
        let owner = if is_root() { Some(lookup_user("postgres").ok_or(ClusterError::NoPostgresUser)?) } else { None };
        let socket_dir =
            if socket_dir.as_os_str().len() > MAX_SOCKET_DIR_LEN { std::env::temp_dir() } else { socket_dir };
        let mut cluster = LocalCluster {
            bin_dir,
            data_dir,
            socket_dir,
            port: 0,
            owner,
            running: false,
            extra_settings: setup.settings,
            temp,
        };
        cluster.prepare_directories()?;
        if existing_version.is_none() {
            cluster.initdb()?;
        }
        for (name, contents) in &setup.files {
            cluster.write_private_file(name, contents)?;
        }
        if let Some(hba) = &setup.hba {
            cluster.write_private_file("pg_hba.conf", hba.as_bytes())?;
        }
        if let Some(port) = cluster.running_port() {
            tracing::info!(port, data_dir = %cluster.data_dir.display(), "adopting the PostgreSQL server already running on this data directory");
            cluster.port = port;
            cluster.running = true;
            return Ok(cluster);
        }
        cluster.launch(port, false)?;
        Ok(cluster)
    }

    /// The connection URL for database `dbname` (superuser `postgres`, trust auth, TCP).
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, encode_path_segment(dbname))
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (useful for looking at `postgres.log` when a test fails).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's Unix socket, for URLs such as
    /// `postgres://postgres@/db?host=<socket_dir>&port=<port>`.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Creates database `name` (no error if it already exists) and returns its URL.
    ///
    /// Synchronous like the rest of this type, so it can be called from both plain and async
    /// code: the SQL runs on a helper thread with its own small runtime.
    pub fn create_database(&self, name: &str) -> Result<String, ClusterError> {
        let admin_url = self.url("postgres");
        let sql = format!("CREATE DATABASE {}", ferrite_protocol::relation::quote_ident(name));
        let worker = std::thread::spawn(move || -> Result<(), PgError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| PgError::Connection(format!("cannot start a runtime: {e}")))?;
            runtime.block_on(async move {
                let client = connect(&admin_url).await?;
                match client.batch_execute(&sql).await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let e = PgError::from(e);
                        // 42P04 duplicate_database: creating is idempotent.
                        if e.code() == Some("42P04") {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    }
                }
            })
        });
        match worker.join() {
            Ok(result) => result?,
            Err(_) => return Err(PgError::Connection("CREATE DATABASE worker thread panicked".into()).into()),
        }
        Ok(self.url(name))
    }

    /// Stops the server (`pg_ctl stop -m fast`: open transactions are rolled back, clients are
    /// disconnected). Errors are logged, not returned: this is also what `Drop` does and there is
    /// nothing useful a caller could do about a server that will not stop.
    ///
    /// A clean shutdown waits for every walsender's client to confirm all WAL it was sent; a
    /// replication consumer that keeps the connection open without confirming would stall it
    /// forever. So after 15 s the server is stopped with `-m immediate` instead (crash recovery
    /// runs on the next start; committed data is safe).
    pub fn stop(&mut self) {
        if !self.running && self.postmaster_pid().is_none_or(|pid| !process_alive(pid)) {
            return;
        }
        self.running = false;
        for (mode, timeout) in [("fast", "15"), ("immediate", "30")] {
            let mut cmd = self.pg_command("pg_ctl");
            cmd.arg("stop").arg("-D").arg(&self.data_dir).args(["-m", mode, "-w", "-t", timeout]);
            match cmd.output() {
                Ok(out) if out.status.success() => return,
                Ok(out) => {
                    if self.postmaster_pid().is_none_or(|pid| !process_alive(pid)) {
                        return;
                    }
                    tracing::warn!(mode, output = %command_output(&out), "pg_ctl stop did not succeed")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not run pg_ctl stop");
                    return;
                }
            }
        }
    }

    /// Kills the postmaster with SIGKILL, simulating a crash (for crash-recovery tests). Backends
    /// notice the postmaster's death and exit on their own; [`restart`](Self::restart) brings the
    /// server back (with crash recovery) on the same port.
    pub fn kill_postmaster(&self) -> Result<(), ClusterError> {
        let pid = self.postmaster_pid().ok_or_else(|| ClusterError::Command {
            command: "kill postmaster".into(),
            output: "no postmaster.pid: the server is not running".into(),
        })?;
        // SAFETY: plain syscall with a pid read from the lock file.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        if rc != 0 {
            return Err(ClusterError::Io {
                context: format!("sending SIGKILL to postmaster {pid}"),
                source: std::io::Error::last_os_error(),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server (if running) and starts it again on the same port, so URLs handed out
    /// earlier stay valid. Works after [`kill_postmaster`](Self::kill_postmaster) too: it waits
    /// for orphaned backends to exit and lets Postgres run crash recovery.
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        if self.postmaster_pid().is_some_and(process_alive) {
            self.stop();
        }
        self.running = false;
        let port = self.port;
        self.launch(Some(port), true)
    }

    /// Creates the directories Postgres needs and hands them to the `postgres` user when root.
    fn prepare_directories(&self) -> Result<(), ClusterError> {
        if self.data_dir.exists() && !self.data_dir.join("PG_VERSION").exists() {
            let mut entries =
                std::fs::read_dir(&self.data_dir).map_err(io_err(format!("reading {}", self.data_dir.display())))?;
            if entries.next().is_some() {
                return Err(ClusterError::NotADataDirectory(self.data_dir.clone()));
            }
        }
        std::fs::create_dir_all(&self.data_dir).map_err(io_err(format!("creating {}", self.data_dir.display())))?;
        std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("setting permissions on {}", self.data_dir.display())))?;
        if self.socket_dir != std::env::temp_dir() {
            std::fs::create_dir_all(&self.socket_dir)
                .map_err(io_err(format!("creating {}", self.socket_dir.display())))?;
        }
        if let Some(owner) = self.owner {
            if let Some(temp) = &self.temp {
                chown(temp.path(), owner)?;
            }
            if self.socket_dir != std::env::temp_dir() {
                chown(&self.socket_dir, owner)?;
            }
            chown_recursive_if_needed(&self.data_dir, owner)?;
            // Ownership is not enough if a parent directory is closed to the postgres user.
            let mut check = Command::new("/bin/sh");
            check
                .args(["-c", "test -w \"$1\" && test -x \"$1\"", "sh"])
                .arg(&self.data_dir)
                .current_dir("/")
                .stdin(Stdio::null())
                .uid(owner.uid)
                .gid(owner.gid);
            if !check.output().map(|o| o.status.success()).unwrap_or(true) {
                return Err(ClusterError::NotAccessible(self.data_dir.clone()));
            }
        }
        Ok(())
    }

    fn initdb(&self) -> Result<(), ClusterError> {
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        let out = cmd.output().map_err(io_err("running initdb"))?;
        if !out.status.success() {
            return Err(ClusterError::Command { command: "initdb".into(), output: command_output(&out) });
        }
        let conf = self.data_dir.join("postgresql.conf");
        let text = std::fs::read_to_string(&conf).map_err(io_err(format!("reading {}", conf.display())))?;
        if !text.contains(CONF_FILE) {
            let text = format!(
                "{text}\n# Settings managed by Ferrite (rewritten on every start)\ninclude_if_exists = '{CONF_FILE}'\n"
            );
            std::fs::write(&conf, text).map_err(io_err(format!("writing {}", conf.display())))?;
        }
        Ok(())
    }

    /// Writes `name` in the data directory, readable only by the server's user.
    fn write_private_file(&self, name: &str, contents: &[u8]) -> Result<(), ClusterError> {
        let path = self.data_dir.join(name);
        std::fs::write(&path, contents).map_err(io_err(format!("writing {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("setting permissions on {}", path.display())))?;
        if let Some(owner) = self.owner {
            chown(&path, owner)?;
        }
        Ok(())
    }

    /// Writes `ferrite.conf` for the current port.
    fn write_settings(&self) -> Result<(), ClusterError> {
        let socket_dir = self.socket_dir.to_string_lossy().replace('\'', "''");
        let mut text = format!(
            "# Written by ferrite-pg on every start; edits are lost.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             wal_level = logical\n\
             max_replication_slots = 20\n\
             max_wal_senders = 20\n\
             max_connections = 200\n\
             track_commit_timestamp = on\n\
             logging_collector = off\n\
             log_destination = 'stderr'\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            port = self.port,
        );
        for (name, value) in &self.extra_settings {
            text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        let path = self.data_dir.join(CONF_FILE);
        std::fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        if let Some(owner) = self.owner {
            chown(&path, owner)?;
        }
        // The include line is added by initdb(); older data dirs (or ones made by hand) get it here.
        let conf = self.data_dir.join("postgresql.conf");
        if let Ok(existing) = std::fs::read_to_string(&conf) {
            if !existing.contains(CONF_FILE) {
                let text = format!("{existing}\n# Settings managed by Ferrite (rewritten on every start)\ninclude_if_exists = '{CONF_FILE}'\n");
                std::fs::write(&conf, text).map_err(io_err(format!("writing {}", conf.display())))?;
            }
        }
        Ok(())
    }

    /// Starts the postmaster. With `fixed`, only `port` is tried (retrying for a while, e.g. until
    /// orphans of a killed postmaster are gone); otherwise a taken port is replaced by a free one.
    fn launch(&mut self, port: Option<u16>, fixed: bool) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_secs(if fixed { 60 } else { 120 });
        let mut candidate = match port {
            Some(p) if fixed || port_is_free(p) => {
                reserve_port(p);
                p
            }
            _ => pick_free_port()?,
        };
        loop {
            self.port = candidate;
            self.remove_stale_pid_file();
            self.write_settings()?;
            match self.pg_ctl_start() {
                Ok(()) => {
                    self.running = true;
                    return Ok(());
                }
                Err((err, log)) => {
                    if Instant::now() >= deadline {
                        return Err(err);
                    }
                    let port_conflict =
                        log.contains("could not bind") || log.contains("could not create any TCP/IP sockets");
                    let leftovers = log.contains("still in use")
                        || log.contains("lock file")
                        || log.contains("is another postmaster");
                    if port_conflict && !fixed {
                        tracing::debug!(port = candidate, "port taken; trying another");
                        candidate = pick_free_port()?;
                    } else if port_conflict || leftovers {
                        std::thread::sleep(Duration::from_millis(250));
                    } else {
                        return Err(err);
                    }
                }
            }
        }
    }

    /// Runs `pg_ctl start -w`; on failure returns the error and the new part of the server log.
    #[allow(clippy::result_large_err)]
    fn pg_ctl_start(&self) -> Result<(), (ClusterError, String)> {
        let log_path = self.data_dir.join(LOG_FILE);
        let log_offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("start").arg("-D").arg(&self.data_dir).arg("-l").arg(&log_path).args(["-w", "-t", "120"]);
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) => return Err((io_err("running pg_ctl start")(e), String::new())),
        };
        if out.status.success() {
            return Ok(());
        }
        let log = read_from(&log_path, log_offset);
        let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        let output = format!("{}\n--- {} ---\n{}", command_output(&out), log_path.display(), tail.join("\n"));
        Err((ClusterError::Command { command: format!("pg_ctl start (port {})", self.port), output }, log))
    }

    /// The port of a server already running on this data directory, if any.
    fn running_port(&self) -> Option<u16> {
        let pid = self.postmaster_pid()?;
        if !process_alive(pid) {
            return None;
        }
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("status").arg("-D").arg(&self.data_dir);
        let out = cmd.output().ok()?;
        if !out.status.success() {
            return None;
        }
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().nth(3)?.trim().parse().ok()
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Removes `postmaster.pid` when its process is gone. Postgres does this itself for dead
    /// processes, but not for zombies (a killed postmaster nobody reaped), which would otherwise
    /// block a restart forever. Shared memory still attached by orphans is detected by Postgres.
    fn remove_stale_pid_file(&self) {
        if let Some(pid) = self.postmaster_pid() {
            if !process_alive(pid) {
                let _ = std::fs::remove_file(self.data_dir.join("postmaster.pid"));
            }
        }
    }

    /// A command for one of the Postgres binaries, as the `postgres` user when we are root.
    fn pg_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir("/")
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST")
            .env_remove("PGOPTIONS");
        if let Some(owner) = self.owner {
            cmd.uid(owner.uid).gid(owner.gid).env("USER", "postgres").env("LOGNAME", "postgres");
        }
        cmd
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
        release_port(self.port);
    }
}

/// Finds a directory holding `initdb` and `pg_ctl`. A reused data directory prefers the binaries
/// of its own major version.
fn find_binaries(data_version: Option<&str>) -> Result<PathBuf, ClusterError> {
    let usable = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file() && d.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("FERRITE_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if usable(&dir) {
            Ok(dir)
        } else {
            Err(ClusterError::BinariesNotFound(format!(" in FERRITE_PG_BIN={}", dir.display())))
        };
    }
    let mut candidates = vec![];
    if let Some(v) = data_version {
        candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")));
    }
    for v in [17, 16, 15, 14] {
        candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.into_iter().find(|d| usable(d)).ok_or_else(|| ClusterError::BinariesNotFound(String::new()))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// uid/gid of a system user (thread-safe `getpwnam_r`).
fn lookup_user(name: &str) -> Option<Owner> {
    let cname = CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the duration of the call; buf outlives pwd's use.
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(Owner { uid: pwd.pw_uid, gid: pwd.pw_gid })
}

/// True when `pid` exists and is not a zombie.
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence/permission.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ')'.
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) != Some("Z"),
        Err(_) => true,
    }
}

fn chown(path: &Path, owner: Owner) -> Result<(), ClusterError> {
    std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))
        .map_err(io_err(format!("changing the owner of {} to postgres", path.display())))
}

/// Hands a data directory to the `postgres` user, recursing only when its top is not already
/// owned by it (a reused directory created or copied by root).
fn chown_recursive_if_needed(dir: &Path, owner: Owner) -> Result<(), ClusterError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(format!("reading {}", dir.display())))?;
    if meta.uid() == owner.uid && meta.gid() == owner.gid {
        return Ok(());
    }
    fn walk(path: &Path, owner: Owner) -> Result<(), ClusterError> {
        chown(path, owner)?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err(format!("reading {}", path.display())))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).map_err(io_err(format!("reading {}", path.display())))? {
                let entry = entry.map_err(io_err(format!("reading {}", path.display())))?;
                walk(&entry.path(), owner)?;
            }
        }
        Ok(())
    }
    walk(dir, owner)
}

fn absolute(path: &Path) -> Result<PathBuf, ClusterError> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir().map_err(io_err("reading the current directory"))?.join(path))
    }
}

fn port_is_free(port: u16) -> bool {
    let taken_here = PORTS_TAKEN.lock().map(|g| g.as_ref().is_some_and(|s| s.contains(&port))).unwrap_or(false);
    !taken_here && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn reserve_port(port: u16) {
    if let Ok(mut guard) = PORTS_TAKEN.lock() {
        guard.get_or_insert_with(HashSet::new).insert(port);
    }
}

fn release_port(port: u16) {
    if let Ok(mut guard) = PORTS_TAKEN.lock() {
        if let Some(set) = guard.as_mut() {
            set.remove(&port);
        }
    }
}

/// A random port in [`PORT_RANGE`] that nothing listens on and this process has not handed out.
fn pick_free_port() -> Result<u16, ClusterError> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let port = rng.gen_range(PORT_RANGE);
        if port_is_free(port) {
            reserve_port(port);
            return Ok(port);
        }
    }
    Err(ClusterError::NoFreePort)
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let mut bytes = vec![];
        if f.seek(SeekFrom::Start(offset)).is_ok() && f.read_to_end(&mut bytes).is_ok() {
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

fn command_output(out: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(err.trim());
    }
    format!("{} ({})", text, out.status)
}

/// Percent-encodes a database name for the path of a URL.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_database_names() {
        assert_eq!(encode_path_segment("ferrite_test"), "ferrite_test");
        assert_eq!(encode_path_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn binaries_error_is_one_clear_line() {
        let msg = ClusterError::BinariesNotFound(String::new()).to_string();
        assert!(!msg.contains('\n'));
        assert!(msg.contains("apt-get install postgresql"));
        assert!(msg.contains("FERRITE_PG_BIN"));
    }
}

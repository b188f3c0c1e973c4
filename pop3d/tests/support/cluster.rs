//! A throwaway PostgreSQL cluster for the database store's tests: `initdb`
//! in a temporary directory, the server on a free loopback port, stopped
//! and removed on drop.
//!
//! PostgreSQL refuses to run as root; as root (as CI runs) the cluster
//! belongs to the `postgres` system user if there is one, else `nobody`,
//! and its programs run as that user (`Command::uid`). The binaries are
//! found in /usr/lib/postgresql/<newest>/bin, else on PATH.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A running throwaway cluster; stopped and removed on drop.
pub(crate) struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    owner: Option<(u32, u32)>,
    pub(crate) port: u16,
    server: Option<Child>,
}

/// The directory with `initdb` and `postgres`: the newest
/// /usr/lib/postgresql/*/bin, else the one on PATH.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        .expect("PostgreSQL server binaries (initdb, postgres): install postgresql")
}

/// The uid and gid of a system user from /etc/passwd.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

impl Cluster {
    /// initdb and start a cluster.
    pub(crate) fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pop3d-pg-")
            .tempdir()
            .unwrap();
        let owner = if rustix::process::geteuid().is_root() {
            let owner = system_user("postgres")
                .or_else(|| system_user("nobody"))
                .expect("a postgres or nobody user to run PostgreSQL as");
            std::os::unix::fs::chown(dir.path(), Some(owner.0), Some(owner.1)).unwrap();
            Some(owner)
        } else {
            None
        };
        let mut cluster = Self {
            bin,
            dir,
            owner,
            port: free_port(),
            server: None,
        };
        let out = cluster
            .command("initdb")
            .args([
                "--auth=trust",
                "--username=pop3",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(cluster.data())
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.resume();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A PostgreSQL program, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// The connection URL of the cluster's `postgres` database.
    pub(crate) fn url(&self) -> String {
        format!("postgres://pop3@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again, after [`stop`](Self::stop)) on the same
    /// port, and waits until it takes connections.
    pub(crate) fn resume(&mut self) {
        assert!(self.server.is_none());
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(self.dir.path().join("server.log"), Some(uid), Some(gid))
                .unwrap();
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=32MB",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server at once (immediate shutdown: what a crash of the
    /// database looks like to its clients).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL with the cluster's own `psql`; its unaligned, tuples-only output.
    pub(crate) fn sql(&self, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url())
            .args(["-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The data directory's path (for diagnostics).
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

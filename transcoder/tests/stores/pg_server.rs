//! A real PostgreSQL server for one test: initdb once per test binary into a template,
//! then a copy of it per server on its own loopback port, stopped (immediately) when
//! dropped. Shared by the transcoder's store suites and the CLI's multi-process tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Debian's PostgreSQL 15 server binaries (`postgresql`, installed by
/// `scripts/install-deps.sh`).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server of one test, on a loopback port, stopped (immediately) when
/// dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
}

/// Runs `cmd` as the `postgres` user when we are root (`initdb` and the server refuse
/// to run as root).
fn as_postgres(cmd: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", cmd]);
        c
    } else {
        Command::new(cmd)
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // `/proc/self` belongs to the effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn chown_to_postgres(path: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {}", path.display());
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the server of `dir/data` on `port` (its socket in `dir`); whether it started.
fn pg_ctl_start(dir: &Path, port: u16) -> bool {
    let data = dir.join("data");
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
        dir.display()
    );
    as_postgres(&format!("{PG_BIN}/pg_ctl"))
        .args(["-w", "-t", "60", "-D"])
        .arg(&data)
        .arg("-l")
        .arg(data.join("log"))
        .args(["-o", &opts, "start"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A freshly initialised data directory, made once per test binary.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, data) = TEMPLATE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("kura-pg-template-")
            .tempdir_in("/var/tmp")
            .unwrap();
        chown_to_postgres(dir.path());
        let data = dir.path().join("data");
        let mut initdb = as_postgres(&format!("{PG_BIN}/initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data);
        run(initdb, "initdb");
        (dir, data)
    });
    data
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    /// Starts a server on a copy of the template.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kura-pg-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let data = dir.path().join("data");
        run(
            {
                let mut c = Command::new("cp");
                c.arg("-a").arg(template()).arg(&data);
                c
            },
            "copy the template",
        );
        chown_to_postgres(dir.path());
        // A port taken between choosing and binding fails the start: try another.
        for _ in 0..5 {
            let port = free_port();
            if pg_ctl_start(dir.path(), port) {
                return PgServer { dir, port };
            }
        }
        panic!("postgres did not start: see {}", data.join("log").display());
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URL a store connects to.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .args(["-D"])
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

//! A real PostgreSQL server for one test: initdb once into a template kept in /var/tmp
//! (shared by test binaries and runs), then a copy of it per server on its own loopback
//! port, stopped (immediately) when dropped. Shared by the transcoder's store suites and the CLI's multi-process tests.
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

/// Where the initialised data directory every server is copied from is kept, across
/// test binaries and runs (`initdb` takes seconds; a copy a fraction of one). Named by
/// what makes it: a different PostgreSQL or initdb call gets another.
const TEMPLATE: &str = "/var/tmp/kura-pg-template-15-trust-utf8";

/// The template data directory, made by the first test that needs it: `initdb` into a
/// directory of its own, then renamed into place, so concurrent test binaries never see
/// a half-made one (the loser of a race removes its copy and uses the winner's).
fn template() -> &'static Path {
    static MADE: OnceLock<PathBuf> = OnceLock::new();
    MADE.get_or_init(|| {
        let data = Path::new(TEMPLATE).join("data");
        if data.join("PG_VERSION").is_file() {
            return data;
        }
        let dir = tempfile::Builder::new()
            .prefix("kura-pg-initdb-")
            .tempdir_in("/var/tmp")
            .unwrap();
        chown_to_postgres(dir.path());
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
            .arg(dir.path().join("data"));
        run(initdb, "initdb");
        let made = dir.keep();
        if std::fs::rename(&made, TEMPLATE).is_err() {
            // Another test binary put its template there first.
            let _ = std::fs::remove_dir_all(&made);
        }
        assert!(
            data.join("PG_VERSION").is_file(),
            "no template at {TEMPLATE}"
        );
        data
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory the `postgres` user owns.
fn server_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("kura-pg-")
        .tempdir_in("/var/tmp")
        .unwrap();
    chown_to_postgres(dir.path());
    dir
}

/// Appends `conf` (lines of `postgresql.conf`) to the data directory's config.
fn configure(data: &Path, conf: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    writeln!(f, "\n{conf}").unwrap();
}

impl PgServer {
    /// Starts a server on a copy of the template.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a server on a copy of the template with `conf` added to its config.
    pub fn start_with(conf: &str) -> Self {
        let dir = server_dir();
        let data = dir.path().join("data");
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(template()).arg(&data);
        run(cp, "copy the template");
        configure(&data, conf);
        chown_to_postgres(dir.path());
        Self::launch(dir)
    }

    /// A streaming standby of `primary` (a base backup of it, `standby.signal` and its
    /// connection written by `pg_basebackup -R`), with `conf` added to its config.
    pub fn start_standby_of(primary: &PgServer, conf: &str) -> Self {
        let dir = server_dir();
        let data = dir.path().join("data");
        let mut backup = as_postgres(&format!("{PG_BIN}/pg_basebackup"));
        backup
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", "postgres", "-X", "stream", "-R", "-D"])
            .arg(&data);
        run(backup, "pg_basebackup");
        configure(&data, conf);
        Self::launch(dir)
    }

    /// Starts the server of `dir` on a free port.
    fn launch(dir: tempfile::TempDir) -> Self {
        // A port taken between choosing and binding fails the start: try another.
        for _ in 0..5 {
            let port = free_port();
            if pg_ctl_start(dir.path(), port) {
                return PgServer { dir, port };
            }
        }
        panic!(
            "postgres did not start: see {}",
            dir.path().join("data/log").display()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str], what: &str) {
        let mut c = as_postgres(&format!("{PG_BIN}/pg_ctl"));
        c.arg("-D").arg(self.data()).args(args);
        run(c, what);
    }

    /// Stops it as a crash would (`pg_ctl stop -m immediate`: no shutdown checkpoint).
    pub fn stop_immediately(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"], "pg_ctl stop");
    }

    /// Stops it cleanly.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"], "pg_ctl stop");
    }

    /// Starts it again on its port.
    pub fn restart(&self) {
        assert!(pg_ctl_start(self.dir.path(), self.port), "restart");
    }

    /// Promotes a standby to primary (a new timeline), waiting until it accepts writes.
    pub fn promote(&self) {
        self.pg_ctl(&["-w", "promote"], "pg_ctl promote");
    }

    /// The URL a store connects to.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL of a primary that may move between `servers`: each is tried in turn and
    /// only one that accepts writes is kept (what an operator gives coordinators for a
    /// primary with standbys).
    pub fn url_of_any(servers: &[&PgServer]) -> String {
        let hosts: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!(
            "postgres://postgres@{}/postgres?target_session_attrs=read-write&connect_timeout=2",
            hosts.join(",")
        )
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

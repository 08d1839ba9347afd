//! Shared harness for multi-process tests: runs `kura` subcommands as real child
//! processes on free loopback ports, waits for `GET /health`, kills them with SIGKILL,
//! restarts them with the same arguments (same data directory), and cleans up on drop.
//!
//! Each process's stdout and stderr go to one log file (appended across restarts, with a
//! header per start). The log is printed when a [`KuraProcess`] is dropped without a clean
//! [`KuraProcess::stop`] — a panic or an early `?` return — so a failing test shows what
//! the server said.

// Each test binary uses only part of the harness.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kura_cluster::client::NodeClient;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// The cluster secret test nodes are started with (32 characters).
pub const SECRET: &str = "kura-test-secret-0123456789abcde";
const _: () = assert!(SECRET.len() == 32);

/// How long a process may take from spawn to answering `GET /health`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`KuraProcess::stop`] waits after SIGTERM before it sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Times a start is retried with a new port when the picked one was taken meanwhile.
const PORT_RETRIES: usize = 5;

/// Lines of the log printed when a process is dropped without a clean stop.
const LOG_TAIL_LINES: usize = 400;

/// The `kura` binary under test.
pub fn kura_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kura"))
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A `kura` subcommand running as a child process.
pub struct KuraProcess {
    name: String,
    args: Vec<OsString>,
    addr: SocketAddr,
    child: Option<Child>,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
    starts: u32,
    clean: bool,
}

impl KuraProcess {
    /// Spawns `kura <args> --listen 127.0.0.1:<free port>` and waits until it answers
    /// `GET /health`. `name` labels its log. `KURA_*` variables of the test's own
    /// environment are not passed on, so only `args` configure it; `NO_COLOR` keeps the log
    /// plain text.
    pub async fn start<I, S>(name: &str, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let log_dir = tempfile::Builder::new()
            .prefix(&format!("kura-{name}-log-"))
            .tempdir()?;
        let mut p = Self {
            name: name.to_string(),
            args: args.into_iter().map(Into::into).collect(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            log_path: log_dir.path().join(format!("{name}.log")),
            _log_dir: log_dir,
            starts: 0,
            clean: false,
        };
        p.spawn_until_healthy().await?;
        Ok(p)
    }

    /// Starts the process again with the same arguments (so the same data directory) on a
    /// new free port, after a [`kill`](Self::kill), and waits until it is healthy.
    pub async fn restart(&mut self) -> Result<()> {
        if self.is_running()? {
            bail!("{}: restart while still running; kill it first", self.name);
        }
        self.spawn_until_healthy().await
    }

    /// Sends SIGKILL and reaps the process. Returns its exit status.
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        let pid = self
            .pid()
            .with_context(|| format!("{}: not running", self.name))?;
        signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
            .with_context(|| format!("{}: SIGKILL to pid {pid}", self.name))?;
        self.reap(None).await
    }

    /// Stops the process cleanly (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]) and marks
    /// the run as clean, so the log is not printed on drop.
    pub async fn stop(mut self) -> Result<ExitStatus> {
        let pid = self
            .pid()
            .with_context(|| format!("{}: not running", self.name))?;
        signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
            .with_context(|| format!("{}: SIGTERM to pid {pid}", self.name))?;
        let status = match self.reap(Some(STOP_TIMEOUT)).await {
            Ok(s) => s,
            Err(_) => {
                eprintln!(
                    "{}: no exit {STOP_TIMEOUT:?} after SIGTERM; killing",
                    self.name
                );
                self.kill().await?
            }
        };
        self.clean = true;
        Ok(status)
    }

    /// Marks the run as clean without stopping it: the log is not printed on drop.
    pub fn mark_clean(&mut self) {
        self.clean = true;
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the child is alive (not exited).
    pub fn is_running(&mut self) -> Result<bool> {
        match self.child.as_mut() {
            None => Ok(false),
            Some(c) => Ok(c.try_wait()?.is_none()),
        }
    }

    /// The address it listens on (changes on every restart).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many times it has been started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Path of the combined stdout/stderr log of every start.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Prints the last `lines` lines of the log to stderr.
    pub fn print_log_tail(&self, lines: usize) {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let from = all.len().saturating_sub(lines);
        eprintln!(
            "----- {} log ({}, last {} of {} lines) -----",
            self.name,
            self.log_path.display(),
            all.len() - from,
            all.len()
        );
        for line in &all[from..] {
            eprintln!("{line}");
        }
        eprintln!("----- end of {} log -----", self.name);
    }

    fn open_log(&self) -> Result<File> {
        Ok(OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?)
    }

    async fn spawn_until_healthy(&mut self) -> Result<()> {
        let mut last_err = None;
        for _ in 0..PORT_RETRIES {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            match self.spawn_on(addr).await {
                Ok(()) => return Ok(()),
                Err(StartError::PortTaken(e)) => last_err = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no free port")))
    }

    async fn spawn_on(&mut self, addr: SocketAddr) -> Result<(), StartError> {
        self.starts += 1;
        let mut log = self.open_log()?;
        let log_start = log.metadata().map_err(anyhow::Error::from)?.len();
        writeln!(
            log,
            "===== {} start #{} on {addr} =====",
            self.name, self.starts
        )
        .map_err(anyhow::Error::from)?;
        let mut cmd = Command::new(kura_bin());
        cmd.args(&self.args)
            .arg("--listen")
            .arg(addr.to_string())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(anyhow::Error::from)?)
            .stderr(log);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KURA_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", kura_bin().display()))?;
        self.child = Some(child);
        self.addr = addr;

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(anyhow::Error::from)?;
        let health = format!("http://{addr}/health");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().transpose())
                .transpose()
                .map_err(anyhow::Error::from)?
            {
                self.child = None;
                let this_start = self.log_since(log_start);
                let e = anyhow::anyhow!(
                    "{} exited during startup ({status}) on {addr}:\n{this_start}",
                    self.name
                );
                if this_start.contains("cannot listen") || this_start.contains("in use") {
                    return Err(StartError::PortTaken(e));
                }
                return Err(StartError::Other(e));
            }
            if let Ok(r) = http.get(&health).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let _ = self.kill().await;
                return Err(StartError::Other(anyhow::anyhow!(
                    "{} did not answer {health} within {STARTUP_TIMEOUT:?}",
                    self.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let log = std::fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(&log[(offset as usize).min(log.len())..]).into_owned()
    }

    /// Waits (without blocking the runtime) until the child exits; `None` waits forever.
    async fn reap(&mut self, timeout: Option<Duration>) -> Result<ExitStatus> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("{}: not running", self.name))?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                bail!("{}: still running after {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for KuraProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.clean {
            eprintln!(
                "{}: dropped without a clean stop (test failed?); its output follows",
                self.name
            );
            self.print_log_tail(LOG_TAIL_LINES);
        }
    }
}

enum StartError {
    /// The port picked was taken before the child bound it: retry on another.
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

// ---- Storage nodes ----

/// Arguments of `kura node` (without `--listen`, which [`KuraProcess`] adds): the given
/// data directory and node id, zone `z1`, [`SECRET`], background scrub off.
pub fn node_args(data: &Path, node_id: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["node", "--data"].map(OsString::from).into();
    args.push(data.as_os_str().to_owned());
    for a in [
        "--node-id",
        node_id,
        "--zone",
        "z1",
        "--cluster-secret",
        SECRET,
        "--scrub-bytes-per-sec",
        "0",
    ] {
        args.push(a.into());
    }
    args
}

/// Starts `kura node` on `data` (see [`node_args`]).
pub async fn start_node(data: &Path, node_id: &str) -> Result<KuraProcess> {
    KuraProcess::start(node_id, node_args(data, node_id)).await
}

/// A client for a node started by this harness (valid until its next restart).
pub fn node_client(node: &KuraProcess) -> Result<NodeClient> {
    Ok(NodeClient::new(&node.url(), SECRET)?)
}

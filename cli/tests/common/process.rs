//! [`KuraProcess`]: a `kura` subcommand run as a real child process on a free loopback
//! port, waited for until it answers `GET /health` (or logs a line), paused, killed with
//! SIGKILL, restarted with the same arguments (same data directory), and cleaned up on
//! drop; and helpers for looking at processes through `/proc`.
//!
//! Each process's stdout and stderr go to one log file (appended across restarts, with a
//! header per start). The log is printed when a [`KuraProcess`] is dropped without a clean
//! [`KuraProcess::stop`] — a panic or an early `?` return — so a failing test shows what
//! the server said.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// How long a process may take from spawn to answering `GET /health`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`KuraProcess::stop`] waits after SIGTERM before it sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Times a start is retried with a new port when the picked one was taken meanwhile.
const PORT_RETRIES: usize = 5;

/// How long [`KuraProcess::restart_on_same_port`] retries while the port is taken.
pub const SAME_PORT_RETRY_FOR: Duration = Duration::from_secs(10);

/// Lines of the log printed when a process is dropped without a clean stop.
pub(super) const LOG_TAIL_LINES: usize = 400;

/// The `kura` binary under test.
pub fn kura_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kura"))
}

/// Runs the `kura` CLI with `args` (without the test's `KURA_*` environment), for at
/// most `timeout`: its exit status, stdout and stderr.
pub async fn kura_cli(args: &[&str], timeout: Duration) -> Result<(ExitStatus, String, String)> {
    let mut cmd = tokio::process::Command::new(kura_bin());
    cmd.args(args).env("NO_COLOR", "1").kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KURA_") {
            cmd.env_remove(key);
        }
    }
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("kura {args:?} ran over {timeout:?}"))??;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
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
    ready: Readiness,
    /// Runs inside this network namespace, listening on this address of it.
    netns: Option<(String, std::net::IpAddr)>,
}

/// When a started process counts as up.
#[derive(Clone, Debug)]
enum Readiness {
    /// It was given `--listen 127.0.0.1:<port>` and answers `GET /health` there.
    Health,
    /// It serves no HTTP (a worker): its log of this start contains this text.
    LogLine(String),
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
        Self::start_with(name, args, Readiness::Health).await
    }

    /// Spawns `kura <args>` for a subcommand that serves no HTTP (e.g. `kura worker`):
    /// no `--listen` is added, and it counts as started once its log shows `ready_line`
    /// (within [`STARTUP_TIMEOUT`]). [`addr`](Self::addr) stays `127.0.0.1:0`.
    pub async fn start_unlistened<I, S>(name: &str, args: I, ready_line: &str) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self::start_with(name, args, Readiness::LogLine(ready_line.to_string())).await
    }

    /// [`start`](Self::start) inside network namespace `netns` (through `ip netns exec`),
    /// listening on `ip` there (see `common::netns`).
    pub async fn start_in_netns<I, S>(
        name: &str,
        args: I,
        netns: &str,
        ip: std::net::IpAddr,
    ) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self::start_full(name, args, Readiness::Health, Some((netns.to_string(), ip))).await
    }

    async fn start_with<I, S>(name: &str, args: I, ready: Readiness) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self::start_full(name, args, ready, None).await
    }

    async fn start_full<I, S>(
        name: &str,
        args: I,
        ready: Readiness,
        netns: Option<(String, std::net::IpAddr)>,
    ) -> Result<Self>
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
            ready,
            netns,
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

    /// Starts the process again on the address it had (same arguments, same data
    /// directory), after a [`kill`](Self::kill), and waits until it is healthy. For
    /// processes whose address others were configured with (a node in a gateway's map).
    /// While the old socket's port is still held (e.g. by a process that inherited it),
    /// the start is retried for up to [`SAME_PORT_RETRY_FOR`].
    pub async fn restart_on_same_port(&mut self) -> Result<()> {
        if self.is_running()? {
            bail!("{}: restart while still running; kill it first", self.name);
        }
        ensure!(
            matches!(self.ready, Readiness::Health),
            "{}: listens on no port",
            self.name
        );
        let addr = self.addr;
        let deadline = Instant::now() + SAME_PORT_RETRY_FOR;
        loop {
            match self.spawn_on(Some(addr)).await {
                Ok(()) => return Ok(()),
                Err(StartError::PortTaken(e)) if Instant::now() < deadline => {
                    eprintln!("{}: {addr} still taken, retrying: {e:#}", self.name);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(StartError::PortTaken(e) | StartError::Other(e)) => return Err(e),
            }
        }
    }

    /// Sends SIGSTOP: the process hangs (its sockets still accept connections, nothing
    /// answers) until [`resume`](Self::resume).
    pub fn pause(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Sends SIGCONT after a [`pause`](Self::pause).
    pub fn resume(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    pub(super) fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{}: not running", self.name))?;
        signal::kill(Pid::from_raw(pid as i32), sig)
            .with_context(|| format!("{}: {sig} to pid {pid}", self.name))
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

    /// The label given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on (changes on every [`restart`](Self::restart), kept by
    /// [`restart_on_same_port`](Self::restart_on_same_port)).
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
        if let Readiness::LogLine(_) = self.ready {
            return self.spawn_on(None).await.map_err(|e| match e {
                StartError::PortTaken(e) | StartError::Other(e) => e,
            });
        }
        let mut last_err = None;
        for _ in 0..PORT_RETRIES {
            let ip = self
                .netns
                .as_ref()
                .map_or([127, 0, 0, 1].into(), |(_, ip)| *ip);
            let addr = SocketAddr::new(ip, free_port()?);
            match self.spawn_on(Some(addr)).await {
                Ok(()) => return Ok(()),
                Err(StartError::PortTaken(e)) => last_err = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no free port")))
    }

    /// Spawns the child (with `--listen addr` when given) and waits until it is ready.
    async fn spawn_on(&mut self, addr: Option<SocketAddr>) -> Result<(), StartError> {
        self.starts += 1;
        let mut log = self.open_log()?;
        let log_start = log.metadata().map_err(anyhow::Error::from)?.len();
        let on = addr.map(|a| format!(" on {a}")).unwrap_or_default();
        writeln!(log, "===== {} start #{}{on} =====", self.name, self.starts)
            .map_err(anyhow::Error::from)?;
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the command in place: the child's pid is kura's.
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(kura_bin());
                c
            }
            None => Command::new(kura_bin()),
        };
        cmd.args(&self.args);
        if let Some(addr) = addr {
            cmd.arg("--listen").arg(addr.to_string());
        }
        cmd.env("NO_COLOR", "1")
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
        if let Some(addr) = addr {
            self.addr = addr;
        }

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(anyhow::Error::from)?;
        let health = format!("http://{}/health", self.addr);
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
                    "{} exited during startup ({status}){on}:\n{this_start}",
                    self.name
                );
                if this_start.contains("cannot listen") || this_start.contains("in use") {
                    return Err(StartError::PortTaken(e));
                }
                return Err(StartError::Other(e));
            }
            match &self.ready {
                Readiness::Health => {
                    // Healthy, and it is ours: a process of a concurrent test may have
                    // taken the port between `free_port` and our bind, and would answer
                    // the health check while ours fails to bind. Every service logs
                    // "... listening addr=<addr>" once it has bound.
                    let bound = format!("addr={}", self.addr);
                    if let Ok(r) = http.get(&health).send().await {
                        if r.status().is_success() && self.log_since(log_start).contains(&bound) {
                            return Ok(());
                        }
                    }
                }
                Readiness::LogLine(line) => {
                    if self.log_since(log_start).contains(line.as_str()) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = self.kill().await;
                let what = match &self.ready {
                    Readiness::Health => format!("answer {health}"),
                    Readiness::LogLine(line) => format!("log {line:?}"),
                };
                return Err(StartError::Other(anyhow::anyhow!(
                    "{} did not {what} within {STARTUP_TIMEOUT:?}",
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
    pub(super) async fn reap(&mut self, timeout: Option<Duration>) -> Result<ExitStatus> {
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

/// SIGKILLs `p` and checks that our signal is what ended it.
pub async fn sigkill(p: &mut KuraProcess) -> Result<()> {
    use std::os::unix::process::ExitStatusExt;
    let status = p.kill().await?;
    ensure!(
        status.signal() == Some(Signal::SIGKILL as i32),
        "{} was ended by {status}, not by our SIGKILL",
        p.name()
    );
    Ok(())
}

/// Ids of the live processes whose parent is `pid` (from `/proc`).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// Stops every process cleanly (SIGTERM; one already ended by the test is skipped) and
/// checks that each exited with success.
pub async fn stop_all(procs: impl IntoIterator<Item = KuraProcess>) -> Result<()> {
    let mut failed = Vec::new();
    for mut p in procs {
        let name = p.name().to_string();
        if p.pid().is_none() {
            p.mark_clean();
            continue;
        }
        let status = p.stop().await?;
        if !status.success() {
            failed.push(format!("{name}: {status}"));
        }
    }
    ensure!(failed.is_empty(), "unclean exits: {}", failed.join(", "));
    Ok(())
}

//! Shared harness for multi-process tests: runs `kura` subcommands as real child
//! processes on free loopback ports, waits for `GET /health`, kills them with SIGKILL,
//! restarts them with the same arguments (same data directory), and cleans up on drop.
//!
//! [`Cluster`] runs three nodes in three zones and a gateway in front of them, and
//! [`GatewayClient`] talks to that gateway's public API. [`Transcoding`] adds a
//! `kura coordinator` and `kura worker`s to such a cluster; the `ffmpeg`/`ffprobe`
//! helpers at the end check the HLS it produces.
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

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use kura_cluster::client::NodeClient;
use kura_cluster::map::{ClusterMap, NodeEntry, NodeState};
use kura_cluster::ring::DEFAULT_WEIGHT;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use reqwest::{header, Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The cluster secret test nodes are started with (32 characters).
pub const SECRET: &str = "kura-test-secret-0123456789abcde";
const _: () = assert!(SECRET.len() == 32);

/// How long a process may take from spawn to answering `GET /health`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`KuraProcess::stop`] waits after SIGTERM before it sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Times a start is retried with a new port when the picked one was taken meanwhile.
const PORT_RETRIES: usize = 5;

/// How long [`KuraProcess::restart_on_same_port`] retries while the port is taken.
pub const SAME_PORT_RETRY_FOR: Duration = Duration::from_secs(10);

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
    ready: Readiness,
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

    async fn start_with<I, S>(name: &str, args: I, ready: Readiness) -> Result<Self>
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

    fn signal(&self, sig: Signal) -> Result<()> {
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
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
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
        let mut cmd = Command::new(kura_bin());
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
                    if let Ok(r) = http.get(&health).send().await {
                        if r.status().is_success() {
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
    node_args_in_zone(data, node_id, "z1")
}

/// [`node_args`] with the given zone.
pub fn node_args_in_zone(data: &Path, node_id: &str, zone: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["node", "--data"].map(OsString::from).into();
    args.push(data.as_os_str().to_owned());
    for a in [
        "--node-id",
        node_id,
        "--zone",
        zone,
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

// ---- A cluster: three nodes and a gateway ----

/// The API key test gateways accept.
pub const API_KEY: &str = "kura-test-api-key-0123456789abcdef";

/// The zones of a [`Cluster`]'s nodes, one node each.
pub const ZONES: [&str; 3] = ["z1", "z2", "z3"];

/// Timeout of one request of a [`GatewayClient`]: generous for 100 MiB on a loaded
/// machine, yet a hang fails the test instead of blocking it forever.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Three `kura node` processes (`n1`..`n3` in zones `z1`..`z3`, data directories in one
/// temporary directory, scrub off) and a `kura gateway` whose map lists them by address.
/// A node restarted with [`Cluster::restart_node`] keeps its port, as the gateway's map
/// is fixed.
pub struct Cluster {
    /// The nodes, `nodes[i]` is `n{i+1}` in `ZONES[i]`.
    pub nodes: Vec<KuraProcess>,
    /// The gateway.
    pub gateway: KuraProcess,
    data: tempfile::TempDir,
}

impl Cluster {
    /// Starts the nodes, then the gateway with `--nodes n1=ADDR@z1,...`, [`API_KEY`] and
    /// [`SECRET`].
    pub async fn start() -> Result<Self> {
        Self::start_with_gateway_args(&[]).await
    }

    /// [`start`](Self::start), with `extra` appended to the gateway's arguments (e.g.
    /// `["--coordinator", URL]`).
    pub async fn start_with_gateway_args(extra: &[&str]) -> Result<Self> {
        let data = tempfile::Builder::new().prefix("kura-cluster-").tempdir()?;
        let nodes = futures::future::try_join_all(ZONES.iter().enumerate().map(|(i, zone)| {
            let id = Self::node_id(i);
            let dir = data.path().join(&id);
            async move { KuraProcess::start(&id, node_args_in_zone(&dir, &id, zone)).await }
        }))
        .await?;
        let spec = nodes
            .iter()
            .zip(ZONES)
            .map(|(n, zone)| format!("{}={}@{zone}", n.name(), n.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut gateway_args = vec![
            "gateway",
            "--nodes",
            &spec,
            "--api-keys",
            API_KEY,
            "--cluster-secret",
            SECRET,
        ];
        gateway_args.extend_from_slice(extra);
        let gateway = KuraProcess::start("gateway", gateway_args).await?;
        Ok(Self {
            nodes,
            gateway,
            data,
        })
    }

    /// Id of node `i` (`n1`, `n2`, `n3`).
    pub fn node_id(i: usize) -> String {
        format!("n{}", i + 1)
    }

    /// Data directory of node `i`.
    pub fn node_data(&self, i: usize) -> PathBuf {
        self.data.path().join(Self::node_id(i))
    }

    /// Path of chunk `id_hex` in node `i`'s data directory, if it is stored as a file
    /// (chunks over 64 KiB): `DATA/chunks/<first 2 hex>/<id hex>`.
    pub fn chunk_file(&self, i: usize, id_hex: &str) -> PathBuf {
        self.node_data(i)
            .join("chunks")
            .join(&id_hex[..2])
            .join(id_hex)
    }

    /// The cluster map the gateway was started with (for computing placement).
    pub fn map(&self) -> ClusterMap {
        ClusterMap {
            epoch: 1,
            nodes: self
                .nodes
                .iter()
                .zip(ZONES)
                .map(|(n, zone)| NodeEntry {
                    id: n.name().to_string(),
                    addr: n.addr().to_string(),
                    zone: zone.to_string(),
                    weight: DEFAULT_WEIGHT,
                    state: NodeState::Active,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Index of the node with id `id`.
    pub fn node_index(&self, id: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name() == id)
            .with_context(|| format!("no node {id}"))
    }

    /// A client for the gateway.
    pub fn client(&self) -> Result<GatewayClient> {
        GatewayClient::new(self.gateway.addr())
    }

    /// A cluster-secret client for node `i`.
    pub fn node_client(&self, i: usize) -> Result<NodeClient> {
        node_client(&self.nodes[i])
    }

    /// SIGKILLs node `i` and checks that our signal is what ended it.
    pub async fn kill_node(&mut self, i: usize) -> Result<()> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.nodes[i].kill().await?;
        ensure!(
            status.signal() == Some(Signal::SIGKILL as i32),
            "{} was ended by {status}, not by our SIGKILL",
            Self::node_id(i)
        );
        Ok(())
    }

    /// Restarts node `i` on its old port (same data directory).
    pub async fn restart_node(&mut self, i: usize) -> Result<()> {
        self.nodes[i].restart_on_same_port().await
    }

    /// `/metrics` of node `i`.
    pub async fn node_metrics(&self, i: usize) -> Result<String> {
        let resp = reqwest::get(format!("{}/metrics", self.nodes[i].url())).await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "node metrics: {}",
            resp.status()
        );
        Ok(resp.text().await?)
    }

    /// Stops every process cleanly (SIGTERM) and checks that each exited with success.
    pub async fn stop(self) -> Result<()> {
        let Self {
            nodes,
            gateway,
            data,
        } = self;
        let mut failed = Vec::new();
        for mut p in std::iter::once(gateway).chain(nodes) {
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
        drop(data);
        ensure!(failed.is_empty(), "unclean exits: {}", failed.join(", "));
        Ok(())
    }
}

// ---- The gateway's public API ----

/// The gateway's default chunk size.
pub const CHUNK: u64 = 4 * 1024 * 1024;

/// The seed of a randomised test: `GATEWAY_TEST_SEED` if set, else random; printed so
/// that a failure can be repeated.
pub fn test_seed() -> u64 {
    let seed = std::env::var("GATEWAY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("seed {seed} (GATEWAY_TEST_SEED repeats the data, sizes and choices)");
    seed
}

/// A header of `resp` as a string.
pub fn header_str(resp: &reqwest::Response, name: header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Checks a 201 answer against what was sent: bucket, key, size, blake3 ETag and
/// `ceil(size / 4 MiB)` chunks.
pub fn check_put_reply(bucket: &str, reply: &PutReply, key: &str, data: &[u8]) -> Result<()> {
    let want = PutReply {
        bucket: bucket.to_string(),
        key: key.to_string(),
        size: data.len() as u64,
        etag: blake3_hex(data),
        chunks: (data.len() as u64).div_ceil(CHUNK) as usize,
    };
    ensure!(
        *reply == want,
        "upload of {key} answered {reply:?}, expected {want:?}"
    );
    Ok(())
}

/// A successful upload's answer (201).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct PutReply {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub chunks: usize,
}

/// One object of a listing.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub content_type: Option<String>,
    pub last_modified_ms: u64,
}

/// One listing page.
#[derive(Clone, Debug, Deserialize)]
pub struct ListPage {
    pub bucket: String,
    pub prefix: String,
    pub objects: Vec<ListedObject>,
    pub next_after: Option<String>,
}

/// A client of a gateway's public API, presenting [`API_KEY`].
#[derive(Clone, Debug)]
pub struct GatewayClient {
    pub http: reqwest::Client,
    pub addr: SocketAddr,
    pub base: String,
}

impl GatewayClient {
    /// A client for the gateway at `addr` (request timeout [`CLIENT_TIMEOUT`]).
    pub fn new(addr: SocketAddr) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build()?,
            addr,
            base: format!("http://{addr}"),
        })
    }

    /// URL of an object; the key is percent-encoded segment by segment, keeping `/`.
    pub fn object_url(&self, bucket: &str, key: &str) -> String {
        let key: Vec<String> = key.split('/').map(encode_segment).collect();
        format!("{}/v1/o/{bucket}/{}", self.base, key.join("/"))
    }

    /// A request on an object, with the API key.
    pub fn object(&self, method: Method, bucket: &str, key: &str) -> RequestBuilder {
        self.http
            .request(method, self.object_url(bucket, key))
            .bearer_auth(API_KEY)
    }

    /// Uploads `body` and expects 201 with a well-formed answer.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<PutReply> {
        let resp = self
            .object(Method::PUT, bucket, key)
            .body(body)
            .send()
            .await?;
        expect_created(resp).await
    }

    /// The whole object, `None` on 404; any other status is an error.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        let resp = self.object(Method::GET, bucket, key).send().await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(resp.bytes().await?)),
            StatusCode::NOT_FOUND => Ok(None),
            s => bail!("GET {bucket}/{key}: {s}: {}", resp.text().await?),
        }
    }

    /// One listing page.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        let mut q = vec![("prefix", prefix.to_string()), ("limit", limit.to_string())];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        let resp = self
            .http
            .get(format!("{}/v1/o/{bucket}", self.base))
            .bearer_auth(API_KEY)
            .query(&q)
            .send()
            .await?;
        let status = resp.status();
        ensure!(
            status == StatusCode::OK,
            "listing {bucket} prefix {prefix:?} after {after:?}: {status}: {}",
            resp.text().await?
        );
        Ok(resp.json().await?)
    }

    /// Every object under `prefix`, following `next_after` with pages of `limit`; checks
    /// that pages respect the limit and keys come in strictly increasing order.
    pub async fn list_all(
        &self,
        bucket: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<ListedObject>> {
        let mut all: Vec<ListedObject> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..100_000 {
            let page = self
                .list_page(bucket, prefix, after.as_deref(), limit)
                .await?;
            ensure!(
                page.objects.len() <= limit,
                "page of {} objects over the limit {limit}",
                page.objects.len()
            );
            ensure!(
                page.bucket == bucket && page.prefix == prefix,
                "page echoes {page:?}"
            );
            for o in page.objects {
                ensure!(
                    o.key.starts_with(prefix),
                    "{} listed under {prefix:?}",
                    o.key
                );
                if let Some(last) = all.last() {
                    ensure!(
                        last.key < o.key,
                        "listing out of order: {} then {}",
                        last.key,
                        o.key
                    );
                }
                all.push(o);
            }
            match page.next_after {
                Some(next) => {
                    ensure!(
                        after.as_ref().is_none_or(|a| *a < next),
                        "next_after did not advance: {after:?} then {next:?}"
                    );
                    after = Some(next);
                }
                None => return Ok(all),
            }
        }
        bail!("listing did not end")
    }

    /// `/metrics` (no API key needed).
    pub async fn metrics(&self) -> Result<String> {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "metrics: {}",
            resp.status()
        );
        Ok(resp.text().await?)
    }
}

/// Checks a 201 upload answer and parses it.
pub async fn expect_created(resp: reqwest::Response) -> Result<PutReply> {
    let status = resp.status();
    let url = resp.url().to_string();
    if status != StatusCode::CREATED {
        bail!(
            "PUT {url}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(
        ct.starts_with("application/json"),
        "PUT {url}: 201 with Content-Type {ct:?}"
    );
    Ok(resp.json().await?)
}

fn encode_segment(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of a Prometheus sample `name` (summed over its label sets), or `None` if
/// the text has no such sample.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some(' ') => rest.trim(),
            Some('{') => rest.rsplit_once('}').map_or("", |(_, v)| v.trim()),
            _ => continue,
        };
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// `len` pseudo-random bytes from `seed` (splitmix64: fast even unoptimised, and the
/// same seed gives the same bytes).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut state = seed;
    for piece in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        piece.copy_from_slice(&z.to_le_bytes()[..piece.len()]);
    }
    out
}

/// blake3 hex of `data` (the gateway's ETag, unquoted).
pub fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

// ---- Raw HTTP/1.1, for what a client library would normalise or refuse to send ----

/// An answer read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` verbatim on a new connection to `addr` and reads the answer until
/// the server closes (send `Connection: close`), within 30 s.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> Result<RawResponse> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(request).await?;
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .context("raw HTTP exchange timed out")??;
    parse_raw_response(&buf)
}

fn parse_raw_response(buf: &[u8]) -> Result<RawResponse> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| {
            format!(
                "no complete header in {} bytes: {:?}",
                buf.len(),
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            )
        })?;
    let head = std::str::from_utf8(&buf[..end]).context("non-UTF-8 response header")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(RawResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

// ---- Transcoding: a coordinator and workers beside a cluster ----

/// The sample videos (`shared/media/video`).
pub const VIDEO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/media/video");

/// The broken media files (`shared/media/broken`).
pub const BROKEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/media/broken");

/// Text a worker logs once it is about to lease work.
pub const WORKER_READY: &str = "worker started";

/// The files of `dir`, sorted by name.
pub fn files_in(dir: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {dir}"))? {
        let p = e?.path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    ensure!(!out.is_empty(), "no files in {dir}");
    Ok(out)
}

/// A [`Cluster`] whose gateway forwards `/v1/jobs*` to a `kura coordinator`, and
/// `kura worker` processes leasing from that coordinator. Every data directory (the
/// coordinator's, each worker's `--workdir`) is in one temporary directory.
pub struct Transcoding {
    /// Nodes and gateway (started with `--coordinator`).
    pub cluster: Cluster,
    /// The coordinator; restart it with `restart_on_same_port`, as the gateway and the
    /// workers know its address.
    pub coordinator: KuraProcess,
    /// Workers by id, in the order started.
    pub workers: Vec<KuraProcess>,
    dir: tempfile::TempDir,
}

impl Transcoding {
    /// Starts a coordinator with `--lease-ms lease_ms`, then the cluster with its gateway
    /// pointing at it. No worker yet: see [`start_worker`](Self::start_worker).
    pub async fn start(lease_ms: u64) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kura-transcoding-")
            .tempdir()?;
        let data = dir.path().join("coordinator");
        let lease = lease_ms.to_string();
        let mut args: Vec<OsString> = vec!["coordinator".into(), "--data".into()];
        args.push(data.into_os_string());
        for a in [
            "--api-keys",
            API_KEY,
            "--cluster-secret",
            SECRET,
            "--lease-ms",
            &lease,
        ] {
            args.push(a.into());
        }
        let coordinator = KuraProcess::start("coordinator", args).await?;
        let cluster =
            Cluster::start_with_gateway_args(&["--coordinator", &coordinator.url()]).await?;
        Ok(Self {
            cluster,
            coordinator,
            workers: Vec::new(),
            dir,
        })
    }

    /// The temporary directory every process of this setup keeps its data in; tests may
    /// put their own files there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `kura worker --worker-id id --slots 1` with its workdir under
    /// [`dir`](Self::dir), and waits until it logs [`WORKER_READY`].
    pub async fn start_worker(&mut self, id: &str) -> Result<()> {
        ensure!(
            self.workers.iter().all(|w| w.name() != id),
            "worker {id} already exists"
        );
        let workdir = self.dir.path().join("workers").join(id);
        let coordinator = self.coordinator.url();
        let gateway = self.cluster.gateway.url();
        let mut args: Vec<OsString> = Vec::new();
        for a in [
            "worker",
            "--coordinator",
            &coordinator,
            "--gateway",
            &gateway,
            "--api-key",
            API_KEY,
            "--cluster-secret",
            SECRET,
            "--slots",
            "1",
            "--worker-id",
            id,
            "--workdir",
        ] {
            args.push(a.into());
        }
        args.push(workdir.into_os_string());
        let w = KuraProcess::start_unlistened(id, args, WORKER_READY).await?;
        self.workers.push(w);
        Ok(())
    }

    /// The worker with id `id`.
    pub fn worker(&mut self, id: &str) -> Result<&mut KuraProcess> {
        self.workers
            .iter_mut()
            .find(|w| w.name() == id)
            .with_context(|| format!("no worker {id}"))
    }

    /// A client for the gateway.
    pub fn client(&self) -> Result<GatewayClient> {
        self.cluster.client()
    }

    /// Stops workers, coordinator, gateway and nodes cleanly and checks that each
    /// exited with success (processes the test killed are skipped).
    pub async fn stop(self) -> Result<()> {
        let Self {
            cluster,
            coordinator,
            workers,
            dir,
        } = self;
        let mut failed = Vec::new();
        for mut p in workers.into_iter().chain(std::iter::once(coordinator)) {
            let name = p.name().to_string();
            if !p.is_running()? {
                p.mark_clean();
                continue;
            }
            let status = p.stop().await?;
            if !status.success() {
                failed.push(format!("{name}: {status}"));
            }
        }
        cluster.stop().await?;
        drop(dir);
        ensure!(failed.is_empty(), "unclean exits: {}", failed.join(", "));
        Ok(())
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

/// A job's state is one it never leaves.
pub fn job_is_final(job: &serde_json::Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// The job's tasks (`task_details` of `GET /v1/jobs/{id}?tasks=true`).
pub fn tasks_of(job: &serde_json::Value) -> Vec<serde_json::Value> {
    job["task_details"].as_array().cloned().unwrap_or_default()
}

/// A job and its tasks in a few lines, for messages.
pub fn job_summary(job: &serde_json::Value) -> String {
    let tasks: Vec<String> = tasks_of(job)
        .iter()
        .map(|t| {
            format!(
                "{} {} {} attempts={} lease={} error={}",
                t["id"].as_str().unwrap_or("?"),
                t["spec"]["kind"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?"),
                t["attempts"],
                t["lease"],
                t["last_error"]
            )
        })
        .collect();
    format!(
        "job {} ({}) {} progress {} attempts {} error {}\n  {}",
        job["id"].as_str().unwrap_or("?"),
        job["source"].as_str().unwrap_or("?"),
        job["state"].as_str().unwrap_or("?"),
        job["progress"],
        job["attempts"],
        job["error"],
        tasks.join("\n  ")
    )
}

impl GatewayClient {
    /// Uploads the file at `path` as `bucket/key` (`?transcode=PROFILE` when given) and
    /// expects 201; returns the answer (with `job` when a job was submitted).
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        transcode: Option<&str>,
    ) -> Result<serde_json::Value> {
        let body = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let mut req = self.object(Method::PUT, bucket, key).body(body);
        if let Some(p) = transcode {
            req = req.query(&[("transcode", p)]);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(
            status == StatusCode::CREATED,
            "PUT {bucket}/{key}: {status}: {text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text)?;
        if transcode.is_some() {
            ensure!(
                v["job"]["id"].is_string(),
                "PUT {bucket}/{key}?transcode submitted no job: {text}"
            );
        }
        Ok(v)
    }

    /// `POST /v1/jobs {source, profile}`: expects 202; returns the job.
    pub async fn submit_job(&self, source: &str, profile: &str) -> Result<serde_json::Value> {
        let resp = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({ "source": source, "profile": profile }))
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(
            status == StatusCode::ACCEPTED,
            "submitting {source}: {status}: {text}"
        );
        Ok(serde_json::from_str(&text)?)
    }

    /// `GET /v1/jobs/{id}?tasks=true`.
    pub async fn job(&self, id: &str) -> Result<serde_json::Value> {
        let resp = self
            .http
            .get(format!("{}/v1/jobs/{id}?tasks=true", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(status == StatusCode::OK, "GET job {id}: {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// Polls job `id` (with its tasks) until it is final, for at most `timeout`.
    /// Failed polls (a coordinator being restarted) are retried until then.
    pub async fn wait_job(&self, id: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = match self.job(id).await {
                Ok(job) if job_is_final(&job) => return Ok(job),
                Ok(job) => job_summary(&job),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("job {id} not final after {timeout:?}; last seen: {seen}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for every job in `ids` (see [`wait_job`](Self::wait_job)), all within
    /// `timeout`.
    pub async fn wait_jobs(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        for id in ids {
            let left = deadline.saturating_duration_since(Instant::now());
            out.push(self.wait_job(id, left.max(Duration::from_secs(1))).await?);
        }
        Ok(out)
    }

    /// A signed URL for `object` (covering its directory), valid for an hour.
    pub async fn signed_url(&self, object: &str) -> Result<String> {
        let resp = self
            .http
            .post(format!("{}/v1/sign", self.base))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({ "object": object, "expires_in": 3600 }))
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(
            status == StatusCode::OK,
            "signing {object}: {status}: {text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let path = v["path"]
            .as_str()
            .with_context(|| format!("no path in {text}"))?;
        Ok(format!("{}{path}", self.base))
    }

    /// The object `bucket/key` (`bucket/key` as one string), which must exist.
    pub async fn get_object(&self, object: &str) -> Result<Bytes> {
        let (bucket, key) = object
            .split_once('/')
            .with_context(|| format!("{object:?} is not bucket/key"))?;
        self.get(bucket, key)
            .await?
            .with_context(|| format!("{object} does not exist"))
    }
}

// ---- ffmpeg / ffprobe ----

/// Longest an `ffmpeg`/`ffprobe` run may take before the test fails.
pub const MEDIA_TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// How far an HLS rendition's duration may be from its source's, seconds.
pub const DURATION_TOLERANCE_S: f64 = 0.2;

/// Heights of the `default` profile's ladder (Apple's HLS authoring ladder).
pub const DEFAULT_LADDER_HEIGHTS: [u64; 6] = [234, 360, 432, 540, 720, 1080];

/// Output of a finished `ffmpeg`/`ffprobe`.
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args` (e.g. `ffprobe`) within [`MEDIA_TOOL_TIMEOUT`].
pub async fn run_tool(program: &str, args: &[&str]) -> Result<ToolOutput> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let out = tokio::time::timeout(MEDIA_TOOL_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("{program} {args:?} ran over {MEDIA_TOOL_TIMEOUT:?}"))??;
    Ok(ToolOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `ffprobe -v error <args> -of json <input>`, parsed; fails on a non-zero exit.
pub async fn ffprobe_json(input: &str, args: &[&str]) -> Result<serde_json::Value> {
    let mut all = vec!["-v", "error"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-of", "json", input]);
    let out = run_tool("ffprobe", &all).await?;
    ensure!(
        out.status.success(),
        "ffprobe {all:?}: {}: {}",
        out.status,
        out.stderr
    );
    serde_json::from_str(&out.stdout).with_context(|| format!("ffprobe output {}", out.stdout))
}

/// `format.duration` of `input` (a file or URL), seconds.
pub async fn media_duration(input: &str) -> Result<f64> {
    let v = ffprobe_json(input, &["-show_entries", "format=duration"]).await?;
    v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .with_context(|| format!("no duration for {input}: {v}"))
}

/// What the tests need to know about a source file.
#[derive(Clone, Debug)]
pub struct SourceFacts {
    /// Container duration, seconds.
    pub duration_s: f64,
    /// Display height (the width for a source rotated by 90° or 270°).
    pub height: u64,
    /// Whether it has an audio stream.
    pub has_audio: bool,
}

/// Probes a local source file with `ffprobe`.
pub async fn source_facts(path: &Path) -> Result<SourceFacts> {
    let input = path.to_string_lossy();
    let v = ffprobe_json(
        &input,
        &[
            "-show_entries",
            "format=duration:stream=codec_type,width,height:stream_side_data=rotation",
        ],
    )
    .await?;
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .with_context(|| format!("{input} has no video stream: {v}"))?;
    let (w, h) = (
        video["width"].as_u64().unwrap_or(0),
        video["height"].as_u64().unwrap_or(0),
    );
    let rotation = video["side_data_list"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["rotation"].as_i64())
        .unwrap_or(0);
    Ok(SourceFacts {
        duration_s: v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .with_context(|| format!("{input} has no duration: {v}"))?,
        height: if rotation.rem_euclid(180) == 90 { w } else { h },
        has_audio: streams.iter().any(|s| s["codec_type"] == "audio"),
    })
}

/// Decodes `input` with `ffmpeg -v error -nostats -i input -map 0:v -map 0:a? -f null -`
/// (every video stream: for a master playlist, every rendition) and fails unless it
/// exits 0 with nothing on stderr.
pub async fn ffmpeg_decodes_cleanly(input: &str) -> Result<()> {
    let out = run_tool(
        "ffmpeg",
        &[
            "-nostdin", "-v", "error", "-nostats", "-i", input, "-map", "0:v", "-map", "0:a?",
            "-f", "null", "-",
        ],
    )
    .await?;
    ensure!(
        out.status.success() && out.stderr.trim().is_empty(),
        "ffmpeg decoding {input}: {}; stderr: {}",
        out.status,
        out.stderr
    );
    Ok(())
}

/// The first video frame of `input`: `(key_frame, pict_type)`.
pub async fn first_video_frame(input: &str) -> Result<(i64, String)> {
    let v = ffprobe_json(
        input,
        &[
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
            "-show_frames",
            "-show_entries",
            "frame=key_frame,pict_type",
        ],
    )
    .await?;
    let f = v["frames"]
        .get(0)
        .with_context(|| format!("no video frame in {input}: {v}"))?;
    Ok((
        f["key_frame"].as_i64().unwrap_or(-1),
        f["pict_type"].as_str().unwrap_or("?").to_string(),
    ))
}

/// What [`check_hls`] found.
#[derive(Clone, Debug)]
pub struct HlsReport {
    /// Signed URL of the master playlist.
    pub master_url: String,
    /// Heights of the video renditions, as the master lists them.
    pub heights: Vec<u64>,
    /// Media playlist URIs per rendition (video renditions by name, then `audio`),
    /// with their segment URIs.
    pub segments: Vec<(String, Vec<String>)>,
    /// Duration of each rendition (as ffprobe reads its media playlist).
    pub durations: Vec<(String, f64)>,
}

/// Checks the HLS outputs of the succeeded `job` (made from the local file `source`)
/// through the gateway, reading it via a signed URL as a player would:
/// - the master playlist parses; it lists exactly the ladder's rungs not above the
///   source's height (the smallest rung for a smaller source), matching the job's
///   `outputs.renditions`; it has the audio group iff the source has audio;
/// - `ffmpeg` decodes every rendition with nothing on stderr;
/// - every rendition's duration (ffprobe on its media playlist) is the source's
///   ±[`DURATION_TOLERANCE_S`];
/// - every segment of every video rendition starts with a key frame (an I frame);
/// - the poster and thumbnail strip exist and are JPEG.
pub async fn check_hls(
    gw: &GatewayClient,
    job: &serde_json::Value,
    source: &Path,
) -> Result<HlsReport> {
    let name = source.display();
    let facts = source_facts(source).await?;
    ensure!(job["state"] == "succeeded", "{name}: {}", job_summary(job));
    let outputs = &job["outputs"];
    let master = outputs["master"]
        .as_str()
        .with_context(|| format!("{name}: no master in {outputs}"))?;
    let master_url = gw.signed_url(master).await?;
    let body = reqwest::get(&master_url).await?;
    ensure!(
        body.status() == StatusCode::OK,
        "{name}: GET {master_url}: {}",
        body.status()
    );
    let body = body.bytes().await?;
    let pl = m3u8_rs::parse_master_playlist_res(&body).map_err(|e| {
        anyhow::anyhow!(
            "{name}: master playlist does not parse: {e:?}\n{}",
            String::from_utf8_lossy(&body)
        )
    })?;
    let heights: Vec<u64> = pl
        .variants
        .iter()
        .map(|v| v.resolution.as_ref().map_or(0, |r| r.height))
        .collect();
    let mut expected: Vec<u64> = DEFAULT_LADDER_HEIGHTS
        .iter()
        .copied()
        .filter(|h| *h <= facts.height)
        .collect();
    if expected.is_empty() {
        expected.push(facts.height & !1);
    }
    ensure!(
        heights == expected,
        "{name} ({} lines): master lists heights {heights:?}, expected {expected:?}",
        facts.height
    );
    let listed: Vec<u64> = outputs["renditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["height"].as_u64().unwrap_or(0))
        .collect();
    ensure!(
        listed == heights,
        "{name}: outputs.renditions heights {listed:?}, master {heights:?}"
    );
    let audio_groups: Vec<&m3u8_rs::AlternativeMedia> = pl
        .alternatives
        .iter()
        .filter(|a| a.media_type == m3u8_rs::AlternativeMediaType::Audio)
        .collect();
    if facts.has_audio {
        ensure!(
            audio_groups.len() == 1,
            "{name} has audio, master has {} audio renditions",
            audio_groups.len()
        );
        let group = &audio_groups[0].group_id;
        ensure!(
            pl.variants.iter().all(|v| v.audio.as_ref() == Some(group)),
            "{name}: a variant does not use audio group {group}"
        );
        ensure!(
            outputs["audio"].is_string(),
            "{name}: no audio in outputs {outputs}"
        );
    } else {
        ensure!(
            audio_groups.is_empty() && pl.variants.iter().all(|v| v.audio.is_none()),
            "{name} has no audio, master has an audio group"
        );
    }

    ffmpeg_decodes_cleanly(&master_url)
        .await
        .with_context(|| format!("{name}"))?;

    let base = reqwest::Url::parse(&master_url)?;
    let mut playlists: Vec<(String, bool, String)> = pl
        .variants
        .iter()
        .map(|v| (v.uri.clone(), true, v.uri.clone()))
        .collect();
    for a in &audio_groups {
        let uri = a
            .uri
            .clone()
            .with_context(|| format!("{name}: audio rendition without URI"))?;
        playlists.push((uri.clone(), false, uri));
    }
    let mut segments = Vec::new();
    let mut durations = Vec::new();
    for (uri, is_video, label) in playlists {
        let url = base.join(&uri)?;
        let body = reqwest::get(url.clone()).await?;
        ensure!(
            body.status() == StatusCode::OK,
            "{name}: GET {url}: {}",
            body.status()
        );
        let body = body.bytes().await?;
        let media = m3u8_rs::parse_media_playlist_res(&body)
            .map_err(|e| anyhow::anyhow!("{name}: {label} does not parse: {e:?}"))?;
        ensure!(media.end_list, "{name}: {label} has no EXT-X-ENDLIST");
        ensure!(
            !media.segments.is_empty(),
            "{name}: {label} has no segments"
        );
        let duration = media_duration(url.as_str()).await?;
        ensure!(
            (duration - facts.duration_s).abs() <= DURATION_TOLERANCE_S,
            "{name}: {label} lasts {duration:.3} s, the source {:.3} s",
            facts.duration_s
        );
        durations.push((label.clone(), duration));
        let mut seg_uris = Vec::new();
        for s in &media.segments {
            let seg_url = url.join(&s.uri)?;
            if is_video {
                let (key, pict) = first_video_frame(seg_url.as_str()).await?;
                ensure!(
                    key == 1 && pict == "I",
                    "{name}: {label} segment {} starts with key_frame={key} pict_type={pict}",
                    s.uri
                );
            }
            seg_uris.push(s.uri.clone());
        }
        segments.push((label, seg_uris));
    }

    for (what, file) in [("poster", "poster.jpg"), ("thumbnails", "thumbs.jpg")] {
        let key = outputs[what]
            .as_str()
            .with_context(|| format!("{name}: no {what} in {outputs}"))?;
        ensure!(key.ends_with(file), "{name}: {what} is {key}, not a {file}");
        let bytes = gw.get_object(key).await?;
        ensure!(
            bytes.starts_with(&[0xFF, 0xD8, 0xFF]) && bytes.ends_with(&[0xFF, 0xD9]),
            "{name}: {key} ({} bytes) is not a JPEG",
            bytes.len()
        );
    }
    Ok(HlsReport {
        master_url,
        heights,
        segments,
        durations,
    })
}

// ---- Cluster operations: membership, rebalance, repair, GC, hot content ----

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;
use kura_cluster::ChunkId;

/// The admin token of gateways started by [`OpsCluster`].
pub const ADMIN_TOKEN: &str = "kura-test-admin-token-0123456789";

/// How long one `kura admin` run may take before the test fails (`--watch` follows a
/// whole rebalance).
pub const ADMIN_CLI_TIMEOUT: Duration = Duration::from_secs(300);

/// What a finished `kura admin ...` printed.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A cluster for operations tests: `kura node` processes `n1`, `n2`, … each in its own
/// zone (`z1`, `z2`, …) and all started with the same extra arguments, and a
/// `kura gateway` with the admin API on ([`ADMIN_TOKEN`]). Nodes can be started later
/// ([`start_node`](Self::start_node)) and then added with `kura admin node add`.
pub struct OpsCluster {
    /// The node processes, in the order started (`nodes[i]` has id `n{i+1}`).
    pub nodes: Vec<KuraProcess>,
    /// `zones[i]` is the zone of `nodes[i]`.
    pub zones: Vec<String>,
    /// The gateway.
    pub gateway: KuraProcess,
    node_extra: Vec<String>,
    data: tempfile::TempDir,
}

impl OpsCluster {
    /// Starts `nodes` nodes (ids `n1..`, zones `z1..`, data directories in one temporary
    /// directory, scrub off, `node_extra` appended to each node's arguments), then the
    /// gateway listing them with [`API_KEY`], [`SECRET`], `--admin-token` [`ADMIN_TOKEN`]
    /// and `gateway_extra`.
    pub async fn start(nodes: usize, node_extra: &[&str], gateway_extra: &[&str]) -> Result<Self> {
        let data = tempfile::Builder::new().prefix("kura-ops-").tempdir()?;
        let node_extra: Vec<String> = node_extra.iter().map(|s| s.to_string()).collect();
        let zones: Vec<String> = (1..=nodes).map(|i| format!("z{i}")).collect();
        let procs = futures::future::try_join_all(zones.iter().enumerate().map(|(i, zone)| {
            let id = format!("n{}", i + 1);
            let args = Self::args_of(data.path(), &id, zone, &node_extra);
            async move { KuraProcess::start(&id, args).await }
        }))
        .await?;
        let spec = procs
            .iter()
            .zip(&zones)
            .map(|(n, zone)| format!("{}={}@{zone}", n.name(), n.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut gateway_args = vec![
            "gateway",
            "--nodes",
            &spec,
            "--api-keys",
            API_KEY,
            "--cluster-secret",
            SECRET,
            "--admin-token",
            ADMIN_TOKEN,
        ];
        gateway_args.extend_from_slice(gateway_extra);
        let gateway = KuraProcess::start("gateway", gateway_args).await?;
        Ok(Self {
            nodes: procs,
            zones,
            gateway,
            node_extra,
            data,
        })
    }

    fn args_of(dir: &Path, id: &str, zone: &str, extra: &[String]) -> Vec<OsString> {
        let mut args = node_args_in_zone(&dir.join(id), id, zone);
        args.extend(extra.iter().map(OsString::from));
        args
    }

    /// Starts one more node process (`n{len+1}` in `zone`, same extra arguments), not yet
    /// in the cluster map; returns its index.
    pub async fn start_node(&mut self, zone: &str) -> Result<usize> {
        let id = format!("n{}", self.nodes.len() + 1);
        let args = Self::args_of(self.data.path(), &id, zone, &self.node_extra);
        self.nodes.push(KuraProcess::start(&id, args).await?);
        self.zones.push(zone.to_string());
        Ok(self.nodes.len() - 1)
    }

    /// Id of node `i`.
    pub fn id(&self, i: usize) -> &str {
        self.nodes[i].name()
    }

    /// Data directory of node `i`.
    pub fn node_data(&self, i: usize) -> PathBuf {
        self.data.path().join(self.id(i))
    }

    /// Indices of the nodes whose process is running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].pid().is_some())
            .collect()
    }

    /// A client of the gateway's public API.
    pub fn client(&self) -> Result<GatewayClient> {
        GatewayClient::new(self.gateway.addr())
    }

    /// A cluster-secret client of node `i`.
    pub fn node_client(&self, i: usize) -> Result<NodeClient> {
        node_client(&self.nodes[i])
    }

    /// Runs `kura admin --gateway URL --admin-token T <args>` (within
    /// [`ADMIN_CLI_TIMEOUT`]) and returns what it printed, whatever its exit status.
    pub async fn admin(&self, args: &[&str]) -> Result<CliOutput> {
        let mut cmd = tokio::process::Command::new(kura_bin());
        cmd.arg("admin")
            .arg("--gateway")
            .arg(self.gateway.url())
            .arg("--admin-token")
            .arg(ADMIN_TOKEN)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KURA_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().context("spawning kura admin")?;
        let out = tokio::time::timeout(ADMIN_CLI_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("kura admin {args:?} ran over {ADMIN_CLI_TIMEOUT:?}"))??;
        Ok(CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// [`admin`](Self::admin), which must exit 0; returns its stdout.
    pub async fn admin_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.admin(args).await?;
        ensure!(
            out.status.success(),
            "kura admin {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        Ok(out.stdout)
    }

    /// `GET /v1/admin/cluster` of the gateway.
    pub async fn admin_cluster(&self) -> Result<serde_json::Value> {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/admin/cluster", self.gateway.url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(status == StatusCode::OK, "admin cluster: {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// The cluster map node `i` holds.
    pub async fn node_map(&self, i: usize) -> Result<ClusterMap> {
        Ok(self.node_client(i)?.cluster_map().await?)
    }

    /// `GET /v1/rebalance` of node `i`.
    pub async fn rebalance(&self, i: usize) -> Result<serde_json::Value> {
        Ok(self.node_client(i)?.rebalance().await?)
    }

    /// Waits until every running node holds a map of epoch ≥ `epoch` and reports a
    /// finished, idle pass for it (`done_epoch ≥ epoch`, not `running`); returns each
    /// running node's progress, by index.
    pub async fn wait_rebalanced(
        &self,
        epoch: u64,
        timeout: Duration,
    ) -> Result<Vec<(usize, serde_json::Value)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = Vec::new();
            let mut pending = Vec::new();
            for i in self.running() {
                let (map, p) = match (self.node_map(i).await, self.rebalance(i).await) {
                    (Ok(m), Ok(p)) => (m, p),
                    (m, p) => {
                        pending.push(format!("{}: {:?} {:?}", self.id(i), m.err(), p.err()));
                        continue;
                    }
                };
                let done = p["done_epoch"].as_u64().unwrap_or(0);
                let running = p["running"].as_bool().unwrap_or(true);
                if map.epoch < epoch || done < epoch || running {
                    pending.push(format!(
                        "{}: map epoch {} progress {p}",
                        self.id(i),
                        map.epoch
                    ));
                }
                all.push((i, p));
            }
            if pending.is_empty() {
                return Ok(all);
            }
            if Instant::now() > deadline {
                bail!(
                    "rebalance to epoch {epoch} not done after {timeout:?}:\n  {}",
                    pending.join("\n  ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every chunk node `i` holds, with its size (walks the paginated listing).
    pub async fn chunks_of(&self, i: usize) -> Result<BTreeMap<ChunkId, u64>> {
        let client = self.node_client(i)?;
        let mut out = BTreeMap::new();
        let mut after: Option<ChunkId> = None;
        loop {
            let page = client.list_chunks(after.as_ref(), 1000).await?;
            out.extend(page.chunks.iter().map(|c| (c.id, c.size)));
            match page.next_after {
                Some(a) => after = Some(a),
                None => return Ok(out),
            }
        }
    }

    /// `GET /v1/status` of node `i`.
    pub async fn status(&self, i: usize) -> Result<kura_cluster::client::NodeStatus> {
        Ok(self.node_client(i)?.status().await?)
    }

    /// SIGKILLs node `i` and checks that our signal ended it.
    pub async fn kill_node(&mut self, i: usize) -> Result<()> {
        sigkill(&mut self.nodes[i]).await
    }

    /// Restarts node `i` on its old port (same arguments and data directory).
    pub async fn restart_node(&mut self, i: usize) -> Result<()> {
        self.nodes[i].restart_on_same_port().await
    }

    /// Stops node `i` cleanly (SIGTERM) and checks that it exited with success.
    pub async fn stop_node(&mut self, i: usize) -> Result<()> {
        let p = &mut self.nodes[i];
        p.signal(Signal::SIGTERM)?;
        let status = match p.reap(Some(STOP_TIMEOUT)).await {
            Ok(s) => s,
            Err(_) => p.kill().await?,
        };
        if !status.success() {
            p.print_log_tail(LOG_TAIL_LINES);
        }
        p.mark_clean();
        ensure!(status.success(), "{}: {status} after SIGTERM", p.name());
        Ok(())
    }

    /// Stops the gateway and every running node cleanly; checks that each exited with
    /// success.
    pub async fn stop(self) -> Result<()> {
        let Self {
            nodes,
            gateway,
            data,
            ..
        } = self;
        let mut failed = Vec::new();
        for mut p in std::iter::once(gateway).chain(nodes) {
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
        drop(data);
        ensure!(failed.is_empty(), "unclean exits: {}", failed.join(", "));
        Ok(())
    }
}

/// Ids of the owners (replica set, in placement order) of a chunk under `map`.
pub fn chunk_owners(map: &ClusterMap, id: &ChunkId) -> Vec<String> {
    owners_on(&kura_cluster::ring::Ring::new(map), map, id.as_bytes())
}

/// Ids of the owners of placement key `key` (a chunk id's bytes, or
/// `kura_cluster::ring::record_key`) on `ring`, built from `map` (building a ring once
/// for many keys is much cheaper than [`chunk_owners`] per key).
pub fn owners_on(ring: &kura_cluster::ring::Ring, map: &ClusterMap, key: &[u8; 32]) -> Vec<String> {
    ring.placement(key, map.replicas)
        .0
        .into_iter()
        .map(|e| e.id.clone())
        .collect()
}

/// Bytes `start..end` of `random_bytes(seed, _)`, without generating what comes before
/// (splitmix64 is seekable: piece `k` depends only on `seed + (k + 1) · γ`).
pub fn random_range(seed: u64, start: u64, end: u64) -> Vec<u8> {
    if start >= end {
        return Vec::new();
    }
    let mut out = Vec::with_capacity((end - start) as usize);
    for k in start / 8..end.div_ceil(8) {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(k + 1));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let bytes = z.to_le_bytes();
        let piece_start = k * 8;
        let from = start.max(piece_start) - piece_start;
        let to = end.min(piece_start + 8) - piece_start;
        out.extend_from_slice(&bytes[from as usize..to as usize]);
    }
    out
}

/// An object of a test data set: its content is `random_bytes(seed, len)`, optionally
/// after a prefix copied from another object (to share that object's chunks).
#[derive(Clone, Debug)]
pub struct TestObject {
    pub key: String,
    pub seed: u64,
    pub len: u64,
    /// blake3 hex of the content (the ETag).
    pub etag: String,
    /// The content's chunks at [`CHUNK`] bytes each: (id, size).
    pub chunks: Vec<(ChunkId, u64)>,
}

impl TestObject {
    /// Describes `key` with content `random_bytes(seed, len)` (computes hash and chunk
    /// ids, so this costs one pass over the bytes).
    pub fn new(key: &str, seed: u64, len: u64) -> Self {
        let data = random_bytes(seed, len as usize);
        Self {
            key: key.to_string(),
            seed,
            len,
            etag: blake3_hex(&data),
            chunks: data
                .chunks(CHUNK as usize)
                .map(|c| (ChunkId::of(c), c.len() as u64))
                .collect(),
        }
    }

    /// The content.
    pub fn data(&self) -> Vec<u8> {
        random_bytes(self.seed, self.len as usize)
    }

    /// Bytes `start..end` of the content.
    pub fn range(&self, start: u64, end: u64) -> Vec<u8> {
        random_range(self.seed, start, end.min(self.len))
    }
}

/// Objects `{prefix}{i:05}` of random sizes in `sizes` until their total reaches
/// `total` bytes (seeds drawn from `rng`).
pub fn data_set(
    rng: &mut impl rand::Rng,
    prefix: &str,
    total: u64,
    sizes: std::ops::RangeInclusive<u64>,
) -> Vec<TestObject> {
    let mut out: Vec<TestObject> = Vec::new();
    let mut sum = 0;
    while sum < total {
        let len = rng.random_range(sizes.clone()).min(total - sum).max(1);
        let key = format!("{prefix}{:05}", out.len());
        out.push(TestObject::new(&key, rng.random(), len));
        sum += len;
    }
    out
}

/// Uploads every object of `objects` to `bucket`, `concurrency` at a time, checking
/// each answer (size, ETag, chunk count).
pub async fn upload_all(
    gw: &GatewayClient,
    bucket: &str,
    objects: &[TestObject],
    concurrency: usize,
) -> Result<()> {
    futures::stream::iter(objects)
        .map(|o| async move {
            let data = o.data();
            let reply = gw
                .put(bucket, &o.key, data.clone())
                .await
                .with_context(|| format!("uploading {}", o.key))?;
            check_put_reply(bucket, &reply, &o.key, &data)
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<Result<()>>>()
        .await
        .into_iter()
        .collect()
}

/// Reads every object of `objects` back whole through the gateway, `concurrency` at a
/// time, and fails unless each has its length and ETag (blake3 of the bytes served).
pub async fn verify_all(
    gw: &GatewayClient,
    bucket: &str,
    objects: &[TestObject],
    concurrency: usize,
) -> Result<()> {
    let problems: Vec<String> = futures::stream::iter(objects)
        .map(|o| async move {
            match gw.get(bucket, &o.key).await {
                Ok(Some(b)) if b.len() as u64 == o.len && blake3_hex(&b) == o.etag => None,
                Ok(Some(b)) => Some(format!(
                    "{}: {} bytes hashing to {}, expected {} bytes hashing to {}",
                    o.key,
                    b.len(),
                    blake3_hex(&b),
                    o.len,
                    o.etag
                )),
                Ok(None) => Some(format!("{}: 404", o.key)),
                Err(e) => Some(format!("{}: {e:#}", o.key)),
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|p| async move { p })
        .collect()
        .await;
    ensure!(
        problems.is_empty(),
        "{} of {} objects do not read back:\n  {}",
        problems.len(),
        objects.len(),
        problems.join("\n  ")
    );
    Ok(())
}

/// What a [`Reader`] saw.
#[derive(Debug, Default)]
pub struct ReaderReport {
    /// Whole-object GETs answered 200 with the right bytes.
    pub whole_ok: u64,
    /// Range GETs answered 206 with the right bytes.
    pub ranges_ok: u64,
    /// Bytes received and checked.
    pub bytes: u64,
    /// Requests that failed (status, transport, short body).
    pub errors: u64,
    /// Responses whose bytes differed from what was uploaded.
    pub wrong: u64,
    /// The first problems, for the failure message.
    pub samples: Vec<String>,
}

impl ReaderReport {
    /// Fails unless there was no error and no wrong byte, and at least `min_reads` reads.
    pub fn check(&self, min_reads: u64) -> Result<()> {
        ensure!(
            self.errors == 0 && self.wrong == 0,
            "reader saw {} errors and {} wrong answers (of {} reads); first: {:#?}",
            self.errors,
            self.wrong,
            self.whole_ok + self.ranges_ok + self.errors + self.wrong,
            self.samples
        );
        ensure!(
            self.whole_ok + self.ranges_ok >= min_reads,
            "reader made only {} reads: {self:?}",
            self.whole_ok + self.ranges_ok
        );
        Ok(())
    }
}

/// Readers GETting random objects through a gateway until stopped: a quarter whole
/// (checked by length and blake3 against the ETag), the rest single ranges of up to
/// 256 KiB at random offsets (compared byte for byte with the regenerated content).
pub struct Reader {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<ReaderReport>>,
}

impl Reader {
    /// Starts `workers` reading tasks on `objects` of `bucket` (seeded from `seed`).
    pub fn start(
        gw: &GatewayClient,
        bucket: &str,
        objects: Arc<Vec<TestObject>>,
        workers: usize,
        seed: u64,
    ) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..workers as u64)
            .map(|w| {
                let (gw, bucket, objects, stop) = (
                    gw.clone(),
                    bucket.to_string(),
                    objects.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    use rand::{Rng, SeedableRng};
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (w << 32));
                    let mut r = ReaderReport::default();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let o = &objects[rng.random_range(0..objects.len())];
                        let range = if rng.random_bool(0.25) || o.len < 2 {
                            None
                        } else {
                            let start = rng.random_range(0..o.len - 1);
                            let len = rng.random_range(1..=(256 * 1024).min(o.len - start));
                            Some((start, start + len))
                        };
                        read_once(&gw, &bucket, o, range, &mut r).await;
                    }
                    r
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the readers and adds up what they saw.
    pub async fn finish(self) -> Result<ReaderReport> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = ReaderReport::default();
        for t in self.tasks {
            let r = t.await?;
            total.whole_ok += r.whole_ok;
            total.ranges_ok += r.ranges_ok;
            total.bytes += r.bytes;
            total.errors += r.errors;
            total.wrong += r.wrong;
            total.samples.extend(r.samples);
        }
        total.samples.truncate(20);
        Ok(total)
    }
}

async fn read_once(
    gw: &GatewayClient,
    bucket: &str,
    o: &TestObject,
    range: Option<(u64, u64)>,
    r: &mut ReaderReport,
) {
    let mut req = gw.object(Method::GET, bucket, &o.key);
    if let Some((s, e)) = range {
        req = req.header(header::RANGE, format!("bytes={s}-{}", e - 1));
    }
    let what = match range {
        Some((s, e)) => format!("{} bytes {s}..{e}", o.key),
        None => format!("{} whole", o.key),
    };
    let fail = |r: &mut ReaderReport, wrong: bool, msg: String| {
        if wrong {
            r.wrong += 1;
        } else {
            r.errors += 1;
        }
        if r.samples.len() < 10 {
            r.samples.push(msg);
        }
    };
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => return fail(r, false, format!("{what}: {e:#}")),
    };
    let status = resp.status();
    let want_status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if status != want_status {
        let text = resp.text().await.unwrap_or_default();
        return fail(r, false, format!("{what}: {status}: {text}"));
    }
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return fail(r, false, format!("{what}: body: {e:#}")),
    };
    match range {
        None => {
            if body.len() as u64 != o.len {
                fail(
                    r,
                    false,
                    format!("{what}: {} of {} bytes", body.len(), o.len),
                );
            } else if blake3_hex(&body) != o.etag {
                fail(
                    r,
                    true,
                    format!("{what}: content hashes to {}", blake3_hex(&body)),
                );
            } else {
                r.whole_ok += 1;
                r.bytes += body.len() as u64;
            }
        }
        Some((s, e)) => {
            if body.len() as u64 != e - s {
                fail(r, false, format!("{what}: {} bytes", body.len()));
            } else if body[..] != o.range(s, e)[..] {
                fail(r, true, format!("{what}: wrong bytes"));
            } else {
                r.ranges_ok += 1;
                r.bytes += body.len() as u64;
            }
        }
    }
}

/// Bytes of a test data set from `KURA_OPS_TEST_BYTES` (plain bytes, or with a `K`,
/// `M` or `G` suffix, powers of 1024, e.g. `512M`, `2GiB`), else `default`.
pub fn ops_test_bytes(default: u64) -> u64 {
    let Ok(raw) = std::env::var("KURA_OPS_TEST_BYTES") else {
        return default;
    };
    let v = raw.trim().to_ascii_uppercase();
    let v = v.trim_end_matches("IB").trim_end_matches('B');
    let (num, shift) = match v.chars().last() {
        Some('K') => (&v[..v.len() - 1], 10),
        Some('M') => (&v[..v.len() - 1], 20),
        Some('G') => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n << shift)
        .unwrap_or_else(|_| panic!("KURA_OPS_TEST_BYTES={raw:?} is not a byte count"))
}

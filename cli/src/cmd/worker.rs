//! `kura worker`: pull transcoding tasks and run them; and `kura media-exec`, the
//! sandboxed child a worker runs the FFmpeg work in.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kura_cluster::auth::Secret;
use kura_cluster::config::load_toml;
use kura_transcoder::worker::child::{DEFAULT_FILE_BYTES, DEFAULT_MEMORY_BYTES};
use kura_transcoder::worker::WorkerConfig;
use serde::Deserialize;

/// Flags of `kura worker`. Each also reads `KURA_<NAME>` and the TOML key `<name>`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// TOML config file (keys as the flags, in snake_case).
    #[arg(long, env = "KURA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Coordinator URL, or several comma-separated (coordinators sharing a PostgreSQL
    /// store): the worker moves to the next when one stops answering
    /// [default: http://127.0.0.1:8090].
    #[arg(long, env = "KURA_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Gateway URL [default: http://127.0.0.1:8080].
    #[arg(long, env = "KURA_GATEWAY")]
    pub gateway: Option<String>,
    /// API key for the gateway.
    #[arg(long, env = "KURA_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,
    /// Shared cluster secret (the coordinator's).
    #[arg(long, env = "KURA_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<Secret>,
    /// Tasks run at once [default: 1].
    #[arg(long, env = "KURA_SLOTS")]
    pub slots: Option<usize>,
    /// Extra slots for light tasks only (plans, posters, playlists, the first pass of
    /// a short clip), so a short upload plays without waiting behind long encodes
    /// [default: 1].
    #[arg(long, env = "KURA_EXPRESS_SLOTS")]
    pub express_slots: Option<usize>,
    /// Worker id [default: host-pid].
    #[arg(long, env = "KURA_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Directory for scratch space: the worker creates, empties and removes only its own
    /// `kura-worker-<id>/` inside it [default: $TMPDIR].
    #[arg(long, env = "KURA_WORKDIR")]
    pub workdir: Option<PathBuf>,
    /// Codec threads per task [default: cores / slots].
    #[arg(long, env = "KURA_THREADS_PER_TASK")]
    pub threads_per_task: Option<usize>,
    /// Memory limit of a media child in bytes [default: 3 GiB].
    #[arg(long, env = "KURA_MEMORY_BYTES")]
    pub memory_bytes: Option<u64>,
    /// Largest file a media child may write, in bytes [default: 2 GiB].
    #[arg(long, env = "KURA_FILE_BYTES")]
    pub file_bytes: Option<u64>,
}

/// The worker's TOML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFileConfig {
    coordinator: Option<String>,
    gateway: Option<String>,
    api_key: Option<Secret>,
    cluster_secret: Option<Secret>,
    slots: Option<usize>,
    express_slots: Option<usize>,
    worker_id: Option<String>,
    workdir: Option<PathBuf>,
    threads_per_task: Option<usize>,
    memory_bytes: Option<u64>,
    file_bytes: Option<u64>,
}

/// Express slots of a worker unless configured: one is enough for the light tasks of
/// many short uploads (each takes well under a second of CPU), and costs nothing idle.
pub const DEFAULT_EXPRESS_SLOTS: usize = 1;

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into())
}

impl WorkerArgs {
    /// Flags and environment over the config file over defaults.
    pub fn resolve(self) -> anyhow::Result<WorkerConfig> {
        let file: WorkerFileConfig = load_toml(self.config.as_deref())?;
        let slots = self.slots.or(file.slots).unwrap_or(1).max(1);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let worker_id = self
            .worker_id
            .or(file.worker_id)
            .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
        let workdir = self
            .workdir
            .or(file.workdir)
            .unwrap_or_else(std::env::temp_dir);
        Ok(WorkerConfig {
            coordinator: self
                .coordinator
                .or(file.coordinator)
                .unwrap_or_else(|| "http://127.0.0.1:8090".into()),
            gateway: self
                .gateway
                .or(file.gateway)
                .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            api_key: self
                .api_key
                .or(file.api_key)
                .context("--api-key (KURA_API_KEY, `api_key`) is required")?,
            cluster_secret: self
                .cluster_secret
                .or(file.cluster_secret)
                .context("--cluster-secret (KURA_CLUSTER_SECRET, `cluster_secret`) is required")?,
            slots,
            express_slots: self
                .express_slots
                .or(file.express_slots)
                .unwrap_or(DEFAULT_EXPRESS_SLOTS),
            worker_id,
            workdir,
            exec_program: std::env::current_exe().context("locating the kura binary")?,
            threads_per_task: self
                .threads_per_task
                .or(file.threads_per_task)
                .unwrap_or((cores / slots).max(1)),
            memory_bytes: self
                .memory_bytes
                .or(file.memory_bytes)
                .unwrap_or(DEFAULT_MEMORY_BYTES),
            file_bytes: self
                .file_bytes
                .or(file.file_bytes)
                .unwrap_or(DEFAULT_FILE_BYTES),
        })
    }
}

/// Runs the worker until Ctrl-C / SIGTERM.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    kura_transcoder::worker::run(config, super::shutdown_signal()).await?;
    Ok(())
}

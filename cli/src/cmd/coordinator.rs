//! `kura coordinator`: run the transcoding job coordinator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use kura_cluster::auth::Secret;
use kura_cluster::config::load_toml;
use kura_cluster::server::ServerSettings;
use kura_transcoder::coordinator::store::Store;
use kura_transcoder::coordinator::{CoordinatorConfig, JobStore, JOBS_DB};
use serde::Deserialize;

use super::server_args::ServerArgs;

/// Default coordinator listen address.
pub const DEFAULT_COORDINATOR_LISTEN: &str = "127.0.0.1:8090";

/// Flags of `kura coordinator`. Each also reads `KURA_<NAME>` and the TOML key `<name>`.
#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// TOML config file (keys as the flags, in snake_case).
    #[arg(long, env = "KURA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory of the embedded job store (one coordinator on this machine).
    #[arg(long, env = "KURA_DATA")]
    pub data: Option<PathBuf>,
    /// The PostgreSQL job store instead (`postgres://user:password@host:port/db`): run
    /// any number of coordinators over one database. A URL with a password belongs in
    /// KURA_STORE or the config file rather than on the command line.
    #[arg(long, env = "KURA_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// Listen address [default: 127.0.0.1:8090].
    #[arg(long, env = "KURA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Comma-separated API keys users present (the gateway's keys).
    #[arg(
        long,
        env = "KURA_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,
    /// Shared cluster secret, presented by workers.
    #[arg(long, env = "KURA_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<Secret>,
    /// Gateway URL, used to expand batches (`POST /v1/jobs/batch`).
    #[arg(long, env = "KURA_GATEWAY")]
    pub gateway: Option<String>,
    /// API key for that gateway.
    #[arg(long, env = "KURA_GATEWAY_API_KEY", hide_env_values = true)]
    pub gateway_api_key: Option<Secret>,
    /// Lease length in milliseconds [default: 30000].
    #[arg(long, env = "KURA_LEASE_MS")]
    pub lease_ms: Option<u64>,
    /// Key completion webhooks are signed with (HMAC-SHA256); without it jobs cannot ask
    /// for a webhook.
    #[arg(long, env = "KURA_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,
    /// Comma-separated networks (CIDR) webhooks may reach besides public addresses, e.g.
    /// `10.1.0.0/16` for an internal receiver [default: none: loopback, private,
    /// link-local and metadata addresses are refused].
    #[arg(long, env = "KURA_WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<ipnet::IpNet>,
    /// Days a job is kept after it ends (then deleted with its tasks; a batch when all
    /// its jobs are; outputs are objects and stay); 0 keeps jobs forever [default: 30].
    #[arg(long, env = "KURA_JOB_RETENTION_DAYS")]
    pub job_retention_days: Option<u64>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: Option<CoordinatorCommand>,
}

/// What `kura coordinator` does besides serving.
#[derive(Subcommand, Debug)]
pub enum CoordinatorCommand {
    /// Copy the job queue (every job with its tasks and state, batches, worker records,
    /// pending webhooks) from one store into another that holds no job yet, e.g. from
    /// the embedded store into PostgreSQL. Stop the coordinators first; start them on
    /// the new store after.
    Migrate(MigrateArgs),
}

/// Flags of `kura coordinator migrate`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The store the queue is in: a coordinator's data directory (its `--data`) or a
    /// postgres:// URL.
    #[arg(long)]
    pub from: String,
    /// The store it goes to (created if missing; must hold no job): a data directory
    /// or a postgres:// URL.
    #[arg(long)]
    pub to: String,
}

/// The coordinator's TOML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorFileConfig {
    data: Option<PathBuf>,
    store: Option<String>,
    listen: Option<SocketAddr>,
    api_keys: Option<Vec<Secret>>,
    cluster_secret: Option<Secret>,
    gateway: Option<String>,
    gateway_api_key: Option<Secret>,
    lease_ms: Option<u64>,
    webhook_secret: Option<Secret>,
    webhook_allow: Option<Vec<ipnet::IpNet>>,
    job_retention_days: Option<u64>,
    server: Option<ServerSettings>,
}

impl CoordinatorArgs {
    /// Flags and environment over the config file over defaults.
    pub fn resolve(self) -> anyhow::Result<CoordinatorConfig> {
        let file: CoordinatorFileConfig = load_toml(self.config.as_deref())?;
        let api_keys = if self.api_keys.is_empty() {
            file.api_keys.unwrap_or_default()
        } else {
            self.api_keys
        };
        Ok(CoordinatorConfig {
            store: job_store(self.store.or(file.store), self.data.or(file.data))?,
            listen: match self.listen.or(file.listen) {
                Some(a) => a,
                None => DEFAULT_COORDINATOR_LISTEN.parse()?,
            },
            api_keys,
            cluster_secret: self
                .cluster_secret
                .or(file.cluster_secret)
                .context("--cluster-secret (KURA_CLUSTER_SECRET, `cluster_secret`) is required")?,
            gateway: self.gateway.or(file.gateway),
            gateway_api_key: self.gateway_api_key.or(file.gateway_api_key),
            lease_ms: self
                .lease_ms
                .or(file.lease_ms)
                .unwrap_or(kura_transcoder::coordinator::store::LEASE_MS),
            webhook_secret: self.webhook_secret.or(file.webhook_secret),
            webhook_allow: if self.webhook_allow.is_empty() {
                file.webhook_allow.unwrap_or_default()
            } else {
                self.webhook_allow
            },
            job_retention: match self.job_retention_days.or(file.job_retention_days) {
                Some(days) => days
                    .checked_mul(24 * 3600)
                    .map(Duration::from_secs)
                    .context("--job-retention-days is too large")?,
                None => kura_transcoder::coordinator::DEFAULT_JOB_RETENTION,
            },
            server: self.server.resolve(file.server)?,
        })
    }
}

/// Where the jobs live: `--store` (PostgreSQL) or `--data` (embedded), not both.
fn job_store(store: Option<String>, data: Option<PathBuf>) -> anyhow::Result<JobStore> {
    match (store, data) {
        (Some(_), Some(_)) => anyhow::bail!(
            "--store and --data both given: the jobs live in one place (PostgreSQL with \
             --store, or the embedded store under --data)"
        ),
        (Some(url), None) if is_postgres(&url) => Ok(JobStore::Postgres(url)),
        (Some(_), None) => anyhow::bail!("--store must be a postgres:// URL"),
        (None, Some(dir)) => Ok(JobStore::Embedded(dir)),
        (None, None) => {
            anyhow::bail!("--data (KURA_DATA, `data`) or --store (KURA_STORE, `store`) is required")
        }
    }
}

/// Opens the store at `location` (`must_exist`: refuse to create an empty one).
fn open_store(location: &str, must_exist: bool) -> anyhow::Result<Store> {
    if is_postgres(location) {
        return Store::connect(location).with_context(|| "connecting to the PostgreSQL store");
    }
    let dir = PathBuf::from(location).join(JOBS_DB);
    if must_exist && !dir.is_dir() {
        anyhow::bail!(
            "{} holds no job store (is it a coordinator's --data?)",
            dir.display()
        );
    }
    Store::open(&dir).with_context(|| format!("opening {}", dir.display()))
}

fn is_postgres(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// `kura coordinator migrate`.
async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let done = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let from = open_store(&args.from, true)?;
        let to = open_store(&args.to, false)?;
        Ok(kura_transcoder::coordinator::store::migrate::migrate(
            &from, &to,
        )?)
    })
    .await??;
    println!(
        "migrated {} jobs ({} tasks), {} batches, {} worker records, {} pending webhooks; \
         tokens continue above {}",
        done.jobs, done.tasks, done.batches, done.workers, done.webhooks, done.next_token
    );
    Ok(())
}

/// Runs the coordinator until Ctrl-C / SIGTERM.
pub async fn run(mut args: CoordinatorArgs) -> anyhow::Result<()> {
    if let Some(CoordinatorCommand::Migrate(m)) = args.command.take() {
        return migrate(m).await;
    }
    let config = args.resolve()?;
    kura_transcoder::coordinator::serve(config, super::shutdown_signal()).await?;
    Ok(())
}

//! The coordinator: a durable queue of transcoding jobs that workers pull with leases.
//!
//! - [`store`]: jobs, tasks, the ready queue, leases and fencing in RocksDB.
//! - [`http`]: the API for users (API keys) and workers (cluster secret).

pub mod batch;
pub mod egress;
pub mod http;
pub mod metrics;
pub mod store;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kura_cluster::auth::Secret;
use std::time::Duration;

use kura_cluster::server::{ConnectionMetrics, Server};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::{Result, TranscodeError};
use store::Store;

/// How often expired leases are looked for. 1 s: a dead worker's task is back in the
/// queue within a second of its lease running out.
pub const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// How long a job is kept after it ends (then deleted with its tasks; a batch once all
/// its jobs are): 30 days covers looking into last month's failures, while a coordinator
/// that runs millions of jobs a month does not grow without bound.
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often ended jobs are looked for: hourly is plenty for a retention in days.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// How often a coordinator looks for tables of its PostgreSQL store that changed
/// enough to be analyzed again (`store/pg/stats.rs`). Autovacuum looks once a minute,
/// and a new database's plans are poor until it has (about 60 % of the rate in that
/// minute, measured); a look is one query on the statistics views.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// Longest an outbound call (a webhook delivery, a listing through the gateway) may
/// take; a receiver that never answers must not hold the coordinator's task. Webhooks are
/// never redirected (a redirect could send them anywhere).
pub const OUTBOUND_TIMEOUT: Duration = Duration::from_secs(30);

/// The embedded store's directory inside a coordinator's data directory.
pub const JOBS_DB: &str = "jobs-db";

/// Where a coordinator keeps its jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobStore {
    /// The embedded RocksDB store under this data directory (`jobs-db`): one
    /// coordinator, on the machine that holds the directory.
    Embedded(PathBuf),
    /// A PostgreSQL database (`postgres://…`): any number of coordinators share it.
    Postgres(String),
}

impl std::fmt::Display for JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobStore::Embedded(dir) => write!(f, "{}", dir.join(JOBS_DB).display()),
            // Never the password.
            JobStore::Postgres(url) => match url::Url::parse(url) {
                Ok(u) => write!(
                    f,
                    "postgres://{}{}",
                    u.host_str().unwrap_or(""),
                    u.port().map(|p| format!(":{p}")).unwrap_or_default()
                ),
                Err(_) => write!(f, "postgres"),
            },
        }
    }
}

/// Everything a coordinator needs to start.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Where the job queue lives.
    pub store: JobStore,
    /// Listen address.
    pub listen: SocketAddr,
    /// API keys users present (the gateway's keys).
    pub api_keys: Vec<Secret>,
    /// Secret workers present.
    pub cluster_secret: Secret,
    /// Gateway URL, for expanding batches (listing objects under a prefix).
    pub gateway: Option<String>,
    /// API key for the gateway.
    pub gateway_api_key: Option<Secret>,
    /// Lease length in ms (default [`store::LEASE_MS`]); workers heartbeat at a sixth of it.
    pub lease_ms: u64,
    /// Key completion webhooks are signed with; jobs may only ask for a webhook if set.
    pub webhook_secret: Option<Secret>,
    /// Networks webhooks may reach besides public addresses (see `egress`).
    pub webhook_allow: Vec<ipnet::IpNet>,
    /// Jobs that ended longer ago than this are deleted (zero: kept forever).
    pub job_retention: Duration,
    /// Timeouts and connection limits of its HTTP server.
    pub server: kura_cluster::server::ServerLimits,
}

/// Shared coordinator state.
pub struct Coordinator {
    /// Config.
    pub config: CoordinatorConfig,
    /// The job store.
    pub store: Store,
    /// Woken whenever a task may have become runnable, for long-polling workers (also
    /// by other coordinators' transitions: [`Store::listen_for_work`]).
    pub work: std::sync::Arc<Notify>,
    /// The users' API keys.
    api_keys: kura_cluster::auth::Bearer,
    /// The cluster secret workers present.
    workers: kura_cluster::auth::Bearer,
    /// Client for webhook deliveries (its resolver drops forbidden addresses).
    http: reqwest::Client,
    /// Where webhooks may go.
    pub egress: std::sync::Arc<egress::Egress>,
    /// Wakes the webhook sender.
    pub outbox: Notify,
    /// How many jobs with a webhook each key may submit.
    pub webhook_quota: egress::WebhookQuota,
    /// Metrics.
    pub metrics: metrics::CoordinatorMetrics,
    /// The registry `/metrics` renders.
    pub registry: kura_cluster::observe::SharedRegistry,
}

impl Coordinator {
    /// Counts `job` (a transition just changed it) and wakes the webhook sender: the
    /// transition may have put a delivery in the outbox.
    pub fn job_changed(&self, job: &crate::model::Job) {
        self.metrics.finished(job);
        if job.webhook.is_some() {
            self.outbox.notify_one();
        }
    }
}

/// How often the webhook sender looks at the outbox without being woken: deliveries
/// other coordinators wrote, and retries coming due.
const OUTBOX_POLL: Duration = Duration::from_secs(1);

/// Sends the outbox's due webhooks, in every coordinator, until aborted.
async fn send_webhooks_forever(c: Arc<Coordinator>) {
    loop {
        let c2 = c.clone();
        let claimed = tokio::task::spawn_blocking(move || {
            c2.store
                .claim_webhooks(c2.store.now_ms(), webhook::CLAIM_MS, webhook::CLAIM_BATCH)
        })
        .await;
        match claimed {
            Ok(Ok(due)) => {
                for o in due {
                    tokio::spawn(deliver(c.clone(), o));
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the webhook outbox"),
            Err(e) => tracing::error!(error = %e, "webhook outbox task failed"),
        }
        tokio::select! {
            () = c.outbox.notified() => {}
            () = tokio::time::sleep(OUTBOX_POLL) => {}
        }
    }
}

/// One attempt at a claimed delivery, and its outcome written back.
async fn deliver(c: Arc<Coordinator>, o: webhook::Outgoing) {
    let secret = c
        .config
        .webhook_secret
        .as_ref()
        .map(|s| s.expose().as_bytes());
    let attempt = webhook::attempt(&c.http, &c.egress, secret, &o).await;
    let attempts = o.attempts + 1;
    let c2 = c.clone();
    let written = tokio::task::spawn_blocking(move || match attempt {
        webhook::Attempt::Delivered | webhook::Attempt::Dropped => c2.store.webhook_done(&o.id),
        webhook::Attempt::Failed if attempts >= webhook::WEBHOOK_ATTEMPTS => {
            tracing::error!(job = %o.job.id, url = %o.url, "webhook given up after {attempts} attempts");
            c2.store.webhook_done(&o.id)
        }
        webhook::Attempt::Failed => {
            let next = webhook::retry_at(attempts, c2.store.now_ms());
            c2.store.webhook_retry(&o.id, attempts, next)
        }
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        // The claim lapses and the delivery is tried again.
        tracing::warn!("webhook outcome not recorded");
    }
}

/// Longest [`RunningCoordinator::shutdown`] waits for connections and blocking work
/// still holding the coordinator, so that its store closes before it returns.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Current time in ms since the epoch.
pub fn now_ms() -> u64 {
    kura_cluster::hlc::wall_ms()
}

/// A coordinator serving in the background.
pub struct RunningCoordinator {
    addr: SocketAddr,
    server: Server,
    reaper: JoinHandle<()>,
    sender: JoinHandle<()>,
    coordinator: Arc<Coordinator>,
}

impl RunningCoordinator {
    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its state (tests and in-process tools).
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// Stops serving and closes the store.
    pub async fn shutdown(mut self) -> Result<()> {
        self.reaper.abort();
        let _ = (&mut self.reaper).await;
        self.sender.abort();
        let _ = (&mut self.sender).await;
        self.server.shutdown().await;
        // Connection tasks and blocking work may drop their handle a moment after the
        // server future ends: wait for the last user, so that the store is closed (its
        // lock released) when `self` drops here, and a coordinator started next on the
        // same directory can open it.
        let deadline = std::time::Instant::now() + SHUTDOWN_DRAIN;
        while Arc::strong_count(&self.coordinator) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&self.coordinator) > 1 {
            tracing::warn!("coordinator still in use {SHUTDOWN_DRAIN:?} after shutdown");
        }
        Ok(())
    }
}

/// Opens the store, binds, serves, and reaps expired leases in the background.
pub async fn start(config: CoordinatorConfig) -> Result<RunningCoordinator> {
    let weak = |e: kura_cluster::auth::WeakSecret| TranscodeError::BadRequest(e.to_string());
    config
        .cluster_secret
        .check("cluster secret")
        .map_err(weak)?;
    for key in &config.api_keys {
        key.check("API key").map_err(weak)?;
    }
    if let Some(secret) = &config.webhook_secret {
        secret.check("webhook secret").map_err(weak)?;
    }
    if config.api_keys.is_empty() {
        return Err(TranscodeError::BadRequest(
            "at least one API key is required".into(),
        ));
    }
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let location = config.store.clone();
    let lease_ms = config.lease_ms;
    let store = tokio::task::spawn_blocking(move || {
        match location {
            JobStore::Embedded(data) => {
                std::fs::create_dir_all(&data)?;
                Store::open(&data.join(JOBS_DB))
            }
            JobStore::Postgres(url) => Store::connect(&url),
        }
        .map(|s| s.with_lease_ms(lease_ms))
    })
    .await??;
    let metrics = metrics::CoordinatorMetrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let connections = ConnectionMetrics::register(&mut registry);
    let egress = Arc::new(egress::Egress::new(config.webhook_allow.clone()));
    let coordinator = Arc::new(Coordinator {
        api_keys: kura_cluster::auth::Bearer::of_secrets(&config.api_keys),
        workers: kura_cluster::auth::Bearer::of_secrets([&config.cluster_secret]),
        config,
        store,
        work: std::sync::Arc::new(Notify::new()),
        outbox: Notify::new(),
        http: reqwest::Client::builder()
            .connect_timeout(kura_cluster::client::CONNECT_TIMEOUT)
            .timeout(OUTBOUND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(std::sync::Arc::new(egress::FilteringResolver(
                egress.clone(),
            )))
            .build()
            .map_err(crate::error::http("webhook client"))?,
        egress,
        webhook_quota: egress::WebhookQuota::default(),
        metrics,
        registry: std::sync::Arc::new(std::sync::Mutex::new(registry)),
    });
    coordinator.store.listen_for_work(store::WorkListener {
        work: std::sync::Arc::downgrade(&coordinator.work),
        wakeups: coordinator.metrics.database_wakeups.clone(),
        listening: coordinator.metrics.database_listening.clone(),
    });
    let app = http::router(coordinator.clone());
    let server = Server::spawn(
        listener,
        app,
        coordinator.config.server.clone(),
        connections,
    )?;
    let reaper = tokio::spawn(reap_forever(coordinator.clone()));
    let sender = tokio::spawn(send_webhooks_forever(coordinator.clone()));
    tracing::info!(%addr, store = %coordinator.config.store, "coordinator listening");
    Ok(RunningCoordinator {
        addr,
        server,
        reaper,
        sender,
        coordinator,
    })
}

/// Runs a coordinator until `shutdown` resolves.
pub async fn serve(
    config: CoordinatorConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let running = start(config).await?;
    shutdown.await;
    running.shutdown().await
}

/// Deletes the jobs that ended before the retention (see [`store::Store::purge`]).
async fn purge(c: &Arc<Coordinator>) {
    let keep = c.config.job_retention;
    if keep.is_zero() {
        return;
    }
    let cutoff = now_ms().saturating_sub(keep.as_millis() as u64);
    let c2 = c.clone();
    match tokio::task::spawn_blocking(move || c2.store.purge(cutoff)).await {
        Ok(Ok(p)) if p.jobs > 0 => {
            tracing::info!(
                jobs = p.jobs,
                batches = p.batches,
                "deleted jobs past retention"
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "deleting old jobs failed"),
        Err(e) => tracing::error!(error = %e, "purge task failed"),
    }
}

/// Keeps the store's planner statistics current (see [`store::Store::refresh_statistics`]).
async fn refresh_statistics(c: &Arc<Coordinator>) {
    let c2 = c.clone();
    match tokio::task::spawn_blocking(move || c2.store.refresh_statistics()).await {
        Ok(Ok(tables)) if !tables.is_empty() => {
            tracing::debug!(?tables, "analyzed the job store's tables")
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "refreshing the job store's statistics failed"),
        Err(e) => tracing::error!(error = %e, "statistics task failed"),
    }
}

async fn reap_forever(c: Arc<Coordinator>) {
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    let mut last_purge: Option<std::time::Instant> = None;
    let mut last_stats: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        if last_purge.is_none_or(|t| t.elapsed() >= PURGE_INTERVAL) {
            last_purge = Some(std::time::Instant::now());
            purge(&c).await;
        }
        if last_stats.is_none_or(|t| t.elapsed() >= STATS_INTERVAL) {
            last_stats = Some(std::time::Instant::now());
            refresh_statistics(&c).await;
        }
        let c2 = c.clone();
        match tokio::task::spawn_blocking(move || c2.store.reap(c2.store.now_ms())).await {
            Ok(Ok(jobs)) if !jobs.is_empty() => {
                c.metrics.leases_expired.inc_by(jobs.len() as u64);
                c.metrics.task_failures.inc_by(jobs.len() as u64);
                for j in &jobs {
                    c.job_changed(j);
                }
                c.work.notify_waiters();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "reaping leases failed"),
            Err(e) => tracing::error!(error = %e, "reaper task failed"),
        }
    }
}

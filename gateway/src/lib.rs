//! `kura-gateway`: the stateless public HTTP gateway.
//!
//! - [`cluster`]: the ring, node health and the replica operations (quorum writes,
//!   quorum record reads with repair, hedged verified chunk reads).
//! - [`upload`] / [`download`] / [`list`]: the object operations built on them.
//! - [`conditional`]: RFC 9110 preconditions and ranges.
//! - [`cache`]: verified chunks and short-lived records kept in memory.
//! - [`http`]: the router, API-key auth and limits.
//!
//! The gateway keeps no state of its own: everything it knows comes from its config
//! (the cluster map) and from the nodes; its caches are soft state, lost on restart.

pub mod admin;
pub mod buckets;
pub mod cache;
pub mod cluster;
pub mod conditional;
pub mod config;
pub mod console;
pub mod download;
pub mod error;
pub mod fast;
pub mod hot;
pub mod http;
pub mod jobs;
pub mod list;
pub mod locate;
pub mod metrics;
pub mod multipart;
pub mod public;
pub mod routes;
pub mod s3;
pub mod traffic;
pub mod tus;
pub mod upload;
pub mod upload_token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use kura_cluster::auth::Bearer;
use kura_cluster::observe::SharedRegistry;
use kura_cluster::server::{ConnectionMetrics, Server};
use kura_cluster::signed::SigningKeys;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::GatewayConfig;
pub use error::{GatewayError, Result};

use cluster::Cluster;
use metrics::GatewayMetrics;

/// Longest a call to the coordinator (job submission, status, listing) may take: they
/// are small, quick calls; a coordinator that hangs must not hold a client's request
/// (and its connection slot) forever.
pub const COORDINATOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The gateway's shared state.
pub struct Gateway {
    /// Its config.
    pub config: GatewayConfig,
    /// Its view of the cluster.
    pub cluster: Arc<Cluster>,
    /// The API keys.
    api_keys: Bearer,
    /// The admin token; `None`: the admin API is off.
    admin: Option<Bearer>,
    /// Metric registry rendered at `/metrics`.
    pub registry: SharedRegistry,
    /// Client for the coordinator.
    pub http: reqwest::Client,
    /// The coordinators (`--coordinator`, comma-separated), if any.
    pub coordinators: Option<kura_cluster::failover::Endpoints>,
    /// Read rates and hot objects.
    pub hot: Arc<hot::HotTracker>,
    /// Keys of signed URLs and upload tokens.
    pub signing_keys: SigningKeys,
    /// Buckets seen existing lately (see `buckets::KNOWN_BUCKET_TTL`).
    pub known_buckets: buckets::KnownBuckets,
    /// This gateway's traffic over the last hour (the console's charts).
    pub traffic: traffic::History,
}

/// A gateway serving in the background of the current runtime.
pub struct RunningGateway {
    addr: SocketAddr,
    server: Server,
    s3: Option<Server>,
    prober: JoinHandle<()>,
    syncer: JoinHandle<()>,
    hot: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    sampler: JoinHandle<()>,
    files: JoinHandle<()>,
}

impl RunningGateway {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The S3 API's address, if it serves one.
    pub fn s3_addr(&self) -> Option<SocketAddr> {
        self.s3.as_ref().map(Server::addr)
    }

    /// Stops serving after in-flight requests.
    pub async fn shutdown(self) -> Result<()> {
        self.prober.abort();
        self.syncer.abort();
        self.hot.abort();
        self.sweeper.abort();
        self.sampler.abort();
        self.files.abort();
        if let Some(s3) = self.s3 {
            s3.shutdown().await;
        }
        self.server.shutdown().await;
        Ok(())
    }
}

/// Builds the gateway, binds `config.listen` and serves in the background.
pub async fn start(config: GatewayConfig) -> Result<RunningGateway> {
    if config.api_keys.is_empty() {
        return Err(GatewayError::BadRequest(
            "at least one API key is required".into(),
        ));
    }
    let weak = |e: kura_cluster::auth::WeakSecret| GatewayError::BadRequest(e.to_string());
    config
        .cluster_secret
        .check("cluster secret")
        .map_err(weak)?;
    for key in &config.api_keys {
        key.check("API key").map_err(weak)?;
    }
    if let Some(token) = &config.admin_token {
        token.check("admin token").map_err(weak)?;
    }
    for key in &config.s3_keys {
        key.check().map_err(weak)?;
    }
    if config.chunk_size == 0 || config.chunk_size > 16 * 1024 * 1024 {
        return Err(GatewayError::BadRequest(
            "chunk size must be 1 byte to 16 MiB (the node limit)".into(),
        ));
    }
    let r = config.replication;
    if r.n == 0 || r.w == 0 || r.r == 0 || r.w > r.n || r.r > r.n {
        return Err(GatewayError::BadRequest(format!(
            "replication needs 1 <= W, R <= N (got N={}, W={}, R={})",
            r.n, r.w, r.r
        )));
    }
    let signing_keys = config
        .signing_keys()
        .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(GatewayError::io(format!(
            "cannot listen on {}",
            config.listen
        )))?;
    let addr = listener
        .local_addr()
        .map_err(GatewayError::io("the listening socket's address"))?;
    let metrics = GatewayMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let connections = ConnectionMetrics::register(&mut registry);
    let cluster = Arc::new(
        Cluster::new(
            &config.map,
            config.cluster_secret.expose(),
            config.replication,
            config.zone.clone(),
            metrics,
            (
                cache::ChunkCache::new(config.chunk_cache_bytes),
                cache::RecordCache::new(config.record_cache_ttl, config.record_refresh_after),
            ),
            config.local_reads,
        )?
        .keeping_files_for(config.open_file_keep),
    );
    let config_hot = (config.hot_reads_per_sec, config.hot_extra_replicas);
    let coordinators = config
        .coordinator
        .as_deref()
        .map(kura_cluster::failover::Endpoints::parse)
        .transpose()
        .map_err(|e| GatewayError::BadRequest(format!("--coordinator: {e}")))?;
    let gw = Arc::new(Gateway {
        coordinators,
        api_keys: Bearer::of_secrets(&config.api_keys),
        admin: config.admin_token.as_ref().map(|t| Bearer::of_secrets([t])),
        config,
        cluster: cluster.clone(),
        registry: Arc::new(Mutex::new(registry)),
        http: reqwest::Client::builder()
            .connect_timeout(kura_cluster::client::CONNECT_TIMEOUT)
            .timeout(COORDINATOR_TIMEOUT)
            .build()
            .map_err(GatewayError::Client)?,
        hot: Arc::new(hot::HotTracker::new(config_hot.0, config_hot.1)),
        known_buckets: buckets::known_buckets(),
        signing_keys,
        traffic: traffic::History::default(),
    });
    let (app, http_metrics) = routes::router(gw.clone());
    let sampler = tokio::spawn(traffic::sample_forever(gw.clone(), http_metrics.totals()));
    let front = fast::Front::new(gw.clone(), app, http_metrics.clone());
    let server = Server::spawn(
        listener,
        front,
        gw.config.server.clone(),
        connections.clone(),
    )
    .map_err(GatewayError::io("cannot serve"))?;
    let s3 = match gw.config.s3_listen {
        Some(at) => {
            let listener = TcpListener::bind(at)
                .await
                .map_err(GatewayError::io(format!("cannot listen on {at}")))?;
            let app = s3::router(gw.clone(), http_metrics).with_state(());
            Some(
                Server::spawn(listener, app, gw.config.server.clone(), connections)
                    .map_err(GatewayError::io("cannot serve S3"))?,
            )
        }
        None => None,
    };
    // Learn a newer map (or teach ours) before serving the first request.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), cluster.sync_map()).await;
    let prober = tokio::spawn(cluster.clone().probe_forever());
    let syncer = tokio::spawn(cluster.clone().sync_map_forever());
    let files = tokio::spawn(cluster.close_stale_files_forever());
    let hot = tokio::spawn(gw.hot.clone().maintain_forever(cluster));
    let sweeper = tokio::spawn(multipart::sweep_forever(
        gw.clone(),
        gw.config.multipart_expiry,
    ));
    tracing::info!(%addr, nodes = gw.config.map.nodes.len(), "gateway listening");
    Ok(RunningGateway {
        addr,
        server,
        s3,
        prober,
        syncer,
        hot,
        sweeper,
        sampler,
        files,
    })
}

/// Runs a gateway until `shutdown` resolves.
pub async fn serve(config: GatewayConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let running = start(config).await?;
    shutdown.await;
    running.shutdown().await
}

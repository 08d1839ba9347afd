//! `kura-storage-node`: one machine's share of kura.
//!
//! - [`chunks`]: the content-addressed chunk store (inline small chunks, one file per
//!   large chunk, verified reads, quarantine).
//! - [`records`]: the object-record table (last-writer-wins, tombstones, listing).
//! - [`scrub`]: the throttled background re-hasher.
//! - [`http`]: the internal HTTP API, guarded by the cluster secret.
//! - [`node`]: the state tying them together; [`start`] runs it all.

pub mod catchup;
pub mod chunks;
pub mod config;
pub mod db;
pub mod error;
pub mod gc;
pub mod http;
pub mod metrics;
pub mod node;
pub mod orphans;
pub mod rebalance;
pub mod records;
pub mod scrub;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kura_cluster::server::{ConnectionMetrics, Server};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::NodeConfig;
pub use error::{NodeError, Result};
pub use node::Node;

/// A node serving in the background of the current runtime.
pub struct RunningNode {
    addr: SocketAddr,
    node: Arc<Node>,
    server: Server,
    scrubber: JoinHandle<()>,
    rebalancer: JoinHandle<()>,
    collector: JoinHandle<()>,
    catchup: JoinHandle<()>,
}

impl RunningNode {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node's state (for tests and in-process tools).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops serving (finishing in-flight requests), stops the scrubber, and closes the
    /// database once the last handler is done.
    pub async fn shutdown(mut self) -> Result<()> {
        self.scrubber.abort();
        let _ = (&mut self.scrubber).await;
        self.rebalancer.abort();
        let _ = (&mut self.rebalancer).await;
        self.collector.abort();
        let _ = (&mut self.collector).await;
        self.catchup.abort();
        let _ = (&mut self.catchup).await;
        self.server.shutdown().await;
        // Aborting a task does not stop blocking work it started (a listing, a GC
        // batch), and connection tasks may drop their handle a moment after the server
        // future ends: wait for the last user, so that the database is closed when
        // `self` drops here, not while the process exits (RocksDB tearing down its
        // globals under an open database crashes the process: SIGSEGV or SIGABRT).
        let deadline = std::time::Instant::now() + SHUTDOWN_DRAIN;
        while Arc::strong_count(&self.node) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&self.node) > 1 {
            tracing::warn!(
                users = Arc::strong_count(&self.node) - 1,
                "storage node still in use {SHUTDOWN_DRAIN:?} after shutdown; not waiting longer"
            );
        }
        Ok(())
    }
}

/// Longest [`RunningNode::shutdown`] waits for blocking work and connections still
/// holding the node, so that the database closes before the process exits.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Opens the node's stores, binds `config.listen`, and serves in the background.
pub async fn start(config: NodeConfig) -> Result<RunningNode> {
    config
        .cluster_secret
        .check("cluster secret")
        .map_err(|e| NodeError::Startup(e.to_string()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| NodeError::Startup(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener.local_addr()?;
    let (rate, interval) = (config.scrub_bytes_per_sec, config.scrub_interval_secs);
    let open_config = config.clone();
    let node = Arc::new(tokio::task::spawn_blocking(move || Node::open(open_config)).await??);
    let app = http::router(node.clone());
    let connections = {
        let mut registry = node.registry.lock().unwrap_or_else(|e| e.into_inner());
        ConnectionMetrics::register(&mut registry)
    };
    let server = Server::spawn(listener, app, config.server.clone(), connections)?;
    let scrubber = tokio::spawn(scrub::background(
        node.clone(),
        rate,
        Duration::from_secs(interval),
    ));
    let rebalancer = tokio::spawn(rebalance::run_forever(
        node.clone(),
        Duration::from_secs(config.repair_interval_secs.max(1)),
    ));
    let collector = tokio::spawn(gc::run_forever(
        node.clone(),
        Duration::from_secs(config.gc_interval_secs),
        Duration::from_secs(config.gc_grace_secs),
    ));
    let catchup = tokio::spawn(catchup::run_forever(node.clone()));
    tracing::info!(%addr, node_id = %config.node_id, zone = %config.zone, data = %config.data.display(), "storage node listening");
    Ok(RunningNode {
        addr,
        node,
        server,
        scrubber,
        rebalancer,
        collector,
        catchup,
    })
}

/// Runs a node until `shutdown` resolves.
pub async fn serve(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let running = start(config).await?;
    shutdown.await;
    running.shutdown().await
}

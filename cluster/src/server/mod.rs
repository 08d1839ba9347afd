//! The one HTTP server loop every kura service runs (storage node, gateway,
//! coordinator): accept with connection limits, HTTP/1.1 with a header-read deadline,
//! an inactivity deadline on every socket read or write, and graceful drain.
//!
//! What each limit stops:
//! - `header_timeout`: a client that opens a connection (or keeps one alive) and sends a
//!   request head slowly or never (slowloris). hyper arms it whenever it waits for a
//!   head, so it is also the keep-alive idle timeout.
//! - `io_timeout`: a read or write that makes no progress at all for this long — a body
//!   that stops arriving, a download that is never read (which would otherwise pin its
//!   chunks in memory), a half-open socket. Progress in either direction resets it; a
//!   handler that is busy (not waiting on the socket) is not affected, however long.
//! - `max_connections` and `max_connections_per_client`: file descriptors and memory are
//!   bounded whatever clients do; one client address (one host behind no proxy) cannot
//!   take every slot. Over a limit the connection is closed at once and counted.
//! - Shutdown stops accepting, lets in-flight requests finish (idle keep-alive
//!   connections close at once) for up to `drain_timeout`, then drops what remains.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

mod watchdog;

use watchdog::{Activity, Busy, Watchdog, WatchedBody};

// ---- Tunables ----

/// Longest a client may take to send a request head, and longest an idle keep-alive
/// connection stays open. 20 s is generous for any real client on a slow mobile link
/// (a head is a few hundred bytes) and short enough that a slowloris holds a slot only
/// briefly (nginx: 60 s; Apache's mod_reqtimeout: 20 s for the head).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest a socket read or write may make no progress before the connection is
/// dropped. Above the coordinator's 50 s long-poll (during which hyper keeps a read
/// pending to notice a closed connection), like nginx's 60 s body and send timeouts.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Open connections one process accepts. Each costs a file descriptor and a few KiB
/// of buffers; 16384 stays far below the fd limit kura raises itself to (the hard limit,
/// usually ≥ 524288) while serving any realistic number of clients.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Open connections from one client address. HTTP/1.1 serves one request at a time per
/// connection, so this also bounds one client's concurrent requests. 1024 leaves room for
/// a load balancer or a gateway talking to a node (each gateway keeps a pool per node),
/// while one host cannot hold all [`DEFAULT_MAX_CONNECTIONS`].
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 1024;

/// Longest a shutdown waits for in-flight requests. Uploads and downloads in progress
/// get this long to finish; 10 s fits a rolling restart's usual termination grace.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not
/// spin while connections close and free descriptors.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

// ---- Public interface ----

/// The limits of one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// See [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`DEFAULT_IO_TIMEOUT`].
    pub io_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS_PER_CLIENT`].
    pub max_connections_per_client: usize,
    /// See [`DEFAULT_DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// The server settings as a config file (a `[server]` table), flags or environment
/// give them: every one optional, unknown keys refused.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Seconds; see [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout_secs: Option<u64>,
    /// Seconds; see [`DEFAULT_IO_TIMEOUT`].
    pub io_timeout_secs: Option<u64>,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<usize>,
    /// See [`DEFAULT_MAX_CONNECTIONS_PER_CLIENT`].
    pub max_connections_per_client: Option<usize>,
    /// Seconds; see [`DEFAULT_DRAIN_TIMEOUT`].
    pub drain_timeout_secs: Option<u64>,
}

impl ServerSettings {
    /// These settings where given, `fallback`'s elsewhere.
    pub fn or(self, fallback: ServerSettings) -> ServerSettings {
        ServerSettings {
            header_timeout_secs: self.header_timeout_secs.or(fallback.header_timeout_secs),
            io_timeout_secs: self.io_timeout_secs.or(fallback.io_timeout_secs),
            max_connections: self.max_connections.or(fallback.max_connections),
            max_connections_per_client: self
                .max_connections_per_client
                .or(fallback.max_connections_per_client),
            drain_timeout_secs: self.drain_timeout_secs.or(fallback.drain_timeout_secs),
        }
    }

    /// The limits, defaults where not given; refuses values that would make the server
    /// unusable (zero timeouts or limits).
    pub fn limits(&self) -> Result<ServerLimits, String> {
        let d = ServerLimits::default();
        let secs = |v: Option<u64>, default: Duration, name: &str| match v {
            Some(0) => Err(format!("{name} must be at least 1 second")),
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(default),
        };
        let count = |v: Option<usize>, default: usize, name: &str| match v {
            Some(0) => Err(format!("{name} must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(ServerLimits {
            header_timeout: secs(
                self.header_timeout_secs,
                d.header_timeout,
                "header_timeout_secs",
            )?,
            io_timeout: secs(self.io_timeout_secs, d.io_timeout, "io_timeout_secs")?,
            max_connections: count(self.max_connections, d.max_connections, "max_connections")?,
            max_connections_per_client: count(
                self.max_connections_per_client,
                d.max_connections_per_client,
                "max_connections_per_client",
            )?,
            drain_timeout: match self.drain_timeout_secs {
                Some(s) => Duration::from_secs(s),
                None => d.drain_timeout,
            },
        })
    }
}

/// Why a connection was closed without being served.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Refusal {
    /// `max_connections` reached.
    Total,
    /// `max_connections_per_client` reached for the client's address.
    PerClient,
}

/// Labels of the refused-connection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Which limit.
    pub limit: Refusal,
}

/// Connection metrics of one server.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    refused: Family<RefusalLabels, Counter>,
    timed_out: Counter,
}

impl ConnectionMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "kura_http_connections_open",
            "Open client connections",
            m.open.clone(),
        );
        registry.register(
            "kura_http_connections_refused",
            "Connections closed at accept because a connection limit was reached",
            m.refused.clone(),
        );
        registry.register(
            "kura_http_connections_timed_out",
            "Connections dropped for a header or inactivity timeout",
            m.timed_out.clone(),
        );
        m
    }
}

/// A server running in the background of the current runtime.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// What a [`Server`] serves: an axum `Router`, or a service in front of one (the
/// gateway's fast read path, `kura_gateway::fast`).
pub trait App:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

impl Server {
    /// Serves `app` on `listener` under `limits` until [`Server::shutdown`].
    pub fn spawn(
        listener: TcpListener,
        app: impl App,
        limits: ServerLimits,
        metrics: ConnectionMetrics,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, app, limits, metrics, stopped));
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish for up to the drain timeout,
    /// then drops the remaining connections.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::error!(error = %e, "server task failed");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- The accept loop ----

async fn accept_loop(
    listener: TcpListener,
    app: impl App,
    limits: ServerLimits,
    metrics: ConnectionMetrics,
    mut stopped: oneshot::Receiver<()>,
) {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(ClientCounts::default());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = total.clone().try_acquire_owned() else {
            metrics
                .refused
                .get_or_create(&RefusalLabels {
                    limit: Refusal::Total,
                })
                .inc();
            continue;
        };
        let Some(client) = clients
            .clone()
            .enter(peer.ip(), limits.max_connections_per_client)
        else {
            metrics
                .refused
                .get_or_create(&RefusalLabels {
                    limit: Refusal::PerClient,
                })
                .inc();
            continue;
        };
        let conn = serve_connection(stream, peer, app.clone(), &limits, &metrics.timed_out);
        let conn = graceful.watch(conn);
        let (open, timed_out) = (Open::new(&metrics.open), metrics.timed_out.clone());
        connections.spawn(async move {
            if let Err(e) = conn.await {
                // hyper's own (header) timeout; the watchdog counts the I/O ones.
                if e.is_timeout() {
                    timed_out.inc();
                }
            }
            drop((slot, client, open));
        });
    }
    drop(listener);
    let drain = async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    };
    if tokio::time::timeout(limits.drain_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight {:?} after shutdown; dropping them",
            limits.drain_timeout
        );
    }
}

/// One connection, served until it closes; errors (timeouts, resets, bad requests
/// answered by hyper itself) end only this connection.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: impl App,
    limits: &ServerLimits,
    timed_out: &Counter,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error> {
    // Responses go out as header and body writes; without TCP_NODELAY a small body
    // waits for the client's delayed ACK (~40 ms per request).
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watchdog::new(
        stream,
        limits.io_timeout,
        timed_out.clone(),
        activity.clone(),
    ));
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let busy = Busy::enter(&activity);
        let mut req = req.map(|body| axum::body::Body::new(WatchedBody::new(body, &activity)));
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        let activity = activity.clone();
        async move {
            let mut resp = app.oneshot(req).await.unwrap_or_else(|e| match e {});
            drop(busy);
            if !activity.body_read() {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(resp)
        }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, service)
}

/// Counts a connection in the open gauge for as long as it lives (also when its task
/// is aborted at the end of a drain).
struct Open(Gauge);

impl Open {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// ---- Per-client connection counts ----

#[derive(Default)]
struct ClientCounts(Mutex<HashMap<IpAddr, usize>>);

/// One client's connection slot; gives it back when dropped.
struct ClientSlot {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
}

impl ClientCounts {
    fn enter(self: Arc<Self>, ip: IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        drop(map);
        Some(ClientSlot { counts: self, ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

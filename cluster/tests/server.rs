//! The shared server loop against clients that misbehave the way an outsider's would:
//! slow or missing request heads, bodies that stop, downloads nobody reads, too many
//! connections from one address, and a shutdown with requests in flight. Real sockets on
//! loopback; every wait is for an event (a closed socket, a dropped body), bounded only
//! by a generous guard so that a regression fails instead of hanging.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::{get, put};
use axum::Router;
use bytes::Bytes;
use kura_cluster::server::{ConnectionMetrics, Server, ServerLimits};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;

/// Upper bound on any wait for an event that must happen within ~1 s limits: only
/// reached when the behaviour under test is broken.
const GUARD: Duration = Duration::from_secs(30);

/// What the test handlers share with the test.
#[derive(Default)]
struct Probe {
    /// Download bodies dropped (the connection serving them went away).
    bodies_dropped: AtomicUsize,
    /// Released to let `/slow` answer.
    release: Notify,
    /// `/slow` requests that started.
    slow_started: Notify,
    /// Notified when a download body is dropped.
    dropped: Notify,
    /// Notified when a `/slow` handler ends without answering (cancelled).
    slow_cancelled: Notify,
}

/// Notifies `slow_cancelled` unless disarmed (the handler answered).
struct Cancelled(Option<Arc<Probe>>);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.slow_cancelled.notify_waiters();
        }
    }
}

struct DropCount(Arc<Probe>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.bodies_dropped.fetch_add(1, Ordering::SeqCst);
        self.0.dropped.notify_waiters();
    }
}

fn app(probe: Arc<Probe>) -> Router {
    let p1 = probe.clone();
    let p2 = probe.clone();
    Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .route(
            "/upload",
            put(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/big",
            get(move || {
                let guard = DropCount(p1.clone());
                // 1 GiB in 1 MiB pieces, produced only as fast as the socket takes them.
                let stream = futures::stream::iter((0..1024).map(move |_| {
                    let _keep = &guard;
                    Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 1 << 20]))
                }));
                async move { Body::from_stream(stream) }
            }),
        )
        .route(
            "/slow",
            get(move || {
                let p = p2.clone();
                async move {
                    let mut cancelled = Cancelled(Some(p.clone()));
                    let released = p.release.notified();
                    p.slow_started.notify_one();
                    released.await;
                    cancelled.0 = None;
                    "done"
                }
            }),
        )
}

/// Short timeouts, for the tests that wait for them to fire.
fn limits() -> ServerLimits {
    ServerLimits {
        header_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(1),
        max_connections: 6,
        max_connections_per_client: 3,
        drain_timeout: Duration::from_secs(2),
    }
}

/// Timeouts far beyond any test, for the tests where a connection must stay open (idle
/// or with a request in flight) while something else is checked.
fn patient() -> ServerLimits {
    ServerLimits {
        header_timeout: Duration::from_secs(600),
        io_timeout: Duration::from_secs(600),
        drain_timeout: Duration::from_secs(600),
        ..limits()
    }
}

async fn server(limits: ServerLimits) -> (Server, Arc<Probe>, Arc<Mutex<Registry>>) {
    let probe = Arc::new(Probe::default());
    let mut registry = Registry::default();
    let metrics = ConnectionMetrics::register(&mut registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::spawn(listener, app(probe.clone()), limits, metrics).unwrap();
    (server, probe, Arc::new(Mutex::new(registry)))
}

/// A connection from a chosen loopback address (127.0.0.x), as another host would.
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes the connection; fails the test if it never does.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(GUARD, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server never closed the connection");
    got
}

/// One well-behaved request on a fresh connection: the status line's code.
async fn get_status(addr: SocketAddr, source: [u8; 4], path: &str) -> String {
    let mut s = connect_from(source, addr).await;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    text.split(' ').nth(1).unwrap_or("").to_string()
}

fn metric(registry: &Arc<Mutex<Registry>>, name: &str) -> f64 {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry.lock().unwrap()).unwrap();
    out.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_cut_off() {
    let (server, _, registry) = server(limits()).await;
    let mut slow = TcpStream::connect(server.addr()).await.unwrap();
    slow.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Meanwhile a well-behaved client is served.
    assert_eq!(
        get_status(server.addr(), [127, 0, 0, 2], "/peer").await,
        "200"
    );
    let answer = read_until_closed(&mut slow).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "unexpected answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(metric(&registry, "kura_http_connections_timed_out") >= 1.0);
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (server, _, _) = server(limits()).await;
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_upload_body_that_stops_arriving_is_cut_off() {
    let (server, _, registry) = server(limits()).await;
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(b"PUT /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "an incomplete body was accepted: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(metric(&registry, "kura_http_connections_timed_out") >= 1.0);
    // The same upload, complete, is served.
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(
        b"PUT /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nconnection: close\r\n\r\nabcd",
    )
    .await
    .unwrap();
    let got = read_until_closed(&mut s).await;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(got.ends_with(b"4"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_download_nobody_reads_is_dropped_with_its_body() {
    let (server, probe, _) = server(limits()).await;
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let dropped = probe.dropped.notified();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read: the socket buffers fill, the server's writes stall, and after the I/O
    // timeout the connection and the body it was sending are dropped.
    tokio::time::timeout(GUARD, dropped)
        .await
        .expect("the stalled download was never dropped");
    assert_eq!(probe.bodies_dropped.load(Ordering::SeqCst), 1);
    drop(s);
    server.shutdown().await;
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let (server, _, registry) = server(patient()).await;
    let addr = server.addr();
    // 127.0.0.1 takes its 3 connections (kept alive after one request each).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from([127, 0, 0, 1], addr).await;
        s.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    // A 4th from the same address is closed unanswered...
    let mut fourth = connect_from([127, 0, 0, 1], addr).await;
    let _ = fourth
        .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    assert!(read_until_closed(&mut fourth).await.is_empty());
    assert_eq!(
        metric(
            &registry,
            "kura_http_connections_refused_total{limit=\"PerClient\"}"
        ),
        1.0
    );
    // ...while another address is served and sees its own address.
    let mut other = connect_from([127, 0, 0, 2], addr).await;
    other
        .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut other).await;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(
        got.ends_with(b"127.0.0.2"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // The total limit (6) holds across addresses.
    for source in [[127, 0, 0, 3], [127, 0, 0, 4], [127, 0, 0, 5]] {
        let mut s = connect_from(source, addr).await;
        s.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        held.push(s);
    }
    let mut seventh = connect_from([127, 0, 0, 6], addr).await;
    let _ = seventh
        .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    assert!(read_until_closed(&mut seventh).await.is_empty());
    assert_eq!(
        metric(
            &registry,
            "kura_http_connections_refused_total{limit=\"Total\"}"
        ),
        1.0
    );
    // Closing connections gives the slots back.
    drop(held);
    let status = tokio::time::timeout(GUARD, async {
        loop {
            let s = get_status(addr, [127, 0, 0, 1], "/peer").await;
            if s == "200" {
                return s;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("slots never came back");
    assert_eq!(status, "200");
    server.shutdown().await;
}

#[tokio::test]
async fn a_handler_slower_than_the_io_timeout_still_answers() {
    let (server, probe, _) = server(limits()).await;
    let addr = server.addr();
    let started = probe.slow_started.notified();
    let request = tokio::spawn(async move { get_status(addr, [127, 0, 0, 1], "/slow").await });
    started.await;
    // What is tested is that time passing does not end the request: wait out twice the
    // I/O timeout with the client idle and the handler busy, then let it answer.
    tokio::time::sleep(limits().io_timeout * 2).await;
    probe.release.notify_waiters();
    assert_eq!(request.await.unwrap(), "200");
    server.shutdown().await;
}

#[tokio::test]
async fn an_answer_before_the_body_was_read_closes_the_connection() {
    let (server, _, _) = server(patient()).await;
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    // The client waits for `100 Continue` before its body; the handler refuses at once
    // (405) without reading it. What the client sends next cannot be told apart from the
    // body it skipped, so the connection must end with this answer.
    s.write_all(
        b"PUT /peer HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let got = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 405"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    // A request whose body was read keeps its connection.
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(b"PUT /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 200") && !text.contains("connection: close"),
        "{text}"
    );
    s.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_handler() {
    let (server, probe, _) = server(patient()).await;
    let started = probe.slow_started.notified();
    let cancelled = probe.slow_cancelled.notified();
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    started.await;
    drop(s);
    tokio::time::timeout(GUARD, cancelled)
        .await
        .expect("the handler of a closed connection kept running");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_refuses_new_ones() {
    let (server, probe, _) = server(patient()).await;
    let addr = server.addr();
    let started = probe.slow_started.notified();
    let request = tokio::spawn(async move { get_status(addr, [127, 0, 0, 1], "/slow").await });
    started.await;
    let stopping = tokio::spawn(server.shutdown());
    // New connections are refused once the listener is gone.
    tokio::time::timeout(GUARD, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("still accepting after shutdown");
    probe.release.notify_waiters();
    assert_eq!(request.await.unwrap(), "200");
    tokio::time::timeout(GUARD, stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_requests_after_the_drain_timeout() {
    let limits = ServerLimits {
        drain_timeout: Duration::from_secs(1),
        ..patient()
    };
    let (server, probe, _) = server(limits).await;
    let addr = server.addr();
    let started = probe.slow_started.notified();
    let request = tokio::spawn(async move { get_status(addr, [127, 0, 0, 1], "/slow").await });
    started.await;
    // Never released: the shutdown ends after the 1 s drain and the client sees the
    // connection close without an answer.
    tokio::time::timeout(GUARD, server.shutdown())
        .await
        .unwrap();
    assert_eq!(request.await.unwrap(), "");
}

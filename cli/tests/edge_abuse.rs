//! Ten thousand idle connections and a few hundred slowloris clients against a real
//! `kura gateway` process: a well-behaved client is still served every request with the
//! right bytes, the gateway's memory stays bounded, and the server itself closes every
//! abusive connection once its header timeout passes. (How much the well-behaved
//! client's latency moves is a benchmark, not a test: `benches/e2e/edge.sh`.)

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{random_bytes, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Idle connections (nothing sent), spread over [`SOURCES`] loopback addresses as that
/// many outside clients would be (each under the per-client connection limit).
const IDLE: usize = 10_000;
/// Connections that send half a request head and stop.
const SLOWLORIS: usize = 200;
/// Source addresses 127.0.0.2 on.
const SOURCES: usize = 20;
/// The gateway's header timeout in this test (the default is 20 s).
const HEADER_TIMEOUT_SECS: &str = "5";
/// Requests of the well-behaved client while the abusive connections are held.
const REQUESTS: usize = 100;
/// Most the gateway's resident memory may grow while holding the connections: 16 KiB
/// per connection (measured: about 7 KiB each), so a leak or a per-connection buffer
/// of real size fails this.
const MAX_GROWTH_PER_CONN: u64 = 16 * 1024;
/// How long after the header timeout every abusive connection must be closed by.
const CLOSE_SLACK: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_connections_do_not_starve_clients_and_are_closed() -> Result<()> {
    let cluster =
        Cluster::start_with_gateway_args(&["--header-timeout-secs", HEADER_TIMEOUT_SECS]).await?;
    let gw = cluster.client()?;
    let body = random_bytes(7, 4096);
    gw.put("edge", "probe", body.clone()).await?;
    let pid = cluster.gateway.pid().context("gateway not running")?;
    let rss_before = rss_bytes(pid)?;

    let addr = cluster.gateway.addr();
    let mut held = Vec::with_capacity(IDLE + SLOWLORIS);
    for i in 0..IDLE + SLOWLORIS {
        let src = Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCES) as u8);
        let mut s = connect(IpAddr::V4(src), addr)
            .await
            .with_context(|| format!("connection {i} from {src}"))?;
        if i >= IDLE {
            s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
                .await?;
        }
        held.push(s);
    }

    for i in 0..REQUESTS {
        let got = gw
            .get("edge", "probe")
            .await
            .with_context(|| format!("request {i} beside {} held connections", held.len()))?;
        ensure!(
            got.as_deref() == Some(&body[..]),
            "request {i}: wrong bytes"
        );
    }
    let rss_loaded = rss_bytes(pid)?;
    let growth = rss_loaded.saturating_sub(rss_before);
    eprintln!(
        "gateway RSS {} MiB -> {} MiB with {} connections held ({} bytes each)",
        rss_before >> 20,
        rss_loaded >> 20,
        held.len(),
        growth / held.len() as u64
    );
    ensure!(
        growth <= MAX_GROWTH_PER_CONN * held.len() as u64,
        "gateway grew by {growth} bytes for {} connections",
        held.len()
    );

    // The server, not this test, ends every abusive connection.
    let limit = Duration::from_secs(HEADER_TIMEOUT_SECS.parse()?) + CLOSE_SLACK;
    let closed = futures::future::join_all(held.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(limit, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue, // a 408 before the close
                Err(_) => return false,
            }
        }
    }))
    .await;
    let open = closed.iter().filter(|c| !**c).count();
    ensure!(
        open == 0,
        "{open} connections still open {limit:?} after they were made"
    );
    ensure!(
        gw.get("edge", "probe").await?.as_deref() == Some(&body[..]),
        "served afterwards"
    );
    cluster.stop().await
}

async fn connect(src: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src, 0))?;
    s.connect(to).await
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024)
}

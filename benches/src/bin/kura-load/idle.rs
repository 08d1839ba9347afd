//! A well-behaved client's latency alone, then beside idle and slowloris connections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::stats::{content, memory, percentiles};
use crate::Target;

#[derive(clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    target: Target,
    /// Idle connections to hold (nothing sent).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Slowloris connections (half a request header, one more byte every second).
    #[arg(long, default_value_t = 500)]
    slowloris: usize,
    /// Loopback source addresses the abusive connections come from (127.0.0.2 on), as
    /// that many outside clients would.
    #[arg(long, default_value_t = 20)]
    sources: u8,
    /// Requests of the well-behaved client per phase.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Object size the well-behaved client reads.
    #[arg(long, default_value_t = 4096)]
    size: usize,
}

pub async fn run(a: IdleArgs) -> Result<Value> {
    let t = &a.target;
    let http = Client::new();
    let url = format!("{}/v1/o/{}/idle-probe", t.url, t.bucket);
    let body = content(t.seed, a.size);
    let r = http
        .put(&url)
        .bearer_auth(&t.api_key)
        .body(body.clone())
        .send()
        .await?;
    ensure!(r.status() == StatusCode::CREATED, "PUT: {}", r.status());
    probe(&http, &url, t, &body, a.requests / 4).await?; // warm-up
    let mut alone = probe(&http, &url, t, &body, a.requests).await?;
    let mem_before = memory(&t.pids);

    let addr: SocketAddr = t
        .url
        .trim_start_matches("http://")
        .parse()
        .context("--url must be http://IP:PORT here")?;
    let opened = Instant::now();
    let (mut held, mut refused) = (Vec::new(), 0usize);
    for i in 0..a.idle + a.slowloris {
        let src = Ipv4Addr::new(127, 0, 0, 2 + (i % a.sources.max(1) as usize) as u8);
        match connect(IpAddr::V4(src), addr).await {
            Ok(mut s) => {
                if i >= a.idle {
                    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
                        .await?;
                }
                held.push(s);
            }
            Err(_) => refused += 1,
        }
    }
    let open_secs = opened.elapsed().as_secs_f64();
    let drip = tokio::spawn(drip(held.split_off(held.len().min(a.idle))));
    let mut loaded = probe(&http, &url, t, &body, a.requests).await?;
    let mem_loaded = memory(&t.pids);
    let closed = held.iter().filter(|s| closed_by_peer(s)).count();
    let slow = drip.await?;
    let ratio =
        |q: &str, a: &Value, b: &Value| b[q].as_f64().unwrap_or(0.0) / a[q].as_f64().unwrap_or(1.0);
    let (pa, pl) = (percentiles(&mut alone), percentiles(&mut loaded));
    Ok(json!({
        "mode": "idle",
        "idle": a.idle,
        "slowloris": a.slowloris,
        "sources": a.sources,
        "connect_failed": refused,
        "open_secs": open_secs,
        "idle_closed_by_server_during_probe": closed,
        "slowloris_closed_by_server": slow,
        "alone_ms": pa,
        "loaded_ms": pl,
        "p50_ratio": ratio("p50", &pa, &pl),
        "p99_ratio": ratio("p99", &pa, &pl),
        "memory_before": mem_before,
        "memory_loaded": mem_loaded,
    }))
}

async fn connect(src: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src, 0))?;
    tokio::time::timeout(Duration::from_secs(5), s.connect(to))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// `n` sequential GETs of `url`, each checked; their latencies.
async fn probe(
    http: &Client,
    url: &str,
    t: &Target,
    body: &[u8],
    n: usize,
) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let r = http.get(url).bearer_auth(&t.api_key).send().await?;
        ensure!(r.status() == StatusCode::OK, "GET: {}", r.status());
        ensure!(r.bytes().await?.as_ref() == body, "wrong bytes");
        out.push(started.elapsed());
    }
    Ok(out)
}

/// Sends one more header byte per second on each slowloris connection while the probe
/// runs (a few rounds); returns how many the server had closed by then.
async fn drip(mut conns: Vec<TcpStream>) -> usize {
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for c in &mut conns {
            let _ = c.write_all(b"a").await;
        }
    }
    conns.iter().filter(|s| closed_by_peer(s)).count()
}

fn closed_by_peer(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.try_read(&mut buf) {
        Ok(_) => true, // end of stream, or an answer (a 408) before it
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

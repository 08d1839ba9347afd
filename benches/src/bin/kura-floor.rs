//! `kura-floor`: the cheapest server that does what an uncached verified range read
//! must do, on kura's own HTTP stack (tokio's multi-threaded runtime, hyper HTTP/1.1):
//! parse the request, read the range's 16 KiB-aligned sub-blocks from one open file with
//! a positioned read (into a reused buffer, as the gateway does: no zeroing), BLAKE3
//! each sub-block, answer 206 with the range in one write.
//! No routing, authentication, records, placement, caches or metrics.
//!
//! A GET without a `Range` header is answered with the file's first `--small-len`
//! bytes held in memory: the floor of any small-object GET on this stack (what a server
//! costs that already has the object in hand, with no lookup of any kind).
//!
//! Its request rate beside nginx's (benches/e2e/gateway.sh) is the ceiling any gateway
//! that verifies what it serves can reach on this machine with this stack; the gap
//! between it and the gateway is what kura's own layers cost.
//!
//! Usage: `kura-floor --listen 127.0.0.1:PORT --file PATH [--no-hash | --from-memory]
//! [--small-len N]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The verification granularity of kura's local range reads
/// (`kura_cluster::verify::SUB_BLOCK_LEN`): a range reads and hashes every sub-block
/// it touches.
const SUB_BLOCK: u64 = 16 * 1024;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The file whose ranges are served.
    #[arg(long)]
    file: PathBuf,
    /// Skip the BLAKE3 step (to see what hashing costs).
    #[arg(long)]
    no_hash: bool,
    /// Serve ranges from a copy of the whole file in memory (no read, no hash): what
    /// HTTP and the socket write alone cost.
    #[arg(long)]
    from_memory: bool,
    /// Bytes a GET without a range is answered with (from memory).
    #[arg(long, default_value_t = 4096)]
    small_len: u64,
}

/// Read buffers kept for reuse; a buffer returns when the last `Bytes` cut from it drops.
const BUFS_KEPT: usize = 64;

#[derive(Clone, Default)]
struct Bufs(Arc<Mutex<Vec<Vec<u8>>>>);

/// A buffer from [`Bufs`], `len` bytes in use.
struct Buf {
    buf: Vec<u8>,
    len: usize,
    home: Bufs,
}

impl Bufs {
    fn take(&self, len: usize) -> Buf {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut buf = kept.unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        Buf {
            buf,
            len,
            home: self.clone(),
        }
    }
}

impl Buf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl AsRef<[u8]> for Buf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let mut kept = self.home.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < BUFS_KEPT {
            kept.push(std::mem::take(&mut self.buf));
        }
    }
}

struct Served {
    bufs: Bufs,
    file: std::fs::File,
    len: u64,
    hash: bool,
    small: Bytes,
    whole: Option<Bytes>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = std::fs::File::open(&args.file).with_context(|| format!("{:?}", args.file))?;
    let len = file.metadata()?.len();
    let mut small = vec![0u8; args.small_len.min(len) as usize];
    file.read_exact_at(&mut small, 0)?;
    let whole = if args.from_memory {
        Some(Bytes::from(std::fs::read(&args.file)?))
    } else {
        None
    };
    let served = Arc::new(Served {
        bufs: Bufs::default(),
        whole,
        file,
        len,
        hash: !args.no_hash,
        small: small.into(),
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let served = served.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let served = served.clone();
                async move { Ok::<_, Infallible>(answer(&served, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(served: &Served, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if !req.headers().contains_key("range") {
        return Response::new(Full::new(served.small.clone()));
    }
    let Some((first, last)) = range(req, served.len) else {
        return status(StatusCode::RANGE_NOT_SATISFIABLE);
    };
    let content_range = format!("bytes {first}-{last}/{}", served.len);
    if let Some(whole) = &served.whole {
        let body = whole.slice(first as usize..=last as usize);
        return partial(content_range, body);
    }
    let start = first - first % SUB_BLOCK;
    let end = (last + 1).div_ceil(SUB_BLOCK) * SUB_BLOCK;
    let end = end.min(served.len);
    let mut buf = served.bufs.take((end - start) as usize);
    if served.file.read_exact_at(buf.as_mut(), start).is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    }
    if served.hash {
        for sub in buf.as_ref().chunks(SUB_BLOCK as usize) {
            std::hint::black_box(blake3::hash(sub));
        }
    }
    let body = Bytes::from_owner(buf).slice((first - start) as usize..=(last - start) as usize);
    partial(content_range, body)
}

fn partial(content_range: String, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header("content-range", content_range)
        .body(Full::new(body))
        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR))
}

fn range(req: &Request<Incoming>, len: u64) -> Option<(u64, u64)> {
    let v = req.headers().get("range")?.to_str().ok()?;
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b && b < len).then_some((a, b))
}

fn status(s: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = s;
    r
}

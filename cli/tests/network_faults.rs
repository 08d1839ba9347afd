//! Network faults between machines: the gateway and three nodes each in their own network
//! namespace on one switch (`common::Lan`), links cut and restored with `ip link set
//! down/up` — packets vanish, nothing is refused or reset.
//!
//! 1. A node is cut off mid-upload: every upload is still acknowledged (W = 2 of 3), and
//!    every acknowledged object reads back whole and in ranges while it is away.
//! 2. It comes back and another node is cut off while large objects are being streamed:
//!    every read completes with exactly the bytes written (from the reachable replicas;
//!    nothing served twice, nothing corrupted).
//! 3. Both are back: within a minute every node holds every object's record and chunks
//!    again. Neither node restarted, so this is the gateway's catch-up request (its
//!    prober saw them fail and answer again), not a restart's.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::{
    copies_missing, node_args_in_zone, random_bytes, spawn_uploads, test_seed, wait_for_map,
    wait_until_count, GatewayClient, KuraProcess, Lan, API_KEY, SECRET,
};
use kura_cluster::client::NodeClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{header, Method, StatusCode};

const BUCKET: &str = "netfaults";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// Uploads of phase 1; the link is cut after [`CUT_AFTER_ACKS`] are acknowledged.
const UPLOADS: usize = 40;
const CUT_AFTER_ACKS: usize = 10;
const CONCURRENCY: usize = 4;
/// Object sizes up to two 4 MiB chunks.
const MAX_LEN: usize = 7 * 1024 * 1024;
/// How long after the links are back every copy must be in place.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(60);

struct Net {
    lan: Lan,
    nodes: Vec<KuraProcess>,
    gateway: KuraProcess,
    _data: tempfile::TempDir,
}

async fn start() -> Result<Net> {
    let lan = Lan::new(&["gw", "n1", "n2", "n3"])?;
    let data = tempfile::Builder::new().prefix("kura-netns-").tempdir()?;
    let mut nodes = Vec::new();
    for (i, id) in NODES.iter().enumerate() {
        let args = node_args_in_zone(&data.path().join(id), id, &format!("z{}", i + 1));
        nodes.push(KuraProcess::start_in_netns(id, args, &lan.ns(id), lan.ip(id)).await?);
    }
    let spec = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}={}@z{}", n.name(), n.addr(), i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let args = [
        "gateway",
        "--nodes",
        &spec,
        "--api-keys",
        API_KEY,
        "--cluster-secret",
        SECRET,
    ];
    let gateway = KuraProcess::start_in_netns("gateway", args, &lan.ns("gw"), lan.ip("gw")).await?;
    Ok(Net {
        lan,
        nodes,
        gateway,
        _data: data,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_links_lose_nothing_and_nodes_catch_up_when_back() -> Result<()> {
    let net = start().await?;
    let gw = GatewayClient::new(net.gateway.addr())?;
    let nodes: Vec<NodeClient> = net
        .nodes
        .iter()
        .map(|n| NodeClient::new(&n.url(), SECRET).map_err(Into::into))
        .collect::<Result<_>>()?;
    wait_for_map(&nodes).await?;
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let objects: Vec<(String, u64, usize)> = (0..UPLOADS)
        .map(|i| {
            (
                format!("obj/{i:03}"),
                seed ^ (i as u64) << 8,
                rng.random_range(0..MAX_LEN),
            )
        })
        .collect();

    // 1. n2 cut off mid-upload.
    let (uploads, acked) = spawn_uploads(&gw, BUCKET, objects.clone(), CONCURRENCY);
    wait_until_count(&acked, CUT_AFTER_ACKS).await?;
    net.lan.cut("n2")?;
    let at_cut = acked.load(Ordering::SeqCst);
    for r in uploads.await? {
        r?;
    }
    eprintln!("n2 cut off after {at_cut} of {UPLOADS} uploads; every upload acknowledged");
    for (key, s, len) in &objects {
        check_read(&gw, key, *s, *len, &mut rng).await?;
    }
    eprintln!("every object read whole and in a range with n2 away");

    // 2. n2 back; n3 cut off while large objects stream.
    net.lan.restore("n2")?;
    let large: Vec<_> = objects.iter().filter(|o| o.2 > 4 << 20).cloned().collect();
    ensure!(
        large.len() >= 4,
        "too few two-chunk objects ({})",
        large.len()
    );
    let mut reads = Vec::new();
    for (key, s, len) in large.clone() {
        let resp = gw.object(Method::GET, BUCKET, &key).send().await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "GET {key}: {}",
            resp.status()
        );
        reads.push(tokio::spawn(async move {
            let body = resp
                .bytes()
                .await
                .with_context(|| format!("reading {key}"))?;
            ensure!(body.len() == len, "{key}: {} bytes of {len}", body.len());
            ensure!(body == random_bytes(s, len), "{key}: wrong bytes");
            anyhow::Ok(())
        }));
    }
    net.lan.cut("n3")?;
    for r in reads {
        r.await??;
    }
    for (key, s, len) in &large {
        check_read(&gw, key, *s, *len, &mut rng).await?;
    }
    eprintln!(
        "{} streams cut across n3's loss completed intact",
        large.len()
    );

    // 3. Everything back: every copy in place within a minute, without a restart.
    net.lan.restore("n3")?;
    let back = Instant::now();
    let keys: Vec<String> = objects.iter().map(|o| o.0.clone()).collect();
    loop {
        let last = match copies_missing(&nodes, BUCKET, &keys).await {
            Ok(0) => break,
            Ok(n) => format!("{n} copies still missing"),
            Err(e) => format!("{e:#}"),
        };
        if back.elapsed() > CATCH_UP_WITHIN {
            bail!("not caught up {CATCH_UP_WITHIN:?} after the links came back: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "all copies in place {} ms after the links came back",
        back.elapsed().as_millis()
    );
    common::stop_all(std::iter::once(net.gateway).chain(net.nodes)).await
}

/// Reads `key` whole and one random range, checking the bytes.
async fn check_read(
    gw: &GatewayClient,
    key: &str,
    seed: u64,
    len: usize,
    rng: &mut StdRng,
) -> Result<()> {
    let data = random_bytes(seed, len);
    let got = gw
        .get(BUCKET, key)
        .await?
        .with_context(|| format!("{key} missing"))?;
    ensure!(got == data, "{key}: wrong bytes ({} of {len})", got.len());
    if len == 0 {
        return Ok(());
    }
    let a = rng.random_range(0..len);
    let b = rng.random_range(a..len.min(a + (1 << 20)));
    let resp = gw
        .object(Method::GET, BUCKET, key)
        .header(header::RANGE, format!("bytes={a}-{b}"))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::PARTIAL_CONTENT,
        "range of {key}: {}",
        resp.status()
    );
    ensure!(
        resp.bytes().await?[..] == data[a..=b],
        "{key}: wrong range bytes"
    );
    Ok(())
}

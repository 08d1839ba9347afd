//! The gateway's data path when nodes fail, across real processes: three `kura node`s in
//! three zones and a `kura gateway` (see `common::Cluster`).
//!
//! - a node SIGKILLed during concurrent uploads loses no acknowledged object, while it
//!   is down and after it restarts on its port;
//! - bytes flipped in one node's copy of a chunk are never served;
//! - a dead or hung node costs one timeout, not one per request;
//! - requests that miss the record cache for one key while its read hangs share that
//!   one read.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::{
    blake3_hex, metric_value, random_bytes, stored_chunks, test_seed, Cluster, GatewayClient,
    PutReply, CHUNK, ZONES,
};
use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{header, Method, StatusCode};

const BUCKET: &str = "media";
/// Concurrent uploads when a node is killed, and their size range.
const UPLOADS: usize = 50;
const UPLOAD_LEN: std::ops::RangeInclusive<usize> = 100 * 1024..=12 * 1024 * 1024;
/// Acknowledged uploads before the kill.
const KILL_AFTER_ACKS: usize = 8;
/// Concurrent reads while verifying.
const VERIFY_CONCURRENCY: usize = 4;
/// The gateway's health prober runs every second; this is enough for it to see a
/// restarted node.
const PROBER_CATCH_UP: Duration = Duration::from_millis(1500);
/// Time for the prober to see a hung node: its interval (1 s) plus its probe timeout
/// (800 ms), with a margin.
const HUNG_NOTICED: Duration = Duration::from_millis(2500);

/// One upload: what was sent and what the gateway answered.
struct Upload {
    key: String,
    len: usize,
    /// blake3 hex of what was sent.
    hash: String,
    outcome: Result<PutReply, String>,
}

/// Checks every upload through the gateway: acknowledged ones read back whole and
/// correct and are listed; failed ones are absent or whole and correct, never partial.
async fn verify_uploads(gw: &GatewayClient, uploads: &[Upload], when: &str) -> Result<()> {
    let listed: BTreeMap<String, common::ListedObject> = gw
        .list_all(BUCKET, "up/", 17)
        .await
        .with_context(|| format!("{when}: listing"))?
        .into_iter()
        .map(|o| (o.key.clone(), o))
        .collect();
    let listed_ref = &listed;
    let problems: Vec<String> = stream::iter(uploads)
        .map(|u| async move {
            let listed = listed_ref;
            let what = match &u.outcome {
                Ok(_) => "acknowledged",
                Err(_) => "failed",
            };
            let body = match gw.get(BUCKET, &u.key).await {
                Ok(b) => b,
                Err(e) => return Some(format!("{what} {}: {e:#}", u.key)),
            };
            match (&u.outcome, body) {
                (Ok(_), None) => Some(format!("acknowledged {} is lost (404)", u.key)),
                (_, Some(b)) if b.len() != u.len || blake3_hex(&b) != u.hash => Some(format!(
                    "{what} {}: served {} bytes hashing to {}, sent {} bytes hashing to {}",
                    u.key,
                    b.len(),
                    blake3_hex(&b),
                    u.len,
                    u.hash
                )),
                (_, Some(_)) => match listed.get(&u.key) {
                    Some(o) if o.etag == u.hash && o.size == u.len as u64 => None,
                    other => Some(format!("{what} {}: listed as {other:?}", u.key)),
                },
                (Err(_), None) => listed
                    .get(&u.key)
                    .map(|o| format!("failed {} is absent but listed as {o:?}", u.key)),
            }
        })
        .buffer_unordered(VERIFY_CONCURRENCY)
        .filter_map(|p| async move { p })
        .collect()
        .await;
    if !problems.is_empty() {
        bail!(
            "{when}: {} problems:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    let known: Vec<&str> = uploads.iter().map(|u| u.key.as_str()).collect();
    for key in listed.keys() {
        ensure!(
            known.contains(&key.as_str()),
            "{when}: {key} listed but never sent"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_one_node_during_concurrent_uploads_loses_no_acknowledged_object() -> Result<()> {
    sigkill_during_uploads(UPLOADS, UPLOAD_LEN, KILL_AFTER_ACKS).await
}

/// Small objects (kept whole in their records), 64 at a time: their records reach each
/// node in batches (`kura_cluster::peers::batch`), and an acknowledged one must still
/// be durable on W nodes when one is SIGKILLed mid-batch.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_one_node_during_small_uploads_loses_no_acknowledged_object() -> Result<()> {
    sigkill_during_uploads(SMALL_UPLOADS, 1..=64 * 1024, SMALL_UPLOADS / 10).await
}

/// Small uploads in the test above; at most 64 at once (one client's connections).
const SMALL_UPLOADS: usize = 1000;

async fn sigkill_during_uploads(
    count: usize,
    lens: std::ops::RangeInclusive<usize>,
    kill_after_acks: usize,
) -> Result<()> {
    let test_started = Instant::now();
    let mut rng = StdRng::seed_from_u64(test_seed());
    let mut cluster = Cluster::start().await?;
    let gw = cluster.client()?;
    let victim = rng.random_range(0..3);

    let acked = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let at_once = Arc::new(tokio::sync::Semaphore::new(64));
    let started = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (gw, acked, finished) = (gw.clone(), acked.clone(), finished.clone());
            let at_once = at_once.clone();
            let (seed, len) = (rng.random::<u64>(), rng.random_range(lens.clone()));
            tokio::spawn(async move {
                let _slot = at_once.acquire_owned().await;
                let key = format!("up/{i:04}");
                let data = random_bytes(seed, len);
                let hash = blake3_hex(&data);
                let outcome = gw
                    .put(BUCKET, &key, data)
                    .await
                    .map_err(|e| format!("{e:#}"));
                if let Ok(reply) = &outcome {
                    acked.fetch_add(1, Ordering::SeqCst);
                    let want = (key.as_str(), len as u64, hash.as_str());
                    if (reply.key.as_str(), reply.size, reply.etag.as_str()) != want
                        || reply.chunks != stored_chunks(len as u64)
                    {
                        panic!("{key}: 201 answer {reply:?} does not describe what was sent");
                    }
                }
                finished.fetch_add(1, Ordering::SeqCst);
                Upload {
                    key,
                    len,
                    hash,
                    outcome,
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < kill_after_acks {
        ensure!(
            finished.load(Ordering::SeqCst) < count,
            "every upload ended, only {} acknowledged",
            acked.load(Ordering::SeqCst)
        );
        ensure!(
            Instant::now() < deadline,
            "too few uploads acknowledged in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cluster.kill_node(victim).await?;
    let (acked_at_kill, in_flight_at_kill) = (
        acked.load(Ordering::SeqCst),
        count - finished.load(Ordering::SeqCst),
    );
    eprintln!(
        "SIGKILLed {} {} ms after the uploads started: {acked_at_kill} acknowledged, \
         {in_flight_at_kill} in flight",
        Cluster::node_id(victim),
        started.elapsed().as_millis()
    );
    ensure!(
        in_flight_at_kill > 0,
        "no upload was in flight at the kill: nothing was tested"
    );

    let mut uploads = Vec::new();
    for t in tasks {
        uploads.push(
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .context("an upload did not end within 120 s")??,
        );
    }
    let failed: Vec<_> = uploads
        .iter()
        .filter_map(|u| u.outcome.as_ref().err().map(|e| format!("{}: {e}", u.key)))
        .collect();
    let total: usize = uploads.iter().map(|u| u.len).sum();
    eprintln!(
        "{} of {count} uploads acknowledged ({total} bytes sent) in {} ms; failed: {failed:?}",
        count - failed.len(),
        started.elapsed().as_millis()
    );

    let t = Instant::now();
    verify_uploads(&gw, &uploads, "with the node down").await?;
    eprintln!(
        "verified with {} down in {} ms",
        Cluster::node_id(victim),
        t.elapsed().as_millis()
    );

    cluster.restart_node(victim).await?;
    tokio::time::sleep(PROBER_CATCH_UP).await;
    let t = Instant::now();
    verify_uploads(&gw, &uploads, "after the restart").await?;
    let metrics = gw.metrics().await?;
    eprintln!(
        "verified after the restart in {} ms; gateway: missing replicas {:?}, record repairs {:?}",
        t.elapsed().as_millis(),
        metric_value(&metrics, "kura_gateway_missing_replicas_total"),
        metric_value(&metrics, "kura_gateway_record_repairs_total"),
    );
    cluster.stop().await?;
    eprintln!("done in {:.1} s", test_started.elapsed().as_secs_f64());
    Ok(())
}

/// XORs `0xff` into `len` bytes of `path` at `offset`.
fn flip_bytes(path: &std::path::Path, offset: u64, len: usize) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    for b in &mut buf {
        *b ^= 0xff;
    }
    file.write_all_at(&buf, offset)?;
    file.sync_all()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn flipped_bytes_in_one_replica_are_never_served() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(test_seed());
    // The victim is n1 and the gateway is in n1's zone: it asks n1 first for every chunk
    // (all three nodes own every chunk, all are up), so every corrupt copy is met on the
    // first read of its chunk, whatever order equally good replicas would otherwise
    // take.
    let victim = 0;
    let cluster = Cluster::start_with_gateway_args(&["--zone", ZONES[victim]]).await?;
    let gw = cluster.client()?;
    let key = "corrupt/five-chunks.bin";
    let len = (4 * CHUNK + rng.random_range(100_000..CHUNK)) as usize;
    let data = random_bytes(rng.random(), len);
    gw.put(BUCKET, key, data.clone()).await?;

    // The object's chunks, from a node's record (W = 2 of 3 hold it when the upload is
    // acknowledged; the third copy may still be on its way).
    let mut record = None;
    for i in 0..cluster.nodes.len() {
        if let Some(r) = cluster.node_client(i)?.get_record(BUCKET, key).await? {
            record = Some(r);
            break;
        }
    }
    let record = record.context("no node holds the record")?;
    ensure!(record.chunks.len() == 5, "{} chunks", record.chunks.len());
    let node = cluster.node_client(victim)?;

    // Flip 3 bytes in every chunk file of the object on the victim (once the background
    // write of the third copy has landed there).
    let mut flipped = Vec::new(); // object offsets of the flipped bytes
    let mut chunk_start = 0u64;
    for c in &record.chunks {
        let deadline = Instant::now() + Duration::from_secs(20);
        while node.head_chunk(&c.id).await? != Some(c.size) {
            ensure!(
                Instant::now() < deadline,
                "chunk {} never reached the victim",
                c.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let path = cluster.chunk_file(victim, &c.id.to_hex());
        let at = rng.random_range(0..c.size - 3);
        flip_bytes(&path, at, 3)?;
        flipped.push(chunk_start + at);
        chunk_start += c.size;
    }
    eprintln!(
        "flipped bytes in {} chunk files on {}",
        flipped.len(),
        Cluster::node_id(victim)
    );

    let check_range = |first: u64, last: u64| {
        let gw = &gw;
        let data = &data;
        async move {
            let range = format!("bytes={first}-{last}");
            let resp = gw
                .object(Method::GET, BUCKET, key)
                .header(header::RANGE, &range)
                .send()
                .await?;
            ensure!(
                resp.status() == StatusCode::PARTIAL_CONTENT,
                "{range}: {}",
                resp.status()
            );
            let body = resp
                .bytes()
                .await
                .with_context(|| format!("{range}: body"))?;
            ensure!(
                body[..] == data[first as usize..=last as usize],
                "{range}: wrong bytes served"
            );
            anyhow::Ok(())
        }
    };
    let size = len as u64;
    // Ranges over the flipped bytes: the first read of each chunk meets the bad copy.
    for &at in &flipped {
        check_range(at.saturating_sub(100), (at + 100).min(size - 1)).await?;
    }
    // Whole reads, ranges anywhere, and the flipped spots again.
    for round in 0..3 {
        let body = gw.get(BUCKET, key).await?.context("object gone")?;
        ensure!(
            body[..] == data[..],
            "round {round}: whole read served wrong bytes"
        );
        for _ in 0..10 {
            let first = rng.random_range(0..size);
            check_range(
                first,
                (first + rng.random_range(0..CHUNK + 100)).min(size - 1),
            )
            .await?;
        }
        for &at in &flipped {
            check_range(at.saturating_sub(70_000), (at + 70_000).min(size - 1)).await?;
        }
    }

    // Each bad copy is reported by the gateway when it is met; the victim re-hashes it
    // and quarantines it (in the background of the read that met it).
    let n = flipped.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = node.status().await?;
        if status.quarantined >= n || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let gw_corrupt = metric_value(&gw.metrics().await?, "kura_gateway_corrupt_replicas_total");
    let node_failures = metric_value(
        &cluster.node_metrics(victim).await?,
        "kura_chunk_verify_failures_total",
    );
    eprintln!(
        "gateway corrupt replicas {gw_corrupt:?}, victim verify failures {node_failures:?}, \
         quarantined {}",
        status.quarantined
    );
    ensure!(
        gw_corrupt.is_some_and(|v| v >= n as f64),
        "the gateway counted fewer than {n} corrupt replicas: {gw_corrupt:?}"
    );
    ensure!(
        node_failures.is_some_and(|v| v >= n as f64),
        "the victim counted fewer than {n} verification failures: {node_failures:?}"
    );
    ensure!(
        status.quarantined == n,
        "the victim quarantined {} chunks, not the {n} it holds bad",
        status.quarantined
    );
    cluster.stop().await
}

/// Reads every object once, sequentially; returns the slowest read.
async fn read_all(
    gw: &GatewayClient,
    objects: &[(String, Vec<u8>)],
    what: &str,
) -> Result<Duration> {
    let mut slowest = Duration::ZERO;
    for (key, data) in objects {
        let t = Instant::now();
        let got = gw
            .get(BUCKET, key)
            .await
            .with_context(|| format!("{what}: GET {key}"))?
            .with_context(|| format!("{what}: {key} not found"))?;
        ensure!(got[..] == data[..], "{what}: {key}: wrong content");
        slowest = slowest.max(t.elapsed());
    }
    Ok(slowest)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_node_costs_one_timeout_not_one_per_request() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(test_seed());
    let mut cluster = Cluster::start().await?;
    let gw = cluster.client()?;
    let mut objects = Vec::new();
    for i in 0..20 {
        let data = random_bytes(rng.random(), rng.random_range(1_000..300_000));
        let key = format!("small/{i:02}");
        gw.put(BUCKET, &key, data.clone()).await?;
        objects.push((key, data));
    }
    let limit = Duration::from_secs(20);

    // Dead: SIGKILLed, connections refused.
    let dead = rng.random_range(0..3);
    cluster.kill_node(dead).await?;
    let t = Instant::now();
    let slowest = read_all(&gw, &objects, "one node dead").await?;
    let took = t.elapsed();
    eprintln!(
        "{} dead: 20 GETs in {} ms, slowest {} ms",
        Cluster::node_id(dead),
        took.as_millis(),
        slowest.as_millis()
    );
    ensure!(took < limit, "20 GETs with a dead node took {took:?}");
    let listed = gw.list_all(BUCKET, "small/", 7).await?;
    ensure!(
        listed.len() == objects.len(),
        "{} listed with a node dead",
        listed.len()
    );
    cluster.restart_node(dead).await?;
    tokio::time::sleep(PROBER_CATCH_UP).await;

    // Hung: SIGSTOPped, connections accepted but never answered.
    let hung = (dead + 1) % 3;
    cluster.nodes[hung].pause()?;
    let paused_at = Instant::now();
    let outcome = async {
        let t = Instant::now();
        let slowest = read_all(&gw, &objects, "one node hung").await?;
        let took = t.elapsed();
        eprintln!(
            "{} hung: 20 GETs in {} ms, slowest {} ms",
            Cluster::node_id(hung),
            took.as_millis(),
            slowest.as_millis()
        );
        ensure!(took < limit, "20 GETs with a hung node took {took:?}");
        let t = Instant::now();
        for i in 0..5 {
            let data = random_bytes(rng.random(), 200_000);
            gw.put(BUCKET, &format!("hung/{i}"), data).await?;
        }
        eprintln!("5 PUTs with a hung node in {} ms", t.elapsed().as_millis());
        // A listing asks every node; once the prober has seen the hang, the hung node
        // must be left out rather than waited for on every listing.
        tokio::time::sleep_until((paused_at + HUNG_NOTICED).into()).await;
        let t = Instant::now();
        for _ in 0..3 {
            let listed = gw.list_all(BUCKET, "small/", 1000).await?;
            ensure!(
                listed.len() == objects.len(),
                "{} listed with a node hung",
                listed.len()
            );
        }
        let took = t.elapsed();
        eprintln!("3 listings with a hung node in {} ms", took.as_millis());
        ensure!(took < limit, "3 listings with a hung node took {took:?}");
        anyhow::Ok(())
    }
    .await;
    cluster.nodes[hung].resume()?;
    outcome?;
    cluster.stop().await
}

/// Concurrent GETs of one key when its record read hangs.
const SHARED_READERS: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn requests_missing_one_key_share_its_record_read() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(test_seed());
    let mut cluster = Cluster::start().await?;
    let data = random_bytes(rng.random(), 10_000);
    cluster
        .client()?
        .put(BUCKET, "shared", data.clone())
        .await?;
    // A fresh gateway has not cached the record; with two of three nodes hung, its read
    // quorum (R=2) cannot be met until they resume.
    cluster.gateway.kill().await?;
    cluster.gateway.restart_on_same_port().await?;
    let gw = Arc::new(cluster.client()?);
    let hung = [0, 1];
    for i in hung {
        cluster.nodes[i].pause()?;
    }
    let outcome = async {
        let readers: Vec<_> = (0..SHARED_READERS)
            .map(|_| {
                let gw = gw.clone();
                tokio::spawn(async move { gw.get(BUCKET, "shared").await })
            })
            .collect();
        // One leads the read; every other request waits for its answer.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = gw.metrics().await?;
            let waiting = metric_value(&metrics, "kura_gateway_record_reads_waiting");
            if waiting == Some((SHARED_READERS - 1) as f64) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{waiting:?} requests wait for the shared read"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for i in hung {
            cluster.nodes[i].resume()?;
        }
        for r in readers {
            let got = r.await??.context("the object was not found")?;
            ensure!(got[..] == data[..], "a reader got other bytes");
        }
        let metrics = gw.metrics().await?;
        let misses = metric_value(&metrics, "kura_gateway_record_cache_misses_total");
        let shared = metric_value(&metrics, "kura_gateway_record_reads_shared_total");
        ensure!(misses == Some(1.0), "{misses:?} quorum reads");
        ensure!(
            shared == Some((SHARED_READERS - 1) as f64),
            "{shared:?} reads shared"
        );
        anyhow::Ok(())
    }
    .await;
    for i in hung {
        cluster.nodes[i].resume()?;
    }
    outcome?;
    cluster.stop().await
}

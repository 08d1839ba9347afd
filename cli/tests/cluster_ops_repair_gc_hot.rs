//! Keeping the cluster healthy, across real processes (`kura node`s and a `kura gateway`
//! on loopback, see `common::OpsCluster`; membership changed with the real `kura admin`):
//!
//! - a node whose disk is gone (SIGKILLed, data directory deleted, declared lost) is
//!   rebuilt from the survivors: every chunk and record is back on 3 live nodes, and
//!   exactly one copy of each lost copy was sent;
//! - garbage collection reclaims exactly the chunks only deleted objects used, while
//!   uploads that re-use those chunks (identical content, shared prefixes) race with GC
//!   passes on every node and lose nothing;
//! - a hot object gets extra (pinned) copies on further nodes, reads spread over them,
//!   and they are deleted again once it cools down.
//!
//! Like `cluster_ops.rs`, the tests take a lock so they run one at a time; the GC test
//! relies on every upload finishing within the 2 s grace period it configures (GC's
//! contract: uploads finish within the grace), which holds easily unless the machine is
//! badly overloaded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::{
    chunk_owners, data_set, metric_value, test_seed, upload_all, verify_all, OpsCluster,
    TestObject, CHUNK,
};
use kura_cluster::ring::{record_key, Ring};
use kura_cluster::ChunkId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};

const BUCKET: &str = "media";
const MIB: u64 = 1024 * 1024;
const UPLOAD_CONCURRENCY: usize = 4;
const VERIFY_CONCURRENCY: usize = 4;
const REPAIR_TIMEOUT: Duration = Duration::from_secs(120);

/// One test at a time (see the module doc).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Distinct chunks of `objects` with their sizes.
fn chunk_set<'a>(objects: impl IntoIterator<Item = &'a TestObject>) -> BTreeMap<ChunkId, u64> {
    objects.into_iter().flat_map(|o| o.chunks.clone()).collect()
}

/// Ids of the running nodes that answer `HEAD /v1/chunks/{id}` with 200.
async fn holders(c: &OpsCluster, id: &ChunkId) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for i in c.running() {
        if c.node_client(i)?.head_chunk(id).await?.is_some() {
            out.push(c.id(i).to_string());
        }
    }
    Ok(out)
}

/// Sum of `bytes_used` over the running nodes.
async fn bytes_used(c: &OpsCluster) -> Result<u64> {
    let mut sum = 0;
    for i in c.running() {
        sum += c.status(i).await?.bytes_used;
    }
    Ok(sum)
}

/// Polls [`bytes_used`] until it is `want` (background replica writes finishing), for
/// at most 10 s; returns the last value seen.
async fn settle_bytes_used(c: &OpsCluster, want: u64) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = bytes_used(c).await?;
        if got == want || Instant::now() > deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_node_is_rebuilt_from_survivors() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let objects = data_set(&mut rng, "lost/", 128 * MIB, 1024..=8 * MIB);
    let mut c = OpsCluster::start(4, &[], &[]).await?;
    let gw = c.client()?;
    upload_all(&gw, BUCKET, &objects, UPLOAD_CONCURRENCY).await?;
    let before = c.node_map(0).await?;
    let chunks = chunk_set(&objects);

    let lost = 2; // n3
    c.kill_node(lost).await?;
    std::fs::remove_dir_all(c.node_data(lost))
        .with_context(|| format!("deleting {}", c.node_data(lost).display()))?;
    let t = Instant::now();
    let out = c.admin_ok(&["node", "lost", "n3"]).await?;
    let epoch = before.epoch + 1;
    ensure!(out.contains(&format!("epoch {epoch}")), "node lost: {out}");
    let progress = c.wait_rebalanced(epoch, REPAIR_TIMEOUT).await?;
    let moved: u64 = progress
        .iter()
        .map(|(_, p)| p["moved_bytes"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "repaired in {:.1?}: moved {moved} bytes; {progress:?}",
        t.elapsed()
    );
    ensure!(
        progress.iter().all(|(_, p)| p["repair"] == true),
        "the passes after `node lost` were not repair passes: {progress:?}"
    );
    // Exactly one sender per lost copy: the bytes of the chunks n3 held.
    let lost_bytes: u64 = chunks
        .iter()
        .filter(|(id, _)| chunk_owners(&before, id).iter().any(|o| o == "n3"))
        .map(|(_, size)| size)
        .sum();
    ensure!(
        moved == lost_bytes,
        "repair sent {moved} bytes; the copies n3 held are {lost_bytes} bytes"
    );

    let map = c.node_map(0).await?;
    let ring = Ring::new(&map);
    let mut problems = Vec::new();
    for o in &objects {
        // The record, from each of its owners: present, current, and naming the chunks
        // that were uploaded.
        let owners = ring.placement(&record_key(BUCKET, &o.key), map.replicas).0;
        ensure!(owners.len() == 3, "{}: owners {owners:?}", o.key);
        let mut record = None;
        for owner in &owners {
            let i = c
                .nodes
                .iter()
                .position(|n| n.name() == owner.id)
                .context("owner")?;
            match c.node_client(i)?.get_record(BUCKET, &o.key).await? {
                Some(r) if r.etag == o.etag && !r.deleted => record = Some(r),
                other => problems.push(format!("{}: record on {}: {other:?}", o.key, owner.id)),
            }
        }
        let Some(record) = record else { continue };
        let ids: Vec<ChunkId> = record.chunks.iter().map(|c| c.id).collect();
        let want: Vec<ChunkId> = o.chunks.iter().map(|c| c.0).collect();
        ensure!(ids == want, "{}: record names {ids:?}", o.key);
        for id in ids {
            let mut held = holders(&c, &id).await?;
            held.sort();
            let mut owners = chunk_owners(&map, &id);
            owners.sort();
            if held != owners || held.len() != 3 {
                problems.push(format!(
                    "{}: chunk {id} on {held:?}, owners {owners:?}",
                    o.key
                ));
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "after repair:\n  {}",
        problems.join("\n  ")
    );
    verify_all(&gw, BUCKET, &objects, VERIFY_CONCURRENCY).await?;
    let status = c.admin_ok(&["status"]).await?;
    ensure!(
        status
            .lines()
            .any(|l| l.starts_with("n3")
                && l.split_whitespace().filter(|w| *w == "lost").count() == 2),
        "kura admin status does not show n3 lost (state and health):\n{status}"
    );
    c.stop().await?;
    eprintln!("test took {:.1?}", started.elapsed());
    Ok(())
}

/// Calls `POST /v1/gc/run` on every running node, over and over, until `stop`; counts
/// passes and chunks deleted, and fails on the first error.
async fn gc_loop(
    clients: Vec<kura_cluster::client::NodeClient>,
    stop: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
    deleted: Arc<AtomicU64>,
) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        for client in &clients {
            let report = client.run_gc().await.context("GC pass")?;
            passes.fetch_add(1, Ordering::Relaxed);
            deleted.fetch_add(report["deleted"].as_u64().unwrap_or(0), Ordering::Relaxed);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_objects_are_reclaimed_and_concurrent_uploads_sharing_chunks_lose_nothing(
) -> Result<()> {
    const GRACE: Duration = Duration::from_secs(2);
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let c = OpsCluster::start(3, &["--gc-interval-secs", "0", "--gc-grace-secs", "2"], &[]).await?;
    let gw = c.client()?;
    // Sizes from 1 KiB (inline chunks) to 14 MiB (four chunks).
    let kept = data_set(&mut rng, "kept/", 40 * MIB, 1024..=14 * MIB);
    let deleted = data_set(&mut rng, "gone/", 120 * MIB, 1024..=14 * MIB);
    ensure!(
        deleted.len() >= 9,
        "only {} objects to delete",
        deleted.len()
    );
    upload_all(&gw, BUCKET, &kept, UPLOAD_CONCURRENCY).await?;
    upload_all(&gw, BUCKET, &deleted, UPLOAD_CONCURRENCY).await?;
    let initial = chunk_set(kept.iter().chain(&deleted));
    let want = 3 * initial.values().sum::<u64>();
    let b0 = settle_bytes_used(&c, want).await?;
    ensure!(
        b0 == want,
        "nodes use {b0} bytes, 3 copies of the data are {want}"
    );

    // New objects: a third of the deleted ones again under new keys (same content), a
    // third sharing the full chunks of their prefix (same stream, other length), and a
    // few of fresh content. The last third of the deleted objects shares nothing.
    let third = deleted.len() / 3;
    let mut fresh: Vec<TestObject> = Vec::new();
    for (i, d) in deleted[..third].iter().enumerate() {
        fresh.push(TestObject::new(&format!("new/same-{i}"), d.seed, d.len));
    }
    for (i, d) in deleted[third..2 * third].iter().enumerate() {
        let len = if d.len > CHUNK {
            d.len - rng.random_range(1..=(d.len - CHUNK).min(CHUNK))
        } else {
            d.len + rng.random_range(1..=CHUNK)
        };
        fresh.push(TestObject::new(&format!("new/prefix-{i}"), d.seed, len));
    }
    fresh.extend(data_set(&mut rng, "new/fresh-", 12 * MIB, 1024..=6 * MIB));

    for d in &deleted {
        let resp = gw.object(Method::DELETE, BUCKET, &d.key).send().await?;
        ensure!(
            resp.status() == StatusCode::NO_CONTENT,
            "DELETE {}: {}",
            d.key,
            resp.status()
        );
    }
    // The deleted objects' chunks are older than the grace from now on.
    tokio::time::sleep(GRACE + Duration::from_millis(200)).await;

    let clients = c
        .running()
        .into_iter()
        .map(|i| c.node_client(i))
        .collect::<Result<Vec<_>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let gc_deleted = Arc::new(AtomicU64::new(0));
    let gc = tokio::spawn(gc_loop(
        clients.clone(),
        stop.clone(),
        passes.clone(),
        gc_deleted.clone(),
    ));
    // Uploads race with the passes: one at a time, with pauses, so that passes run
    // between and during them.
    let mut slowest = Duration::ZERO;
    for o in &fresh {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        let t = Instant::now();
        upload_all(&gw, BUCKET, std::slice::from_ref(o), 1).await?;
        slowest = slowest.max(t.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    gc.await??;
    let racing_passes = passes.load(Ordering::Relaxed);
    eprintln!(
        "{} uploads raced with {racing_passes} GC passes ({} chunks deleted meanwhile); \
         slowest upload {slowest:.1?}",
        fresh.len(),
        gc_deleted.load(Ordering::Relaxed)
    );
    ensure!(
        racing_passes >= 3 * clients.len() as u64,
        "only {racing_passes} GC passes ran during the uploads"
    );

    // After the grace, a last pass on every node.
    tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
    for client in &clients {
        let report = client.run_gc().await?;
        gc_deleted.fetch_add(report["deleted"].as_u64().unwrap_or(0), Ordering::Relaxed);
    }

    let live = chunk_set(kept.iter().chain(&fresh));
    let live_ids: BTreeSet<&ChunkId> = live.keys().collect();
    let deleted_only: u64 = chunk_set(&deleted)
        .iter()
        .filter(|(id, _)| !live_ids.contains(id))
        .map(|(_, s)| s)
        .sum();
    let new_only: u64 = live
        .iter()
        .filter(|(id, _)| !initial.contains_key(id))
        .map(|(_, s)| s)
        .sum();
    let want = 3 * live.values().sum::<u64>();
    let b1 = settle_bytes_used(&c, want).await?;
    eprintln!(
        "bytes used: {b0} before, {b1} after; deleted-only chunks {deleted_only} × 3, \
         new chunks {new_only} × 3; freed {} bytes",
        (b0 + 3 * new_only).saturating_sub(b1)
    );
    let lost_hint = if slowest > GRACE {
        format!(" (an upload took {slowest:?}, over the {GRACE:?} grace GC assumes)")
    } else {
        String::new()
    };
    ensure!(
        b1 == want,
        "nodes use {b1} bytes, 3 copies of the live data are {want}: shrank by {} instead \
         of 3 × {deleted_only}{lost_hint}",
        (b0 + 3 * new_only) as i128 - b1 as i128
    );
    let map = c.node_map(0).await?;
    let mut problems = Vec::new();
    for id in live.keys() {
        let mut held = holders(&c, id).await?;
        held.sort();
        let mut owners = chunk_owners(&map, id);
        owners.sort();
        if held != owners {
            problems.push(format!("chunk {id} on {held:?}, owners {owners:?}"));
        }
    }
    ensure!(
        problems.is_empty(),
        "live chunks not on their 3 owners{lost_hint}:\n  {}",
        problems.join("\n  ")
    );
    let live_objects: Vec<TestObject> = kept.iter().chain(&fresh).cloned().collect();
    verify_all(&gw, BUCKET, &live_objects, VERIFY_CONCURRENCY)
        .await
        .with_context(|| format!("after GC{lost_hint}"))?;
    for d in &deleted {
        ensure!(
            gw.get(BUCKET, &d.key).await?.is_none(),
            "deleted {} still readable",
            d.key
        );
    }
    c.stop().await?;
    eprintln!("test took {:.1?}", started.elapsed());
    Ok(())
}

/// Bytes served by each running node so far (`kura_chunk_bytes_read`), by id.
async fn bytes_read(c: &OpsCluster) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for i in c.running() {
        let text = reqwest::get(format!("{}/metrics", c.nodes[i].url()))
            .await?
            .text()
            .await?;
        out.insert(
            c.id(i).to_string(),
            metric_value(&text, "kura_chunk_bytes_read_total")
                .or_else(|| metric_value(&text, "kura_chunk_bytes_read"))
                .context("no kura_chunk_bytes_read in node metrics")?,
        );
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_object_gets_extra_replicas_and_loses_them_when_cold() -> Result<()> {
    // README: extra copies go after 15 s below a quarter of the threshold. As the
    // gateway counts, it takes 15-30 s: a counting window only closes at a 5 s tick that
    // finds ≥ 5 s elapsed since the window began, which tick jitter makes fail about
    // every other time (10 s windows); the window of the last reads closes up to 10 s
    // after them, then 3 cool windows are needed. 40 s leaves room for a loaded machine.
    const COOL_DEADLINE: Duration = Duration::from_secs(40);
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let seed = test_seed();
    // Reads the chunk cache serves never make an object hot (they add no node load);
    // without the cache every read here reaches the nodes, as reads of content too big
    // or too widely spread to cache do. Over the network: the test counts what each
    // node serves (a gateway reading co-located nodes' files spreads its reads over the
    // same copies, but no node counts them).
    let c = OpsCluster::start(
        5,
        &[],
        &[
            "--hot-reads-per-sec",
            "5",
            "--hot-extra-replicas",
            "2",
            "--chunk-cache-mib",
            "0",
            "--no-local-reads",
        ],
    )
    .await?;
    let gw = c.client()?;
    let hot = TestObject::new("hot/clip", seed, 6 * MIB + 12345);
    let cold = TestObject::new("cold/clip", seed.wrapping_add(1), 3 * MIB);
    upload_all(&gw, BUCKET, &[hot.clone(), cold.clone()], 2).await?;
    let map = c.node_map(0).await?;
    let first = hot.chunks[0].0;
    let mut owners = chunk_owners(&map, &first);
    owners.sort();
    // The background third copy of each chunk may still be on its way.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut held = holders(&c, &first).await?;
        held.sort();
        if held == owners {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "first chunk on {held:?}, owners {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Read it quickly until its first chunk is on all 5 nodes.
    let reads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (gw, hot, reads, stop) = (gw.clone(), hot.clone(), reads.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body = gw.get(BUCKET, &hot.key).await?.context("hot object 404")?;
                ensure!(
                    common::blake3_hex(&body) == hot.etag,
                    "hot object read wrong bytes"
                );
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        })
    };
    let t = Instant::now();
    loop {
        if holders(&c, &first).await?.len() == 5 {
            break;
        }
        if Instant::now() > t + Duration::from_secs(20) || reader.is_finished() {
            stop.store(true, Ordering::Relaxed);
            reader.await??;
            bail!(
                "first chunk of the hot object on {:?} after {} reads in {:.1?}",
                holders(&c, &first).await?,
                reads.load(Ordering::Relaxed),
                t.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "hot after {} reads, {:.1?}: first chunk on 5 nodes",
        reads.load(Ordering::Relaxed),
        t.elapsed()
    );
    let status: serde_json::Value =
        serde_json::from_str(&c.admin_ok(&["status", "--json"]).await?)?;
    let listed = status["hot"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["object"] == format!("{BUCKET}/{}", hot.key))
        .with_context(|| format!("kura admin status --json lists no hot object: {status}"))?;
    ensure!(
        listed["extra_copies"].as_u64() == Some(2 * hot.chunks.len() as u64),
        "hot entry {listed}: expected {} extra copies",
        2 * hot.chunks.len()
    );
    ensure!(
        !status["hot"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["object"] == format!("{BUCKET}/{}", cold.key)),
        "the cold object is listed hot: {status}"
    );
    // Reads now spread over the extra copies too.
    let extras: Vec<String> = c
        .running()
        .into_iter()
        .map(|i| c.id(i).to_string())
        .filter(|id| !owners.contains(id))
        .collect();
    let read_before = bytes_read(&c).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let read_after = bytes_read(&c).await?;
    let by_extras: f64 = extras
        .iter()
        .map(|id| read_after[id] - read_before[id])
        .sum();
    eprintln!("bytes served in 2 s while hot: before {read_before:?}, after {read_after:?}");
    ensure!(
        by_extras > 0.0,
        "the extra copies on {extras:?} served nothing while hot"
    );

    stop.store(true, Ordering::Relaxed);
    reader.await??;
    let cooling = Instant::now();
    loop {
        let mut all_back = true;
        for (id, _) in &hot.chunks {
            let mut held = holders(&c, id).await?;
            held.sort();
            let mut owners = chunk_owners(&map, id);
            owners.sort();
            all_back &= held == owners;
        }
        if all_back {
            break;
        }
        ensure!(
            cooling.elapsed() < COOL_DEADLINE,
            "extra copies still there {COOL_DEADLINE:?} after the reads stopped: first \
             chunk on {:?}",
            holders(&c, &first).await?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "back to 3 copies {:.1?} after the reads stopped; gateway: {:#?}",
        cooling.elapsed(),
        c.gateway
            .log()
            .lines()
            .filter(|l| l.contains("hot:"))
            .collect::<Vec<_>>()
    );
    let status: serde_json::Value =
        serde_json::from_str(&c.admin_ok(&["status", "--json"]).await?)?;
    ensure!(
        status["hot"].as_array().is_some_and(|h| h.is_empty()),
        "still listed hot after cooling: {}",
        status["hot"]
    );
    verify_all(&gw, BUCKET, &[hot, cold], 2).await?;
    c.stop().await?;
    eprintln!("test took {:.1?}", started.elapsed());
    Ok(())
}

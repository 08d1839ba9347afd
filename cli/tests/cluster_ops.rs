//! Operating the cluster, across real processes: `kura node`s and a `kura gateway` with
//! the admin API on loopback (see `common::OpsCluster`), membership changed with the
//! real `kura admin` binary while readers keep reading.
//!
//! - adding a 4th node to 3 moves about a quarter of the copies (exactly the copies the
//!   new ring gives the new node, ≤ 1.1 × the ideal), all of them to the new node, while a
//!   reader sees no error and no wrong byte; every copy ends at its owners only;
//! - draining a node moves everything off it with no reader error; removing and stopping
//!   it then loses nothing;
//! - a node SIGKILLed in the middle of a (throttled) rebalance and restarted on its port
//!   lets the rebalance complete, with every object intact and every copy at its owners.
//!
//! Data set size: the first test loads [`DEFAULT_BYTES`] = 2 GiB of objects (the issue's
//! size; with N = 3 that is 6 GiB written, and 1.5 GiB moved), about 50-60 s of the test
//! on the 2-core dev machine in the dev profile; `KURA_OPS_TEST_BYTES` (e.g. `512M`,
//! `4G`) changes it. The other tests use fixed, smaller sets (160 MiB).
//!
//! The gateways run with hot-content replicas off (`--hot-reads-per-sec 0`): the
//! placement checks expect every copy exactly where the ring puts it, whatever the
//! readers read (hot content is tested in `cluster_ops_repair_gc_hot.rs`).
//!
//! The tests take a lock so they run one at a time even without `--test-threads=1`:
//! each starts 3–4 nodes and moves hundreds of MiB, and they would only slow each other
//! down on a small machine.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{
    data_set, ops_test_bytes, owners_on, test_seed, upload_all, verify_all, OpsCluster, Reader,
    TestObject,
};
use kura_cluster::map::ClusterMap;
use kura_cluster::ring::{record_key, Ring};
use kura_cluster::ChunkId;
use rand::rngs::StdRng;
use rand::SeedableRng;

const BUCKET: &str = "media";
const MIB: u64 = 1024 * 1024;

/// Default size of the first test's data set (see the module doc).
const DEFAULT_BYTES: u64 = 2048 * MIB;
/// Concurrent uploads while loading a data set.
const UPLOAD_CONCURRENCY: usize = 4;
/// Concurrent reads while verifying.
const VERIFY_CONCURRENCY: usize = 4;
/// Reader tasks running during membership changes.
const READERS: usize = 2;
/// Longest a rebalance may take in these tests.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(240);

/// Gateway arguments of these tests: hot-content replicas off, so that every copy is
/// where the ring puts it whatever the readers do (hot content has its own test).
const GATEWAY_ARGS: &[&str] = &["--hot-reads-per-sec", "0"];

/// One test at a time (see the module doc).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Distinct chunks of `objects` with their sizes.
fn chunk_set(objects: &[TestObject]) -> BTreeMap<ChunkId, u64> {
    objects.iter().flat_map(|o| o.chunks.clone()).collect()
}

/// Every running node holds exactly the chunks of `objects` that `map` places on it
/// (nothing left behind after a hand-off, nothing missing, nothing else), and every
/// record is on its owners and nowhere else.
async fn check_placement(c: &OpsCluster, objects: &[TestObject], map: &ClusterMap) -> Result<()> {
    let ring = Ring::new(map);
    let chunk_owners: BTreeMap<ChunkId, Vec<String>> = chunk_set(objects)
        .into_keys()
        .map(|id| (id, owners_on(&ring, map, id.as_bytes())))
        .collect();
    let record_owners: Vec<Vec<String>> = objects
        .iter()
        .map(|o| owners_on(&ring, map, &record_key(BUCKET, &o.key)))
        .collect();
    let mut problems = Vec::new();
    for i in c.running() {
        let id = c.id(i).to_string();
        let held = c.chunks_of(i).await?;
        let owned: BTreeSet<ChunkId> = chunk_owners
            .iter()
            .filter(|(_, owners)| owners.contains(&id))
            .map(|(c, _)| *c)
            .collect();
        let held_ids: BTreeSet<ChunkId> = held.keys().copied().collect();
        let missing = owned.difference(&held_ids).count();
        let extra: Vec<&ChunkId> = held_ids.difference(&owned).collect();
        if missing > 0 || !extra.is_empty() {
            problems.push(format!(
                "{id}: owns {} chunks, holds {}; {missing} missing, {} held without owning \
                 (first: {:?})",
                owned.len(),
                held_ids.len(),
                extra.len(),
                extra.iter().take(3).collect::<Vec<_>>()
            ));
        }
        let client = c.node_client(i)?;
        let (mut rec_missing, mut rec_extra) = (0, 0);
        for (o, owners) in objects.iter().zip(&record_owners) {
            let rec = client.get_record(BUCKET, &o.key).await?;
            match (owners.contains(&id), rec) {
                (true, Some(r)) if r.etag == o.etag && !r.deleted => {}
                (true, _) => rec_missing += 1,
                (false, Some(_)) => rec_extra += 1,
                (false, None) => {}
            }
        }
        if rec_missing + rec_extra > 0 {
            problems.push(format!(
                "{id}: {rec_missing} owned records missing or stale, {rec_extra} records held \
                 without owning them"
            ));
        }
    }
    ensure!(
        problems.is_empty(),
        "placement under epoch {}:\n  {}",
        map.epoch,
        problems.join("\n  ")
    );
    Ok(())
}

/// Sum of `moved_bytes` of the passes for `epoch` in `progress`.
fn moved_bytes(progress: &[(usize, serde_json::Value)], epoch: u64) -> u64 {
    progress
        .iter()
        .filter(|(_, p)| p["epoch"].as_u64() == Some(epoch))
        .map(|(_, p)| p["moved_bytes"].as_u64().unwrap_or(0))
        .sum()
}

/// Epoch printed by `kura admin node ...` ("cluster map is now at epoch N ...").
fn printed_epoch(out: &str) -> Result<u64> {
    out.split("epoch ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no epoch in {out:?}"))
}

/// The node lines of `kura admin status` (those starting with a node id `n…`), split
/// into columns.
fn status_lines(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| l.starts_with('n'))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_a_node_moves_a_quarter_and_readers_see_no_errors() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let total = ops_test_bytes(DEFAULT_BYTES);
    let objects = Arc::new(data_set(&mut rng, "set/", total, MIB..=16 * MIB));
    let mut c = OpsCluster::start(3, &[], GATEWAY_ARGS).await?;
    let gw = c.client()?;
    upload_all(&gw, BUCKET, &objects, UPLOAD_CONCURRENCY).await?;
    let loaded = started.elapsed();
    eprintln!(
        "uploaded {} objects, {} MiB, in {loaded:.1?}",
        objects.len(),
        total / MIB
    );

    let n4 = c.start_node("z4").await?;
    let reader = Reader::start(&gw, BUCKET, objects.clone(), READERS, seed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rebalance_started = Instant::now();
    let addr = c.nodes[n4].addr().to_string();
    let out = c
        .admin_ok(&["node", "add", "n4", &addr, "--zone", "z4"])
        .await?;
    let epoch = printed_epoch(&out)?;
    ensure!(epoch == 2, "node add answered {out:?}");
    c.admin_ok(&["rebalance", "--watch"]).await?;
    let watched = rebalance_started.elapsed();
    let progress = c.wait_rebalanced(epoch, REBALANCE_TIMEOUT).await?;
    let took = rebalance_started.elapsed();
    let report = reader.finish().await?;
    eprintln!(
        "rebalance done in {took:.1?} (`kura admin rebalance --watch` returned after \
         {watched:.1?}); reader: {report:?}"
    );
    report.check(10)?;

    let map = c.node_map(0).await?;
    ensure!(map.epoch == epoch && map.nodes.len() == 4, "map {map:?}");
    let chunks = chunk_set(&objects);
    let object_bytes: u64 = chunks.values().sum();
    let ideal = object_bytes * 3 / 4;
    let ring = Ring::new(&map);
    let exact: u64 = chunks
        .iter()
        .filter(|(id, _)| {
            owners_on(&ring, &map, id.as_bytes())
                .iter()
                .any(|o| o == "n4")
        })
        .map(|(_, size)| size)
        .sum();
    let moved = moved_bytes(&progress, epoch);
    eprintln!(
        "moved {moved} bytes ({:.1} MiB/s over the rebalance): ideal (3/4 of {object_bytes}) \
         {ideal}, ratio {:.3}; the new ring gives n4 {exact} bytes",
        moved as f64 / MIB as f64 / took.as_secs_f64(),
        moved as f64 / ideal as f64
    );
    ensure!(moved > 0, "nothing moved: {progress:?}");
    ensure!(
        moved as f64 <= 1.1 * ideal as f64,
        "moved {moved} bytes, over 1.1 × the ideal {ideal}"
    );
    ensure!(
        moved == exact,
        "moved {moved} bytes, but the copies the new ring gives n4 are {exact} bytes"
    );
    check_placement(&c, &objects, &map).await?;
    verify_all(&gw, BUCKET, &objects, VERIFY_CONCURRENCY).await?;

    let status = c.admin_ok(&["status"]).await?;
    let lines = status_lines(&status);
    let ids: Vec<&str> = lines.iter().map(|l| l[0].as_str()).collect();
    ensure!(
        ids == ["n1", "n2", "n3", "n4"],
        "kura admin status lists {ids:?}:\n{status}"
    );
    ensure!(
        lines
            .iter()
            .all(|l| l.contains(&"active".to_string()) && l.contains(&"up".to_string())),
        "kura admin status:\n{status}"
    );
    ensure!(
        status.starts_with(&format!("epoch {epoch}")),
        "kura admin status:\n{status}"
    );
    c.stop().await?;
    eprintln!("test took {:.1?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_and_removing_a_node_keeps_every_object_readable() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let objects = Arc::new(data_set(&mut rng, "drain/", 160 * MIB, 64 * 1024..=8 * MIB));
    let mut c = OpsCluster::start(4, &[], GATEWAY_ARGS).await?;
    let gw = c.client()?;
    upload_all(&gw, BUCKET, &objects, UPLOAD_CONCURRENCY).await?;
    let drained = 1; // n2
    let before = c.status(drained).await?;
    ensure!(before.chunks > 0, "n2 holds nothing to drain: {before:?}");

    let reader = Reader::start(&gw, BUCKET, objects.clone(), READERS, seed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let epoch = printed_epoch(&c.admin_ok(&["node", "drain", "n2"]).await?)?;
    let progress = c.wait_rebalanced(epoch, REBALANCE_TIMEOUT).await?;
    let after = c.status(drained).await?;
    eprintln!(
        "drained n2 ({} chunks, {} bytes) in {:.1?}; moved {} bytes",
        before.chunks,
        before.bytes_used,
        t.elapsed(),
        moved_bytes(&progress, epoch)
    );
    ensure!(
        after.chunks == 0 && after.bytes_used == 0,
        "n2 still holds {after:?} after draining"
    );
    let records = c.node_client(drained)?.scan_records(None, 10).await?;
    ensure!(
        records.records.is_empty(),
        "n2 still holds records after draining: {:?}",
        records.records.first()
    );
    let map = c.node_map(0).await?;
    check_placement(&c, &objects, &map).await?;

    let epoch = printed_epoch(&c.admin_ok(&["node", "remove", "n2"]).await?)?;
    c.wait_rebalanced(epoch, REBALANCE_TIMEOUT).await?;
    let status = c.admin_ok(&["status"]).await?;
    ensure!(
        status_lines(&status)
            .iter()
            .any(|l| l[0] == "n2" && l.contains(&"removed".to_string())),
        "kura admin status does not show n2 removed:\n{status}"
    );
    c.stop_node(drained).await?;
    // Readers go on for a while with n2's process gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = reader.finish().await?;
    eprintln!("reader: {report:?}");
    report.check(10)?;
    verify_all(&gw, BUCKET, &objects, VERIFY_CONCURRENCY).await?;
    let map = c.node_map(0).await?;
    check_placement(&c, &objects, &map).await?;
    c.stop().await?;
    eprintln!("test took {:.1?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_a_node_mid_rebalance_and_the_rebalance_completes() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let objects = Arc::new(data_set(&mut rng, "kill/", 160 * MIB, 256 * 1024..=8 * MIB));
    // 8 MiB/s per node: each original node sends ~40 MiB, so the pass lasts ~5 s.
    let mut c =
        OpsCluster::start(3, &["--rebalance-bytes-per-sec", "8388608"], GATEWAY_ARGS).await?;
    let gw = c.client()?;
    upload_all(&gw, BUCKET, &objects, UPLOAD_CONCURRENCY).await?;
    let n4 = c.start_node("z4").await?;
    let reader = Reader::start(&gw, BUCKET, objects.clone(), READERS, seed);
    let addr = c.nodes[n4].addr().to_string();
    let t = Instant::now();
    let epoch = printed_epoch(
        &c.admin_ok(&["node", "add", "n4", &addr, "--zone", "z4"])
            .await?,
    )?;

    // Kill n1 once it has sent something but is not done.
    let victim = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let p = c.rebalance(victim).await?;
        if p["epoch"].as_u64() == Some(epoch)
            && p["running"].as_bool() == Some(true)
            && p["moved_bytes"].as_u64().unwrap_or(0) > 0
        {
            break p;
        }
        ensure!(
            p["done_epoch"].as_u64().unwrap_or(0) < epoch,
            "n1 finished before it could be killed (raise the data set or lower the \
             throttle): {p}"
        );
        ensure!(Instant::now() < deadline, "n1 never started moving: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.kill_node(victim).await?;
    eprintln!(
        "killed n1 {:.1?} into the rebalance: {at_kill}",
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.restart_node(victim).await?;
    let progress = c.wait_rebalanced(epoch, REBALANCE_TIMEOUT).await?;
    eprintln!(
        "rebalance done {:.1?} after the change; moved {} bytes after the restart",
        t.elapsed(),
        moved_bytes(&progress, epoch)
    );
    let report = reader.finish().await?;
    eprintln!("reader: {report:?}");
    report.check(10)?;
    verify_all(&gw, BUCKET, &objects, VERIFY_CONCURRENCY).await?;
    let map = c.node_map(0).await?;
    check_placement(&c, &objects, &map).await?;
    c.stop().await?;
    eprintln!("test took {:.1?}", started.elapsed());
    Ok(())
}

/// A node that was drained, removed and stopped stays in the map as `removed`; GC must
/// not wait for it forever (it used to fail every pass with 503, "GC needs every node's
/// records; n2 did not answer", so no space was ever reclaimed again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_still_runs_after_a_drained_node_is_removed_and_stopped() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let objects = data_set(&mut rng, "gc/", 16 * MIB, 64 * 1024..=4 * MIB);
    let mut c = OpsCluster::start(4, &["--gc-interval-secs", "0"], GATEWAY_ARGS).await?;
    let gw = c.client()?;
    upload_all(&gw, BUCKET, &objects, UPLOAD_CONCURRENCY).await?;
    let epoch = printed_epoch(&c.admin_ok(&["node", "drain", "n2"]).await?)?;
    c.wait_rebalanced(epoch, REBALANCE_TIMEOUT).await?;
    let epoch = printed_epoch(&c.admin_ok(&["node", "remove", "n2"]).await?)?;
    c.wait_rebalanced(epoch, REBALANCE_TIMEOUT).await?;
    c.stop_node(1).await?;
    for i in c.running() {
        c.node_client(i)?
            .run_gc()
            .await
            .with_context(|| format!("GC on {} after n2 was removed and stopped", c.id(i)))?;
    }
    verify_all(&gw, BUCKET, &objects, VERIFY_CONCURRENCY).await?;
    c.stop().await
}

#[tokio::test]
async fn a_node_that_cannot_prove_it_belongs_is_not_added() -> Result<()> {
    let mut c = OpsCluster::start(3, &[], GATEWAY_ARGS).await?;
    // A real kura node, but of another cluster (another secret): it is never sent this
    // cluster's secret or map.
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("stranger").display().to_string();
    let stranger = common::KuraProcess::start(
        "stranger",
        [
            "node",
            "--data",
            data.as_str(),
            "--node-id",
            "n4",
            "--zone",
            "z4",
            "--cluster-secret",
            "another-cluster-secret-0123456789ab",
        ],
    )
    .await?;
    let addr = stranger.addr().to_string();
    let out = c
        .admin(&["node", "add", "n4", &addr, "--zone", "z4"])
        .await?;
    ensure!(
        !out.status.success() && out.stderr.contains("does not hold the cluster secret"),
        "a stranger was added: {out:?}"
    );
    // A node of this cluster under another id's name.
    let n1 = c.nodes[0].addr().to_string();
    let out = c.admin(&["node", "add", "n9", &n1, "--zone", "z9"]).await?;
    ensure!(
        !out.status.success() && out.stderr.contains("it says it is \"n1\""),
        "a node was added under a name it does not have: {out:?}"
    );
    let map = c.node_map(0).await?;
    ensure!(
        map.epoch == 1 && map.nodes.len() == 3,
        "the map changed: {map:?}"
    );
    // The real thing is added.
    let n4 = c.start_node("z4").await?;
    let addr = c.nodes[n4].addr().to_string();
    c.admin_ok(&["node", "add", "n4", &addr, "--zone", "z4"])
        .await?;
    ensure!(c.node_map(0).await?.nodes.len() == 4, "n4 was not added");
    stranger.stop().await?;
    c.stop().await
}

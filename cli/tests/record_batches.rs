//! Record batches between a gateway and its nodes (`kura_cluster::peers::batch`): the
//! records of small objects written while a node is hung wait in the gateway and reach
//! that node together, in one request and one synced write, when it resumes — and none
//! is lost; record reads asked of a hung node wait and go together too, each caller
//! getting its own record; read repair sends the newest record as its replica holds it.
//! Real processes on loopback; SIGSTOP makes the node hang.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{metric_value, random_bytes, test_seed, Cluster};
use kura_cluster::client::RecordName;
use kura_cluster::peers::RecordReadBatcher;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BUCKET: &str = "media";

/// Small objects written while the node is hung: the first two records leave at once
/// (the batches a peer may have in flight) and hang; every later one waits.
const WRITES: usize = 20;

/// Bound of each wait for something the test set in motion (a copy landing, callers
/// queueing): a bound against a hang, not a timing, and per phase, so that a loaded
/// machine's slow earlier phase does not eat a later one's time. Once in CI the reads'
/// wait failed at once ("0 reads wait") after ~18 s in which the gateway's prober found
/// the node silent: most likely the wait for the third copies had spent the one shared
/// 20 s deadline.
const PHASE_BOUND: Duration = Duration::from_secs(60);

#[tokio::test]
async fn records_for_a_hung_node_wait_and_reach_it_in_one_batch() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(test_seed());
    let cluster = Cluster::start().await?;
    let gw = cluster.client()?;
    let hung = 2;
    cluster.nodes[hung].pause()?;
    let outcome = async {
        let mut written = Vec::new();
        for i in 0..WRITES {
            let key = format!("small/{i:02}");
            let data = random_bytes(rng.random(), 500 + i);
            // W=2: the other two nodes acknowledge it.
            gw.put(BUCKET, &key, data.clone()).await?;
            written.push((key, data));
        }
        cluster.nodes[hung].resume()?;
        // Every record is on the node that was hung, as written.
        let node = cluster.node_client(hung)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        for (key, data) in &written {
            let record = loop {
                if let Some(r) = node.get_record(BUCKET, key).await? {
                    break r;
                }
                ensure!(
                    Instant::now() < deadline,
                    "{key} never reached the resumed node"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            ensure!(
                record.size == data.len() as u64,
                "{key}: size {}",
                record.size
            );
            let inline = record.verified_inline()?.context("not inline")?;
            ensure!(inline[..] == data[..], "{key}: other bytes");
        }
        // At most two batches (one record each) were on their way when the node hung;
        // the other records waited and went together.
        loop {
            let m = cluster.node_metrics(hung).await?;
            let large = batches_over(&m, "kura_record_batch_records", SMALL_BATCH)?;
            if large >= 1.0 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no batch of more than {SMALL_BATCH} records reached the node"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    }
    .await;
    cluster.nodes[hung].resume()?;
    outcome?;
    cluster.stop().await
}

/// Reads asked of a hung node through one peer's read batcher (what a gateway's record
/// reads go through): the first leaves at once and hangs, the other `WRITES - 1` wait
/// and leave together when the node resumes; each caller gets its own record (or
/// `None`). Then a gateway with its record cache off reads through batches.
#[tokio::test]
async fn record_reads_of_a_hung_node_wait_and_go_in_one_batch() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(test_seed());
    let cluster = Cluster::start_with_gateway_args(&["--record-cache-ms", "0"]).await?;
    let gw = cluster.client()?;
    let mut written = Vec::new();
    for i in 0..WRITES {
        let key = format!("small/{i:02}");
        let data = random_bytes(rng.random(), 300 + i);
        gw.put(BUCKET, &key, data.clone()).await?;
        written.push((key, data));
    }
    let hung = 1;
    // W=2: wait until the node holds every record (the third copy may be on its way).
    let node = cluster.node_client(hung)?;
    let deadline = Instant::now() + PHASE_BOUND;
    for (key, _) in &written {
        while node.get_record(BUCKET, key).await?.is_none() {
            ensure!(Instant::now() < deadline, "{key} never reached the node");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let reads = std::sync::Arc::new(RecordReadBatcher::new("n2", Duration::from_secs(60)));
    cluster.nodes[hung].pause()?;
    let outcome = async {
        let mut names: Vec<RecordName> = written
            .iter()
            .map(|(k, _)| RecordName::new(BUCKET, k))
            .collect();
        names.push(RecordName::new(BUCKET, "small/none"));
        let asks: Vec<_> = names
            .iter()
            .map(|name| {
                let (reads, node, name) = (reads.clone(), node.clone(), name.clone());
                tokio::spawn(async move { reads.call(&node, name).await })
            })
            .collect();
        // One read is on its way and hangs; every other waits.
        let deadline = Instant::now() + PHASE_BOUND;
        while reads.waiting() < names.len() - 1 {
            ensure!(Instant::now() < deadline, "{} reads wait", reads.waiting());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.nodes[hung].resume()?;
        for (ask, name) in asks.into_iter().zip(&names) {
            let got = ask.await??;
            match written.iter().find(|(k, _)| *k == *name.key) {
                Some((key, data)) => {
                    let r = got.with_context(|| format!("{key}: no record"))?.decode()?;
                    ensure!(r.key == *key && r.size == data.len() as u64, "{key}: {r:?}");
                    let inline = r.verified_inline()?.context("not inline")?;
                    ensure!(inline[..] == data[..], "{key}: other bytes");
                }
                None => ensure!(
                    got.is_none(),
                    "{}: a record for a key never written",
                    name.key
                ),
            }
        }
        let m = cluster.node_metrics(hung).await?;
        let large = batches_over(&m, "kura_record_read_batch_records", SMALL_BATCH)?;
        ensure!(
            large >= 1.0,
            "no read batch of more than {SMALL_BATCH} records"
        );
        anyhow::Ok(())
    }
    .await;
    cluster.nodes[hung].resume()?;
    outcome?;

    // The gateway, record cache off: every GET reads its record from R nodes in batches.
    for (key, data) in &written {
        let got = gw.get(BUCKET, key).await?.context("gone")?;
        ensure!(
            got[..] == data[..],
            "{key}: other bytes through the gateway"
        );
    }
    let mut read_batches = 0.0;
    for i in 0..cluster.nodes.len() {
        let m = cluster.node_metrics(i).await?;
        read_batches += metric_value(&m, "kura_record_read_batch_records_count").unwrap_or(0.0);
    }
    ensure!(
        read_batches >= 2.0 * WRITES as f64 + 1.0,
        "{read_batches} read batches for {WRITES} GETs (R=2) and the batch above"
    );
    cluster.stop().await
}

/// Read repair writes the newest record as the replica that holds it sent it (through
/// the stale node's record batch): a field this gateway does not know survives. The
/// newer version is written to two nodes directly; the gateway, in the third node's
/// zone, reads that node first (R=2 with one of the others) and mends it.
#[tokio::test]
async fn read_repair_sends_the_newest_record_as_its_replica_holds_it() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(test_seed());
    let stale = 2;
    let cluster = Cluster::start_with_gateway_args(&[
        "--zone",
        common::ZONES[stale],
        "--record-cache-ms",
        "0",
    ])
    .await?;
    let gw = cluster.client()?;
    let key = "repair/one";
    let data = random_bytes(rng.random(), 1000);
    gw.put(BUCKET, key, data.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let old = loop {
        if let Some(r) = cluster.node_client(stale)?.get_record(BUCKET, key).await? {
            break r;
        }
        ensure!(
            Instant::now() < deadline,
            "the record never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A newer version of the same object, with a field no part of kura knows yet.
    let mut newer = serde_json::to_value(&old)?;
    newer["ts"]["ms"] = (old.ts.ms + 1000).into();
    newer["from_the_future"] = "kept".into();
    let json = serde_json::to_vec(&newer)?;
    let stamped = kura_cluster::record::EncodedRecord::from_json(&json)?.into_stored();
    for i in (0..cluster.nodes.len()).filter(|&i| i != stale) {
        let out = cluster
            .node_client(i)?
            .put_records(std::slice::from_ref(&stamped))
            .await?;
        ensure!(
            out[0].as_ref().is_ok_and(|o| o.applied),
            "node {i}: {out:?}"
        );
    }

    let got = gw.get(BUCKET, key).await?.context("gone")?;
    ensure!(got[..] == data[..], "other bytes");
    let mended = loop {
        let r = cluster
            .node_client(stale)?
            .get_record_encoded(BUCKET, key)
            .await?;
        if let Some(r) = r.filter(|r| r.ts.ms == old.ts.ms + 1000) {
            break r;
        }
        ensure!(
            Instant::now() < deadline,
            "the stale node was never repaired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ensure!(
        mended.body() == json,
        "repaired with other bytes than the newest replica's: {}",
        String::from_utf8_lossy(mended.body())
    );
    let repairs = metric_value(&gw.metrics().await?, "kura_gateway_record_repairs_total");
    ensure!(repairs.is_some_and(|n| n >= 1.0), "repairs: {repairs:?}");
    cluster.stop().await
}

/// A histogram bucket bound below `WRITES - 2` (the records that must wait together).
const SMALL_BATCH: u32 = 16;

/// How many batches of more than `bound` records the node's histogram `name` counts.
fn batches_over(metrics: &str, name: &str, bound: u32) -> Result<f64> {
    let count = metric_value(metrics, &format!("{name}_count")).unwrap_or(0.0);
    let le = format!("{name}_bucket{{le=\"{bound}.0\"}} ");
    let within = metrics
        .lines()
        .find_map(|l| l.strip_prefix(le.as_str()))
        .with_context(|| format!("no {le}in the node's metrics"))?
        .trim()
        .parse::<f64>()?;
    Ok(count - within)
}

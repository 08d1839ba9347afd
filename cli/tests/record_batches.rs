//! Record batches between a gateway and its nodes (`kura_cluster::peers::batch`): the
//! records of small objects written while a node is hung wait in the gateway and reach
//! that node together, in one request and one synced write, when it resumes — and none
//! is lost. Real processes on loopback; SIGSTOP makes the node hang.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{metric_value, random_bytes, test_seed, Cluster};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BUCKET: &str = "media";

/// Small objects written while the node is hung: the first two records leave at once
/// (the batches a peer may have in flight) and hang; every later one waits.
const WRITES: usize = 20;

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
            let large = batches_over(&m, SMALL_BATCH)?;
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

/// A histogram bucket bound below `WRITES - 2` (the records that must wait together).
const SMALL_BATCH: u32 = 16;

/// How many record batches of more than `bound` records the node stored.
fn batches_over(metrics: &str, bound: u32) -> Result<f64> {
    let count = metric_value(metrics, "kura_record_batch_records_count").unwrap_or(0.0);
    let le = format!("kura_record_batch_records_bucket{{le=\"{bound}.0\"}} ");
    let within = metrics
        .lines()
        .find_map(|l| l.strip_prefix(le.as_str()))
        .with_context(|| format!("no {le}in the node's metrics"))?
        .trim()
        .parse::<f64>()?;
    Ok(count - within)
}

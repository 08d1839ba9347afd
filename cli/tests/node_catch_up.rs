//! A node back from an outage catches up with what it missed within a minute, without a
//! repair pass (nodes run with the default hourly repair interval, and nothing is read
//! through the gateway, whose read repair could otherwise mend records).
//!
//! Three `kura node`s (N = 3, W = 2) behind a gateway: ten objects are written, then
//! 100 uploads run and one node is SIGKILLed after the 20th is acknowledged; meanwhile
//! five of the first objects are deleted and five overwritten. Every operation must be
//! acknowledged. The node is restarted on the same data directory, and within 60 s every
//! node must hold every live object's chunks and, for every key, the same record as the
//! others (new versions and tombstones included).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use common::{
    copies_missing, metric_value, random_bytes, spawn_uploads, test_seed, wait_for_map,
    wait_until_count, Cluster, GatewayClient,
};
use kura_cluster::client::NodeClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};

const BUCKET: &str = "catchup";
/// Objects written before the outage (all three nodes hold them).
const BEFORE: usize = 10;
/// Uploads during which the node is killed.
const UPLOADS: usize = 100;
/// The node is killed once this many of the uploads are acknowledged.
const KILL_AFTER_ACKS: usize = 20;
/// Concurrent uploads.
const CONCURRENCY: usize = 4;
/// Object sizes: inline chunks, file chunks and objects of two chunks (4 MiB chunks).
const MAX_LEN: usize = 6 * 1024 * 1024;
/// How long the returned node may take to hold everything (the minute).
const CATCH_UP_WITHIN: Duration = Duration::from_secs(60);
/// The node killed.
const VICTIM: usize = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_holds_everything_written_while_it_was_down() -> Result<()> {
    let mut cluster = Cluster::start().await?;
    let gw = cluster.client()?;
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let nodes: Vec<NodeClient> = (0..3)
        .map(|i| cluster.node_client(i))
        .collect::<Result<_>>()?;
    wait_for_map(&nodes).await?;

    for i in 0..BEFORE {
        let len = rng.random_range(1..MAX_LEN);
        gw.put(
            BUCKET,
            &format!("before/{i}"),
            random_bytes(seed ^ i as u64, len),
        )
        .await?;
    }

    let during: Vec<(String, u64, usize)> = (0..UPLOADS)
        .map(|i| {
            let len = rng.random_range(0..MAX_LEN);
            (
                format!("during/{i:03}"),
                seed.wrapping_add(1000 + i as u64),
                len,
            )
        })
        .collect();
    let (uploads, acked) = spawn_uploads(&gw, BUCKET, during, CONCURRENCY);
    wait_until_count(&acked, KILL_AFTER_ACKS).await?;
    cluster.kill_node(VICTIM).await?;
    let at_kill = acked.load(Ordering::SeqCst);
    for i in 0..BEFORE / 2 {
        delete(&gw, &format!("before/{i}")).await?;
    }
    for i in BEFORE / 2..BEFORE {
        gw.put(
            BUCKET,
            &format!("before/{i}"),
            random_bytes(seed ^ 0xfeed ^ i as u64, 5000),
        )
        .await?;
    }
    for r in uploads.await? {
        r?;
    }
    eprintln!(
        "killed {} after {at_kill} of {UPLOADS} uploads were acknowledged; all acknowledged",
        Cluster::node_id(VICTIM)
    );
    ensure!(
        at_kill < UPLOADS,
        "every upload was done before the kill: nothing was missed"
    );

    cluster.restart_node(VICTIM).await?;
    let returned = Instant::now();
    let victim = cluster.node_client(VICTIM)?;
    let mut nodes = nodes;
    nodes[VICTIM] = victim;
    let keys: Vec<String> = (0..BEFORE)
        .map(|i| format!("before/{i}"))
        .chain((0..UPLOADS).map(|i| format!("during/{i:03}")))
        .collect();
    loop {
        let last = match copies_missing(&nodes, BUCKET, &keys).await {
            Ok(0) => break,
            Ok(n) => format!("{n} copies still missing"),
            Err(e) => format!("{e:#}"),
        };
        if returned.elapsed() > CATCH_UP_WITHIN {
            bail!("not caught up {CATCH_UP_WITHIN:?} after the restart: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut sent = 0.0;
    for i in (0..3).filter(|i| *i != VICTIM) {
        sent +=
            metric_value(&cluster.node_metrics(i).await?, "kura_catchup_sent_total").unwrap_or(0.0);
    }
    eprintln!(
        "{} caught up {} ms after its restart; its peers' catch-up sent {sent} items",
        Cluster::node_id(VICTIM),
        returned.elapsed().as_millis()
    );
    ensure!(sent > 0.0, "the copies came back, but not through catch-up");
    cluster.stop().await
}

async fn delete(gw: &GatewayClient, key: &str) -> Result<()> {
    let resp = gw.object(Method::DELETE, BUCKET, key).send().await?;
    ensure!(
        resp.status() == StatusCode::NO_CONTENT,
        "delete {key}: {}",
        resp.status()
    );
    Ok(())
}

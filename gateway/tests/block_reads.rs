//! Chunk reads block by block (`Cluster::open_chunk`): a replica whose copy turns out
//! bad in the middle of a chunk is replaced from the block reached, and the client gets
//! exactly the bytes written. Real nodes and a real gateway, in-process on loopback.

mod common;

use std::time::{Duration, Instant};

use common::{get, metric, pattern, put, stack_with, Options, SECRET};
use kura_cluster::client::NodeClient;
use kura_cluster::verify::VERIFY_BLOCK_LEN;
use reqwest::StatusCode;

const CHUNK: u64 = 1 << 20;

#[tokio::test]
async fn a_replica_bad_in_mid_chunk_is_replaced_from_the_block_reached() {
    // The gateway is in n0's zone, so n0 is read first; no chunk cache and no reads of
    // the nodes' files (`tests/local_reads.rs`), so every read asks the nodes.
    let s = stack_with(Options {
        chunk_size: CHUNK,
        chunk_cache_bytes: 0,
        zone: Some("z0".into()),
        local_reads: false,
        ..Options::default()
    })
    .await;
    let base = s.gateway.url();
    let data = pattern(3 * CHUNK as usize + 700_000, 7);
    put(&base, "media/long.bin", data.clone()).await;

    // Block 9 of every chunk of n0's copy gets a flipped byte (once n0 holds the record
    // and the chunk: the third copies may still be on their way when the upload is
    // acknowledged).
    let n0 = NodeClient::new(&s.nodes[0].url(), SECRET).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let record = loop {
        if let Some(r) = n0.get_record("media", "long.bin").await.unwrap() {
            break r;
        }
        assert!(Instant::now() < deadline, "the record never reached n0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(record.chunks.len(), 4);
    let bad_block = 9;
    for c in &record.chunks {
        let deadline = Instant::now() + Duration::from_secs(20);
        while n0.head_chunk(&c.id).await.unwrap() != Some(c.size) {
            assert!(Instant::now() < deadline, "chunk {} never reached n0", c.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let path = s.nodes[0].node().chunks.chunk_path(&c.id);
        common::flip_byte(&path, bad_block * VERIFY_BLOCK_LEN + 5);
    }

    let (status, body) = get(&base, "media/long.bin", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "whole read differs");
    // Each chunk: n0 opened whole, served blocks 0..9, failed block 9, and another
    // replica was opened for the rest (a range from block 9's start) — the client asked
    // for no range.
    let rest_opens = r#"kura_peer_calls_total{op="chunk_get_range",outcome="ok"}"#;
    assert_eq!(metric(&base, rest_opens).await, 4.0);
    assert_eq!(
        metric(&base, "kura_gateway_corrupt_replicas_total").await,
        4.0
    );

    // n0 quarantined its copies after the report: a range read over the bad block is
    // served by another replica from the start.
    let from = CHUNK + bad_block * VERIFY_BLOCK_LEN - 1000;
    let range = format!("bytes={from}-{}", from + 200_000);
    let (status, body) = get(&base, "media/long.bin", Some(&range)).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(body[..] == data[from as usize..=from as usize + 200_000]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while n0.status().await.unwrap().quarantined < 4 {
        assert!(
            Instant::now() < deadline,
            "n0 did not quarantine its bad copies"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

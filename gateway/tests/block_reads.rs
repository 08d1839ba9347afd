//! Chunk reads block by block (`Cluster::open_chunk`): a replica whose copy turns out
//! bad in the middle of a chunk is replaced from the block reached, and the client gets
//! exactly the bytes written. A small object whose record holds other bytes than its
//! etag names is not served. Real nodes and a real gateway, in-process on loopback.

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

#[tokio::test]
async fn a_small_object_whose_record_holds_other_bytes_is_not_served() {
    let s = stack_with(Options::default()).await;
    let base = s.gateway.url();
    let data = pattern(3000, 3);
    put(&base, "media/note.txt", data.clone()).await;
    // Every replica's record gets the same bytes with one flipped, under a newer
    // timestamp: what a damaged (or forged) record looks like to the gateway.
    let nodes: Vec<NodeClient> = s
        .nodes
        .iter()
        .map(|n| NodeClient::new(&n.url(), SECRET).unwrap())
        .collect();
    // The write quorum (2 of 3) holds the record when the upload is acknowledged.
    let mut record = None;
    for n in &nodes {
        record = record.or(n.get_record("media", "note.txt").await.unwrap());
    }
    let mut record = record.expect("no replica holds the record");
    let mut damaged = data.clone();
    damaged[1234] ^= 0x40;
    record.inline = Some(damaged.clone().into());
    record.ts.logical += 1;
    for n in &nodes {
        n.put_record(&record).await.unwrap();
    }

    // A gateway that has not seen the object yet reads the damaged record.
    let other = s.another_gateway(Duration::from_secs(60)).await;
    for range in [None, Some("bytes=1000-1999")] {
        let (status, body) = get(&other.url(), "media/note.txt", range).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{range:?}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("unavailable"), "{range:?}: {text}");
    }
    let head = reqwest::Client::new()
        .head(format!("{}/v1/o/media/note.txt", other.url()))
        .bearer_auth(common::KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Mended (the original bytes under a newer timestamp), it is served again.
    record.inline = Some(data.clone().into());
    record.ts.logical += 1;
    for n in &nodes {
        n.put_record(&record).await.unwrap();
    }
    let (status, body) = get(&other.url(), "media/note.txt", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "mended read differs");
    other.shutdown().await.unwrap();
    s.stop().await;
}

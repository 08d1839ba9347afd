//! Chunk reads from the files of nodes on the gateway's machine
//! (`kura_cluster::peers::local`, the gateway's `cluster::local`): once the gateway
//! knows a chunk's block CVs, it reads a co-located replica's file itself, verifies every
//! block, and falls back to the network when the file is missing or bad. Real nodes and
//! a real gateway, in-process on loopback (so every node is "on this machine").

mod common;

use std::time::{Duration, Instant};

use common::{get, pattern, put, stack_with, Options, Stack, SECRET};
use kura_cluster::client::NodeClient;
use kura_cluster::verify::{SUB_BLOCK_LEN, VERIFY_BLOCK_LEN};
use reqwest::StatusCode;

const CHUNK: u64 = 1 << 20;

/// A counter on `base`'s `/metrics`, 0 when no sample of it exists yet.
async fn counter(base: &str, name: &str) -> f64 {
    common::metric_sample(base, name).await.unwrap_or(0.0)
}

const LOCAL_OK: &str = r#"kura_gateway_local_reads_total{outcome="ok"}"#;
const REMOTE_RANGES: &str = r#"kura_peer_calls_total{op="chunk_get_range",outcome="ok"}"#;
const REMOTE_WHOLE: &str = r#"kura_peer_calls_total{op="chunk_get",outcome="ok"}"#;

/// A stack without a chunk cache (every read reaches a replica), the gateway in n0's
/// zone (n0 is read first), and the gateway told where every node's files are.
async fn stack(local_reads: bool) -> Stack {
    stack_keeping(local_reads, kura_gateway::cluster::OPEN_FILE_KEEP).await
}

/// [`stack`], the gateway keeping chunk files open for `keep` after a local read.
async fn stack_keeping(local_reads: bool, keep: Duration) -> Stack {
    let s = stack_with(Options {
        chunk_size: CHUNK,
        chunk_cache_bytes: 0,
        zone: Some("z0".into()),
        local_reads,
        open_file_keep: keep,
        ..Options::default()
    })
    .await;
    if local_reads {
        let base = s.gateway.url();
        let deadline = Instant::now() + Duration::from_secs(20);
        while counter(&base, "kura_peer_local_stores").await < 3.0 {
            assert!(
                Instant::now() < deadline,
                "the gateway never asked the nodes where their stores are"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    s
}

/// Writes `data` as `media/{key}` and waits until n0 holds its record and every chunk
/// (the third copy may still be on its way when the upload is acknowledged); returns the
/// chunk ids.
async fn put_on_n0(s: &Stack, key: &str, data: &[u8]) -> Vec<kura_cluster::ChunkId> {
    put(&s.gateway.url(), &format!("media/{key}"), data.to_vec()).await;
    let n0 = NodeClient::new(&s.nodes[0].url(), SECRET).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let record = loop {
        if let Some(r) = n0.get_record("media", key).await.unwrap() {
            break r;
        }
        assert!(Instant::now() < deadline, "the record never reached n0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for c in &record.chunks {
        while n0.head_chunk(&c.id).await.unwrap() != Some(c.size) {
            assert!(Instant::now() < deadline, "chunk {} never reached n0", c.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    record.chunks.iter().map(|c| c.id).collect()
}

#[tokio::test]
async fn after_one_remote_read_per_chunk_reads_come_from_local_files() {
    let s = stack(true).await;
    let base = s.gateway.url();
    let data = pattern(3 * CHUNK as usize + 500_000, 3);
    put_on_n0(&s, "a.bin", &data).await;

    // The first read of each chunk asks a node (and learns the chunk's block CVs).
    let (status, body) = get(&base, "media/a.bin", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "first read differs");
    let remote = counter(&base, REMOTE_WHOLE).await + counter(&base, REMOTE_RANGES).await;
    // (More than 4 if a read was hedged.)
    assert!(remote >= 4.0, "one remote read per chunk");
    assert_eq!(counter(&base, LOCAL_OK).await, 0.0);

    // Every later read is served from files: whole, and ranges within a chunk, across
    // chunks, over block edges, and of the short last chunk.
    let (status, body) = get(&base, "media/a.bin", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "local whole read differs");
    let ranges = [
        (0, 0),
        (5, 70_000),
        (VERIFY_BLOCK_LEN - 1, VERIFY_BLOCK_LEN),
        (CHUNK - 100, CHUNK + 100),
        (CHUNK + 300_000, 3 * CHUNK + 10),
        (3 * CHUNK + 499_000, 3 * CHUNK + 499_999),
    ];
    for (from, to) in ranges {
        let (status, body) = get(&base, "media/a.bin", Some(&format!("bytes={from}-{to}"))).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert!(
            body[..] == data[from as usize..=to as usize],
            "range {from}-{to} differs"
        );
    }
    let after = counter(&base, REMOTE_WHOLE).await + counter(&base, REMOTE_RANGES).await;
    assert_eq!(after, remote, "no read after the first asked a node");
    // 4 chunks whole, then 1 + 1 + 1 + 2 + 3 + 1 chunk spans.
    assert_eq!(counter(&base, LOCAL_OK).await, 13.0);
}

/// GETs bytes `from..=to` of `media/c.bin` and checks them against `data`.
async fn range(base: &str, data: &[u8], from: u64, to: u64) {
    let (status, body) = get(base, "media/c.bin", Some(&format!("bytes={from}-{to}"))).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(
        body[..] == data[from as usize..=to as usize],
        "bytes {from}-{to} differ from those written"
    );
}

#[tokio::test]
async fn bytes_changed_after_a_range_read_learned_their_block_are_caught() {
    let s = stack(true).await;
    let base = s.gateway.url();
    let data = pattern(CHUNK as usize, 9);
    let ids = put_on_n0(&s, "c.bin", &data).await;
    let (_, body) = get(&base, "media/c.bin", None).await;
    assert!(body == data);
    // A range read of block 5 reads it whole and learns its sub-blocks' CVs; later
    // ranges inside it read and hash only the sub-blocks they touch.
    let block = 5 * VERIFY_BLOCK_LEN;
    range(&base, &data, block + 100, block + 300).await;
    range(&base, &data, block + 40_000, block + 40_100).await;
    let ok = counter(&base, LOCAL_OK).await;
    let corrupt = r#"kura_gateway_local_reads_total{outcome="corrupt"}"#;
    assert_eq!(counter(&base, corrupt).await, 0.0);

    // A byte of sub-block 2 goes bad in n0's file.
    let at = block + 2 * SUB_BLOCK_LEN + 7;
    common::flip_byte(&s.nodes[0].node().chunks.chunk_path(&ids[0]), at);
    // A range in another sub-block is still read locally; one over the bad byte is
    // refused and read from another replica.
    range(&base, &data, block + 10, block + 1000).await;
    assert_eq!(counter(&base, LOCAL_OK).await, ok + 1.0);
    assert_eq!(counter(&base, corrupt).await, 0.0);
    range(&base, &data, at - 3, at + 3).await;
    assert_eq!(counter(&base, corrupt).await, 1.0);
}

/// Descriptors this process (its nodes and its gateway) holds on `path`.
fn descriptors_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

#[tokio::test]
async fn a_chunk_file_stays_open_between_local_reads_until_a_read_of_it_fails() {
    // Files are kept an hour: what the test sees does not depend on how fast it runs.
    let s = stack_keeping(true, Duration::from_secs(3600)).await;
    let base = s.gateway.url();
    let data = pattern(CHUNK as usize, 13);
    let ids = put_on_n0(&s, "c.bin", &data).await;
    let (_, body) = get(&base, "media/c.bin", None).await;
    assert!(body == data);
    let block = 3 * VERIFY_BLOCK_LEN;
    range(&base, &data, block + 100, block + 300).await;
    let ok = counter(&base, LOCAL_OK).await;
    let absent = r#"kura_gateway_local_reads_total{outcome="absent"}"#;
    let corrupt = r#"kura_gateway_local_reads_total{outcome="corrupt"}"#;

    // n0's file is moved away: a read that opened it again would find no file there.
    // Reads go on from the descriptor the first one kept.
    let path = s.nodes[0].node().chunks.chunk_path(&ids[0]);
    let moved = path.with_extension("moved");
    std::fs::rename(&path, &moved).unwrap();
    range(&base, &data, block + 100, block + 300).await;
    range(&base, &data, 10, 70_000).await;
    assert_eq!(
        counter(&base, LOCAL_OK).await,
        ok + 2.0,
        "read from n0's file"
    );
    assert_eq!(counter(&base, absent).await, 0.0);
    assert_eq!(descriptors_on(&moved), 1, "one descriptor, kept");

    // A byte of the kept file goes bad: the read over it is refused and served from
    // another replica, and the descriptor is closed.
    common::flip_byte(&moved, block + 150);
    range(&base, &data, block + 100, block + 300).await;
    assert_eq!(counter(&base, corrupt).await, 1.0);
    assert_eq!(descriptors_on(&moved), 0, "closed after the failed read");
}

#[tokio::test]
async fn a_bad_local_file_falls_back_to_the_network_and_is_reported() {
    let s = stack(true).await;
    let base = s.gateway.url();
    let data = pattern(3 * CHUNK as usize, 5);
    let ids = put_on_n0(&s, "b.bin", &data).await;
    let (_, body) = get(&base, "media/b.bin", None).await;
    assert!(body == data);

    // n0's copies of the second and third chunks go bad in block 7; the first chunk's
    // file is removed (as garbage collection or quarantine would).
    let node = s.nodes[0].node();
    let bad_at = 7 * VERIFY_BLOCK_LEN + 11;
    for id in &ids[1..] {
        common::flip_byte(&node.chunks.chunk_path(id), bad_at);
    }
    std::fs::remove_file(node.chunks.chunk_path(&ids[0])).unwrap();
    let absent = r#"kura_gateway_local_reads_total{outcome="absent"}"#;
    let corrupt = r#"kura_gateway_local_reads_total{outcome="corrupt"}"#;
    let reported = "kura_gateway_corrupt_replicas_total";

    // The first two chunks whole (read piece by piece on blocking threads).
    let two = format!("bytes=0-{}", 2 * CHUNK - 1);
    let (status, body) = get(&base, "media/b.bin", Some(&two)).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(
        body[..] == data[..2 * CHUNK as usize],
        "the client must get exactly the bytes written"
    );
    assert_eq!(counter(&base, absent).await, 1.0);
    assert_eq!(counter(&base, corrupt).await, 1.0);
    // The bad file, and n0 finding its copy of the first chunk missing when the
    // gateway asked it next.
    assert_eq!(counter(&base, reported).await, 2.0);

    // A small range over the bad block of the third chunk (read at once, without a
    // blocking thread, as its pages are cached).
    let from = 2 * CHUNK + bad_at - 100;
    let (status, body) = get(
        &base,
        "media/b.bin",
        Some(&format!("bytes={from}-{}", from + 200)),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(body[..] == data[from as usize..=from as usize + 200]);
    assert_eq!(counter(&base, corrupt).await, 2.0);
    assert_eq!(counter(&base, reported).await, 3.0);

    // The bad copies were reported: n0 re-checks them and quarantines them (and the
    // missing one, which it found missing itself).
    let n0 = NodeClient::new(&s.nodes[0].url(), SECRET).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while n0.status().await.unwrap().quarantined < 3 {
        assert!(
            Instant::now() < deadline,
            "n0 did not quarantine its bad copies"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And reads go on being right, from the other replicas' files.
    let (status, body) = get(&base, "media/b.bin", Some("bytes=1000-2500000")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(body[..] == data[1000..=2_500_000]);
}

#[tokio::test]
async fn a_first_chunk_no_replica_holds_is_an_error_status_a_later_one_a_cut_body() {
    let s = stack(false).await;
    let base = s.gateway.url();
    let data = pattern(3 * CHUNK as usize, 17);
    let ids = put_on_n0(&s, "e.bin", &data).await;
    let (_, body) = get(&base, "media/e.bin", None).await;
    assert!(body == data);
    // The first and the last chunk leave every node (the third copy has landed on n0,
    // and W = 2 of the others hold it: all are removed).
    for node in &s.nodes {
        for id in [ids[0], ids[2]] {
            let path = node.node().chunks.chunk_path(&id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("removing {}: {e}", path.display()),
            }
        }
    }
    // The response waits for its first verified bytes: with none to be had, the client
    // gets a 503 and a reason, not a 200 cut short.
    let (status, body) = get(&base, "media/e.bin", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&body).contains("replica"),
        "{body:?}"
    );
    // The middle chunk is there.
    let (from, to) = (CHUNK + 10, 2 * CHUNK - 10);
    let (status, body) = get(&base, "media/e.bin", Some(&format!("bytes={from}-{to}"))).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(body[..] == data[from as usize..=to as usize]);
    // Its bytes are sent before the last chunk is found missing: the body is cut.
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/o/media/e.bin"))
        .bearer_auth(common::KEY)
        .header("Range", format!("bytes={}-", CHUNK))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert!(resp.bytes().await.is_err(), "a cut body is an error");
}

#[tokio::test]
async fn with_local_reads_off_every_read_asks_a_node() {
    let s = stack(false).await;
    let base = s.gateway.url();
    let data = pattern(2 * CHUNK as usize, 9);
    put_on_n0(&s, "c.bin", &data).await;
    for _ in 0..2 {
        let (_, body) = get(&base, "media/c.bin", None).await;
        assert!(body == data);
    }
    assert!(counter(&base, REMOTE_WHOLE).await >= 4.0);
    assert_eq!(counter(&base, LOCAL_OK).await, 0.0);
    let asked = r#"kura_peer_calls_total{op="store_info",outcome="ok"}"#;
    assert_eq!(counter(&base, asked).await, 0.0);
}

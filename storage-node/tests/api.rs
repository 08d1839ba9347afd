//! The node's internal HTTP API, exercised over real loopback HTTP against a real node
//! (RocksDB and files in a temp dir).

use bytes::Bytes;
use kura_cluster::client::NodeClient;
use kura_cluster::hlc::Clock;
use kura_cluster::range::ByteSpan;
use kura_cluster::record::{ChunkRef, ObjectRecord};
use kura_cluster::ChunkId;
use kura_storage_node::{start, RunningNode};
use reqwest::StatusCode;

mod common;
use common::{config, node, SECRET};

fn data(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn raw(url: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .get(url)
        .header("authorization", format!("Bearer {SECRET}"))
}

/// Stores each of `chunks` on the node; returns their ids in order.
async fn store(c: &NodeClient, chunks: &[&Bytes]) -> Vec<ChunkId> {
    let mut ids = Vec::new();
    for d in chunks {
        let id = ChunkId::of(d);
        c.put_chunk(&id, (*d).clone()).await.unwrap();
        ids.push(id);
    }
    ids
}

/// Flips the bits `mask` of byte `at` of chunk `id`'s file on disk.
fn flip(running: &RunningNode, id: &ChunkId, at: usize, mask: u8) {
    let path = running.node().chunks.chunk_path(id);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at] ^= mask;
    std::fs::write(&path, bytes).unwrap();
}

/// The node's `/metrics` text.
async fn metrics(running: &RunningNode) -> String {
    reqwest::get(format!("{}/metrics", running.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn chunks_round_trip_whole_and_in_ranges() {
    let (_dir, running, c) = node().await;
    for len in [0usize, 1, 4096, 65_536, 65_537, 300_000, 4 << 20] {
        let d = data(len, len as u64);
        let id = ChunkId::of(&d);
        let put = c.put_chunk(&id, d.clone()).await.unwrap();
        assert!(put.created);
        assert!(!c.put_chunk(&id, d.clone()).await.unwrap().created, "dedup");
        assert_eq!(c.get_chunk(&id, None).await.unwrap(), d);
        assert_eq!(c.head_chunk(&id).await.unwrap(), Some(len as u64));
        if len > 10 {
            for (s, e) in [
                (0, 1),
                (1, len as u64 / 2),
                (len as u64 - 7, len as u64),
                (3, len as u64),
            ] {
                let got = c
                    .get_chunk(&id, Some(ByteSpan { start: s, end: e }))
                    .await
                    .unwrap();
                assert_eq!(&got[..], &d[s as usize..e as usize], "len {len} {s}..{e}");
                let span = ByteSpan { start: s, end: e };
                let proven = c.get_chunk_verified(&id, span).await.unwrap();
                assert_eq!(
                    &proven[..],
                    &d[s as usize..e as usize],
                    "proof {len} {s}..{e}"
                );
            }
        }
    }
    // A ranged read answers 206 with Content-Range and the strong ETag.
    let d = data(200_000, 9);
    let id = ChunkId::of(&d);
    c.put_chunk(&id, d.clone()).await.unwrap();
    let url = format!("{}/v1/chunks/{id}", running.url());
    let r = raw(&url)
        .header("range", "bytes=-100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 199900-199999/200000");
    assert_eq!(r.headers()["etag"], format!("\"{id}\"").as_str());
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap(), d.slice(199_900..));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn listing_delete_and_status() {
    let (_dir, running, c) = node().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let d = data(if i % 2 == 0 { 1000 } else { 100_000 }, i);
        let id = ChunkId::of(&d);
        c.put_chunk(&id, d).await.unwrap();
        ids.push(id);
    }
    ids.sort();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = c.list_chunks(after.as_ref(), 7).await.unwrap();
        listed.extend(page.chunks.iter().map(|c| c.id));
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(listed, ids);
    let st = c.status().await.unwrap();
    assert_eq!(st.chunks, 25);
    assert_eq!(st.bytes_used, 13 * 1000 + 12 * 100_000);
    assert!(st.bytes_total > 0 && st.bytes_free > 0);
    assert!(c.delete_chunk(&ids[0]).await.unwrap());
    assert!(!c.delete_chunk(&ids[0]).await.unwrap());
    assert!(c.head_chunk(&ids[0]).await.unwrap().is_none());
    assert_eq!(c.status().await.unwrap().chunks, 24);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_precise_statuses_and_changes_nothing() {
    let (_dir, running, c) = node().await;
    let base = running.url();
    let http = reqwest::Client::new();
    let good = data(5000, 1);
    let id = ChunkId::of(&good);

    // Missing and wrong secret: 401, nothing stored.
    let r = http
        .put(format!("{base}/v1/chunks/{id}"))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .put(format!("{base}/v1/chunks/{id}"))
        .header("authorization", "Bearer not-the-secret-at-all")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(c.head_chunk(&id).await.unwrap().is_none());

    // Wrong hash: 400, nothing stored.
    let other = ChunkId::of(b"something else");
    let err = c.put_chunk(&other, good.clone()).await.unwrap_err();
    assert!(
        matches!(err, kura_cluster::Error::Status { status, .. } if status == StatusCode::BAD_REQUEST),
        "{err}"
    );
    assert!(c.head_chunk(&other).await.unwrap().is_none());
    assert_eq!(c.status().await.unwrap().chunks, 0);

    // Oversize: 413.
    let big = Bytes::from(vec![7u8; 16 * 1024 * 1024 + 1]);
    let err = c.put_chunk(&ChunkId::of(&big), big).await.unwrap_err();
    assert!(
        matches!(err, kura_cluster::Error::Status { status, .. } if status == StatusCode::PAYLOAD_TOO_LARGE),
        "{err}"
    );

    // Unknown chunk: 404.
    let r = raw(&format!("{base}/v1/chunks/{id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Ids that are not 64 lowercase hex, traversal attempts included: 400.
    // (HTTP clients normalise a bare `..` segment away, so it is sent raw below.)
    for bad in [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2E%2E%2F%2E%2E%2Fx",
        &id.to_hex().to_uppercase(),
        &id.to_hex()[..63],
        &format!("{}%00", &id.to_hex()[..63]),
    ] {
        let r = raw(&format!("{base}/v1/chunks/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }

    for raw_path in [
        "/v1/chunks/..",
        "/v1/chunks/%2e%2e",
        "/v1/chunks/..%2f..%2fetc%2fpasswd",
    ] {
        assert_eq!(
            raw_status(running.addr(), raw_path).await,
            400,
            "{raw_path}"
        );
    }

    // Malformed and unsatisfiable ranges: 416 with Content-Range.
    c.put_chunk(&id, good.clone()).await.unwrap();
    for bad in [
        "bytes=abc",
        "bytes=5-1",
        "pages=1-2",
        "bytes=0-1,5-6",
        "bytes=5000-",
        "bytes=-0",
    ] {
        let r = raw(&format!("{base}/v1/chunks/{id}"))
            .header("range", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        assert_eq!(r.headers()["content-range"], "bytes */5000", "{bad}");
    }

    // Record whose body disagrees with its URL, and bad names: 400.
    let clock = Clock::new(1);
    let rec = record("media", "a.mp4", &clock);
    let r = http
        .put(format!("{base}/v1/records/media/b.mp4"))
        .header("authorization", format!("Bearer {SECRET}"))
        .json(&rec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let mut bad = record("Bad_Bucket", "k", &clock);
    bad.bucket = "Bad_Bucket".into();
    let err = c.put_record(&bad).await.unwrap_err();
    assert!(
        matches!(err, kura_cluster::Error::Status { status, .. } if status == StatusCode::BAD_REQUEST),
        "{err}"
    );

    // Health and metrics are open.
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let m = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("kura_http_requests_total"), "{m}");
    assert!(m.contains("kura_node_chunks 1"), "{m}");
    running.shutdown().await.unwrap();
}

/// Sends a GET with `path` exactly as written (no client-side normalisation) and
/// returns the status code.
async fn raw_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let head = String::from_utf8_lossy(&out);
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

fn record(bucket: &str, key: &str, clock: &Clock) -> ObjectRecord {
    let d = data(10, 3);
    ObjectRecord {
        bucket: bucket.into(),
        key: key.into(),
        ts: clock.now(),
        deleted: false,
        size: 10,
        content_type: Some("video/mp4".into()),
        etag: blake3::hash(&d).to_hex().to_string(),
        chunk_size: 4 << 20,
        chunks: vec![ChunkRef {
            id: ChunkId::of(&d),
            size: 10,
        }],
        meta: Default::default(),
        headers: Default::default(),
        md5: None,
        inline: None,
    }
}

#[tokio::test]
async fn records_last_writer_wins_tombstones_and_listing() {
    let (_dir, running, c) = node().await;
    let clock = Clock::new(7);
    let old = record("media", "videos/a b/ü.mp4", &clock);
    let new = record("media", "videos/a b/ü.mp4", &clock);
    assert!(c.put_record(&new).await.unwrap().applied);
    let reply = c.put_record(&old).await.unwrap();
    assert!(!reply.applied, "an older write must lose");
    assert_eq!(reply.current.as_deref(), Some(&new));
    let tomb = ObjectRecord::tombstone("media", "videos/a b/ü.mp4", clock.now());
    assert!(c.put_record(&tomb).await.unwrap().applied);
    assert!(
        !c.put_record(&new).await.unwrap().applied,
        "no resurrection"
    );
    assert!(
        c.get_record("media", "videos/a b/ü.mp4")
            .await
            .unwrap()
            .unwrap()
            .deleted
    );

    for i in 0..30 {
        c.put_record(&record("media", &format!("img/{i:03}.jpg"), &clock))
            .await
            .unwrap();
    }
    c.put_record(&record("media", "other/x", &clock))
        .await
        .unwrap();
    c.put_record(&record("zzz", "img/000.jpg", &clock))
        .await
        .unwrap();
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = c
            .list_records("media", "img/", after.as_deref(), 8, false, false)
            .await
            .unwrap();
        keys.extend(page.records.into_iter().map(|r| r.key));
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    let want: Vec<String> = (0..30).map(|i| format!("img/{i:03}.jpg")).collect();
    assert_eq!(keys, want);
    let all = c
        .list_records("media", "", None, 1000, false, false)
        .await
        .unwrap();
    assert_eq!(all.records.len(), 31, "tombstone hidden");
    assert!(all.records.iter().all(|r| r.chunks.len() == 1));
    let with = c
        .list_records("media", "", None, 1000, true, false)
        .await
        .unwrap();
    assert_eq!(with.records.len(), 32);
    // Summaries: the same records, the same order, without chunk lists.
    let summary = c
        .list_records("media", "", None, 1000, false, true)
        .await
        .unwrap();
    let strip = |mut r: ObjectRecord| {
        r.chunks.clear();
        r
    };
    assert_eq!(
        summary.records,
        all.records.into_iter().map(strip).collect::<Vec<_>>()
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn corrupt_byte_on_disk_is_refused_quarantined_and_found_by_scrub() {
    let (dir, running, c) = node().await;
    let a = data(300_000, 11);
    let b = data(2_000_000, 12);
    let good = data(150_000, 13);
    let [ia, ib, ig] = store(&c, &[&a, &b, &good]).await[..] else {
        unreachable!()
    };
    flip(&running, &ia, 123_456, 0x01);
    flip(&running, &ib, 1_999_999, 0x01);

    // A read touching the bad block is refused; no byte of it is served.
    let url = format!("{}/v1/chunks/{ia}", running.url());
    let r = raw(&url)
        .header("range", "bytes=100000-130000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.text().await.unwrap().contains("chunk_corrupt"));
    // ...and the copy is gone from the store (quarantined), not served later.
    assert_eq!(
        raw(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert!(dir.path().join("quarantine").read_dir().unwrap().count() >= 1);

    // The scrubber finds the other one without any read asking for it.
    let report = c.scrub_now().await.unwrap();
    assert_eq!(report.corrupt, 1);
    assert_eq!(report.checked, 2);
    assert!(c.head_chunk(&ib).await.unwrap().is_none());
    assert_eq!(c.get_chunk(&ig, None).await.unwrap(), good);
    let st = c.status().await.unwrap();
    assert_eq!((st.chunks, st.quarantined), (1, 2));
    let m = metrics(&running).await;
    assert!(m.contains("kura_scrub_corrupt_total 1"), "{m}");
    assert!(m.contains("kura_chunk_verify_failures_total 2"), "{m}");

    // A healthy replica's bytes can be stored again under the same id.
    assert!(c.put_chunk(&ia, a.clone()).await.unwrap().created);
    assert_eq!(c.get_chunk(&ia, None).await.unwrap(), a);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn orphan_chunk_files_are_swept_after_a_scrub_pass() {
    let (_dir, running, c) = node().await;
    let kept = data(200_000, 21);
    let small = data(1000, 22);
    let [kept_id, small_id] = store(&c, &[&kept, &small]).await[..] else {
        unreachable!()
    };
    // What a crash between a chunk file's rename and its index write leaves behind: a
    // file under a chunk id no index entry names (also one named like an inline chunk).
    let orphan = data(300_000, 23);
    let orphan_id = ChunkId::of(&orphan);
    let chunks = &running.node().chunks;
    for (id, bytes) in [(&orphan_id, &orphan), (&small_id, &small)] {
        std::fs::write(chunks.chunk_path(id), bytes).unwrap();
    }
    // A file that is not named like a chunk is not ours to judge.
    let stranger = chunks.chunk_path(&kept_id).with_file_name("notes.txt");
    std::fs::write(&stranger, b"operator's notes").unwrap();

    let report = c.scrub_now().await.unwrap();
    assert_eq!(report.orphans, 2);
    assert!(!chunks.chunk_path(&orphan_id).exists());
    assert!(!chunks.chunk_path(&small_id).exists());
    assert!(stranger.exists());
    assert_eq!(c.get_chunk(&kept_id, None).await.unwrap(), kept);
    assert_eq!(c.get_chunk(&small_id, None).await.unwrap(), small);
    assert!(c.head_chunk(&orphan_id).await.unwrap().is_none());
    assert_eq!(c.scrub_now().await.unwrap().orphans, 0);
    let m = metrics(&running).await;
    assert!(m.contains("kura_orphan_files_removed_total 2"), "{m}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn unchecked_reads_leave_verification_to_the_reader_who_reports_bad_copies() {
    let (_dir, running, c) = node().await;
    let a = data(300_000, 31);
    let good = data(200_000, 32);
    let gone = data(150_000, 33);
    let [ia, ig, ix] = store(&c, &[&a, &good, &gone]).await[..] else {
        unreachable!()
    };
    let chunks = &running.node().chunks;
    flip(&running, &ia, 200_000, 0x40);

    // The node sends without hashing; the reader's own check catches the bad byte, for a
    // whole chunk and for a proof of a range over it.
    assert!(matches!(
        c.get_chunk_end_to_end(&ia).await,
        Err(kura_cluster::Error::Corrupt(_))
    ));
    let span = ByteSpan {
        start: 199_000,
        end: 201_000,
    };
    assert!(matches!(
        c.get_chunk_verified(&ia, span).await,
        Err(kura_cluster::Error::Corrupt(_))
    ));
    assert_eq!(
        c.status().await.unwrap().quarantined,
        0,
        "the node did not hash"
    );
    // Healthy chunks read the same either way.
    assert_eq!(c.get_chunk_end_to_end(&ig).await.unwrap(), good);
    // The report: the node re-hashes its copy and quarantines it.
    assert!(c.report_corrupt(&ia).await.unwrap());
    assert!(c.head_chunk(&ia).await.unwrap().is_none());
    assert!(!c.report_corrupt(&ig).await.unwrap());
    assert!(c.report_corrupt(&ia).await.is_err(), "no longer held: 404");
    // A missing file is caught without any hashing.
    std::fs::remove_file(chunks.chunk_path(&ix)).unwrap();
    assert!(c.get_chunk_end_to_end(&ix).await.is_err());
    assert!(c.head_chunk(&ix).await.unwrap().is_none());
    assert_eq!(c.status().await.unwrap().quarantined, 2);
    // So is a file cut short, for an unchecked whole read and for a checked range past
    // its new end: no short body is ever sent.
    let short = |id: &ChunkId| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(chunks.chunk_path(id))
            .unwrap();
        f.set_len(100_000).unwrap();
    };
    let (cut1, cut2) = (data(180_000, 34), data(190_000, 35));
    let [i1, i2] = store(&c, &[&cut1, &cut2]).await[..] else {
        unreachable!()
    };
    short(&i1);
    assert!(c.get_chunk_end_to_end(&i1).await.is_err());
    assert!(c.head_chunk(&i1).await.unwrap().is_none());
    short(&i2);
    let r = raw(&format!("{}/v1/chunks/{i2}", running.url()))
        .header("range", "bytes=150000-150099")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    assert!(c.head_chunk(&i2).await.unwrap().is_none());
    assert_eq!(c.status().await.unwrap().quarantined, 4);
    // And for an unchecked proof read, which streams the file: its length is checked
    // before anything is sent.
    let cut3 = data(170_000, 36);
    let [i3] = store(&c, &[&cut3]).await[..] else {
        unreachable!()
    };
    short(&i3);
    let past_end = ByteSpan {
        start: 99_000,
        end: 101_000,
    };
    assert!(matches!(
        c.get_chunk_verified(&i3, past_end).await,
        Err(kura_cluster::Error::Status { .. })
    ));
    assert!(c.head_chunk(&i3).await.unwrap().is_none());
    assert_eq!(c.status().await.unwrap().quarantined, 5);
    // Without a proof, a range cannot be checked by the reader: refused.
    let r = raw(&format!("{}/v1/chunks/{ig}?unchecked=true", running.url()))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(1_000_000, 5);
    let small = data(100, 6);
    let clock = Clock::new(3);
    let rec = record("media", "keep.mp4", &clock);
    {
        let running = start(config(dir.path().to_path_buf())).await.unwrap();
        let c = NodeClient::new(&running.url(), SECRET).unwrap();
        c.put_chunk(&ChunkId::of(&d), d.clone()).await.unwrap();
        c.put_chunk(&ChunkId::of(&small), small.clone())
            .await
            .unwrap();
        c.put_record(&rec).await.unwrap();
        // An operator's pause and throttle, which must outlive the restart.
        c.set_rebalance(&serde_json::json!({"paused": true, "bytes_per_sec": 12345}))
            .await
            .unwrap();
        running.shutdown().await.unwrap();
    }
    let running = start(config(dir.path().to_path_buf())).await.unwrap();
    let c = NodeClient::new(&running.url(), SECRET).unwrap();
    let reb = c.rebalance().await.unwrap();
    assert_eq!(
        (reb["paused"].as_bool(), reb["bytes_per_sec"].as_u64()),
        (Some(true), Some(12345)),
        "{reb}"
    );
    assert_eq!(c.get_chunk(&ChunkId::of(&d), None).await.unwrap(), d);
    assert_eq!(
        c.get_chunk(&ChunkId::of(&small), None).await.unwrap(),
        small
    );
    assert_eq!(c.get_record("media", "keep.mp4").await.unwrap(), Some(rec));
    let st = c.status().await.unwrap();
    assert_eq!((st.chunks, st.bytes_used), (2, 1_000_100));
    running.shutdown().await.unwrap();
}

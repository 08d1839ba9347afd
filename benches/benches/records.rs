//! Record encodings: what a record costs to encode (a gateway's write) and to decode (a
//! gateway's quorum read, every record-cache miss), packed (`RecordFormat::Packed`,
//! what gateways write) beside JSON (`RecordFormat::Json`, what they wrote before) in
//! the same run (see BENCHMARKS.md, "Packed records").
//!
//! Two records: a 4 KiB object's, its bytes inline (every small object's), and a 1 GiB
//! object's, 256 chunk ids of 4 MiB chunks. Decoding goes through `EncodedRecord` as a
//! gateway does: from the stored bytes, the header read, the body decoded whole.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kura_cluster::hlc::Timestamp;
use kura_cluster::record::{ChunkRef, EncodedRecord, ObjectRecord};
use kura_cluster::ChunkId;

/// Size of each chunk of the large record's object (the default chunk size).
const CHUNK: u64 = 4 << 20;

/// A live record of `chunks` chunks, or of `inline` bytes kept in it.
fn record(chunks: u64, inline: usize) -> ObjectRecord {
    let ts = Timestamp {
        ms: 1_764_000_000_123,
        logical: 7,
        origin: 0x5eed_0000_0001,
    };
    let mut r = ObjectRecord {
        deleted: false,
        size: if inline > 0 {
            inline as u64
        } else {
            chunks * CHUNK
        },
        content_type: Some("video/mp4".into()),
        etag: blake3::hash(b"content").to_hex().to_string(),
        chunk_size: CHUNK,
        chunks: (0..chunks)
            .map(|i| ChunkRef {
                id: ChunkId::of(&i.to_le_bytes()),
                size: CHUNK,
            })
            .collect(),
        inline: (inline > 0).then(|| Bytes::from(vec![0x5a; inline])),
        ..ObjectRecord::tombstone("media", "library/2026/some-video-0001.mp4", ts)
    };
    r.meta.insert("title".into(), "a title".into());
    r
}

fn codecs(c: &mut Criterion) {
    for (name, r) in [
        ("4KiB_inline", record(0, 4096)),
        ("1GiB_256_chunks", record(256, 0)),
    ] {
        let packed = EncodedRecord::pack(&r).expect("packs").into_stored();
        let json =
            EncodedRecord::from_json(&serde_json::to_vec(&r).expect("encodes")).expect("stamps");
        let json = json.into_stored();
        let mut g = c.benchmark_group(format!("record_{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("decode_packed", |b| {
            b.iter(|| {
                let e = EncodedRecord::from_stored(black_box(packed.clone())).expect("reads");
                black_box(e.decode().expect("decodes"))
            })
        });
        g.bench_function("decode_json", |b| {
            b.iter(|| {
                let e = EncodedRecord::from_stored(black_box(json.clone())).expect("reads");
                black_box(e.decode().expect("decodes"))
            })
        });
        g.bench_function("encode_packed", |b| {
            b.iter(|| black_box(EncodedRecord::pack(black_box(&r)).expect("packs")))
        });
        g.bench_function("encode_json", |b| {
            b.iter(|| black_box(serde_json::to_vec(black_box(&r)).expect("encodes")))
        });
        g.finish();
        println!(
            "record_{name}: packed {} bytes, JSON {} bytes (headers included)",
            packed.len(),
            json.len()
        );
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);

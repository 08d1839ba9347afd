//! One storage node's chunk PUT and GET throughput, each beside a raw-filesystem
//! baseline measured in the same run (see BENCHMARKS.md).
//!
//! A real node runs in-process (`kura_storage_node::start`) on a tempdir and is driven
//! over loopback HTTP with `kura_cluster::client::NodeClient`, so every number includes
//! HTTP, hashing/verification, the chunk file or RocksDB inline value, and the fsyncs.
//!
//! Baselines, on a tempdir on the same filesystem as the node's data:
//! - `raw_fsync_write`: create a new file, write the same bytes, `sync_all`, fsync the
//!   directory (what the node does for a file chunk, minus the rename and the WAL).
//! - `raw_append_fdatasync` (4 KiB only): append to one preallocated file and
//!   `sync_data` — roughly what a RocksDB WAL write costs, the floor for an inline chunk.
//! - `raw_pread`: `read_exact_at` the same bytes from a file written before (page cache).
//!
//! Every PUT stores new content (a counter in the first 8 bytes of random data) so the
//! node's dedup never short-cuts it. Only the request itself is timed (`iter_custom`):
//! building the payload and its id happens outside the timed region.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use kura_cluster::client::NodeClient;
use kura_cluster::range::ByteSpan;
use kura_cluster::ChunkId;
use kura_storage_node::{NodeConfig, RunningNode};
use rand::RngCore;
use tokio::runtime::Runtime;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const SECRET: &str = "bench-cluster-secret-0123456789";
/// Concurrent PUTs per iteration in `put_4KiB_x16`.
const FANOUT: usize = 16;
/// Start of the ranged read: deliberately not aligned to the node's 64 KiB verification
/// blocks, like a viewer's range, so the node reads and verifies two blocks.
const RANGE_START: u64 = (MIB + 1000) as u64;
const RANGE_LEN: u64 = (64 * KIB) as u64;

/// Shared state: the runtime, the node, its client, and the baseline directory.
struct Bench {
    rt: Runtime,
    node: Option<RunningNode>,
    client: NodeClient,
    raw_dir: PathBuf,
    /// Makes every PUT (node and baseline) unique.
    counter: u64,
    // Dropped last: they hold the node's data and the baseline files.
    _node_dir: tempfile::TempDir,
    _raw_tmp: tempfile::TempDir,
}

impl Bench {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        // Both under the same temp directory, so on the same filesystem.
        let node_dir = tempfile::tempdir().expect("node tempdir");
        let raw_tmp = tempfile::tempdir().expect("baseline tempdir");
        let config = NodeConfig {
            data: node_dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("listen address"),
            node_id: "bench-node".into(),
            zone: "bench-zone".into(),
            cluster_secret: SECRET.into(),
            scrub_bytes_per_sec: 0,
            scrub_interval_secs: 3600,
            rebalance_bytes_per_sec: kura_storage_node::rebalance::DEFAULT_REBALANCE_BYTES_PER_SEC,
            repair_interval_secs: kura_storage_node::rebalance::DEFAULT_REPAIR_INTERVAL_SECS,
            gc_interval_secs: 0,
            gc_grace_secs: kura_storage_node::gc::DEFAULT_GC_GRACE_SECS,
            server: Default::default(),
        };
        let node = rt
            .block_on(kura_storage_node::start(config))
            .expect("start storage node");
        let client = NodeClient::new(&node.url(), SECRET).expect("node client");
        Self {
            rt,
            node: Some(node),
            client,
            raw_dir: raw_tmp.path().to_path_buf(),
            counter: 0,
            _node_dir: node_dir,
            _raw_tmp: raw_tmp,
        }
    }

    /// Stamps the next counter value into the first 8 bytes of `buf`.
    fn stamp(&mut self, buf: &mut [u8]) -> u64 {
        self.counter += 1;
        buf[..8].copy_from_slice(&self.counter.to_le_bytes());
        self.counter
    }

    /// Stores `data` on the node, untimed, and returns its id.
    fn seed(&self, data: Vec<u8>) -> ChunkId {
        let id = ChunkId::of(&data);
        let reply = self
            .rt
            .block_on(self.client.put_chunk(&id, Bytes::from(data)))
            .expect("seed chunk");
        assert_eq!(reply.id, id);
        id
    }

    /// Stops the node (its idle connections close with the client), then removes the
    /// node's data and the baseline files.
    fn shutdown(mut self) {
        drop(self.client);
        if let Some(node) = self.node.take() {
            self.rt.block_on(node.shutdown()).expect("node shutdown");
        }
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}

/// Creates `path`, writes `data`, fsyncs the file and then `dir`.
fn fsync_write(dir: &Path, path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create baseline file");
    f.write_all(data).expect("write baseline file");
    f.sync_all().expect("fsync baseline file");
    File::open(dir)
        .expect("open baseline dir")
        .sync_all()
        .expect("fsync baseline dir");
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, bytes: usize) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(bytes as u64));
}

/// `put_<size>`: a new chunk per iteration vs. a new fsync'd file per iteration.
fn bench_put(c: &mut Criterion, b: &mut Bench, name: &str, size: usize) {
    let mut group = c.benchmark_group(name);
    configure(&mut group, size);
    let mut buf = random_bytes(size);

    group.bench_function("kura", |bencher| {
        bencher.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                b.stamp(&mut buf);
                let id = ChunkId::of(&buf);
                let data = Bytes::copy_from_slice(&buf);
                let start = Instant::now();
                let reply =
                    b.rt.block_on(b.client.put_chunk(&id, data))
                        .expect("put chunk");
                total += start.elapsed();
                assert!(reply.created, "dedup short-cut a benchmark PUT");
            }
            total
        })
    });

    group.bench_function("raw_fsync_write", |bencher| {
        bencher.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let n = b.stamp(&mut buf);
                let path = b.raw_dir.join(format!("{name}-{n}"));
                let start = Instant::now();
                fsync_write(&b.raw_dir, &path, &buf);
                total += start.elapsed();
            }
            total
        })
    });

    if size <= 64 * KIB {
        // A WAL-like floor: append to one preallocated file, fdatasync.
        let path = b.raw_dir.join(format!("{name}-wal"));
        let wal = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create wal file");
        let prealloc = 64 * MIB as u64;
        wal.set_len(prealloc).expect("preallocate wal");
        let zeros = vec![0u8; MIB];
        for off in (0..prealloc).step_by(MIB) {
            wal.write_all_at(&zeros, off).expect("fill wal");
        }
        wal.sync_all().expect("fsync wal");
        let mut off = 0u64;
        group.bench_function("raw_append_fdatasync", |bencher| {
            bencher.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    b.stamp(&mut buf);
                    if off + size as u64 > prealloc {
                        off = 0;
                    }
                    let start = Instant::now();
                    wal.write_all_at(&buf, off).expect("append wal");
                    wal.sync_data().expect("fdatasync wal");
                    total += start.elapsed();
                    off += size as u64;
                }
                total
            })
        });
    }
    group.finish();
}

/// `put_4KiB_x16`: sixteen concurrent new 4 KiB chunks per iteration vs. sixteen
/// threads each writing and fsyncing a new 4 KiB file.
fn bench_put_concurrent(c: &mut Criterion, b: &mut Bench) {
    let size = 4 * KIB;
    let name = "put_4KiB_x16";
    let mut group = c.benchmark_group(name);
    configure(&mut group, size * FANOUT);
    let mut bufs: Vec<Vec<u8>> = (0..FANOUT).map(|_| random_bytes(size)).collect();

    group.bench_function("kura", |bencher| {
        bencher.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let payloads: Vec<(ChunkId, Bytes)> = bufs
                    .iter_mut()
                    .map(|buf| {
                        b.stamp(buf);
                        (ChunkId::of(buf), Bytes::copy_from_slice(buf))
                    })
                    .collect();
                let client = &b.client;
                let start = Instant::now();
                let replies = b.rt.block_on(futures::future::join_all(
                    payloads
                        .into_iter()
                        .map(|(id, data)| async move { client.put_chunk(&id, data).await }),
                ));
                total += start.elapsed();
                for reply in replies {
                    assert!(reply.expect("put chunk").created, "dedup short-cut a PUT");
                }
            }
            total
        })
    });

    group.bench_function("raw_fsync_write", |bencher| {
        bencher.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let paths: Vec<PathBuf> = bufs
                    .iter_mut()
                    .map(|buf| {
                        let n = b.stamp(buf);
                        b.raw_dir.join(format!("{name}-{n}"))
                    })
                    .collect();
                let dir = &b.raw_dir;
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (path, data) in paths.iter().zip(&bufs) {
                        s.spawn(move || fsync_write(dir, path, data));
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

/// `get_<size>` (whole chunk) or a ranged read, vs. `pread` of the same bytes.
fn bench_get(c: &mut Criterion, b: &mut Bench, name: &str, size: usize, span: Option<ByteSpan>) {
    let mut group = c.benchmark_group(name);
    let read_len = span.map_or(size as u64, |s| s.end - s.start);
    configure(&mut group, read_len as usize);
    let mut data = random_bytes(size);
    b.stamp(&mut data);

    let path = b.raw_dir.join(format!("{name}-source"));
    fsync_write(&b.raw_dir, &path, &data);
    let id = b.seed(data);

    group.bench_function("kura", |bencher| {
        bencher.iter(|| {
            let body =
                b.rt.block_on(b.client.get_chunk(&id, span))
                    .expect("get chunk");
            assert_eq!(body.len() as u64, read_len);
            body
        })
    });

    // The floor: one pread into a reused buffer (no allocation, no verification).
    let file = File::open(&path).expect("open pread source");
    let offset = span.map_or(0, |s| s.start);
    let mut buf = vec![0u8; read_len as usize];
    group.bench_function("raw_pread", |bencher| {
        bencher.iter(|| {
            file.read_exact_at(&mut buf, offset).expect("pread");
            black_box(&buf);
        })
    });
    group.finish();
}

fn chunk_store(c: &mut Criterion) {
    let mut b = Bench::new();
    bench_put(c, &mut b, "put_4MiB", 4 * MIB);
    bench_put(c, &mut b, "put_4KiB", 4 * KIB);
    bench_put_concurrent(c, &mut b);
    bench_get(c, &mut b, "get_4MiB", 4 * MIB, None);
    bench_get(c, &mut b, "get_4KiB", 4 * KIB, None);
    bench_get(
        c,
        &mut b,
        "get_64KiB_range_of_4MiB",
        4 * MIB,
        Some(ByteSpan {
            start: RANGE_START,
            end: RANGE_START + RANGE_LEN,
        }),
    );
    b.shutdown();
}

criterion_group!(benches, chunk_store);
criterion_main!(benches);

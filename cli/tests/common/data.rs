//! Deterministic test data: seeds, pseudo-random bytes (whole or any range), test
//! objects and data sets, uploading and verifying them through a gateway, and
//! [`Reader`]s that read them concurrently while a test changes the cluster.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use futures::StreamExt as _;
use kura_cluster::ChunkId;
use reqwest::{header, Method, StatusCode};

use super::{check_put_reply, GatewayClient, CHUNK};

/// The seed of a randomised test: `GATEWAY_TEST_SEED` if set, else random; printed so
/// that a failure can be repeated.
pub fn test_seed() -> u64 {
    let seed = std::env::var("GATEWAY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("seed {seed} (GATEWAY_TEST_SEED repeats the data, sizes and choices)");
    seed
}

/// `len` pseudo-random bytes from `seed` (splitmix64: fast even unoptimised, and the
/// same seed gives the same bytes).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut state = seed;
    for piece in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        piece.copy_from_slice(&z.to_le_bytes()[..piece.len()]);
    }
    out
}

/// blake3 hex of `data` (the gateway's ETag, unquoted).
pub fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Bytes `start..end` of `random_bytes(seed, _)`, without generating what comes before
/// (splitmix64 is seekable: piece `k` depends only on `seed + (k + 1) · γ`).
pub fn random_range(seed: u64, start: u64, end: u64) -> Vec<u8> {
    if start >= end {
        return Vec::new();
    }
    let mut out = Vec::with_capacity((end - start) as usize);
    for k in start / 8..end.div_ceil(8) {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(k + 1));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let bytes = z.to_le_bytes();
        let piece_start = k * 8;
        let from = start.max(piece_start) - piece_start;
        let to = end.min(piece_start + 8) - piece_start;
        out.extend_from_slice(&bytes[from as usize..to as usize]);
    }
    out
}

/// How many chunks the gateway stores an object of `len` bytes in: none when it is kept
/// inline in its record (`kura_cluster::record::INLINE_OBJECT_MAX`), else one per
/// [`CHUNK`].
pub fn stored_chunks(len: u64) -> usize {
    if len <= kura_cluster::record::INLINE_OBJECT_MAX {
        0
    } else {
        len.div_ceil(CHUNK) as usize
    }
}

/// An object of a test data set: its content is `random_bytes(seed, len)`, optionally
/// after a prefix copied from another object (to share that object's chunks).
#[derive(Clone, Debug)]
pub struct TestObject {
    pub key: String,
    pub seed: u64,
    pub len: u64,
    /// blake3 hex of the content (the ETag).
    pub etag: String,
    /// The content's chunks at [`CHUNK`] bytes each: (id, size); none for an object
    /// small enough to be kept in its record (see [`stored_chunks`]).
    pub chunks: Vec<(ChunkId, u64)>,
}

impl TestObject {
    /// Describes `key` with content `random_bytes(seed, len)` (computes hash and chunk
    /// ids, so this costs one pass over the bytes).
    pub fn new(key: &str, seed: u64, len: u64) -> Self {
        let data = random_bytes(seed, len as usize);
        Self {
            key: key.to_string(),
            seed,
            len,
            etag: blake3_hex(&data),
            chunks: if stored_chunks(len) == 0 {
                Vec::new()
            } else {
                data.chunks(CHUNK as usize)
                    .map(|c| (ChunkId::of(c), c.len() as u64))
                    .collect()
            },
        }
    }

    /// The content.
    pub fn data(&self) -> Vec<u8> {
        random_bytes(self.seed, self.len as usize)
    }

    /// Bytes `start..end` of the content.
    pub fn range(&self, start: u64, end: u64) -> Vec<u8> {
        random_range(self.seed, start, end.min(self.len))
    }
}

/// Objects `{prefix}{i:05}` of random sizes in `sizes` until their total reaches
/// `total` bytes (seeds drawn from `rng`).
pub fn data_set(
    rng: &mut impl rand::Rng,
    prefix: &str,
    total: u64,
    sizes: std::ops::RangeInclusive<u64>,
) -> Vec<TestObject> {
    let mut out: Vec<TestObject> = Vec::new();
    let mut sum = 0;
    while sum < total {
        let len = rng.random_range(sizes.clone()).min(total - sum).max(1);
        let key = format!("{prefix}{:05}", out.len());
        out.push(TestObject::new(&key, rng.random(), len));
        sum += len;
    }
    out
}

/// Uploads every object of `objects` to `bucket`, `concurrency` at a time, checking
/// each answer (size, ETag, chunk count).
pub async fn upload_all(
    gw: &GatewayClient,
    bucket: &str,
    objects: &[TestObject],
    concurrency: usize,
) -> Result<()> {
    futures::stream::iter(objects)
        .map(|o| async move {
            let data = o.data();
            let reply = gw
                .put(bucket, &o.key, data.clone())
                .await
                .with_context(|| format!("uploading {}", o.key))?;
            check_put_reply(bucket, &reply, &o.key, &data)
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<Result<()>>>()
        .await
        .into_iter()
        .collect()
}

/// Reads every object of `objects` back whole through the gateway, `concurrency` at a
/// time, and fails unless each has its length and ETag (blake3 of the bytes served).
pub async fn verify_all(
    gw: &GatewayClient,
    bucket: &str,
    objects: &[TestObject],
    concurrency: usize,
) -> Result<()> {
    let problems: Vec<String> = futures::stream::iter(objects)
        .map(|o| async move {
            match gw.get(bucket, &o.key).await {
                Ok(Some(b)) if b.len() as u64 == o.len && blake3_hex(&b) == o.etag => None,
                Ok(Some(b)) => Some(format!(
                    "{}: {} bytes hashing to {}, expected {} bytes hashing to {}",
                    o.key,
                    b.len(),
                    blake3_hex(&b),
                    o.len,
                    o.etag
                )),
                Ok(None) => Some(format!("{}: 404", o.key)),
                Err(e) => Some(format!("{}: {e:#}", o.key)),
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|p| async move { p })
        .collect()
        .await;
    ensure!(
        problems.is_empty(),
        "{} of {} objects do not read back:\n  {}",
        problems.len(),
        objects.len(),
        problems.join("\n  ")
    );
    Ok(())
}

/// What a [`Reader`] saw.
#[derive(Debug, Default)]
pub struct ReaderReport {
    /// Whole-object GETs answered 200 with the right bytes.
    pub whole_ok: u64,
    /// Range GETs answered 206 with the right bytes.
    pub ranges_ok: u64,
    /// Bytes received and checked.
    pub bytes: u64,
    /// Requests that failed (status, transport, short body).
    pub errors: u64,
    /// Responses whose bytes differed from what was uploaded.
    pub wrong: u64,
    /// The first problems, for the failure message.
    pub samples: Vec<String>,
}

impl ReaderReport {
    /// Fails unless there was no error and no wrong byte, and at least `min_reads` reads.
    pub fn check(&self, min_reads: u64) -> Result<()> {
        ensure!(
            self.errors == 0 && self.wrong == 0,
            "reader saw {} errors and {} wrong answers (of {} reads); first: {:#?}",
            self.errors,
            self.wrong,
            self.whole_ok + self.ranges_ok + self.errors + self.wrong,
            self.samples
        );
        ensure!(
            self.whole_ok + self.ranges_ok >= min_reads,
            "reader made only {} reads: {self:?}",
            self.whole_ok + self.ranges_ok
        );
        Ok(())
    }
}

/// Readers GETting random objects through a gateway until stopped: a quarter whole
/// (checked by length and blake3 against the ETag), the rest single ranges of up to
/// 256 KiB at random offsets (compared byte for byte with the regenerated content).
pub struct Reader {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<ReaderReport>>,
}

impl Reader {
    /// Starts `workers` reading tasks on `objects` of `bucket` (seeded from `seed`).
    pub fn start(
        gw: &GatewayClient,
        bucket: &str,
        objects: Arc<Vec<TestObject>>,
        workers: usize,
        seed: u64,
    ) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..workers as u64)
            .map(|w| {
                let (gw, bucket, objects, stop) = (
                    gw.clone(),
                    bucket.to_string(),
                    objects.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    use rand::{Rng, SeedableRng};
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (w << 32));
                    let mut r = ReaderReport::default();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let o = &objects[rng.random_range(0..objects.len())];
                        let range = if rng.random_bool(0.25) || o.len < 2 {
                            None
                        } else {
                            let start = rng.random_range(0..o.len - 1);
                            let len = rng.random_range(1..=(256 * 1024).min(o.len - start));
                            Some((start, start + len))
                        };
                        read_once(&gw, &bucket, o, range, &mut r).await;
                    }
                    r
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the readers and adds up what they saw.
    pub async fn finish(self) -> Result<ReaderReport> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = ReaderReport::default();
        for t in self.tasks {
            let r = t.await?;
            total.whole_ok += r.whole_ok;
            total.ranges_ok += r.ranges_ok;
            total.bytes += r.bytes;
            total.errors += r.errors;
            total.wrong += r.wrong;
            total.samples.extend(r.samples);
        }
        total.samples.truncate(20);
        Ok(total)
    }
}

async fn read_once(
    gw: &GatewayClient,
    bucket: &str,
    o: &TestObject,
    range: Option<(u64, u64)>,
    r: &mut ReaderReport,
) {
    let mut req = gw.object(Method::GET, bucket, &o.key);
    if let Some((s, e)) = range {
        req = req.header(header::RANGE, format!("bytes={s}-{}", e - 1));
    }
    let what = match range {
        Some((s, e)) => format!("{} bytes {s}..{e}", o.key),
        None => format!("{} whole", o.key),
    };
    let fail = |r: &mut ReaderReport, wrong: bool, msg: String| {
        if wrong {
            r.wrong += 1;
        } else {
            r.errors += 1;
        }
        if r.samples.len() < 10 {
            r.samples.push(msg);
        }
    };
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => return fail(r, false, format!("{what}: {e:#}")),
    };
    let status = resp.status();
    let want_status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if status != want_status {
        let text = resp.text().await.unwrap_or_default();
        return fail(r, false, format!("{what}: {status}: {text}"));
    }
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return fail(r, false, format!("{what}: body: {e:#}")),
    };
    match range {
        None => {
            if body.len() as u64 != o.len {
                fail(
                    r,
                    false,
                    format!("{what}: {} of {} bytes", body.len(), o.len),
                );
            } else if blake3_hex(&body) != o.etag {
                fail(
                    r,
                    true,
                    format!("{what}: content hashes to {}", blake3_hex(&body)),
                );
            } else {
                r.whole_ok += 1;
                r.bytes += body.len() as u64;
            }
        }
        Some((s, e)) => {
            if body.len() as u64 != e - s {
                fail(r, false, format!("{what}: {} bytes", body.len()));
            } else if body[..] != o.range(s, e)[..] {
                fail(r, true, format!("{what}: wrong bytes"));
            } else {
                r.ranges_ok += 1;
                r.bytes += body.len() as u64;
            }
        }
    }
}

/// Bytes of a test data set from `KURA_OPS_TEST_BYTES` (plain bytes, or with a `K`,
/// `M` or `G` suffix, powers of 1024, e.g. `512M`, `2GiB`), else `default`.
pub fn ops_test_bytes(default: u64) -> u64 {
    let Ok(raw) = std::env::var("KURA_OPS_TEST_BYTES") else {
        return default;
    };
    let v = raw.trim().to_ascii_uppercase();
    let v = v.trim_end_matches("IB").trim_end_matches('B');
    let (num, shift) = match v.chars().last() {
        Some('K') => (&v[..v.len() - 1], 10),
        Some('M') => (&v[..v.len() - 1], 20),
        Some('G') => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n << shift)
        .unwrap_or_else(|_| panic!("KURA_OPS_TEST_BYTES={raw:?} is not a byte count"))
}

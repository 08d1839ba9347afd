//! Crash safety of the storage node across real processes: `kura node` is SIGKILLed while
//! many chunk writes are in flight, restarted on the same data directory, and checked:
//!
//! - every chunk whose PUT was acknowledged is there, whole, hashing to its id;
//! - every chunk whose PUT got no reply is either absent (404 everywhere) or there whole
//!   and correct — never torn, never wrong, and GET, HEAD and the listing agree;
//! - nothing else is there, `GET /v1/status` counts exactly what the listing pages show,
//!   nothing was quarantined and the interrupted writes' temp files are gone.
//!
//! This is repeated for several kill/restart rounds on the same data directory; what was
//! durable in any earlier round must stay so.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::RangeInclusive;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use kura_cluster::client::NodeClient;
use kura_cluster::ChunkId;
use kura_storage_node::chunks::INLINE_THRESHOLD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{header, Method, StatusCode};

/// Kill/restart rounds on the same data directory.
const ROUNDS: usize = 6;
/// Concurrent writer tasks per round.
const WRITERS: usize = 16;
/// When, after the writers start, the node is killed (but never before the first
/// acknowledged PUT).
const KILL_AFTER_MS: RangeInclusive<u64> = 150..=600;
/// Sizes of "file" chunks (stored one file each).
const FILE_CHUNK_LEN: RangeInclusive<usize> = 256 * 1024..=4 * 1024 * 1024;
/// Share of a round's PUTs that re-send a chunk of an earlier round.
const REPUT_SHARE: f64 = 0.1;
/// Page size used to walk the chunk listing (small, so paging is exercised).
const LIST_PAGE: usize = 97;
/// Concurrent reads while verifying.
const VERIFY_CONCURRENCY: usize = 4;
/// Length of the last write burst, which ends without a kill.
const FINAL_BURST: Duration = Duration::from_millis(250);

/// How to regenerate a chunk's bytes: `len` bytes of blake3 XOF output keyed by `seed`.
#[derive(Clone, Copy, Debug)]
struct Spec {
    seed: u64,
    len: usize,
}

impl Spec {
    fn bytes(self) -> Bytes {
        let mut out = vec![0u8; self.len];
        blake3::Hasher::new()
            .update(&self.seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out.into()
    }
}

/// A chunk size: mostly 4 KiB (inline) or 256 KiB..4 MiB (file), and a few right at the
/// inline threshold on either side.
fn pick_len(rng: &mut StdRng) -> usize {
    let inline_max = INLINE_THRESHOLD as usize;
    match rng.random_range(0..10) {
        0..=3 => 4 * 1024,
        4 => inline_max,
        5 => inline_max + 1,
        _ => rng.random_range(FILE_CHUNK_LEN),
    }
}

/// What the writers of one round did.
#[derive(Default)]
struct RoundLog {
    /// Every chunk a PUT was sent (or about to be sent) for.
    attempted: Mutex<HashMap<ChunkId, Spec>>,
    /// Chunks whose PUT got a success reply.
    acked: Mutex<HashSet<ChunkId>>,
    /// Failed PUTs, with when they failed (only those after the kill are expected).
    errors: Mutex<Vec<(Instant, String)>>,
    /// Success replies that do not describe the chunk sent.
    bad_replies: Mutex<Vec<String>>,
}

/// A chunk a writer may send again, and whether the node must already hold it.
#[derive(Clone, Copy)]
struct Earlier {
    spec: Spec,
    durable: bool,
}

/// PUTs chunks one after another until a PUT fails (the node was killed) or `stop`.
async fn writer(
    client: NodeClient,
    log: Arc<RoundLog>,
    mut rng: StdRng,
    next_seed: Arc<AtomicU64>,
    earlier: Arc<Vec<Earlier>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        // `created` must be true for a new chunk, false for one the node holds (dedup),
        // and may be either for one whose earlier PUT went unanswered.
        let (spec, expect_created) = if !earlier.is_empty() && rng.random_bool(REPUT_SHARE) {
            let e = earlier[rng.random_range(0..earlier.len())];
            (e.spec, (e.durable).then_some(false))
        } else {
            let spec = Spec {
                seed: next_seed.fetch_add(1, Ordering::Relaxed),
                len: pick_len(&mut rng),
            };
            (spec, Some(true))
        };
        let data = spec.bytes();
        let id = ChunkId::of(&data);
        log.attempted.lock().unwrap().insert(id, spec);
        match client.put_chunk(&id, data).await {
            Ok(reply)
                if reply.id == id
                    && reply.size == spec.len as u64
                    && expect_created.is_none_or(|c| c == reply.created) =>
            {
                log.acked.lock().unwrap().insert(id);
            }
            Ok(reply) => log.bad_replies.lock().unwrap().push(format!(
                "PUT {id} ({} bytes, expected created {expect_created:?}) answered {reply:?}",
                spec.len
            )),
            Err(e) => {
                log.errors
                    .lock()
                    .unwrap()
                    .push((Instant::now(), e.to_string()));
                return;
            }
        }
    }
}

/// Chunks that must be there (acknowledged, or seen stored after a restart) and chunks
/// sent without a reply and not seen stored since.
#[derive(Default)]
struct Ledger {
    durable: HashMap<ChunkId, Spec>,
    unacked: HashMap<ChunkId, Spec>,
}

/// One round's numbers.
struct Tally {
    acked: usize,
    new: usize,
    files: usize,
    unanswered: usize,
}

impl Ledger {
    /// Enters what a round's writers did; fails on wrong replies and on PUT errors other
    /// than those after `errors_from` (the kill).
    fn enter(&mut self, log: RoundLog, errors_from: Option<Instant>) -> Result<Tally> {
        let bad = log.bad_replies.into_inner().unwrap();
        ensure!(bad.is_empty(), "wrong PUT replies: {bad:#?}");
        let early: Vec<String> = log
            .errors
            .into_inner()
            .unwrap()
            .into_iter()
            .filter(|(at, _)| errors_from.is_none_or(|from| *at < from))
            .map(|(_, e)| e)
            .collect();
        ensure!(
            early.is_empty(),
            "PUTs failed while the node was up: {early:#?}"
        );
        let attempted = log.attempted.into_inner().unwrap();
        let acked = log.acked.into_inner().unwrap();
        let mut tally = Tally {
            acked: acked.len(),
            new: 0,
            files: 0,
            unanswered: 0,
        };
        for (id, spec) in attempted {
            if acked.contains(&id) {
                tally.files += (spec.len as u64 > INLINE_THRESHOLD) as usize;
                self.unacked.remove(&id);
                tally.new += self.durable.insert(id, spec).is_none() as usize;
            } else {
                tally.unanswered += 1;
                if !self.durable.contains_key(&id) {
                    self.unacked.insert(id, spec);
                }
            }
        }
        Ok(tally)
    }

    /// Chunks stored despite a lost reply: from now on they must stay.
    fn now_durable(&mut self, ids: &[ChunkId]) {
        for id in ids {
            if let Some(spec) = self.unacked.remove(id) {
                self.durable.insert(*id, spec);
            }
        }
    }

    fn earlier(&self) -> Vec<Earlier> {
        let durable = self.durable.values().map(|spec| (spec, true));
        let unacked = self.unacked.values().map(|spec| (spec, false));
        durable
            .chain(unacked)
            .map(|(spec, durable)| Earlier {
                spec: *spec,
                durable,
            })
            .collect()
    }
}

/// The writer tasks of one round.
struct Writers {
    started: tokio::time::Instant,
    log: Arc<RoundLog>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Starts [`WRITERS`] writers against `node`.
    fn spawn(
        node: &common::KuraProcess,
        ledger: &Ledger,
        rng: &mut StdRng,
        next_seed: &Arc<AtomicU64>,
    ) -> Result<Self> {
        let client = common::node_client(node)?;
        let log = Arc::new(RoundLog::default());
        let stop = Arc::new(AtomicBool::new(false));
        let earlier = Arc::new(ledger.earlier());
        let started = tokio::time::Instant::now();
        let tasks = (0..WRITERS)
            .map(|_| {
                tokio::spawn(writer(
                    client.clone(),
                    log.clone(),
                    StdRng::seed_from_u64(rng.random()),
                    next_seed.clone(),
                    earlier.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Ok(Self {
            started,
            log,
            stop,
            tasks,
        })
    }

    /// Waits until some PUT has been acknowledged, so a kill never comes before the node
    /// took any write (a slow, loaded machine can take longer than the kill delay).
    async fn first_ack(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log.acked.lock().unwrap().is_empty() {
            if let Some((_, e)) = self.log.errors.lock().unwrap().first() {
                bail!("a PUT failed before any was acknowledged: {e}");
            }
            ensure!(Instant::now() < deadline, "no PUT acknowledged within 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Lets each writer finish its current PUT, waits for all, and returns their log.
    async fn finish(self) -> Result<RoundLog> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .context("a writer did not stop")??;
        }
        Arc::try_unwrap(self.log).map_err(|_| anyhow!("writer log still shared"))
    }
}

/// Raw HTTP with the cluster secret, for answers `NodeClient` folds into errors.
struct Raw {
    http: reqwest::Client,
    base: String,
}

impl Raw {
    fn req(&self, method: Method, id: &ChunkId) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v1/chunks/{id}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", common::SECRET))
    }
}

/// What one chunk looked like after a restart.
enum Seen {
    Present,
    Absent,
}

/// GET, HEAD and the listing of one chunk, checked against each other and its spec.
async fn check_chunk(
    raw: &Raw,
    client: &NodeClient,
    id: ChunkId,
    spec: Spec,
    must_exist: bool,
    listed: Option<u64>,
) -> Result<Seen, String> {
    let len = spec.len as u64;
    let get = raw
        .req(Method::GET, &id)
        .send()
        .await
        .map_err(|e| format!("GET {id}: {e}"))?;
    let head = raw
        .req(Method::HEAD, &id)
        .send()
        .await
        .map_err(|e| format!("HEAD {id}: {e}"))?;
    let head_len = head
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let client_head = client
        .head_chunk(&id)
        .await
        .map_err(|e| format!("NodeClient::head_chunk {id}: {e}"))?;
    let what = if must_exist {
        "durable chunk"
    } else {
        "unacknowledged chunk"
    };
    match get.status() {
        StatusCode::NOT_FOUND => {
            if must_exist {
                return Err(format!(
                    "{what} {id} ({len} bytes) is lost: GET answers 404"
                ));
            }
            if head.status() != StatusCode::NOT_FOUND || client_head.is_some() {
                return Err(format!(
                    "{what} {id}: GET 404 but HEAD {} / NodeClient {client_head:?}",
                    head.status()
                ));
            }
            if let Some(size) = listed {
                return Err(format!("{what} {id}: GET 404 but listed with size {size}"));
            }
            Ok(Seen::Absent)
        }
        StatusCode::OK => {
            let body = get
                .bytes()
                .await
                .map_err(|e| format!("GET {id}: reading body: {e}"))?;
            let got = ChunkId::of(&body);
            if body.len() as u64 != len || got != id {
                return Err(format!(
                    "{what} {id}: GET served {} bytes hashing to {got}, expected {len} bytes",
                    body.len()
                ));
            }
            if head.status() != StatusCode::OK || head_len != Some(len) {
                return Err(format!(
                    "{what} {id} ({len} bytes): HEAD {} with Content-Length {head_len:?}",
                    head.status()
                ));
            }
            if client_head != Some(len) {
                return Err(format!(
                    "{what} {id} ({len} bytes): NodeClient::head_chunk says {client_head:?}"
                ));
            }
            if listed != Some(len) {
                return Err(format!("{what} {id} ({len} bytes): listed as {listed:?}"));
            }
            Ok(Seen::Present)
        }
        other => {
            let text = get.text().await.unwrap_or_default();
            Err(format!(
                "{what} {id} ({len} bytes): GET answered {other}: {text}"
            ))
        }
    }
}

/// What a verification pass found.
struct Verified {
    listed: usize,
    /// Unacknowledged chunks that turned out to be stored (reply lost to the kill).
    unacked_present: Vec<ChunkId>,
    unacked_absent: usize,
    /// Chunk files no index entry refers to (allowed: a crash after the rename).
    orphan_files: usize,
}

/// Checks everything the node serves after a restart against what was written.
async fn verify(
    node: &common::KuraProcess,
    data_dir: &Path,
    durable: &HashMap<ChunkId, Spec>,
    unacked: &HashMap<ChunkId, Spec>,
) -> Result<Verified> {
    let client = common::node_client(node)?;
    let raw = Raw {
        http: reqwest::Client::new(),
        base: node.url(),
    };
    let mut problems = Vec::new();

    // The listing, page by page, in strictly increasing id order.
    let mut listed = BTreeMap::new();
    let mut after = None;
    loop {
        let page = client.list_chunks(after.as_ref(), LIST_PAGE).await?;
        ensure!(page.chunks.len() <= LIST_PAGE, "page over the limit");
        for c in &page.chunks {
            if listed
                .last_key_value()
                .is_some_and(|(last, _)| *last >= c.id)
            {
                problems.push(format!("listing out of order or repeated at {}", c.id));
            }
            listed.insert(c.id, c.size);
        }
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }

    let status = client.status().await?;
    let listed_bytes: u64 = listed.values().sum();
    if status.chunks != listed.len() as u64 {
        problems.push(format!(
            "status counts {} chunks but the listing has {}",
            status.chunks,
            listed.len()
        ));
    }
    if status.bytes_used != listed_bytes {
        problems.push(format!(
            "status counts {} bytes but the listed chunks add up to {listed_bytes}",
            status.bytes_used
        ));
    }
    if status.quarantined != 0 {
        problems.push(format!("{} chunks were quarantined", status.quarantined));
    }
    for id in listed.keys() {
        if !durable.contains_key(id) && !unacked.contains_key(id) {
            problems.push(format!("listed chunk {id} was never written"));
        }
    }

    let checks = durable
        .iter()
        .map(|(id, spec)| (*id, *spec, true))
        .chain(unacked.iter().map(|(id, spec)| (*id, *spec, false)));
    let results: Vec<(ChunkId, Result<Seen, String>)> = stream::iter(checks)
        .map(|(id, spec, must_exist)| {
            let (raw, client, size) = (&raw, &client, listed.get(&id).copied());
            async move {
                (
                    id,
                    check_chunk(raw, client, id, spec, must_exist, size).await,
                )
            }
        })
        .buffer_unordered(VERIFY_CONCURRENCY)
        .collect()
        .await;
    let mut unacked_present = Vec::new();
    let mut unacked_absent = 0;
    for (id, r) in results {
        match r {
            Ok(Seen::Present) if unacked.contains_key(&id) => unacked_present.push(id),
            Ok(Seen::Present) => {}
            Ok(Seen::Absent) => unacked_absent += 1,
            Err(p) => problems.push(p),
        }
    }

    // On disk: no interrupted write survives the restart, nothing was quarantined.
    for sub in ["tmp", "quarantine"] {
        let left: Vec<_> = std::fs::read_dir(data_dir.join(sub))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        if !left.is_empty() {
            problems.push(format!("{sub}/ holds {} entries: {left:?}", left.len()));
        }
    }
    let mut orphan_files = 0;
    for shard in std::fs::read_dir(data_dir.join("chunks"))? {
        for file in std::fs::read_dir(shard?.path())? {
            let name = file?.file_name();
            let known = name
                .to_str()
                .and_then(|n| n.parse::<ChunkId>().ok())
                .is_some_and(|id| listed.contains_key(&id));
            if !known {
                orphan_files += 1;
            }
        }
    }

    if !problems.is_empty() {
        let shown = problems.len().min(30);
        bail!(
            "{} problems (node start #{}):\n  {}",
            problems.len(),
            node.starts(),
            problems[..shown].join("\n  ")
        );
    }
    Ok(Verified {
        listed: listed.len(),
        unacked_present,
        unacked_absent,
        orphan_files,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_chunk_writes_loses_no_acknowledged_chunk() -> Result<()> {
    let test_started = Instant::now();
    let seed = std::env::var("SIGKILL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("seed {seed} (SIGKILL_TEST_SEED repeats the sizes and kill delays, not the timing)");
    let mut rng = StdRng::seed_from_u64(seed);
    let next_seed = Arc::new(AtomicU64::new(rng.random()));

    let data = tempfile::tempdir()?;
    let mut node = common::start_node(data.path(), "n1").await?;
    let mut ledger = Ledger::default();
    let mut rounds_with_writes_in_flight = 0;

    for round in 1..=ROUNDS {
        let writers = Writers::spawn(&node, &ledger, &mut rng, &next_seed)?;
        let writers_started = writers.started.into_std();
        let delay = rng.random_range(KILL_AFTER_MS);
        writers
            .first_ack()
            .await
            .with_context(|| format!("round {round}"))?;
        tokio::time::sleep_until(writers.started + Duration::from_millis(delay)).await;
        let killed_at = Instant::now();
        let exit = node.kill().await?;
        ensure!(
            exit.signal() == Some(nix::sys::signal::Signal::SIGKILL as i32),
            "round {round}: the node was not ended by our SIGKILL but by {exit}"
        );
        let log = writers.finish().await?;
        let t = ledger
            .enter(log, Some(killed_at))
            .with_context(|| format!("round {round}"))?;
        ensure!(
            t.acked > 0,
            "round {round}: no PUT acknowledged before the kill"
        );
        if t.unanswered > 0 {
            rounds_with_writes_in_flight += 1;
        }

        let restart_started = Instant::now();
        node.restart().await?;
        let restart_ms = restart_started.elapsed().as_millis();
        let verify_started = Instant::now();
        let v = verify(&node, data.path(), &ledger.durable, &ledger.unacked)
            .await
            .with_context(|| format!("round {round}, after the restart"))?;
        ledger.now_durable(&v.unacked_present);
        eprintln!(
            "round {round}: SIGKILL {} ms after the writers started: {} chunks attempted, \
             {} acknowledged ({} new, {} as files), {} unanswered at the kill | restart \
             {restart_ms} ms | unanswered chunks (all rounds) found stored: {}, absent: {} | \
             {} listed = status count, {} durable, {} orphan files | verified in {} ms",
            killed_at.duration_since(writers_started).as_millis(),
            t.acked + t.unanswered,
            t.acked,
            t.new,
            t.files,
            t.unanswered,
            v.unacked_present.len(),
            v.unacked_absent,
            v.listed,
            ledger.durable.len(),
            v.orphan_files,
            verify_started.elapsed().as_millis(),
        );
    }
    ensure!(
        rounds_with_writes_in_flight > 0,
        "no round had a PUT in flight at the kill: no crash mid-write was tested"
    );

    // A last burst without a crash: the live node's counters (not only those recounted at
    // startup) must match its listing, and what it stored since the last restart must read
    // back like everything else.
    let writers = Writers::spawn(&node, &ledger, &mut rng, &next_seed)?;
    tokio::time::sleep(FINAL_BURST).await;
    let t = ledger
        .enter(writers.finish().await?, None)
        .context("final burst")?;
    ensure!(
        t.unanswered == 0,
        "final burst: {} PUTs unanswered",
        t.unanswered
    );
    let v = verify(&node, data.path(), &ledger.durable, &ledger.unacked)
        .await
        .context("after the final burst")?;
    ensure!(
        v.unacked_present.is_empty(),
        "chunks absent after the last restart appeared without being written: {:?}",
        v.unacked_present
    );
    eprintln!(
        "final burst without a kill: {} acknowledged ({} new) | {} listed = status count, \
         {} durable",
        t.acked,
        t.new,
        v.listed,
        ledger.durable.len()
    );

    // Orphan files the crashes left (a rename done, its index write not) go with a scrub
    // pass, and only they: everything acknowledged still reads back afterwards.
    let report = common::node_client(&node)?.scrub_now().await?;
    ensure!(
        report.orphans as usize == v.orphan_files,
        "the scrub pass removed {} orphan files; {} were on disk",
        report.orphans,
        v.orphan_files
    );
    let after = verify(&node, data.path(), &ledger.durable, &ledger.unacked)
        .await
        .context("after the orphan sweep")?;
    ensure!(
        after.orphan_files == 0,
        "{} orphan files left after the sweep",
        after.orphan_files
    );
    eprintln!(
        "scrub pass: {} checked, {} orphan files removed",
        report.checked, report.orphans
    );

    let exit = node.stop().await?;
    ensure!(
        exit.success(),
        "the node did not stop cleanly on SIGTERM: {exit}"
    );
    eprintln!(
        "{ROUNDS} kill/restart rounds in {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
    Ok(())
}

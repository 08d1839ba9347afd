//! `kura-fleet`: a simulated fleet of transcoding workers against real coordinators.
//!
//! Each slot does what a real worker slot does through the same client
//! (`kura_transcoder::worker::coord::CoordinatorClient`, several coordinators with
//! failover): lease, heartbeat every lease/6 while "working" for `--task-ms`, complete —
//! except that the work is a sleep, so the coordinators and their store are all that is
//! measured. A job's plan answers with `--tasks-per-job` short tasks and a finalize.
//!
//! Prints one JSON object: transitions (leases granted, heartbeats, results) per second,
//! overall and per second of the run, lease latency percentiles (leases that returned a
//! task), leases lost (a heartbeat or result refused: the store let a live worker's lease
//! go), errors, and — with `--mark-at S` — how long after second S (when the benchmark
//! script kills a coordinator or fails the database over) the rate took to come back to
//! half of what it was before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use kura_transcoder::model::{TaskResult, TaskSpec};
use kura_transcoder::worker::coord::{Beat, CoordinatorClient};

#[derive(Parser)]
#[command(about = "A simulated fleet of transcoding workers")]
struct Args {
    /// Coordinator URL(s), comma-separated.
    #[arg(long)]
    coordinators: String,
    /// Cluster secret (workers' credential).
    #[arg(long, env = "KURA_CLUSTER_SECRET", hide_env_values = true)]
    secret: String,
    /// API key (to submit the jobs).
    #[arg(long, env = "KURA_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Simulated workers.
    #[arg(long, default_value_t = 300)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 2)]
    slots: usize,
    /// Jobs submitted before the fleet starts (enough to keep it busy).
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Tasks each job's plan adds (then one finalize).
    #[arg(long, default_value_t = 20)]
    tasks_per_job: usize,
    /// How long a task "works" (ms); heartbeats go every lease/6 meanwhile.
    #[arg(long, default_value_t = 1000)]
    task_ms: u64,
    /// How long the fleet runs (s).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// A second of the run to measure recovery from (see the module documentation).
    #[arg(long)]
    mark_at: Option<u64>,
}

#[derive(Default)]
struct Counters {
    leases: AtomicU64,
    heartbeats: AtomicU64,
    results: AtomicU64,
    lost: AtomicU64,
    errors: AtomicU64,
}

/// Transitions per second of the run, and lease latencies (µs).
struct Record {
    start: Instant,
    per_second: Mutex<Vec<u64>>,
    lease_us: Mutex<Vec<u64>>,
}

impl Record {
    fn transition(&self) {
        let s = self.start.elapsed().as_secs() as usize;
        let mut v = self.per_second.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() <= s {
            v.resize(s + 1, 0);
        }
        v[s] += 1;
    }
}

fn spec(kind: &str) -> anyhow::Result<TaskSpec> {
    let spec = match kind {
        "encode" => {
            serde_json::json!({"start_s": 0.0, "end_s": null, "first_segment": 0, "rungs": []})
        }
        _ => serde_json::json!({"rungs": [], "fps": 25.0, "has_audio": false}),
    };
    Ok(serde_json::from_value(serde_json::json!({
        "kind": kind, "spec": spec, "weight": 1.0, "urgent": kind == "finalize",
    }))?)
}

async fn submit_jobs(args: &Args) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let base = args
        .coordinators
        .split(',')
        .next()
        .context("no coordinator")?
        .trim_end_matches('/')
        .to_string();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (http, base, next, key) = (
            http.clone(),
            base.clone(),
            next.clone(),
            args.api_key.clone(),
        );
        let total = args.jobs as u64;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                let r = http
                    .post(format!("{base}/v1/jobs"))
                    .bearer_auth(&key)
                    .json(&serde_json::json!({"source": format!("fleet/{i}.mp4"), "profile": "default"}))
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "submit: {}", r.status());
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// One slot, until the run ends.
async fn slot(
    client: CoordinatorClient,
    worker: String,
    args: Arc<Args>,
    counters: Arc<Counters>,
    record: Arc<Record>,
) {
    let plan_result = TaskResult {
        stages: vec![
            std::iter::repeat_with(|| spec("encode"))
                .take(args.tasks_per_job)
                .collect::<anyhow::Result<Vec<_>>>()
                .unwrap_or_default(),
            spec("finalize").into_iter().collect(),
        ],
        ..Default::default()
    };
    loop {
        let asked = Instant::now();
        let a = match client.lease(&worker, None).await {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let took = asked.elapsed().as_micros() as u64;
        record
            .lease_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(took);
        counters.leases.fetch_add(1, Ordering::Relaxed);
        record.transition();
        let (work_ms, result) = if a.task.spec.work.kind() == "plan" {
            (args.task_ms / 10, plan_result.clone())
        } else {
            (args.task_ms, TaskResult::default())
        };
        let beat = Duration::from_millis((a.lease_ms / 6).max(1));
        let done_at = Instant::now() + Duration::from_millis(work_ms);
        let mut lost = false;
        while Instant::now() + beat < done_at {
            tokio::time::sleep(beat).await;
            match client.heartbeat(&a.task.id, a.token, 0.5).await {
                Ok(Beat::Kept) => {
                    counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                    record.transition();
                }
                Ok(Beat::Lost) => {
                    lost = true;
                    break;
                }
                Err(_) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if lost {
            counters.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        tokio::time::sleep_until(done_at.into()).await;
        match client.complete(&a.task.id, a.token, result).await {
            Ok(()) => {
                counters.results.fetch_add(1, Ordering::Relaxed);
                record.transition();
            }
            Err(kura_transcoder::TranscodeError::Fenced(_)) => {
                counters.lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Seconds after `mark` until a second with at least half the median rate before it.
fn recovery(per_second: &[u64], mark: usize) -> Option<usize> {
    let mut before: Vec<u64> = per_second.get(mark.saturating_sub(10)..mark)?.to_vec();
    before.sort_unstable();
    let median = *before.get(before.len() / 2)?;
    per_second
        .iter()
        .enumerate()
        .skip(mark + 1)
        .find(|(_, n)| **n * 2 >= median)
        .map(|(s, _)| s - mark)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let submitting = Instant::now();
    submit_jobs(&args).await?;
    let submit_s = submitting.elapsed().as_secs_f64();
    let counters = Arc::new(Counters::default());
    let record = Arc::new(Record {
        start: Instant::now(),
        per_second: Mutex::new(Vec::new()),
        lease_us: Mutex::new(Vec::new()),
    });
    let client = CoordinatorClient::new(&args.coordinators, &args.secret)?;
    let mut slots = Vec::new();
    for w in 0..args.workers {
        for _ in 0..args.slots {
            slots.push(tokio::spawn(slot(
                client.clone(),
                format!("fleet-w{w}"),
                args.clone(),
                counters.clone(),
                record.clone(),
            )));
        }
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    for s in &slots {
        s.abort();
    }
    let per_second = record
        .per_second
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let per_second: Vec<u64> = per_second.into_iter().take(args.seconds as usize).collect();
    let mut lease_us = record
        .lease_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    lease_us.sort_unstable();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let transitions = c(&counters.leases) + c(&counters.heartbeats) + c(&counters.results);
    // The first seconds fill the slots; the rate is over the rest.
    let warm = per_second.iter().skip(5).sum::<u64>() as f64;
    let steady_s = per_second.len().saturating_sub(5).max(1) as f64;
    let out = serde_json::json!({
        "submit_jobs_s": submit_s,
        "transitions": transitions,
        "transitions_per_s": warm / steady_s,
        "leases": c(&counters.leases),
        "heartbeats": c(&counters.heartbeats),
        "results": c(&counters.results),
        "leases_lost": c(&counters.lost),
        "errors": c(&counters.errors),
        "lease_p50_ms": percentile(&lease_us, 0.5) as f64 / 1000.0,
        "lease_p99_ms": percentile(&lease_us, 0.99) as f64 / 1000.0,
        "per_second": per_second,
        "recovery_s": args.mark_at.and_then(|m| recovery(&per_second, m as usize)),
    });
    println!("{out}");
    Ok(())
}

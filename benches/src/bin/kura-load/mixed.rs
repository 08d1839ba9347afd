//! Mixed load: each client task holds one connection and, until the deadline, picks an
//! operation: GET of a whole object, a random range, HEAD, a listing page, or a PUT of a
//! new object it then reads back later. Every body is checked against the content the
//! object was written with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{header, Client, StatusCode};
use serde_json::{json, Value};

use crate::stats::{content, memory, ByOp};
use crate::Target;

#[derive(clap::Args)]
pub struct MixedArgs {
    #[command(flatten)]
    target: Target,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 500)]
    conns: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Objects written before the load starts (read by every client).
    #[arg(long, default_value_t = 200)]
    objects: usize,
    /// Largest object, bytes (sizes are drawn from 1 KiB up to this, log-uniform).
    #[arg(long, default_value_t = 8 << 20)]
    max_size: usize,
    /// Largest object a client PUTs during the load, bytes.
    #[arg(long, default_value_t = 256 << 10)]
    max_put: usize,
}

/// An object the load knows the content of: `content(seed, len)`.
#[derive(Clone, Copy)]
struct Obj {
    seed: u64,
    len: usize,
}

struct Shared {
    target: Target,
    objects: Vec<(String, Obj)>,
    deadline: Instant,
}

fn log_uniform(rng: &mut StdRng, lo: usize, hi: usize) -> usize {
    let (lo, hi) = ((lo.max(1)) as f64, (hi.max(lo + 1)) as f64);
    (lo * (hi / lo).powf(rng.random::<f64>())) as usize
}

pub async fn run(a: MixedArgs) -> Result<Value> {
    let mut rng = StdRng::seed_from_u64(a.target.seed);
    let objects: Vec<(String, Obj)> = (0..a.objects)
        .map(|i| {
            let len = log_uniform(&mut rng, 1024, a.max_size);
            (
                format!("base/{i:05}"),
                Obj {
                    seed: rng.random(),
                    len,
                },
            )
        })
        .collect();
    let setup = Client::new();
    for (key, o) in &objects {
        let r = put(&setup, &a.target, key, *o).await?;
        ensure!(r == StatusCode::CREATED, "setup PUT {key}: {r}");
    }
    eprintln!(
        "kura-load: {} objects written; {} clients for {} s",
        objects.len(),
        a.conns,
        a.secs
    );
    let shared = Arc::new(Shared {
        target: a.target.clone(),
        objects,
        deadline: Instant::now() + Duration::from_secs(a.secs),
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.conns)
        .map(|i| {
            let shared = shared.clone();
            let seed = a.target.seed ^ ((i as u64 + 1) << 32);
            let max_put = a.max_put;
            tokio::spawn(async move { client(shared, i, seed, max_put).await })
        })
        .collect();
    let mut all = ByOp::new();
    for t in tasks {
        for (op, s) in t.await.context("a client task failed")?? {
            all.entry(op).or_default().merge(s);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let total: u64 = all
        .values()
        .map(|s| s.ok + s.status_5xx + s.other_errors)
        .sum();
    let mut ops = serde_json::Map::new();
    for (op, s) in all.iter_mut() {
        ops.insert(op.to_string(), s.report());
    }
    Ok(json!({
        "mode": "mixed",
        "conns": a.conns,
        "secs": secs,
        "requests": total,
        "requests_per_sec": total as f64 / secs,
        "5xx": all.values().map(|s| s.status_5xx).sum::<u64>(),
        "other_errors": all.values().map(|s| s.other_errors).sum::<u64>(),
        "wrong_bytes": all.values().map(|s| s.wrong_bytes).sum::<u64>(),
        "ops": ops,
        "memory": memory(&a.target.pids),
    }))
}

fn url(t: &Target, key: &str) -> String {
    format!("{}/v1/o/{}/{}", t.url, t.bucket, key)
}

async fn put(http: &Client, t: &Target, key: &str, o: Obj) -> Result<StatusCode> {
    let resp = http
        .put(url(t, key))
        .bearer_auth(&t.api_key)
        .body(content(o.seed, o.len))
        .send()
        .await?;
    Ok(resp.status())
}

/// One client: one connection, operations until the deadline.
async fn client(shared: Arc<Shared>, id: usize, seed: u64, max_put: usize) -> Result<ByOp> {
    let http = Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut mine: Vec<(String, Obj)> = Vec::new();
    let mut stats = ByOp::new();
    let t = &shared.target;
    while Instant::now() < shared.deadline {
        let roll = rng.random_range(0..100);
        let (key, o) = if !mine.is_empty() && rng.random_bool(0.2) {
            mine[rng.random_range(0..mine.len())].clone()
        } else {
            shared.objects[rng.random_range(0..shared.objects.len())].clone()
        };
        let started = Instant::now();
        let (op, outcome) = match roll {
            0..30 => ("get", get(&http, t, &key, o, None).await),
            30..65 => {
                let len = rng.random_range(1..=o.len.min(64 << 10));
                let start = rng.random_range(0..=o.len - len);
                (
                    "range",
                    get(&http, t, &key, o, Some((start, start + len))).await,
                )
            }
            65..75 => ("head", head(&http, t, &key, o).await),
            75..85 => ("list", list(&http, t, shared.objects.len().min(100)).await),
            _ => {
                let key = format!("w/{id}/{}", mine.len());
                let o = Obj {
                    seed: rng.random(),
                    len: log_uniform(&mut rng, 1, max_put),
                };
                let r = put(&http, t, &key, o).await.map(|s| match s {
                    StatusCode::CREATED => Outcome::Ok(o.len as u64),
                    s => Outcome::Status(s),
                });
                if matches!(r, Ok(Outcome::Ok(_))) {
                    mine.push((key, o));
                }
                ("put", r)
            }
        };
        let s = stats.entry(op).or_default();
        s.latencies.push(started.elapsed());
        match outcome {
            Ok(Outcome::Ok(bytes)) => {
                s.ok += 1;
                s.bytes += bytes;
            }
            Ok(Outcome::Status(st)) if st.is_server_error() => s.status_5xx += 1,
            Ok(Outcome::Status(_)) | Err(_) => s.other_errors += 1,
            Ok(Outcome::WrongBytes) => s.wrong_bytes += 1,
        }
    }
    Ok(stats)
}

enum Outcome {
    Ok(u64),
    Status(StatusCode),
    WrongBytes,
}

async fn get(
    http: &Client,
    t: &Target,
    key: &str,
    o: Obj,
    range: Option<(usize, usize)>,
) -> Result<Outcome> {
    let mut req = http.get(url(t, key)).bearer_auth(&t.api_key);
    if let Some((a, b)) = range {
        req = req.header(header::RANGE, format!("bytes={a}-{}", b - 1));
    }
    let resp = req.send().await?;
    let want = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if resp.status() != want {
        return Ok(Outcome::Status(resp.status()));
    }
    let body = resp.bytes().await?;
    let all = content(o.seed, o.len);
    let expected = match range {
        Some((a, b)) => &all[a..b],
        None => &all[..],
    };
    Ok(if body.as_ref() == expected {
        Outcome::Ok(body.len() as u64)
    } else {
        Outcome::WrongBytes
    })
}

async fn head(http: &Client, t: &Target, key: &str, o: Obj) -> Result<Outcome> {
    let resp = http
        .head(url(t, key))
        .bearer_auth(&t.api_key)
        .send()
        .await?;
    if resp.status() != StatusCode::OK {
        return Ok(Outcome::Status(resp.status()));
    }
    let len = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    Ok(if len == Some(o.len) {
        Outcome::Ok(0)
    } else {
        Outcome::WrongBytes
    })
}

async fn list(http: &Client, t: &Target, expected: usize) -> Result<Outcome> {
    let resp = http
        .get(format!(
            "{}/v1/o/{}?prefix=base/&limit=100",
            t.url, t.bucket
        ))
        .bearer_auth(&t.api_key)
        .send()
        .await?;
    if resp.status() != StatusCode::OK {
        return Ok(Outcome::Status(resp.status()));
    }
    let v: Value = resp.json().await?;
    let n = v["objects"].as_array().map_or(0, Vec::len);
    Ok(if n == expected {
        Outcome::Ok(0)
    } else {
        Outcome::WrongBytes
    })
}

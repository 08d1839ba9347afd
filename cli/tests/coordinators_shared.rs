//! Coordinators that survive their machine: two `kura coordinator`s over one real
//! PostgreSQL server, a gateway and two workers given both (`--coordinator c1,c2`).
//! The coordinator everyone uses first is SIGKILLed mid-encode and never comes back.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{check_hls, job_summary, sigkill, tasks_of, PgServer, Transcoding, SECRET, VIDEO_DIR};
use reqwest::StatusCode;
use serde_json::Value;

/// Longest wait for the jobs.
const JOB_TIMEOUT: Duration = Duration::from_secs(240);
/// Lease length: short, so that a lease lost with the coordinator would show.
const LEASE_MS: u64 = 4_000;

fn video(name: &str) -> PathBuf {
    Path::new(VIDEO_DIR).join(name)
}

/// Every job succeeds through the surviving coordinator; the gateway's job API answers
/// right after the kill; the task running when it died finishes without a second lease
/// (its worker heartbeats through the other coordinator: no lease is lost); fencing
/// tokens never name two jobs' outputs; a stale token is refused by the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_for_good_loses_nothing_with_two_over_postgres() -> Result<()> {
    let started = Instant::now();
    let pg = PgServer::start();
    let mut t = Transcoding::start_shared(LEASE_MS, &pg.url(), 2).await?;
    let gw = t.client()?;
    let sources = [
        "hello-720p-8s.mp4",
        "bikes-640x272-10s-noaudio.mp4",
        "sample-1080p-1s.mp4",
    ];
    let mut ids = Vec::new();
    for (i, name) in sources.iter().enumerate() {
        let reply = gw
            .put_file(
                "media",
                &format!("shared/{i}-{name}"),
                &video(name),
                Some("default"),
            )
            .await?;
        ids.push(reply["job"]["id"].as_str().context("job id")?.to_string());
    }
    t.start_worker("w1").await?;
    t.start_worker("w2").await?;

    // Kill the first coordinator (where the workers and the gateway go first) once an
    // encode is under way and its worker has reported progress: it holds the lease. (A
    // lease committed by a coordinator that dies before answering never reaches its
    // worker; it expires and is leased again, as any lost answer is.)
    let deadline = Instant::now() + JOB_TIMEOUT;
    let (job_id, task_id) = 'found: loop {
        for id in &ids {
            let job = gw.job(id).await?;
            if let Some(t) = tasks_of(&job).iter().find(|t| {
                t["spec"]["kind"] == "encode"
                    && t["state"] == "leased"
                    && t["progress"].as_f64().is_some_and(|p| p > 0.0 && p < 0.7)
            }) {
                break 'found (id.clone(), t["id"].as_str().unwrap_or_default().to_string());
            }
        }
        ensure!(Instant::now() < deadline, "no encode task was leased");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    sigkill(&mut t.coordinator).await?;
    let killed = Instant::now();
    eprintln!(
        "coordinator killed while {task_id} ran, {:.1} s in",
        started.elapsed().as_secs_f64()
    );
    // The job API answers at once, through the other coordinator.
    let job = gw
        .job(&job_id)
        .await
        .context("the job API after the kill")?;
    ensure!(job["id"] == job_id.as_str(), "{job}");

    let done = gw.wait_jobs(&ids, JOB_TIMEOUT).await?;
    eprintln!(
        "all jobs done {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let mut token_jobs: HashMap<String, String> = HashMap::new();
    for (job, name) in done.iter().zip(sources) {
        ensure!(job["state"] == "succeeded", "{}", job_summary(job));
        let report = check_hls(&gw, job, &video(name)).await?;
        for uri in report.segments.iter().flat_map(|(_, segs)| segs) {
            let token = uri.split('/').next().unwrap_or_default().to_string();
            let id = job["id"].as_str().unwrap_or_default().to_string();
            let owner = token_jobs.entry(token.clone()).or_insert(id.clone());
            ensure!(
                *owner == id,
                "token {token} wrote outputs of {owner} and {id}"
            );
        }
    }
    let job = done
        .iter()
        .find(|j| j["id"] == job_id.as_str())
        .context("job")?;
    let running = tasks_of(job)
        .into_iter()
        .find(|t| t["id"] == task_id.as_str())
        .context("task")?;
    ensure!(
        running["attempts"] == 1,
        "the task running at the kill was leased again (a lease was lost): {}",
        job_summary(job)
    );
    for w in ["w1", "w2"] {
        let w = t.worker(w)?;
        ensure!(
            w.is_running()? && w.starts() == 1,
            "{} did not ride it out",
            w.name()
        );
    }

    // The survivor refuses a token that holds nothing.
    let survivor = t.others[0].url();
    let resp = reqwest::Client::new()
        .post(format!("{survivor}/v1/tasks/{task_id}/heartbeat"))
        .bearer_auth(SECRET)
        .json(&serde_json::json!({"token": 1, "progress": 0.5}))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::CONFLICT,
        "stale token: {}",
        resp.status()
    );
    let listed: Vec<Value> = gw
        .http
        .get(format!("{}/v1/jobs?limit=100", gw.base))
        .bearer_auth(common::API_KEY)
        .send()
        .await?
        .json()
        .await?;
    ensure!(listed.len() == ids.len(), "{} jobs listed", listed.len());
    t.stop().await?;
    drop(pg);
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `kura coordinator migrate`: a coordinator's embedded queue (jobs submitted through
/// its API, one leased) moved into PostgreSQL while it is stopped; a coordinator started
/// on PostgreSQL lists the same jobs in the same states, and the lease is still honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kura_coordinator_migrate_moves_the_queue_into_postgres() -> Result<()> {
    use common::{kura_cli, KuraProcess, API_KEY};
    let pg = PgServer::start();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("coordinator");
    let data = data.to_str().context("path")?;
    let args = |store: &[&str]| {
        let mut a = vec!["coordinator"];
        a.extend_from_slice(store);
        a.extend(["--api-keys", API_KEY, "--cluster-secret", SECRET]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let http = reqwest::Client::new();
    let embedded = KuraProcess::start("coordinator", args(&["--data", data])).await?;
    let base = embedded.url();
    for i in 0..3 {
        let r = http
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({"source": format!("media/{i}.mp4"), "profile": "default"}))
            .send()
            .await?;
        ensure!(r.status() == StatusCode::ACCEPTED, "submit: {}", r.status());
    }
    let lease: Value = http
        .post(format!("{base}/v1/tasks/lease"))
        .bearer_auth(SECRET)
        .json(&serde_json::json!({"worker": "w1", "wait_ms": 0, "protocol": kura_transcoder::model::TASK_PROTOCOL}))
        .send()
        .await?
        .json()
        .await?;
    let jobs = |base: String| {
        let http = http.clone();
        async move {
            let listed: Vec<Value> = http
                .get(format!("{base}/v1/jobs?limit=10"))
                .bearer_auth(API_KEY)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(
                listed
                    .iter()
                    .map(|j| (j["id"].to_string(), j["state"].to_string()))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let before = jobs(base.clone()).await?;
    embedded.stop().await?;

    let (status, out, err) = kura_cli(
        &["coordinator", "migrate", "--from", data, "--to", &pg.url()],
        Duration::from_secs(60),
    )
    .await?;
    ensure!(status.success(), "migrate: {out}{err}");
    ensure!(out.contains("migrated 3 jobs"), "{out}");
    let (status, _, err) = kura_cli(
        &["coordinator", "migrate", "--from", data, "--to", &pg.url()],
        Duration::from_secs(60),
    )
    .await?;
    ensure!(
        !status.success() && err.contains("already holds jobs"),
        "{err}"
    );

    let shared = KuraProcess::start("c2", args(&["--store", &pg.url()])).await?;
    ensure!(
        jobs(shared.url()).await? == before,
        "the jobs did not move as they were"
    );
    let task = lease["task"]["id"].as_str().context("task id")?;
    let r = http
        .post(format!("{}/v1/tasks/{task}/heartbeat", shared.url()))
        .bearer_auth(SECRET)
        .json(&serde_json::json!({"token": lease["token"], "progress": 0.1}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "the moved lease: {}", r.status());
    shared.stop().await?;
    Ok(())
}

/// The value of metric `name` in a `/metrics` page (0 when absent).
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> Result<f64> {
    let page = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(page
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Polls metric `name` of `base` until it is at least `at_least`.
async fn wait_metric(http: &reqwest::Client, base: &str, name: &str, at_least: f64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(http, base, name).await? < at_least {
        ensure!(
            Instant::now() < deadline,
            "{base}: {name} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Work submitted through one coordinator wakes the workers long-polling another
/// (PostgreSQL `LISTEN`/`NOTIFY`), rather than waiting for their next re-check: the
/// second coordinator receives the notification, and its waiting worker is given the
/// task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queued_through_one_coordinator_wakes_the_others_workers() -> Result<()> {
    use common::{KuraProcess, API_KEY};
    let pg = PgServer::start();
    let args = || {
        let url = pg.url();
        [
            "coordinator",
            "--store",
            &url,
            "--api-keys",
            API_KEY,
            "--cluster-secret",
            SECRET,
        ]
        .map(String::from)
    };
    let a = KuraProcess::start("coordinator-a", args()).await?;
    let b = KuraProcess::start("coordinator-b", args()).await?;
    let http = reqwest::Client::new();
    // Once b listens, nothing queued after can pass it by.
    wait_metric(&http, &b.url(), "kura_coordinator_database_listening", 1.0).await?;
    let poll = tokio::spawn(
        http.post(format!("{}/v1/tasks/lease", b.url()))
            .bearer_auth(SECRET)
            .json(&serde_json::json!({"worker": "w1", "wait_ms": 30_000,
                "protocol": kura_transcoder::model::TASK_PROTOCOL}))
            .send(),
    );
    let r = http
        .post(format!("{}/v1/jobs", a.url()))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"source": "media/a.mp4", "profile": "default"}))
        .send()
        .await?;
    ensure!(r.status() == StatusCode::ACCEPTED, "submit: {}", r.status());
    let lease: Value = poll.await??.json().await?;
    ensure!(lease["task"]["spec"]["kind"] == "plan", "{lease}");
    wait_metric(
        &http,
        &b.url(),
        "kura_coordinator_database_wakeups_total",
        1.0,
    )
    .await?;
    ensure!(
        metric(&http, &a.url(), "kura_coordinator_database_listening").await? == 1.0,
        "a does not listen"
    );
    drop(pg);
    Ok(())
}

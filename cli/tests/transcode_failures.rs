//! Transcoding when things go wrong, with real processes (three `kura node`s, a
//! `kura gateway`, a `kura coordinator` and `kura worker`s, see `common::Transcoding`):
//! broken inputs, a worker SIGKILLed mid-task, a stale lease holder, a coordinator
//! SIGKILLed and restarted mid-job.
//!
//! The tests of this file take turns (`SERIAL`): each runs a whole cluster and encodes
//! video, and several use short leases; side by side on a small machine they starve each
//! other and lose leases they should keep.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::{
    check_hls, child_pids, files_in, job_summary, metric_value, pid_alive, run_tool, sigkill,
    tasks_of, GatewayClient, Transcoding, BROKEN_DIR, SECRET, VIDEO_DIR,
};
use kura_transcoder::model::TASK_PROTOCOL;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A short sample (10 s, one rung, no audio): the cheapest real job.
const SMALL_VIDEO: &str = "bikes-640x272-10s-noaudio.mp4";

/// Serialises the tests of this file (see the module doc).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest wait for a job in these tests.
const JOB_TIMEOUT: Duration = Duration::from_secs(180);

fn video(name: &str) -> PathBuf {
    Path::new(VIDEO_DIR).join(name)
}

/// The coordinator's worker API, called directly with the cluster secret, as a worker
/// would (or a stale one).
struct WorkerApi {
    http: reqwest::Client,
    base: String,
}

impl WorkerApi {
    fn new(base: String) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            base,
        })
    }

    /// `POST /v1/tasks/lease`: the assignment, `None` on 204; any other status fails.
    async fn lease(&self, worker: &str, wait_ms: u64) -> Result<Option<Value>> {
        let (status, body) = self
            .post(
                "/v1/tasks/lease",
                json!({ "worker": worker, "wait_ms": wait_ms, "protocol": TASK_PROTOCOL }),
            )
            .await?;
        match status {
            StatusCode::OK => Ok(Some(serde_json::from_str(&body)?)),
            StatusCode::NO_CONTENT => Ok(None),
            s => bail!("lease for {worker}: {s}: {body}"),
        }
    }

    /// `POST /v1/tasks/{task}/{action}` with `body`: status and body text.
    async fn task_call(
        &self,
        task: &str,
        action: &str,
        body: Value,
    ) -> Result<(StatusCode, String)> {
        self.post(&format!("/v1/tasks/{task}/{action}"), body).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<(StatusCode, String)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(SECRET)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.text().await?))
    }

    /// `/metrics`.
    async fn metrics(&self) -> Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?)
    }
}

/// Polls job `id` until `pick` finds something in it (e.g. a task in some state), for at
/// most `timeout`.
async fn wait_for<T>(
    gw: &GatewayClient,
    id: &str,
    timeout: Duration,
    what: &str,
    mut pick: impl FnMut(&Value) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let job = gw.job(id).await?;
        if let Some(t) = pick(&job) {
            return Ok(t);
        }
        ensure!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}: {}",
            job_summary(&job)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The task of `job` with id `task`.
fn task<'a>(job: &'a Value, task: &str) -> Option<&'a Value> {
    job["task_details"]
        .as_array()?
        .iter()
        .find(|t| t["id"] == task)
}

/// Every file of `shared/media/broken` fails as `bad_input` at its first attempt (bad
/// inputs are never retried), leaves no HLS behind, and does not count against the
/// worker: the same worker then transcodes a good video, and the coordinator still
/// leases to it (a quarantined worker gets 403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_inputs_fail_as_bad_input_without_retry_and_the_worker_keeps_going() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut t = Transcoding::start(30_000).await?;
    t.start_worker("w1").await?;
    let gw = t.client()?;
    let broken = files_in(BROKEN_DIR)?;
    let mut ids = Vec::new();
    for f in &broken {
        let key = format!(
            "broken/{}",
            f.file_name().context("name")?.to_string_lossy()
        );
        let reply = gw.put_file("media", &key, f, Some("default")).await?;
        ids.push((
            key,
            reply["job"]["id"].as_str().context("job id")?.to_string(),
        ));
    }
    for (key, id) in &ids {
        let job = gw.wait_job(id, JOB_TIMEOUT).await?;
        let summary = job_summary(&job);
        ensure!(job["state"] == "failed", "{key}: {summary}");
        // An MP4 without a single stream is not media at all; the others are broken.
        let class = if key.ends_with("no-streams.mp4") {
            "not_media"
        } else {
            "bad_input"
        };
        ensure!(
            job["error"]["class"] == class,
            "{key}: failed as {}, not {class}: {summary}",
            job["error"]
        );
        ensure!(job["attempts"] == 1, "{key} was retried: {summary}");
        for task in tasks_of(&job) {
            ensure!(
                task["attempts"].as_u64().unwrap_or(0) <= 1,
                "{key}: task retried: {summary}"
            );
        }
        ensure!(
            job["outputs"]["master"].is_null(),
            "{key}: a failed job has a master: {summary}"
        );
        let left = gw.list_all("media", &format!("{key}.hls/"), 1000).await?;
        ensure!(left.is_empty(), "{key}: outputs left behind: {left:?}");
        eprintln!("{key}: {class}: {}", job["error"]["message"]);
    }

    let good = video(SMALL_VIDEO);
    let reply = gw
        .put_file("media", "good.mp4", &good, Some("default"))
        .await?;
    let job = gw
        .wait_job(reply["job"]["id"].as_str().context("job id")?, JOB_TIMEOUT)
        .await?;
    check_hls(&gw, &job, &good).await?;

    // Not quarantined: the coordinator still answers this worker's lease (204: no work),
    // and the worker never heard otherwise.
    let api = WorkerApi::new(t.coordinator.url())?;
    ensure!(
        api.lease("w1", 0).await?.is_none(),
        "work left in the queue"
    );
    let log = t.worker("w1")?.log();
    ensure!(
        !log.contains("quarantined"),
        "the worker was quarantined:\n{log}"
    );
    t.stop().await?;
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Makes a `seconds` long 640x360 H.264 + AAC test video at `path` (70 s: three 30 s
/// encode ranges).
async fn make_long_video(path: &Path, seconds: u32) -> Result<()> {
    let secs = seconds.to_string();
    let out = path.to_string_lossy();
    let o = run_tool(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &secs,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            &out,
        ],
    )
    .await?;
    ensure!(o.status.success(), "ffmpeg: {}: {}", o.status, o.stderr);
    Ok(())
}

/// A worker SIGKILLed while it holds an encode task costs that task (and the light task
/// its express slot may hold) one more attempt and nothing else: its leases lapse,
/// another worker re-runs them, every other task ran once,
/// the job succeeds, and its HLS is complete and plays, with no segment of the killed
/// attempt in any playlist.
///
/// The lease is 5 s: short, yet long enough that the surviving worker's own leases
/// outlast a loaded machine's stalls (a lapse there would be a second retried task). It
/// costs no time: worker B has more than 5 s of other tasks to do first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_mid_task_loses_only_its_task() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut t = Transcoding::start(5_000).await?;
    let src = t.dir().join("long-70s.mp4");
    make_long_video(&src, 70).await?;
    eprintln!("source made after {:.1} s", started.elapsed().as_secs_f64());
    let gw = t.client()?;
    let reply = gw
        .put_file("media", "long.mp4", &src, Some("default"))
        .await?;
    let id = reply["job"]["id"].as_str().context("job id")?.to_string();
    t.start_worker("A").await?;

    // Wait until A holds an encode task and its media child is at work.
    let (held, token) = wait_for(&gw, &id, JOB_TIMEOUT, "encode task leased by A", |job| {
        tasks_of(job).iter().find_map(|t| {
            (t["spec"]["kind"] == "encode" && t["state"] == "leased" && t["lease"]["worker"] == "A")
                .then(|| {
                    (
                        t["id"].as_str().unwrap_or_default().to_string(),
                        t["lease"]["token"].as_u64().unwrap_or(0),
                    )
                })
        })
    })
    .await?;
    let a = t.worker("A")?;
    let a_pid = a.pid().context("A not running")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let children = loop {
        let c = child_pids(a_pid);
        if !c.is_empty() || Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ensure!(!children.is_empty(), "worker A started no media child");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigkill(a).await?;
    eprintln!(
        "killed A holding {held} (token {token}) after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    t.start_worker("B").await?;
    // A's media child dies with A (PR_SET_PDEATHSIG): no orphan keeps encoding.
    let deadline = Instant::now() + Duration::from_secs(5);
    while children.iter().any(|c| pid_alive(*c)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let orphans: Vec<u32> = children.iter().copied().filter(|c| pid_alive(*c)).collect();
    for c in &orphans {
        let _ = signal::kill(Pid::from_raw(*c as i32), Signal::SIGKILL);
    }
    ensure!(
        orphans.is_empty(),
        "media children {orphans:?} outlived SIGKILLed worker A"
    );

    let job = gw.wait_job(&id, JOB_TIMEOUT).await?;
    let summary = job_summary(&job);
    eprintln!("{summary}");
    ensure!(job["state"] == "succeeded", "{summary}");
    let tasks = tasks_of(&job);
    let encodes = tasks
        .iter()
        .filter(|t| t["spec"]["kind"] == "encode")
        .count();
    ensure!(encodes >= 3, "only {encodes} encode tasks: {summary}");
    // A held the encode, and maybe a light task in its express slot: exactly what it
    // held ran again (its leases expired), everything else ran once.
    let mut rerun = Vec::new();
    for t in &tasks {
        let attempts = t["attempts"].as_u64().unwrap_or(0);
        if attempts == 1 {
            continue;
        }
        ensure!(
            attempts == 2 && t["last_error"]["message"] == "lease of worker A expired",
            "task {} ran {attempts} times: {summary}",
            t["id"]
        );
        rerun.push(t["id"].as_str().unwrap_or_default().to_string());
    }
    ensure!(
        rerun.contains(&held),
        "the killed encode did not run again: {summary}"
    );
    ensure!(
        rerun.len() <= 2,
        "A held more than its two slots: {summary}"
    );
    let report = check_hls(&gw, &job, &src).await?;
    let stale = format!("a{token}/");
    for (rendition, segs) in &report.segments {
        ensure!(
            segs.iter().all(|s| !s.starts_with(&stale)),
            "{rendition} plays a segment of the killed attempt: {segs:?}"
        );
        if rendition.starts_with('v') {
            ensure!(
                segs.len() == 12,
                "{rendition}: {} segments, not 12",
                segs.len()
            );
        }
    }
    t.stop().await?;
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Fencing end to end: a task leased directly with the cluster secret and left to
/// expire is leased again under a new token; the old token's heartbeat, completion and
/// failure then get 409 and change nothing (not even with a different result), while
/// the new token's calls are accepted. After a real worker has finished the job, stale
/// results still change nothing, and the coordinator counts what it refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_worker_is_refused() -> Result<()> {
    let _serial = SERIAL.lock().await;
    const LEASE_MS: u64 = 3_000;
    let started = Instant::now();
    let mut t = Transcoding::start(LEASE_MS).await?;
    let gw = t.client()?;
    let api = WorkerApi::new(t.coordinator.url())?;
    let src = video(SMALL_VIDEO);
    gw.put_file("media", "fenced.mp4", &src, None).await?;
    let job = gw.submit_job("media/fenced.mp4", "default").await?;
    let id = job["id"].as_str().context("job id")?.to_string();

    let stale = api
        .lease("stale", 5_000)
        .await?
        .context("nothing to lease")?;
    let task_id = stale["task"]["id"].as_str().context("task id")?.to_string();
    let t1 = stale["token"].as_u64().context("token")?;
    ensure!(stale["task"]["job_id"] == id.as_str(), "leased {stale}");

    // The lease lapses and is reaped; the task is leased again, with a newer token.
    wait_for(&gw, &id, Duration::from_secs(20), "reaped lease", |job| {
        task(job, &task_id)
            .filter(|t| t["state"] == "queued" && t["last_error"]["class"] == "lease_expired")
            .map(|_| ())
    })
    .await?;
    let second = api
        .lease("second", 10_000)
        .await?
        .context("the expired task was not leased again")?;
    ensure!(second["task"]["id"] == task_id.as_str(), "leased {second}");
    let t2 = second["token"].as_u64().context("token")?;
    ensure!(t2 > t1, "new token {t2} not above the old {t1}");

    let bogus_result = json!({
        "outputs": { "master": "media/stale.hls/master.m3u8" },
        "parts": [{
            "of": { "kind": "video", "first_segment": 0, "pass": 234 },
            "segments": [{
                "rendition": "v234p", "index": 0, "uri": format!("a{t1}/seg00000.ts"),
                "duration_s": 6.0, "bytes": 1
            }]
        }],
        "stages": [[{
            "kind": "finalize",
            "spec": { "rungs": [], "fps": 25.0, "has_audio": false },
            "weight": 1.0
        }]]
    });
    let stale_calls = [
        ("heartbeat", json!({ "token": t1, "progress": 0.9 })),
        ("complete", json!({ "token": t1, "result": bogus_result })),
        (
            "fail",
            json!({ "token": t1, "failure": { "class": "bad_input", "message": "stale" } }),
        ),
    ];
    let before = gw.job(&id).await?;
    for (action, body) in &stale_calls {
        let (status, text) = api.task_call(&task_id, action, body.clone()).await?;
        ensure!(
            status == StatusCode::CONFLICT,
            "stale {action} while another lease holds the task: {status}: {text}"
        );
        let err: Value = serde_json::from_str(&text)?;
        ensure!(err["error"] == "lease_fenced", "stale {action}: {text}");
    }
    let after = gw.job(&id).await?;
    ensure!(
        before == after,
        "stale calls changed the job:\nbefore {before}\nafter {after}"
    );
    let held = task(&after, &task_id).context("task")?;
    ensure!(
        held["state"] == "leased"
            && held["lease"]["token"] == t2
            && held["lease"]["worker"] == "second",
        "the task after stale calls: {held}"
    );
    // The current token is accepted; it hands the task back as a transient failure.
    let (status, text) = api
        .task_call(
            &task_id,
            "heartbeat",
            json!({ "token": t2, "progress": 0.1 }),
        )
        .await?;
    ensure!(
        status == StatusCode::OK,
        "current heartbeat: {status}: {text}"
    );
    let (status, text) = api
        .task_call(
            &task_id,
            "fail",
            json!({ "token": t2, "failure": { "class": "transient", "message": "handing back" } }),
        )
        .await?;
    ensure!(status == StatusCode::OK, "current fail: {status}: {text}");

    // A real worker does the job.
    t.start_worker("w1").await?;
    let done = gw.wait_job(&id, JOB_TIMEOUT).await?;
    ensure!(done["state"] == "succeeded", "{}", job_summary(&done));
    let plan = task(&done, &task_id).context("task")?;
    // Leased by `stale`, `second` and the worker (more only if the worker lost a lease).
    ensure!(
        plan["attempts"].as_u64().unwrap_or(0) >= 3,
        "plan task: {plan}"
    );
    // Stale results after the end change nothing either.
    for (token, action, body) in [
        (
            t1,
            "complete",
            json!({ "token": t1, "result": stale_calls[1].1["result"].clone() }),
        ),
        (
            t2,
            "complete",
            json!({ "token": t2, "result": {"outputs": {"master": "media/x"}} }),
        ),
        (t1, "heartbeat", json!({ "token": t1, "progress": 1.0 })),
    ] {
        let (status, text) = api.task_call(&task_id, action, body).await?;
        ensure!(
            status == StatusCode::CONFLICT,
            "{action} with old token {token} after the job ended: {status}: {text}"
        );
    }
    let end = gw.job(&id).await?;
    ensure!(
        done == end,
        "stale calls changed the finished job:\nbefore {done}\nafter {end}"
    );
    let outputs = end["outputs"].to_string();
    ensure!(
        !outputs.contains("stale") && !outputs.contains(&format!("a{t1}/")),
        "stale outputs in {outputs}"
    );
    check_hls(&gw, &end, &src).await?;
    let fenced = metric_value(&api.metrics().await?, "kura_fenced_results_total");
    ensure!(
        fenced.is_some_and(|n| n >= 6.0),
        "coordinator counted {fenced:?} fenced results, expected at least 6"
    );
    t.stop().await?;
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The coordinator SIGKILLed while a worker is busy, and down for longer than a lease,
/// then restarted on its port with the same data directory: every submitted job is still
/// there and succeeds, the worker reconnects by itself, and the task whose lease lapsed
/// during the outage ran again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restart_mid_job_loses_no_job() -> Result<()> {
    let _serial = SERIAL.lock().await;
    const LEASE_MS: u64 = 3_000;
    let started = Instant::now();
    let mut t = Transcoding::start(LEASE_MS).await?;
    let gw = t.client()?;
    let sources = ["hello-720p-8s.mp4", SMALL_VIDEO, "sample-1080p-1s.mp4"];
    let mut ids = Vec::new();
    for (i, name) in sources.iter().enumerate() {
        let reply = gw
            .put_file(
                "media",
                &format!("restart/{i}-{name}"),
                &video(name),
                Some("default"),
            )
            .await?;
        ids.push(reply["job"]["id"].as_str().context("job id")?.to_string());
    }
    t.start_worker("w1").await?;

    // Kill the coordinator as soon as an encode task is under way (early in it, so it
    // is still running when the coordinator dies).
    let deadline = Instant::now() + JOB_TIMEOUT;
    let (job_id, task_id) = 'found: loop {
        for id in &ids {
            let job = gw.job(id).await?;
            if let Some(t) = tasks_of(&job).iter().find(|t| {
                t["spec"]["kind"] == "encode"
                    && t["state"] == "leased"
                    && t["progress"].as_f64().unwrap_or(1.0) < 0.5
            }) {
                break 'found (id.clone(), t["id"].as_str().unwrap_or_default().to_string());
            }
        }
        ensure!(Instant::now() < deadline, "no encode task was leased");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    sigkill(&mut t.coordinator).await?;
    eprintln!(
        "coordinator killed while {task_id} ran, after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Down for longer than the lease, so that lease lapses during the outage.
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 1_500)).await;
    ensure!(
        gw.job(&job_id).await.is_err(),
        "the gateway answered for the job with its coordinator down"
    );
    t.coordinator.restart_on_same_port().await?;

    let done = gw.wait_jobs(&ids, JOB_TIMEOUT).await?;
    for job in &done {
        ensure!(job["state"] == "succeeded", "{}", job_summary(job));
    }
    let job = done
        .iter()
        .find(|j| j["id"] == job_id.as_str())
        .context("job")?;
    let lapsed = task(job, &task_id).context("task")?;
    ensure!(
        lapsed["attempts"].as_u64().unwrap_or(0) >= 2,
        "the task whose lease lapsed during the outage ran once: {}",
        job_summary(job)
    );
    let idx = ids.iter().position(|i| *i == job_id).context("index")?;
    check_hls(&gw, job, &video(sources[idx])).await?;
    let w1 = t.worker("w1")?;
    ensure!(
        w1.is_running()? && w1.starts() == 1,
        "the worker did not ride out the coordinator's outage"
    );
    let log = w1.log();
    ensure!(
        log.contains("cannot lease work") || log.contains("heartbeat failed"),
        "the worker never noticed the outage:\n{log}"
    );
    let listed: Vec<Value> = gw
        .http
        .get(format!("{}/v1/jobs?limit=100", gw.base))
        .bearer_auth(common::API_KEY)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        listed.len() == ids.len(),
        "{} jobs listed, {} submitted",
        listed.len(),
        ids.len()
    );
    t.stop().await?;
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

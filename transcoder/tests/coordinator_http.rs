//! The coordinator's HTTP API over real loopback HTTP: users submit, list, watch and
//! cancel; workers long-poll for leases and are fenced when they go stale.

use std::time::{Duration, Instant};

mod common;

use kura_transcoder::coordinator::{start, CoordinatorConfig, RunningCoordinator};
use kura_transcoder::model::TASK_PROTOCOL;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "user-api-key-0123456789";
const SECRET: &str = "cluster-secret-0123456789abcdef";
const WEBHOOK_SECRET: &str = "webhook-signing-secret";

async fn coordinator(dir: &std::path::Path) -> RunningCoordinator {
    // The test's webhook receivers listen on loopback.
    coordinator_allowing(dir, vec!["127.0.0.0/8".parse().unwrap()]).await
}

async fn coordinator_allowing(
    dir: &std::path::Path,
    allow: Vec<ipnet::IpNet>,
) -> RunningCoordinator {
    start(CoordinatorConfig {
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        webhook_allow: allow,
        ..common::config(dir, KEY, SECRET)
    })
    .await
    .unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn submit(base: &str, source: &str) -> Value {
    let r = http()
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(KEY)
        .json(&json!({"source": source, "profile": "default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.json().await.unwrap()
}

async fn lease(base: &str, worker: &str, wait_ms: u64) -> Option<Value> {
    let r = http()
        .post(format!("{base}/v1/tasks/lease"))
        .bearer_auth(SECRET)
        .json(&json!({"worker": worker, "wait_ms": wait_ms, "protocol": TASK_PROTOCOL}))
        .send()
        .await
        .unwrap();
    match r.status() {
        StatusCode::NO_CONTENT => None,
        StatusCode::OK => Some(r.json().await.unwrap()),
        s => panic!("lease answered {s}"),
    }
}

#[tokio::test]
async fn submit_lease_complete_and_watch_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let base = c.url();
    // A worker waiting with nothing to do is woken by the submission.
    let waiter = {
        let base = base.clone();
        tokio::spawn(async move { lease(&base, "w1", 10_000).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let job = submit(&base, "media/a.mp4").await;
    let a = waiter.await.unwrap().expect("woken with work");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "long poll woke late"
    );
    assert_eq!(a["task"]["spec"]["kind"], "plan");
    assert_eq!(a["protocol"], TASK_PROTOCOL);
    let (task, token) = (
        a["task"]["id"].as_str().unwrap().to_string(),
        a["token"].as_u64().unwrap(),
    );
    let hb = http()
        .post(format!("{base}/v1/tasks/{task}/heartbeat"))
        .bearer_auth(SECRET)
        .json(&json!({"token": token, "progress": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), StatusCode::OK);
    let done = http()
        .post(format!("{base}/v1/tasks/{task}/complete"))
        .bearer_auth(SECRET)
        .json(&json!({"token": token, "result": {"outputs": {"master": "media/a.mp4.hls/master.m3u8"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let id = job["id"].as_str().unwrap();
    let got: Value = http()
        .get(format!("{base}/v1/jobs/{id}?tasks=true"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["state"], "succeeded");
    assert_eq!(got["progress"], 1.0);
    assert_eq!(got["outputs"]["master"], "media/a.mp4.hls/master.m3u8");
    assert_eq!(got["task_details"].as_array().unwrap().len(), 1);
    let listed: Vec<Value> = http()
        .get(format!("{base}/v1/jobs?state=succeeded"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    // A late duplicate completion is refused with 409.
    let again = http()
        .post(format!("{base}/v1/tasks/{task}/complete"))
        .bearer_auth(SECRET)
        .json(&json!({"token": token, "result": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    // A worker of another task protocol (an older one sends no version) is told so,
    // with both versions, and given nothing; so is a newer one.
    submit(&base, "media/b.mp4").await;
    for body in [
        json!({"worker": "old", "wait_ms": 0}),
        json!({"worker": "new", "wait_ms": 0, "protocol": TASK_PROTOCOL + 1}),
    ] {
        let r = http()
            .post(format!("{base}/v1/tasks/lease"))
            .bearer_auth(SECRET)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "protocol_mismatch", "{e}");
        assert_eq!(e["protocol"], TASK_PROTOCOL, "{e}");
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("coordinator {TASK_PROTOCOL}")),
            "{msg}"
        );
    }
    let m = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "kura_jobs_submitted_total 2",
        "kura_leases_granted_total 1",
        "kura_fenced_results_total 1",
    ] {
        assert!(m.contains(line), "{line} missing in\n{m}");
    }
    assert!(
        m.contains("kura_jobs_finished_total{state=\"succeeded\"} 1"),
        "{m}"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_and_credentials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let base = c.url();
    let cases = [
        (
            json!({"source": "media/a.mp4", "profile": "nope"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"source": "NoBucket", "profile": "default"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"source": "media/../x", "profile": "default"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"source": "media/a.mp4", "priority": 42}),
            StatusCode::BAD_REQUEST,
        ),
        // A valid key with no room left under the key limit for its outputs' names.
        (
            json!({"source": format!("media/{}", "k".repeat(1000)), "profile": "default"}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, want) in cases {
        let r = http()
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{body}");
    }
    // Users' keys do not open the worker API, nor the secret the user API.
    let r = http()
        .post(format!("{base}/v1/tasks/lease"))
        .bearer_auth(KEY)
        .json(&json!({"worker": "w"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http()
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http()
        .get(format!("{base}/v1/jobs/none"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http()
        .get(format!("{base}/v1/jobs?state=bogus"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Batches need a gateway to list objects.
    let r = http()
        .post(format!("{base}/v1/jobs/batch"))
        .bearer_auth(KEY)
        .json(&json!({"prefix": "media/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(lease(&base, "w", 0).await.is_none());
    // The longest key that leaves room is accepted.
    let longest = 1024 - kura_transcoder::model::OUTPUT_KEY_ROOM;
    let r = http()
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(KEY)
        .json(&json!({"source": format!("media/{}", "k".repeat(longest)), "profile": "default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_survives_a_coordinator_restart_and_cancel_fences_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (id, task, token);
    {
        let c = coordinator(dir.path()).await;
        id = submit(&c.url(), "media/a.mp4").await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let a = lease(&c.url(), "w1", 0).await.unwrap();
        task = a["task"]["id"].as_str().unwrap().to_string();
        token = a["token"].as_u64().unwrap();
        c.shutdown().await.unwrap();
    }
    let c = coordinator(dir.path()).await;
    let base = c.url();
    let got: Value = http()
        .get(format!("{base}/v1/jobs/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["state"], "running");
    let r = http()
        .delete(format!("{base}/v1/jobs/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let hb = http()
        .post(format!("{base}/v1/tasks/{task}/heartbeat"))
        .bearer_auth(SECRET)
        .json(&json!({"token": token, "progress": 0.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), StatusCode::CONFLICT);
    let r = http()
        .delete(format!("{base}/v1/jobs/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_finished_job_calls_its_webhook_signed_and_retried() {
    use std::sync::{Arc, Mutex};
    // A receiver that refuses the first delivery and records the rest.
    type Deliveries = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let seen: Deliveries = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let (seen, calls) = (seen.clone(), calls.clone());
        axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (seen, calls) = (seen.clone(), calls.clone());
                    async move {
                        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let sig = headers["x-kura-signature"].to_str().unwrap().to_string();
                        seen.lock().unwrap().push((sig, body.to_vec()));
                        axum::http::StatusCode::OK
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let base = c.url();
    let r = http()
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(KEY)
        .json(&json!({"source": "media/a.mp4", "webhook": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let bad = http()
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(KEY)
        .json(&json!({"source": "media/a.mp4", "webhook": "ftp://x/y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let a = lease(&base, "w", 0).await.unwrap();
    let done = http()
        .post(format!(
            "{base}/v1/tasks/{}/complete",
            a["task"]["id"].as_str().unwrap()
        ))
        .bearer_auth(SECRET)
        .json(&json!({"token": a["token"], "result": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "delivered once after one refusal");
    let (sig, body) = &got[0];
    assert_eq!(
        sig,
        &kura_transcoder::coordinator::webhook::signature(WEBHOOK_SECRET.as_bytes(), body)
    );
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["event"], "job.finished");
    assert_eq!(v["job"]["state"], "succeeded");
    c.shutdown().await.unwrap();
}

/// Completes task `a` with `result`; the job as the coordinator answers.
async fn complete(base: &str, a: &Value, result: Value) -> Value {
    let r = http()
        .post(format!(
            "{base}/v1/tasks/{}/complete",
            a["task"]["id"].as_str().unwrap()
        ))
        .bearer_auth(SECRET)
        .json(&json!({"token": a["token"], "result": result}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_job_that_becomes_playable_says_so_before_it_finishes() {
    use std::sync::{Arc, Mutex};
    let events: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = {
        let events = events.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let events = events.clone();
                async move {
                    events
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let wait_for = |n: usize| {
        let events = events.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while events.lock().unwrap().len() < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            events.lock().unwrap().clone()
        }
    };

    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let base = c.url();
    let r = http()
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(KEY)
        .json(&json!({"source": "media/a.mp4", "webhook": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let plan = lease(&base, "w", 0).await.unwrap();
    let finalize = json!({"rungs": [], "fps": 25.0, "has_audio": false, "playable": true});
    let encode = json!({"start_s": 0.0, "end_s": null, "first_segment": 0, "rungs": []});
    let stages = json!([
        [{"kind": "finalize", "spec": finalize, "urgent": true}],
        [{"kind": "encode", "spec": encode}]
    ]);
    complete(&base, &plan, json!({ "stages": stages })).await;
    let publish = lease(&base, "w", 0).await.unwrap();
    let job = complete(&base, &publish, json!({"playable": true})).await;
    assert_eq!(job["state"], "playable");
    let got = wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["event"], "job.playable");
    assert_eq!(got[0]["job"]["state"], "playable");
    assert!(got[0]["job"]["playable_ms"].as_u64().is_some());
    let rest = lease(&base, "w", 0).await.unwrap();
    assert_eq!(
        complete(&base, &rest, json!({})).await["state"],
        "succeeded"
    );
    let got = wait_for(2).await;
    assert_eq!(got.len(), 2, "one event each: {got:?}");
    assert_eq!(got[1]["event"], "job.finished");
    assert_eq!(got[1]["job"]["playable_ms"], got[0]["job"]["playable_ms"]);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn webhooks_cannot_reach_loopback_private_or_metadata_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator_allowing(dir.path(), Vec::new()).await;
    let base = c.url();
    for hook in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "http://0.0.0.0:9/hook",
    ] {
        let r = http()
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(KEY)
            .json(&json!({"source": "media/a.mp4", "webhook": hook}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{hook} accepted");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("not a public address"),
            "{hook}: {body}"
        );
    }
    let jobs: Value = http()
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(0),
        "a refused job was stored"
    );
    c.shutdown().await.unwrap();
}

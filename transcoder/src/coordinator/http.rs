//! The coordinator's HTTP API.
//!
//! Users (API key, as the gateway's):
//! | call | answer |
//! | --- | --- |
//! | `POST /v1/jobs {source, profile, priority?, webhook?}` | 202 the job |
//! | `GET /v1/jobs?state=&before=&limit=` | jobs, newest first |
//! | `GET /v1/jobs/{id}` | the job (`?tasks=true` adds its tasks) |
//! | `DELETE /v1/jobs/{id}` | cancels it |
//! | `POST /v1/jobs/batch {prefix: "bucket/prefix", profile, priority?}` | 202 one job per object |
//! | `GET /v1/batches/{id}` | the batch with aggregated progress |
//!
//! Workers (cluster secret):
//! | call | answer |
//! | --- | --- |
//! | `POST /v1/tasks/lease {worker, wait_ms}` | 200 an assignment, or 204 after `wait_ms` |
//! | `POST /v1/tasks/{id}/heartbeat {token, progress}` | 200, or 409 if the lease is gone |
//! | `POST /v1/tasks/{id}/complete {token, result}` | 200, or 409 (fenced) |
//! | `POST /v1/tasks/{id}/fail {token, failure}` | 200, or 409 (fenced) |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kura_cluster::names::{check_bucket, check_key};
use kura_cluster::observe::{self, HttpMetrics};
use kura_cluster::routes::{Access, RouteTable};
use serde::{Deserialize, Serialize};

use super::store::Batch;
use super::Coordinator;
use crate::error::{Result, TranscodeError};
use crate::model::*;

/// Longest long-poll a worker may ask for: under common proxy idle timeouts (60 s).
pub const MAX_LEASE_WAIT: Duration = Duration::from_secs(30);

/// Largest listing page.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Most objects one batch may cover; bigger backfills are split by prefix.
pub const MAX_BATCH_JOBS: usize = 100_000;

/// Every route of the coordinator's API, with the credential it takes (see
/// `kura_cluster::routes`; `tests/coordinator_http.rs` walks it).
fn table() -> RouteTable<Arc<Coordinator>> {
    use kura_cluster::routes::Access::{ApiKey, ClusterSecret, Open};
    use Method as M;
    RouteTable::default()
        .route("/health", &[M::GET], Open, get(health))
        .route("/metrics", &[M::GET], Open, get(metrics))
        .route(
            "/v1/jobs",
            &[M::POST, M::GET],
            ApiKey,
            post(submit).get(list),
        )
        .route("/v1/jobs/batch", &[M::POST], ApiKey, post(submit_batch))
        .route(
            "/v1/jobs/{id}",
            &[M::GET, M::DELETE],
            ApiKey,
            get(get_job).delete(cancel),
        )
        .route("/v1/batches/{id}", &[M::GET], ApiKey, get(get_batch))
        .route("/v1/tasks/lease", &[M::POST], ClusterSecret, post(lease))
        .route(
            "/v1/tasks/{id}/heartbeat",
            &[M::POST],
            ClusterSecret,
            post(heartbeat),
        )
        .route(
            "/v1/tasks/{id}/complete",
            &[M::POST],
            ClusterSecret,
            post(complete),
        )
        .route("/v1/tasks/{id}/fail", &[M::POST], ClusterSecret, post(fail))
}

/// The coordinator's routes and the credential each takes.
pub fn routes() -> Vec<kura_cluster::routes::Route> {
    table().routes()
}

/// The coordinator's router.
pub fn router(c: Arc<Coordinator>) -> Router {
    let http_metrics = {
        let mut reg = c.registry.lock().unwrap_or_else(|e| e.into_inner());
        HttpMetrics::register(&mut reg)
    };
    let guarded = c.clone();
    table()
        .into_router(move |access, routes| match access {
            Access::Open => routes,
            Access::ClusterSecret => routes.route_layer(middleware::from_fn_with_state(
                guarded.clone(),
                require_secret,
            )),
            // User routes, and any other class: an API key.
            _ => routes.route_layer(middleware::from_fn_with_state(
                guarded.clone(),
                require_api_key,
            )),
        })
        .layer(middleware::from_fn_with_state(
            http_metrics,
            observe::record_http,
        ))
        .with_state(c)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn metrics(State(c): State<Arc<Coordinator>>) -> Response {
    let c2 = c.clone();
    if let Ok(Ok(depth)) = tokio::task::spawn_blocking(move || c2.store.queue_depth()).await {
        c.metrics.queue_depth.set(depth as i64);
    }
    observe::render(&c.registry)
}

/// Counts results refused for a stale lease.
fn count_fenced<T>(c: &Coordinator, r: Result<T>) -> Result<T> {
    if matches!(r, Err(TranscodeError::Fenced(_))) {
        c.metrics.fenced.inc();
    }
    r
}

async fn require_api_key(State(c): State<Arc<Coordinator>>, req: Request, next: Next) -> Response {
    if !c.api_keys.admits_headers(req.headers()) {
        return TranscodeError::Unauthorized.into_response();
    }
    next.run(req).await
}

async fn require_secret(State(c): State<Arc<Coordinator>>, req: Request, next: Next) -> Response {
    if !c.workers.admits_headers(req.headers()) {
        return TranscodeError::Unauthorized.into_response();
    }
    next.run(req).await
}

/// Who is calling, for fair scheduling: 12 hex digits of a keyed digest of the
/// presented API key (already checked by [`require_api_key`]), so jobs can say whose
/// they are without carrying the key.
fn tenant_of(headers: &axum::http::HeaderMap) -> String {
    let key = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let digest = blake3::derive_key("kura 2026-12 tenant of an API key", key);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Checks `bucket/key` (or `bucket/prefix` when `prefix`) and splits it.
pub fn split_source(source: &str, prefix: bool) -> Result<(String, String)> {
    let (bucket, key) = source.split_once('/').unwrap_or((source, ""));
    check_bucket(bucket).map_err(|e| TranscodeError::BadRequest(e.to_string()))?;
    if !prefix || !key.is_empty() {
        check_key(key)
            .map_err(|e| TranscodeError::BadRequest(format!("source {source:?}: {e}")))?;
    }
    Ok((bucket.to_string(), key.to_string()))
}

fn check_profile(profile: &str) -> Result<()> {
    if crate::profile::Profile::named(profile).is_none() {
        return Err(TranscodeError::BadRequest(format!(
            "unknown profile {profile:?} (known: {})",
            crate::profile::Profile::names().join(", ")
        )));
    }
    Ok(())
}

// ---- Users ----

async fn submit(
    State(c): State<Arc<Coordinator>>,
    headers: axum::http::HeaderMap,
    Json(req): Json<SubmitJob>,
) -> Result<Response> {
    let (_, key) = split_source(&req.source, false)?;
    if let Some(why) = super::batch::unfit_source(&key) {
        return Err(TranscodeError::BadRequest(why));
    }
    check_profile(&req.profile)?;
    if let Some(url) = &req.webhook {
        if c.config.webhook_secret.is_none() {
            return Err(TranscodeError::BadRequest(
                "this coordinator has no webhook secret configured (--webhook-secret)".into(),
            ));
        }
        c.egress
            .check_url(url)
            .await
            .map_err(TranscodeError::BadRequest)?;
        let key = headers
            .get(header::AUTHORIZATION)
            .map(|v| *blake3::hash(v.as_bytes()).as_bytes())
            .unwrap_or_default();
        c.webhook_quota
            .take(key, std::time::Instant::now())
            .map_err(TranscodeError::RateLimited)?;
    }
    if req.priority.is_some_and(|p| p > MAX_PRIORITY) {
        return Err(TranscodeError::BadRequest(format!(
            "priority must be 0..={MAX_PRIORITY}"
        )));
    }
    let c2 = c.clone();
    let tenant = tenant_of(&headers);
    let job = blocking(move || c2.store.submit(&req, &tenant, c2.store.now_ms())).await?;
    c.metrics.jobs_submitted.inc();
    c.work.notify_waiters();
    Ok((StatusCode::ACCEPTED, Json(job.public())).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(c): State<Arc<Coordinator>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Job>>> {
    let state = match q.state.as_deref() {
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            TranscodeError::BadRequest(format!(
                "unknown state {s:?} (queued|running|playable|succeeded|failed|cancelled)"
            ))
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIST_LIMIT);
    let jobs = blocking(move || c.store.list_jobs(state, q.before.as_deref(), limit)).await?;
    Ok(Json(jobs.into_iter().map(Job::public).collect()))
}

#[derive(Deserialize)]
struct JobQuery {
    #[serde(default)]
    tasks: bool,
}

/// A job, with its tasks when asked.
#[derive(Serialize)]
struct JobView {
    #[serde(flatten)]
    job: Job,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_details: Option<Vec<Task>>,
}

async fn get_job(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    Query(q): Query<JobQuery>,
) -> Result<Json<JobView>> {
    blocking(move || {
        let (job, tasks) = c
            .store
            .job_view(&id, q.tasks)?
            .ok_or(TranscodeError::NotFound)?;
        let task_details = q.tasks.then_some(tasks);
        Ok(Json(JobView {
            job: job.public(),
            task_details,
        }))
    })
    .await
}

async fn cancel(State(c): State<Arc<Coordinator>>, Path(id): Path<String>) -> Result<Json<Job>> {
    let c2 = c.clone();
    let job = blocking(move || c2.store.cancel(&id, c2.store.now_ms())).await?;
    c.job_changed(&job);
    Ok(Json(job.public()))
}

#[derive(Deserialize)]
struct BatchRequest {
    prefix: String,
    #[serde(default = "default_profile")]
    profile: String,
    priority: Option<u8>,
    /// Also sources already transcoded with this profile from their current version.
    #[serde(default)]
    force: bool,
}

fn default_profile() -> String {
    "default".into()
}

/// A batch and where its jobs are.
#[derive(Serialize)]
struct BatchView {
    #[serde(flatten)]
    batch: Batch,
    total: usize,
    queued: usize,
    /// Jobs running, playable ones included.
    running: usize,
    succeeded: usize,
    failed: usize,
    cancelled: usize,
    /// Mean progress of its jobs, as of each job's last task that ended (a running job's
    /// own view moves with every heartbeat; a batch of thousands is summed from one read).
    progress: f64,
    /// Objects under the prefix that got no job, and why (in the submission's answer),
    /// and those whose job found they are not audio or video (probed: error class
    /// `not_media`; not counted as failed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<super::batch::Skipped>,
}

async fn submit_batch(
    State(c): State<Arc<Coordinator>>,
    headers: axum::http::HeaderMap,
    Json(req): Json<BatchRequest>,
) -> Result<Response> {
    let (bucket, prefix) = split_source(&req.prefix, true)?;
    check_profile(&req.profile)?;
    let priority = req.priority.unwrap_or(BATCH_PRIORITY).min(MAX_PRIORITY);
    let listed =
        crate::gateway_client::list_keys(&c.config, &bucket, &prefix, MAX_BATCH_JOBS).await?;
    let (sources, skipped) = super::batch::select(&bucket, listed, &req.profile, req.force);
    let c2 = c.clone();
    let tenant = tenant_of(&headers);
    let (batch, under_way) = blocking(move || {
        c2.store.submit_batch(
            &req.prefix,
            &req.profile,
            &sources,
            priority,
            &tenant,
            c2.store.now_ms(),
        )
    })
    .await?;
    c.work.notify_waiters();
    let mut view = batch_view(&c, batch)?;
    view.skipped.extend(under_way);
    view.skipped.extend(skipped);
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

fn batch_view(c: &Coordinator, batch: Batch) -> Result<BatchView> {
    let mut v = BatchView {
        total: batch.jobs.len(),
        queued: 0,
        running: 0,
        succeeded: 0,
        failed: 0,
        cancelled: 0,
        progress: 0.0,
        skipped: Vec::new(),
        batch,
    };
    let mut sum = 0.0;
    for job in c.store.stored_jobs(&v.batch.jobs)? {
        sum += job.progress;
        match job.state {
            JobState::Queued => v.queued += 1,
            JobState::Running | JobState::Playable => v.running += 1,
            JobState::Succeeded => v.succeeded += 1,
            JobState::Failed => match job.error {
                Some(e) if e.class == FailureClass::NotMedia => {
                    v.skipped.push(super::batch::Skipped {
                        source: job.source,
                        reason: e.message,
                    })
                }
                _ => v.failed += 1,
            },
            JobState::Cancelled => v.cancelled += 1,
        }
    }
    v.progress = if v.total > 0 {
        sum / v.total as f64
    } else {
        1.0
    };
    Ok(v)
}

async fn get_batch(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> Result<Json<BatchView>> {
    blocking(move || {
        let batch = c.store.batch(&id)?.ok_or(TranscodeError::NotFound)?;
        Ok(Json(batch_view(&c, batch)?))
    })
    .await
}

// ---- Workers ----

async fn lease(
    State(c): State<Arc<Coordinator>>,
    Json(req): Json<LeaseRequest>,
) -> Result<Response> {
    if req.worker.is_empty() || req.worker.len() > 200 {
        return Err(TranscodeError::BadRequest(
            "worker id must be 1..=200 bytes".into(),
        ));
    }
    if req.protocol != TASK_PROTOCOL {
        return Err(TranscodeError::ProtocolMismatch {
            worker: req.protocol,
            coordinator: TASK_PROTOCOL,
        });
    }
    if req.max_cost.is_some_and(|m| !m.is_finite() || m < 0.0) {
        return Err(TranscodeError::BadRequest(
            "max_cost must be a finite weight >= 0".into(),
        ));
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(req.wait_ms).min(MAX_LEASE_WAIT);
    loop {
        // Register interest before looking, so a wake-up between the two is not lost.
        let notified = c.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (c2, worker, max_cost) = (c.clone(), req.worker.clone(), req.max_cost);
        if let Some(a) = blocking(move || {
            let _turn = c2.store.lease_turn();
            c2.store.lease_within(&worker, max_cost, c2.store.now_ms())
        })
        .await?
        {
            c.metrics.leases_granted.inc();
            return Ok(Json(a).into_response());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // Re-check at least every second: backed-off tasks become ready with no event.
        let wait = (deadline - now).min(Duration::from_secs(1));
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn heartbeat(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    Json(hb): Json<Heartbeat>,
) -> Result<Response> {
    let c2 = c.clone();
    let beat = blocking(move || {
        c2.store
            .heartbeat(&id, hb.token, hb.progress, c2.store.now_ms())
    })
    .await;
    let expires = count_fenced(&c, beat)?;
    Ok(Json(serde_json::json!({ "expires_ms": expires })).into_response())
}

async fn complete(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    Json(done): Json<Completion>,
) -> Result<Json<Job>> {
    let c2 = c.clone();
    let done = blocking(move || {
        c2.store
            .complete(&id, done.token, done.result, c2.store.now_ms())
    })
    .await;
    let job = count_fenced(&c, done)?;
    c.job_changed(&job);
    c.work.notify_waiters();
    Ok(Json(job.public()))
}

async fn fail(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    Json(report): Json<FailureReport>,
) -> Result<Json<Job>> {
    let c2 = c.clone();
    let failed = blocking(move || {
        c2.store
            .fail(&id, report.token, report.failure, c2.store.now_ms())
    })
    .await;
    let job = count_fenced(&c, failed)?;
    c.metrics.task_failures.inc();
    c.job_changed(&job);
    c.work.notify_waiters();
    Ok(Json(job.public()))
}

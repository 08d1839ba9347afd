//! Transcoding: [`Transcoding`] (a `kura coordinator` and `kura worker`s beside a
//! [`Cluster`]), the sample media directories, job inspection helpers, and the
//! [`GatewayClient`] calls for jobs, signed URLs and whole files.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use reqwest::{Method, StatusCode};

use super::{Cluster, GatewayClient, KuraProcess, API_KEY, SECRET};

/// The sample videos (`shared/media/video`).
pub const VIDEO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/media/video");

/// The broken media files (`shared/media/broken`).
pub const BROKEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/media/broken");

/// Text a worker logs once it is about to lease work.
pub const WORKER_READY: &str = "worker started";

/// The files of `dir`, sorted by name.
pub fn files_in(dir: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {dir}"))? {
        let p = e?.path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    ensure!(!out.is_empty(), "no files in {dir}");
    Ok(out)
}

/// A [`Cluster`] whose gateway forwards `/v1/jobs*` to a `kura coordinator`, and
/// `kura worker` processes leasing from that coordinator. Every data directory (the
/// coordinator's, each worker's `--workdir`) is in one temporary directory.
pub struct Transcoding {
    /// Nodes and gateway (started with `--coordinator`).
    pub cluster: Cluster,
    /// The coordinator; restart it with `restart_on_same_port`, as the gateway and the
    /// workers know its address.
    pub coordinator: KuraProcess,
    /// More coordinators over the same PostgreSQL store ([`Transcoding::start_shared`]).
    pub others: Vec<KuraProcess>,
    /// What the gateway and the workers are given as `--coordinator`.
    coordinator_list: String,
    /// Workers by id, in the order started.
    pub workers: Vec<KuraProcess>,
    dir: tempfile::TempDir,
}

impl Transcoding {
    /// Starts a coordinator with `--lease-ms lease_ms`, then the cluster with its gateway
    /// pointing at it. No worker yet: see [`start_worker`](Self::start_worker).
    pub async fn start(lease_ms: u64) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kura-transcoding-")
            .tempdir()?;
        let data = dir.path().join("coordinator");
        let store = ["--data".into(), data.into_os_string()];
        let coordinator = start_coordinator("coordinator", store, lease_ms).await?;
        Self::around(dir, coordinator, Vec::new()).await
    }

    /// Like [`start`](Self::start), with `n` coordinators sharing the PostgreSQL store
    /// at `store` (`coordinator`, `c2`, `c3`, ...); the gateway and every worker are
    /// given all of them, in that order.
    pub async fn start_shared(lease_ms: u64, store: &str, n: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kura-transcoding-")
            .tempdir()?;
        let mut all = Vec::new();
        for i in 0..n.max(1) {
            let name = if i == 0 {
                "coordinator".to_string()
            } else {
                format!("c{}", i + 1)
            };
            let args = ["--store".into(), store.into()];
            all.push(start_coordinator(&name, args, lease_ms).await?);
        }
        let coordinator = all.remove(0);
        Self::around(dir, coordinator, all).await
    }

    /// The cluster around started coordinators.
    async fn around(
        dir: tempfile::TempDir,
        coordinator: KuraProcess,
        others: Vec<KuraProcess>,
    ) -> Result<Self> {
        let coordinator_list = std::iter::once(&coordinator)
            .chain(&others)
            .map(|c| c.url())
            .collect::<Vec<_>>()
            .join(",");
        let cluster =
            Cluster::start_with_gateway_args(&["--coordinator", &coordinator_list]).await?;
        Ok(Self {
            cluster,
            coordinator,
            others,
            coordinator_list,
            workers: Vec::new(),
            dir,
        })
    }

    /// The temporary directory every process of this setup keeps its data in; tests may
    /// put their own files there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `kura coordinator` named `name` with the test keys, its store given by
    /// `store` (`--data DIR` or `--store URL`) and leases of `lease_ms`.
    async fn start_coordinator(
        name: &str,
        store: [OsString; 2],
        lease_ms: u64,
    ) -> Result<KuraProcess> {
        let lease = lease_ms.to_string();
        let mut args: Vec<OsString> = vec!["coordinator".into()];
        args.extend(store);
        for a in [
            "--api-keys",
            API_KEY,
            "--cluster-secret",
            SECRET,
            "--lease-ms",
            &lease,
        ] {
            args.push(a.into());
        }
        KuraProcess::start(name, args).await
    }

    /// Starts `kura worker --worker-id id --slots 1` (and the default express slot for
    /// light tasks) with its workdir under
    /// [`dir`](Self::dir), and waits until it logs [`WORKER_READY`].
    pub async fn start_worker(&mut self, id: &str) -> Result<()> {
        ensure!(
            self.workers.iter().all(|w| w.name() != id),
            "worker {id} already exists"
        );
        let workdir = self.dir.path().join("workers").join(id);
        let w = start_worker(
            id,
            &self.coordinator_list,
            &self.cluster.gateway.url(),
            &workdir,
        )
        .await?;
        self.workers.push(w);
        Ok(())
    }

    /// The worker with id `id`.
    pub fn worker(&mut self, id: &str) -> Result<&mut KuraProcess> {
        self.workers
            .iter_mut()
            .find(|w| w.name() == id)
            .with_context(|| format!("no worker {id}"))
    }

    /// A client for the gateway.
    pub fn client(&self) -> Result<GatewayClient> {
        self.cluster.client()
    }

    /// Stops workers, coordinator, gateway and nodes cleanly and checks that each
    /// exited with success (processes the test killed are skipped).
    pub async fn stop(self) -> Result<()> {
        let Self {
            cluster,
            coordinator,
            others,
            workers,
            dir,
            ..
        } = self;
        let mut failed = Vec::new();
        for mut p in workers
            .into_iter()
            .chain(std::iter::once(coordinator))
            .chain(others)
        {
            let name = p.name().to_string();
            if !p.is_running()? {
                p.mark_clean();
                continue;
            }
            let status = p.stop().await?;
            if !status.success() {
                failed.push(format!("{name}: {status}"));
            }
        }
        cluster.stop().await?;
        drop(dir);
        ensure!(failed.is_empty(), "unclean exits: {}", failed.join(", "));
        Ok(())
    }
}

/// A job's state is one it never leaves.
pub fn job_is_final(job: &serde_json::Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// The job's tasks (`task_details` of `GET /v1/jobs/{id}?tasks=true`).
pub fn tasks_of(job: &serde_json::Value) -> Vec<serde_json::Value> {
    job["task_details"].as_array().cloned().unwrap_or_default()
}

/// A job and its tasks in a few lines, for messages.
pub fn job_summary(job: &serde_json::Value) -> String {
    let tasks: Vec<String> = tasks_of(job)
        .iter()
        .map(|t| {
            format!(
                "{} {} {} attempts={} lease={} error={}",
                t["id"].as_str().unwrap_or("?"),
                t["spec"]["kind"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?"),
                t["attempts"],
                t["lease"],
                t["last_error"]
            )
        })
        .collect();
    format!(
        "job {} ({}) {} progress {} attempts {} error {}\n  {}",
        job["id"].as_str().unwrap_or("?"),
        job["source"].as_str().unwrap_or("?"),
        job["state"].as_str().unwrap_or("?"),
        job["progress"],
        job["attempts"],
        job["error"],
        tasks.join("\n  ")
    )
}

impl GatewayClient {
    /// Uploads the file at `path` as `bucket/key` (`?transcode=PROFILE` when given) and
    /// expects 201; returns the answer (with `job` when a job was submitted).
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        transcode: Option<&str>,
    ) -> Result<serde_json::Value> {
        let body = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let mut req = self.object(Method::PUT, bucket, key).body(body);
        if let Some(p) = transcode {
            req = req.query(&[("transcode", p)]);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(
            status == StatusCode::CREATED,
            "PUT {bucket}/{key}: {status}: {text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text)?;
        if transcode.is_some() {
            ensure!(
                v["job"]["id"].is_string(),
                "PUT {bucket}/{key}?transcode submitted no job: {text}"
            );
        }
        Ok(v)
    }

    /// `POST /v1/jobs {source, profile}`: expects 202; returns the job.
    pub async fn submit_job(&self, source: &str, profile: &str) -> Result<serde_json::Value> {
        let resp = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({ "source": source, "profile": profile }))
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(
            status == StatusCode::ACCEPTED,
            "submitting {source}: {status}: {text}"
        );
        Ok(serde_json::from_str(&text)?)
    }

    /// `GET /v1/jobs/{id}?tasks=true`.
    pub async fn job(&self, id: &str) -> Result<serde_json::Value> {
        let resp = self
            .http
            .get(format!("{}/v1/jobs/{id}?tasks=true", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(status == StatusCode::OK, "GET job {id}: {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// Polls job `id` (with its tasks) until it is final, for at most `timeout`.
    /// Failed polls (a coordinator being restarted) are retried until then.
    pub async fn wait_job(&self, id: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = match self.job(id).await {
                Ok(job) if job_is_final(&job) => return Ok(job),
                Ok(job) => job_summary(&job),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("job {id} not final after {timeout:?}; last seen: {seen}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for every job in `ids` (see [`wait_job`](Self::wait_job)), all within
    /// `timeout`.
    pub async fn wait_jobs(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        for id in ids {
            let left = deadline.saturating_duration_since(Instant::now());
            out.push(self.wait_job(id, left.max(Duration::from_secs(1))).await?);
        }
        Ok(out)
    }

    /// A signed URL for `object` opening its whole folder (an HLS tree), valid for an
    /// hour.
    pub async fn signed_url(&self, object: &str) -> Result<String> {
        let key = object.split_once('/').map_or(object, |(_, k)| k);
        let tree = key.rfind('/').map(|i| &key[..=i]);
        let resp = self
            .http
            .post(format!("{}/v1/sign", self.base))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({ "object": object, "expires_in": 3600, "tree": tree }))
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(
            status == StatusCode::OK,
            "signing {object}: {status}: {text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let path = v["path"]
            .as_str()
            .with_context(|| format!("no path in {text}"))?;
        Ok(format!("{}{path}", self.base))
    }

    /// The object `bucket/key` (`bucket/key` as one string), which must exist.
    pub async fn get_object(&self, object: &str) -> Result<Bytes> {
        let (bucket, key) = object
            .split_once('/')
            .with_context(|| format!("{object:?} is not bucket/key"))?;
        self.get(bucket, key)
            .await?
            .with_context(|| format!("{object} does not exist"))
    }
}

/// Starts `kura coordinator` named `name` with the test keys, its store given by
/// `store` (`--data DIR` or `--store URL`) and leases of `lease_ms`.
async fn start_coordinator(name: &str, store: [OsString; 2], lease_ms: u64) -> Result<KuraProcess> {
    let lease = lease_ms.to_string();
    let mut args: Vec<OsString> = vec!["coordinator".into()];
    args.extend(store);
    for a in [
        "--api-keys",
        API_KEY,
        "--cluster-secret",
        SECRET,
        "--lease-ms",
        &lease,
    ] {
        args.push(a.into());
    }
    KuraProcess::start(name, args).await
}

/// Starts `kura worker --worker-id id --slots 1` (and the default express slot) for
/// `coordinator` and `gateway`, with the test keys, scratch space in `workdir`; waits
/// until it logs [`WORKER_READY`].
pub async fn start_worker(
    id: &str,
    coordinator: &str,
    gateway: &str,
    workdir: &Path,
) -> Result<KuraProcess> {
    let mut args: Vec<OsString> = [
        "worker",
        "--coordinator",
        coordinator,
        "--gateway",
        gateway,
        "--api-key",
        API_KEY,
        "--cluster-secret",
        SECRET,
        "--slots",
        "1",
        "--worker-id",
        id,
        "--workdir",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(workdir.as_os_str().to_owned());
    KuraProcess::start_unlistened(id, args, WORKER_READY).await
}

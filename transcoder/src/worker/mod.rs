//! The worker: pulls tasks from the coordinator with leases, runs the media work in
//! sandboxed child processes, and streams sources and outputs through the gateway.
//!
//! - [`coord`]: the coordinator protocol (lease, heartbeat, complete, fail).
//! - [`objects`]: downloads and uploads through the gateway.
//! - [`child`] / [`exec`]: the parent and child sides of `kura media-exec`.
//! - [`tasks`]: what each task kind does; [`playlist`]: HLS playlists.

pub mod child;
pub mod coord;
pub mod exec;
pub mod objects;
pub mod plan;
pub mod playlist;
pub mod sandbox;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kura_cluster::auth::Secret;
use std::time::Duration;

use child::{ChildLimits, MediaRequest};
use coord::{Beat, CoordinatorClient};
use objects::Objects;

use crate::error::{Result, TranscodeError};
use crate::model::{Assignment, Failure, FailureClass};

/// Longest heartbeat period; a worker beats every sixth of its lease (5 s for the default
/// 30 s lease), so two lost heartbeats in a row still leave the lease alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Shortest wall-clock limit of one media child: probing a remote-mounted or huge file
/// can take a while even when nothing is wrong.
pub const MIN_CHILD_WALL: Duration = Duration::from_secs(120);

/// Longest wall-clock limit of one media child, whatever the task claims: the longest
/// input probe accepts (`media::probe::MAX_DURATION_S`, 12 h) encodes its audio at
/// tens of times real time, so a day only ever stops a runaway.
pub const MAX_CHILD_WALL: Duration = Duration::from_secs(24 * 3600);

/// Wall-clock seconds allowed per second of media (per rung) in a child: veryfast x264
/// runs faster than real time on one core at ladder sizes, so 10× means something is
/// stuck (a decoder loop on a hostile file).
pub const WALL_PER_MEDIA_SECOND: f64 = 10.0;

/// Pause after the coordinator refuses work because this worker is quarantined.
const QUARANTINE_PAUSE: Duration = Duration::from_secs(60);

/// Pause after the coordinator cannot be reached.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// Everything a worker needs to start.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Coordinator URL.
    pub coordinator: String,
    /// Gateway URL.
    pub gateway: String,
    /// API key for the gateway.
    pub api_key: Secret,
    /// Cluster secret for the coordinator.
    pub cluster_secret: Secret,
    /// Tasks run at once.
    pub slots: usize,
    /// Extra slots that take only light tasks ([`crate::model::LIGHT_TASK_COST`]:
    /// plans, posters, playlists, the first pass of a short clip), so a short upload
    /// plays without waiting behind the regular slots' long encodes.
    pub express_slots: usize,
    /// This worker's id.
    pub worker_id: String,
    /// Where the worker keeps its scratch space: it creates, empties and removes only its
    /// own `kura-worker-<id>/` inside (see [`own_workdir`]), never anything else there.
    pub workdir: PathBuf,
    /// The `kura` binary that runs `media-exec`.
    pub exec_program: PathBuf,
    /// Codec threads per task.
    pub threads_per_task: usize,
    /// Memory limit of a media child, bytes.
    pub memory_bytes: u64,
    /// Largest file a media child may write, bytes.
    pub file_bytes: u64,
}

/// Downloaded sources, by ETag, shared by a worker's slots.
struct SourceCache {
    dir: PathBuf,
    keep: usize,
    /// Held while the cache changes; counts, by ETag, the running tasks that use each
    /// cached source, which eviction never removes (a slot planning many short jobs
    /// must not delete the file another slot's encode is about to open).
    lock: tokio::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One task slot of a worker.
pub struct Slot {
    /// The worker's config.
    pub config: Arc<WorkerConfig>,
    /// The gateway.
    pub objects: Objects,
    coord: CoordinatorClient,
    progress: AtomicU64,
    cache: Arc<SourceCache>,
    /// Heaviest task this slot leases (`None`: any).
    max_cost: Option<f64>,
    /// The cached sources (ETags) its current task uses.
    pinned: std::sync::Mutex<Vec<String>>,
}

/// The wall-clock limit of a child working on `media_seconds` of media: scaled, at
/// least [`MIN_CHILD_WALL`], at most [`MAX_CHILD_WALL`] (also for absurd or non-finite
/// claims, which must not panic the worker).
pub fn child_wall(media_seconds: f64) -> Duration {
    Duration::try_from_secs_f64(media_seconds.max(0.0) * WALL_PER_MEDIA_SECOND)
        .unwrap_or(MAX_CHILD_WALL)
        .clamp(MIN_CHILD_WALL, MAX_CHILD_WALL)
}

impl Slot {
    /// Reports the current task's progress (sent with the next heartbeat).
    pub fn report(&self, p: f64) {
        self.progress
            .store(p.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// Runs `request` in a media child, with a time limit scaled to `media_seconds`.
    pub async fn media(
        &self,
        request: MediaRequest,
        media_seconds: f64,
        progress: &(dyn Fn(f64) + Sync),
    ) -> Result<serde_json::Value, Failure> {
        let wall = child_wall(media_seconds);
        let limits = ChildLimits {
            wall,
            memory_bytes: self.config.memory_bytes,
            file_bytes: self.config.file_bytes,
            // Express slots (the ones with a cost cap) run their children first.
            nice: if self.max_cost.is_some() {
                0
            } else {
                child::REGULAR_SLOT_NICE
            },
        };
        child::run(&self.config.exec_program, &request, limits, progress).await
    }

    /// The local copy of `source`, downloading it unless cached. With `expect`, the
    /// object must still have that ETag (it was planned from it).
    pub async fn source(
        &self,
        source: &str,
        expect: Option<&str>,
    ) -> Result<(PathBuf, String), Failure> {
        let c = &self.cache;
        let mut in_use = c.lock.lock().await;
        if let Some(etag) = expect {
            let path = c.dir.join(etag);
            if path.exists() {
                self.pin(&mut in_use, etag);
                return Ok((path, etag.to_string()));
            }
        }
        let tmp = c
            .dir
            .join(format!("partial-{:016x}", rand::random::<u64>()));
        let downloaded = self.objects.download(source, &tmp).await;
        let (_, etag) = match downloaded {
            Ok(d) => d,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(Failure {
                    class: e.class,
                    message: e.message,
                });
            }
        };
        if expect.is_some_and(|x| x != etag) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Failure {
                class: FailureClass::BadInput,
                message: format!("source {source} was replaced while it was being transcoded"),
            });
        }
        let path = c.dir.join(&etag);
        tokio::fs::rename(&tmp, &path).await.map_err(|e| Failure {
            class: FailureClass::Transient,
            message: format!("caching source: {e}"),
        })?;
        self.pin(&mut in_use, &etag);
        evict(&c.dir, c.keep, &in_use).await;
        Ok((path, etag))
    }

    /// Marks the cached source `etag` as used by this slot's current task.
    fn pin(&self, in_use: &mut std::collections::HashMap<String, usize>, etag: &str) {
        *in_use.entry(etag.to_string()).or_default() += 1;
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(etag.to_string());
    }

    /// Releases the cached sources this slot's task used.
    async fn unpin(&self) {
        let mut in_use = self.cache.lock.lock().await;
        let pinned = std::mem::take(&mut *self.pinned.lock().unwrap_or_else(|e| e.into_inner()));
        for etag in pinned {
            if let Some(n) = in_use.get_mut(&etag) {
                *n -= 1;
                if *n == 0 {
                    in_use.remove(&etag);
                }
            }
        }
    }

    async fn execute(&self, a: Assignment) {
        self.report(0.0);
        let dir = match tempfile::Builder::new()
            .prefix("task-")
            .tempdir_in(&self.config.workdir)
        {
            Ok(d) => d,
            Err(e) => {
                let f = Failure {
                    class: FailureClass::Transient,
                    message: format!("scratch dir: {e}"),
                };
                let _ = self.coord.fail(&a.task.id, a.token, f).await;
                return;
            }
        };
        tracing::info!(task = %a.task.id, kind = a.task.spec.work.kind(), source = %a.source, "task started");
        let work = tasks::run(self, &a, dir.path());
        let every = Duration::from_millis(a.lease_ms / 6)
            .clamp(Duration::from_millis(100), HEARTBEAT_EVERY);
        let beat = async {
            loop {
                tokio::time::sleep(every).await;
                let p = f64::from_bits(self.progress.load(Ordering::Relaxed));
                match self.coord.heartbeat(&a.task.id, a.token, p).await {
                    Ok(Beat::Kept) => {}
                    Ok(Beat::Lost) => return,
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        };
        let outcome = tokio::select! {
            r = work => Some(r),
            () = beat => None,
        };
        let reported = match outcome {
            None => {
                tracing::warn!(task = %a.task.id, "lease lost; task abandoned");
                Ok(())
            }
            Some(Ok(result)) => self.coord.complete(&a.task.id, a.token, result).await,
            Some(Err(f)) => {
                tracing::warn!(task = %a.task.id, class = ?f.class, error = %f.message, "task failed");
                self.coord.fail(&a.task.id, a.token, f).await
            }
        };
        match reported {
            Ok(()) => tracing::info!(task = %a.task.id, "task finished"),
            Err(TranscodeError::Fenced(why)) => {
                tracing::warn!(task = %a.task.id, why, "result refused: lease no longer held")
            }
            Err(e) => {
                tracing::error!(task = %a.task.id, error = %e, "could not report the task's outcome")
            }
        }
        self.unpin().await;
        drop(dir);
    }
}

/// Keeps the `keep` most recently downloaded cached sources, and every one in use.
async fn evict(dir: &Path, keep: usize, in_use: &std::collections::HashMap<String, usize>) {
    let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
        return;
    };
    let mut files = Vec::new();
    while let Ok(Some(e)) = rd.next_entry().await {
        if let Ok(m) = e.metadata().await {
            if let Ok(t) = m.modified() {
                files.push((t, e.path()));
            }
        }
    }
    files.sort();
    let excess = files.len().saturating_sub(keep);
    for (_, p) in files.into_iter().take(excess) {
        let used = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| in_use.contains_key(n));
        if !used {
            let _ = tokio::fs::remove_file(p).await;
        }
    }
}

/// Leases and runs tasks until the coordinator speaks another task protocol version
/// (the only error it returns: nothing this worker does can fix that).
async fn slot_loop(slot: Arc<Slot>) -> TranscodeError {
    loop {
        match slot
            .coord
            .lease(&slot.config.worker_id, slot.max_cost)
            .await
        {
            Ok(Some(a)) => slot.execute(a).await,
            Ok(None) => {}
            Err(TranscodeError::WorkerQuarantined(why, _)) => {
                tracing::warn!(why, "worker quarantined by the coordinator; pausing");
                tokio::time::sleep(QUARANTINE_PAUSE).await;
            }
            Err(e @ TranscodeError::ProtocolMismatch { .. }) => return e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot lease work");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// The directory a worker owns inside `workdir`: `kura-worker-<id>`, the id reduced to
/// `A-Z a-z 0-9 . _ -` (anything else becomes `_`), so it is one path component and two
/// workers sharing a parent never touch each other's files (or anything else there).
pub fn own_workdir(workdir: &std::path::Path, worker_id: &str) -> PathBuf {
    let safe: String = worker_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    workdir.join(format!("kura-worker-{safe}"))
}

/// Runs the worker's slots until `shutdown` resolves (running children are killed).
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    if config.slots == 0 {
        return Err(TranscodeError::BadRequest(
            "slots must be at least 1".into(),
        ));
    }
    let mut config = config;
    config.workdir = own_workdir(&config.workdir, &config.worker_id);
    if config.workdir.exists() {
        // What an earlier run of this same worker left behind (it was killed).
        tokio::fs::remove_dir_all(&config.workdir).await?;
    }
    let cache_dir = config.workdir.join("sources");
    tokio::fs::create_dir_all(&cache_dir).await?;
    let cache = Arc::new(SourceCache {
        dir: cache_dir,
        keep: (config.slots * 2).max(3),
        lock: tokio::sync::Mutex::new(Default::default()),
    });
    // The worker holds the cluster secret and an API key: its media children must not
    // be able to read them out of it (see `sandbox`).
    if let Err(e) = sandbox::harden_worker() {
        tracing::warn!(error = %e, "cannot make the worker non-dumpable");
    }
    match sandbox::probe(&config.exec_program).await {
        Ok(report) if report.gaps().is_empty() => {
            tracing::info!("media sandbox: no network, no sockets, no programs, worker unreadable");
        }
        Ok(report) => {
            for gap in report.gaps() {
                tracing::warn!(gap, "media sandbox is incomplete on this machine");
            }
        }
        Err(f) => tracing::warn!(error = %f.message, "media sandbox check failed"),
    }
    let config = Arc::new(config);
    let objects = Objects::new(&config.gateway, config.api_key.expose())?;
    let coord = CoordinatorClient::new(&config.coordinator, config.cluster_secret.expose())?;
    tracing::info!(
        worker = %config.worker_id,
        slots = config.slots,
        express_slots = config.express_slots,
        "worker started"
    );
    let mut slots = tokio::task::JoinSet::new();
    let express = std::iter::repeat_n(Some(crate::model::LIGHT_TASK_COST), config.express_slots);
    for max_cost in std::iter::repeat_n(None, config.slots).chain(express) {
        let slot = Arc::new(Slot {
            config: config.clone(),
            objects: objects.clone(),
            coord: coord.clone(),
            progress: AtomicU64::new(0),
            cache: cache.clone(),
            max_cost,
            pinned: Default::default(),
        });
        slots.spawn(slot_loop(slot));
    }
    let stopped = tokio::select! {
        () = shutdown => None,
        Some(Ok(e)) = slots.join_next() => Some(e),
    };
    slots.shutdown().await;
    let _ = tokio::fs::remove_dir_all(&config.workdir).await;
    match stopped {
        Some(e) => {
            tracing::error!(error = %e, "worker stops");
            Err(e)
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_walls_are_capped_whatever_the_claim() {
        assert_eq!(child_wall(0.0), MIN_CHILD_WALL);
        assert_eq!(child_wall(-5.0), MIN_CHILD_WALL);
        assert_eq!(child_wall(f64::NAN), MIN_CHILD_WALL);
        assert_eq!(child_wall(60.0), Duration::from_secs(600));
        assert_eq!(child_wall(1e12), MAX_CHILD_WALL);
        assert_eq!(child_wall(f64::INFINITY), MAX_CHILD_WALL);
    }
}

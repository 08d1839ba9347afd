//! The durable job store: jobs, tasks, the ready queue, leases and worker records in
//! RocksDB, and every state transition as one synced write batch.
//!
//! Invariants:
//! - A task is in the `ready` index iff it is `Queued`; in the `leases` index iff it is
//!   `Leased`. Both indexes change in the same batch as the task.
//! - Fencing tokens only grow (a persisted counter), so a token names one lease forever;
//!   heartbeats and results carrying any other token than the task's current lease's are
//!   refused, and an expired lease is reaped before anyone else can take the task.
//! - A job's state changes only here, and a final state never changes again.

use std::sync::Mutex;

mod active;
mod leases;
mod retention;
pub mod sched;

pub use retention::Purged;
use sched::{Queued, Scheduler};

use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::batch::Skipped;
use crate::error::{Result, TranscodeError};
use crate::model::*;

const CF_JOBS: &str = "jobs";
const CF_TASKS: &str = "tasks";
/// `[255 - priority][ready_ms BE][task id]` → job id: the durable set of queued tasks.
/// The lease order over them is the [`Scheduler`]'s, rebuilt from this at open.
const CF_READY: &str = "ready";
/// `[expires_ms BE][task id]` → token.
const CF_LEASES: &str = "leases";
const CF_WORKERS: &str = "workers";
const CF_BATCHES: &str = "batches";
const CF_META: &str = "meta";
/// `[profile] 0 [source] 0 [job id]`: the jobs not final yet (see `active`).
const CF_ACTIVE: &str = "active";
const TOKEN_KEY: &[u8] = b"next_token";

// ---- Tunables ----

/// Lease length. 30 s: workers heartbeat every few seconds, so a live worker never loses
/// its lease to a GC pause or a slow upload, while a dead worker's task is retried
/// within half a minute.
pub const LEASE_MS: u64 = 30_000;

/// Most tasks one job may have: a cap on what a plan (a worker's answer, built from the
/// uploader's file) can make the store hold. The longest accepted source (12 h) with the
/// built-in profiles plans about 5,000 (30 s first-pass and 12 s second-pass ranges);
/// twice that leaves room for finer profiles.
pub const MAX_TASKS_PER_JOB: usize = 10_000;

/// Leases granted to one task before it fails for good. 5 covers a couple of worker
/// deaths plus transient storage trouble without feeding a poisoned input forever.
pub const MAX_TASK_ATTEMPTS: u32 = 5;

/// First retry delay; doubles per attempt, up to [`MAX_BACKOFF_MS`].
pub const BASE_BACKOFF_MS: u64 = 1_000;
/// Longest retry delay.
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// Consecutive failures after which a worker is quarantined. Not counted: bad inputs,
/// a task's repeated failures on one worker (counted once), and failures another
/// worker reproduces (the task's fault, not the worker's).
pub const WORKER_FAILURE_LIMIT: u32 = 3;
/// How long a quarantined worker gets no work: long enough for an operator to notice,
/// short enough that a transient fault (full disk) heals itself.
pub const WORKER_QUARANTINE_MS: u64 = 10 * 60_000;

/// Share of a job's progress given to its planning stage.
const PLAN_SHARE: f64 = 0.02;

/// A worker's failure record.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Failures since its last success.
    pub consecutive_failures: u32,
    /// Quarantined until then (ms since epoch), if at all.
    pub quarantined_until_ms: Option<u64>,
    /// Tasks it completed.
    pub succeeded: u64,
    /// Tasks it failed or lost, not counting failures that other workers reproduced.
    pub failed: u64,
}

/// A batch: one job per object under a prefix.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Batch {
    /// Batch id.
    pub id: String,
    /// `bucket/prefix` it covers.
    pub prefix: String,
    /// Profile of its jobs.
    pub profile: String,
    /// Its jobs.
    pub jobs: Vec<String>,
    /// Submission time.
    pub created_ms: u64,
}

/// The job store.
pub struct Store {
    db: DB,
    /// Lease length in ms ([`LEASE_MS`] unless configured).
    lease_ms: u64,
    /// Serialises every read-modify-write (the coordinator's throughput is bounded by
    /// the synced WAL anyway, and one lock makes every transition atomic), and holds the
    /// lease order of the queued tasks, changed only after the batch that queues or
    /// unqueues them is durable.
    lock: Mutex<Scheduler>,
}

/// One transition: its write batch, and the queue changes the scheduler takes on once
/// the batch is durable (a failed write changes neither).
#[derive(Default)]
struct Tx {
    b: WriteBatch,
    queue: Vec<QueueOp>,
}

enum QueueOp {
    Insert(Queued),
    Remove(String),
    Lease(String),
}

/// The scheduling flow of a job: its batch, or the job on its own.
fn flow_of(job: &Job) -> String {
    match &job.batch {
        Some(b) => format!("b{b}"),
        None => format!("j{}", job.id),
    }
}

/// How the scheduler sees `task` of `job`.
fn queued(job: &Job, task: &Task) -> Queued {
    Queued {
        task: task.id.clone(),
        job: job.id.clone(),
        tenant: job.tenant.clone().unwrap_or_default(),
        flow: flow_of(job),
        priority: job.priority,
        urgent: task.spec.urgent,
        ready_ms: task.ready_ms,
        cost: task.spec.weight,
    }
}

fn ready_key(priority: u8, ready_ms: u64, task_id: &str) -> Vec<u8> {
    let mut k = vec![255 - priority];
    k.extend_from_slice(&ready_ms.to_be_bytes());
    k.extend_from_slice(task_id.as_bytes());
    k
}

fn lease_key(expires_ms: u64, task_id: &str) -> Vec<u8> {
    let mut k = expires_ms.to_be_bytes().to_vec();
    k.extend_from_slice(task_id.as_bytes());
    k
}

fn backoff_ms(attempts: u32) -> u64 {
    BASE_BACKOFF_MS
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF_MS)
}

fn sync() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

/// A new time-ordered id: 12 hex digits of ms since the epoch, then 8 random ones.
pub fn new_id(now_ms: u64) -> String {
    format!("{now_ms:012x}{:08x}", rand::random::<u32>())
}

impl Store {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &std::path::Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [
            CF_JOBS, CF_TASKS, CF_READY, CF_LEASES, CF_WORKERS, CF_BATCHES, CF_META, CF_ACTIVE,
        ]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let mut store = Self {
            db,
            lease_ms: LEASE_MS,
            lock: Mutex::new(Scheduler::default()),
        };
        let sched = store.load_queue()?;
        store.lock = Mutex::new(sched);
        store.build_active_index()?;
        Ok(store)
    }

    /// The scheduler over every queued task, from the `ready` column family.
    fn load_queue(&self) -> Result<Scheduler> {
        let mut sched = Scheduler::default();
        let mut jobs: std::collections::HashMap<String, Job> = Default::default();
        for item in self.db.iterator_cf(self.cf(CF_READY)?, IteratorMode::Start) {
            let (k, _) = item?;
            let task_id = k
                .get(9..)
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| TranscodeError::BadData("ready key".into()))?;
            let task = self
                .task(task_id)?
                .ok_or_else(|| TranscodeError::BadData(format!("ready task {task_id} missing")))?;
            if !jobs.contains_key(&task.job_id) {
                let job = self
                    .job(&task.job_id)?
                    .ok_or_else(|| TranscodeError::BadData(format!("job of {task_id} missing")))?;
                jobs.insert(job.id.clone(), job);
            }
            if let Some(job) = jobs.get(&task.job_id) {
                sched.insert(queued(job, &task));
            }
        }
        Ok(sched)
    }

    /// Sets the lease length (tests and operators with very long or short tasks).
    pub fn with_lease_ms(mut self, lease_ms: u64) -> Self {
        self.lease_ms = lease_ms.max(1);
        self
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `task` of `job` in `tx`.
    fn enqueue(&self, tx: &mut Tx, job: &Job, task: &Task) -> Result<()> {
        tx.b.put_cf(
            self.cf(CF_READY)?,
            ready_key(job.priority, task.ready_ms, &task.id),
            job.id.as_bytes(),
        );
        tx.queue.push(QueueOp::Insert(queued(job, task)));
        Ok(())
    }

    /// Takes `task` of `job` out of the queue in `tx`, leased (charged to its tenant and
    /// flow) or not.
    fn unqueue(&self, tx: &mut Tx, job: &Job, task: &Task, leased: bool) -> Result<()> {
        tx.b.delete_cf(
            self.cf(CF_READY)?,
            ready_key(job.priority, task.ready_ms, &task.id),
        );
        let id = task.id.clone();
        tx.queue.push(if leased {
            QueueOp::Lease(id)
        } else {
            QueueOp::Remove(id)
        });
        Ok(())
    }

    /// Makes `tx` durable, then applies its queue changes to `sched`.
    fn commit(&self, sched: &mut Scheduler, tx: Tx) -> Result<()> {
        self.write(tx.b)?;
        for op in tx.queue {
            match op {
                QueueOp::Insert(q) => sched.insert(q),
                QueueOp::Remove(t) => {
                    sched.remove(&t);
                }
                QueueOp::Lease(t) => {
                    sched.lease(&t);
                }
            }
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| TranscodeError::BadData(format!("missing column family {name}")))
    }

    fn get<T: DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>> {
        match self.db.get_cf(self.cf(cf)?, key)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| TranscodeError::BadData(e.to_string())),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, batch: &mut WriteBatch, cf: &str, key: &[u8], v: &T) -> Result<()> {
        let bytes = serde_json::to_vec(v).map_err(|e| TranscodeError::BadData(e.to_string()))?;
        batch.put_cf(self.cf(cf)?, key, bytes);
        Ok(())
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db.write_opt(batch, &sync())?;
        Ok(())
    }

    // ---- Reads ----

    /// A job by id.
    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        self.get(CF_JOBS, id.as_bytes())
    }

    /// A task by id.
    pub fn task(&self, id: &str) -> Result<Option<Task>> {
        self.get(CF_TASKS, id.as_bytes())
    }

    /// Jobs newest first, optionally of one state, before id `before`, at most `limit`.
    pub fn list_jobs(
        &self,
        state: Option<JobState>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let cf = self.cf(CF_JOBS)?;
        let mode = match before {
            Some(b) => IteratorMode::From(b.as_bytes(), Direction::Reverse),
            None => IteratorMode::End,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, mode) {
            let (k, v) = item?;
            if Some(k.as_ref()) == before.map(str::as_bytes) {
                continue;
            }
            let job: Job =
                serde_json::from_slice(&v).map_err(|e| TranscodeError::BadData(e.to_string()))?;
            if state.is_none_or(|s| s == job.state) {
                out.push(job);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// A batch by id.
    pub fn batch(&self, id: &str) -> Result<Option<Batch>> {
        self.get(CF_BATCHES, id.as_bytes())
    }

    /// A worker's record.
    pub fn worker(&self, id: &str) -> Result<WorkerRecord> {
        Ok(self.get(CF_WORKERS, id.as_bytes())?.unwrap_or_default())
    }

    /// Number of queued tasks (ready now or backed off).
    pub fn queue_depth(&self) -> Result<u64> {
        Ok(self.guard().len() as u64)
    }

    // ---- Submission and cancellation ----

    /// Creates a job (with its planning task) and queues it.
    /// `tenant` names who submitted it (fair scheduling shares slots between tenants).
    pub fn submit(&self, req: &SubmitJob, tenant: &str, now: u64) -> Result<Job> {
        let mut g = self.guard();
        let mut tx = Tx::default();
        let id = self.fresh_ids(CF_JOBS, 1, now)?.remove(0);
        let job = self.create_job(&mut tx, id, req, tenant, None, now)?;
        self.commit(&mut g, tx)?;
        Ok(job)
    }

    /// `n` distinct ids for `now` that no record in `cf` has, in ascending order. Random
    /// suffixes of 32 bits collide often enough in a batch of 100,000 (about once in
    /// two such batches) that distinctness is checked, never assumed.
    fn fresh_ids(&self, cf: &str, n: usize, now: u64) -> Result<Vec<String>> {
        let mut ids = std::collections::BTreeSet::new();
        while ids.len() < n {
            let id = new_id(now);
            if self
                .db
                .get_pinned_cf(self.cf(cf)?, id.as_bytes())?
                .is_none()
            {
                ids.insert(id);
            }
        }
        Ok(ids.into_iter().collect())
    }

    fn create_job(
        &self,
        tx: &mut Tx,
        id: String,
        req: &SubmitJob,
        tenant: &str,
        batch: Option<&str>,
        now: u64,
    ) -> Result<Job> {
        let priority = req.priority.unwrap_or(DEFAULT_PRIORITY).min(MAX_PRIORITY);
        let task = Task {
            id: format!("{id}.0"),
            job_id: id.clone(),
            stage: 0,
            spec: TaskSpec {
                work: crate::model::Work::Plan,
                weight: 1.0,
                urgent: false,
            },
            state: TaskState::Queued,
            attempts: 0,
            ready_ms: now,
            lease: None,
            progress: 0.0,
            last_error: None,
            failed_on: Vec::new(),
        };
        let job = Job {
            id: id.clone(),
            source: req.source.clone(),
            profile: req.profile.clone(),
            priority,
            state: JobState::Queued,
            progress: 0.0,
            error: None,
            attempts: 0,
            batch: batch.map(str::to_string),
            tenant: Some(tenant.to_string()),
            webhook: req.webhook.clone(),
            playable_ms: None,
            outputs: Default::default(),
            parts: Default::default(),
            stages: 1,
            current_stage: 0,
            tasks: vec![task.id.clone()],
            created_ms: now,
            updated_ms: now,
        };
        self.put(&mut tx.b, CF_TASKS, task.id.as_bytes(), &task)?;
        self.put(&mut tx.b, CF_JOBS, id.as_bytes(), &job)?;
        self.mark_active(&mut tx.b, &job)?;
        self.enqueue(tx, &job, &task)?;
        Ok(job)
    }

    /// Creates one job per source under a new batch, but none for a source that a job
    /// not final yet transcodes with `profile` (a batch over the same objects that still
    /// runs): those are returned as skipped. Under the store's lock, so of two batches
    /// submitted at once over the same objects, the second skips what the first took.
    pub fn submit_batch(
        &self,
        prefix: &str,
        profile: &str,
        sources: &[String],
        priority: u8,
        tenant: &str,
        now: u64,
    ) -> Result<(Batch, Vec<Skipped>)> {
        let mut g = self.guard();
        let mut tx = Tx::default();
        let mut skipped = Vec::new();
        let mut fresh = Vec::with_capacity(sources.len());
        for source in sources {
            match self.active_job(source, profile)? {
                Some(job) => skipped.push(Skipped {
                    source: source.clone(),
                    reason: format!("job {job} is transcoding it with profile {profile}"),
                }),
                None => fresh.push(source.clone()),
            }
        }
        let sources = &fresh;
        let id = self.fresh_ids(CF_BATCHES, 1, now)?.remove(0);
        // Ascending ids in source order: the batch's flow runs its jobs in that order.
        let ids = self.fresh_ids(CF_JOBS, sources.len(), now)?;
        let mut jobs = Vec::with_capacity(sources.len());
        for (source, job_id) in sources.iter().zip(ids) {
            let req = SubmitJob {
                source: source.clone(),
                profile: profile.to_string(),
                priority: Some(priority),
                webhook: None,
            };
            jobs.push(
                self.create_job(&mut tx, job_id, &req, tenant, Some(&id), now)?
                    .id,
            );
        }
        let batch = Batch {
            id: id.clone(),
            prefix: prefix.to_string(),
            profile: profile.to_string(),
            jobs,
            created_ms: now,
        };
        self.put(&mut tx.b, CF_BATCHES, id.as_bytes(), &batch)?;
        self.commit(&mut g, tx)?;
        Ok((batch, skipped))
    }

    /// Cancels a job that is not final yet.
    pub fn cancel(&self, job_id: &str, now: u64) -> Result<Job> {
        let mut g = self.guard();
        let mut job = self.job(job_id)?.ok_or(TranscodeError::NotFound)?;
        if job.state.is_final() {
            return Err(TranscodeError::Conflict(
                format!("{:?}", job.state).to_lowercase(),
            ));
        }
        let mut tx = Tx::default();
        self.finish_job(
            &mut tx,
            &mut job,
            JobState::Cancelled,
            Some(Failure {
                class: FailureClass::Cancelled,
                message: "cancelled by user".into(),
            }),
            now,
        )?;
        self.commit(&mut g, tx)?;
        Ok(job)
    }

    /// Moves a job to a final state, cancelling its unfinished tasks.
    fn finish_job(
        &self,
        tx: &mut Tx,
        job: &mut Job,
        state: JobState,
        error: Option<Failure>,
        now: u64,
    ) -> Result<()> {
        // A succeeded job has no unfinished task to cancel.
        let tasks: &[String] = if state == JobState::Succeeded {
            &[]
        } else {
            &job.tasks
        };
        for tid in tasks {
            let Some(mut t) = self.task(tid)? else {
                continue;
            };
            match t.state {
                TaskState::Queued => self.unqueue(tx, job, &t, false)?,
                TaskState::Leased => {
                    if let Some(l) = &t.lease {
                        tx.b.delete_cf(self.cf(CF_LEASES)?, lease_key(l.expires_ms, &t.id));
                    }
                }
                _ => continue,
            }
            t.state = TaskState::Cancelled;
            t.lease = None;
            self.put(&mut tx.b, CF_TASKS, t.id.as_bytes(), &t)?;
        }
        job.state = state;
        job.error = error;
        job.updated_ms = now;
        if state == JobState::Succeeded {
            job.progress = 1.0;
        }
        self.clear_active(&mut tx.b, job)?;
        self.put(&mut tx.b, CF_JOBS, job.id.as_bytes(), job)
    }
}

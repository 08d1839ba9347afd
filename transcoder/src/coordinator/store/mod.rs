//! The durable job store: jobs, tasks, the queue, leases and worker records, with every
//! state transition one atomic transaction — written once (`transitions`, `leases`)
//! over [`Txn`], on either backend: the embedded RocksDB store (`rocks`) or PostgreSQL
//! shared by many coordinators (`pg`).
//!
//! Invariants:
//! - A task is queued iff it is `Queued`, and in the lease index iff it is `Leased`:
//!   the backends keep both in step with the task's own record, in its transaction.
//! - Fencing tokens only grow, so a token names one lease forever; heartbeats and
//!   results carrying any other token than the task's current lease's are refused, and
//!   an expired lease is reaped before anyone else can take the task.
//! - A job's state changes only here, and a final state never changes again.

mod leases;
pub mod migrate;
mod pg;
mod rocks;
pub mod sched;
mod transitions;
mod txn;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TranscodeError};
use crate::model::*;
use txn::Txn;
pub use txn::{IdKind, QueueOp};

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

/// Most times a transition is run again after its transaction lost a race it cannot
/// win by waiting (PostgreSQL: a deadlock or serialisation failure between
/// coordinators, a fresh id another coordinator took first). Each retry starts from the
/// committed state, so a handful always suffices unless the database is failing.
const MAX_TXN_RETRIES: u32 = 8;

/// The job store: one set of transitions over either backend.
pub struct Store {
    backend: Backend,
    /// Lease length in ms ([`LEASE_MS`] unless configured).
    lease_ms: u64,
}

/// Who [`Store::listen_for_work`] wakes, and what it counts.
pub struct WorkListener {
    /// The long-polling workers' signal; listening ends when it is dropped.
    pub work: std::sync::Weak<tokio::sync::Notify>,
    /// Notifications received, this coordinator's own included (each wakes as many
    /// waiters as it says tasks were queued).
    pub wakeups: prometheus_client::metrics::counter::Counter,
    /// 1 while a connection listens, 0 while none does.
    pub listening: prometheus_client::metrics::gauge::Gauge,
}

/// Leases one coordinator runs at once on PostgreSQL ([`Store::lease_turn`]).
pub use pg::LEASE_CONNECTIONS as POSTGRES_LEASE_TURNS;

/// A coordinator's turn to lease ([`Store::lease_turn`]).
pub struct LeaseTurn<'a> {
    _slot: Option<pg::LeaseSlot<'a>>,
}

enum Backend {
    Rocks(rocks::Rocks),
    Postgres(pg::Postgres),
}

/// A new time-ordered id: 12 hex digits of ms since the epoch, then 8 random ones.
pub fn new_id(now_ms: u64) -> String {
    format!("{now_ms:012x}{:08x}", rand::random::<u32>())
}

fn backoff_ms(attempts: u32) -> u64 {
    BASE_BACKOFF_MS
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF_MS)
}

impl Store {
    /// Opens (creating) the embedded RocksDB store in `dir`: one coordinator per store.
    pub fn open(dir: &std::path::Path) -> Result<Self> {
        Ok(Self::with(Backend::Rocks(rocks::Rocks::open(dir)?)))
    }

    /// Connects to the PostgreSQL store at `url` (`postgres://…`), creating its schema
    /// when missing: any number of coordinators may share it.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(Self::with(Backend::Postgres(pg::Postgres::connect(url)?)))
    }

    fn with(backend: Backend) -> Self {
        Self {
            backend,
            lease_ms: LEASE_MS,
        }
    }

    /// Sets the lease length (tests and operators with very long or short tasks).
    pub fn with_lease_ms(mut self, lease_ms: u64) -> Self {
        self.lease_ms = lease_ms.max(1);
        self
    }

    /// Which backend holds the queue, in words (for logs).
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Rocks(_) => "rocksdb",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The time transitions are stamped and leases checked with (ms since the epoch):
    /// this machine's clock for the embedded store; the database's for PostgreSQL, so
    /// that coordinators whose clocks disagree still agree on when a lease expires.
    pub fn now_ms(&self) -> u64 {
        match &self.backend {
            Backend::Rocks(_) => super::now_ms(),
            Backend::Postgres(p) => p.now_ms(),
        }
    }

    fn begin(&self) -> Result<Box<dyn Txn + '_>> {
        match &self.backend {
            Backend::Rocks(r) => Ok(Box::new(r.begin())),
            Backend::Postgres(p) => Ok(Box::new(p.begin()?)),
        }
    }

    /// Runs `f` as one transaction, again from the start when it lost a race that
    /// waiting cannot resolve ([`TranscodeError::is_retryable`]).
    fn transact<T>(&self, mut f: impl FnMut(&mut dyn Txn) -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            let mut tx = self.begin()?;
            let outcome = f(tx.as_mut()).and_then(|v| tx.commit().map(|()| v));
            match outcome {
                Err(e) if e.is_retryable() && attempt < MAX_TXN_RETRIES => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "job store transaction retried");
                }
                other => return other,
            }
        }
    }

    // ---- Reads ----

    /// A job by id, its progress and attempts as of its tasks now (heartbeats move only
    /// their tasks).
    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        Ok(self.job_view(id, false)?.map(|(job, _)| job))
    }

    /// A job as [`Store::job`] reads it and, when `with_tasks`, its tasks (in
    /// `job.tasks` order) from the same read; otherwise no tasks.
    pub fn job_view(&self, id: &str, with_tasks: bool) -> Result<Option<(Job, Vec<Task>)>> {
        let job = match &self.backend {
            Backend::Rocks(r) => r.job(id)?,
            Backend::Postgres(p) => p.job(id)?,
        };
        let Some(mut job) = job else {
            return Ok(None);
        };
        let live = !job.state.is_final();
        if !live && !with_tasks {
            return Ok(Some((job, Vec::new())));
        }
        let tasks = match &self.backend {
            Backend::Rocks(r) => r.tasks_of(&job)?,
            Backend::Postgres(p) => p.tasks_of(&job)?,
        };
        if live {
            leases::summarise(&mut job, &tasks);
        }
        Ok(Some((job, if with_tasks { tasks } else { Vec::new() })))
    }

    /// The jobs of `ids` that exist, as stored, in one read: their progress as of the
    /// last task that ended (what a batch's status sums: reading every member's tasks
    /// for live progress would cost a read per member).
    pub fn stored_jobs(&self, ids: &[String]) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Rocks(r) => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    out.extend(r.job(id)?);
                }
                Ok(out)
            }
            Backend::Postgres(p) => p.jobs(ids),
        }
    }

    /// A task by id.
    pub fn task(&self, id: &str) -> Result<Option<Task>> {
        match &self.backend {
            Backend::Rocks(r) => r.task(id),
            Backend::Postgres(p) => p.task(id),
        }
    }

    /// Jobs newest first, optionally of one state, before id `before`, at most `limit`.
    pub fn list_jobs(
        &self,
        state: Option<JobState>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Rocks(r) => r.list_jobs(state, before, limit),
            Backend::Postgres(p) => p.list_jobs(state, before, limit),
        }
    }

    /// A batch by id.
    pub fn batch(&self, id: &str) -> Result<Option<Batch>> {
        match &self.backend {
            Backend::Rocks(r) => r.batch(id),
            Backend::Postgres(p) => p.batch(id),
        }
    }

    /// A worker's record.
    pub fn worker(&self, id: &str) -> Result<WorkerRecord> {
        self.transact(|tx| tx.worker(id))
    }

    /// A job under way that transcodes `source` with `profile`, if there is one.
    pub fn active_job(&self, source: &str, profile: &str) -> Result<Option<String>> {
        self.transact(|tx| tx.active_job(source, profile))
    }

    /// Number of queued tasks (ready now or backed off).
    pub fn queue_depth(&self) -> Result<u64> {
        match &self.backend {
            Backend::Rocks(r) => Ok(r.queue_depth()),
            Backend::Postgres(p) => p.queue_depth(),
        }
    }

    /// Keeps the database's planner statistics current (PostgreSQL: analyzes the tables
    /// changed enough since their last `ANALYZE`, see `pg/stats.rs`); returns the tables
    /// analyzed. Nothing to do for the embedded store.
    pub fn refresh_statistics(&self) -> Result<Vec<&'static str>> {
        match &self.backend {
            Backend::Rocks(_) => Ok(Vec::new()),
            Backend::Postgres(p) => p.refresh_statistics(),
        }
    }

    /// Deletes every job that ended before `cutoff_ms` (unix ms) and is in no batch,
    /// and every batch whose jobs all did (with them).
    pub fn purge(&self, cutoff_ms: u64) -> Result<Purged> {
        match &self.backend {
            Backend::Rocks(r) => r.purge(cutoff_ms),
            Backend::Postgres(p) => p.purge(cutoff_ms),
        }
    }

    // ---- Transitions (each one transaction: `transitions.rs`, `leases.rs`) ----

    /// Creates a job (with its planning task) and queues it.
    /// `tenant` names who submitted it (fair scheduling shares slots between tenants).
    pub fn submit(&self, req: &SubmitJob, tenant: &str, now: u64) -> Result<Job> {
        self.transact(|tx| transitions::submit(tx, req, tenant, now))
    }

    /// Creates one job per source under a new batch, but none for a source that a job
    /// not final yet transcodes with `profile` (a batch over the same objects that still
    /// runs): those are returned as skipped. Of two batches submitted at once over the
    /// same objects, the second skips what the first took.
    pub fn submit_batch(
        &self,
        prefix: &str,
        profile: &str,
        sources: &[String],
        priority: u8,
        tenant: &str,
        now: u64,
    ) -> Result<(Batch, Vec<Skipped>)> {
        let req = transitions::BatchRequest {
            prefix,
            profile,
            sources,
            priority,
            tenant,
        };
        self.transact(|tx| transitions::submit_batch(tx, &req, now))
    }

    /// Cancels a job that is not final yet.
    pub fn cancel(&self, job_id: &str, now: u64) -> Result<Job> {
        self.transact(|tx| transitions::cancel(tx, job_id, now))
    }

    /// Leases the next runnable task in the scheduler's order to `worker`, if any.
    pub fn lease(&self, worker: &str, now: u64) -> Result<Option<Assignment>> {
        self.lease_within(worker, None, now)
    }

    /// Like [`Store::lease`], but only a task whose weight is at most `max_cost` (a
    /// worker's express slot: [`LIGHT_TASK_COST`]).
    pub fn lease_within(
        &self,
        worker: &str,
        max_cost: Option<f64>,
        now: u64,
    ) -> Result<Option<Assignment>> {
        self.transact(|tx| leases::lease(tx, worker, max_cost, now, self.lease_ms))
    }

    /// Wakes `to`'s waiters whenever another coordinator sharing this store queues a
    /// task (PostgreSQL `LISTEN`/`NOTIFY`), until they are dropped. The embedded store
    /// has one coordinator: nothing to listen for.
    pub fn listen_for_work(&self, to: WorkListener) {
        if let Backend::Postgres(p) = &self.backend {
            p.listen_for_work(to);
        }
    }

    /// Waits for this coordinator's turn to lease, held until the guard drops: on
    /// PostgreSQL at most half its connections lease at once, so that heartbeats and
    /// results never wait behind new leases (`pg::LEASE_CONNECTIONS`); the embedded
    /// store leases one at a time under its lock anyway. Take it before reading the
    /// clock for the lease.
    pub fn lease_turn(&self) -> LeaseTurn<'_> {
        LeaseTurn {
            _slot: match &self.backend {
                Backend::Postgres(p) => Some(p.lease_slot()),
                Backend::Rocks(_) => None,
            },
        }
    }

    /// Extends a lease and records progress. Returns the new expiry.
    pub fn heartbeat(&self, task_id: &str, token: u64, progress: f64, now: u64) -> Result<u64> {
        if let Backend::Postgres(p) = &self.backend {
            // The common case in one statement: extended only where `token` holds the
            // task's lease unexpired at `now` (the fence `leases::heartbeat` checks).
            // Anything else goes the general way, which says why it is refused.
            let expires = now + self.lease_ms;
            if p.extend_lease(task_id, token, progress.clamp(0.0, 1.0), now, expires)? {
                return Ok(expires);
            }
        }
        self.transact(|tx| leases::heartbeat(tx, task_id, token, progress, now, self.lease_ms))
    }

    /// Records a task's success; advances or finishes its job.
    pub fn complete(&self, task_id: &str, token: u64, result: TaskResult, now: u64) -> Result<Job> {
        self.transact(|tx| leases::complete(tx, task_id, token, result.clone(), now))
    }

    /// Records a task's failure: retried with backoff, or the job fails.
    pub fn fail(&self, task_id: &str, token: u64, failure: Failure, now: u64) -> Result<Job> {
        self.transact(|tx| leases::fail(tx, task_id, token, failure.clone(), now))
    }

    /// Expires every lease past its time, as a failure of its holder. Returns the jobs
    /// of the expired tasks, as they are afterwards.
    pub fn reap(&self, now: u64) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        loop {
            let expired = self.transact(|tx| tx.expired(now, REAP_CHUNK))?;
            let full = expired.len() >= REAP_CHUNK;
            for task_id in expired {
                if let Some(job) = self.transact(|tx| leases::reap_one(tx, &task_id, now))? {
                    jobs.push(job);
                }
            }
            if !full {
                return Ok(jobs);
            }
        }
    }
}

impl Store {
    // ---- The webhook outbox (`coordinator::webhook`) ----

    /// Claims up to `limit` deliveries due at `now` for `claim_ms`: no other coordinator
    /// sends them meanwhile.
    pub fn claim_webhooks(&self, now: u64, claim_ms: u64, limit: usize) -> Result<Vec<Outgoing>> {
        self.transact(|tx| {
            let mut due = tx.due_outgoing(now, limit)?;
            for o in &mut due {
                o.next_ms = now + claim_ms;
                tx.put_outgoing(o)?;
            }
            Ok(due)
        })
    }

    /// A claimed delivery is done (delivered, or given up): it leaves the outbox.
    pub fn webhook_done(&self, id: &str) -> Result<()> {
        self.transact(|tx| tx.delete_outgoing(id))
    }

    /// A claimed delivery failed: its attempts so far and when to try again.
    pub fn webhook_retry(&self, id: &str, attempts: u32, next_ms: u64) -> Result<()> {
        self.transact(|tx| match tx.outgoing(id)? {
            Some(mut o) => {
                o.attempts = attempts;
                o.next_ms = next_ms;
                tx.put_outgoing(&o)
            }
            None => Ok(()),
        })
    }
}

/// Expired leases read per step of [`Store::reap`]: each is then reaped in its own
/// transaction, so a backlog after an outage never becomes one huge transaction.
const REAP_CHUNK: usize = 256;

/// What one purge pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Jobs deleted (with their tasks).
    pub jobs: u64,
    /// Batches deleted.
    pub batches: u64,
}

/// The creation time encoded in a time-ordered id ([`new_id`]).
fn id_ms(id: &[u8]) -> Option<u64> {
    let hex = std::str::from_utf8(id.get(..12)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

/// Whether `job` ended before `cutoff_ms` (retention deletes it).
fn expired_by(job: &Job, cutoff_ms: u64) -> bool {
    job.state.is_final() && job.updated_ms < cutoff_ms
}

use super::batch::Skipped;
use super::webhook::Outgoing;

//! What a transition sees of its backend: one atomic unit of reads and writes.
//!
//! Every transition (submit, lease, heartbeat, complete, fail, reap, cancel) is written
//! once, in `transitions.rs` and `leases.rs`, against [`Txn`]; the RocksDB store and the
//! PostgreSQL store each implement it. What each backend must guarantee:
//!
//! - **Atomicity**: the writes of a transition become durable together at
//!   [`Txn::commit`], or not at all (a transaction dropped uncommitted writes nothing).
//! - **Isolation per job**: [`Txn::job`] returns the job's latest committed state and
//!   holds it against every other transition until commit (RocksDB: one store-wide lock;
//!   PostgreSQL: `SELECT … FOR UPDATE` of the job's row). Every change of a task holds
//!   the task's own lock ([`Txn::lock_task`], or [`Txn::pick`]'s); every change of a
//!   task's state also holds its job's, except a lease of a running job (queued →
//!   leased) — so under a job's lock its tasks' states are current, and only their
//!   leases' expiry and progress may move (heartbeats).
//! - **Indexes follow the records**: [`Txn::put_task`] keeps the queue (every `Queued`
//!   task) and the lease index (every `Leased` task, by expiry) in step with the task's
//!   state; [`Txn::put_job`] keeps the set of jobs under way (not final) in step.
//! - **Tokens only grow**: [`Txn::next_token`] never returns a value twice.
//! - The lease *order* is soft state: [`QueueOp`]s are applied after the commit, and
//!   losing one (a crash in between) can cost fairness, never a task.

use std::collections::HashSet;

use super::sched::Queued;
use super::{Batch, WorkerRecord};
use crate::coordinator::webhook::Outgoing;
use crate::error::Result;
use crate::model::{Job, Task};

/// A change to the lease order, taken on once the transition that makes it is durable.
#[derive(Clone, Debug)]
pub enum QueueOp {
    /// The task is queued.
    Insert(Queued),
    /// The task left the queue without being leased (its job ended).
    Remove(Queued),
    /// The task was leased: its cost is charged to its tenant and flow.
    Lease(Queued),
}

/// Which records an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// A job id.
    Job,
    /// A batch id.
    Batch,
}

/// One transition's view of the store (see the module documentation).
pub trait Txn {
    /// A job, locked until commit.
    fn job(&mut self, id: &str) -> Result<Option<Job>>;
    /// The job of task `task_id`, locked until commit (as [`Txn::job`]).
    fn job_of(&mut self, task_id: &str) -> Result<Option<Job>> {
        match self.task(task_id)? {
            Some(t) => self.job(&t.job_id),
            None => Ok(None),
        }
    }
    /// A job as last committed, not locked (what a lease of a running job reads).
    fn peek_job(&mut self, id: &str) -> Result<Option<Job>>;
    /// A task as last committed or written in this transaction.
    fn task(&mut self, id: &str) -> Result<Option<Task>>;
    /// A task, locked until commit: read so before changing it (a heartbeat changes a
    /// task under this lock alone).
    fn lock_task(&mut self, id: &str) -> Result<Option<Task>>;
    /// Writes a leased task whose lease was extended (and its progress), keeping the
    /// lease index in step.
    fn extend_lease(&mut self, task: &Task) -> Result<()>;
    /// Every task of `job` (in `job.tasks` order), as committed or written in this
    /// transaction.
    fn tasks_of(&mut self, job: &Job) -> Result<Vec<Task>>;
    /// A worker's failure record (default when it has none).
    fn worker(&mut self, id: &str) -> Result<WorkerRecord>;
    /// A worker's failure record, locked until commit: for changing it (two outcomes of
    /// one worker committed at once must both count).
    fn lock_worker(&mut self, id: &str) -> Result<WorkerRecord>;
    /// Which of `ids` already name a record of `kind`.
    fn taken(&mut self, kind: IdKind, ids: &[String]) -> Result<HashSet<String>>;
    /// A job not final yet that transcodes `source` with `profile`; concurrent callers
    /// with the same pair are serialised until commit, so two batches over one folder
    /// do not both take it.
    fn active_job(&mut self, source: &str, profile: &str) -> Result<Option<String>>;
    /// A fencing token never handed out before.
    fn next_token(&mut self) -> Result<u64>;
    /// Makes every later token differ from every token below `floor` (another store's
    /// tokens, after a migration).
    fn token_floor(&mut self, floor: u64) -> Result<()>;
    /// Writes a new job (its id is fresh: [`Txn::taken`]).
    fn insert_job(&mut self, job: &Job) -> Result<()>;
    /// Writes an existing job.
    fn put_job(&mut self, job: &Job) -> Result<()>;
    /// Writes a task of `job`, keeping the queue and lease indexes in step.
    fn put_task(&mut self, job: &Job, task: &Task) -> Result<()>;
    /// Writes a worker's record.
    fn put_worker(&mut self, id: &str, rec: &WorkerRecord) -> Result<()>;
    /// Writes a batch.
    fn put_batch(&mut self, batch: &Batch) -> Result<()>;
    /// Writes a webhook delivery into the outbox.
    fn put_outgoing(&mut self, o: &Outgoing) -> Result<()>;
    /// A delivery in the outbox, locked until commit.
    fn outgoing(&mut self, id: &str) -> Result<Option<Outgoing>>;
    /// Takes a delivery out of the outbox.
    fn delete_outgoing(&mut self, id: &str) -> Result<()>;
    /// Deliveries due at `now` (at most `limit`, earliest first), locked until commit and
    /// skipping any another transaction holds.
    fn due_outgoing(&mut self, now: u64, limit: usize) -> Result<Vec<Outgoing>>;
    /// Records a change to the lease order, applied after commit.
    fn queue(&mut self, op: QueueOp);
    /// The queued task to lease next to `worker` at `now` in the scheduler's order,
    /// ready and of weight at most `max_cost` when given, skipping `exclude`.
    fn pick(
        &mut self,
        worker: &str,
        now: u64,
        max_cost: Option<f64>,
        exclude: &HashSet<String>,
    ) -> Result<Option<String>>;
    /// Tasks whose lease expired at or before `now` (at most `limit`).
    fn expired(&mut self, now: u64, limit: usize) -> Result<Vec<String>>;
    /// Makes every write durable, then applies the queue changes.
    fn commit(self: Box<Self>) -> Result<()>;
}

//! Moving a queue between stores (`kura coordinator migrate --from … --to …`): from the
//! embedded store to PostgreSQL when a site grows past one coordinator, and back. Every
//! job with its tasks, every batch, worker record and pending webhook is copied with its
//! state, leases included (a worker that holds one goes on heartbeating against the new
//! store), and the new store's fencing tokens start above every token the old one gave.
//! Run it with the coordinators stopped: the old store must not change meanwhile.

use super::transitions::queued;
use super::txn::{QueueOp, Txn};
use super::*;

/// One record of a store, as copied.
pub enum Exported {
    /// A job and its tasks (in `job.tasks` order).
    Job(Job, Vec<Task>),
    /// A batch.
    Batch(Batch),
    /// A worker's failure record.
    Worker(String, WorkerRecord),
    /// A webhook not delivered yet.
    Outgoing(Outgoing),
}

/// What a migration copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Jobs (with their tasks).
    pub jobs: u64,
    /// Tasks.
    pub tasks: u64,
    /// Batches.
    pub batches: u64,
    /// Worker records.
    pub workers: u64,
    /// Pending webhooks.
    pub webhooks: u64,
    /// The first fencing token the old store would have given next.
    pub next_token: u64,
}

/// Copies everything in `from` into `to`, which must hold no job yet.
pub fn migrate(from: &Store, to: &Store) -> Result<Migrated> {
    if !to.list_jobs(None, None, 1)?.is_empty() {
        return Err(TranscodeError::BadRequest(
            "the destination store already holds jobs: migrate into an empty one".into(),
        ));
    }
    let mut done = Migrated::default();
    let next_token = from.export(&mut |item| {
        match &item {
            Exported::Job(_, tasks) => {
                done.jobs += 1;
                done.tasks += tasks.len() as u64;
            }
            Exported::Batch(_) => done.batches += 1,
            Exported::Worker(..) => done.workers += 1,
            Exported::Outgoing(_) => done.webhooks += 1,
        }
        to.transact(|tx| import(tx, &item))
    })?;
    to.transact(|tx| tx.token_floor(next_token))?;
    done.next_token = next_token;
    Ok(done)
}

/// Writes one exported record.
fn import(tx: &mut dyn Txn, item: &Exported) -> Result<()> {
    match item {
        Exported::Job(job, tasks) => {
            tx.insert_job(job)?;
            for t in tasks {
                tx.put_task(job, t)?;
                if t.state == TaskState::Queued {
                    tx.queue(QueueOp::Insert(queued(job, t)));
                }
            }
            Ok(())
        }
        Exported::Batch(b) => tx.put_batch(b),
        Exported::Worker(id, rec) => tx.put_worker(id, rec),
        Exported::Outgoing(o) => tx.put_outgoing(o),
    }
}

impl Store {
    /// Hands every record to `sink` (each job before its tasks' batch); returns the
    /// first fencing token this store would give next.
    pub fn export(&self, sink: &mut dyn FnMut(Exported) -> Result<()>) -> Result<u64> {
        match &self.backend {
            Backend::Rocks(r) => r.export(sink),
            Backend::Postgres(p) => p.export(sink),
        }
    }
}

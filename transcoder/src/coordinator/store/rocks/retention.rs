//! Retention on the RocksDB store: jobs that ended long ago are deleted with their
//! tasks, and batches with all their jobs, so the store (and every listing of it) stays
//! bounded. The outputs a job wrote are objects in the cluster and are not touched.

use rocksdb::{IteratorMode, WriteBatch};

use super::{decode, Rocks, CF_BATCHES, CF_JOBS, CF_TASKS};
use crate::coordinator::store::{expired_by as expired, id_ms, Batch, Purged};
use crate::error::Result;
use crate::model::Job;

/// Most jobs or batches deleted in one write batch: keeps a purge's synced write, and
/// the time it holds the store's lock, small while a backlog is worked off.
const PURGE_CHUNK: usize = 256;

impl Rocks {
    /// Deletes every job that ended before `cutoff_ms` (unix ms) and is in no batch,
    /// and every batch whose jobs all did (with them). Ids are time-ordered, so the scan
    /// stops at the first id created after the cutoff: a pass reads only what is old.
    pub(in crate::coordinator::store) fn purge(&self, cutoff_ms: u64) -> Result<Purged> {
        let mut purged = Purged::default();
        loop {
            let (jobs, batches, more) = self.purge_some(cutoff_ms)?;
            purged.jobs += jobs;
            purged.batches += batches;
            if !more {
                return Ok(purged);
            }
        }
    }

    /// One bounded step of [`Rocks::purge`]; `more` when it stopped at [`PURGE_CHUNK`].
    fn purge_some(&self, cutoff_ms: u64) -> Result<(u64, u64, bool)> {
        // Under the store's lock: no transition sees a half-deleted job.
        let _g = self.guard();
        let mut b = WriteBatch::default();
        let (mut jobs, mut batches, mut more) = (0u64, 0u64, false);
        for item in self
            .db
            .iterator_cf(self.cf(CF_BATCHES)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            if id_ms(&k).is_none_or(|ms| ms >= cutoff_ms) {
                break;
            }
            let batch: Batch = decode(&v)?;
            let mut members = Vec::with_capacity(batch.jobs.len());
            for id in &batch.jobs {
                members.push(self.job(id)?);
            }
            if !members.iter().flatten().all(|j| expired(j, cutoff_ms)) {
                continue;
            }
            for job in members.iter().flatten() {
                self.delete_job(&mut b, job)?;
                jobs += 1;
            }
            b.delete_cf(self.cf(CF_BATCHES)?, &k);
            batches += 1;
            if batches as usize >= PURGE_CHUNK {
                more = true;
                break;
            }
        }
        for item in self.db.iterator_cf(self.cf(CF_JOBS)?, IteratorMode::Start) {
            if more {
                break;
            }
            let (k, v) = item?;
            if id_ms(&k).is_none_or(|ms| ms >= cutoff_ms) {
                break;
            }
            let job: Job = decode(&v)?;
            if job.batch.is_none() && expired(&job, cutoff_ms) {
                self.delete_job(&mut b, &job)?;
                jobs += 1;
                more = jobs as usize >= PURGE_CHUNK;
            }
        }
        self.write(b)?;
        Ok((jobs, batches, more))
    }

    /// Adds deleting a final job and its tasks to `b` (a final job's tasks are in no
    /// queue or lease index: `finish_job` took them out).
    fn delete_job(&self, b: &mut WriteBatch, job: &Job) -> Result<()> {
        for tid in &job.tasks {
            b.delete_cf(self.cf(CF_TASKS)?, tid.as_bytes());
        }
        b.delete_cf(self.cf(CF_JOBS)?, job.id.as_bytes());
        Ok(())
    }
}

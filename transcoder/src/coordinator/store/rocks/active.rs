//! Which sources have a job under way, by profile: the `active` index, so that a batch
//! submitted while another batch's jobs over the same objects still run skips them
//! instead of transcoding everything twice (the done markers that make batches
//! idempotent are only written when a job ends).
//!
//! `active`: `[profile] 0 [source] 0 [job id]` → empty. Written in the batch that
//! creates the job, deleted in the batch that makes it final, so it holds exactly the
//! jobs that are not final. Stores opened before the index existed build it once from
//! the jobs (meta `active_index`).

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::{decode, Rocks, CF_ACTIVE, CF_JOBS, CF_META};
use crate::error::Result;
use crate::model::Job;

/// Meta key saying the `active` index is complete.
const ACTIVE_BUILT_KEY: &[u8] = b"active_index";

/// The index prefix of `source` under `profile`.
fn prefix(profile: &str, source: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(profile.len() + source.len() + 2);
    k.extend_from_slice(profile.as_bytes());
    k.push(0);
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k
}

pub(super) fn key(job: &Job) -> Vec<u8> {
    let mut k = prefix(&job.profile, &job.source);
    k.extend_from_slice(job.id.as_bytes());
    k
}

impl Rocks {
    /// A job under way that transcodes `source` with `profile`, if there is one.
    pub(super) fn active_job(&self, source: &str, profile: &str) -> Result<Option<String>> {
        let p = prefix(profile, source);
        let mut it = self.db.iterator_cf(
            self.cf(CF_ACTIVE)?,
            IteratorMode::From(&p, Direction::Forward),
        );
        match it.next().transpose()? {
            Some((k, _)) if k.starts_with(&p) => {
                Ok(Some(String::from_utf8_lossy(&k[p.len()..]).into_owned()))
            }
            _ => Ok(None),
        }
    }

    /// Builds the index from the jobs, once per store.
    pub(super) fn build_active_index(&self) -> Result<()> {
        if self
            .db
            .get_cf(self.cf(CF_META)?, ACTIVE_BUILT_KEY)?
            .is_some()
        {
            return Ok(());
        }
        let mut b = WriteBatch::default();
        for item in self.db.iterator_cf(self.cf(CF_JOBS)?, IteratorMode::Start) {
            let (_, v) = item?;
            let job: Job = decode(&v)?;
            if !job.state.is_final() {
                b.put_cf(self.cf(CF_ACTIVE)?, key(&job), []);
            }
        }
        b.put_cf(self.cf(CF_META)?, ACTIVE_BUILT_KEY, []);
        self.write(b)
    }
}

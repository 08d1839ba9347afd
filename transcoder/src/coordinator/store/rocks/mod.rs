//! The embedded store: jobs, tasks, the ready queue, leases and worker records in
//! RocksDB, every transition one synced write batch under one lock (the default for
//! `kura dev` and single-machine installs; one coordinator per store).
//!
//! Invariants:
//! - A task is in the `ready` index iff it is `Queued`; in the `leases` index iff it is
//!   `Leased`. [`RocksTxn::put_task`] changes both in the same batch as the task.
//! - Fencing tokens only grow (a persisted counter).
//! - The lease order is the in-memory [`Scheduler`], rebuilt from `ready` at open and
//!   changed only after the batch that queues or unqueues a task is durable.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

mod active;
mod retention;

use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::{de::DeserializeOwned, Serialize};

use super::migrate::Exported;
use super::sched::Scheduler;
use super::transitions::queued;
use super::txn::{IdKind, QueueOp, Txn};
use super::{Batch, WorkerRecord};
use crate::coordinator::webhook::Outgoing;
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
/// Delivery id → [`Outgoing`]: webhooks not delivered yet (a handful at any time).
const CF_OUTBOX: &str = "outbox";
const TOKEN_KEY: &[u8] = b"next_token";

/// The RocksDB backend.
pub(super) struct Rocks {
    db: DB,
    /// Serialises every transition (the coordinator's throughput is bounded by the
    /// synced WAL anyway, and one lock makes every transition atomic), and holds the
    /// lease order of the queued tasks.
    lock: Mutex<Scheduler>,
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

fn sync() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(TranscodeError::StoredJson)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(TranscodeError::StoredJson)
}

impl Rocks {
    /// Opens (creating) the store in `dir`.
    pub(super) fn open(dir: &std::path::Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [
            CF_JOBS, CF_TASKS, CF_READY, CF_LEASES, CF_WORKERS, CF_BATCHES, CF_META, CF_ACTIVE,
            CF_OUTBOX,
        ]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let mut store = Self {
            db,
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
        let mut jobs: HashMap<String, Job> = Default::default();
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

    fn guard(&self) -> MutexGuard<'_, Scheduler> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A transaction: holds the store's lock until it is committed or dropped.
    pub(super) fn begin(&self) -> RocksTxn<'_> {
        RocksTxn {
            store: self,
            sched: self.guard(),
            batch: WriteBatch::default(),
            tasks: HashMap::new(),
            queue: Vec::new(),
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| TranscodeError::BadData(format!("missing column family {name}")))
    }

    fn get<T: DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>> {
        match self.db.get_pinned_cf(self.cf(cf)?, key)? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db.write_opt(batch, &sync())?;
        Ok(())
    }

    /// The token the next lease gets.
    fn next_token(&self) -> Result<u64> {
        Ok(match self.db.get_cf(self.cf(CF_META)?, TOKEN_KEY)? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| TranscodeError::BadData("token".into()))?,
            ),
            None => 1,
        })
    }

    /// Every record, for a migration (see `store::migrate`); returns the next token.
    pub(super) fn export(&self, sink: &mut dyn FnMut(Exported) -> Result<()>) -> Result<u64> {
        let _g = self.guard();
        for item in self.db.iterator_cf(self.cf(CF_JOBS)?, IteratorMode::Start) {
            let job: Job = decode(&item?.1)?;
            let mut tasks = Vec::with_capacity(job.tasks.len());
            for id in &job.tasks {
                tasks.extend(self.task(id)?);
            }
            sink(Exported::Job(job, tasks))?;
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_BATCHES)?, IteratorMode::Start)
        {
            sink(Exported::Batch(decode(&item?.1)?))?;
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_WORKERS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            sink(Exported::Worker(
                String::from_utf8_lossy(&k).into_owned(),
                decode(&v)?,
            ))?;
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_OUTBOX)?, IteratorMode::Start)
        {
            sink(Exported::Outgoing(decode(&item?.1)?))?;
        }
        self.next_token()
    }

    // ---- Reads ----

    pub(super) fn job(&self, id: &str) -> Result<Option<Job>> {
        self.get(CF_JOBS, id.as_bytes())
    }

    pub(super) fn task(&self, id: &str) -> Result<Option<Task>> {
        self.get(CF_TASKS, id.as_bytes())
    }

    pub(super) fn tasks_of(&self, job: &Job) -> Result<Vec<Task>> {
        let mut out = Vec::with_capacity(job.tasks.len());
        for id in &job.tasks {
            out.extend(self.task(id)?);
        }
        Ok(out)
    }

    pub(super) fn batch(&self, id: &str) -> Result<Option<Batch>> {
        self.get(CF_BATCHES, id.as_bytes())
    }

    pub(super) fn queue_depth(&self) -> u64 {
        self.guard().len() as u64
    }

    pub(super) fn list_jobs(
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
            let job: Job = decode(&v)?;
            if state.is_none_or(|s| s == job.state) {
                out.push(job);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// One transition on the RocksDB store: a write batch, the tasks it read or wrote
/// (so it reads its own writes and knows which index entries a task had), and the
/// scheduler changes to apply once the batch is durable, all under the store's lock.
pub(super) struct RocksTxn<'a> {
    store: &'a Rocks,
    sched: MutexGuard<'a, Scheduler>,
    batch: WriteBatch,
    tasks: HashMap<String, Option<Task>>,
    queue: Vec<QueueOp>,
}

impl RocksTxn<'_> {
    fn put<T: Serialize>(&mut self, cf: &str, key: &[u8], v: &T) -> Result<()> {
        let bytes = encode(v)?;
        self.batch.put_cf(self.store.cf(cf)?, key, bytes);
        Ok(())
    }

    /// The index entry (`ready` or `leases`) of `task` in `job`, if it has one.
    fn index_entry(job: &Job, task: &Task) -> Option<IndexEntry> {
        match (&task.state, &task.lease) {
            (TaskState::Queued, _) => Some((
                CF_READY,
                ready_key(job.priority, task.ready_ms, &task.id),
                job.id.as_bytes().to_vec(),
            )),
            (TaskState::Leased, Some(l)) => Some((
                CF_LEASES,
                lease_key(l.expires_ms, &task.id),
                l.token.to_be_bytes().to_vec(),
            )),
            _ => None,
        }
    }
}

/// A column family, key and value.
type IndexEntry = (&'static str, Vec<u8>, Vec<u8>);

impl Txn for RocksTxn<'_> {
    fn job(&mut self, id: &str) -> Result<Option<Job>> {
        self.store.job(id)
    }

    fn peek_job(&mut self, id: &str) -> Result<Option<Job>> {
        self.store.job(id)
    }

    fn lock_task(&mut self, id: &str) -> Result<Option<Task>> {
        // Every transition holds the store's lock.
        self.task(id)
    }

    fn extend_lease(&mut self, task: &Task) -> Result<()> {
        if let Some(Task {
            lease: Some(old), ..
        }) = self.task(&task.id)?
        {
            let cf = self.store.cf(CF_LEASES)?;
            self.batch
                .delete_cf(cf, lease_key(old.expires_ms, &task.id));
        }
        if let Some(l) = &task.lease {
            let cf = self.store.cf(CF_LEASES)?;
            self.batch
                .put_cf(cf, lease_key(l.expires_ms, &task.id), l.token.to_be_bytes());
        }
        self.put(CF_TASKS, task.id.as_bytes(), task)?;
        self.tasks.insert(task.id.clone(), Some(task.clone()));
        Ok(())
    }

    fn task(&mut self, id: &str) -> Result<Option<Task>> {
        if let Some(t) = self.tasks.get(id) {
            return Ok(t.clone());
        }
        let t = self.store.task(id)?;
        self.tasks.insert(id.to_string(), t.clone());
        Ok(t)
    }

    fn tasks_of(&mut self, job: &Job) -> Result<Vec<Task>> {
        let mut out = Vec::with_capacity(job.tasks.len());
        for id in &job.tasks {
            if let Some(t) = self.task(id)? {
                out.push(t);
            }
        }
        Ok(out)
    }

    fn worker(&mut self, id: &str) -> Result<WorkerRecord> {
        Ok(self
            .store
            .get(CF_WORKERS, id.as_bytes())?
            .unwrap_or_default())
    }

    fn lock_worker(&mut self, id: &str) -> Result<WorkerRecord> {
        // Every transition holds the store's lock.
        self.worker(id)
    }

    fn taken(&mut self, kind: IdKind, ids: &[String]) -> Result<HashSet<String>> {
        let cf = self.store.cf(match kind {
            IdKind::Job => CF_JOBS,
            IdKind::Batch => CF_BATCHES,
        })?;
        let mut taken = HashSet::new();
        for id in ids {
            if self.store.db.get_pinned_cf(cf, id.as_bytes())?.is_some() {
                taken.insert(id.clone());
            }
        }
        Ok(taken)
    }

    fn active_job(&mut self, source: &str, profile: &str) -> Result<Option<String>> {
        self.store.active_job(source, profile)
    }

    fn next_token(&mut self) -> Result<u64> {
        let cf = self.store.cf(CF_META)?;
        let token = self.store.next_token()?;
        self.batch.put_cf(cf, TOKEN_KEY, (token + 1).to_be_bytes());
        Ok(token)
    }

    fn token_floor(&mut self, floor: u64) -> Result<()> {
        let cf = self.store.cf(CF_META)?;
        let next = self.store.next_token()?;
        self.batch
            .put_cf(cf, TOKEN_KEY, next.max(floor).to_be_bytes());
        Ok(())
    }

    fn insert_job(&mut self, job: &Job) -> Result<()> {
        self.put_job(job)
    }

    fn put_job(&mut self, job: &Job) -> Result<()> {
        self.put(CF_JOBS, job.id.as_bytes(), job)?;
        let cf = self.store.cf(CF_ACTIVE)?;
        if job.state.is_final() {
            self.batch.delete_cf(cf, active::key(job));
        } else {
            self.batch.put_cf(cf, active::key(job), []);
        }
        Ok(())
    }

    fn put_task(&mut self, job: &Job, task: &Task) -> Result<()> {
        if let Some(old) = self.task(&task.id)? {
            if let Some((cf, key, _)) = Self::index_entry(job, &old) {
                self.batch.delete_cf(self.store.cf(cf)?, key);
            }
        }
        if let Some((cf, key, value)) = Self::index_entry(job, task) {
            self.batch.put_cf(self.store.cf(cf)?, key, value);
        }
        self.put(CF_TASKS, task.id.as_bytes(), task)?;
        self.tasks.insert(task.id.clone(), Some(task.clone()));
        Ok(())
    }

    fn put_worker(&mut self, id: &str, rec: &WorkerRecord) -> Result<()> {
        self.put(CF_WORKERS, id.as_bytes(), rec)
    }

    fn put_batch(&mut self, batch: &Batch) -> Result<()> {
        self.put(CF_BATCHES, batch.id.as_bytes(), batch)
    }

    fn put_outgoing(&mut self, o: &Outgoing) -> Result<()> {
        self.put(CF_OUTBOX, o.id.as_bytes(), o)
    }

    fn outgoing(&mut self, id: &str) -> Result<Option<Outgoing>> {
        self.store.get(CF_OUTBOX, id.as_bytes())
    }

    fn delete_outgoing(&mut self, id: &str) -> Result<()> {
        self.batch
            .delete_cf(self.store.cf(CF_OUTBOX)?, id.as_bytes());
        Ok(())
    }

    fn due_outgoing(&mut self, now: u64, limit: usize) -> Result<Vec<Outgoing>> {
        let mut due = Vec::new();
        for item in self
            .store
            .db
            .iterator_cf(self.store.cf(CF_OUTBOX)?, IteratorMode::Start)
        {
            let (_, v) = item?;
            let o: Outgoing = decode(&v)?;
            if o.next_ms <= now {
                due.push(o);
            }
        }
        due.sort_by_key(|o| o.next_ms);
        due.truncate(limit);
        Ok(due)
    }

    fn queue(&mut self, op: QueueOp) {
        self.queue.push(op);
    }

    fn pick(
        &mut self,
        _worker: &str,
        now: u64,
        max_cost: Option<f64>,
        exclude: &HashSet<String>,
    ) -> Result<Option<String>> {
        // Under the store's lock the scheduler's pick is always current.
        Ok(self
            .sched
            .pick(now, max_cost)
            .map(|q| q.task.clone())
            .filter(|t| !exclude.contains(t)))
    }

    fn expired(&mut self, now: u64, limit: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self
            .store
            .db
            .iterator_cf(self.store.cf(CF_LEASES)?, IteratorMode::Start)
        {
            let (k, _) = item?;
            let at = u64::from_be_bytes(
                k.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| TranscodeError::BadData("lease key".into()))?,
            );
            if at > now || out.len() >= limit {
                break;
            }
            out.push(String::from_utf8_lossy(&k[8..]).into_owned());
        }
        Ok(out)
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        if !batch.is_empty() {
            self.store.write(batch)?;
        }
        for op in std::mem::take(&mut self.queue) {
            match op {
                QueueOp::Insert(q) => self.sched.insert(q),
                QueueOp::Remove(q) => {
                    self.sched.remove(&q.task);
                }
                QueueOp::Lease(q) => {
                    self.sched.lease(&q.task);
                }
            }
        }
        Ok(())
    }
}

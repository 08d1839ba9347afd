//! Leases and the transitions they drive: leasing, heartbeats, results, failures,
//! reaping, stage advancement and worker quarantine.

use std::collections::HashMap;

use rocksdb::{IteratorMode, WriteBatch};

use super::*;
use crate::model::{Part, TASK_PROTOCOL};

impl Store {
    // ---- Leases ----

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
        let mut g = self.guard();
        let rec = self.worker(worker)?;
        if let Some(until) = rec.quarantined_until_ms.filter(|u| *u > now) {
            return Err(TranscodeError::WorkerQuarantined(worker.to_string(), until));
        }
        let Some(task_id) = g.pick(now, max_cost).map(|q| q.task.clone()) else {
            return Ok(None);
        };
        let mut task = self
            .task(&task_id)?
            .ok_or_else(|| TranscodeError::BadData(format!("ready task {task_id} missing")))?;
        let mut job = self
            .job(&task.job_id)?
            .ok_or_else(|| TranscodeError::BadData(format!("job of {task_id} missing")))?;
        let token = self.next_token()?;
        let lease = Lease {
            token,
            worker: worker.to_string(),
            expires_ms: now + self.lease_ms,
        };
        let mut tx = Tx::default();
        self.unqueue(&mut tx, &job, &task, true)?;
        tx.b.put_cf(
            self.cf(CF_LEASES)?,
            lease_key(lease.expires_ms, &task.id),
            token.to_be_bytes(),
        );
        tx.b.put_cf(self.cf(CF_META)?, TOKEN_KEY, (token + 1).to_be_bytes());
        task.state = TaskState::Leased;
        task.attempts += 1;
        task.lease = Some(lease);
        job.attempts += 1;
        if job.state == JobState::Queued {
            job.state = JobState::Running;
        }
        job.updated_ms = now;
        self.put(&mut tx.b, CF_TASKS, task.id.as_bytes(), &task)?;
        self.put(&mut tx.b, CF_JOBS, job.id.as_bytes(), &job)?;
        self.commit(&mut g, tx)?;
        let mut parts: Vec<Part> = job.parts.into_values().collect();
        parts.extend(crate::work::legacy_parts(&job.outputs));
        Ok(Some(Assignment {
            protocol: TASK_PROTOCOL,
            parts,
            outputs: job.outputs,
            source: job.source,
            profile: job.profile,
            token,
            lease_ms: self.lease_ms,
            task,
        }))
    }

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

    /// The task if `token` is its current, unexpired lease.
    fn fenced(&self, task_id: &str, token: u64, now: u64) -> Result<(Task, Lease)> {
        let task = self.task(task_id)?.ok_or(TranscodeError::NotFound)?;
        match (&task.state, &task.lease) {
            (TaskState::Leased, Some(l)) if l.token == token && l.expires_ms > now => {
                let l = l.clone();
                Ok((task, l))
            }
            (TaskState::Cancelled, _) => {
                Err(TranscodeError::Fenced("the job was cancelled".into()))
            }
            _ => Err(TranscodeError::Fenced(format!(
                "token {token} does not hold task {task_id}"
            ))),
        }
    }

    /// Extends a lease and records progress.
    pub fn heartbeat(&self, task_id: &str, token: u64, progress: f64, now: u64) -> Result<u64> {
        let _g = self.guard();
        let (mut task, lease) = self.fenced(task_id, token, now)?;
        let mut b = WriteBatch::default();
        let expires = now + self.lease_ms;
        b.delete_cf(self.cf(CF_LEASES)?, lease_key(lease.expires_ms, &task.id));
        b.put_cf(
            self.cf(CF_LEASES)?,
            lease_key(expires, &task.id),
            token.to_be_bytes(),
        );
        task.lease = Some(Lease {
            expires_ms: expires,
            ..lease
        });
        task.progress = progress.clamp(0.0, 1.0);
        self.put(&mut b, CF_TASKS, task.id.as_bytes(), &task)?;
        if let Some(mut job) = self.job(&task.job_id)? {
            let touched = HashMap::from([(task.id.clone(), task.clone())]);
            self.refresh_progress(&mut job, &touched)?;
            job.updated_ms = now;
            self.put(&mut b, CF_JOBS, job.id.as_bytes(), &job)?;
        }
        self.write(b)?;
        Ok(expires)
    }

    /// Records a task's success; advances or finishes its job.
    pub fn complete(&self, task_id: &str, token: u64, result: TaskResult, now: u64) -> Result<Job> {
        let mut g = self.guard();
        let (mut task, lease) = self.fenced(task_id, token, now)?;
        let mut job = self.job(&task.job_id)?.ok_or(TranscodeError::NotFound)?;
        let planned = job.tasks.len() + result.stages.iter().map(Vec::len).sum::<usize>();
        if planned > MAX_TASKS_PER_JOB {
            let failure = Failure {
                class: FailureClass::BadInput,
                message: format!(
                    "the plan has {planned} tasks, above the limit of {MAX_TASKS_PER_JOB} per job"
                ),
            };
            return self.fail_locked(&mut g, task, lease, failure, now);
        }
        let mut tx = Tx::default();
        tx.b.delete_cf(self.cf(CF_LEASES)?, lease_key(lease.expires_ms, &task.id));
        task.state = TaskState::Succeeded;
        task.progress = 1.0;
        task.lease = None;
        self.put(&mut tx.b, CF_TASKS, task.id.as_bytes(), &task)?;
        self.worker_outcome(&mut tx.b, &lease.worker, true, now)?;
        job.outputs.extend(result.outputs);
        for part in result.parts {
            job.parts.insert(part.of.key(), part);
        }
        if result.playable && job.playable_ms.is_none() {
            job.playable_ms = Some(now);
            // `advance` below makes it `Succeeded` instead if this was its last task.
            job.state = JobState::Playable;
        }
        // Every task this transition touches, written once at the end, so the whole
        // transition is one atomic batch.
        let mut touched: HashMap<String, Task> = HashMap::new();
        touched.insert(task.id.clone(), task);
        for stage in result.stages {
            let stage_no = job.stages;
            job.stages += 1;
            for spec in stage {
                let t = Task {
                    id: format!("{}.{}", job.id, job.tasks.len()),
                    job_id: job.id.clone(),
                    stage: stage_no,
                    spec,
                    state: TaskState::Pending,
                    attempts: 0,
                    ready_ms: now,
                    lease: None,
                    progress: 0.0,
                    last_error: None,
                    failed_on: Vec::new(),
                };
                job.tasks.push(t.id.clone());
                touched.insert(t.id.clone(), t);
            }
        }
        self.advance(&mut tx, &mut job, &mut touched, now)?;
        for t in touched.values() {
            self.put(&mut tx.b, CF_TASKS, t.id.as_bytes(), t)?;
        }
        self.commit(&mut g, tx)?;
        Ok(job)
    }

    /// The tasks of `job` in `stage`, seen through `touched`.
    fn stage_tasks(
        &self,
        job: &Job,
        stage: u32,
        touched: &HashMap<String, Task>,
    ) -> Result<Vec<Task>> {
        let mut out = Vec::new();
        for id in &job.tasks {
            let t = match touched.get(id) {
                Some(t) => Some(t.clone()),
                None => self.task(id)?,
            };
            if let Some(t) = t.filter(|t| t.stage == stage) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Starts the next stage when the current one is done, or finishes the job.
    fn advance(
        &self,
        tx: &mut Tx,
        job: &mut Job,
        touched: &mut HashMap<String, Task>,
        now: u64,
    ) -> Result<()> {
        loop {
            let current = self.stage_tasks(job, job.current_stage, touched)?;
            if !current.iter().all(|t| t.state == TaskState::Succeeded) {
                break;
            }
            if job.current_stage + 1 >= job.stages {
                // Nothing else runs: the tasks in `touched` are final, so finishing here
                // cannot miss a queued one.
                return self.finish_job(tx, job, JobState::Succeeded, None, now);
            }
            job.current_stage += 1;
            let next = self.stage_tasks(job, job.current_stage, touched)?;
            if next.is_empty() {
                continue;
            }
            for mut t in next {
                t.state = TaskState::Queued;
                t.ready_ms = now;
                self.enqueue(tx, job, &t)?;
                touched.insert(t.id.clone(), t);
            }
            break;
        }
        self.refresh_progress(job, touched)?;
        job.updated_ms = now;
        self.put(&mut tx.b, CF_JOBS, job.id.as_bytes(), job)
    }

    /// Records a task's failure: retried with backoff, or the job fails.
    pub fn fail(&self, task_id: &str, token: u64, failure: Failure, now: u64) -> Result<Job> {
        let mut g = self.guard();
        let (task, lease) = self.fenced(task_id, token, now)?;
        self.fail_locked(&mut g, task, lease, failure, now)
    }

    fn fail_locked(
        &self,
        sched: &mut Scheduler,
        mut task: Task,
        lease: Lease,
        failure: Failure,
        now: u64,
    ) -> Result<Job> {
        let mut job = self.job(&task.job_id)?.ok_or(TranscodeError::NotFound)?;
        let mut tx = Tx::default();
        tx.b.delete_cf(self.cf(CF_LEASES)?, lease_key(lease.expires_ms, &task.id));
        if !failure.class.is_the_inputs() {
            self.charge_failure(&mut tx.b, &mut task, &lease.worker, now)?;
        }
        task.lease = None;
        task.last_error = Some(failure.clone());
        let retry = !failure.class.is_the_inputs() && task.attempts < MAX_TASK_ATTEMPTS;
        if retry {
            task.state = TaskState::Queued;
            task.ready_ms = now + backoff_ms(task.attempts);
            task.progress = 0.0;
            self.enqueue(&mut tx, &job, &task)?;
            self.put(&mut tx.b, CF_TASKS, task.id.as_bytes(), &task)?;
            job.updated_ms = now;
            self.put(&mut tx.b, CF_JOBS, job.id.as_bytes(), &job)?;
        } else {
            let mut failure = failure;
            if !failure.class.is_the_inputs() {
                failure.message = format!("{} (after {} attempts)", failure.message, task.attempts);
            }
            self.finish_job(&mut tx, &mut job, JobState::Failed, Some(failure), now)?;
            // After `finish_job`, which cancels the job's other tasks from their stored
            // copies: the later write of this task wins within the batch.
            task.state = TaskState::Failed;
            self.put(&mut tx.b, CF_TASKS, task.id.as_bytes(), &task)?;
        }
        self.commit(sched, tx)?;
        Ok(job)
    }

    /// Expires every lease past its time, as a failure of its holder. Returns the jobs
    /// of the expired tasks, as they are afterwards.
    pub fn reap(&self, now: u64) -> Result<Vec<Job>> {
        let mut g = self.guard();
        let mut expired = Vec::new();
        let mut jobs = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_LEASES)?, IteratorMode::Start)
        {
            let (k, _) = item?;
            let at = u64::from_be_bytes(
                k[..8]
                    .try_into()
                    .map_err(|_| TranscodeError::BadData("lease key".into()))?,
            );
            if at > now {
                break;
            }
            expired.push(String::from_utf8_lossy(&k[8..]).into_owned());
        }
        for tid in &expired {
            let Some(task) = self.task(tid)? else {
                continue;
            };
            let Some(lease) = task.lease.clone() else {
                continue;
            };
            tracing::warn!(task = %tid, worker = %lease.worker, "lease expired");
            let failure = Failure {
                class: FailureClass::LeaseExpired,
                message: format!("lease of worker {} expired", lease.worker),
            };
            jobs.push(self.fail_locked(&mut g, task, lease, failure, now)?);
        }
        Ok(jobs)
    }

    /// Counts `task`'s failure against `worker` — unless the failure is the task's own:
    /// it failed on another worker before (the failure reproduces, so the first
    /// worker's charge for it is taken back too), or on this worker before (counted
    /// once: a lone worker retrying a task that cannot succeed is not quarantined for
    /// it).
    fn charge_failure(
        &self,
        b: &mut WriteBatch,
        task: &mut Task,
        worker: &str,
        now: u64,
    ) -> Result<()> {
        if task.failed_on.iter().any(|w| w == worker) {
            return Ok(());
        }
        match task.failed_on.as_slice() {
            [] => self.worker_outcome(b, worker, false, now)?,
            [first] => {
                let mut rec = self.worker(first)?;
                rec.consecutive_failures = rec.consecutive_failures.saturating_sub(1);
                rec.failed = rec.failed.saturating_sub(1);
                self.put(b, CF_WORKERS, first.as_bytes(), &rec)?;
            }
            _ => {}
        }
        task.failed_on.push(worker.to_string());
        Ok(())
    }

    fn worker_outcome(&self, b: &mut WriteBatch, worker: &str, ok: bool, now: u64) -> Result<()> {
        let mut rec = self.worker(worker)?;
        if ok {
            rec.consecutive_failures = 0;
            rec.succeeded += 1;
        } else {
            rec.consecutive_failures += 1;
            rec.failed += 1;
            if rec.consecutive_failures >= WORKER_FAILURE_LIMIT {
                tracing::warn!(
                    worker,
                    failures = rec.consecutive_failures,
                    "quarantining worker"
                );
                rec.quarantined_until_ms = Some(now + WORKER_QUARANTINE_MS);
                rec.consecutive_failures = 0;
            }
        }
        self.put(b, CF_WORKERS, worker.as_bytes(), &rec)
    }

    /// Recomputes a job's progress from its tasks (`touched` overrides stored copies).
    fn refresh_progress(&self, job: &mut Job, touched: &HashMap<String, Task>) -> Result<()> {
        let (mut plan, mut done, mut total) = (0.0, 0.0, 0.0);
        for id in &job.tasks {
            let t = match touched.get(id) {
                Some(f) => f.clone(),
                None => match self.task(id)? {
                    Some(t) => t,
                    None => continue,
                },
            };
            if t.stage == 0 {
                plan = t.progress;
            } else {
                total += t.spec.weight.max(0.0);
                done += t.spec.weight.max(0.0) * t.progress;
            }
        }
        let rest = if total > 0.0 { done / total } else { 0.0 };
        let p = PLAN_SHARE * plan + (1.0 - PLAN_SHARE) * rest;
        job.progress = job.progress.max(p.clamp(0.0, 1.0));
        Ok(())
    }
}

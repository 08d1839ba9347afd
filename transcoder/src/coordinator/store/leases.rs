//! Leases and the transitions they drive: leasing, heartbeats, results, failures,
//! reaping, stage advancement and worker quarantine — each a function of one [`Txn`].

use std::collections::{HashMap, HashSet};

use super::transitions::{enqueue, finish_job, new_task, queued};
use super::txn::{QueueOp, Txn};
use super::*;
use crate::model::{Part, TASK_PROTOCOL};

/// Candidates [`lease`] tries before it answers "nothing to do": a pick can lose its
/// task to another coordinator between choosing it and locking its job (PostgreSQL),
/// and each loss excludes that task and picks again.
const MAX_PICKS: usize = 16;

/// Leases the next runnable task in the scheduler's order to `worker`, if any (of
/// weight at most `max_cost` when given).
pub(super) fn lease(
    tx: &mut dyn Txn,
    worker: &str,
    max_cost: Option<f64>,
    now: u64,
    lease_ms: u64,
) -> Result<Option<Assignment>> {
    let mut exclude = HashSet::new();
    for _ in 0..MAX_PICKS {
        // The worker's record after the pick: a backend may read it with the pick, and
        // a quarantined worker's pick is rolled back.
        let picked = tx.pick(worker, now, max_cost, &exclude)?;
        let rec = tx.worker(worker)?;
        if let Some(until) = rec.quarantined_until_ms.filter(|u| *u > now) {
            return Err(TranscodeError::WorkerQuarantined(worker.to_string(), until));
        }
        let Some(task_id) = picked else {
            return Ok(None);
        };
        let job_id = tx
            .task(&task_id)?
            .map(|t| t.job_id)
            .ok_or_else(|| TranscodeError::BadData(format!("ready task {task_id} missing")))?;
        // The job's row is locked only to move it from queued to running (its first
        // lease): a running job's other leases change only their own task (locked by
        // the pick), so the many tasks of one job lease in parallel.
        let mut job = tx
            .peek_job(&job_id)?
            .ok_or_else(|| TranscodeError::BadData(format!("job of {task_id} missing")))?;
        if job.state == JobState::Queued {
            job = tx.job(&job_id)?.ok_or(TranscodeError::NotFound)?;
        }
        // Read again under the locks: it may have been leased or cancelled since.
        match tx.lock_task(&task_id)? {
            Some(task)
                if task.state == TaskState::Queued
                    && task.ready_ms <= now
                    && !job.state.is_final() =>
            {
                return grant(tx, job, task, worker, now, lease_ms).map(Some);
            }
            _ => {
                exclude.insert(task_id);
            }
        }
    }
    Ok(None)
}

/// Leases `task` of `job` to `worker`.
fn grant(
    tx: &mut dyn Txn,
    mut job: Job,
    mut task: Task,
    worker: &str,
    now: u64,
    lease_ms: u64,
) -> Result<Assignment> {
    let token = tx.next_token()?;
    tx.queue(QueueOp::Lease(queued(&job, &task)));
    task.state = TaskState::Leased;
    task.attempts += 1;
    task.lease = Some(Lease {
        token,
        worker: worker.to_string(),
        expires_ms: now + lease_ms,
    });
    tx.put_task(&job, &task)?;
    if job.state == JobState::Queued {
        job.state = JobState::Running;
        job.updated_ms = now;
        tx.put_job(&job)?;
    }
    let mut parts: Vec<Part> = job.parts.into_values().collect();
    parts.extend(crate::work::legacy_parts(&job.outputs));
    Ok(Assignment {
        protocol: TASK_PROTOCOL,
        parts,
        outputs: job.outputs,
        source: job.source,
        profile: job.profile,
        token,
        lease_ms,
        task,
    })
}

/// The task, its job (locked) and its lease, if `token` is its current, unexpired lease.
fn fenced(tx: &mut dyn Txn, task_id: &str, token: u64, now: u64) -> Result<(Job, Task, Lease)> {
    let job = tx.job_of(task_id)?.ok_or(TranscodeError::NotFound)?;
    // Read again under the job's lock, and lock it against a concurrent heartbeat.
    let task = tx.lock_task(task_id)?.ok_or(TranscodeError::NotFound)?;
    let lease = current_lease(&task, task_id, token, now)?;
    Ok((job, task, lease))
}

/// `task`'s lease, if `token` is its current, unexpired one.
fn current_lease(task: &Task, task_id: &str, token: u64, now: u64) -> Result<Lease> {
    match (&task.state, &task.lease) {
        (TaskState::Leased, Some(l)) if l.token == token && l.expires_ms > now => Ok(l.clone()),
        (TaskState::Cancelled, _) => Err(TranscodeError::Fenced("the job was cancelled".into())),
        _ => Err(TranscodeError::Fenced(format!(
            "token {token} does not hold task {task_id}"
        ))),
    }
}

/// Extends a lease and records progress. Returns the new expiry. Only the task changes
/// (under its own lock): the job's progress is computed from its tasks when read
/// ([`super::Store::job`]) and when a task ends, so a job's many heartbeats never queue
/// on its row.
pub(super) fn heartbeat(
    tx: &mut dyn Txn,
    task_id: &str,
    token: u64,
    progress: f64,
    now: u64,
    lease_ms: u64,
) -> Result<u64> {
    let mut task = tx.lock_task(task_id)?.ok_or(TranscodeError::NotFound)?;
    let lease = current_lease(&task, task_id, token, now)?;
    let expires = now + lease_ms;
    task.lease = Some(Lease {
        expires_ms: expires,
        ..lease
    });
    task.progress = progress.clamp(0.0, 1.0);
    tx.extend_lease(&task)?;
    Ok(expires)
}

/// Records a task's success; advances or finishes its job.
pub(super) fn complete(
    tx: &mut dyn Txn,
    task_id: &str,
    token: u64,
    result: TaskResult,
    now: u64,
) -> Result<Job> {
    let (mut job, mut task, lease) = fenced(tx, task_id, token, now)?;
    let planned = job.tasks.len() + result.stages.iter().map(Vec::len).sum::<usize>();
    if planned > MAX_TASKS_PER_JOB {
        let failure = Failure {
            class: FailureClass::BadInput,
            message: format!(
                "the plan has {planned} tasks, above the limit of {MAX_TASKS_PER_JOB} per job"
            ),
        };
        return fail_locked(tx, job, task, lease, failure, now);
    }
    task.state = TaskState::Succeeded;
    task.progress = 1.0;
    task.lease = None;
    worker_outcome(tx, &lease.worker, true, now)?;
    job.outputs.extend(result.outputs);
    for part in result.parts {
        job.parts.insert(part.of.key(), part);
    }
    let became_playable = result.playable && job.playable_ms.is_none();
    if became_playable {
        job.playable_ms = Some(now);
        // `advance` below makes it `Succeeded` instead if this was its last task.
        job.state = JobState::Playable;
    }
    // Every task this transition touches, written once at the end.
    let mut touched: HashMap<String, Task> = HashMap::new();
    touched.insert(task.id.clone(), task);
    for stage in result.stages {
        let stage_no = job.stages;
        job.stages += 1;
        for spec in stage {
            let id = format!("{}.{}", job.id, job.tasks.len());
            let t = new_task(id, &job.id, stage_no, spec, TaskState::Pending, now);
            job.tasks.push(t.id.clone());
            touched.insert(t.id.clone(), t);
        }
    }
    advance(tx, &mut job, &mut touched, now)?;
    // A job done in this same step says only that it finished (`succeeded` implies
    // playable).
    if became_playable && job.state == JobState::Playable {
        super::transitions::notify(tx, &job, crate::coordinator::webhook::Event::Playable, now)?;
    }
    for t in touched.values() {
        if t.state == TaskState::Queued {
            enqueue(tx, &job, t)?;
        } else {
            tx.put_task(&job, t)?;
        }
    }
    Ok(job)
}

/// The stored tasks of `job`, by id (read once per transition: `touched` holds what
/// the transition changes).
type Stored = HashMap<String, Task>;

/// Every task of `job`, seen through `touched` (which overrides `stored` copies and
/// holds tasks not written yet).
fn view(job: &Job, stored: &Stored, touched: &HashMap<String, Task>) -> Vec<Task> {
    job.tasks
        .iter()
        .filter_map(|id| touched.get(id).or_else(|| stored.get(id)).cloned())
        .collect()
}

/// The tasks of `job` in `stage`, seen through `touched`.
fn stage_tasks(
    job: &Job,
    stage: u32,
    stored: &Stored,
    touched: &HashMap<String, Task>,
) -> Vec<Task> {
    let mut tasks = view(job, stored, touched);
    tasks.retain(|t| t.stage == stage);
    tasks
}

/// Starts the next stage when the current one is done (its tasks become `Queued` in
/// `touched`, for the caller to queue), or finishes the job; writes the job.
fn advance(
    tx: &mut dyn Txn,
    job: &mut Job,
    touched: &mut HashMap<String, Task>,
    now: u64,
) -> Result<()> {
    let stored: Stored = tx
        .tasks_of(job)?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    loop {
        let current = stage_tasks(job, job.current_stage, &stored, touched);
        if !current.iter().all(|t| t.state == TaskState::Succeeded) {
            break;
        }
        if job.current_stage + 1 >= job.stages {
            // Nothing else runs: the tasks in `touched` are final, so finishing here
            // cannot miss a queued one.
            return finish_job(tx, job, JobState::Succeeded, None, now);
        }
        job.current_stage += 1;
        let next = stage_tasks(job, job.current_stage, &stored, touched);
        if next.is_empty() {
            continue;
        }
        for mut t in next {
            t.state = TaskState::Queued;
            t.ready_ms = now;
            touched.insert(t.id.clone(), t);
        }
        break;
    }
    summarise(job, &view(job, &stored, touched));
    job.updated_ms = now;
    tx.put_job(job)
}

/// Records a task's failure: retried with backoff, or the job fails.
pub(super) fn fail(
    tx: &mut dyn Txn,
    task_id: &str,
    token: u64,
    failure: Failure,
    now: u64,
) -> Result<Job> {
    let (job, task, lease) = fenced(tx, task_id, token, now)?;
    fail_locked(tx, job, task, lease, failure, now)
}

fn fail_locked(
    tx: &mut dyn Txn,
    mut job: Job,
    mut task: Task,
    lease: Lease,
    failure: Failure,
    now: u64,
) -> Result<Job> {
    if !failure.class.is_the_inputs() {
        charge_failure(tx, &mut task, &lease.worker, now)?;
    }
    task.lease = None;
    task.last_error = Some(failure.clone());
    let retry = !failure.class.is_the_inputs() && task.attempts < MAX_TASK_ATTEMPTS;
    if retry {
        task.state = TaskState::Queued;
        task.ready_ms = now + backoff_ms(task.attempts);
        task.progress = 0.0;
        enqueue(tx, &job, &task)?;
        job.updated_ms = now;
        tx.put_job(&job)?;
    } else {
        let mut failure = failure;
        if !failure.class.is_the_inputs() {
            failure.message = format!("{} (after {} attempts)", failure.message, task.attempts);
        }
        // The task first, as failed: `finish_job` then cancels only the job's others.
        task.state = TaskState::Failed;
        tx.put_task(&job, &task)?;
        finish_job(tx, &mut job, JobState::Failed, Some(failure), now)?;
    }
    Ok(job)
}

/// Expires `task_id`'s lease as a failure of its holder if it is still leased and
/// past its time at `now` (another coordinator may have reaped it, or a heartbeat
/// extended it, since it was listed). Returns its job afterwards.
pub(super) fn reap_one(tx: &mut dyn Txn, task_id: &str, now: u64) -> Result<Option<Job>> {
    let Some(job) = tx.job_of(task_id)? else {
        return Ok(None);
    };
    let Some(task) = tx.lock_task(task_id)? else {
        return Ok(None);
    };
    let lease = match (&task.state, &task.lease) {
        (TaskState::Leased, Some(l)) if l.expires_ms <= now => l.clone(),
        _ => return Ok(None),
    };
    tracing::warn!(task = %task_id, worker = %lease.worker, "lease expired");
    let failure = Failure {
        class: FailureClass::LeaseExpired,
        message: format!("lease of worker {} expired", lease.worker),
    };
    fail_locked(tx, job, task, lease, failure, now).map(Some)
}

/// Counts `task`'s failure against `worker` — unless the failure is the task's own:
/// it failed on another worker before (the failure reproduces, so the first
/// worker's charge for it is taken back too), or on this worker before (counted
/// once: a lone worker retrying a task that cannot succeed is not quarantined for
/// it).
fn charge_failure(tx: &mut dyn Txn, task: &mut Task, worker: &str, now: u64) -> Result<()> {
    if task.failed_on.iter().any(|w| w == worker) {
        return Ok(());
    }
    match task.failed_on.as_slice() {
        [] => worker_outcome(tx, worker, false, now)?,
        [first] => {
            let mut rec = tx.lock_worker(first)?;
            rec.consecutive_failures = rec.consecutive_failures.saturating_sub(1);
            rec.failed = rec.failed.saturating_sub(1);
            tx.put_worker(first, &rec)?;
        }
        _ => {}
    }
    task.failed_on.push(worker.to_string());
    Ok(())
}

fn worker_outcome(tx: &mut dyn Txn, worker: &str, ok: bool, now: u64) -> Result<()> {
    if ok {
        // A success only clears a failure streak: nothing to write (nor lock) without one.
        if tx.worker(worker)?.consecutive_failures == 0 {
            return Ok(());
        }
        let mut rec = tx.lock_worker(worker)?;
        rec.consecutive_failures = 0;
        return tx.put_worker(worker, &rec);
    }
    let mut rec = tx.lock_worker(worker)?;
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
    tx.put_worker(worker, &rec)
}

/// Sets `job`'s progress (never lower than it was) and attempts from its `tasks`.
pub(super) fn summarise(job: &mut Job, tasks: &[Task]) {
    let (mut plan, mut done, mut total) = (0.0, 0.0, 0.0);
    for t in tasks {
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
    job.attempts = tasks.iter().map(|t| t.attempts).sum();
}

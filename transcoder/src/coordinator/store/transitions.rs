//! Submission, batches and cancellation, and the queue helpers every transition uses:
//! written once over [`Txn`], so both stores behave the same.

use std::collections::BTreeSet;

use super::sched::Queued;
use super::txn::{IdKind, QueueOp, Txn};
use super::*;
use crate::coordinator::webhook::{Event, Outgoing};

/// The scheduling flow of a job: its batch, or the job on its own.
pub(super) fn flow_of(job: &Job) -> String {
    match &job.batch {
        Some(b) => format!("b{b}"),
        None => format!("j{}", job.id),
    }
}

/// How the scheduler sees `task` of `job`.
pub(super) fn queued(job: &Job, task: &Task) -> Queued {
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

/// A task of `job_id` never run yet, in `state`, ready at `now`.
pub(super) fn new_task(
    id: String,
    job_id: &str,
    stage: u32,
    spec: TaskSpec,
    state: TaskState,
    now: u64,
) -> Task {
    Task {
        id,
        job_id: job_id.to_string(),
        stage,
        spec,
        state,
        attempts: 0,
        ready_ms: now,
        lease: None,
        progress: 0.0,
        last_error: None,
        failed_on: Vec::new(),
    }
}

/// Queues `task` of `job` (already `Queued`, with its ready time) and writes it.
pub(super) fn enqueue(tx: &mut dyn Txn, job: &Job, task: &Task) -> Result<()> {
    tx.put_task(job, task)?;
    tx.queue(QueueOp::Insert(queued(job, task)));
    Ok(())
}

/// `n` distinct ids for `now` that no record of `kind` has, in ascending order. Random
/// suffixes of 32 bits collide often enough in a batch of 100,000 (about once in
/// two such batches) that distinctness is checked, never assumed.
fn fresh_ids(tx: &mut dyn Txn, kind: IdKind, n: usize, now: u64) -> Result<Vec<String>> {
    let mut ids = BTreeSet::new();
    while ids.len() < n {
        let mut candidates = Vec::with_capacity(n - ids.len());
        while candidates.len() < n - ids.len() {
            let id = new_id(now);
            if !ids.contains(&id) && !candidates.contains(&id) {
                candidates.push(id);
            }
        }
        let taken = tx.taken(kind, &candidates)?;
        ids.extend(candidates.into_iter().filter(|c| !taken.contains(c)));
    }
    Ok(ids.into_iter().collect())
}

pub(super) fn submit(tx: &mut dyn Txn, req: &SubmitJob, tenant: &str, now: u64) -> Result<Job> {
    let id = fresh_ids(tx, IdKind::Job, 1, now)?.remove(0);
    create_job(tx, id, req, tenant, None, now)
}

fn create_job(
    tx: &mut dyn Txn,
    id: String,
    req: &SubmitJob,
    tenant: &str,
    batch: Option<&str>,
    now: u64,
) -> Result<Job> {
    let priority = req.priority.unwrap_or(DEFAULT_PRIORITY).min(MAX_PRIORITY);
    let plan = TaskSpec {
        work: crate::model::Work::Plan,
        weight: 1.0,
        urgent: false,
    };
    let task = new_task(format!("{id}.0"), &id, 0, plan, TaskState::Queued, now);
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
    tx.insert_job(&job)?;
    enqueue(tx, &job, &task)?;
    Ok(job)
}

/// What a batch submission asks for.
pub(super) struct BatchRequest<'a> {
    pub prefix: &'a str,
    pub profile: &'a str,
    pub sources: &'a [String],
    pub priority: u8,
    pub tenant: &'a str,
}

pub(super) fn submit_batch(
    tx: &mut dyn Txn,
    req: &BatchRequest<'_>,
    now: u64,
) -> Result<(Batch, Vec<Skipped>)> {
    let mut skipped = Vec::new();
    let mut fresh = Vec::with_capacity(req.sources.len());
    for source in req.sources {
        match tx.active_job(source, req.profile)? {
            Some(job) => skipped.push(Skipped {
                source: source.clone(),
                reason: format!("job {job} is transcoding it with profile {}", req.profile),
            }),
            None => fresh.push(source.clone()),
        }
    }
    let id = fresh_ids(tx, IdKind::Batch, 1, now)?.remove(0);
    // Ascending ids in source order: the batch's flow runs its jobs in that order.
    let ids = fresh_ids(tx, IdKind::Job, fresh.len(), now)?;
    let mut jobs = Vec::with_capacity(fresh.len());
    for (source, job_id) in fresh.into_iter().zip(ids) {
        let job_req = SubmitJob {
            source,
            profile: req.profile.to_string(),
            priority: Some(req.priority),
            webhook: None,
        };
        jobs.push(create_job(tx, job_id, &job_req, req.tenant, Some(&id), now)?.id);
    }
    let batch = Batch {
        id,
        prefix: req.prefix.to_string(),
        profile: req.profile.to_string(),
        jobs,
        created_ms: now,
    };
    tx.put_batch(&batch)?;
    Ok((batch, skipped))
}

pub(super) fn cancel(tx: &mut dyn Txn, job_id: &str, now: u64) -> Result<Job> {
    let mut job = tx.job(job_id)?.ok_or(TranscodeError::NotFound)?;
    if job.state.is_final() {
        return Err(TranscodeError::Conflict(
            format!("{:?}", job.state).to_lowercase(),
        ));
    }
    let failure = Failure {
        class: FailureClass::Cancelled,
        message: "cancelled by user".into(),
    };
    finish_job(tx, &mut job, JobState::Cancelled, Some(failure), now)?;
    Ok(job)
}

/// Moves a job to a final state, cancelling its unfinished tasks, and writes it.
pub(super) fn finish_job(
    tx: &mut dyn Txn,
    job: &mut Job,
    state: JobState,
    error: Option<Failure>,
    now: u64,
) -> Result<()> {
    let tasks = tx.tasks_of(job)?;
    super::leases::summarise(job, &tasks);
    // A succeeded job has no unfinished task to cancel.
    let unfinished = if state == JobState::Succeeded {
        Vec::new()
    } else {
        tasks
    };
    for mut t in unfinished {
        match t.state {
            TaskState::Queued => tx.queue(QueueOp::Remove(queued(job, &t))),
            TaskState::Leased => {}
            _ => continue,
        }
        t.state = TaskState::Cancelled;
        t.lease = None;
        tx.put_task(job, &t)?;
    }
    job.state = state;
    job.error = error;
    job.updated_ms = now;
    if state == JobState::Succeeded {
        job.progress = 1.0;
    }
    notify(tx, job, Event::Finished, now)?;
    tx.put_job(job)
}

/// Queues `event`'s webhook for `job` in the outbox, if the job asked for webhooks: in
/// the transition's own transaction, so a delivery is never lost nor made up.
pub(super) fn notify(tx: &mut dyn Txn, job: &Job, event: Event, now: u64) -> Result<()> {
    match Outgoing::of(job, event, now) {
        Some(o) => tx.put_outgoing(&o),
        None => Ok(()),
    }
}

//! The coordinator's job store, driven with explicit clocks: leases, fencing, stages,
//! retries, bad inputs, quarantine, priorities, cancellation and restarts.

use kura_transcoder::coordinator::store::*;
use kura_transcoder::model::*;
#[macro_use]
mod stores;
use kura_transcoder::work::PartOf;
use kura_transcoder::TranscodeError;
use stores::Fixture;

mod specs;
use specs::spec;

fn submit(s: &Store, source: &str, priority: u8, now: u64) -> Job {
    let req = SubmitJob {
        source: source.into(),
        profile: "default".into(),
        priority: Some(priority),
        webhook: None,
    };
    s.submit(&req, "tenant", now).unwrap()
}

fn failure(class: FailureClass) -> Failure {
    Failure {
        class,
        message: format!("{class:?}"),
    }
}

fn a_job_runs_its_stages_in_order_and_succeeds(fx: &Fixture) {
    let s = fx.open();
    let job = submit(&s, "media/a.mp4", 5, 1000);
    assert_eq!(job.state, JobState::Queued);
    let plan = s.lease("w1", 1000).unwrap().unwrap();
    assert_eq!(plan.task.spec.work.kind(), "plan");
    assert_eq!(s.job(&job.id).unwrap().unwrap().state, JobState::Running);
    s.heartbeat(&plan.task.id, plan.token, 0.5, 1100).unwrap();
    let result = TaskResult {
        outputs: [("duration".to_string(), serde_json::json!(8.3))].into(),
        stages: vec![
            vec![
                spec("encode", 1.0),
                spec("encode", 1.0),
                spec("encode", 2.0),
            ],
            vec![spec("finalize", 0.1)],
        ],
        ..Default::default()
    };
    let after_plan = s.complete(&plan.task.id, plan.token, result, 1200).unwrap();
    assert_eq!(after_plan.stages, 3);
    assert_eq!(after_plan.current_stage, 1);
    // The three encodes run in parallel; finalize waits for all of them.
    let a = s.lease("w1", 1300).unwrap().unwrap();
    let b = s.lease("w2", 1300).unwrap().unwrap();
    let c = s.lease("w3", 1300).unwrap().unwrap();
    assert!(s.lease("w4", 1300).unwrap().is_none(), "finalize must wait");
    for t in [&a, &b, &c] {
        assert_eq!(t.task.spec.work.kind(), "encode");
    }
    s.heartbeat(&c.task.id, c.token, 0.5, 1400).unwrap();
    let p = s.job(&job.id).unwrap().unwrap().progress;
    assert!(p > 0.2 && p < 0.3, "progress {p}");
    // What the encodes leave goes to finalize, not to the job's public outputs.
    let part = |first_segment| TaskResult {
        parts: vec![Part {
            of: PartOf::Video {
                first_segment,
                pass: 234,
            },
            segments: vec![],
            quality: vec![],
        }],
        ..Default::default()
    };
    s.complete(&a.task.id, a.token, part(0), 1500).unwrap();
    s.complete(&b.task.id, b.token, part(5), 1500).unwrap();
    assert!(s.lease("w4", 1500).unwrap().is_none());
    s.complete(&c.task.id, c.token, TaskResult::default(), 1600)
        .unwrap();
    let fin = s.lease("w4", 1600).unwrap().unwrap();
    assert_eq!(fin.task.spec.work.kind(), "finalize");
    assert_eq!(fin.protocol, TASK_PROTOCOL);
    let keys: Vec<String> = fin.parts.iter().map(|p| p.of.key()).collect();
    assert_eq!(keys, ["v.000000.234", "v.000005.234"]);
    let done = s
        .complete(&fin.task.id, fin.token, TaskResult::default(), 1700)
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.progress, 1.0);
    assert_eq!(done.outputs["duration"], serde_json::json!(8.3));
    assert_eq!(done.attempts, 5);
    assert_eq!(done.parts.len(), 2);
    let public = serde_json::to_value(done.public()).unwrap();
    assert!(public.get("parts").is_none(), "{public}");
}

fn a_stale_worker_is_fenced_after_its_lease_expires(fx: &Fixture) {
    let s = fx.open();
    submit(&s, "media/a.mp4", 5, 0);
    let first = s.lease("slow", 0).unwrap().unwrap();
    // No heartbeat: the lease runs out and the reaper requeues the task.
    assert_eq!(s.reap(LEASE_MS + 1).unwrap().len(), 1);
    let t = LEASE_MS + 1 + MAX_BACKOFF_MS;
    let second = s.lease("fast", t).unwrap().unwrap();
    assert_eq!(second.task.id, first.task.id);
    assert!(second.token > first.token);
    // The slow worker comes back: every call with its old token is refused.
    let hb = s.heartbeat(&first.task.id, first.token, 0.9, t + 1);
    assert!(matches!(hb, Err(TranscodeError::Fenced(_))), "{hb:?}");
    let done = s.complete(&first.task.id, first.token, TaskResult::default(), t + 1);
    assert!(matches!(done, Err(TranscodeError::Fenced(_))));
    let failed = s.fail(
        &first.task.id,
        first.token,
        failure(FailureClass::Transient),
        t + 1,
    );
    assert!(matches!(failed, Err(TranscodeError::Fenced(_))));
    // The current holder finishes normally.
    let job = s
        .complete(&second.task.id, second.token, TaskResult::default(), t + 2)
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    // Even an unexpired but superseded token is refused, and a lease past its expiry is
    // refused before the reaper has run.
    let j2 = submit(&s, "media/b.mp4", 5, t + 3);
    let l = s.lease("w", t + 3).unwrap().unwrap();
    assert_eq!(l.task.job_id, j2.id);
    let late = s.heartbeat(&l.task.id, l.token, 0.1, t + 3 + LEASE_MS + 1);
    assert!(matches!(late, Err(TranscodeError::Fenced(_))));
}

fn a_heartbeat_moves_the_lease_and_only_its_holder_may_beat(fx: &Fixture) {
    let s = fx.open();
    submit(&s, "media/a.mp4", 5, 0);
    let l = s.lease("w", 0).unwrap().unwrap();
    let expires = s.heartbeat(&l.task.id, l.token, 0.4, LEASE_MS - 1).unwrap();
    assert_eq!(expires, 2 * LEASE_MS - 1);
    let task = s.task(&l.task.id).unwrap().unwrap();
    assert_eq!(task.lease.as_ref().unwrap().expires_ms, expires);
    assert_eq!(task.progress, 0.4);
    // Past the first expiry the lease holds: the reaper leaves it, the holder beats on.
    assert!(s.reap(LEASE_MS + 1).unwrap().is_empty());
    s.heartbeat(&l.task.id, l.token, 0.6, LEASE_MS + 2).unwrap();
    // Another token is refused and changes nothing.
    let other = s.heartbeat(&l.task.id, l.token + 1, 0.9, LEASE_MS + 3);
    assert!(matches!(other, Err(TranscodeError::Fenced(_))));
    let task = s.task(&l.task.id).unwrap().unwrap();
    assert_eq!(task.lease.as_ref().unwrap().expires_ms, 2 * LEASE_MS + 2);
    assert_eq!(task.progress, 0.6);
    // Once it has run out, even its holder's beat is refused (before any reaper).
    let late = s.heartbeat(&l.task.id, l.token, 0.7, 2 * LEASE_MS + 2);
    assert!(matches!(late, Err(TranscodeError::Fenced(_))));
}

fn transient_failures_retry_with_backoff_then_fail_the_job(fx: &Fixture) {
    let s = fx.open();
    let job = submit(&s, "media/a.mp4", 5, 0);
    let mut now = 0;
    for attempt in 1..=MAX_TASK_ATTEMPTS {
        // Different workers, so none of them gets quarantined.
        let l = s.lease(&format!("w{attempt}"), now).unwrap().unwrap();
        assert_eq!(l.task.attempts, attempt);
        let j = s
            .fail(&l.task.id, l.token, failure(FailureClass::Transient), now)
            .unwrap();
        if attempt < MAX_TASK_ATTEMPTS {
            assert_eq!(j.state, JobState::Running);
            // Not runnable before its backoff.
            assert!(s.lease("other", now + 1).unwrap().is_none());
            now += MAX_BACKOFF_MS;
        } else {
            assert_eq!(j.state, JobState::Failed);
            let e = j.error.unwrap();
            assert_eq!(e.class, FailureClass::Transient);
            assert!(e.message.contains("after 5 attempts"), "{}", e.message);
        }
    }
    assert_eq!(s.job(&job.id).unwrap().unwrap().attempts, MAX_TASK_ATTEMPTS);
}

fn bad_input_fails_at_once_cancels_siblings_and_does_not_count_against_the_worker(fx: &Fixture) {
    let s = fx.open();
    let job = submit(&s, "media/broken.flv", 5, 0);
    let plan = s.lease("w", 0).unwrap().unwrap();
    let stages = vec![vec![spec("encode", 1.0), spec("encode", 1.0)]];
    s.complete(
        &plan.task.id,
        plan.token,
        TaskResult {
            stages,
            ..Default::default()
        },
        1,
    )
    .unwrap();
    let a = s.lease("w", 2).unwrap().unwrap();
    let b = s.lease("w", 2).unwrap().unwrap();
    let j = s
        .fail(&a.task.id, a.token, failure(FailureClass::BadInput), 3)
        .unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.error.unwrap().class, FailureClass::BadInput);
    assert!(
        s.lease("w", MAX_BACKOFF_MS * 2).unwrap().is_none(),
        "never retried"
    );
    assert!(matches!(
        s.heartbeat(&b.task.id, b.token, 0.5, 4),
        Err(TranscodeError::Fenced(_))
    ));
    let tasks: Vec<Task> = s
        .job(&job.id)
        .unwrap()
        .unwrap()
        .tasks
        .iter()
        .map(|t| s.task(t).unwrap().unwrap())
        .collect();
    assert_eq!(tasks[1].state, TaskState::Failed);
    assert_eq!(tasks[2].state, TaskState::Cancelled);
    // Three bad inputs in a row do not quarantine the worker that found them.
    for i in 0..3 {
        submit(&s, &format!("media/bad{i}"), 5, 10);
        let l = s.lease("w", 10).unwrap().unwrap();
        s.fail(&l.task.id, l.token, failure(FailureClass::BadInput), 10)
            .unwrap();
    }
    assert!(s.worker("w").unwrap().quarantined_until_ms.is_none());
}

fn a_worker_that_keeps_failing_is_quarantined_not_fed(fx: &Fixture) {
    let s = fx.open();
    for i in 0..5 {
        submit(&s, &format!("media/{i}"), 5, 0);
    }
    for _ in 0..WORKER_FAILURE_LIMIT {
        let l = s.lease("flaky", 0).unwrap().unwrap();
        s.fail(&l.task.id, l.token, failure(FailureClass::Internal), 0)
            .unwrap();
    }
    let refused = s.lease("flaky", 1);
    assert!(
        matches!(refused, Err(TranscodeError::WorkerQuarantined(..))),
        "{refused:?}"
    );
    // Others keep getting work, and the quarantine ends.
    assert!(s.lease("healthy", 1).unwrap().is_some());
    assert!(s.lease("flaky", WORKER_QUARANTINE_MS + 1).is_ok());
}

fn failures_other_workers_reproduce_do_not_count_against_a_worker(fx: &Fixture) {
    let s = fx.open();
    // Three poisoned tasks, each failing on A and then on B: the task's fault.
    for i in 0..3 {
        let job = submit(&s, &format!("media/poison{i}"), 5, 0);
        for w in ["A", "B"] {
            let l = s.lease(w, 10_000_000).unwrap().unwrap();
            assert_eq!(l.task.job_id, job.id);
            s.fail(&l.task.id, l.token, failure(FailureClass::Internal), 0)
                .unwrap();
        }
        s.cancel(&job.id, 0).unwrap();
    }
    for w in ["A", "B"] {
        let rec = s.worker(w).unwrap();
        assert_eq!(
            (rec.consecutive_failures, rec.quarantined_until_ms),
            (0, None),
            "{w}"
        );
    }
    // A lone worker retrying one task that cannot succeed is charged once for it.
    let fx = fx.fresh();
    let s = fx.open();
    let job = submit(&s, "media/poison", 5, 0);
    for attempt in 1..=MAX_TASK_ATTEMPTS {
        let l = s.lease("lone", 10_000_000).unwrap().unwrap();
        let j = s
            .fail(&l.task.id, l.token, failure(FailureClass::Internal), 0)
            .unwrap();
        assert_eq!(j.state == JobState::Failed, attempt == MAX_TASK_ATTEMPTS);
    }
    assert_eq!(s.job(&job.id).unwrap().unwrap().state, JobState::Failed);
    assert_eq!(s.worker("lone").unwrap().consecutive_failures, 1);
    assert!(s.lease("lone", 10_000_000).is_ok(), "not quarantined");
}

fn higher_priority_overtakes_and_equal_priority_is_fifo(fx: &Fixture) {
    let s = fx.open();
    let backfill: Vec<Job> = (0..3)
        .map(|i| submit(&s, &format!("media/old{i}"), BATCH_PRIORITY, 10 + i))
        .collect();
    let fresh = submit(&s, "media/new", DEFAULT_PRIORITY, 20);
    let order: Vec<String> = (0..4)
        .map(|_| s.lease("w", 30).unwrap().unwrap().task.job_id)
        .collect();
    assert_eq!(order[0], fresh.id);
    assert_eq!(
        &order[1..],
        &backfill.iter().map(|j| j.id.clone()).collect::<Vec<_>>()[..]
    );
}

fn cancelling_fences_running_tasks_and_is_final(fx: &Fixture) {
    let s = fx.open();
    let job = submit(&s, "media/a.mp4", 5, 0);
    let l = s.lease("w", 0).unwrap().unwrap();
    let j = s.cancel(&job.id, 1).unwrap();
    assert_eq!(j.state, JobState::Cancelled);
    assert!(matches!(
        s.heartbeat(&l.task.id, l.token, 0.2, 2),
        Err(TranscodeError::Fenced(_))
    ));
    assert!(matches!(
        s.complete(&l.task.id, l.token, TaskResult::default(), 2),
        Err(TranscodeError::Fenced(_))
    ));
    assert!(matches!(
        s.cancel(&job.id, 3),
        Err(TranscodeError::Conflict(_))
    ));
    assert_eq!(
        s.reap(LEASE_MS * 10).unwrap().len(),
        0,
        "no lease left behind"
    );
}

fn every_job_survives_a_restart_in_the_state_it_was(fx: &Fixture) {
    let (queued, running, leased);
    {
        let s = fx.open();
        running = submit(&s, "media/run", 5, 0);
        leased = s.lease("w", 0).unwrap().unwrap();
        queued = submit(&s, "media/queued", 5, 1);
    }
    let s = fx.open();
    assert_eq!(
        s.job(&running.id).unwrap().unwrap().state,
        JobState::Running
    );
    assert_eq!(s.job(&queued.id).unwrap().unwrap().state, JobState::Queued);
    // The lease is still honoured...
    s.heartbeat(&leased.task.id, leased.token, 0.3, 10).unwrap();
    // ...tokens keep growing across the restart...
    let next = s.lease("w2", 10).unwrap().unwrap();
    assert!(next.token > leased.token);
    assert_eq!(next.task.job_id, queued.id);
    // ...and an expired one is reaped and requeued.
    assert_eq!(s.reap(10 + LEASE_MS + 1).unwrap().len(), 2);
    let jobs = s.list_jobs(None, None, 10).unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].id, queued.id, "newest first");
    assert_eq!(
        s.list_jobs(Some(JobState::Running), None, 10)
            .unwrap()
            .len(),
        2
    );
}

fn a_job_plays_once_a_task_publishes_and_stays_playable_until_done(fx: &Fixture) {
    let s = fx.open();
    let job = submit(&s, "media/film.mp4", 5, 0);
    let plan = s.lease("w", 0).unwrap().unwrap();
    let result = TaskResult {
        stages: vec![
            vec![spec("encode", 30.0)],
            vec![spec("finalize", 0.5)],
            vec![spec("encode", 120.0)],
            vec![spec("finalize", 0.5)],
        ],
        ..Default::default()
    };
    s.complete(&plan.task.id, plan.token, result, 1).unwrap();
    let low = s.lease("w", 2).unwrap().unwrap();
    s.complete(&low.task.id, low.token, TaskResult::default(), 3)
        .unwrap();
    let publish = s.lease("w", 4).unwrap().unwrap();
    assert_eq!(publish.task.spec.work.kind(), "finalize");
    let published = TaskResult {
        playable: true,
        ..Default::default()
    };
    let j = s
        .complete(&publish.task.id, publish.token, published, 5)
        .unwrap();
    assert_eq!((j.state, j.playable_ms), (JobState::Playable, Some(5)));
    assert!(!j.state.is_final());
    let listed = s.list_jobs(Some(JobState::Playable), None, 10).unwrap();
    assert_eq!(listed.len(), 1);
    // Leasing the rest keeps it playable; the last finalize makes it succeeded.
    let high = s.lease("w", 6).unwrap().unwrap();
    assert_eq!(s.job(&job.id).unwrap().unwrap().state, JobState::Playable);
    s.complete(&high.task.id, high.token, TaskResult::default(), 7)
        .unwrap();
    let fin = s.lease("w", 8).unwrap().unwrap();
    let done = s
        .complete(&fin.task.id, fin.token, TaskResult::default(), 9)
        .unwrap();
    assert_eq!(
        (done.state, done.playable_ms),
        (JobState::Succeeded, Some(5))
    );
}

fn a_batch_skips_sources_that_a_job_under_way_transcodes(fx: &Fixture) {
    let sources: Vec<String> = ["media/lib/a.mp4", "media/lib/b.mp4"]
        .map(String::from)
        .into();
    let batch = |s: &Store, now| {
        s.submit_batch("media/lib/", "default", &sources, 2, "t", now)
            .unwrap()
    };
    let s = fx.open();
    let (first, none) = batch(&s, 1000);
    assert_eq!((first.jobs.len(), none.len()), (2, 0));
    // A second batch while the first runs: nothing to submit, and it says why.
    let (second, skipped) = batch(&s, 1001);
    assert!(second.jobs.is_empty());
    assert_eq!(skipped.len(), 2);
    assert!(skipped[0].reason.contains(&first.jobs[0]), "{skipped:?}");
    // Another profile is another transcode; a single submission is always a job.
    let (preview, _) = s
        .submit_batch("media/lib/", "preview", &sources, 2, "t", 1002)
        .unwrap();
    assert_eq!(preview.jobs.len(), 2);
    assert_eq!(
        s.active_job("media/lib/a.mp4", "default").unwrap(),
        Some(first.jobs[0].clone())
    );
    // The index survives a restart; a job that ends leaves it.
    drop(s);
    let s = fx.open();
    s.cancel(&first.jobs[0], 1003).unwrap();
    assert_eq!(s.active_job("media/lib/a.mp4", "default").unwrap(), None);
    let (third, skipped) = batch(&s, 1004);
    assert_eq!(third.jobs.len(), 1, "a.mp4 again: its job ended");
    assert_eq!(skipped.len(), 1, "b.mp4's job still runs");
}

fn a_plan_above_the_task_limit_fails_its_job_as_bad_input(fx: &Fixture) {
    let s = fx.open();
    let job = submit(&s, "media/huge.mp4", 5, 1000);
    let plan = s.lease("w1", 1000).unwrap().unwrap();
    let result = TaskResult {
        stages: vec![vec![spec("encode", 1.0); MAX_TASKS_PER_JOB]],
        ..Default::default()
    };
    let failed = s.complete(&plan.task.id, plan.token, result, 1100).unwrap();
    assert_eq!(failed.state, JobState::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.class, FailureClass::BadInput);
    assert!(error.message.contains("10000"), "{}", error.message);
    assert_eq!(s.job(&job.id).unwrap().unwrap().tasks.len(), 1);
    assert!(s.lease("w1", 1200).unwrap().is_none());
}

/// Webhooks wait in the outbox, written with the transition that makes them: claimed by
/// one sender at a time, back once the claim lapses, kept across a restart, gone once
/// done; a job done in one step says only that it finished.
fn webhooks_wait_in_the_outbox_until_delivered(fx: &Fixture) {
    use kura_transcoder::coordinator::webhook::Event;
    const CLAIM: u64 = 1_000;
    let s = fx.open();
    let req = SubmitJob {
        source: "media/hooked.mp4".into(),
        profile: "default".into(),
        priority: Some(5),
        webhook: Some("https://hooks.example/kura".into()),
    };
    let job = s.submit(&req, "t", 0).unwrap();
    let plan = s.lease("w", 0).unwrap().unwrap();
    let result = TaskResult {
        stages: vec![vec![spec("finalize", 0.1)], vec![spec("encode", 1.0)]],
        ..Default::default()
    };
    s.complete(&plan.task.id, plan.token, result, 1).unwrap();
    assert!(
        s.claim_webhooks(10, CLAIM, 10).unwrap().is_empty(),
        "nothing happened yet"
    );
    let fin = s.lease("w", 2).unwrap().unwrap();
    let published = TaskResult {
        playable: true,
        ..Default::default()
    };
    s.complete(&fin.task.id, fin.token, published, 3).unwrap();
    let claimed = s.claim_webhooks(10, CLAIM, 10).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event, Event::Playable);
    assert_eq!(claimed[0].job.state, JobState::Playable);
    // Claimed: no other sender gets it until the claim lapses.
    assert!(s.claim_webhooks(11, CLAIM, 10).unwrap().is_empty());
    let again = s.claim_webhooks(10 + CLAIM, CLAIM, 10).unwrap();
    assert_eq!(again.len(), 1, "a lapsed claim is sent again");
    s.webhook_retry(&again[0].id, 1, 5_000).unwrap();
    // The last task ends the job: its `job.finished` joins the outbox.
    let enc = s.lease("w", 4).unwrap().unwrap();
    s.complete(&enc.task.id, enc.token, TaskResult::default(), 5)
        .unwrap();
    assert_eq!(s.job(&job.id).unwrap().unwrap().state, JobState::Succeeded);
    drop(s);
    let s = fx.open();
    let due = s.claim_webhooks(5_000, CLAIM, 10).unwrap();
    let events: Vec<(Event, u32)> = due.iter().map(|o| (o.event, o.attempts)).collect();
    // Earliest due first: the retry of `job.playable` was put off to 5 s.
    assert_eq!(events, [(Event::Finished, 0), (Event::Playable, 1)]);
    assert_eq!(due[0].job.state, JobState::Succeeded);
    for o in &due {
        s.webhook_done(&o.id).unwrap();
    }
    assert!(s.claim_webhooks(1_000_000, CLAIM, 10).unwrap().is_empty());
    // Done in one step: only `job.finished`; no webhook asked: nothing.
    let quick = s.submit(&req, "t", 6).unwrap();
    let plan = s.lease("w", 6).unwrap().unwrap();
    let one_step = TaskResult {
        playable: true,
        ..Default::default()
    };
    s.complete(&plan.task.id, plan.token, one_step, 7).unwrap();
    submit(&s, "media/quiet.mp4", 5, 8);
    let quiet = s.lease("w", 8).unwrap().unwrap();
    s.complete(&quiet.task.id, quiet.token, TaskResult::default(), 9)
        .unwrap();
    let due = s.claim_webhooks(1_000_000, CLAIM, 10).unwrap();
    let events: Vec<(&str, Event)> = due.iter().map(|o| (o.job.id.as_str(), o.event)).collect();
    assert_eq!(events, [(quick.id.as_str(), Event::Finished)]);
}

both!(
    a_job_runs_its_stages_in_order_and_succeeds,
    a_stale_worker_is_fenced_after_its_lease_expires,
    a_heartbeat_moves_the_lease_and_only_its_holder_may_beat,
    transient_failures_retry_with_backoff_then_fail_the_job,
    bad_input_fails_at_once_cancels_siblings_and_does_not_count_against_the_worker,
    a_worker_that_keeps_failing_is_quarantined_not_fed,
    failures_other_workers_reproduce_do_not_count_against_a_worker,
    higher_priority_overtakes_and_equal_priority_is_fifo,
    cancelling_fences_running_tasks_and_is_final,
    every_job_survives_a_restart_in_the_state_it_was,
    a_job_plays_once_a_task_publishes_and_stays_playable_until_done,
    a_batch_skips_sources_that_a_job_under_way_transcodes,
    a_plan_above_the_task_limit_fails_its_job_as_bad_input,
    webhooks_wait_in_the_outbox_until_delivered,
);

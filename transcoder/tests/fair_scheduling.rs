//! The lease order through the real store (RocksDB): jobs share the workers, tenants
//! share before their jobs do, batches count as one flow, finishing stages go first,
//! and the order is rebuilt from disk after a restart. The policy itself is unit-tested
//! in `coordinator::store::sched`.

use kura_transcoder::coordinator::store::*;
use kura_transcoder::model::*;
#[macro_use]
mod stores;
use stores::Fixture;

mod specs;
use specs::spec;

fn submit(s: &Store, source: &str, tenant: &str, now: u64) -> Job {
    let req = SubmitJob {
        source: source.into(),
        profile: "default".into(),
        priority: None,
        webhook: None,
    };
    s.submit(&req, tenant, now).unwrap()
}

/// Leases `job`'s plan (which must be next) and completes it with `encodes` encode
/// tasks of `weight` each, then a finalize stage.
fn plan(s: &Store, job: &Job, encodes: usize, weight: f64, now: u64) {
    let a = s.lease("planner", now).unwrap().unwrap();
    assert_eq!(
        (a.task.job_id.as_str(), a.task.spec.work.kind()),
        (job.id.as_str(), "plan")
    );
    let result = TaskResult {
        stages: vec![
            (0..encodes).map(|_| spec("encode", weight)).collect(),
            vec![spec("finalize", 0.5)],
        ],
        ..Default::default()
    };
    s.complete(&a.task.id, a.token, result, now).unwrap();
}

/// The job of each of the next `n` leases.
fn next_jobs(s: &Store, n: usize, now: u64) -> Vec<Assignment> {
    (0..n)
        .map(|_| s.lease("w", now).unwrap().unwrap())
        .collect()
}

fn a_short_upload_runs_between_two_ranges_of_a_long_video(fx: &Fixture) {
    let s = fx.open();
    let long = submit(&s, "media/film.mp4", "t", 1);
    plan(&s, &long, 20, 30.0 * 4.0, 2);
    let first = next_jobs(&s, 2, 3);
    assert!(first.iter().all(|a| a.task.job_id == long.id));
    // A 17 s clip arrives while the film's first two ranges run.
    let clip = submit(&s, "media/clip.mp4", "t", 4);
    plan(&s, &clip, 1, 17.0 * 3.0, 5);
    let order = next_jobs(&s, 2, 6);
    assert_eq!(
        order[0].task.job_id, clip.id,
        "the clip's encode goes first"
    );
    assert_eq!(order[1].task.job_id, long.id);
    // Its encode done, the clip's playlists go before the film's next range.
    s.complete(&order[0].task.id, order[0].token, TaskResult::default(), 7)
        .unwrap();
    let fin = s.lease("w", 8).unwrap().unwrap();
    assert_eq!(
        (fin.task.job_id.as_str(), fin.task.spec.work.kind()),
        (clip.id.as_str(), "finalize")
    );
    let done = s
        .complete(&fin.task.id, fin.token, TaskResult::default(), 9)
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
}

fn a_tenants_backfill_does_not_starve_another_tenants_uploads(fx: &Fixture) {
    let s = fx.open();
    let sources: Vec<String> = (0..50).map(|i| format!("media/old/{i}.mp4")).collect();
    let batch = s
        .submit_batch(
            "media/old/",
            "default",
            &sources,
            DEFAULT_PRIORITY,
            "archive",
            1,
        )
        .unwrap()
        .0;
    // Plain jobs of the same tenant: with the batch, three flows of one tenant.
    let own: Vec<Job> = (0..2)
        .map(|i| submit(&s, &format!("media/own{i}.mp4"), "archive", 2))
        .collect();
    let other: Vec<Job> = (0..3)
        .map(|i| submit(&s, &format!("media/up{i}.mp4"), "uploader", 3))
        .collect();
    let order: Vec<String> = next_jobs(&s, 10, 4)
        .into_iter()
        .map(|a| a.task.job_id)
        .collect();
    let from_other = order
        .iter()
        .filter(|j| other.iter().any(|o| &o.id == *j))
        .count();
    assert_eq!(
        from_other, 3,
        "every upload of the second tenant is among the first 10: {order:?}"
    );
    assert!(
        order[..6].contains(&batch.jobs[0]),
        "the batch runs from its first job"
    );
    assert!(own.iter().all(|j| order.contains(&j.id)));
    // The batch's jobs go in submission order.
    let batch_order: Vec<&String> = order.iter().filter(|j| batch.jobs.contains(j)).collect();
    assert_eq!(
        batch_order,
        batch
            .jobs
            .iter()
            .take(batch_order.len())
            .collect::<Vec<_>>()
    );
}

fn the_lease_order_is_rebuilt_after_a_restart(fx: &Fixture) {
    let (long, clip);
    {
        let s = fx.open();
        long = submit(&s, "media/film.mp4", "t", 1);
        plan(&s, &long, 4, 120.0, 2);
        clip = submit(&s, "media/clip.mp4", "t", 3);
        // A failed encode of the film is queued again with a backoff.
        let a = s.lease("w", 4).unwrap().unwrap();
        assert_eq!(a.task.job_id, long.id);
        let f = Failure {
            class: FailureClass::Transient,
            message: "boom".into(),
        };
        s.fail(&a.task.id, a.token, f, 5).unwrap();
        assert_eq!(s.queue_depth().unwrap(), 5);
    }
    let s = fx.open();
    assert_eq!(
        s.queue_depth().unwrap(),
        5,
        "4 encodes (one backed off) and a plan"
    );
    let mut seen = Vec::new();
    while let Some(a) = s.lease("w", 10).unwrap() {
        seen.push((a.task.job_id, a.task.spec.work.kind().to_string()));
    }
    // Backed off until 5 + 1 s: not leased at t = 10 ms.
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.contains(&(clip.id.clone(), "plan".into())));
    let retried = s.lease("w", 5 + BASE_BACKOFF_MS).unwrap().unwrap();
    assert_eq!(retried.task.job_id, long.id);
    assert_eq!(s.queue_depth().unwrap(), 0);
}

both!(
    a_short_upload_runs_between_two_ranges_of_a_long_video,
    a_tenants_backfill_does_not_starve_another_tenants_uploads,
    the_lease_order_is_rebuilt_after_a_restart,
);

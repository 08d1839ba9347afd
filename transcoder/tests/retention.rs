//! Retention of the job store (real RocksDB, explicit clocks): jobs that ended before the
//! cutoff go with their tasks, batches go whole once every job in them has, and nothing
//! unfinished or recent is touched.

mod common;

use kura_transcoder::coordinator::store::*;
use kura_transcoder::model::*;
#[macro_use]
mod stores;
use stores::Fixture;

const DAY: u64 = 24 * 3600 * 1000;

fn submit(s: &Store, source: &str, now: u64) -> Job {
    let req = SubmitJob {
        source: source.into(),
        profile: "default".into(),
        priority: None,
        webhook: None,
    };
    s.submit(&req, "tenant", now).unwrap()
}

/// Leases the job's plan task and fails it as bad input: the job ends `failed` at `now`.
fn fail_now(s: &Store, now: u64) -> Job {
    let a = s.lease("w", now).unwrap().expect("a task to lease");
    let failure = Failure {
        class: FailureClass::BadInput,
        message: "not a video".into(),
    };
    s.fail(&a.task.id, a.token, failure, now).unwrap()
}

fn jobs_that_ended_before_the_cutoff_are_deleted_with_their_tasks(fx: &Fixture) {
    let s = fx.open();
    let t0 = 1_700_000_000_000;
    // Old and ended (failed, cancelled), old but still queued, recent and ended.
    let failed = submit(&s, "media/a.mp4", t0);
    assert_eq!(fail_now(&s, t0 + 1).state, JobState::Failed);
    let cancelled = submit(&s, "media/b.mp4", t0 + 2);
    s.cancel(&cancelled.id, t0 + 3).unwrap();
    let waiting = submit(&s, "media/c.mp4", t0 + 4);
    let batch = s
        .submit_batch(
            "media/d/",
            "default",
            &["media/d/1.mp4".into(), "media/d/2.mp4".into()],
            2,
            "tenant",
            t0 + 5,
        )
        .unwrap()
        .0;
    let recent = submit(&s, "media/e.mp4", t0 + 40 * DAY);
    s.cancel(&recent.id, t0 + 40 * DAY).unwrap();

    // Cutoff 30 days after t0: the batch still has unfinished jobs, so it stays whole.
    let cutoff = t0 + 30 * DAY;
    let purged = s.purge(cutoff).unwrap();
    assert_eq!(
        purged,
        Purged {
            jobs: 2,
            batches: 0
        }
    );
    for gone in [&failed, &cancelled] {
        assert!(s.job(&gone.id).unwrap().is_none(), "{}", gone.id);
        for t in &gone.tasks {
            assert!(s.task(t).unwrap().is_none(), "{t}");
        }
    }
    for kept in [&waiting.id, &recent.id, &batch.jobs[0], &batch.jobs[1]] {
        assert!(s.job(kept).unwrap().is_some(), "{kept}");
    }
    assert!(s.batch(&batch.id).unwrap().is_some());
    // The queued job is still leasable: its queue entry was not touched.
    assert_eq!(s.queue_depth().unwrap(), 3);

    // The batch's jobs end; once they ended before a later cutoff, it goes whole.
    for id in &batch.jobs {
        s.cancel(id, t0 + 31 * DAY).unwrap();
    }
    assert_eq!(
        s.purge(t0 + 31 * DAY).unwrap(),
        Purged::default(),
        "not before they ended"
    );
    assert_eq!(
        s.purge(t0 + 62 * DAY).unwrap(),
        Purged {
            jobs: 3,
            batches: 1
        },
        "the batch's two jobs and the recent one"
    );
    assert!(s.batch(&batch.id).unwrap().is_none());
    assert!(
        s.job(&waiting.id).unwrap().is_some(),
        "unfinished jobs stay"
    );
    let listed = s.list_jobs(None, None, 100).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(s.purge(t0 + 62 * DAY).unwrap(), Purged::default());
}

fn a_large_backlog_is_purged_in_bounded_steps(fx: &Fixture) {
    let s = fx.open();
    let t0 = 1_700_000_000_000;
    for i in 0..700 {
        let j = submit(&s, &format!("media/{i}.mp4"), t0 + i);
        s.cancel(&j.id, t0 + i).unwrap();
    }
    assert_eq!(
        s.purge(t0 + DAY).unwrap(),
        Purged {
            jobs: 700,
            batches: 0
        }
    );
    assert!(s.list_jobs(None, None, 10).unwrap().is_empty());
}

/// The coordinator purges by itself: restarted with a tiny retention, its first pass
/// deletes the job that ended, and keeps the one still queued.
#[tokio::test]
async fn a_running_coordinator_deletes_jobs_past_retention() {
    use kura_transcoder::coordinator::{start, CoordinatorConfig};
    const KEY: &str = "retention-api-key-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let config = |retention| CoordinatorConfig {
        job_retention: retention,
        ..common::config(dir.path(), KEY, "retention-cluster-secret-0123456789")
    };
    let http = reqwest::Client::new();
    let submit = |base: String| {
        let http = http.clone();
        async move {
            let job: serde_json::Value = http
                .post(format!("{base}/v1/jobs"))
                .bearer_auth(KEY)
                .json(&serde_json::json!({"source": "media/a.mp4", "profile": "default"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            job["id"].as_str().unwrap().to_string()
        }
    };
    let c = start(config(kura_transcoder::coordinator::DEFAULT_JOB_RETENTION))
        .await
        .unwrap();
    let ended = submit(c.url()).await;
    let r = http
        .delete(format!("{}/v1/jobs/{ended}", c.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let queued = submit(c.url()).await;
    c.shutdown().await.unwrap();
    // The cancel must lie more than the 1 ms retention in the past at the first pass.
    let cancelled_by = kura_cluster::hlc::wall_ms();
    while kura_cluster::hlc::wall_ms() < cancelled_by + 2 {
        std::thread::yield_now();
    }

    let c = start(config(std::time::Duration::from_millis(1)))
        .await
        .unwrap();
    let status = |id: String| {
        let (http, base) = (http.clone(), c.url());
        async move {
            http.get(format!("{base}/v1/jobs/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while status(ended.clone()).await != reqwest::StatusCode::NOT_FOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "the ended job was never purged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status(queued).await, reqwest::StatusCode::OK);
    c.shutdown().await.unwrap();
}

both!(
    jobs_that_ended_before_the_cutoff_are_deleted_with_their_tasks,
    a_large_backlog_is_purged_in_bounded_steps,
);

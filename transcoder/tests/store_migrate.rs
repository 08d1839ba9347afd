//! Moving a queue between the stores (`kura coordinator migrate`): embedded → PostgreSQL
//! → embedded again, with jobs in every state, a lease in flight, a batch, a worker's
//! record and a pending webhook. Everything arrives as it was, the lease is still
//! honoured, the queue still leases in its order, and new tokens never repeat old ones.

use std::collections::BTreeMap;

use kura_transcoder::coordinator::store::migrate::migrate;
use kura_transcoder::coordinator::store::*;
use kura_transcoder::model::*;
mod specs;
#[allow(unused_macros)]
mod stores;
use specs::spec;
use stores::PgServer;

fn submit(s: &Store, source: &str, webhook: Option<&str>, now: u64) -> Job {
    let req = SubmitJob {
        source: source.into(),
        profile: "default".into(),
        priority: Some(5),
        webhook: webhook.map(str::to_string),
    };
    s.submit(&req, "t", now).unwrap()
}

/// Every record of `s` as JSON, by kind and id: what must survive a migration.
fn contents(s: &Store) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let next = s
        .export(&mut |item| {
            use kura_transcoder::coordinator::store::migrate::Exported::*;
            let (key, value) = match item {
                Job(j, tasks) => {
                    for t in tasks {
                        out.insert(format!("task {}", t.id), serde_json::to_value(t).unwrap());
                    }
                    (format!("job {}", j.id), serde_json::to_value(j).unwrap())
                }
                Batch(b) => (format!("batch {}", b.id), serde_json::to_value(b).unwrap()),
                Worker(id, r) => (format!("worker {id}"), serde_json::to_value(r).unwrap()),
                Outgoing(o) => (
                    format!("webhook {}", o.id),
                    serde_json::to_value(o).unwrap(),
                ),
            };
            out.insert(key, value);
            Ok(())
        })
        .unwrap();
    assert!(next > 0);
    out
}

#[test]
fn a_queue_moves_between_the_stores_with_every_state_intact() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = Store::open(&dir.path().join("db")).unwrap();
    // Done, with a webhook left to deliver.
    submit(&rocks, "media/done.mp4", Some("https://hooks.example/k"), 0);
    let plan = rocks.lease("w1", 0).unwrap().unwrap();
    rocks
        .complete(&plan.task.id, plan.token, TaskResult::default(), 1)
        .unwrap();
    // Running: its plan done, one encode leased (in flight), one queued.
    submit(&rocks, "media/running.mp4", None, 2);
    let plan = rocks.lease("w1", 2).unwrap().unwrap();
    let stages = vec![vec![spec("encode", 1.0), spec("encode", 1.0)]];
    let result = TaskResult {
        stages,
        ..Default::default()
    };
    rocks
        .complete(&plan.task.id, plan.token, result, 3)
        .unwrap();
    let held = rocks.lease("w2", 4).unwrap().unwrap();
    // A failure on record, a batch of two queued jobs.
    let failing = rocks.lease("w3", 5).unwrap().unwrap();
    let transient = Failure {
        class: FailureClass::Internal,
        message: "disk".into(),
    };
    rocks
        .fail(&failing.task.id, failing.token, transient, 5)
        .unwrap();
    let sources = ["media/b/1.mp4".to_string(), "media/b/2.mp4".to_string()];
    let (batch, _) = rocks
        .submit_batch("media/b/", "default", &sources, 2, "t", 6)
        .unwrap();
    let before = contents(&rocks);
    assert_eq!(s_count(&before, "webhook"), 1);
    assert_eq!(s_count(&before, "batch"), 1);
    assert_eq!(
        s_count(&before, "worker"),
        1,
        "w3 failed (a success leaves no record)"
    );

    let pg = PgServer::start();
    let postgres = Store::connect(&pg.url()).unwrap();
    let moved = migrate(&rocks, &postgres).unwrap();
    assert_eq!((moved.jobs, moved.batches, moved.webhooks), (4, 1, 1));
    assert_eq!(
        contents(&postgres),
        before,
        "PostgreSQL holds what RocksDB held"
    );
    assert!(
        migrate(&rocks, &postgres).is_err(),
        "a store that holds jobs is not migrated into"
    );
    // Back into a fresh embedded store: still the same.
    let dir2 = tempfile::tempdir().unwrap();
    let rocks2 = Store::open(&dir2.path().join("db")).unwrap();
    migrate(&postgres, &rocks2).unwrap();
    assert_eq!(contents(&rocks2), before, "and back");
    drop(rocks2);
    let rocks2 = Store::open(&dir2.path().join("db")).unwrap();

    for s in [&postgres, &rocks2] {
        // The lease in flight is honoured; new tokens are new.
        s.heartbeat(&held.task.id, held.token, 0.5, 10).unwrap();
        let next = s.lease("w4", 10).unwrap().unwrap();
        assert!(next.token > held.token && next.token > failing.token);
        // The queue kept its order and its backoff: the batch's first job now (the
        // failed encode waits until 1005), the rest once that time has come.
        assert_eq!(next.task.job_id, batch.jobs[0]);
        let mut rest = Vec::new();
        while let Some(a) = s.lease("w4", 10_000).unwrap() {
            rest.push(a.task.job_id);
        }
        rest.sort();
        let mut expected = vec![held.task.job_id.clone(), batch.jobs[1].clone()];
        expected.sort();
        assert_eq!(rest, expected);
    }
}

fn s_count(contents: &BTreeMap<String, serde_json::Value>, kind: &str) -> usize {
    contents
        .keys()
        .filter(|k| k.starts_with(&format!("{kind} ")))
        .count()
}

//! Two coordinators over one PostgreSQL store, driven by many workers at once (real
//! threads, real server, real clock): every job succeeds, every task is leased exactly
//! once and never held by two leases, fencing tokens never repeat, stale tokens are
//! refused, and cancellations racing with leases never leave a task running for a
//! cancelled job. And a coordinator whose lease turns are all taken still renews and
//! completes the leases it holds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kura_transcoder::coordinator::store::*;
use kura_transcoder::model::*;
use kura_transcoder::TranscodeError;
mod specs;
#[allow(unused_macros)]
mod stores;
use specs::result_of;
use stores::PgServer;

const JOBS: usize = 24;
const WORKERS: usize = 8;
/// Encodes each job's plan queues (then one finalize).
const ENCODES: usize = 4;
/// A worker that finds nothing to lease for this long while jobs remain says the
/// store lost a transition (the whole test takes about two seconds).
const STUCK: std::time::Duration = std::time::Duration::from_secs(60);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What the workers saw, to check afterwards.
#[derive(Default)]
struct Seen {
    /// Every token a lease carried, with its task.
    tokens: Vec<(u64, String)>,
    /// Tasks leased per task id.
    leases: HashMap<String, u32>,
    /// Stale tokens refused.
    fenced: u32,
}

/// One worker: leases through its coordinator (alternating between the two), completes
/// each task (a plan appends encodes and a finalize), and tries a stale token first.
fn work(stores: [Arc<Store>; 2], name: String, seen: Arc<Mutex<Seen>>, total: usize) {
    let mut turn = 0;
    let mut last_lease = std::time::Instant::now();
    loop {
        let s = &stores[turn % 2];
        turn += 1;
        let Some(a) = s.lease(&name, now_ms()).unwrap() else {
            let done = s
                .list_jobs(None, None, total + 1)
                .unwrap()
                .iter()
                .filter(|j| j.state.is_final())
                .count();
            if done == total {
                return;
            }
            // Lost updates leave jobs that never finish: fail instead of hanging.
            assert!(
                last_lease.elapsed() < STUCK,
                "{name}: nothing to lease for {STUCK:?} with {done} of {total} jobs ended"
            );
            // Polling, not synchronisation: another worker holds the last tasks.
            std::thread::sleep(std::time::Duration::from_millis(2));
            continue;
        };
        last_lease = std::time::Instant::now();
        {
            let mut seen = seen.lock().unwrap();
            seen.tokens.push((a.token, a.task.id.clone()));
            *seen.leases.entry(a.task.id.clone()).or_default() += 1;
        }
        // A token one below ours is some other lease's (or none): always refused.
        let other = &stores[turn % 2];
        match other.heartbeat(&a.task.id, a.token - 1, 0.5, now_ms()) {
            Err(TranscodeError::Fenced(_)) => seen.lock().unwrap().fenced += 1,
            r => panic!("a stale token was accepted: {r:?}"),
        }
        match other.heartbeat(&a.task.id, a.token, 0.5, now_ms()) {
            Ok(_) => {}
            // Its job was cancelled meanwhile.
            Err(TranscodeError::Fenced(m)) if m.contains("cancelled") => continue,
            Err(e) => panic!("heartbeat {}: {e}", a.task.id),
        }
        let result = result_of(a.task.spec.work.kind(), ENCODES);
        match s.complete(&a.task.id, a.token, result, now_ms()) {
            Ok(_) => {}
            // Its job was cancelled meanwhile.
            Err(TranscodeError::Fenced(m)) if m.contains("cancelled") => {}
            Err(e) => panic!("complete {}: {e}", a.task.id),
        }
    }
}

#[test]
fn two_coordinators_share_one_postgres_store_without_double_leases() {
    let pg = PgServer::start();
    let stores = [
        Arc::new(Store::connect(&pg.url()).unwrap()),
        Arc::new(Store::connect(&pg.url()).unwrap()),
    ];
    let mut jobs = Vec::new();
    for i in 0..JOBS {
        let req = SubmitJob {
            source: format!("media/{i}.mp4"),
            profile: "default".into(),
            priority: Some(5),
            webhook: None,
        };
        jobs.push(stores[i % 2].submit(&req, "t", now_ms()).unwrap());
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let stores = stores.clone();
            let seen = seen.clone();
            std::thread::spawn(move || work(stores, format!("w{w}"), seen, JOBS))
        })
        .collect();
    // Cancel a few jobs while the workers run, through either coordinator.
    let cancelled: HashSet<String> = jobs
        .iter()
        .step_by(6)
        .map(|j| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let _ = stores[1].cancel(&j.id, now_ms());
            j.id.clone()
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let distinct: HashSet<u64> = seen.tokens.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        distinct.len(),
        seen.tokens.len(),
        "a fencing token repeated"
    );
    let twice: Vec<_> = seen.leases.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks leased twice: {twice:?}");
    assert_eq!(seen.fenced as usize, seen.tokens.len());
    for job in &jobs {
        let job = stores[0].job(&job.id).unwrap().unwrap();
        let tasks: Vec<Task> = job
            .tasks
            .iter()
            .map(|t| stores[0].task(t).unwrap().unwrap())
            .collect();
        if job.state == JobState::Cancelled {
            assert!(cancelled.contains(&job.id));
            assert!(
                tasks.iter().all(|t| matches!(
                    t.state,
                    TaskState::Succeeded | TaskState::Cancelled | TaskState::Pending
                )),
                "{:?}",
                tasks.iter().map(|t| t.state).collect::<Vec<_>>()
            );
        } else {
            assert_eq!(job.state, JobState::Succeeded, "{}", job.id);
            assert_eq!(tasks.len(), 2 + ENCODES);
            assert!(tasks.iter().all(|t| t.state == TaskState::Succeeded));
            assert!(tasks.iter().all(|t| seen.leases.get(&t.id) == Some(&1)));
        }
    }
    assert_eq!(stores[0].queue_depth().unwrap(), 0);
}

/// Heartbeats and results never wait for a lease turn: with every turn of a coordinator
/// taken (its leases would wait), a lease already held is renewed and completed
/// through it.
#[test]
fn heartbeats_and_results_do_not_wait_behind_leases() {
    let pg = PgServer::start();
    let s = Arc::new(Store::connect(&pg.url()).unwrap());
    let req = SubmitJob {
        source: "media/a.mp4".into(),
        profile: "default".into(),
        priority: Some(5),
        webhook: None,
    };
    s.submit(&req, "t", now_ms()).unwrap();
    let a = s.lease("w", now_ms()).unwrap().unwrap();
    let turns: Vec<_> = (0..POSTGRES_LEASE_TURNS).map(|_| s.lease_turn()).collect();
    let (done, finished) = std::sync::mpsc::channel();
    let s2 = s.clone();
    std::thread::spawn(move || {
        s2.heartbeat(&a.task.id, a.token, 0.5, now_ms()).unwrap();
        let result = result_of(a.task.spec.work.kind(), ENCODES);
        s2.complete(&a.task.id, a.token, result, now_ms()).unwrap();
        done.send(()).unwrap();
    });
    // A wait far beyond two statements: only a renewal queued behind the turns misses it.
    finished
        .recv_timeout(STUCK)
        .expect("a heartbeat or result waited for a lease turn");
    drop(turns);
}

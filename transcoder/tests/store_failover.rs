//! The PostgreSQL store across a database failover, on loopback: a primary and a
//! streaming standby (real servers, `pg_basebackup`), the primary stopped as a crash
//! would (`pg_ctl stop -m immediate`) in the middle of a run, the standby promoted, the
//! stores reconnecting by themselves (one URL naming both servers,
//! `target_session_attrs=read-write`).
//!
//! With synchronous replication every acknowledged transition survives: every job
//! succeeds and no fencing token repeats. With asynchronous replication a standby that
//! is behind loses acknowledged transitions and would hand out the same sequence values
//! again — the run below shows it — which is why the README's HA setup is synchronous,
//! and why tokens carry the database's timeline as well (they stay unique even then).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kura_transcoder::coordinator::store::*;
use kura_transcoder::model::*;
use kura_transcoder::TranscodeError;
mod specs;
#[allow(unused_macros)]
mod stores;
use specs::result_of;
use stores::PgServer;

/// Short leases: a lease granted just before the failover whose answer was lost is
/// retried soon.
const LEASE_MS: u64 = 2_000;
const JOBS: usize = 12;
const WORKERS: usize = 4;
/// Encodes each job's plan queues (then one finalize).
const ENCODES: usize = 3;
/// Longest the whole run may take (it takes seconds): a stuck run fails, not hangs.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Bits of a token below the timeline (the store's layout).
const SEQ_BITS: u32 = 40;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn open(url: &str) -> Store {
    Store::connect(url).unwrap().with_lease_ms(LEASE_MS)
}

fn submit(s: &Store, i: usize) -> Job {
    let req = SubmitJob {
        source: format!("media/{i}.mp4"),
        profile: "default".into(),
        priority: Some(5),
        webhook: None,
    };
    s.submit(&req, "t", now_ms()).unwrap()
}

/// Whether `e` is the database being away (a failover under way): the caller retries.
fn away(e: &TranscodeError) -> bool {
    matches!(e, TranscodeError::Postgres(_) | TranscodeError::Pool(_))
}

/// A worker as the real one behaves: lease, heartbeat, complete; a call that fails
/// because the database is away is repeated (a lease whose answer was lost expires and
/// is reaped; a repeated result is refused by its token and dropped).
fn work(s: Arc<Store>, name: String, tokens: Arc<Mutex<Vec<u64>>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let a = match s.lease(&name, now_ms()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                // Polling, not synchronisation: nothing leasable, or the database away.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        tokens.lock().unwrap().push(a.token);
        let result = result_of(a.task.spec.work.kind(), ENCODES);
        loop {
            match s.complete(&a.task.id, a.token, result.clone(), now_ms()) {
                Ok(_) | Err(TranscodeError::Fenced(_)) => break,
                Err(e) if away(&e) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("complete {}: {e}", a.task.id),
            }
        }
    }
}

/// Runs the jobs with workers and a reaper on `s`, calling `failover` once a third of
/// the work is done; returns every token leased. Panics if the jobs do not all end.
fn run_through(s: Arc<Store>, ids: &[String], failover: impl FnOnce()) -> Vec<u64> {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (s, tokens, stop) = (s.clone(), tokens.clone(), stop.clone());
            std::thread::spawn(move || work(s, format!("w{w}"), tokens, stop))
        })
        .collect();
    let (s2, stop2) = (s.clone(), stop.clone());
    threads.push(std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            let _ = s2.reap(now_ms());
            std::thread::sleep(Duration::from_millis(100));
        }
    }));
    let third = ids.len() * (ENCODES + 2) / 3;
    let started = Instant::now();
    while tokens.lock().unwrap().len() < third {
        assert!(
            started.elapsed() < RUN_LIMIT,
            "no progress before the failover"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    failover();
    let failed_over = Instant::now();
    loop {
        let ended = ids
            .iter()
            .filter(|id| s.job(id).ok().flatten().is_some_and(|j| j.state.is_final()))
            .count();
        if ended == ids.len() {
            break;
        }
        assert!(
            started.elapsed() < RUN_LIMIT,
            "{ended} of {} jobs ended",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "all jobs ended {:.1} s after the failover",
        failed_over.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(tokens).unwrap().into_inner().unwrap()
}

#[test]
fn a_failover_to_a_synchronous_standby_loses_no_job_and_repeats_no_token() {
    let primary = PgServer::start_with("synchronous_standby_names = '*'");
    // Once promoted it runs alone until an operator attaches a new standby.
    let standby = PgServer::start_standby_of(&primary, "synchronous_standby_names = ''");
    let s = Arc::new(open(&PgServer::url_of_any(&[&primary, &standby])));
    let ids: Vec<String> = (0..JOBS).map(|i| submit(&s, i).id).collect();
    let tokens = run_through(s.clone(), &ids, || {
        primary.stop_immediately();
        standby.promote();
    });
    for id in &ids {
        let job = s.job(id).unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{id}");
        assert_eq!(job.tasks.len(), 2 + ENCODES);
    }
    let distinct: HashSet<u64> = tokens.iter().copied().collect();
    assert_eq!(distinct.len(), tokens.len(), "a fencing token repeated");
    let seqs: HashSet<u64> = tokens.iter().map(|t| t & ((1 << SEQ_BITS) - 1)).collect();
    assert_eq!(seqs.len(), tokens.len(), "a sequence value repeated");
    let timelines: HashSet<u64> = tokens.iter().map(|t| t >> SEQ_BITS).collect();
    assert_eq!(
        timelines.len(),
        2,
        "tokens of both timelines: {timelines:?}"
    );
}

/// What the synchronous setup prevents, shown: the standby falls behind (stopped while
/// the primary goes on), the primary dies, the standby is promoted. The leases the
/// primary granted meanwhile are gone — their tasks are queued again — and the new
/// primary hands out the same sequence values again; only the timeline in the tokens
/// keeps them distinct.
#[test]
fn with_asynchronous_replication_a_failover_loses_leases_and_repeats_sequence_values() {
    let primary = PgServer::start();
    let standby = PgServer::start_standby_of(&primary, "");
    let s = open(&PgServer::url_of_any(&[&primary, &standby]));
    let ids: Vec<String> = (0..JOBS * 5).map(|i| submit(&s, i).id).collect();
    // Each lease repeated while the database is away (the first calls after the
    // failover find the pool's connections to the old primary broken).
    let lease = |n: usize| -> Vec<Assignment> {
        (0..n)
            .map(|i| {
                let started = Instant::now();
                loop {
                    match s.lease(&format!("w{i}"), now_ms()) {
                        Ok(a) => break a.expect("a queued task"),
                        Err(e) if away(&e) && started.elapsed() < RUN_LIMIT => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(e) => panic!("lease: {e}"),
                    }
                }
            })
            .collect()
    };
    let before = lease(2);
    // The standby has everything so far once it shows the last lease (read there
    // directly: it is read-only, no store opens on it).
    let mut on_standby = postgres::Client::connect(&standby.url(), postgres::NoTls).unwrap();
    let started = Instant::now();
    let state_there = |c: &mut postgres::Client| -> Option<String> {
        c.query_opt(
            "SELECT state FROM kura_tasks WHERE id = $1",
            &[&before[1].task.id],
        )
        .unwrap()
        .map(|r| r.get(0))
    };
    while state_there(&mut on_standby).as_deref() != Some("leased") {
        assert!(started.elapsed() < RUN_LIMIT, "the standby never caught up");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(on_standby);
    standby.stop();
    // More leases than the sequence logs ahead (32) while the standby is away.
    let lost = lease(40);
    primary.stop_immediately();
    standby.restart();
    standby.promote();
    let after = lease(40);
    // Every lease granted while the standby was away is gone: its task was queued
    // again and (being first in line) leased to another worker, which now works on it
    // beside the first holder.
    let after_ids: HashSet<&str> = after.iter().map(|a| a.task.id.as_str()).collect();
    for a in &lost {
        let task = s.task(&a.task.id).unwrap().unwrap();
        let holder = task.lease.as_ref().map(|l| l.token);
        assert_ne!(holder, Some(a.token), "an acknowledged lease survived");
        assert!(
            after_ids.contains(a.task.id.as_str()),
            "{} not leased again",
            a.task.id
        );
    }
    let seq = |a: &Assignment| a.token & ((1 << SEQ_BITS) - 1);
    let lost_seqs: HashSet<u64> = lost.iter().map(seq).collect();
    let repeated = after.iter().filter(|a| lost_seqs.contains(&seq(a))).count();
    assert!(repeated > 0, "no sequence value was handed out twice");
    let all: Vec<u64> = before
        .iter()
        .chain(&lost)
        .chain(&after)
        .map(|a| a.token)
        .collect();
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "a token repeated despite the timeline"
    );
    eprintln!(
        "{repeated} of {} sequence values handed out again after the failover; tokens distinct",
        after.len()
    );
    assert_eq!(ids.len(), JOBS * 5);
}

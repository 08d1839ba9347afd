//! The PostgreSQL store keeps the planner's statistics of its tables current itself
//! (`store/pg/stats.rs`): a table is analyzed once it has rows and again when its row
//! count has doubled, not otherwise, and with statistics the charge's lookup of a flow's
//! row takes the flow's key instead of walking the tenant's lease order.

use std::time::{Duration, Instant};

use kura_transcoder::coordinator::store::*;
use kura_transcoder::model::*;
#[allow(unused_macros)]
mod stores;
use stores::PgServer;

/// How long the server's statistics may take to count another backend's changes (they
/// report within about a second): the test fails only past this.
const COUNTED_WITHIN: Duration = Duration::from_secs(30);

/// Jobs submitted first (one task and one flow each).
const JOBS: usize = 2500;

fn submit(s: &Store, n: usize, tenant: &str) {
    for i in 0..n {
        let req = SubmitJob {
            source: format!("media/{tenant}-{i}.mp4"),
            profile: "default".into(),
            priority: Some(5),
            webhook: None,
        };
        s.submit(&req, tenant, 1000).unwrap();
    }
}

/// Refreshes until `table` is among those analyzed (the server counts the rows written
/// by the store's connections within a second or so), and returns every table analyzed.
fn refreshed_until(s: &Store, table: &str) -> Vec<&'static str> {
    let started = Instant::now();
    let mut analyzed = Vec::new();
    while !analyzed.contains(&table) {
        assert!(
            started.elapsed() < COUNTED_WITHIN,
            "{table} never analyzed (got {analyzed:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
        analyzed.extend(s.refresh_statistics().unwrap());
    }
    analyzed
}

/// Waits until the server's statistics count `rows` live rows in `table`.
fn counted(db: &mut postgres::Client, table: &str, rows: i64) {
    let started = Instant::now();
    loop {
        let live: i64 = db
            .query_one(
                "SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = $1",
                &[&table],
            )
            .unwrap()
            .get(0);
        if live >= rows {
            return;
        }
        assert!(
            started.elapsed() < COUNTED_WITHIN,
            "{table}: {live} rows counted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rows_counted(db: &mut postgres::Client, table: &str) -> f32 {
    db.query_one(
        "SELECT reltuples FROM pg_class WHERE relname = $1",
        &[&table],
    )
    .unwrap()
    .get(0)
}

/// The planner's plan for the charge's update of one flow's row (a generic plan, as the
/// charge's PL/pgSQL caches it).
fn flow_update_plan(db: &mut postgres::Client) -> Vec<String> {
    let mut tx = db.transaction().unwrap();
    tx.batch_execute(
        "SET LOCAL plan_cache_mode = force_generic_plan; \
         PREPARE flow_update(smallint, boolean, text, text) AS \
         UPDATE kura_sched_flows SET tag = tag + 1 \
         WHERE priority = $1 AND urgent = $2 AND tenant = $3 AND flow = $4",
    )
    .unwrap();
    let plan: Vec<String> = tx
        .query(
            "EXPLAIN EXECUTE flow_update(5::smallint, false, 'tenant', 'j1')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.batch_execute("DEALLOCATE flow_update").unwrap();
    plan
}

#[test]
fn tables_are_analyzed_as_they_grow_and_flows_are_found_by_their_key() {
    let pg = PgServer::start();
    let s = Store::connect(&pg.url()).unwrap();
    let mut db = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    // Nothing to analyze in an empty store; the records' bodies are never analyzed.
    assert_eq!(s.refresh_statistics().unwrap(), Vec::<&str>::new());
    let skipped: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attname = 'body' AND attstattarget = 0 \
             AND attrelid IN ('kura_jobs'::regclass, 'kura_tasks'::regclass)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(skipped, 2);

    // Jobs of one tenant: as many flows in one tenant's lease order (enough of them
    // that the planner, without statistics, walks them: checked).
    submit(&s, JOBS, "tenant");
    let analyzed = refreshed_until(&s, "kura_tasks");
    for t in ["kura_jobs", "kura_sched_flows"] {
        if !analyzed.contains(&t) {
            refreshed_until(&s, t);
        }
    }
    assert_eq!(rows_counted(&mut db, "kura_tasks"), JOBS as f32);
    assert_eq!(rows_counted(&mut db, "kura_sched_flows"), JOBS as f32);
    // Not a walk through the tenant's flows in lease order (what the planner chose
    // before any statistics: the two indexes looked alike).
    let plan = flow_update_plan(&mut db);
    assert!(
        !plan.iter().any(|l| l.contains("kura_sched_flows_order")),
        "{plan:?}"
    );
    // Unchanged tables are not analyzed again.
    assert_eq!(s.refresh_statistics().unwrap(), Vec::<&str>::new());

    // Less than twice the rows: not yet; more than twice: again.
    submit(&s, JOBS / 2, "other");
    counted(&mut db, "kura_tasks", (JOBS + JOBS / 2) as i64);
    assert!(!s.refresh_statistics().unwrap().contains(&"kura_tasks"));
    submit(&s, JOBS / 2 + 1, "other");
    refreshed_until(&s, "kura_tasks");
    assert_eq!(rows_counted(&mut db, "kura_tasks"), (2 * JOBS + 1) as f32);
}

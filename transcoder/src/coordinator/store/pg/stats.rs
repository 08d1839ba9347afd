//! The planner's statistics of kura's tables, kept current by the coordinators.
//!
//! PostgreSQL plans every statement from the statistics `ANALYZE` gathers, and until a
//! table has been analyzed with rows in it the planner guesses, and guesses wrong where
//! it matters: a flow's soft-state row (`kura_sched_flows`) has two indexes that both
//! begin with its band and tenant, the key and the lease order, and without statistics
//! the two look equally cheap for the charge's "this flow's row". The planner then took
//! the lease order, walking every flow of the tenant for each lease. Autovacuum analyzes
//! a table only when it wakes, once a minute by default (`autovacuum_naptime`), so a new
//! database ran its first minute at ~60 % of its rate: measured with 600 leasing slots
//! on two cores (BENCHMARKS.md "Coordinators"), ~1,400 transitions/s before one
//! `ANALYZE` of these tables and ~2,500/s after it, in the same run.
//!
//! So each coordinator looks every [`STATS_INTERVAL`](crate::coordinator::STATS_INTERVAL)
//! for tables whose row count has moved past twice (or below half) what their last
//! `ANALYZE` counted, or that were never analyzed and have rows now, and analyzes them:
//! a table is analyzed a few times while it grows from nothing, then rarely; the slow
//! drift of distributions in a table of steady size stays autovacuum's (its
//! `n_mod_since_analyze` threshold). One coordinator at a time (an advisory lock). The
//! records' JSON bodies are not analyzed (`schema.sql`): no statement selects by them,
//! and they were half of `ANALYZE kura_tasks`' time (0.78 → 0.34 s for 55,000 tasks on
//! a busy machine).

use super::conn::Conn;
use crate::error::Result;

/// The tables kept analyzed (all of kura's, which are all small or hot).
const TABLES: [&str; 8] = [
    "kura_jobs",
    "kura_tasks",
    "kura_workers",
    "kura_batches",
    "kura_outbox",
    "kura_sched_bands",
    "kura_sched_tenants",
    "kura_sched_flows",
];

/// Rows a table's count must have moved by since its last `ANALYZE` before it is
/// analyzed again (with [`GROWTH`]): autovacuum's `autovacuum_analyze_threshold`, so a
/// table of a few rows is not analyzed at every change.
const MIN_CHANGE_ROWS: f64 = 50.0;

/// How far a table's row count may move from what its last `ANALYZE` counted (this
/// factor up or down) before it is analyzed again: the plans that matter turn on how
/// many rows a key selects (tasks per job, flows per tenant), which a table's size
/// changes by a factor, not by a few percent.
const GROWTH: f64 = 2.0;

/// Advisory lock key held while one coordinator analyzes (any constant unique to kura).
const STATS_LOCK: i64 = 0x6b75_7261_0002;

/// Analyzes each of kura's tables whose row count moved by more than [`GROWTH`] (and
/// [`MIN_CHANGE_ROWS`]) since its last `ANALYZE`, or that was never analyzed and has
/// rows, and returns them; nothing when another coordinator is at it. Row counts are
/// those the server's statistics have counted (backends report theirs within about a
/// second).
pub(super) fn refresh(c: &mut Conn) -> Result<Vec<&'static str>> {
    c.in_transaction(stale_analyzed)
}

/// [`refresh`]'s work, in its transaction (which holds the advisory lock).
fn stale_analyzed(c: &mut Conn) -> Result<Vec<&'static str>> {
    let locked: bool = c
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&STATS_LOCK])?
        .get(0);
    if !locked {
        return Ok(Vec::new());
    }
    let rows = c.query(
        "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
         WHERE s.relid = ANY($1::text[]::regclass[]) \
           AND abs(s.n_live_tup - GREATEST(c.reltuples, 0)) > $2::float8 \
           AND (c.reltuples <= 0 OR s.n_live_tup > c.reltuples * $3::float8 \
             OR s.n_live_tup < c.reltuples / $3::float8)",
        &[&TABLES.as_slice(), &MIN_CHANGE_ROWS, &GROWTH],
    )?;
    let mut analyzed = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        // Only names of this list reach the statement.
        if let Some(table) = TABLES.iter().find(|t| **t == name) {
            c.batch_execute(&format!("ANALYZE {table}"))?;
            analyzed.push(*table);
        }
    }
    Ok(analyzed)
}

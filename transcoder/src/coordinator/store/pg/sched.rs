//! The lease order's soft state (`kura_sched_*`, see `schema.sql`): a committed
//! transition's queue changes, sent behind its `COMMIT` in the same round trip and
//! applied only if it committed (a mark the transaction sets, [`MARK_SQL`]), each one
//! statement in a transaction of its own without a synchronous commit (soft state), so
//! a worker's next lease sees them.
//!
//! One statement each, not one transaction around them all: the rows every lease of a
//! band shares (its tenant's, the band's) are then locked only while the database runs
//! the statement, never across a round trip to a coordinator. Measured under 600
//! leasing slots on two cores: a transaction around the charge (BEGIN, charge, COMMIT)
//! held those rows while the coordinator that had to send COMMIT waited for a core, and
//! the charge averaged 14.7 ms, nearly all of it waiting for the rows.
//!
//! Tried and not kept: one writer thread per coordinator applying every transition's
//! changes in batches (no two transitions of a coordinator waiting on the same tenant's
//! row). Under 600 leasing slots it was slower (723 vs 980 transitions/s): the order
//! lagged, so picks probed flows already drained and fell back to full scans.

use std::collections::HashSet;

use super::conn::Deferred;
use crate::coordinator::store::sched::MIN_COST;
use crate::coordinator::store::txn::QueueOp;

/// The session setting a transaction sets to its mark just before its `COMMIT`
/// ([`statements`]): rolled back with the transaction if it fails.
pub(super) const MARK_SQL: &str = "SELECT set_config('kura.committed', $1, false)";

/// The statements applying `ops` after a transaction that set `mark` ([`MARK_SQL`]):
/// each its own transaction, each applied only if the session's mark is `mark`, so
/// they can be sent behind the `COMMIT` without waiting for it and change nothing when
/// it failed (a failed transaction's settings roll back). Of the insertions and
/// removals of one flow, only the first of each (they look at the queue, which has
/// them all already).
///
/// Every statement starts with `set_config('synchronous_commit', 'off', true)`: its own
/// (implicit) transaction commits without waiting for the WAL flush, and losing the
/// last changes in a crash costs fairness, never a task.
pub(super) fn statements(ops: &[QueueOp], mark: &str) -> Vec<Deferred> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    // How many tasks were queued: told once to the other coordinators (`listen.rs`),
    // which wake as many of their long-polling workers.
    let queued = ops
        .iter()
        .filter(|op| matches!(op, QueueOp::Insert(_)))
        .count();
    let mut told = false;
    for op in ops {
        match op {
            QueueOp::Insert(q) | QueueOp::Remove(q) => {
                let insert = matches!(op, QueueOp::Insert(_));
                if !seen.insert((
                    insert,
                    q.priority,
                    q.urgent,
                    q.tenant.clone(),
                    q.flow.clone(),
                )) {
                    continue;
                }
                let mut params: Vec<Box<dyn postgres::types::ToSql + Sync>> = vec![
                    Box::new(i16::from(q.priority)),
                    Box::new(q.urgent),
                    Box::new(q.tenant.clone()),
                    Box::new(q.flow.clone()),
                    Box::new(mark.to_string()),
                ];
                let sql = if insert && !told {
                    told = true;
                    params.push(Box::new(super::listen::WORK_CHANNEL));
                    params.push(Box::new(queued.to_string()));
                    "SELECT set_config('synchronous_commit', 'off', true), \
                     kura_sched_insert($1, $2, $3, $4), pg_notify($6, $7) \
                     WHERE current_setting('kura.committed', true) = $5"
                } else if insert {
                    "SELECT set_config('synchronous_commit', 'off', true), \
                     kura_sched_insert($1, $2, $3, $4) \
                     WHERE current_setting('kura.committed', true) = $5"
                } else {
                    "SELECT set_config('synchronous_commit', 'off', true), \
                     kura_sched_prune($1, $2, $3, $4) \
                     WHERE current_setting('kura.committed', true) = $5"
                };
                out.push(Deferred { sql, params });
            }
            QueueOp::Lease(q) => {
                out.push(Deferred {
                    sql: "SELECT set_config('synchronous_commit', 'off', true), \
                          kura_sched_charge($1, $2, $3, $4, $5, $6) \
                          WHERE current_setting('kura.committed', true) = $7",
                    params: vec![
                        Box::new(i16::from(q.priority)),
                        Box::new(q.urgent),
                        Box::new(q.tenant.clone()),
                        Box::new(q.flow.clone()),
                        Box::new(q.cost.max(MIN_COST)),
                        Box::new(q.job.clone()),
                        Box::new(mark.to_string()),
                    ],
                });
                // A later insertion of this flow must run again after the charge.
                seen.retain(|(insert, ..)| !insert);
            }
        }
    }
    out
}

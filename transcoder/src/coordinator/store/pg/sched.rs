//! The lease order's soft state (`kura_sched_*`, see `schema.sql`): a committed
//! transition's queue changes, applied right after its commit, each one statement in a
//! transaction of its own without a synchronous commit (soft state), so a worker's next
//! lease sees them.
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

use super::conn::Conn;
use crate::coordinator::store::sched::MIN_COST;
use crate::coordinator::store::txn::QueueOp;
use crate::error::Result;

/// Applies `ops` in order, each in a transaction of its own; of the insertions and
/// removals of one flow, only the first of each (they look at the queue, which has
/// them all already).
///
/// Every statement starts with `set_config('synchronous_commit', 'off', true)`: its own
/// (implicit) transaction commits without waiting for the WAL flush, and losing the
/// last changes in a crash costs fairness, never a task.
pub(super) fn write(c: &mut Conn, ops: &[QueueOp]) -> Result<()> {
    let mut seen = HashSet::new();
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
                if !seen.insert((insert, q.priority, q.urgent, &q.tenant, &q.flow)) {
                    continue;
                }
                if insert && !told {
                    told = true;
                    c.execute(
                        "SELECT set_config('synchronous_commit', 'off', true), \
                         kura_sched_insert($1, $2, $3, $4), pg_notify($5, $6)",
                        &[
                            &i16::from(q.priority),
                            &q.urgent,
                            &q.tenant,
                            &q.flow,
                            &super::listen::WORK_CHANNEL,
                            &queued.to_string(),
                        ],
                    )?;
                } else if insert {
                    c.execute(
                        "SELECT set_config('synchronous_commit', 'off', true), \
                         kura_sched_insert($1, $2, $3, $4)",
                        &[&i16::from(q.priority), &q.urgent, &q.tenant, &q.flow],
                    )?;
                } else {
                    c.execute(
                        "SELECT set_config('synchronous_commit', 'off', true), \
                         kura_sched_prune($1, $2, $3, $4)",
                        &[&i16::from(q.priority), &q.urgent, &q.tenant, &q.flow],
                    )?;
                }
            }
            QueueOp::Lease(q) => {
                c.execute(
                    "SELECT set_config('synchronous_commit', 'off', true), \
                     kura_sched_charge($1, $2, $3, $4, $5, $6)",
                    &[
                        &i16::from(q.priority),
                        &q.urgent,
                        &q.tenant,
                        &q.flow,
                        &q.cost.max(MIN_COST),
                        &q.job,
                    ],
                )?;
                // A later insertion of this flow must run again after the charge.
                seen.retain(|(insert, ..)| !insert);
            }
        }
    }
    Ok(())
}

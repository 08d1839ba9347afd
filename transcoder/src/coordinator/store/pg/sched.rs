//! The lease order's soft state (`kura_sched_*`, see `schema.sql`): a committed
//! transition's queue changes, applied right after its commit in a transaction of their
//! own without a synchronous commit (soft state), so a worker's next lease sees them.
//!
//! Tried and not kept: one writer thread per coordinator applying every transition's
//! changes in batches (no two transitions of a coordinator waiting on the same tenant's
//! row). Under 600 leasing slots it was slower (723 vs 980 transitions/s): the order
//! lagged, so picks probed flows already drained and fell back to full scans.

use std::collections::HashSet;

use super::conn::Conn;
use crate::coordinator::store::sched::{Queued, MIN_COST};
use crate::coordinator::store::txn::QueueOp;
use crate::error::Result;

/// Applies `ops` in order in one transaction; of the insertions and removals of one
/// flow, only the first of each (they look at the queue, which has them all already).
pub(super) fn write(c: &mut Conn, ops: &[QueueOp]) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    c.batch_execute("BEGIN; SET LOCAL synchronous_commit TO OFF")?;
    let outcome = write_all(c, ops);
    match outcome {
        Ok(()) => Ok(c.batch_execute("COMMIT")?),
        Err(e) => {
            let _ = c.batch_execute("ROLLBACK");
            Err(e)
        }
    }
}

fn write_all(c: &mut Conn, ops: &[QueueOp]) -> Result<()> {
    let mut seen = HashSet::new();
    for op in ops {
        match op {
            QueueOp::Insert(q) | QueueOp::Remove(q) => {
                let insert = matches!(op, QueueOp::Insert(_));
                if !seen.insert((insert, q.priority, q.urgent, &q.tenant, &q.flow)) {
                    continue;
                }
                let sql = if insert {
                    "SELECT kura_sched_insert($1, $2, $3, $4)"
                } else {
                    "SELECT kura_sched_prune($1, $2, $3, $4)"
                };
                flow_op(c, sql, q)?;
            }
            QueueOp::Lease(q) => {
                c.execute(
                    "SELECT kura_sched_charge($1, $2, $3, $4, $5, $6)",
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

fn flow_op(c: &mut Conn, sql: &'static str, q: &Queued) -> Result<()> {
    c.execute(
        sql,
        &[&i16::from(q.priority), &q.urgent, &q.tenant, &q.flow],
    )?;
    Ok(())
}

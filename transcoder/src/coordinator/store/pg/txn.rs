//! One transition on the PostgreSQL store (see the parent module for the locking).

use std::collections::HashSet;

use postgres::error::SqlState;
use postgres::types::{Json, ToSql};
use postgres::Row;
use r2d2::PooledConnection;

use super::conn::{Conn, Deferred, Read};
use super::{big, name, STALE_TRIES};
use crate::coordinator::store::txn::{IdKind, QueueOp, Txn};
use crate::coordinator::store::{Batch, WorkerRecord};
use crate::coordinator::webhook::Outgoing;
use crate::error::{Result, TranscodeError};
use crate::model::*;

/// Flows, in lease order, whose queued tasks [`PgTxn::pick`] looks at before it falls
/// back to the plain priority order (flows whose tasks are all backed off or too heavy
/// for an express slot are skipped one by one; a few dozen covers every realistic mix,
/// and the fallback still finds any ready task).
const PICK_FLOWS: i32 = 32;

/// The database's current timeline (the first 8 hex digits of the name of the WAL file
/// it writes: a promoted standby writes a new, higher one) and the next sequence value.
const TOKEN_SQL: &str =
    "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint, \
     nextval('kura_tokens')";

/// Bits of a token below its timeline: 2^40 leases per timeline.
const TOKEN_SEQ_BITS: u32 = 40;

/// A fencing token unique across failovers: the timeline above the sequence value.
/// A sequence value can repeat after a failover to a standby that had not received the
/// WAL of the last values handed out (asynchronous replication); the promoted standby
/// writes a new timeline, so its tokens are new (and larger) all the same.
pub(super) fn token(timeline: i64, n: i64) -> Result<u64> {
    let (timeline, n) = (u64::try_from(timeline), u64::try_from(n));
    match (timeline, n) {
        (Ok(t), Ok(n)) if n < 1 << TOKEN_SEQ_BITS && t < 1 << (64 - TOKEN_SEQ_BITS) => {
            Ok(t << TOKEN_SEQ_BITS | n)
        }
        _ => Err(TranscodeError::BadData(
            "fencing token sequence out of range".into(),
        )),
    }
}

/// The statement reading a task by id (`FOR UPDATE` when `lock`).
fn task_sql(lock: bool) -> &'static str {
    if lock {
        "SELECT body FROM kura_tasks WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT body FROM kura_tasks WHERE id = $1"
    }
}

/// A task by id, outside any transaction.
pub(super) fn read_task(c: &mut Conn, id: &str) -> Result<Option<Task>> {
    let row = c.query_opt(task_sql(false), &[&id])?;
    Ok(row.map(|r| r.get::<_, Json<Task>>(0).0))
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A transaction on one pooled connection, rolled back if dropped uncommitted.
pub(in crate::coordinator::store) struct PgTxn {
    conn: PooledConnection<super::conn::Manager>,
    /// For another connection when this one turns out closed before anything of the
    /// transaction reached the database.
    pool: super::Pool,
    /// Statements sent on `conn` for this transaction (`BEGIN` at least): it must be
    /// rolled back if dropped uncommitted.
    sent: bool,
    open: bool,
    /// Statements whose answers the transition does not wait for (`BEGIN` first, then
    /// writes), sent with the next one it does ([`PgTxn::send`]).
    pending: Vec<Deferred>,
    queue: Vec<QueueOp>,
    /// A task this transaction holds locked, as read under the lock ([`Txn::pick`]'s
    /// choice, or [`Txn::job_of`]'s task): reading it again in this transaction (as
    /// leasing and results do) needs no round trip. Dropped when the task is written.
    locked: Option<Task>,
    /// The job of the task [`Txn::pick`] chose, as read with it (not locked): what
    /// [`Txn::peek_job`] returns for it. Dropped when the job is written.
    picked_job: Option<Job>,
    /// A worker's record as read with [`Txn::pick`] (the worker leasing) or
    /// [`Txn::job_of`] (the task's lease holder), not locked: what [`Txn::worker`]
    /// returns for it. Dropped when a worker is locked or written.
    holder: Option<(String, WorkerRecord)>,
    /// A token drawn with the pick, for the lease that follows it.
    token: Option<u64>,
    /// The tasks of the job [`Txn::job_of`] locked, read right after its lock (what
    /// [`Txn::tasks_of`] returns for it). Dropped when a task is written.
    job_tasks: Option<(String, Vec<Row>)>,
}

impl PgTxn {
    /// A transaction on `conn` (from `pool`); its `BEGIN` goes with its first statement.
    pub(super) fn new(conn: PooledConnection<super::conn::Manager>, pool: super::Pool) -> Self {
        Self {
            conn,
            pool,
            sent: false,
            open: true,
            pending: vec![Deferred::bare("BEGIN")],
            queue: Vec::new(),
            locked: None,
            picked_job: None,
            holder: None,
            token: None,
            job_tasks: None,
        }
    }

    /// The task held locked, if it is `id`.
    fn locked(&self, id: &str) -> Option<Task> {
        self.locked.as_ref().filter(|t| t.id == id).cloned()
    }

    /// Sends the pending statements and then `reads` in one round trip (see
    /// [`Conn::pipeline`]); returns the rows of each read. A connection found closed before
    /// anything of the transaction reached the database (the database restarted or
    /// failed over since it was last used) is replaced, up to [`STALE_TRIES`] times,
    /// unless the statements end the transaction (a `COMMIT` may have arrived).
    fn send(&mut self, reads: &[Read]) -> Result<Vec<Vec<Row>>> {
        self.send_counting(reads, self.pending.len())
    }

    /// [`PgTxn::send`], failing on the errors of the first `counted` pending statements
    /// and of the reads only: those after them (the lease order's changes, behind the
    /// `COMMIT`) are logged.
    fn send_counting(&mut self, reads: &[Read], counted: usize) -> Result<Vec<Vec<Row>>> {
        let mut tries = 1;
        loop {
            let outcome = self
                .conn
                .pipeline(&self.pending, reads)
                .and_then(|(changed, rows)| {
                    for (i, c) in changed.into_iter().enumerate() {
                        match c {
                            Err(e) if i < counted => return Err(e),
                            // The transition is durable; only fairness can suffer.
                            Err(e) => tracing::warn!(error = %e, "lease order not updated"),
                            Ok(_) => {}
                        }
                    }
                    rows.into_iter().collect::<Result<Vec<_>, _>>()
                });
            let ends = self.pending.iter().any(|d| d.sql == COMMIT);
            match outcome {
                Err(_) if !self.sent && !ends && self.conn.is_closed() && tries < STALE_TRIES => {
                    tries += 1;
                    self.conn = self.pool.get()?;
                }
                outcome => {
                    self.sent = true;
                    self.pending.clear();
                    return outcome.map_err(|e| match e.code() {
                        // `kura_expect_one`: a record a deferred write expected is gone.
                        Some(c) if *c == SqlState::NO_DATA_FOUND => TranscodeError::NotFound,
                        _ => e.into(),
                    });
                }
            }
        }
    }

    /// Rows of `sql`, sent with the pending statements.
    fn read(&mut self, sql: &'static str, p: Params) -> Result<Vec<Row>> {
        Ok(self.send(&[(sql, p)])?.pop().unwrap_or_default())
    }

    /// At most one row of `sql`, sent with the pending statements.
    fn read_opt(&mut self, sql: &'static str, p: Params) -> Result<Option<Row>> {
        let mut rows = self.read(sql, p)?;
        match rows.len() {
            0 | 1 => Ok(rows.pop()),
            n => Err(TranscodeError::BadData(format!(
                "{n} rows where one was expected"
            ))),
        }
    }

    /// The one row of `sql`, sent with the pending statements.
    fn read_one(&mut self, sql: &'static str, p: Params) -> Result<Row> {
        self.read_opt(sql, p)?
            .ok_or_else(|| TranscodeError::BadData("no row where one was expected".into()))
    }

    /// A task by id (`FOR UPDATE` when `lock`), sent with the pending statements.
    fn read_task(&mut self, id: &str, lock: bool) -> Result<Option<Task>> {
        let row = self.read_opt(task_sql(lock), &[&id])?;
        Ok(row.map(|r| r.get::<_, Json<Task>>(0).0))
    }

    /// Sends `sql` with the next statement the transition waits for.
    fn defer(&mut self, sql: &'static str, params: Vec<Box<dyn ToSql + Sync>>) {
        self.pending.push(Deferred { sql, params });
    }
}

/// Ends a transaction (see [`PgTxn::send`]).
const COMMIT: &str = "COMMIT";

impl Drop for PgTxn {
    fn drop(&mut self) {
        if self.open && self.sent {
            // A connection that cannot roll back is broken; the pool drops it.
            let _ = self.conn.batch_execute("ROLLBACK");
        }
    }
}

impl Txn for PgTxn {
    fn job(&mut self, id: &str) -> Result<Option<Job>> {
        let row = self.read_opt(
            "SELECT body FROM kura_jobs WHERE id = $1 FOR UPDATE",
            &[&id],
        )?;
        Ok(row.map(|r| r.get::<_, Json<Job>>(0).0))
    }

    fn job_of(&mut self, task_id: &str) -> Result<Option<Job>> {
        // The task is locked with its job (results lock it next anyway), and its lease
        // holder's record read (results look at it next). And in the same round trip,
        // once the locks are held (a statement of its own: its snapshot is taken after
        // them), the job's tasks, which results read next.
        let mut answers = self.send(&[
            (
                "SELECT j.body, t.body, w.body FROM kura_jobs j \
                 JOIN kura_tasks t ON t.job_id = j.id \
                 LEFT JOIN kura_workers w ON w.id = t.body #>> '{lease,worker}' \
                 WHERE t.id = $1 FOR UPDATE OF j, t",
                &[&task_id],
            ),
            (
                "SELECT body FROM kura_tasks \
                 WHERE job_id = (SELECT job_id FROM kura_tasks WHERE id = $1)",
                &[&task_id],
            ),
        ])?;
        let siblings = answers.pop().unwrap_or_default();
        let Some(row) = answers.pop().and_then(|mut rows| rows.pop()) else {
            return Ok(None);
        };
        let task = row.get::<_, Json<Task>>(1).0;
        self.holder = task.lease.as_ref().map(|l| {
            let rec = row.get::<_, Option<Json<WorkerRecord>>>(2);
            (l.worker.clone(), rec.map(|r| r.0).unwrap_or_default())
        });
        self.locked = Some(task);
        let job = row.get::<_, Json<Job>>(0).0;
        self.job_tasks = Some((job.id.clone(), siblings));
        Ok(Some(job))
    }

    fn peek_job(&mut self, id: &str) -> Result<Option<Job>> {
        if let Some(job) = self.picked_job.as_ref().filter(|j| j.id == id) {
            return Ok(Some(job.clone()));
        }
        let row = self
            .conn
            .query_opt("SELECT body FROM kura_jobs WHERE id = $1", &[&id])?;
        Ok(row.map(|r| r.get::<_, Json<Job>>(0).0))
    }

    fn task(&mut self, id: &str) -> Result<Option<Task>> {
        match self.locked(id) {
            Some(t) => Ok(Some(t)),
            None => self.read_task(id, false),
        }
    }

    fn lock_task(&mut self, id: &str) -> Result<Option<Task>> {
        match self.locked(id) {
            Some(t) => Ok(Some(t)),
            None => self.read_task(id, true),
        }
    }

    fn extend_lease(&mut self, task: &Task) -> Result<()> {
        self.locked = None;
        self.job_tasks = None;
        let expires = task.lease.as_ref().map(|l| big(l.expires_ms));
        self.defer(
            "UPDATE kura_tasks SET lease_expires_ms = $2, body = $3 WHERE id = $1",
            vec![
                Box::new(task.id.clone()),
                Box::new(expires),
                Box::new(Json(task.clone())),
            ],
        );
        Ok(())
    }

    fn tasks_of(&mut self, job: &Job) -> Result<Vec<Task>> {
        let rows = match self.job_tasks.take() {
            Some((id, rows)) if id == job.id => rows,
            _ => self.read("SELECT body FROM kura_tasks WHERE job_id = $1", &[&job.id])?,
        };
        Ok(super::in_job_order(job, rows))
    }

    fn worker(&mut self, id: &str) -> Result<WorkerRecord> {
        if let Some((_, rec)) = self.holder.as_ref().filter(|(w, _)| w == id) {
            return Ok(rec.clone());
        }
        let row = self
            .conn
            .query_opt("SELECT body FROM kura_workers WHERE id = $1", &[&id])?;
        Ok(row
            .map(|r| r.get::<_, Json<WorkerRecord>>(0).0)
            .unwrap_or_default())
    }

    fn lock_worker(&mut self, id: &str) -> Result<WorkerRecord> {
        self.holder = None;
        // A row to lock even for a worker's first outcome.
        self.defer(
            "INSERT INTO kura_workers (id, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![
                Box::new(id.to_string()),
                Box::new(Json(WorkerRecord::default())),
            ],
        );
        let row = self.read_one(
            "SELECT body FROM kura_workers WHERE id = $1 FOR UPDATE",
            &[&id],
        )?;
        Ok(row.get::<_, Json<WorkerRecord>>(0).0)
    }

    fn taken(&mut self, kind: IdKind, ids: &[String]) -> Result<HashSet<String>> {
        let sql = match kind {
            IdKind::Job => "SELECT id FROM kura_jobs WHERE id = ANY($1)",
            IdKind::Batch => "SELECT id FROM kura_batches WHERE id = ANY($1)",
        };
        let rows = self.read(sql, &[&ids])?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    fn active_job(&mut self, source: &str, profile: &str) -> Result<Option<String>> {
        // Two batches over one source at once: the second waits here for the first to
        // commit, then sees its job.
        self.defer(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 0))",
            vec![Box::new(profile.to_string()), Box::new(source.to_string())],
        );
        let row = self.read_opt(
            "SELECT id FROM kura_jobs WHERE profile = $1 AND source = $2 AND NOT final LIMIT 1",
            &[&profile, &source],
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    fn next_token(&mut self) -> Result<u64> {
        if let Some(t) = self.token.take() {
            return Ok(t);
        }
        let row = self.read_one(TOKEN_SQL, &[])?;
        let (timeline, n): (i64, i64) = (row.get(0), row.get(1));
        token(timeline, n)
    }

    fn token_floor(&mut self, floor: u64) -> Result<()> {
        // Tokens of another timeline differ in their high bits already; of this one, the
        // sequence must pass the floor's value.
        let seq = big(floor & ((1 << TOKEN_SEQ_BITS) - 1));
        self.defer(
            "SELECT setval('kura_tokens', GREATEST($1, (SELECT last_value FROM kura_tokens)))",
            vec![Box::new(seq)],
        );
        Ok(())
    }

    fn insert_job(&mut self, job: &Job) -> Result<()> {
        self.defer(
            "INSERT INTO kura_jobs (id, state, final, profile, source, batch, updated_ms, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                Box::new(job.id.clone()),
                Box::new(name(&job.state)?),
                Box::new(job.state.is_final()),
                Box::new(job.profile.clone()),
                Box::new(job.source.clone()),
                Box::new(job.batch.clone()),
                Box::new(big(job.updated_ms)),
                Box::new(Json(job.clone())),
            ],
        );
        Ok(())
    }

    fn put_job(&mut self, job: &Job) -> Result<()> {
        self.picked_job = None;
        // Sent without waiting: a missing job fails the transaction on the server
        // (`kura_expect_one`), and the error reads as `NotFound` (`PgTxn::send`).
        self.defer(
            "WITH u AS (UPDATE kura_jobs SET state = $2, final = $3, updated_ms = $4, \
               body = $5 WHERE id = $1 RETURNING 1) \
             SELECT kura_expect_one((SELECT count(*) FROM u))",
            vec![
                Box::new(job.id.clone()),
                Box::new(name(&job.state)?),
                Box::new(job.state.is_final()),
                Box::new(big(job.updated_ms)),
                Box::new(Json(job.clone())),
            ],
        );
        Ok(())
    }

    fn put_task(&mut self, job: &Job, task: &Task) -> Result<()> {
        self.locked = None;
        self.job_tasks = None;
        let q = crate::coordinator::store::transitions::queued(job, task);
        let expires = task.lease.as_ref().map(|l| big(l.expires_ms));
        self.defer(
            "INSERT INTO kura_tasks (id, job_id, state, priority, urgent, tenant, flow, cost, \
               ready_ms, lease_expires_ms, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, \
               urgent = EXCLUDED.urgent, cost = EXCLUDED.cost, ready_ms = EXCLUDED.ready_ms, \
               lease_expires_ms = EXCLUDED.lease_expires_ms, body = EXCLUDED.body",
            vec![
                Box::new(task.id.clone()),
                Box::new(task.job_id.clone()),
                Box::new(name(&task.state)?),
                Box::new(i16::from(q.priority)),
                Box::new(q.urgent),
                Box::new(q.tenant),
                Box::new(q.flow),
                Box::new(q.cost),
                Box::new(big(task.ready_ms)),
                Box::new(expires),
                Box::new(Json(task.clone())),
            ],
        );
        Ok(())
    }

    fn put_worker(&mut self, id: &str, rec: &WorkerRecord) -> Result<()> {
        self.holder = None;
        self.defer(
            "INSERT INTO kura_workers (id, body) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
            vec![Box::new(id.to_string()), Box::new(Json(rec.clone()))],
        );
        Ok(())
    }

    fn put_batch(&mut self, batch: &Batch) -> Result<()> {
        self.defer(
            "INSERT INTO kura_batches (id, created_ms, body) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
            vec![
                Box::new(batch.id.clone()),
                Box::new(big(batch.created_ms)),
                Box::new(Json(batch.clone())),
            ],
        );
        Ok(())
    }

    fn put_outgoing(&mut self, o: &Outgoing) -> Result<()> {
        self.defer(
            "INSERT INTO kura_outbox (id, next_ms, body) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET next_ms = EXCLUDED.next_ms, body = EXCLUDED.body",
            vec![
                Box::new(o.id.clone()),
                Box::new(big(o.next_ms)),
                Box::new(Json(o.clone())),
            ],
        );
        Ok(())
    }

    fn outgoing(&mut self, id: &str) -> Result<Option<Outgoing>> {
        let row = self.read_opt(
            "SELECT body FROM kura_outbox WHERE id = $1 FOR UPDATE",
            &[&id],
        )?;
        Ok(row.map(|r| r.get::<_, Json<Outgoing>>(0).0))
    }

    fn delete_outgoing(&mut self, id: &str) -> Result<()> {
        self.defer(
            "DELETE FROM kura_outbox WHERE id = $1",
            vec![Box::new(id.to_string())],
        );
        Ok(())
    }

    fn due_outgoing(&mut self, now: u64, limit: usize) -> Result<Vec<Outgoing>> {
        let rows = self.read(
            "SELECT body FROM kura_outbox WHERE next_ms <= $1 ORDER BY next_ms LIMIT $2 \
             FOR UPDATE SKIP LOCKED",
            &[&big(now), &i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| r.get::<_, Json<Outgoing>>(0).0)
            .collect())
    }

    fn queue(&mut self, op: QueueOp) {
        self.queue.push(op);
    }

    fn pick(
        &mut self,
        worker: &str,
        now: u64,
        max_cost: Option<f64>,
        exclude: &HashSet<String>,
    ) -> Result<Option<String>> {
        let now = big(now);
        let max_cost = max_cost.unwrap_or(f64::INFINITY);
        let exclude: Vec<String> = exclude.iter().cloned().collect();
        // With its job, the worker's record, and the token for the lease that follows
        // (a rejected pick wastes one value).
        let row = self.read_opt(
            "SELECT p.body, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))\
             ::bit(32)::bigint, nextval('kura_tokens'), \
             (SELECT j.body FROM kura_jobs j WHERE j.id = p.job_id), \
             (SELECT w.body FROM kura_workers w WHERE w.id = $5) \
             FROM kura_pick($1, $2, $3, $4) p",
            &[&now, &max_cost, &exclude, &PICK_FLOWS, &worker],
        )?;
        let Some(row) = row else {
            self.locked = None;
            return Ok(None);
        };
        self.token = Some(token(row.get(1), row.get(2))?);
        self.picked_job = row.get::<_, Option<Json<Job>>>(3).map(|j| j.0);
        let rec = row.get::<_, Option<Json<WorkerRecord>>>(4);
        self.holder = Some((worker.to_string(), rec.map(|r| r.0).unwrap_or_default()));
        let task = row.get::<_, Json<Task>>(0).0;
        let id = task.id.clone();
        self.locked = Some(task);
        Ok(Some(id))
    }

    fn expired(&mut self, now: u64, limit: usize) -> Result<Vec<String>> {
        let rows = self.read(
            "SELECT id FROM kura_tasks WHERE state = 'leased' AND lease_expires_ms <= $1 \
             ORDER BY lease_expires_ms LIMIT $2",
            &[&big(now), &i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        // The lease order's changes go behind the `COMMIT`, in the same round trip, each
        // applied only if the session holds this transaction's mark (set just before
        // the `COMMIT`, rolled back with a transaction that fails): `sched.rs`.
        let mark = self.conn.next_mark();
        self.pending.push(Deferred {
            sql: super::sched::MARK_SQL,
            params: vec![Box::new(mark.clone())],
        });
        self.pending.push(Deferred::bare(COMMIT));
        let counted = self.pending.len();
        let ops = std::mem::take(&mut self.queue);
        self.pending.extend(super::sched::statements(&ops, &mark));
        self.send_counting(&[], counted)?;
        self.open = false;
        Ok(())
    }
}

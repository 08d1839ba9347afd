//! The PostgreSQL store: the same transitions as the embedded store, each one
//! transaction, so that any number of coordinators can share one database and hold no
//! state of their own (`kura coordinator --store postgres://…`).
//!
//! How the [`Txn`](super::txn::Txn) guarantees are kept:
//! - A transition runs in one transaction (READ COMMITTED); [`PgTxn::job`] locks the
//!   job's row (`FOR UPDATE`), and every transition locks the job before it changes a
//!   task of it, so transitions of one job are serialised across coordinators.
//!   Leasing locks the chosen task first (`FOR UPDATE SKIP LOCKED`: concurrent leases
//!   take different tasks), then its job. A deadlock or a lost race ends in a retry of
//!   the whole transition ([`crate::TranscodeError::is_retryable`]).
//! - Fencing tokens come from a sequence; results are checked against the task's row
//!   under its job's lock, heartbeats by one conditional `UPDATE` of the task's row
//!   (`WHERE` its token holds it unexpired; [`Postgres::extend_lease`]).
//! - Round trips are what a transition costs on a small database (each statement is a
//!   few tens of µs of CPU on both sides, a round trip wakes both and holds the
//!   transaction's locks): a transaction's `BEGIN` and its writes are not waited for
//!   but sent with its next read or its `COMMIT` (pipelined, `conn.rs`), and the lease
//!   order's changes behind the `COMMIT` (`sched.rs`). A lease is two round trips:
//!   `BEGIN` with one pick (`kura_pick`: the task locked, its job, the worker's
//!   record, the token); the task's write with `COMMIT`, and the charge. A
//!   result is two: `BEGIN` with the job and task locked together
//!   ([`Txn::job_of`](super::txn::Txn::job_of), with the lease holder's record) and
//!   then the job's tasks; the writes with `COMMIT`. A heartbeat is one statement.
//! - The lease order's soft state lives in the `kura_sched_*` tables, changed after
//!   commit (and only then: `sched.rs`) by the functions in `schema.sql`.

mod conn;
mod listen;
mod sched;
mod stats;
mod txn;

use postgres::types::Json;
use serde::Serialize;

pub(super) use txn::PgTxn;

use super::migrate::Exported;
use super::{Batch, Purged};
use crate::error::{Result, TranscodeError};
use crate::model::*;

/// The schema, created by the first coordinator to connect.
const SCHEMA: &str = include_str!("schema.sql");
/// The schema version this build writes; a database with a newer one is refused.
const SCHEMA_VERSION: u32 = 1;
/// Advisory lock key held while the schema is created (any constant unique to kura).
const SCHEMA_LOCK: i64 = 0x6b75_7261_0001;

/// Connections per coordinator. Each transition holds one for its few statements, and
/// the HTTP layer runs transitions on blocking threads, so this bounds how many run at
/// once. More is slower, not faster, once the database's cores are busy: a backend
/// holding a row that every lease updates (a flow's, a tenant's) is preempted by the
/// others and everyone waits. Measured with 600 leasing slots on two cores
/// (BENCHMARKS.md "Coordinators"): 16 → 987, 8 → 1,490, 4 → 1,471 transitions/s. A
/// bigger database is used by running more coordinators.
const POOL_SIZE: u32 = 8;
/// How long a transition waits for a free connection (or a new one) before failing.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often a coordinator measures the database's clock against its own. Clocks
/// drift by far less than a millisecond in this time, and a lease is 30 s.
const CLOCK_REFRESH_MS: u64 = 10_000;

/// Leases that run at once in one coordinator: fewer than its connections, so that a
/// heartbeat or result (which keep work that is under way) never queues behind new
/// leases for a connection. When the database is the bottleneck, the fleet then waits
/// longer for new work instead of losing leases it holds. Measured with 600 slots on
/// two cores, 0.5 s tasks and 1.5 s leases (BENCHMARKS.md "Coordinators"): without
/// it 1,389 transitions/s and 215 leases lost (two coordinators: 1,026/s, 708 lost);
/// with it 1,456–1,760/s and none lost (two: 1,482/s, none).
pub const LEASE_CONNECTIONS: u32 = POOL_SIZE / 2;

/// Connections tried for one statement or transaction whose connection turns out to be
/// closed (the pool hands out connections untested, see [`Postgres::on_conn`]); after
/// a database restart every pooled connection is closed, so the pool's size plus one
/// reaches a new connection.
const STALE_TRIES: u32 = POOL_SIZE + 1;

/// Jobs read per page of an export (with their tasks).
const EXPORT_PAGE: i64 = 500;

/// Most statements a purge step deletes jobs or batches for.
const PURGE_CHUNK: i64 = 256;

type Pool = r2d2::Pool<conn::Manager>;

/// The PostgreSQL backend: a connection pool.
pub(super) struct Postgres {
    /// Always `Some` until dropped (see `Drop`).
    pool: Option<Pool>,
    /// Where the database is (the work listener's own connection).
    config: postgres::Config,

    /// The database's clock minus ours (ms), and when (our clock) it was measured.
    clock: std::sync::Mutex<(i64, Option<u64>)>,

    /// Leases running now (at most [`LEASE_CONNECTIONS`]), and the signal that one ended.
    leasing: (std::sync::Mutex<u32>, std::sync::Condvar),
}

/// A lease's place among the [`LEASE_CONNECTIONS`] (see [`Postgres::lease_slot`]).
pub(super) struct LeaseSlot<'a>(&'a Postgres);

impl Drop for LeaseSlot<'_> {
    fn drop(&mut self) {
        let (count, ended) = &self.0.leasing;
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        ended.notify_one();
    }
}

impl Drop for Postgres {
    /// Each connection is driven by a runtime of its own (`conn.rs`), which cannot be
    /// shut down on a thread that runs async tasks (where the coordinator's last handle
    /// usually drops): the connections are closed on a thread of their own.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

/// Every task of `job`, in `job.tasks` order (outside a transition).
fn tasks_of(c: &mut conn::Conn, job: &Job) -> Result<Vec<Task>> {
    let rows = c.query("SELECT body FROM kura_tasks WHERE job_id = $1", &[&job.id])?;
    Ok(in_job_order(job, rows))
}

/// The tasks of `job` in `rows` (their bodies), in `job.tasks` order.
fn in_job_order(job: &Job, rows: Vec<postgres::Row>) -> Vec<Task> {
    let mut by_id: std::collections::HashMap<String, Task> = rows
        .into_iter()
        .map(|r| r.get::<_, Json<Task>>(0).0)
        .map(|t| (t.id.clone(), t))
        .collect();
    job.tasks.iter().filter_map(|id| by_id.remove(id)).collect()
}

/// A value's serde name (`"queued"`), as stored in the state columns.
fn name<T: Serialize>(v: &T) -> Result<String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(TranscodeError::BadData("state name".into())),
    }
}

/// A millisecond time or count as PostgreSQL's `bigint`.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Postgres {
    /// Connects to `url` and creates the schema if it is missing.
    pub(super) fn connect(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config = url.parse()?;
        let manager = conn::Manager {
            config: config.clone(),
        };
        let config = postgres::Config::from(config);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            // A test before each use is a round trip per transition; a closed
            // connection is found by its first statement instead (`on_conn`, `begin`).
            .test_on_check_out(false)
            .connection_timeout(POOL_WAIT)
            .build(manager)?;
        let store = Self {
            pool: Some(pool),
            config,
            clock: std::sync::Mutex::new((0, None)),
            leasing: Default::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn pool(&self) -> Result<&Pool> {
        self.pool
            .as_ref()
            .ok_or(TranscodeError::Internal("job store closed"))
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<conn::Manager>> {
        Ok(self.pool()?.get()?)
    }

    /// Creates the schema (idempotent), or refuses a database a newer kura wrote.
    fn migrate(&self) -> Result<()> {
        self.conn()?.in_transaction(Self::create_schema)
    }

    /// The schema's statements and version check, in the caller's transaction.
    fn create_schema(c: &mut conn::Conn) -> Result<()> {
        c.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        // Not a notice per object that already exists at every start.
        c.batch_execute("SET LOCAL client_min_messages = warning")?;
        c.batch_execute(SCHEMA)?;
        let found: Option<String> = c
            .query_opt("SELECT value FROM kura_meta WHERE key = 'schema'", &[])?
            .map(|r| r.get(0));
        match found.map(|v| v.parse::<u32>()) {
            Some(Ok(v)) if v > SCHEMA_VERSION => Err(TranscodeError::BadData(format!(
                "the job store's schema is version {v}, newer than this kura's \
                 {SCHEMA_VERSION}: upgrade this coordinator"
            ))),
            Some(Ok(_)) => Ok(()),
            _ => {
                c.execute(
                    "INSERT INTO kura_meta VALUES ('schema', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&SCHEMA_VERSION.to_string()],
                )?;
                Ok(())
            }
        }
    }

    /// The database's clock (ms since the epoch), from ours and the offset measured at
    /// most [`CLOCK_REFRESH_MS`] ago (the last good one while the database is away).
    pub(super) fn now_ms(&self) -> u64 {
        let local = crate::coordinator::now_ms();
        let mut clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        if clock
            .1
            .is_none_or(|at| local.saturating_sub(at) >= CLOCK_REFRESH_MS)
        {
            match self.measure_offset() {
                Ok(offset) => *clock = (offset, Some(local)),
                Err(e) => tracing::warn!(error = %e, "could not read the database's clock"),
            }
        }
        u64::try_from(big(local).saturating_add(clock.0)).unwrap_or(0)
    }

    /// The database's clock minus ours, read halfway through one round trip.
    fn measure_offset(&self) -> Result<i64> {
        let mut c = self.conn()?;
        let before = big(crate::coordinator::now_ms());
        let db: i64 = c
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )?
            .get(0);
        let after = big(crate::coordinator::now_ms());
        Ok(db - (before + after) / 2)
    }

    /// Runs `f` (reads, or a write that may safely run twice) on a pooled connection,
    /// again on another one when the connection it got turns out to be closed: the
    /// database restarted or failed over since the connection was last used.
    fn on_conn<T>(&self, mut f: impl FnMut(&mut conn::Conn) -> Result<T>) -> Result<T> {
        let mut tries = 1;
        loop {
            let mut c = self.conn()?;
            match f(&mut c) {
                Err(_) if c.is_closed() && tries < STALE_TRIES => tries += 1,
                other => return other,
            }
        }
    }

    /// Analyzes the tables changed enough since their last `ANALYZE` (`stats.rs`).
    pub(super) fn refresh_statistics(&self) -> Result<Vec<&'static str>> {
        self.on_conn(stats::refresh)
    }

    /// Wakes `to`'s waiters whenever another coordinator queues a task: `listen.rs`.
    pub(super) fn listen_for_work(&self, to: super::WorkListener) {
        listen::spawn(self.config.clone(), to);
    }

    /// Waits for a place among the [`LEASE_CONNECTIONS`]: held while a lease runs.
    pub(super) fn lease_slot(&self) -> LeaseSlot<'_> {
        let (count, ended) = &self.leasing;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= LEASE_CONNECTIONS {
            n = ended.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        LeaseSlot(self)
    }

    /// A transaction on a pooled connection; its `BEGIN` goes with its first statement
    /// (on another connection if that one turns out closed: `PgTxn::send`).
    pub(super) fn begin(&self) -> Result<PgTxn> {
        let pool = self.pool()?;
        Ok(PgTxn::new(pool.get()?, pool.clone()))
    }

    pub(super) fn job(&self, id: &str) -> Result<Option<Job>> {
        let row =
            self.on_conn(|c| Ok(c.query_opt("SELECT body FROM kura_jobs WHERE id = $1", &[&id])?))?;
        Ok(row.map(|r| r.get::<_, Json<Job>>(0).0))
    }

    pub(super) fn jobs(&self, ids: &[String]) -> Result<Vec<Job>> {
        let rows = self
            .on_conn(|c| Ok(c.query("SELECT body FROM kura_jobs WHERE id = ANY($1)", &[&ids])?))?;
        Ok(rows
            .into_iter()
            .map(|r| r.get::<_, Json<Job>>(0).0)
            .collect())
    }

    pub(super) fn task(&self, id: &str) -> Result<Option<Task>> {
        self.on_conn(|c| txn::read_task(c, id))
    }

    pub(super) fn tasks_of(&self, job: &Job) -> Result<Vec<Task>> {
        self.on_conn(|c| tasks_of(c, job))
    }

    /// Extends `task_id`'s lease to `expires` and records `progress` if `token` holds
    /// it unexpired at `now`, in one statement (its own transaction); false otherwise.
    /// The row changes no indexed column (the lease index is not keyed by expiry), so
    /// the update is HOT. Safe to run twice: a retry on another connection extends again.
    pub(super) fn extend_lease(
        &self,
        task_id: &str,
        token: u64,
        progress: f64,
        now: u64,
        expires: u64,
    ) -> Result<bool> {
        let (token, now, expires) = (token.to_string(), big(now), big(expires));
        let n = self.on_conn(|c| {
            Ok(c.execute(
                "UPDATE kura_tasks SET lease_expires_ms = $4, body = jsonb_set(jsonb_set(body, \
                   '{lease,expires_ms}', to_jsonb($4::bigint)), '{progress}', to_jsonb($5::float8)) \
                 WHERE id = $1 AND state = 'leased' AND body #>> '{lease,token}' = $2 \
                   AND lease_expires_ms > $3",
                &[&task_id, &token, &now, &expires, &progress],
            )?)
        })?;
        Ok(n == 1)
    }

    pub(super) fn batch(&self, id: &str) -> Result<Option<Batch>> {
        let row = self
            .on_conn(|c| Ok(c.query_opt("SELECT body FROM kura_batches WHERE id = $1", &[&id])?))?;
        Ok(row.map(|r| r.get::<_, Json<Batch>>(0).0))
    }

    pub(super) fn queue_depth(&self) -> Result<u64> {
        let n: i64 = self
            .on_conn(|c| {
                Ok(c.query_one(
                    "SELECT count(*) FROM kura_tasks WHERE state = 'queued'",
                    &[],
                )?)
            })?
            .get(0);
        Ok(n.max(0) as u64)
    }

    pub(super) fn list_jobs(
        &self,
        state: Option<JobState>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let state = state.map(|s| name(&s)).transpose()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.on_conn(|c| {
            Ok(c.query(
                "SELECT body FROM kura_jobs \
                 WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR id < $2) \
                 ORDER BY id DESC LIMIT $3",
                &[&state, &before, &limit],
            )?)
        })?;
        Ok(rows
            .into_iter()
            .map(|r| r.get::<_, Json<Job>>(0).0)
            .collect())
    }

    /// Every record, for a migration (see `store::migrate`), a page at a time; returns
    /// the next token.
    pub(super) fn export(&self, sink: &mut dyn FnMut(Exported) -> Result<()>) -> Result<u64> {
        let mut c = self.conn()?;
        let mut after = String::new();
        loop {
            let jobs: Vec<Job> = c
                .query(
                    "SELECT body FROM kura_jobs WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after, &EXPORT_PAGE],
                )?
                .into_iter()
                .map(|r| r.get::<_, Json<Job>>(0).0)
                .collect();
            let Some(last) = jobs.last() else { break };
            after = last.id.clone();
            let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            let mut tasks: std::collections::HashMap<String, Task> = c
                .query(
                    "SELECT body FROM kura_tasks WHERE job_id = ANY($1)",
                    &[&ids],
                )?
                .into_iter()
                .map(|r| r.get::<_, Json<Task>>(0).0)
                .map(|t| (t.id.clone(), t))
                .collect();
            for job in jobs {
                let mine = job.tasks.iter().filter_map(|t| tasks.remove(t)).collect();
                sink(Exported::Job(job, mine))?;
            }
        }
        for r in c.query("SELECT body FROM kura_batches ORDER BY id", &[])? {
            sink(Exported::Batch(r.get::<_, Json<Batch>>(0).0))?;
        }
        for r in c.query("SELECT id, body FROM kura_workers ORDER BY id", &[])? {
            sink(Exported::Worker(r.get(0), r.get::<_, Json<_>>(1).0))?;
        }
        for r in c.query("SELECT body FROM kura_outbox ORDER BY id", &[])? {
            sink(Exported::Outgoing(r.get::<_, Json<_>>(0).0))?;
        }
        // The next token: this timeline above the sequence's next value.
        let row = c.query_one(
            "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint, \
             last_value + 1 FROM kura_tokens",
            &[],
        )?;
        txn::token(row.get(0), row.get(1))
    }

    /// Deletes what ended before `cutoff_ms` (see [`super::Store::purge`]) in bounded
    /// steps, each one transaction.
    pub(super) fn purge(&self, cutoff_ms: u64) -> Result<Purged> {
        let cutoff = big(cutoff_ms);
        let mut purged = Purged::default();
        let mut c = self.conn()?;
        loop {
            let row = c.query_one(
                "WITH b AS (SELECT bb.id FROM kura_batches bb WHERE bb.created_ms < $1 \
                   AND NOT EXISTS (SELECT 1 FROM kura_jobs j WHERE j.batch = bb.id \
                     AND NOT (j.final AND j.updated_ms < $1)) ORDER BY bb.id LIMIT $2), \
                 gj AS (DELETE FROM kura_jobs WHERE batch IN (SELECT id FROM b) RETURNING id), \
                 gt AS (DELETE FROM kura_tasks WHERE job_id IN (SELECT id FROM gj)), \
                 gb AS (DELETE FROM kura_batches WHERE id IN (SELECT id FROM b) RETURNING id) \
                 SELECT (SELECT count(*) FROM gj), (SELECT count(*) FROM gb)",
                &[&cutoff, &PURGE_CHUNK],
            )?;
            let (jobs, batches): (i64, i64) = (row.get(0), row.get(1));
            purged.jobs += jobs as u64;
            purged.batches += batches as u64;
            if batches < PURGE_CHUNK {
                break;
            }
        }
        loop {
            let jobs: i64 = c
                .query_one(
                    "WITH gone AS (DELETE FROM kura_jobs WHERE id IN (SELECT id FROM kura_jobs \
                       WHERE final AND batch IS NULL AND updated_ms < $1 ORDER BY id LIMIT $2) \
                       RETURNING id), \
                     gt AS (DELETE FROM kura_tasks WHERE job_id IN (SELECT id FROM gone)) \
                     SELECT count(*) FROM gone",
                    &[&cutoff, &PURGE_CHUNK],
                )?
                .get(0);
            purged.jobs += jobs as u64;
            if jobs < PURGE_CHUNK {
                return Ok(purged);
            }
        }
    }
}

//! Pooled connections that keep their prepared statements and can pipeline.
//!
//! Every statement the store runs is one of a few dozen fixed strings, so each
//! connection parses and plans each once instead of on every call (half the database's
//! work per transition otherwise). And statements whose answers a transition does not
//! wait for (its writes, `BEGIN`, `COMMIT`) are sent together with the next one it
//! does wait for, in one round trip ([`Conn::pipeline`]): a round trip costs both sides
//! a wake-up and a few system calls, and holds the transaction's row locks meanwhile.
//!
//! A connection is a `tokio-postgres` client driven by a runtime of its own on the
//! calling (blocking) thread, as the synchronous `postgres` client does, which cannot
//! pipeline.

use std::collections::HashMap;

use futures::future::join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::error::TranscodeError;

/// A connection and the statements prepared on it, by their text.
pub(in crate::coordinator::store) struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// Transactions committed on this connection: each one's mark (see `sched.rs`).
    marks: u64,
    /// Dropped last: it drives the client's connection.
    runtime: tokio::runtime::Runtime,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A statement whose rows a transition waits for, with its parameters.
pub(super) type Read<'a> = (&'static str, Params<'a>);

/// What [`Conn::pipeline`] returns: each deferred statement's rows changed, each read's
/// rows (or their errors).
pub(super) type Answers = Result<
    (
        Vec<Result<u64, tokio_postgres::Error>>,
        Vec<Result<Vec<Row>, tokio_postgres::Error>>,
    ),
    tokio_postgres::Error,
>;

/// A statement with its parameters owned, to be sent later with others
/// ([`Conn::pipeline`]).
pub(super) struct Deferred {
    pub(super) sql: &'static str,
    pub(super) params: Vec<Box<dyn ToSql + Sync>>,
}

impl Deferred {
    /// A statement without parameters (`BEGIN`, `COMMIT`).
    pub(super) fn bare(sql: &'static str) -> Self {
        Self {
            sql,
            params: Vec::new(),
        }
    }
}

impl Conn {
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.runtime.block_on(self.client.prepare(sql))?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    pub(super) fn query(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let s = self.prepared(sql)?;
        self.runtime.block_on(self.client.query(&s, p))
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let s = self.prepared(sql)?;
        self.runtime.block_on(self.client.query_opt(&s, p))
    }

    pub(super) fn query_one(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> Result<Row, tokio_postgres::Error> {
        let s = self.prepared(sql)?;
        self.runtime.block_on(self.client.query_one(&s, p))
    }

    pub(super) fn execute(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> Result<u64, tokio_postgres::Error> {
        let s = self.prepared(sql)?;
        self.runtime.block_on(self.client.execute(&s, p))
    }

    /// Sends `deferred` and then `reads` in one round trip, and waits for every answer.
    /// The server runs them in order, each as if sent alone: an error in one does not
    /// stop the others (in a transaction it aborts it, so the statements after it fail
    /// and a `COMMIT` rolls back). Returns each deferred statement's rows changed and
    /// each read's rows, or their errors (or the error of preparing one).
    pub(super) fn pipeline(&mut self, deferred: &[Deferred], reads: &[Read]) -> Answers {
        let statements = deferred
            .iter()
            .map(|d| self.prepared(d.sql))
            .collect::<Result<Vec<_>, _>>()?;
        let reads = reads
            .iter()
            .map(|(sql, p)| Ok((self.prepared(sql)?, *p)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = deferred
            .iter()
            .map(|d| d.params.iter().map(|p| p.as_ref()).collect())
            .collect();
        let client = &self.client;
        let (changed, rows) = self.runtime.block_on(async {
            // Each request goes out when first polled, in this order: `join_all` polls
            // its futures in order, `join!` the deferred ones before the reads.
            let writes = join_all(
                statements
                    .iter()
                    .zip(&params)
                    .map(|(s, p)| client.execute(s, p)),
            );
            let reads = join_all(reads.iter().map(|(s, p)| client.query(s, p)));
            futures::join!(writes, reads)
        });
        Ok((changed, rows))
    }

    /// A value the session's commit mark (`sched.rs`) has never had.
    pub(super) fn next_mark(&mut self) -> String {
        self.marks += 1;
        self.marks.to_string()
    }

    /// Whether the connection is closed (the server went away): the pool drops it.
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Runs `f` in a transaction of its own (plain statements, not deferred): committed
    /// if it succeeds, rolled back if it fails.
    pub(super) fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, TranscodeError>,
    ) -> Result<T, TranscodeError> {
        self.batch_execute("BEGIN")?;
        match f(self) {
            Ok(v) => {
                self.batch_execute("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch_execute("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Runs statements without parameters (transaction control, the schema).
    pub(super) fn batch_execute(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.runtime.block_on(self.client.batch_execute(sql))
    }
}

/// Makes [`Conn`]s for the pool.
pub(super) struct Manager {
    pub(super) config: tokio_postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = TranscodeError;

    fn connect(&self) -> Result<Conn, TranscodeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (client, connection) = runtime.block_on(self.config.connect(NoTls))?;
        // Polled whenever the runtime runs, i.e. while a statement of this connection
        // waits for its answer.
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "job store connection ended");
            }
        });
        Ok(Conn {
            runtime,
            client,
            statements: HashMap::new(),
            marks: 0,
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), TranscodeError> {
        Ok(conn.batch_execute("")?)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.is_closed()
    }
}

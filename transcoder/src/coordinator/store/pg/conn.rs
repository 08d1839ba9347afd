//! Pooled connections that keep their prepared statements: every statement the store
//! runs is one of a few dozen fixed strings, so each connection parses and plans each
//! once instead of on every call (half the database's work per transition otherwise).

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{NoTls, Row, Statement};

/// A connection and the statements prepared on it, by their text.
pub(in crate::coordinator::store) struct Conn {
    client: postgres::Client,
    statements: HashMap<&'static str, Statement>,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Conn {
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    pub(super) fn query(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.prepared(sql)?;
        self.client.query(&s, p)
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.prepared(sql)?;
        self.client.query_opt(&s, p)
    }

    pub(super) fn query_one(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> Result<Row, postgres::Error> {
        let s = self.prepared(sql)?;
        self.client.query_one(&s, p)
    }

    pub(super) fn execute(&mut self, sql: &'static str, p: Params) -> Result<u64, postgres::Error> {
        let s = self.prepared(sql)?;
        self.client.execute(&s, p)
    }

    /// Whether the connection is closed (the server went away): the pool drops it.
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Runs statements without parameters (transaction control, the schema).
    pub(super) fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(sql)
    }
}

/// Makes [`Conn`]s for the pool.
pub(super) struct Manager {
    pub(super) config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Conn, postgres::Error> {
        Ok(Conn {
            client: self.config.connect(NoTls)?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.is_closed()
    }
}

//! Both job stores for the behaviour suites: the embedded RocksDB store in a temp dir,
//! and a real PostgreSQL server started for the test (initdb once into a template kept
//! in /var/tmp, then a copy of it per test on its own loopback port, stopped with the
//! test). `both!` runs each named test function against each store.
#![allow(dead_code)]

use kura_transcoder::coordinator::store::Store;

mod pg_server;
pub use pg_server::PgServer;

/// Where one test's store lives.
pub enum Fixture {
    Rocks(tempfile::TempDir),
    Postgres(PgServer),
}

impl Fixture {
    pub fn rocks() -> Self {
        Fixture::Rocks(tempfile::tempdir().unwrap())
    }

    pub fn postgres() -> Self {
        Fixture::Postgres(PgServer::start())
    }

    /// Another, empty fixture of the same kind.
    pub fn fresh(&self) -> Self {
        match self {
            Fixture::Rocks(_) => Self::rocks(),
            Fixture::Postgres(_) => Self::postgres(),
        }
    }

    /// A store over this fixture's data: a coordinator starting (again).
    pub fn open(&self) -> Store {
        match self {
            Fixture::Rocks(dir) => Store::open(&dir.path().join("db")).unwrap(),
            Fixture::Postgres(pg) => Store::connect(&pg.url()).unwrap(),
        }
    }
}

/// Runs each test function (`fn(&Fixture)`) against both stores, as
/// `rocksdb::NAME` and `postgres::NAME`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod rocksdb {
            $( #[test] fn $name() { super::$name(&super::stores::Fixture::rocks()) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(&super::stores::Fixture::postgres()) } )*
        }
    };
}

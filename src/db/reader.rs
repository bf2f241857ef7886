//! A module's reads: `sqlx::query(..).fetch_all(&db.read)`, the same code on both engines.
//!
//! On PostgreSQL they go through sqlx's pool. On SQLite they run on connections of the
//! module's own (rusqlite, as the writer's), right on the task that asks: a catalog page or an
//! order is tens of microseconds of SQLite's work, while sqlx-sqlite hands every statement to
//! a connection thread and the answer back, two context switches per statement that cost more
//! than the read itself. Each statement holds one connection only while it runs, without an
//! await in between, so a connection per runtime worker thread is all that is ever busy; a
//! few more cover reads from other threads (the writer's, tests).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::{Any, AnyPool, Execute, Executor};
use sqlx_core::any::{AnyRow, AnyStatement, AnyTypeInfo};
use sqlx_core::describe::Describe;

use super::direct::{self, first_row, stream, unsupported, Conn, Direct, Item};

/// Where a module's reads run.
#[derive(Clone)]
pub struct Reader(Inner);

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Inner::Sqlite(_) => "Reader::Sqlite",
            Inner::Pool(_) => "Reader::Pool",
        })
    }
}

#[derive(Clone)]
enum Inner {
    Sqlite(Arc<SqliteReaders>),
    Pool(AnyPool),
}

/// SQLite's read connections of one module.
pub struct SqliteReaders {
    conns: Vec<Direct>,
    next: AtomicUsize,
}

impl SqliteReaders {
    /// A free connection if there is one, else the next in turn (its statement is brief).
    pub(super) fn pick(&self) -> &Direct {
        for conn in &self.conns {
            if !conn.is_poisoned() && conn.try_lock().is_ok() {
                return conn;
            }
        }
        &self.conns[self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len()]
    }
}

impl Reader {
    /// SQLite: `count` read-only connections to `file`.
    pub fn sqlite(file: &std::path::Path, count: usize) -> rusqlite::Result<Reader> {
        let conns = (0..count.max(1))
            .map(|_| direct::open_reader(file))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Reader(Inner::Sqlite(Arc::new(SqliteReaders {
            conns,
            next: AtomicUsize::new(0),
        }))))
    }

    pub fn pool(pool: AnyPool) -> Reader {
        Reader(Inner::Pool(pool))
    }

    /// A connection for several statements in a row: a pooled one on PostgreSQL; on SQLite
    /// each statement still takes whichever reader is free (reads outside a transaction never
    /// promised one snapshot).
    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(match &self.0 {
            Inner::Sqlite(readers) => Conn::Readers(readers.clone()),
            Inner::Pool(pool) => Conn::Pooled(pool.acquire().await?),
        })
    }

    /// PostgreSQL's pool, for what needs a session of its own (advisory locks).
    pub fn postgres_pool(&self) -> Option<&AnyPool> {
        match &self.0 {
            Inner::Pool(pool) => Some(pool),
            Inner::Sqlite(_) => None,
        }
    }

    pub async fn close(&self) {
        if let Inner::Pool(pool) = &self.0 {
            pool.close().await;
        }
    }
}

/// One statement on SQLite's readers: its rows and what it changed, as sqlx's stream items.
fn sqlite_items<'q, E: Execute<'q, Any>>(
    readers: &SqliteReaders,
    mut query: E,
) -> Result<Vec<Item>, sqlx::Error> {
    direct::run(readers.pick(), query.sql(), query.take_arguments())
}

impl<'c> Executor<'c> for &'c Reader {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Item, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &self.0 {
            Inner::Pool(pool) => pool.fetch_many(query),
            Inner::Sqlite(readers) => stream(sqlite_items(readers, query)),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &self.0 {
            Inner::Pool(pool) => pool.fetch_optional(query),
            Inner::Sqlite(readers) => first_row(sqlite_items(readers, query)),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        match &self.0 {
            Inner::Pool(pool) => pool.prepare_with(sql, parameters),
            Inner::Sqlite(_) => Box::pin(std::future::ready(Err(unsupported()))),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        match &self.0 {
            Inner::Pool(pool) => pool.describe(sql),
            Inner::Sqlite(_) => Box::pin(std::future::ready(Err(unsupported()))),
        }
    }
}

//! SQLite driven directly on the module writer's own thread.
//!
//! sqlx runs each SQLite statement on a connection thread of its own and hands every result
//! back across threads: two context switches per statement. A checkout is dozens of
//! statements through one module's writer, one after another, so on a small machine those
//! switches, not SQLite, set the pace. The writer already has a thread to itself, so it keeps
//! its own connection (rusqlite, the same bundled SQLite) and runs each statement right there.
//!
//! [`Conn`] is what a unit of work's statements (and a held read connection's) run on. It
//! implements sqlx's `Executor` for the `Any` driver, so the modules'
//! `sqlx::query(..).execute(uow.conn())` code is the same on every path: sqlx's connections on
//! PostgreSQL (and outside the writer), SQLite's own connections in the writer and readers.

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use rusqlite::types::ValueRef;
use sqlx::error::{BoxDynError, DatabaseError, ErrorKind};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Either, Execute, Executor, Transaction};
use sqlx_core::any::{
    AnyArguments, AnyColumn, AnyQueryResult, AnyRow, AnyTypeInfo, AnyTypeInfoKind, AnyValue,
    AnyValueKind,
};
use sqlx_core::describe::Describe;
use sqlx_core::ext::ustr::UStr;

use super::reader::SqliteReaders;

/// The writer's connection.
pub type Direct = Arc<Mutex<rusqlite::Connection>>;

/// Opens the writer's connection with the module's pragmas.
pub fn open(file: &Path, synchronous: &str) -> rusqlite::Result<Direct> {
    let conn = rusqlite::Connection::open(file)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;"
    ))?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(Arc::new(Mutex::new(conn)))
}

/// Opens one of the module's read connections: reads only, and a wait rather than an error
/// when a checkpoint holds the file for a moment.
pub fn open_reader(file: &Path) -> rusqlite::Result<Direct> {
    let conn = rusqlite::Connection::open(file)?;
    conn.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA query_only = ON;")?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(Arc::new(Mutex::new(conn)))
}

/// Where statements run: a unit of work's transaction, or a connection held for several reads.
pub enum Conn {
    /// sqlx's transaction (PostgreSQL, and SQLite outside the writer).
    Sqlx(Transaction<'static, Any>),
    /// SQLite's writer connection, inside its transaction.
    Direct(Direct),
    /// A PostgreSQL connection from the read pool.
    Pooled(PoolConnection<Any>),
    /// SQLite's readers: each statement takes whichever is free.
    Readers(Arc<SqliteReaders>),
}

impl Conn {
    /// The SQLite connection a statement runs on here, or sqlx's connection.
    fn target(&mut self) -> Either<&Direct, &mut AnyConnection> {
        match self {
            Conn::Sqlx(tx) => Either::Right(&mut **tx),
            Conn::Pooled(conn) => Either::Right(&mut **conn),
            Conn::Direct(conn) => Either::Left(conn),
            Conn::Readers(readers) => Either::Left(readers.pick()),
        }
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Sqlx(_) => "Conn::Sqlx",
            Conn::Direct(_) => "Conn::Direct",
            Conn::Pooled(_) => "Conn::Pooled",
            Conn::Readers(_) => "Conn::Readers",
        })
    }
}

pub(super) type Item = Either<AnyQueryResult, AnyRow>;

impl<'c> Executor<'c> for &'c mut Conn {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, mut query: E) -> BoxStream<'e, Result<Item, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self.target() {
            Either::Right(conn) => conn.fetch_many(query),
            Either::Left(conn) => stream(run(conn, query.sql(), query.take_arguments())),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        mut query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self.target() {
            Either::Right(conn) => conn.fetch_optional(query),
            Either::Left(conn) => first_row(run(conn, query.sql(), query.take_arguments())),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<sqlx::any::AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self.target() {
            Either::Right(conn) => conn.prepare_with(sql, parameters),
            Either::Left(_) => Box::pin(std::future::ready(Err(unsupported()))),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self.target() {
            Either::Right(conn) => conn.describe(sql),
            Either::Left(_) => Box::pin(std::future::ready(Err(unsupported()))),
        }
    }
}

pub(super) fn unsupported() -> sqlx::Error {
    sqlx::Error::Protocol("statements on SQLite's own connections are not prepared apart".into())
}

/// A statement's items as the stream sqlx's `fetch_many` answers.
pub(super) fn stream<'e>(
    items: Result<Vec<Item>, sqlx::Error>,
) -> BoxStream<'e, Result<Item, sqlx::Error>> {
    let items: Vec<_> = match items {
        Ok(items) => items.into_iter().map(Ok).collect(),
        Err(e) => vec![Err(e)],
    };
    Box::pin(futures::stream::iter(items))
}

/// A statement's first row, as sqlx's `fetch_optional` answers.
pub(super) fn first_row<'e>(
    items: Result<Vec<Item>, sqlx::Error>,
) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>> {
    Box::pin(std::future::ready(
        items.map(|items| items.into_iter().find_map(Either::right)),
    ))
}

/// Runs one statement: its rows (if it returns any), then what it changed.
pub(super) fn run(
    conn: &Direct,
    sql: &str,
    arguments: Result<Option<AnyArguments<'_>>, BoxDynError>,
) -> Result<Vec<Item>, sqlx::Error> {
    let arguments = arguments.map_err(sqlx::Error::Encode)?;
    let conn = conn.lock().expect("the writer's connection");
    let mut statement = conn.prepare_cached(sql).map_err(db_error)?;
    if let Some(arguments) = arguments {
        let values = arguments.values.0;
        // SQLite numbers parameters in order of first appearance: `$2` may be the first.
        for index in 1..=statement.parameter_count() {
            let n = match statement.parameter_name(index) {
                Some(name) => name[1..].parse::<usize>().map_err(|_| {
                    sqlx::Error::Protocol(format!("unexpected parameter {name} in {sql}"))
                })?,
                None => index,
            };
            let value = values.get(n - 1).ok_or_else(|| {
                sqlx::Error::Protocol(format!("no value for parameter {n} of {sql}"))
            })?;
            bind(&mut statement, index, value)?;
        }
    }
    let columns = statement.column_count();
    if columns == 0 {
        let changed = statement.raw_execute().map_err(db_error)?;
        return Ok(vec![Either::Left(AnyQueryResult {
            rows_affected: changed as u64,
            last_insert_id: Some(conn.last_insert_rowid()),
        })]);
    }
    let names: Vec<UStr> = statement
        .column_names()
        .into_iter()
        .map(UStr::new)
        .collect();
    let index: Arc<sqlx_core::HashMap<UStr, usize>> = Arc::new(
        names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect(),
    );
    let mut items = Vec::new();
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next().map_err(db_error)? {
        let mut out = AnyRow {
            column_names: index.clone(),
            columns: Vec::with_capacity(columns),
            values: Vec::with_capacity(columns),
        };
        for (i, name) in names.iter().enumerate() {
            let (kind, value) = match row.get_ref(i).map_err(db_error)? {
                ValueRef::Null => (
                    AnyTypeInfoKind::Null,
                    AnyValueKind::Null(AnyTypeInfoKind::Null),
                ),
                ValueRef::Integer(v) => (AnyTypeInfoKind::BigInt, AnyValueKind::BigInt(v)),
                ValueRef::Real(v) => (AnyTypeInfoKind::Double, AnyValueKind::Double(v)),
                ValueRef::Text(v) => (
                    AnyTypeInfoKind::Text,
                    AnyValueKind::Text(Cow::Owned(match std::str::from_utf8(v) {
                        Ok(text) => text.to_owned(),
                        Err(_) => String::from_utf8_lossy(v).into_owned(),
                    })),
                ),
                ValueRef::Blob(v) => (
                    AnyTypeInfoKind::Blob,
                    AnyValueKind::Blob(Cow::Owned(v.to_vec())),
                ),
            };
            out.columns.push(AnyColumn {
                ordinal: i,
                name: name.clone(),
                type_info: AnyTypeInfo { kind },
            });
            out.values.push(AnyValue { kind: value });
        }
        items.push(Either::Right(out));
    }
    drop(rows);
    items.push(Either::Left(AnyQueryResult {
        rows_affected: conn.changes(),
        last_insert_id: None,
    }));
    Ok(items)
}

fn bind(
    statement: &mut rusqlite::CachedStatement<'_>,
    index: usize,
    value: &AnyValueKind<'_>,
) -> Result<(), sqlx::Error> {
    let bound = match value {
        AnyValueKind::Null(_) => statement.raw_bind_parameter(index, rusqlite::types::Null),
        AnyValueKind::Bool(b) => statement.raw_bind_parameter(index, b),
        AnyValueKind::SmallInt(v) => statement.raw_bind_parameter(index, v),
        AnyValueKind::Integer(v) => statement.raw_bind_parameter(index, v),
        AnyValueKind::BigInt(v) => statement.raw_bind_parameter(index, v),
        AnyValueKind::Real(v) => statement.raw_bind_parameter(index, v),
        AnyValueKind::Double(v) => statement.raw_bind_parameter(index, v),
        AnyValueKind::Text(v) => statement.raw_bind_parameter(index, v.as_ref()),
        AnyValueKind::Blob(v) => statement.raw_bind_parameter(index, v.as_ref()),
        other => {
            return Err(sqlx::Error::Encode(
                format!("cannot bind {other:?} in the SQLite writer").into(),
            ))
        }
    };
    bound.map_err(db_error)
}

/// A SQLite error as sqlx reports database errors, so callers can tell a unique violation.
#[derive(Debug)]
struct SqliteFailure {
    error: rusqlite::Error,
    message: String,
}

impl std::fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqliteFailure {}

impl DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        match &self.error {
            rusqlite::Error::SqliteFailure(e, _) => Some(Cow::Owned(e.extended_code.to_string())),
            _ => None,
        }
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match &self.error {
            rusqlite::Error::SqliteFailure(e, _) => match e.extended_code {
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    ErrorKind::UniqueViolation
                }
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
                ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
                ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
                _ => ErrorKind::Other,
            },
            _ => ErrorKind::Other,
        }
    }
}

fn db_error(error: rusqlite::Error) -> sqlx::Error {
    let message = error.to_string();
    sqlx::Error::Database(Box::new(SqliteFailure { error, message }))
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    fn conn() -> (tempfile::TempDir, Conn) {
        let dir = tempfile::tempdir().unwrap();
        let direct = open(&dir.path().join("t.db"), "FULL").unwrap();
        direct
            .lock()
            .unwrap()
            .execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, note TEXT)")
            .unwrap();
        (dir, Conn::Direct(direct))
    }

    #[tokio::test]
    async fn binds_numbered_parameters_by_number_and_reads_rows_back() {
        let (_dir, mut conn) = conn();
        // `$2` comes first in the text: SQLite numbers it 1, the value is still the second.
        let done = sqlx::query("INSERT INTO t (n, id, note) VALUES ($2, $1, $3)")
            .bind("a")
            .bind(7_i64)
            .bind(None::<String>)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
        let row = sqlx::query("SELECT id, n, note FROM t WHERE n = $1 AND id = $1 || ''")
            .bind(7_i64)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        assert!(row.is_none(), "the reused $1 is 7 in both places");
        let (id, n, note): (String, i64, Option<String>) =
            sqlx::query_as("SELECT id, n, note FROM t WHERE id = $1")
                .bind("a")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!((id.as_str(), n, note), ("a", 7, None));
        let updated = sqlx::query("UPDATE t SET n = n + 1 WHERE id = $1 RETURNING n")
            .bind("a")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(updated.get::<i64, _>("n"), 8);
    }

    #[tokio::test]
    async fn a_duplicate_key_is_a_unique_violation() {
        let (_dir, mut conn) = conn();
        let insert = || sqlx::query("INSERT INTO t (id, n) VALUES ($1, 1)").bind("a");
        insert().execute(&mut conn).await.unwrap();
        let err = insert().execute(&mut conn).await.unwrap_err();
        assert!(
            matches!(&err, sqlx::Error::Database(e) if e.is_unique_violation()),
            "{err}"
        );
    }
}

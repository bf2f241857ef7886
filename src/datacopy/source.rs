//! The SQLite side of a copy: one module's file, opened read-only, read in one transaction.
//!
//! The copy reads the file through rusqlite (the same bundled SQLite the shop writes it with)
//! rather than through `Db::open`, which would create the file, set pragmas and apply
//! migrations: the source must stay exactly as the shop left it. (Reading a WAL database
//! read-only still needs its `-wal` and `-shm` side files; SQLite creates them if the shop
//! left none. The database file itself is never written.)

use std::path::Path;

use anyhow::Context;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use super::quote;

/// A module's SQLite file, held in one read transaction so that what is copied and what is
/// verified afterwards are the same snapshot.
pub struct Source {
    conn: Connection,
}

/// A table to copy and the columns it has, in the source's order.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub columns: Vec<String>,
    /// The other tables of the module this one's foreign keys point at.
    pub references: Vec<String>,
}

impl Source {
    /// Opens `file` read-only (a missing file is an error, not a new empty database).
    pub fn open(file: &Path) -> anyhow::Result<Source> {
        if !file.is_file() {
            anyhow::bail!(
                "{} does not exist: is this the shop's data directory?",
                file.display()
            );
        }
        let conn = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open {} read-only", file.display()))?;
        conn.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA query_only = ON; BEGIN;")
            .with_context(|| format!("cannot read {}", file.display()))?;
        Ok(Source { conn })
    }

    /// The versions in `_sqlx_migrations` (empty if the file has none).
    pub fn migrations(&self) -> anyhow::Result<Vec<i64>> {
        if !self.has_table("_sqlx_migrations")? {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")?;
        let versions = stmt.query_map([], |row| row.get(0))?;
        Ok(versions.collect::<Result<_, _>>()?)
    }

    fn has_table(&self, name: &str) -> rusqlite::Result<bool> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
    }

    /// Every table of the module (not SQLite's own, not the migrations' bookkeeping), parents
    /// before the tables whose foreign keys point at them, so inserting in this order never
    /// breaks a constraint. Full-text indexes (FTS5 virtual tables and their shadow tables)
    /// are left out: they are SQLite's own index of rows that are copied, and the target
    /// keeps its own (PostgreSQL's `tsvector` column fills itself). So are `derived_*` tables,
    /// which the target's triggers keep as the copied rows arrive.
    pub fn tables(&self) -> anyhow::Result<Vec<Table>> {
        let mut stmt = self.conn.prepare(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations' \
             AND name NOT LIKE 'derived\\_%' ESCAPE '\\' ORDER BY name",
        )?;
        let names: Vec<String> = stmt
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let mut tables = Vec::new();
        for name in names {
            let columns = self.strings(&format!("PRAGMA table_info({})", quote(&name)), 1)?;
            let mut references =
                self.strings(&format!("PRAGMA foreign_key_list({})", quote(&name)), 2)?;
            references.retain(|r| r != &name);
            references.sort();
            references.dedup();
            tables.push(Table {
                name,
                columns,
                references,
            });
        }
        parents_first(tables)
    }

    /// Column `index` of every row `sql` answers, as text.
    fn strings(&self, sql: &str, index: usize) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self.conn.prepare(sql)?;
        let values = stmt.query_map([], |row| row.get(index))?;
        values.collect()
    }

    /// The AUTOINCREMENT counter SQLite keeps for `table` (it can be above the largest key
    /// left, e.g. once the outbox relay deleted the events it published).
    pub fn autoincrement(&self, table: &str) -> anyhow::Result<Option<i64>> {
        if !self.has_table("sqlite_sequence")? {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT seq FROM sqlite_sequence WHERE name = ?1")?;
        let mut rows = stmt.query([table])?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    }

    /// Up to `limit` rows of `table` after rowid `after`, in rowid order, and the last rowid
    /// read. Paging by rowid keeps memory flat however large a table is (journeys grow).
    pub fn rows_after(
        &self,
        table: &Table,
        after: i64,
        limit: usize,
    ) -> anyhow::Result<(Vec<Vec<Value>>, i64)> {
        let columns: Vec<String> = table.columns.iter().map(|c| quote(c)).collect();
        let sql = format!(
            "SELECT rowid, {} FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            columns.join(", "),
            quote(&table.name)
        );
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .with_context(|| format!("cannot read table {}", table.name))?;
        let mut rows = stmt.query(rusqlite::params![after, limit as i64])?;
        let mut chunk = Vec::with_capacity(limit);
        let mut last = after;
        while let Some(row) = rows.next()? {
            last = row.get(0)?;
            let values = (1..=columns.len())
                .map(|i| row.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()?;
            chunk.push(values);
        }
        Ok((chunk, last))
    }

    /// A query answering one integer (a count or a sum).
    pub fn number(&self, sql: &str) -> anyhow::Result<i64> {
        self.conn
            .query_row(sql, [], |row| row.get(0))
            .with_context(|| format!("source: {sql}"))
    }
}

/// Orders `tables` so that each comes after the tables it references.
fn parents_first(mut pending: Vec<Table>) -> anyhow::Result<Vec<Table>> {
    let mut ordered: Vec<Table> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let known = |t: &Table| {
            t.references.iter().all(|r| {
                ordered.iter().any(|o| &o.name == r) || !pending.iter().any(|p| &p.name == r)
            })
        };
        let Some(next) = pending.iter().position(known) else {
            let names: Vec<_> = pending.iter().map(|t| t.name.as_str()).collect();
            anyhow::bail!("foreign keys form a cycle between {}", names.join(", "));
        };
        ordered.push(pending.remove(next));
    }
    Ok(ordered)
}

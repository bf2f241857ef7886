//! Many rows in one `INSERT`: for imports, where a statement per row would spend its time on
//! round trips (PostgreSQL) and statement preparation (both).

use super::{Backend, Uow};

/// One value of a row to insert: a NULL keeps its column's type, which PostgreSQL checks.
#[derive(Debug, Clone)]
pub enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Cell {
    fn from(v: i64) -> Cell {
        Cell::Int(Some(v))
    }
}

impl From<Option<i64>> for Cell {
    fn from(v: Option<i64>) -> Cell {
        Cell::Int(v)
    }
}

impl From<String> for Cell {
    fn from(v: String) -> Cell {
        Cell::Text(Some(v))
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Cell {
        Cell::Text(Some(v.to_string()))
    }
}

impl From<Option<String>> for Cell {
    fn from(v: Option<String>) -> Cell {
        Cell::Text(v)
    }
}

/// Bind parameters per statement: under SQLite's limit (32,766) and PostgreSQL's (65,535).
const MAX_BINDS: usize = 30_000;

/// Inserts `rows` (each with a value for every one of `columns`) into `table`, as few
/// statements as the engines' parameter limits allow.
pub async fn insert(
    uow: &mut Uow,
    table: &str,
    columns: &[&str],
    rows: &[Vec<Cell>],
) -> Result<u64, sqlx::Error> {
    let per_statement = (MAX_BINDS / columns.len()).max(1);
    let mut inserted = 0;
    for chunk in rows.chunks(per_statement) {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut n = 0;
        for (i, row) in chunk.iter().enumerate() {
            assert_eq!(
                row.len(),
                columns.len(),
                "a row for {table} has the wrong width"
            );
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for column in 0..columns.len() {
                if column > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                match uow.backend() {
                    // SQLite looks numbered parameters up by name, one scan per bind: with
                    // thousands in a statement that dominates. Plain `?` binds in order.
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => sql.push_str(&format!("${n}")),
                }
            }
            sql.push(')');
        }
        let mut query = sqlx::query(&sql);
        for cell in chunk.iter().flatten() {
            query = match cell {
                Cell::Int(v) => query.bind(*v),
                Cell::Text(v) => query.bind(v.as_deref()),
            };
        }
        inserted += query.execute(uow.conn()).await?.rows_affected();
    }
    Ok(inserted)
}

//! The PostgreSQL side of a copy: what the module's schema holds, and inserting into it.
//!
//! Every statement names its schema (`"stock"."products"`), so one connection and one
//! transaction cover all the modules: a copy that fails anywhere leaves the target as it was.

use anyhow::Context;
use rusqlite::types::Value;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row};

use super::quote;

/// PostgreSQL allows at most this many bind parameters in one statement.
const MAX_BINDS: usize = 65_535;
/// Rows per INSERT when the columns allow more: bigger batches gain little.
const MAX_ROWS: usize = 1_000;

/// How a target column takes its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    Bool,
    Bytes,
    Double,
}

impl Kind {
    /// The kind of an `information_schema.columns.data_type`; `None` for types the copy does
    /// not convert to (none of Ekart's migrations use them).
    fn of(data_type: &str) -> Option<Kind> {
        Some(match data_type {
            "bigint" | "integer" | "smallint" => Kind::Int,
            "text" | "character varying" | "character" => Kind::Text,
            "boolean" => Kind::Bool,
            "bytea" => Kind::Bytes,
            "double precision" | "real" => Kind::Double,
            _ => return None,
        })
    }
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

/// The module's tables in the target (not the migrations' bookkeeping, nor the `derived_*`
/// tables its own triggers keep).
pub async fn tables(conn: &mut AnyConnection, schema: &str) -> anyhow::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema::text = $1 AND table_type = 'BASE TABLE' \
         AND table_name <> '_sqlx_migrations' AND table_name::text NOT LIKE 'derived\\_%' \
         ORDER BY table_name",
    )
    .bind(schema)
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The type of each of `columns` in `schema.table`, in that order.
pub async fn kinds(
    conn: &mut AnyConnection,
    schema: &str,
    table: &str,
    columns: &[String],
) -> anyhow::Result<Vec<Kind>> {
    let rows = sqlx::query(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema::text = $1 AND table_name::text = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(conn)
    .await?;
    if rows.is_empty() {
        anyhow::bail!(
            "the target has no table {schema}.{table}: the source was written by another \
             version of Ekart"
        );
    }
    columns
        .iter()
        .map(|column| {
            let row = rows
                .iter()
                .find(|r| r.get::<String, _>(0) == *column)
                .with_context(|| format!("the target has no column {schema}.{table}.{column}"))?;
            let data_type: String = row.get(1);
            Kind::of(&data_type).with_context(|| {
                format!("{schema}.{table}.{column} is {data_type}, which data copy cannot fill")
            })
        })
        .collect()
}

/// The versions in the schema's `_sqlx_migrations`.
pub async fn migrations(conn: &mut AnyConnection, schema: &str) -> anyhow::Result<Vec<i64>> {
    let sql = format!(
        "SELECT version FROM {} WHERE success ORDER BY version",
        qualified(schema, "_sqlx_migrations")
    );
    let rows = sqlx::query(&sql).fetch_all(conn).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A query answering one integer (a count or a sum).
pub async fn number(conn: &mut AnyConnection, sql: &str) -> anyhow::Result<i64> {
    let row = sqlx::query(sql)
        .fetch_one(conn)
        .await
        .with_context(|| format!("target: {sql}"))?;
    Ok(row.get(0))
}

/// Rows per INSERT for a table of `columns` columns, within PostgreSQL's bind limit.
pub fn batch_rows(columns: usize) -> usize {
    (MAX_BINDS / columns.max(1)).clamp(1, MAX_ROWS)
}

/// Inserts `rows` (values in `columns` order) into `schema.table` with one multi-row INSERT.
pub async fn insert(
    conn: &mut AnyConnection,
    schema: &str,
    table: &str,
    columns: &[String],
    kinds: &[Kind],
    rows: Vec<Vec<Value>>,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let width = columns.len();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        qualified(schema, table),
        columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in 0..rows.len() {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * width + c + 1));
        }
        sql.push(')');
    }
    let mut query = sqlx::query(&sql);
    for row in rows {
        for ((value, kind), column) in row.into_iter().zip(kinds).zip(columns) {
            query =
                bind(query, value, *kind).with_context(|| format!("{schema}.{table}.{column}"))?;
        }
    }
    query
        .execute(conn)
        .await
        .with_context(|| format!("cannot insert into {schema}.{table}"))?;
    Ok(())
}

type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// Binds a SQLite value as the target column's type. SQLite lets any column hold any value,
/// so a value is converted when it has a faithful form in the target type, refused if not.
fn bind(query: AnyQuery<'_>, value: Value, kind: Kind) -> anyhow::Result<AnyQuery<'_>> {
    let refuse = |v: &Value| anyhow::anyhow!("cannot store {v:?} as {kind:?}");
    Ok(match (kind, value) {
        (Kind::Int, Value::Null) => query.bind(None::<i64>),
        (Kind::Int, Value::Integer(i)) => query.bind(i),
        (Kind::Int, Value::Real(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => query.bind(f as i64),
        (Kind::Int, Value::Text(t)) => match t.trim().parse::<i64>() {
            Ok(i) => query.bind(i),
            Err(_) => return Err(refuse(&Value::Text(t))),
        },
        (Kind::Text, Value::Null) => query.bind(None::<String>),
        (Kind::Text, Value::Text(t)) => query.bind(t),
        (Kind::Text, Value::Integer(i)) => query.bind(i.to_string()),
        (Kind::Text, Value::Real(f)) => query.bind(f.to_string()),
        (Kind::Bool, Value::Null) => query.bind(None::<bool>),
        (Kind::Bool, Value::Integer(i @ (0 | 1))) => query.bind(i == 1),
        (Kind::Bool, Value::Text(t)) if matches!(t.as_str(), "true" | "false") => {
            query.bind(t == "true")
        }
        (Kind::Bytes, Value::Null) => query.bind(None::<Vec<u8>>),
        (Kind::Bytes, Value::Blob(b)) => query.bind(b),
        (Kind::Bytes, Value::Text(t)) => query.bind(t.into_bytes()),
        (Kind::Double, Value::Null) => query.bind(None::<f64>),
        (Kind::Double, Value::Real(f)) => query.bind(f),
        (Kind::Double, Value::Integer(i)) => query.bind(i as f64),
        (_, other) => return Err(refuse(&other)),
    })
}

/// Sets every sequence of the schema's tables (`outbox.seq`, a BIGSERIAL) past the largest
/// value copied, or past `floor(table)` (SQLite's AUTOINCREMENT counter) if that is higher,
/// so the next row the shop writes never reuses a key.
pub async fn reset_sequences(
    conn: &mut AnyConnection,
    schema: &str,
    floor: impl Fn(&str) -> Option<i64>,
) -> anyhow::Result<Vec<(String, i64)>> {
    let serials = sqlx::query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema::text = $1 \
         AND (column_default::text LIKE 'nextval(%' OR is_identity::text = 'YES') \
         ORDER BY table_name, column_name",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    let mut set = Vec::new();
    for row in serials {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        let name = qualified(schema, &table);
        let largest = number(
            &mut *conn,
            &format!("SELECT COALESCE(MAX({}), 0) FROM {name}", quote(&column)),
        )
        .await?;
        let last = largest.max(floor(&table).unwrap_or(0));
        // is_called = false: the next nextval answers `last + 1`.
        sqlx::query("SELECT setval(pg_get_serial_sequence($1, $2), $3, false)")
            .bind(&name)
            .bind(&column)
            .bind(last + 1)
            .execute(&mut *conn)
            .await
            .with_context(|| format!("cannot reset the sequence of {schema}.{table}.{column}"))?;
        set.push((format!("{schema}.{table}.{column}"), last + 1));
    }
    Ok(set)
}

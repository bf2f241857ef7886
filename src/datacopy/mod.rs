//! `ekart data copy`: moves a shop from its SQLite files to PostgreSQL.
//!
//! A shop that outgrows one process must be on PostgreSQL before its modules can be split.
//! The copy is generic (every table the source has, column by column, converted to the target
//! column's type), so a new migration needs no change here, and it is all or nothing: one
//! transaction on the target, committed only once the copy's numbers match the source's
//! (see `verify.rs`). The SQLite files are only read.

mod source;
mod target;
mod verify;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use sqlx::{AnyConnection, Connection};

use crate::app::Databases;
use crate::config::Settings;
use source::Source;
use verify::{Check, Measure};

/// The modules' databases, in the order they are copied: `data/<name>.db` on SQLite, schema
/// `<name>` on PostgreSQL. Checked against [`Databases`] so a new module cannot be missed.
const MODULES: [&str; 4] = ["stock", "orders", "payment", "users"];

/// What `ekart data copy` was asked.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// `sqlite://DIR/`: the directory holding the modules' files.
    pub from: String,
    /// `postgres://…`: the database the modules' schemas go to.
    pub to: String,
    /// Copy even if the target's tables already hold rows (adds to them).
    pub into_nonempty: bool,
}

/// What a copy did and found.
#[derive(Debug)]
pub struct Report {
    pub checks: Vec<Check>,
    /// Each sequence reset, with the next value it gives.
    pub sequences: Vec<(String, i64)>,
    /// Whether the copy was committed (only when every check matched).
    pub committed: bool,
}

impl Report {
    pub fn matches(&self) -> bool {
        self.checks.iter().all(Check::ok)
    }

    /// The comparison table and the sequences, for the operator.
    pub fn render(&self) -> String {
        let mut out = verify::render(&self.checks);
        for (column, next) in &self.sequences {
            out.push_str(&format!("sequence of {column} continues at {next}\n"));
        }
        out
    }
}

/// Copies every module's tables from `request.from` into `request.to` and verifies them.
/// Answers an error, leaving the target as it was, if the URLs are wrong, a source file is
/// missing, the two sides were written by different migrations, the target holds data (unless
/// `into_nonempty`), or a row cannot be stored; a report with `committed: false` if the numbers
/// differ after copying.
pub async fn copy(request: &CopyRequest) -> anyhow::Result<Report> {
    let dir = source_dir(&request.from)?;
    if !(request.to.starts_with("postgres://") || request.to.starts_with("postgresql://")) {
        anyhow::bail!("--to must be a postgres:// URL (the database to copy into)");
    }
    let sources = MODULES
        .iter()
        .map(|m| Source::open(&dir.join(format!("{m}.db"))))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // The target's schemas and tables come from the shop's own path, migrations and all.
    let mut settings = Settings::default();
    settings.database.url = request.to.clone();
    settings.database.max_connections = 1;
    let databases = Databases::open(&settings)
        .await
        .context("cannot open the target database")?;
    let opened: Vec<&str> = databases.all().iter().map(|db| db.name).collect();
    anyhow::ensure!(
        opened == MODULES,
        "data copy does not know the modules {opened:?}"
    );
    for db in databases.all() {
        db.close().await;
    }

    let mut conn = AnyConnection::connect(&request.to)
        .await
        .context("cannot connect to the target database")?;
    let mut tx = conn.begin().await?;
    let mut measures = Vec::new();
    let mut occupied = Vec::new();
    let mut tables = Vec::with_capacity(MODULES.len());
    for (module, source) in MODULES.into_iter().zip(&sources) {
        let (ours, theirs) = (
            source.migrations()?,
            target::migrations(&mut tx, module).await?,
        );
        if ours != theirs {
            anyhow::bail!(
                "{module}: the SQLite file has migrations {ours:?} and the target {theirs:?}; \
                 run `ekart migrate` on the SQLite shop with the same ekart as this one first"
            );
        }
        for table in target::tables(&mut tx, module).await? {
            let sql = format!("SELECT COUNT(*) FROM {}", target::qualified(module, &table));
            let rows = target::number(&mut tx, &sql).await?;
            if rows > 0 {
                occupied.push(format!("{module}.{table} ({rows} rows)"));
            }
        }
        let ours = source.tables()?;
        measures.extend(Measure::for_module(module, &ours));
        tables.push(ours);
    }
    if !occupied.is_empty() && !request.into_nonempty {
        anyhow::bail!(
            "the target already holds a shop's data: {}. Copy into an empty database, or pass \
             --into-nonempty to add these rows to it (rows whose keys are already there make \
             the whole copy fail). Nothing was copied.",
            occupied.join(", ")
        );
    }
    let mut before = Vec::with_capacity(measures.len());
    for m in &measures {
        before.push(m.of_target(&mut tx).await?);
    }

    let mut sequences = Vec::new();
    for ((module, source), tables) in MODULES.into_iter().zip(&sources).zip(&tables) {
        let mut floors = HashMap::new();
        for table in tables {
            copy_table(&mut tx, module, source, table).await?;
            if let Some(n) = source.autoincrement(&table.name)? {
                floors.insert(table.name.clone(), n);
            }
        }
        let reset = target::reset_sequences(&mut tx, module, |t| floors.get(t).copied()).await?;
        sequences.extend(reset);
    }

    let mut checks = Vec::with_capacity(measures.len());
    for (measure, before) in measures.into_iter().zip(before) {
        let module = MODULES.iter().position(|m| *m == measure.module);
        let source = &sources[module.expect("measures are of known modules")];
        checks.push(Check {
            source: measure.of_source(source)?,
            after: measure.of_target(&mut tx).await?,
            before,
            measure,
        });
    }
    let mut report = Report {
        checks,
        sequences,
        committed: false,
    };
    if report.matches() {
        tx.commit().await.context("cannot commit the copy")?;
        report.committed = true;
    } else {
        tx.rollback().await?;
    }
    Ok(report)
}

/// Copies one table's rows, in batches that fit PostgreSQL's limit on bind parameters.
async fn copy_table(
    conn: &mut AnyConnection,
    module: &str,
    source: &Source,
    table: &source::Table,
) -> anyhow::Result<()> {
    let kinds = target::kinds(conn, module, &table.name, &table.columns).await?;
    let limit = target::batch_rows(table.columns.len());
    let mut after = i64::MIN;
    loop {
        let (rows, last) = source.rows_after(table, after, limit)?;
        let full = rows.len() == limit;
        target::insert(conn, module, &table.name, &table.columns, &kinds, rows).await?;
        if !full {
            return Ok(());
        }
        after = last;
    }
}

/// The directory of a `sqlite://DIR/` URL, as `Db::open` reads it.
fn source_dir(url: &str) -> anyhow::Result<PathBuf> {
    let Some(dir) = url.strip_prefix("sqlite://") else {
        let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
        anyhow::bail!("--from must be a sqlite:// URL (the shop's data directory), not {scheme}:");
    };
    Ok(PathBuf::from(if dir.is_empty() { "." } else { dir }))
}

/// An identifier quoted for both SQLite and PostgreSQL.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

//! What a copy is checked by: the same numbers asked of both sides.
//!
//! A row count per table catches a table or batch left behind; the sums catch values that
//! changed on the way (a quantity or an amount converted wrongly), in the numbers a shop's
//! books are made of.

use std::fmt::Write;

use super::quote;
use super::source::{Source, Table};
use super::target::{self, qualified};

/// Sums that must survive the copy: (module, table, what, SQL expression over the table).
/// The columns are the migrations' (`src/modules/*/migrations/`).
const SUMS: &[(&str, &str, &str, &str)] = &[
    ("stock", "products", "units on hand", "SUM(on_hand)"),
    ("stock", "products", "units reserved", "SUM(reserved)"),
    ("orders", "orders", "order totals", "SUM(total_minor)"),
    (
        "orders",
        "orders",
        "completed order totals",
        "SUM(CASE WHEN status = 'completed' THEN total_minor ELSE 0 END)",
    ),
    (
        "payment",
        "payments",
        "money paid",
        "SUM(CASE WHEN status IN ('succeeded', 'refunded') THEN amount_minor ELSE 0 END)",
    ),
    (
        "payment",
        "payments",
        "money refunded",
        "SUM(CASE WHEN status = 'refunded' THEN amount_minor ELSE 0 END)",
    ),
];

/// One number asked of both sides: `SELECT {expr} FROM {table}`.
#[derive(Debug, Clone)]
pub struct Measure {
    pub module: &'static str,
    pub table: String,
    pub what: String,
    expr: String,
}

impl Measure {
    /// The row count of every table, then the sums of the tables the module has.
    pub fn for_module(module: &'static str, tables: &[Table]) -> Vec<Measure> {
        let has = |name: &str| tables.iter().any(|t| t.name == name);
        let counts = tables.iter().map(|t| Measure {
            module,
            table: t.name.clone(),
            what: "rows".into(),
            expr: "COUNT(*)".into(),
        });
        let sums = SUMS
            .iter()
            .filter(|(m, table, _, _)| *m == module && has(table))
            .map(|(_, table, what, expr)| Measure {
                module,
                table: table.to_string(),
                what: what.to_string(),
                expr: format!("CAST(COALESCE({expr}, 0) AS BIGINT)"),
            });
        counts.chain(sums).collect()
    }

    pub fn of_source(&self, source: &Source) -> anyhow::Result<i64> {
        source.number(&format!("SELECT {} FROM {}", self.expr, quote(&self.table)))
    }

    pub async fn of_target(&self, conn: &mut sqlx::AnyConnection) -> anyhow::Result<i64> {
        let table = qualified(self.module, &self.table);
        target::number(conn, &format!("SELECT {} FROM {table}", self.expr)).await
    }
}

/// A measure's values: in the source, in the target before the copy and after it.
#[derive(Debug, Clone)]
pub struct Check {
    pub measure: Measure,
    pub source: i64,
    pub before: i64,
    pub after: i64,
}

impl Check {
    /// The copy added exactly what the source holds.
    pub fn ok(&self) -> bool {
        self.after - self.before == self.source
    }
}

/// The table printed after a copy.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<42} {:>14} {:>16} {:>16}",
        "compared", "sqlite", "postgres before", "postgres after"
    );
    for c in checks {
        let m = &c.measure;
        let label = format!("{}.{} {}", m.module, m.table, m.what);
        let verdict = if c.ok() { "ok" } else { "DIFFERS" };
        let _ = writeln!(
            out,
            "{label:<42} {:>14} {:>16} {:>16}  {verdict}",
            c.source, c.before, c.after
        );
    }
    out
}

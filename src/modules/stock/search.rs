//! Catalog search with each engine's own full-text index: FTS5 on SQLite, a weighted
//! `tsvector` with GIN on PostgreSQL (migrations `0002_product_search`). Both fold case and
//! accents, match every word of the query as a prefix (search as you type), rank a product's
//! name above its SKU above its description, and put an exact SKU first.
//!
//! The query is never handed to either engine's query language as written: it is cut into
//! words (letters and digits), each quoted as a plain term, so `*`, quotes, `NEAR` or `AND`
//! in what a shopper types are only text.

use crate::db::keyset::{self, Order};
use crate::db::Backend;

/// Best match first: `rank` is the negated score, so every column runs the same way and a
/// search pages by cursor like any other list.
pub const RELEVANCE: Order = Order::ascending(&["rank", "name", "id"]);

/// At most this many words of a query count; the rest are ignored.
const MAX_WORDS: usize = 8;

/// The FTS5 query for `q`: each word a quoted prefix term, all required. `None` when `q` has no
/// word at all (only punctuation), which matches nothing but an exact SKU.
pub fn fts5_query(q: &str) -> Option<String> {
    let terms: Vec<String> = words(q)
        .map(|word| format!("\"{}\"*", word.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

fn words(q: &str) -> impl Iterator<Item = &str> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(MAX_WORDS)
}

/// A search ranks at most this many of its matches (those the index yields first), and
/// counts no further: one past [`keyset::COUNT_CAP`], so the count can say "more than 1,000".
/// Ranking every match of a common word in a catalog of a million would read tens of
/// thousands of rows per keystroke; like most shops' search, a search that broad shows the
/// best of its first thousand matches and says there are more.
pub const CANDIDATES: i64 = keyset::COUNT_CAP + 1;

/// The matching products with their scores (higher is better; an exact SKU above all), as a
/// `WITH` clause naming `best (hit, score)` where `hit` joins `products.{join_key}`. Binds `$1`
/// (the words: FTS5 query on SQLite, the raw text PostgreSQL folds itself) and `$2`, `$3` (the
/// text as typed and upper-cased, for the SKU).
pub fn matches(backend: Backend, with_words: bool) -> (&'static str, String) {
    let exact = "SELECT {key}, CAST(1e12 AS DOUBLE PRECISION) FROM products WHERE sku IN ($2, $3)";
    match backend {
        Backend::Sqlite => {
            let words = "SELECT rowid, -bm25(product_search, 10.0, 5.0, 1.0) FROM product_search \
                         WHERE product_search MATCH $1";
            (
                "rowid",
                with_clause(
                    with_words.then_some(words),
                    &exact.replace("{key}", "rowid"),
                ),
            )
        }
        Backend::Postgres => {
            // PostgreSQL folds the query with the same function as the index, then makes each
            // word a quoted prefix term: `'eclair':* & 'choc':*`. As a scalar subquery it is
            // worked out once, before the scan, so the planner matches it against the GIN
            // index (joined in as a row, it was compared with every product in turn).
            let query =
                "(SELECT to_tsquery('simple', string_agg(quote_literal(w) || ':*', ' & ')) \
                 FROM (SELECT w FROM regexp_split_to_table(btrim(search_folded($1)), ' ') AS w \
                       WHERE w <> '' LIMIT 8) AS ws)";
            let words = format!(
                "SELECT p.id, CAST(ts_rank(p.search, {query}) AS DOUBLE PRECISION) \
                 FROM products p WHERE p.search @@ {query}"
            );
            (
                "id",
                with_clause(
                    with_words.then_some(words.as_str()),
                    &exact.replace("{key}", "id"),
                ),
            )
        }
    }
}

fn with_clause(words: Option<&str>, exact: &str) -> String {
    let hits = match words {
        Some(words) => {
            format!("SELECT * FROM ({words} LIMIT {CANDIDATES}) AS words UNION ALL {exact}")
        }
        None => exact.to_string(),
    };
    format!(
        "WITH hits (hit, score) AS ({hits}), \
         best (hit, score) AS (SELECT hit, MAX(score) FROM hits GROUP BY hit)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_becomes_quoted_prefix_words_and_nothing_else() {
        assert_eq!(
            fts5_query("  Éclair choc "),
            Some("\"Éclair\"* \"choc\"*".into())
        );
        assert_eq!(
            fts5_query("NEAR(a b) OR \"x\"*"),
            Some("\"NEAR\"* \"a\"* \"b\"* \"OR\"* \"x\"*".into())
        );
        assert_eq!(fts5_query("*** -- ''"), None);
        assert_eq!(
            fts5_query("a b c d e f g h i j")
                .unwrap()
                .matches('*')
                .count(),
            MAX_WORDS
        );
    }
}

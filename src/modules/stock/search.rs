//! Catalog search with each engine's own full-text index: FTS5 on SQLite, `tsvector`s with
//! GIN on PostgreSQL (migrations `0002_product_search`, `0004_search_by_tier`). Both fold case
//! and accents and match every word of the query as a prefix (search as you type).
//!
//! Relevance is a tier, not a score: an exact SKU first, then products with every word in
//! their name, then products with the words anywhere (SKU, description); newest first within
//! a tier. A score such as `bm25()` or `ts_rank()` needs every match read and ranked before
//! the first row can be shown (40,000 rows for "lamp" in a catalog of a million); a tier is
//! one index read in the table's own order, stopped as soon as a page is full, so what a
//! search costs does not grow with how many products it matches. The same order on both
//! engines by construction.
//!
//! The query is never handed to either engine's query language as written: it is cut into
//! words (letters and digits), each quoted as a plain term, so `*`, quotes, `NEAR` or `AND`
//! in what a shopper types are only text.

use crate::db::keyset::{self, Order};
use crate::db::Backend;

/// Best tier first, newest first within it: `tier` is a [`Tier`], `seq` the order products
/// were added in (SQLite's rowid, PostgreSQL's time-ordered UUIDv7 id).
pub const RELEVANCE: Order = Order::descending(&["tier", "seq"]);

/// At most this many words of a query count; the rest are ignored.
const MAX_WORDS: usize = 8;

/// A sorted search (`q` with `sort`) orders at most this many matches (those the index
/// yields first), one past [`keyset::COUNT_CAP`], as far as numbered pages reach.
pub const CANDIDATES: i64 = keyset::COUNT_CAP + 1;

/// How well a product matches, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The query is the product's SKU.
    Sku = 3,
    /// Every word is in the product's name.
    Name = 2,
    /// Every word is somewhere: name, SKU or description (and not all in the name).
    Elsewhere = 1,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Sku, Tier::Name, Tier::Elsewhere];

    pub fn from_key(n: i64) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| *t as i64 == n)
    }
}

/// A shopper's query, cut into words.
pub struct Query {
    /// As typed (trimmed) and upper-cased: an exact SKU.
    pub sku: [String; 2],
    words: Vec<String>,
}

impl Query {
    pub fn parse(q: &str) -> Query {
        let q = q.trim();
        Query {
            sku: [q.to_string(), q.to_uppercase()],
            words: q
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .take(MAX_WORDS)
                .map(str::to_string)
                .collect(),
        }
    }

    /// No word at all (only punctuation): it can match nothing but an exact SKU.
    pub fn has_words(&self) -> bool {
        !self.words.is_empty()
    }

    /// What [`tiers_sql`] binds as `tier`'s match; none for the SKU tier, which matches
    /// [`Query::sku`] (`$1`, `$2`).
    pub fn tier_match(&self, backend: Backend, tier: Tier) -> Option<String> {
        Some(match (backend, tier) {
            (_, Tier::Sku) => return None,
            (Backend::Sqlite, Tier::Name) => format!("name : ({})", self.fts5()),
            (Backend::Sqlite, Tier::Elsewhere) => {
                format!("({all}) NOT name : ({all})", all = self.fts5())
            }
            (Backend::Postgres, _) => self.tsquery(),
        })
    }

    /// What [`count_sql`] and [`candidates_sql`] bind as `$1`: every word anywhere.
    pub fn all_match(&self, backend: Backend) -> String {
        match backend {
            Backend::Sqlite => self.fts5(),
            Backend::Postgres => self.tsquery(),
        }
    }

    /// Each word as PostgreSQL's index holds it: folded, and no longer than the beginnings it
    /// keeps (a longer word is looked up by its beginning, then matched as a prefix).
    pub fn lexemes(&self) -> Vec<String> {
        self.words
            .iter()
            .map(|word| folded(word).chars().take(PREFIX_LETTERS).collect())
            .collect()
    }

    /// Each word a quoted FTS5 prefix term, all required; FTS5's tokenizer folds them.
    fn fts5(&self) -> String {
        self.words
            .iter()
            .map(|word| format!("\"{}\"*", word.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Each word folded as the index folds it (`search_folded`), all required. The index holds
    /// every word's beginnings up to [`PREFIX_LETTERS`] letters as lexemes of their own
    /// (migration 0004), so a word that short is an exact lexeme, whose frequency the planner
    /// knows: `'eclair' & 'choc'`; a longer one is its indexed beginning and the prefix:
    /// `'chocolat' & 'chocolate':*`. Built here, not in SQL, so the planner sees the words.
    fn tsquery(&self) -> String {
        let quoted = |lexeme: &str| lexeme.replace('\\', "\\\\").replace('\'', "''");
        self.words
            .iter()
            .map(|word| {
                let word = folded(word);
                match word.char_indices().nth(PREFIX_LETTERS) {
                    None => format!("'{}'", quoted(&word)),
                    Some((end, _)) => {
                        format!("'{}' & '{}':*", quoted(&word[..end]), quoted(&word))
                    }
                }
            })
            .collect::<Vec<_>>()
            .join(" & ")
    }
}

/// The longest word beginnings PostgreSQL's index keeps as lexemes (`search_prefixes`, migration
/// 0004) and SQLite's FTS5 keeps in its prefix index (the same migration).
const PREFIX_LETTERS: usize = 8;

/// What PostgreSQL's `search_folded` (migration `0002_product_search`) does to one word:
/// Latin letters lose their accents, then everything is lower case.
fn folded(word: &str) -> String {
    word.chars()
        .map(|c| {
            ACCENTED
                .chars()
                .position(|a| a == c)
                .and_then(|i| PLAIN.chars().nth(i))
                .unwrap_or(c)
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// `search_folded`'s `translate` table, letter for letter.
const ACCENTED: &str = "ÀàáÁÂâãÃÄäåÅĀāăĂĄąçÇćĆĈĉċĊČčďĎđĐÈèÉéÊêËëēĒĔĕĖėęĘĚěĜĝğĞĠġģĢĤĥĦħìÌÍíîÎÏïĨĩīĪĭĬĮįıIĵĴĶķĺĹļĻĽľĿŀŁłÑñŃńņŅŇňŉÒòÓóÔôÕõöÖØøŌōŏŎŐőŔŕŗŖŘřŚśŜŝşŞŠšșȘţŢťŤŧŦțȚÙùÚúûÛÜüũŨūŪŬŭůŮŰűųŲŴŵÝýŸÿŶŷŹźżŻŽž";
const PLAIN: &str = "aaaaaaaaaaaaaaaaaaccccccccccddddeeeeeeeeeeeeeeeeeegggggggghhhhiiiiiiiiiiiiiiiiiijjkkllllllllllnnnnnnnnnoooooooooooooooooorrrrrrssssssssssttttttttuuuuuuuuuuuuuuuuuuuuwwyyyyyyzzzzzz";

/// The placeholders of a search's read ([`tiers_sql`]): `$1`, `$2` the SKU as typed and
/// upper-cased, `$3` the most rows to answer; then each tier's match
/// ([`Query::tier_match`]) from `$4` on, one per tier read but the SKU's; then, when counted
/// in the same statement, every word anywhere ([`Query::all_match`]); last, for a cursor, the
/// `seq` to continue after in the first tier read.
const FIRST_MATCH: usize = 4;

/// The products of one tier, newest first, with their `tier` and `seq` columns: `$m` the
/// tier's match, `$a` (with `after`) the `seq` to continue after, numbered as in
/// [`FIRST_MATCH`]. Products matching the SKU exactly are left out of the other tiers. `few`
/// says the query matches at most about [`FEW`] products in all.
fn tier_sql(
    backend: Backend,
    columns: &str,
    tier: Tier,
    m: usize,
    after: Option<usize>,
    few: bool,
) -> String {
    let t = tier as i64;
    let key = match backend {
        Backend::Sqlite => "rowid",
        Backend::Postgres => "id",
    };
    let after = after.map_or(String::new(), |a| format!("AND {key} < ${a}"));
    match (backend, tier) {
        (_, Tier::Sku) => format!(
            "SELECT {columns}, {t} AS tier, {key} AS seq FROM products \
             WHERE sku IN ($1, $2) {after} ORDER BY {key} DESC LIMIT $3"
        ),
        // FTS5 reads its doclists newest first and stops at the limit; two more than asked
        // for, in case the exact SKU is among them.
        (Backend::Sqlite, _) => format!(
            "SELECT {columns}, {t} AS tier, rowid AS seq FROM products \
             WHERE rowid IN (SELECT rowid FROM product_search WHERE product_search MATCH ${m} \
                             {after} ORDER BY rowid DESC LIMIT $3 + 2) \
             AND sku <> $1 AND sku <> $2 ORDER BY rowid DESC LIMIT $3"
        ),
        // Few matches: collected from GIN first (the subquery is a fence the planner keeps)
        // and only they are sorted.
        (Backend::Postgres, _) if few => format!(
            "SELECT {columns}, {t} AS tier, id AS seq \
             FROM (SELECT * FROM products WHERE {gin} OFFSET 0) AS matched \
             WHERE {rest} {after} ORDER BY id DESC LIMIT $3",
            gin = postgres_index_match(tier, m),
            rest = postgres_tier_match(tier, m),
        ),
        // Many matches: walk the newest products, testing each, for at most `WALK` of them;
        // then, if the page is not full, collect the matches older than those from GIN. GIN
        // yields matches in no useful order, so collecting sorts every one of them (5 ms for
        // 40,000); the walk finds a page of a common word in a few hundred products. Bounded,
        // because words common on their own can be rare together, or all among the oldest
        // products: unbounded, such a walk read all million products (a second or more).
        // The second read runs only when the first leaves the page short (`Append` under a
        // `LIMIT`), and so does the subquery finding where the walk ended.
        (Backend::Postgres, _) => {
            let rest = postgres_tier_match(tier, m);
            let (newest, walked) = match tier {
                // The name tier walks the narrow copy of each product's name vector (migration
                // 0005), read from its index alone; then the page's products by key.
                Tier::Name => {
                    let newest = format!(
                        "SELECT id, name_search FROM derived_product_names WHERE TRUE {after} \
                         ORDER BY id DESC LIMIT {WALK}"
                    );
                    let walked = format!(
                        "SELECT {columns}, {t} AS tier, id AS seq \
                         FROM (SELECT id FROM ({newest}) AS newest \
                               WHERE name_search @@ ${m}::tsquery \
                               ORDER BY id DESC LIMIT $3 + 2) AS walked_names \
                         JOIN products USING (id) WHERE sku <> $1 AND sku <> $2 \
                         ORDER BY id DESC LIMIT $3"
                    );
                    (newest, walked)
                }
                _ => {
                    let newest = format!(
                        "SELECT * FROM products WHERE TRUE {after} ORDER BY id DESC LIMIT {WALK}"
                    );
                    let walked = format!(
                        "SELECT {columns}, {t} AS tier, id AS seq FROM ({newest}) AS newest \
                         WHERE {rest} ORDER BY id DESC LIMIT $3"
                    );
                    (newest, walked)
                }
            };
            format!(
                "SELECT * FROM ({walked}) AS walked \
                 UNION ALL \
                 SELECT * FROM (SELECT {columns}, {t} AS tier, id AS seq \
                 FROM (SELECT * FROM products WHERE {gin} OFFSET 0) AS matched \
                 WHERE {rest} AND id < (SELECT min(id) FROM ({newest}) AS walk) \
                 ORDER BY id DESC LIMIT $3) AS collected",
                gin = postgres_index_match(tier, m),
            )
        }
    }
}

/// At most this many of the newest products are tested one by one for a PostgreSQL tier with
/// many matches ([`tier_sql`]) before the rest are collected from GIN.
const WALK: i64 = 10_000;

/// What PostgreSQL's GIN finds a tier's candidates by (`$m` its tsquery).
fn postgres_index_match(tier: Tier, m: usize) -> String {
    match tier {
        Tier::Name => format!("name_search @@ ${m}::tsquery"),
        _ => format!("search @@ ${m}::tsquery"),
    }
}

/// Everything a product must be to be in a PostgreSQL tier but the SKU's.
fn postgres_tier_match(tier: Tier, m: usize) -> String {
    let words = match tier {
        Tier::Elsewhere => {
            format!("search @@ ${m}::tsquery AND NOT name_search @@ ${m}::tsquery")
        }
        _ => format!("name_search @@ ${m}::tsquery"),
    };
    format!("{words} AND sku <> $1 AND sku <> $2")
}

/// A search's page in one statement: the `tiers` (best first) each read newest first and
/// stopped at the page, one after another: a `UNION ALL` under a `LIMIT` stops reading as
/// soon as the page is full (PostgreSQL's `Append`, SQLite's compound select), so a lower
/// tier costs nothing when a better one fills the page, and its rows come in tier order.
/// The cursor (`after`) applies to the first tier. With `counted`, each row carries
/// `matched`: every word anywhere counted up to one past [`keyset::SEARCH_COUNT_CAP`].
/// Placeholders as in [`FIRST_MATCH`].
pub fn tiers_sql(
    backend: Backend,
    columns: &str,
    tiers: &[Tier],
    after: bool,
    counted: bool,
    few: bool,
) -> String {
    let mut next = FIRST_MATCH;
    let mut placeholder = || {
        next += 1;
        next - 1
    };
    let matches: Vec<Option<usize>> = tiers
        .iter()
        .map(|tier| (*tier != Tier::Sku).then(&mut placeholder))
        .collect();
    let words = counted.then(&mut placeholder);
    let after = after.then(&mut placeholder);
    let reads = tiers
        .iter()
        .zip(matches)
        .enumerate()
        .map(|(n, (tier, m))| {
            let after = if n == 0 { after } else { None };
            let read = tier_sql(backend, columns, *tier, m.unwrap_or(0), after, few);
            format!("SELECT * FROM ({read}) AS tier{}", *tier as i64)
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    match words {
        Some(w) => format!(
            "SELECT found.*, ({}) AS matched FROM ({reads} LIMIT $3) AS found",
            count_sql(backend, w)
        ),
        None => format!("{reads} LIMIT $3"),
    }
}

/// The planner's plan for the products with every word anywhere ([`Query::all_match`] as
/// `$1`, PostgreSQL only): its first line carries the estimated number of rows.
pub const ESTIMATE_SQL: &str = "EXPLAIN SELECT 1 FROM products WHERE search @@ $1::tsquery";

/// Up to this many expected matches, PostgreSQL collects each tier's matches from GIN
/// (`tiers_sql`'s `few`) and counts them; past it, it walks the newest products for a page
/// and shows the planner's estimate as the total.
pub const FEW: i64 = keyset::COUNT_CAP;

/// The rows the top node of an `EXPLAIN` expects: `... (cost=0.00..1.00 rows=41235 width=0)`.
pub fn estimated_rows(plan: &[String]) -> Option<i64> {
    let line = plan.first()?;
    let rows = &line[line.find(" rows=")? + " rows=".len()..];
    rows.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// An estimate to two significant digits (41,235 → 41,000): more would claim a precision an
/// estimate does not have.
pub fn rounded(estimate: i64) -> i64 {
    let mut unit = 1;
    while estimate / unit >= 100 {
        unit *= 10;
    }
    (estimate + unit / 2) / unit * unit
}

/// Leaf pages of SQLite's full-text index one folding step writes (`StockStore::fold_search_index`):
/// about 15 ms of the writer's time, so checkouts barely wait behind a step.
pub const FOLD_PAGES: i64 = 100;

/// Counts the products with every word anywhere ([`Query::all_match`] as `$words`), stopping one
/// past [`keyset::SEARCH_COUNT_CAP`].
pub fn count_sql(backend: Backend, words: usize) -> String {
    keyset::capped_count(
        &match backend {
            Backend::Sqlite => {
                format!("SELECT 1 FROM product_search WHERE product_search MATCH ${words}")
            }
            Backend::Postgres => {
                format!("SELECT 1 FROM products WHERE search @@ ${words}::tsquery")
            }
        },
        keyset::SEARCH_COUNT_CAP,
    )
}

/// The products a sorted search orders, as a `WITH` clause naming `best (hit)` where `hit`
/// joins `products.{key}`: the first [`CANDIDATES`] the index yields with every word anywhere
/// (`$1`, when `with_words`) and an exact SKU (`$2`, `$3`).
pub fn candidates_sql(backend: Backend, with_words: bool) -> (&'static str, String) {
    let (key, words) = match backend {
        Backend::Sqlite => (
            "rowid",
            "SELECT rowid FROM product_search WHERE product_search MATCH $1",
        ),
        Backend::Postgres => ("id", "SELECT id FROM products WHERE search @@ $1::tsquery"),
    };
    let exact = format!("SELECT {key} FROM products WHERE sku IN ($2, $3)");
    let hits = match with_words {
        true => format!("SELECT * FROM ({words} LIMIT {CANDIDATES}) AS words UNION {exact}"),
        false => exact,
    };
    (key, format!("WITH best (hit) AS ({hits})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_read_from_the_plans_first_line() {
        let plan = [
            "Bitmap Heap Scan on products  (cost=399.57..78636.63 rows=41235 width=4)".into(),
            "  ->  Bitmap Index Scan on products_search  (cost=0.00..389.27 rows=9 width=0)".into(),
        ];
        assert_eq!(estimated_rows(&plan), Some(41235));
        assert_eq!(estimated_rows(&["Result".into()]), None);
        assert_eq!(estimated_rows(&[]), None);
    }

    #[test]
    fn an_estimate_keeps_two_digits() {
        assert_eq!(rounded(41_235), 41_000);
        assert_eq!(rounded(12_100), 12_000);
        assert_eq!(rounded(1_950), 2_000);
        assert_eq!(rounded(99), 99);
    }

    #[test]
    fn a_query_becomes_quoted_prefix_words_and_nothing_else() {
        let q = Query::parse("  Éclair choc ");
        assert_eq!(q.all_match(Backend::Sqlite), "\"Éclair\"* \"choc\"*");
        assert_eq!(q.all_match(Backend::Postgres), "'eclair' & 'choc'");
        assert_eq!(
            Query::parse("Chocolates").all_match(Backend::Postgres),
            "'chocolat' & 'chocolates':*"
        );
        assert_eq!(
            q.tier_match(Backend::Sqlite, Tier::Elsewhere).unwrap(),
            "(\"Éclair\"* \"choc\"*) NOT name : (\"Éclair\"* \"choc\"*)"
        );
        assert_eq!(q.tier_match(Backend::Postgres, Tier::Sku), None);
        assert_eq!(q.sku, ["Éclair choc", "ÉCLAIR CHOC"]);
        assert_eq!(q.lexemes(), ["eclair", "choc"]);
        assert_eq!(Query::parse("Chocolates").lexemes(), ["chocolat"]);
        assert_eq!(
            Query::parse("NEAR(a b) OR \"x\"*").all_match(Backend::Sqlite),
            "\"NEAR\"* \"a\"* \"b\"* \"OR\"* \"x\"*"
        );
        assert_eq!(
            Query::parse("a:* & !b | 'c'").all_match(Backend::Postgres),
            "'a' & 'b' & 'c'"
        );
        assert!(!Query::parse("*** -- ''").has_words());
        assert_eq!(
            Query::parse("a b c d e f g h i j")
                .all_match(Backend::Sqlite)
                .matches('*')
                .count(),
            MAX_WORDS
        );
    }

    #[test]
    fn words_fold_as_the_postgres_index_folds_them() {
        assert_eq!(ACCENTED.chars().count(), PLAIN.chars().count());
        assert_eq!(folded("ÉCLAIR"), "eclair");
        assert_eq!(folded("Crème"), "creme");
        assert_eq!(folded("Łódź"), "lodz");
        assert_eq!(folded("ΣΟΦΙΑ"), "σοφια");
    }
}

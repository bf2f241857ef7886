//! The stock module's SQL: products and the reservations held for orders.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::error::StockError;
use super::events::{ReservedLine, StockRejected, StockReserved};
use super::model::{NewProduct, Product, ProductPage, ProductPatch, ProductQuery, SortKey};
use super::search;
use crate::contracts::order::LineQuantity;
use crate::db::bulk::{self, Cell};
use crate::db::keyset::{self, Paging, Window};
use crate::db::{now_ms, padded_to_power_of_two, placeholders, rfc3339, Backend, Conn, Db, Uow};
use crate::domain;

const COLUMNS: &str =
    "id, sku, name, description, price_minor, currency, on_hand, reserved, created_at, updated_at";

#[derive(Clone)]
pub struct StockStore {
    pub(super) db: Db,
    /// The PostgreSQL planner's estimate of how many products a search matches (`None`: its
    /// plan had none), by query. An `EXPLAIN` is a statement of its own, sent unprepared (two
    /// round trips), and the estimate changes only when the statistics do (`ANALYZE`, by
    /// autovacuum), so it is kept a minute.
    estimates: moka::sync::Cache<String, Option<i64>>,
    /// The words PostgreSQL's statistics know how common they are (`most_common_elems` of
    /// `products.search`), read once a minute: [`StockStore::count_first`].
    common_words: moka::sync::Cache<(), Arc<HashSet<String>>>,
    /// Search pages answered lately ([`StockStore::list`]): which products, in which order,
    /// how many in all and where the next page starts, at the search generation they were
    /// read at. `None`: searches are never kept.
    searches: Option<moka::sync::Cache<SearchKey, Arc<SearchPage>>>,
}

/// A search page as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SearchKey {
    q: String,
    sort: &'static str,
    page: Option<u32>,
    per_page: u32,
    cursor: Option<String>,
}

/// A search page as answered, at the search generation it was read at: its products' ids,
/// and the page without them (they are read afresh: their stock moves without moving the
/// generation).
struct SearchPage {
    generation: i64,
    ids: Vec<String>,
    bare: ProductPage,
}

/// Search pages kept by default.
const SEARCH_PAGES: u64 = 10_000;

/// The answer to a placed order.
pub enum Reservation {
    Reserved(StockReserved),
    Rejected(StockRejected),
    /// This order already has reservations (a repeated request): nothing to do.
    AlreadyHandled,
}

fn product(row: &AnyRow) -> Result<Product, sqlx::Error> {
    let on_hand: i64 = row.try_get("on_hand")?;
    let reserved: i64 = row.try_get("reserved")?;
    Ok(Product {
        id: row.try_get("id")?,
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price_minor: row.try_get("price_minor")?,
        currency: row.try_get("currency")?,
        on_hand,
        reserved,
        available: on_hand - reserved,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

/// `rows` (read through `paging`'s window) as the page answered, its `next` link carrying
/// `params`.
fn page_of(
    mut rows: Vec<AnyRow>,
    total: Total,
    paging: &Paging,
    params: &[(&str, &str)],
) -> Result<ProductPage, StockError> {
    let next = paging.next(&mut rows, "/api/products", params)?;
    Ok(ProductPage {
        items: rows.iter().map(product).collect::<Result<_, _>>()?,
        page: paging.page(),
        per_page: paging.per_page(),
        total: total.n,
        total_capped: total.capped,
        total_estimated: total.estimated,
        next_cursor: next.cursor,
        next: next.link,
    })
}

/// The products with `ids`, in that order; None if one is gone.
async fn products_in(conn: &mut Conn, ids: &[String]) -> Result<Option<Vec<Product>>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Some(vec![]));
    }
    let padded = padded_to_power_of_two(ids);
    let sql = format!(
        "SELECT {COLUMNS} FROM products WHERE id IN ({})",
        placeholders(1, padded.len())
    );
    let mut query = sqlx::query(&sql);
    for id in padded {
        query = query.bind(id);
    }
    let mut found: HashMap<String, Product> = query
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| product(row).map(|p| (p.id.clone(), p)))
        .collect::<Result<_, _>>()?;
    Ok(ids.iter().map(|id| found.remove(id)).collect())
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// How many products a list holds: exact, counted up to a cap, or estimated.
struct Total {
    n: i64,
    capped: bool,
    estimated: bool,
}

impl Total {
    fn exact(n: i64) -> Total {
        Total {
            n,
            capped: false,
            estimated: false,
        }
    }

    /// A count that stopped one past `cap`.
    fn counted(counted: i64, cap: i64) -> Total {
        let (n, capped) = keyset::capped(counted, cap);
        Total {
            n,
            capped,
            estimated: false,
        }
    }

    fn estimated(n: i64) -> Total {
        Total {
            n: search::rounded(n),
            capped: false,
            estimated: true,
        }
    }
}

/// How a search learns its total ([`StockStore::count_first`]).
enum Counted {
    /// Counted before its page is read; `few`: the matches are few enough to collect from the
    /// index (PostgreSQL, `search::tiers_sql`).
    Before { total: Total, few: bool },
    /// Not counted: the planner expects very many matches; the total is its estimate.
    Estimated(Total),
    /// Counted by the statement that reads the page.
    InRead,
}

impl StockStore {
    pub fn new(db: Db) -> StockStore {
        StockStore {
            db,
            estimates: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
            common_words: moka::sync::Cache::builder()
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
            searches: None,
        }
        .keeping_searches(SEARCH_PAGES)
    }

    /// This store, keeping up to `pages` search pages (0: none) until what searches read
    /// changes (`derived_counts`' `search_generation`, moved by the database's triggers on
    /// every write to a product's SKU, name, description or price, in any process).
    pub fn keeping_searches(mut self, pages: u64) -> StockStore {
        self.searches = (pages > 0).then(|| moka::sync::Cache::new(pages));
        self
    }

    /// The stock module's database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A page of the catalog: all of it in the chosen order, or the products matching `q`
    /// (best match first unless a sort is chosen). Numbered pages count their way in with
    /// `OFFSET`; a `cursor` starts right after the previous page's last row (`db/keyset.rs`).
    pub async fn list(&self, query: &ProductQuery) -> Result<ProductPage, StockError> {
        let q = query.q.as_deref().map(str::trim).unwrap_or("");
        if q.chars().count() > 100 {
            return Err(StockError::BadQuery(
                "q must be at most 100 characters".into(),
            ));
        }
        let order = match (q.is_empty(), query.sort) {
            (_, Some(sort)) => sort.order(),
            (true, None) => SortKey::default().order(),
            (false, None) => search::RELEVANCE,
        };
        let sort = query.sort.map_or("", SortKey::as_str);
        let paging = Paging::new(
            format!("products:{sort}:{q}"),
            order,
            query.page,
            query.per_page,
            query.cursor.as_deref(),
        )?;
        if q.is_empty() {
            let (rows, total) = self.all(&paging.window()).await?;
            return page_of(rows, total, &paging, &[("sort", sort)]);
        }
        let Some(searches) = &self.searches else {
            return self.search_page(q, query.sort, &paging).await;
        };
        let key = SearchKey {
            q: q.to_string(),
            sort,
            page: query.page,
            per_page: paging.per_page(),
            cursor: query.cursor.clone(),
        };
        let mut conn = self.db.read.acquire().await?;
        let generation: i64 =
            sqlx::query_scalar("SELECT n FROM derived_counts WHERE name = 'search_generation'")
                .fetch_one(&mut conn)
                .await?;
        if let Some(kept) = searches.get(&key).filter(|k| k.generation == generation) {
            if let Some(items) = products_in(&mut conn, &kept.ids).await? {
                metrics::counter!("ekart_search_pages_total", "read" => "kept").increment(1);
                return Ok(ProductPage {
                    items,
                    ..kept.bare.clone()
                });
            }
        }
        drop(conn);
        let page = self.search_page(q, query.sort, &paging).await?;
        let kept = SearchPage {
            generation,
            ids: page.items.iter().map(|p| p.id.clone()).collect(),
            bare: ProductPage {
                items: vec![],
                ..page.clone()
            },
        };
        searches.insert(key, Arc::new(kept));
        Ok(page)
    }

    /// A page of the products matching `q`, read from the index: best match first, or in
    /// `sort`'s order.
    async fn search_page(
        &self,
        q: &str,
        sort: Option<SortKey>,
        paging: &Paging,
    ) -> Result<ProductPage, StockError> {
        metrics::counter!("ekart_search_pages_total", "read" => "searched").increment(1);
        let (rows, total) = match sort {
            None => self.search(q, &paging.window()).await?,
            Some(_) => self.sorted_search(q, &paging.window()).await?,
        };
        let sort = sort.map_or("", SortKey::as_str);
        page_of(rows, total, paging, &[("q", q), ("sort", sort)])
    }

    /// The whole catalog, counted by the row its triggers keep (migration 0003).
    async fn all(&self, window: &Window<'_>) -> Result<(Vec<AnyRow>, Total), StockError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM products {} ORDER BY {} {}",
            window.filter(1),
            window.order.order_by(""),
            window.limits(),
        );
        let mut conn = self.db.read.acquire().await?;
        let rows = window.bind(sqlx::query(&sql)).fetch_all(&mut conn).await?;
        let total: i64 = sqlx::query_scalar("SELECT n FROM derived_counts WHERE name = 'products'")
            .fetch_one(&mut conn)
            .await?;
        Ok((rows, Total::exact(total)))
    }

    /// The products matching `q` through the engine's full-text index (`search.rs`), best
    /// tier first, counted up to [`keyset::SEARCH_COUNT_CAP`]. Each tier is read newest first and
    /// only as far as the page needs, from the cursor's tier on.
    async fn search(
        &self,
        q: &str,
        window: &Window<'_>,
    ) -> Result<(Vec<AnyRow>, Total), StockError> {
        let backend = self.db.backend;
        let query = search::Query::parse(q);
        let (from, after) = match window.after {
            None => (search::Tier::Sku, None),
            Some([keyset::Key::Int(tier), seq]) => (
                search::Tier::from_key(*tier).ok_or_else(StockError::forged_cursor)?,
                Some(seq),
            ),
            Some(_) => return Err(StockError::forged_cursor()),
        };
        // Numbered pages read their way in; past the counted matches there is nothing to show.
        let wanted = window.offset + window.limit;
        let reachable = window.offset < search::CANDIDATES;
        let mut conn = self.db.read.acquire().await?;
        // On PostgreSQL a query may be counted first: one that matches nothing reads no tier,
        // and one that matches few is read differently (`search::tiers_sql`). Otherwise the
        // count rides along with the page's read.
        let first = match self.count_first(&mut conn, &query).await? {
            Counted::Before { total, .. } if total.n == 0 || !reachable => {
                return Ok((vec![], total));
            }
            first => first,
        };
        let tiers: Vec<search::Tier> = search::Tier::ALL
            .into_iter()
            .filter(|tier| *tier as i64 <= from as i64)
            .filter(|tier| *tier == search::Tier::Sku || query.has_words())
            .collect();
        let (few, counted) = match first {
            Counted::Before { few, .. } => (few, false),
            Counted::Estimated(_) => (false, false),
            Counted::InRead => (true, reachable),
        };
        let mut rows = vec![];
        if reachable && !tiers.is_empty() {
            let sql = search::tiers_sql(backend, COLUMNS, &tiers, after.is_some(), counted, few);
            let mut read = sqlx::query(&sql)
                .bind(&query.sku[0])
                .bind(&query.sku[1])
                .bind(wanted);
            for tier_match in tiers
                .iter()
                .filter_map(|tier| query.tier_match(backend, *tier))
            {
                read = read.bind(tier_match);
            }
            if counted {
                read = read.bind(query.all_match(backend));
            }
            read = match after {
                Some(keyset::Key::Int(seq)) => read.bind(*seq),
                Some(keyset::Key::Text(seq)) => read.bind(seq.clone()),
                Some(keyset::Key::Float(_)) => return Err(StockError::forged_cursor()),
                None => read,
            };
            rows = read.fetch_all(&mut conn).await?;
        }
        let total = match first {
            Counted::Before { total, .. } => total,
            // Read from the start and the page is short: that is every match.
            Counted::Estimated(_)
                if reachable && after.is_none() && rows.len() < wanted as usize =>
            {
                Total::counted(rows.len() as i64, keyset::SEARCH_COUNT_CAP)
            }
            Counted::Estimated(total) => total,
            Counted::InRead => match rows.first() {
                Some(row) if counted => {
                    Total::counted(row.try_get("matched")?, keyset::SEARCH_COUNT_CAP)
                }
                // Read from the start, nothing matched.
                None if after.is_none() && window.offset == 0 => {
                    Total::counted(0, keyset::SEARCH_COUNT_CAP)
                }
                _ => self.count(&mut conn, &query).await?,
            },
        };
        rows.drain(..(window.offset as usize).min(rows.len()));
        Ok((rows, total))
    }

    /// Whether a search is counted before its page is read, and how. A query without words
    /// can only be an exact SKU: counted at once. SQLite counts with the page.
    ///
    /// On PostgreSQL the planner's estimate decides, when it is knowledge: for words among
    /// the statistics' most common, the estimate follows from their frequencies; for any
    /// other word it is a fixed guess (4,100 at a million products, whether the word is in
    /// 8,000 products or none). So a query with a word the statistics do not know is counted
    /// first: it is rare enough for the count to be cheap (0.1 ms for a miss), and the count
    /// says whether there is anything to read and whether the matches are few. A query of
    /// known words expected to match few products (at most about [`search::FEW`]) is counted
    /// with its page; expected to match more, it is not counted (the count reads every
    /// match's entry in GIN first: 2 to 5 ms for 5,000 matches, 6 ms for 40,000) and its total
    /// is the estimate, shown as such, unless the page shows the end. The estimate is kept a
    /// minute: planning the `EXPLAIN` costs more than reading the cache.
    async fn count_first(
        &self,
        conn: &mut Conn,
        query: &search::Query,
    ) -> Result<Counted, sqlx::Error> {
        if !query.has_words() {
            let exact = sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE sku IN ($1, $2)")
                .bind(&query.sku[0])
                .bind(&query.sku[1])
                .fetch_one(&mut *conn)
                .await?;
            return Ok(Counted::Before {
                total: Total::exact(exact),
                few: true,
            });
        }
        if self.db.backend == Backend::Sqlite {
            return Ok(Counted::InRead);
        }
        let common = self.common_words(conn).await?;
        if !query.lexemes().iter().all(|word| common.contains(word)) {
            let total = self.count(conn, query).await?;
            return Ok(Counted::Before {
                few: !total.capped,
                total,
            });
        }
        let words = query.all_match(Backend::Postgres);
        let expected = match self.estimates.get(&words) {
            Some(known) => known,
            None => {
                let plan: Vec<String> = sqlx::query_scalar(search::ESTIMATE_SQL)
                    .persistent(false)
                    .bind(&words)
                    .fetch_all(&mut *conn)
                    .await?;
                let estimate = search::estimated_rows(&plan);
                self.estimates.insert(words, estimate);
                estimate
            }
        };
        Ok(match expected {
            Some(n) if n <= search::FEW => Counted::InRead,
            Some(n) => Counted::Estimated(Total::estimated(n)),
            None => {
                let total = self.count(conn, query).await?;
                Counted::Before {
                    few: !total.capped,
                    total,
                }
            }
        })
    }

    /// The words PostgreSQL's statistics of `products.search` know the frequency of (none
    /// before the first `ANALYZE`).
    async fn common_words(&self, conn: &mut Conn) -> Result<Arc<HashSet<String>>, sqlx::Error> {
        if let Some(known) = self.common_words.get(&()) {
            return Ok(known);
        }
        let words: Vec<String> = sqlx::query_scalar(
            "SELECT unnest(most_common_elems::text::text[]) FROM pg_stats \
             WHERE schemaname = current_schema() AND tablename = 'products' \
             AND attname = 'search'",
        )
        .fetch_all(&mut *conn)
        .await?;
        let known = Arc::new(words.into_iter().collect::<HashSet<_>>());
        self.common_words.insert((), known.clone());
        Ok(known)
    }

    /// The products with every word anywhere, counted up to [`keyset::SEARCH_COUNT_CAP`].
    async fn count(&self, conn: &mut Conn, query: &search::Query) -> Result<Total, sqlx::Error> {
        let counted = sqlx::query_scalar(&search::count_sql(self.db.backend, 1))
            .bind(query.all_match(self.db.backend))
            .fetch_one(&mut *conn)
            .await?;
        Ok(Total::counted(counted, keyset::SEARCH_COUNT_CAP))
    }

    /// The products matching `q` in a chosen order: the first [`search::CANDIDATES`] matches
    /// the index yields, sorted.
    async fn sorted_search(
        &self,
        q: &str,
        window: &Window<'_>,
    ) -> Result<(Vec<AnyRow>, Total), StockError> {
        let backend = self.db.backend;
        let query = search::Query::parse(q);
        let (key, with) = search::candidates_sql(backend, query.has_words());
        // The matches are counted in the same pass that sorts them (`matched`, on every row).
        let sql = format!(
            "{with} SELECT * FROM (SELECT {COLUMNS}, COUNT(*) OVER () AS matched \
             FROM best JOIN products ON products.{key} = best.hit) AS found \
             {} ORDER BY {} {}",
            window.filter(4),
            window.order.order_by(""),
            window.limits(),
        );
        let words = query.all_match(backend);
        let mut conn = self.db.read.acquire().await?;
        let rows = sqlx::query(&sql)
            .bind(&words)
            .bind(&query.sku[0])
            .bind(&query.sku[1]);
        let rows = window.bind(rows).fetch_all(&mut conn).await?;
        let matched: i64 = match rows.first() {
            Some(row) => row.try_get("matched")?,
            // Past the last match (a numbered page too far, or a cursor after the end).
            None if window.after.is_some() || window.offset > 0 => {
                sqlx::query_scalar(&format!("{with} SELECT COUNT(*) FROM best"))
                    .bind(&words)
                    .bind(&query.sku[0])
                    .bind(&query.sku[1])
                    .fetch_one(&mut conn)
                    .await?
            }
            None => 0,
        };
        Ok((rows, Total::counted(matched, keyset::COUNT_CAP)))
    }

    pub async fn get(&self, id: &str) -> Result<Option<Product>, sqlx::Error> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db.read)
            .await?
            .map(|row| product(&row))
            .transpose()
    }

    async fn get_in(uow: &mut Uow, id: &str) -> Result<Product, StockError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
            .bind(id)
            .fetch_optional(uow.conn())
            .await?
            .ok_or(StockError::NotFound)?;
        Ok(product(&row)?)
    }

    pub async fn create(&self, new: NewProduct) -> Result<Product, StockError> {
        let sku = domain::sku(&new.sku).map_err(StockError::Invalid)?;
        let name = domain::bounded_text("name", &new.name, 1, 200).map_err(StockError::Invalid)?;
        let description = domain::bounded_text("description", &new.description, 0, 5000)
            .map_err(StockError::Invalid)?;
        self.db
            .write(move |uow| {
                Box::pin(async move { Self::create_in(uow, sku, name, description, new).await })
            })
            .await
    }

    /// Adds one product whose SKU, name and description [`StockStore::create`] has checked.
    async fn create_in(
        uow: &mut Uow,
        sku: String,
        name: String,
        description: String,
        new: NewProduct,
    ) -> Result<Product, StockError> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO products (id, sku, name, description, price_minor, currency, on_hand, \
             reserved, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
        )
        .bind(&id)
        .bind(&sku)
        .bind(&name)
        .bind(&description)
        .bind(new.price_minor.get())
        .bind(new.currency.as_str())
        .bind(new.quantity.get())
        .bind(now)
        .execute(uow.conn())
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(duplicate_sku(&sku)),
            other => other?,
        };
        Self::get_in(uow, &id).await
    }

    /// Adds many products in one transaction, each checked as [`StockStore::create`] checks
    /// it: an import from another shop, or a catalog of a million for `bench/scale.sh`. One
    /// bad product (or a SKU in use) adds none of them. Answers their ids, in order.
    pub async fn import(&self, products: Vec<NewProduct>) -> Result<Vec<String>, StockError> {
        let now = now_ms();
        let mut rows = Vec::with_capacity(products.len());
        let mut ids = Vec::with_capacity(products.len());
        for new in products {
            let sku = domain::sku(&new.sku).map_err(StockError::Invalid)?;
            let name =
                domain::bounded_text("name", &new.name, 1, 200).map_err(StockError::Invalid)?;
            let description = domain::bounded_text("description", &new.description, 0, 5000)
                .map_err(StockError::Invalid)?;
            let id = uuid::Uuid::now_v7().to_string();
            rows.push(vec![
                Cell::from(id.as_str()),
                sku.into(),
                name.into(),
                description.into(),
                new.price_minor.get().into(),
                new.currency.as_str().into(),
                new.quantity.get().into(),
                0.into(),
                now.into(),
                now.into(),
            ]);
            ids.push(id);
        }
        let columns = COLUMNS.split(", ").collect::<Vec<_>>();
        self.db
            .write(move |uow| {
                Box::pin(async move {
                    match bulk::insert(uow, "products", &columns, &rows).await {
                        Err(e) if is_unique_violation(&e) => Err(StockError::DuplicateSkuInImport),
                        other => Ok(other?),
                    }
                })
            })
            .await?;
        Ok(ids)
    }

    /// Folds SQLite's full-text index into one segment, `search::FOLD_PAGES` pages at a
    /// time, each step a write of its own through the module's writer; answers how many steps
    /// did work (0: the index was whole). PostgreSQL's GIN needs no folding.
    ///
    /// FTS5 keeps each transaction's words as a segment of their own and merges segments only
    /// in groups, so a catalog built by many imports or edits is a stack of segments, and a
    /// search reads every one of them: at a million products a word's first page cost
    /// 0.23 ms from the stack the bench's hundred imports leave and 0.05 ms from one segment.
    pub async fn fold_search_index(&self) -> Result<u32, sqlx::Error> {
        if self.db.backend != Backend::Sqlite {
            return Ok(0);
        }
        let mut steps = 0;
        // A negative page count starts folding every segment into one; positive ones go on.
        let mut pages = -search::FOLD_PAGES;
        loop {
            let worked = self
                .db
                .write(move |uow| {
                    Box::pin(async move {
                        let changes = "SELECT total_changes()";
                        let before: i64 = sqlx::query_scalar(changes).fetch_one(uow.conn()).await?;
                        sqlx::query(
                            "INSERT INTO product_search (product_search, rank) \
                             VALUES ('merge', $1)",
                        )
                        .bind(pages)
                        .execute(uow.conn())
                        .await?;
                        let after: i64 = sqlx::query_scalar(changes).fetch_one(uow.conn()).await?;
                        // FTS5's documented sign that a merge had nothing to do.
                        Ok::<_, sqlx::Error>(after - before >= 2)
                    })
                })
                .await?;
            if !worked {
                return Ok(steps);
            }
            steps += 1;
            pages = search::FOLD_PAGES;
            // Other writes go first between steps.
            tokio::task::yield_now().await;
        }
    }

    pub async fn update(&self, id: &str, patch: ProductPatch) -> Result<Product, StockError> {
        let id = id.to_string();
        self.db
            .write(move |uow| Box::pin(async move { Self::update_in(uow, &id, patch).await }))
            .await
    }

    async fn update_in(
        uow: &mut Uow,
        id: &str,
        patch: ProductPatch,
    ) -> Result<Product, StockError> {
        let current = Self::get_in(uow, id).await?;
        let sku = match &patch.sku {
            Some(s) => domain::sku(s).map_err(StockError::Invalid)?,
            None => current.sku,
        };
        let name = match &patch.name {
            Some(n) => domain::bounded_text("name", n, 1, 200).map_err(StockError::Invalid)?,
            None => current.name,
        };
        let description = match &patch.description {
            Some(d) => {
                domain::bounded_text("description", d, 0, 5000).map_err(StockError::Invalid)?
            }
            None => current.description,
        };
        let price = patch.price_minor.map_or(current.price_minor, |p| p.get());
        let currency = patch
            .currency
            .map_or(current.currency, |c| c.as_str().to_string());
        let updated = sqlx::query(
            "UPDATE products SET sku = $1, name = $2, description = $3, price_minor = $4, \
             currency = $5, updated_at = $6 WHERE id = $7",
        )
        .bind(&sku)
        .bind(&name)
        .bind(&description)
        .bind(price)
        .bind(&currency)
        .bind(now_ms())
        .bind(id)
        .execute(uow.conn())
        .await;
        match updated {
            Err(e) if is_unique_violation(&e) => return Err(duplicate_sku(&sku)),
            other => other?,
        };
        Self::get_in(uow, id).await
    }

    /// Takes a product out of the catalog. A product that was ever in an order stays: its
    /// reservations are the record of what was sold, so deleting it answers 409 (take its
    /// units off the shelf instead).
    pub async fn delete(&self, id: &str) -> Result<(), StockError> {
        let id = id.to_string();
        self.db
            .write(move |uow| Box::pin(async move { Self::delete_in(uow, &id).await }))
            .await
    }

    async fn delete_in(uow: &mut Uow, id: &str) -> Result<(), StockError> {
        Self::get_in(uow, id).await?;
        let ordered: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM reservations WHERE product_id = $1")
                .bind(id)
                .fetch_one(uow.conn())
                .await?;
        if ordered > 0 {
            return Err(StockError::InOrders);
        }
        sqlx::query("DELETE FROM products WHERE id = $1")
            .bind(id)
            .execute(uow.conn())
            .await?;
        Ok(())
    }

    pub async fn restock(&self, id: &str, quantity: i64) -> Result<Product, StockError> {
        let id = id.to_string();
        self.db
            .write(move |uow| Box::pin(async move { Self::restock_in(uow, &id, quantity).await }))
            .await
    }

    async fn restock_in(uow: &mut Uow, id: &str, quantity: i64) -> Result<Product, StockError> {
        let current = Self::get_in(uow, id).await?;
        if current.on_hand + quantity > domain::StockLevel::MAX * 100 {
            return Err(StockError::Invalid(
                "that would put too many units on hand".into(),
            ));
        }
        sqlx::query("UPDATE products SET on_hand = on_hand + $1, updated_at = $2 WHERE id = $3")
            .bind(quantity)
            .bind(now_ms())
            .bind(id)
            .execute(uow.conn())
            .await?;
        Self::get_in(uow, id).await
    }

    /// Takes units off the shelf (damaged, lost). Units reserved for orders stay.
    pub async fn reduce(&self, id: &str, quantity: i64) -> Result<Product, StockError> {
        let id = id.to_string();
        self.db
            .write(move |uow| Box::pin(async move { Self::reduce_in(uow, &id, quantity).await }))
            .await
    }

    async fn reduce_in(uow: &mut Uow, id: &str, quantity: i64) -> Result<Product, StockError> {
        let current = Self::get_in(uow, id).await?;
        let done = sqlx::query(
            "UPDATE products SET on_hand = on_hand - $1, updated_at = $2 \
             WHERE id = $3 AND on_hand - reserved >= $1",
        )
        .bind(quantity)
        .bind(now_ms())
        .bind(id)
        .execute(uow.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StockError::InsufficientStock {
                available: current.available,
                reserved: current.reserved,
            });
        }
        Self::get_in(uow, id).await
    }

    /// Reserves stock for several placed orders at once, in their order, with a fixed handful
    /// of statements however many there are: which already hold reservations, the products
    /// they ask for (locked on PostgreSQL), then one update of the products, one insert of the
    /// reservations. Each order is all or nothing, served from what the orders before it left,
    /// with the same answers as serving them one at a time; the products' CHECK
    /// (`reserved <= on_hand`) still stands behind the arithmetic.
    pub async fn reserve_all(
        uow: &mut Uow,
        orders: &[(&str, &[LineQuantity])],
    ) -> Result<Vec<Reservation>, sqlx::Error> {
        let order_ids: Vec<&str> = orders.iter().map(|(id, _)| *id).collect();
        let mut seen: HashSet<String> = Self::orders_with_reservations(uow, &order_ids).await?;
        let wanted: Vec<&str> = {
            let mut ids: Vec<&str> = orders
                .iter()
                .flat_map(|(_, lines)| lines.iter().map(|l| l.product_id.as_str()))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let mut shelf = Self::shelf(uow, &wanted).await?;
        let now = now_ms();
        let mut answers = Vec::with_capacity(orders.len());
        let mut taken: HashMap<String, i64> = HashMap::new();
        let mut rows: Vec<(&str, ReservedLine)> = Vec::new();
        for &(order_id, lines) in orders {
            if !seen.insert(order_id.to_string()) {
                answers.push(Reservation::AlreadyHandled);
                continue;
            }
            match take(&mut shelf, order_id, lines) {
                Ok(reserved) => {
                    for line in &reserved.lines {
                        *taken.entry(line.product_id.clone()).or_default() += line.quantity;
                        rows.push((order_id, line.clone()));
                    }
                    answers.push(Reservation::Reserved(reserved));
                }
                Err(rejected) => answers.push(Reservation::Rejected(rejected)),
            }
        }
        let taken: Vec<(String, i64)> = taken.into_iter().collect();
        adjust_products(uow, &taken, 0, 1, now).await?;
        insert_reservations(uow, &rows, now).await?;
        Ok(answers)
    }

    /// Which of `order_ids` already hold reservations (a repeated request does nothing).
    async fn orders_with_reservations(
        uow: &mut Uow,
        order_ids: &[&str],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let ids = padded_to_power_of_two(order_ids);
        let sql = format!(
            "SELECT DISTINCT order_id FROM reservations WHERE order_id IN ({})",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for id in ids {
            query = query.bind(id);
        }
        Ok(query.fetch_all(uow.conn()).await?.into_iter().collect())
    }

    /// What is on the shelf for `product_ids`, locked until the transaction ends on
    /// PostgreSQL (SQLite's one writer already holds the whole database).
    async fn shelf(uow: &mut Uow, product_ids: &[&str]) -> Result<Shelf, sqlx::Error> {
        if product_ids.is_empty() {
            return Ok(Shelf::new());
        }
        let ids = padded_to_power_of_two(product_ids);
        let lock = match uow.backend() {
            Backend::Postgres => " ORDER BY id FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT id, name, price_minor, currency, on_hand - reserved AS available \
             FROM products WHERE id IN ({}){lock}",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(id);
        }
        let mut shelf = Shelf::new();
        for row in query.fetch_all(uow.conn()).await? {
            let id: String = row.try_get("id")?;
            shelf.insert(
                id,
                OnShelf {
                    name: row.try_get("name")?,
                    price_minor: row.try_get("price_minor")?,
                    currency: row.try_get("currency")?,
                    available: row.try_get("available")?,
                },
            );
        }
        Ok(shelf)
    }

    /// Orders are paid: their held units leave the warehouse, for all of them in two
    /// statements.
    pub async fn commit_all(uow: &mut Uow, order_ids: &[&str]) -> Result<u64, sqlx::Error> {
        if order_ids.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let ids = padded_to_power_of_two(order_ids);
        let sql = format!(
            "UPDATE reservations SET state = 'committed', updated_at = $1 \
             WHERE state = 'reserved' AND order_id IN ({}) RETURNING product_id, quantity",
            placeholders(2, ids.len())
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql).bind(now);
        for id in ids {
            query = query.bind(id);
        }
        let lines = query.fetch_all(uow.conn()).await?;
        let mut per_product: HashMap<String, i64> = HashMap::new();
        for (product_id, quantity) in &lines {
            *per_product.entry(product_id.clone()).or_default() += quantity;
        }
        let per_product: Vec<(String, i64)> = per_product.into_iter().collect();
        adjust_products(uow, &per_product, -1, -1, now).await?;
        Ok(lines.len() as u64)
    }

    /// Moves every reservation of `order_id` in state `from` to `to`, adjusting the product
    /// counters by `on_hand_delta` and `reserved_delta` per unit.
    async fn settle(
        uow: &mut Uow,
        order_id: &str,
        from: &str,
        to: &str,
        on_hand_delta: i64,
        reserved_delta: i64,
    ) -> Result<u64, sqlx::Error> {
        let now = now_ms();
        let lines: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE reservations SET state = $1, updated_at = $2 \
             WHERE order_id = $3 AND state = $4 RETURNING product_id, quantity",
        )
        .bind(to)
        .bind(now)
        .bind(order_id)
        .bind(from)
        .fetch_all(uow.conn())
        .await?;
        for (product_id, quantity) in &lines {
            sqlx::query(
                "UPDATE products SET on_hand = on_hand + $1, reserved = reserved + $2, \
                 updated_at = $3 WHERE id = $4",
            )
            .bind(on_hand_delta * quantity)
            .bind(reserved_delta * quantity)
            .bind(now)
            .bind(product_id)
            .execute(uow.conn())
            .await?;
        }
        Ok(lines.len() as u64)
    }

    /// The order failed: its held units become available again.
    pub async fn release(uow: &mut Uow, order_id: &str) -> Result<u64, sqlx::Error> {
        Self::settle(uow, order_id, "reserved", "released", 0, -1).await
    }

    /// A sold order was cancelled: its units come back on the shelf.
    pub async fn take_back(uow: &mut Uow, order_id: &str) -> Result<u64, sqlx::Error> {
        Self::settle(uow, order_id, "committed", "returned", 1, 0).await
    }

    pub async fn is_empty(&self) -> Result<bool, sqlx::Error> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT 1 FROM products LIMIT 1) AS present")
                .fetch_one(&self.db.read)
                .await?;
        Ok(n == 0)
    }
}

fn duplicate_sku(sku: &str) -> StockError {
    StockError::DuplicateSku(sku.to_string())
}

/// A product as a batch of reservations sees it: what it costs and how many are left.
struct OnShelf {
    name: String,
    price_minor: i64,
    currency: String,
    available: i64,
}

type Shelf = HashMap<String, OnShelf>;

/// Takes one order's lines off `shelf`, all or none: a product no longer sold, not enough
/// left, or a second currency refuses the order and gives back what it took.
fn take(
    shelf: &mut Shelf,
    order_id: &str,
    lines: &[LineQuantity],
) -> Result<StockReserved, StockRejected> {
    let mut held: Vec<ReservedLine> = Vec::with_capacity(lines.len());
    let mut currency: Option<String> = None;
    let mut refusal = None;
    for line in lines {
        let reason = match shelf.get(&line.product_id) {
            None => Some((0, "the product is no longer sold")),
            Some(p) if p.available < line.quantity => Some((p.available, "not enough stock")),
            Some(p) if currency.as_ref().is_some_and(|c| *c != p.currency) => {
                Some((p.available, "products in different currencies"))
            }
            Some(_) => None,
        };
        if let Some((available, reason)) = reason {
            refusal = Some(StockRejected {
                order_id: order_id.to_string(),
                product_id: line.product_id.clone(),
                requested: line.quantity,
                available: available.max(0),
                reason: reason.to_string(),
            });
            break;
        }
        let p = shelf.get_mut(&line.product_id).expect("checked above");
        p.available -= line.quantity;
        if currency.is_none() {
            currency = Some(p.currency.clone());
        }
        held.push(ReservedLine {
            product_id: line.product_id.clone(),
            name: p.name.clone(),
            quantity: line.quantity,
            unit_price_minor: p.price_minor,
        });
    }
    let currency = currency.unwrap_or_default();
    if let Some(rejected) = refusal {
        for h in &held {
            if let Some(p) = shelf.get_mut(&h.product_id) {
                p.available += h.quantity;
            }
        }
        return Err(rejected);
    }
    let total_minor = held.iter().map(|h| h.quantity * h.unit_price_minor).sum();
    Ok(StockReserved {
        order_id: order_id.to_string(),
        lines: held,
        currency,
        total_minor,
    })
}

/// Adds `on_hand_per_unit × units` to on hand and `reserved_per_unit × units` to reserved,
/// for each (product, units), in one statement.
async fn adjust_products(
    uow: &mut Uow,
    units: &[(String, i64)],
    on_hand_per_unit: i64,
    reserved_per_unit: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    if units.is_empty() {
        return Ok(());
    }
    let pairs = padded_to_power_of_two(units);
    // $1 now, then (id, units) pairs from $2; a padded pair repeats the last, which CASE and
    // IN both take once.
    let mut case = String::from("CASE id");
    let mut ids = Vec::with_capacity(pairs.len());
    for i in 0..pairs.len() {
        let (id, n) = (2 + 2 * i, 3 + 2 * i);
        let _ = write!(case, " WHEN ${id} THEN ${n}");
        ids.push(format!("${id}"));
    }
    case.push_str(" END");
    let sql = format!(
        "UPDATE products SET on_hand = on_hand + {on_hand_per_unit} * ({case}), \
         reserved = reserved + {reserved_per_unit} * ({case}), updated_at = $1 \
         WHERE id IN ({})",
        ids.join(",")
    );
    let mut query = sqlx::query(&sql).bind(now);
    for (id, n) in pairs {
        query = query.bind(id).bind(n);
    }
    query.execute(uow.conn()).await?;
    Ok(())
}

/// Records held lines, one row per (order, product), in one statement per batch size.
async fn insert_reservations(
    uow: &mut Uow,
    rows: &[(&str, ReservedLine)],
    now: i64,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    // A padded row repeats the last, which the primary key turns away.
    let rows = padded_to_power_of_two(rows);
    let mut sql = String::from(
        "INSERT INTO reservations (order_id, product_id, quantity, unit_price_minor, state, \
         updated_at) VALUES ",
    );
    for i in 0..rows.len() {
        let b = 2 + 4 * i;
        if i > 0 {
            sql.push(',');
        }
        let _ = write!(
            sql,
            "(${}, ${}, ${}, ${}, 'reserved', $1)",
            b,
            b + 1,
            b + 2,
            b + 3
        );
    }
    sql.push_str(" ON CONFLICT (order_id, product_id) DO NOTHING");
    let mut query = sqlx::query(&sql).bind(now);
    for (order_id, line) in rows {
        query = query
            .bind(order_id)
            .bind(line.product_id)
            .bind(line.quantity)
            .bind(line.unit_price_minor);
    }
    query.execute(uow.conn()).await?;
    Ok(())
}

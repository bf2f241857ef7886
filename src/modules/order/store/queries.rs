//! Lists of orders: by status, by shopper, by the beginning of an order number; a page at a time.

use super::*;

/// A search by part of a shopper's id looks at the orders of this many shoppers at most.
const MAX_SHOPPERS: usize = 100;

/// A search by the beginning of an order number looks at this many orders at most (on
/// PostgreSQL), those with the highest numbers: the newest, as numbers are time-ordered. A
/// prefix that matches more is too vague to page through; its count still says "more than
/// 100" ([`keyset::SEARCH_COUNT_CAP`]). Each of them is sorted by time for the page, so the
/// bound is what a vague prefix costs: 1,000 took 0.64 ms of a 1.25 ms statement.
const MAX_NUMBERED: usize = 200;

/// One way into the orders a list shows, read through its own index.
enum Read {
    /// The orders matching these conditions.
    Where(String),
    /// The orders of this source (columns `id`, `created_at`, `status`, `user_id`): the
    /// order numbers matching a prefix (PostgreSQL).
    Numbered(String),
    /// The orders of each shopper in the statement's `shopper` table (PostgreSQL), each
    /// shopper's read on its own.
    EachShopper,
}

/// Which orders a list shows.
pub struct OrderFilter<'a> {
    /// Only this shopper's (every shopper's for an admin).
    pub user: Option<&'a str>,
    /// Only orders in this status; without it, every order but carts.
    pub status: Option<OrderStatus>,
    /// An order number or its beginning, or part of a shopper's id.
    pub q: Option<&'a str>,
}

impl OrderStore {
    /// A page of orders, newest first, with their count up to [`keyset::COUNT_CAP`].
    ///
    /// The list is one or more reads, each through an index in its own newest-first order
    /// (migration 0002) and each stopped as soon as it holds a page: every order (or one
    /// status's, or one shopper's); for a search, the orders whose number starts with `q`, and
    /// each shopper's whose id holds `q` (found in the short list of shoppers, not among the
    /// orders). Their union is sorted once, so a page costs the same however many orders match.
    /// The page, its orders' lines and history and the count are one statement.
    pub async fn list(
        &self,
        filter: &OrderFilter<'_>,
        paging: &Paging,
    ) -> Result<(Vec<Order>, i64, bool, Next), OrderError> {
        let mut conn = self.db.read.acquire().await?;
        let mut binds: Vec<String> = vec![];
        let mut bind = |value: String| {
            binds.push(value);
            format!("${}", binds.len())
        };
        let status = match filter.status {
            Some(s) => format!("status = {}", bind(s.as_str().to_string())),
            None => "status <> 'cart'".into(),
        };
        let mut reads: Vec<Read> = vec![];
        // What the statement's `WITH` defines.
        let mut with = String::new();
        let q = filter.q.map(str::trim).filter(|q| !q.is_empty());
        // A search counts as far as a product search does.
        let cap = match q {
            Some(_) => keyset::SEARCH_COUNT_CAP,
            None => keyset::COUNT_CAP,
        };
        match q {
            Some(q) => {
                let id = match self.db.backend {
                    Backend::Sqlite => "id",
                    Backend::Postgres => "(id COLLATE \"C\")",
                };
                // An order number is a UUID: hex digits and dashes. Anything else is not looked
                // up as one (planning a range where the index holds nothing near costs
                // PostgreSQL an index probe, 0.18 ms, in each place the range appears).
                let number = q.to_lowercase();
                if number.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    let from = bind(number.clone());
                    let to = bind(format!("{number}\u{10FFFF}"));
                    let only = match filter.user {
                        Some(user) => format!("user_id = {} AND ", bind(user.to_string())),
                        None => String::new(),
                    };
                    reads.push(match self.db.backend {
                        Backend::Sqlite => Read::Where(format!("{only}{id} >= {from} AND {id} < {to}")),
                        // The range's ends as values the planner cannot see, and the numbers
                        // read from their own index, the highest first, at most
                        // `MAX_NUMBERED`: a plan that holds for any prefix, so PostgreSQL keeps
                        // one (a plan for a prefix matching few orders, reused for one
                        // matching none, would walk every order by time).
                        Backend::Postgres => Read::Numbered(format!(
                            "(SELECT id, created_at, status, user_id FROM orders \
                             WHERE {only}{id} >= (SELECT {from}::text) AND {id} < (SELECT {to}::text) \
                             ORDER BY {id} DESC LIMIT {MAX_NUMBERED})"
                        )),
                    });
                }
                // Found first, on their own: the list's statement then has the same plan
                // whatever the pattern (PostgreSQL keeps planning a statement whose estimate
                // moves with a `LIKE` pattern, 0.67 ms a request).
                let shoppers = self.shoppers_matching(&mut conn, q, filter.user).await?;
                match self.db.backend {
                    // Read shopper by shopper (`LATERAL`).
                    Backend::Postgres if !shoppers.is_empty() => {
                        let list = bind(serde_json::Value::from(shoppers).to_string());
                        with = format!(
                            "WITH shopper AS MATERIALIZED (SELECT value AS user_id \
                             FROM jsonb_array_elements_text({list}::jsonb)) "
                        );
                        reads.push(Read::EachShopper);
                    }
                    Backend::Postgres => {}
                    // SQLite has no `LATERAL`: each shopper is a read of its own.
                    Backend::Sqlite => {
                        for shopper in shoppers {
                            reads.push(Read::Where(format!("user_id = {}", bind(shopper))));
                        }
                    }
                }
            }
            None => reads.push(Read::Where(match filter.user {
                Some(user) => format!("user_id = {}", bind(user.to_string())),
                None => "1 = 1".into(),
            })),
        }
        let window = paging.window();
        if reads.is_empty() {
            // A search that is no order number and names no shopper.
            return Ok((vec![], 0, false, Next::default()));
        }
        let first = binds.len() + 1;
        let after = window.condition(first);
        let order_by = window.order.order_by("");
        // Each read on its own, in its index's order, no further than the page reaches.
        let limit = window.limit + window.offset;
        let union = reads
            .iter()
            .enumerate()
            .map(|(n, read)| {
                let conditions = [&status]
                    .into_iter()
                    .chain(after.as_ref())
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" AND ");
                match read {
                    Read::Where(read) => format!(
                        "SELECT * FROM (SELECT id, created_at FROM orders \
                         WHERE {read} AND {conditions} ORDER BY {order_by} LIMIT {limit}) AS read{n}"
                    ),
                    Read::Numbered(numbered) => format!(
                        "SELECT * FROM (SELECT id, created_at FROM {numbered} AS numbered \
                         WHERE {conditions} ORDER BY {order_by} LIMIT {limit}) AS read{n}"
                    ),
                    Read::EachShopper => format!(
                        "SELECT read{n}.id, read{n}.created_at FROM shopper \
                         CROSS JOIN LATERAL (SELECT id, created_at FROM orders \
                         WHERE user_id = shopper.user_id AND {conditions} \
                         ORDER BY {order_by} LIMIT {limit}) AS read{n}"
                    ),
                }
            })
            .collect::<Vec<_>>()
            .join(" UNION ");
        let ways = reads
            .iter()
            .filter_map(|read| match read {
                Read::Where(read) => Some(read.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        // The count is one read of the matches, whichever way each is found (SQLite's
        // multi-index OR), stopped at the cap; a union of the ways, each from its index alone,
        // would read every match to take out the orders found twice. On PostgreSQL, parts
        // that cannot overlap, one after another under the cap: the numbered orders but the
        // matching shoppers', then each shopper's orders from its index until the cap (an `OR`
        // would gather every order of every matching shopper before counting the first: 1,100
        // orders, 1.2 ms).
        let shoppers = reads.iter().any(|read| matches!(read, Read::EachShopper));
        let parts: Vec<String> = reads
            .iter()
            .filter_map(|read| match read {
                Read::Where(_) => None,
                Read::Numbered(numbered) => Some(format!(
                    "SELECT 1 FROM {numbered} AS numbered WHERE {status}{}",
                    match shoppers {
                        true => " AND NOT (user_id = ANY (ARRAY(SELECT user_id FROM shopper)))",
                        false => "",
                    }
                )),
                Read::EachShopper => Some(format!(
                    "SELECT 1 FROM shopper CROSS JOIN LATERAL (SELECT 1 FROM orders \
                     WHERE user_id = shopper.user_id AND {status} LIMIT {}) AS theirs",
                    cap + 1
                )),
            })
            .chain(
                (!ways.is_empty())
                    .then(|| format!("SELECT 1 FROM orders WHERE {status} AND ({ways})")),
            )
            .collect();
        let count_sql = keyset::capped_count(&parts.join(" UNION ALL "), cap);
        // One statement: the page's orders with their lines and history, each row carrying
        // the count (on PostgreSQL each statement is a round trip; on SQLite a trip to the
        // connection's thread).
        let children = children_sql(self.db.backend, true, "orders.id");
        let page_sql = format!(
            "{with}SELECT {COLUMNS}, {children}, ({count_sql}) AS matched FROM orders WHERE id IN \
             (SELECT id FROM ({union}) AS listed ORDER BY {order_by} {}) ORDER BY {}",
            window.limits(),
            NEWEST_FIRST.order_by("orders"),
        );
        let mut page = sqlx::query(&page_sql);
        for b in &binds {
            page = page.bind(b);
        }
        let mut rows = window.bind(page).fetch_all(&mut conn).await?;
        let counted = match rows.first() {
            Some(row) => row.try_get("matched")?,
            // Read from the start, nothing matched.
            None if window.after.is_none() && window.offset == 0 => 0,
            None => {
                let count_sql = format!("{with}{count_sql}");
                let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
                for b in &binds {
                    count = count.bind(b);
                }
                count.fetch_one(&mut conn).await?
            }
        };
        let (total, capped) = keyset::capped(counted, cap);
        let status = filter.status.map_or("", OrderStatus::as_str);
        let q = filter.q.unwrap_or("");
        let next = paging.next(&mut rows, "/api/orders", &[("status", status), ("q", q)])?;
        let orders = rows.iter().map(order_from_row).collect::<Result<_, _>>()?;
        Ok((orders, total, capped, next))
    }

    /// The shoppers (at most [`MAX_SHOPPERS`], only `user` if given) whose id holds `q`,
    /// through the trigram index of `derived_shoppers` (migration 0002), which needs three
    /// letters to look anything up.
    async fn shoppers_matching(
        &self,
        conn: &mut crate::db::Conn,
        q: &str,
        user: Option<&str>,
    ) -> Result<Vec<String>, sqlx::Error> {
        if q.chars().count() < 3 {
            return Ok(vec![]);
        }
        let (matching, pattern, order) = match self.db.backend {
            Backend::Sqlite => (
                "rowid IN (SELECT rowid FROM derived_shopper_search \
                 WHERE derived_shopper_search MATCH $1)",
                format!("\"{}\"", q.replace('"', "\"\"")),
                "user_id",
            ),
            // Sorted in byte order, as SQLite does, which no index gives: a plan kept for any
            // pattern must not walk every shopper in the primary key's order looking for
            // matches, when the trigram index finds them at once.
            Backend::Postgres => (
                "lower(user_id) LIKE $1 ESCAPE '\\'",
                crate::db::like_pattern(q),
                "user_id COLLATE \"C\"",
            ),
        };
        let only = match user {
            Some(_) => "AND user_id = $2",
            None => "",
        };
        let sql = format!(
            "SELECT user_id FROM derived_shoppers WHERE {matching} {only} \
             ORDER BY {order} LIMIT {MAX_SHOPPERS}"
        );
        let mut lookup = sqlx::query_scalar(&sql).bind(pattern);
        if let Some(user) = user {
            lookup = lookup.bind(user);
        }
        lookup.fetch_all(conn).await
    }
}

//! The order module's SQL: carts, orders, their lines and history, idempotency keys.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use super::catalog::ProductInfo;
use super::events::{self, LineQuantity, OrderPlaced, PaymentMethod, SOURCE};
use super::model::{Cart, Failure, Order, OrderLine, OrderStatus, StatusChange};
use super::waiters::{Waiters, Waiting};
use crate::bus::{outbox, topics, Event};
use crate::contracts::stock::{ReservedLine, StockReserved};
use crate::db::bulk::{self, Cell};
use crate::db::keyset::{self, Next, Order as ListOrder, Paging};
use crate::db::{now_ms, placeholders, power_of_two_runs, rfc3339, Backend, Db, Uow};
use crate::domain::{Currency, PriceMinor, Quantity};
use crate::error::{ApiError, ApiResult};
use crate::gateway::auth::Identity;

const COLUMNS: &str = "id, user_id, status, currency, total_minor, payment_method, \
    payment_reference, failure_kind, failure_reason, created_at, updated_at, placed_at, \
    completed_at, cancelled_at, refunded_at";

/// The newest orders first; the id breaks ties in the same millisecond.
pub const NEWEST_FIRST: ListOrder = ListOrder::descending(&["created_at", "id"]);

/// An order completed before it came to this shop, for [`OrderStore::import`].
pub struct PastOrder {
    pub user_id: String,
    pub currency: Currency,
    pub payment_method: String,
    pub placed_at: i64,
    pub completed_at: i64,
    pub lines: Vec<PastLine>,
}

pub struct PastLine {
    pub product_id: String,
    pub name: String,
    pub quantity: Quantity,
    pub unit_price_minor: PriceMinor,
}

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

#[derive(Clone)]
pub struct OrderStore {
    pub(super) db: Db,
}

/// What else a status change sets, in the same statement.
#[derive(Clone, Copy)]
pub enum Also<'a> {
    Failure {
        kind: &'a str,
        reason: &'a str,
    },
    PaymentReference(&'a str),
    /// The order's total as stock priced the reserved lines.
    Priced {
        total_minor: i64,
        currency: &'a str,
    },
}

/// An order that moved: what the next saga step needs of it.
pub struct Moved {
    /// The checkout's payment method (JSON), set when the order was placed.
    pub payment_method: Option<String>,
    pub user_id: String,
}

/// What adding to a cart did.
enum Added {
    /// Made a cart holding just this line: the answer is known without reading it back.
    NewCart(Cart),
    /// Changed the cart with this id.
    Changed(String),
}

/// A cart just made with one line, as the cart routes answer it.
fn new_cart(id: String, product_id: &str, info: &ProductInfo, quantity: Quantity) -> Cart {
    let quantity = quantity.get();
    let line_total_minor = quantity * info.price_minor;
    Cart {
        id: Some(id),
        lines: vec![OrderLine {
            product_id: product_id.to_string(),
            name: info.name.clone(),
            quantity,
            unit_price_minor: info.price_minor,
            line_total_minor,
        }],
        item_count: quantity,
        total_minor: line_total_minor,
        currency: Some(info.currency.clone()),
    }
}

/// What adding to a cart found.
enum OpenedCart {
    /// The user's cart, locked by this transaction.
    Locked(String),
    /// A new cart, made with the line asked for.
    Made(String),
    /// A concurrent request of the same user made a cart first.
    Lost,
    /// No cart, and none was to be made.
    Missing,
}

/// One order's step in the saga: from one state to the next, with what else changes.
#[derive(Clone, Copy)]
pub struct Move<'a> {
    pub order_id: &'a str,
    pub from: OrderStatus,
    pub to: OrderStatus,
    pub note: Option<&'a str>,
    pub also: Also<'a>,
}

/// What placing an order led to.
pub enum Placed {
    /// A new order, with the checkout's wait for its outcome.
    New { order_id: String, waiting: Waiting },
    /// The Idempotency-Key was seen before: this is the order it made.
    Existing {
        order_id: String,
        fingerprint: String,
    },
}

/// A stored status; one this build does not know is a decoding error, not a guess.
fn status_of(text: &str) -> Result<OrderStatus, sqlx::Error> {
    OrderStatus::parse(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown order status {text:?}").into()))
}

fn opt_time(row: &AnyRow, col: &str) -> Result<Option<String>, sqlx::Error> {
    Ok(row.try_get::<Option<i64>, _>(col)?.map(rfc3339))
}

async fn load<C>(conn: &mut C, backend: Backend, id: &str) -> Result<Option<Order>, sqlx::Error>
where
    for<'e> &'e mut C: Executor<'e, Database = Any>,
{
    load_with(conn, backend, id, true).await
}

/// A cart as the cart routes answer it: no history needed.
async fn load_cart<C>(conn: &mut C, backend: Backend, id: &str) -> Result<Order, sqlx::Error>
where
    for<'e> &'e mut C: Executor<'e, Database = Any>,
{
    load_with(conn, backend, id, false)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// `SELECT` expressions for an order's lines (and history) as JSON arrays of rows, so that an
/// order is read in one statement: on PostgreSQL each statement is a round trip.
/// `order_id` is what the subqueries match the order by: `$1`, or a column of the outer query.
fn children_sql(backend: Backend, with_history: bool, order_id: &str) -> String {
    let (lines, history) = match backend {
        Backend::Postgres => (
            "COALESCE((SELECT json_agg(json_build_array(product_id, name, quantity, \
             unit_price_minor) ORDER BY added_at, product_id) FROM order_lines \
             WHERE order_id = {id})::text, '[]')",
            "COALESCE((SELECT json_agg(json_build_array(status, note, at) ORDER BY at) \
             FROM order_history WHERE order_id = {id})::text, '[]')",
        ),
        Backend::Sqlite => (
            "(SELECT json_group_array(json_array(product_id, name, quantity, unit_price_minor)) \
             FROM (SELECT * FROM order_lines WHERE order_id = {id} ORDER BY added_at, product_id))",
            "(SELECT json_group_array(json_array(status, note, at)) \
             FROM (SELECT * FROM order_history WHERE order_id = {id} ORDER BY at))",
        ),
    };
    let history = if with_history { history } else { "'[]'" };
    format!("{lines} AS lines_json, {history} AS history_json").replace("{id}", order_id)
}

async fn load_with<C>(
    conn: &mut C,
    backend: Backend,
    id: &str,
    with_history: bool,
) -> Result<Option<Order>, sqlx::Error>
where
    for<'e> &'e mut C: Executor<'e, Database = Any>,
{
    let children = children_sql(backend, with_history, "$1");
    let Some(row) = sqlx::query(&format!(
        "SELECT {COLUMNS}, {children} FROM orders WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    order_from_row(&row).map(Some)
}

/// An order read with [`children_sql`]'s columns.
fn order_from_row(row: &AnyRow) -> Result<Order, sqlx::Error> {
    let json = |column: &str| -> Result<String, sqlx::Error> { row.try_get(column) };
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    let lines: Vec<(String, String, i64, i64)> =
        serde_json::from_str(&json("lines_json")?).map_err(decode)?;
    let lines: Vec<OrderLine> = lines
        .into_iter()
        .map(|(product_id, name, quantity, unit_price_minor)| OrderLine {
            product_id,
            name,
            quantity,
            unit_price_minor,
            line_total_minor: quantity * unit_price_minor,
        })
        .collect();
    let history: Vec<(String, Option<String>, i64)> =
        serde_json::from_str(&json("history_json")?).map_err(decode)?;
    let history = history
        .into_iter()
        .map(|(status, note, at)| StatusChange {
            status,
            note,
            at: rfc3339(at),
        })
        .collect();
    let method: Option<String> = row.try_get("payment_method")?;
    let payment_mode = method
        .and_then(|m| serde_json::from_str::<PaymentMethod>(&m).ok())
        .map(|m| m.mode().to_string());
    let failure = match (
        row.try_get::<Option<String>, _>("failure_kind")?,
        row.try_get::<Option<String>, _>("failure_reason")?,
    ) {
        (Some(kind), reason) => Some(Failure {
            kind,
            reason: reason.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Order {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        status: status_of(row.try_get("status")?)?,
        item_count: lines.iter().map(|l| l.quantity).sum(),
        lines,
        total_minor: row.try_get("total_minor")?,
        currency: row.try_get("currency")?,
        payment_mode,
        payment_reference: row.try_get("payment_reference")?,
        failure,
        history,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
        placed_at: opt_time(row, "placed_at")?,
        completed_at: opt_time(row, "completed_at")?,
        cancelled_at: opt_time(row, "cancelled_at")?,
        refunded_at: opt_time(row, "refunded_at")?,
    })
}

async fn cart_id<C>(conn: &mut C, user: &str) -> Result<Option<String>, sqlx::Error>
where
    for<'e> &'e mut C: Executor<'e, Database = Any>,
{
    sqlx::query_scalar("SELECT id FROM orders WHERE user_id = $1 AND status = 'cart'")
        .bind(user)
        .fetch_optional(conn)
        .await
}

/// Locks the cart of user `$1` (see [`lock_cart`]).
const LOCK_CART: &str =
    "UPDATE orders SET updated_at = updated_at WHERE user_id = $1 AND status = 'cart' RETURNING id";

/// Takes the write lock on the user's cart before reading it, so that concurrent changes to
/// one cart (two tabs, a double click) apply one after the other instead of overwriting each
/// other. On SQLite the writer already serialises them (one write transaction at a time), so
/// a plain read is enough there; on PostgreSQL this row lock does it. Answers the cart's id,
/// if the user has a cart.
async fn lock_cart(uow: &mut Uow, user: &str) -> Result<Option<String>, sqlx::Error> {
    match uow.backend() {
        Backend::Sqlite => cart_id(uow.conn(), user).await,
        Backend::Postgres => {
            sqlx::query_scalar(LOCK_CART)
                .bind(user)
                .fetch_optional(uow.conn())
                .await
        }
    }
}

async fn record_history(
    uow: &mut Uow,
    order_id: &str,
    status: &str,
    note: Option<&str>,
    at: i64,
) -> Result<(), sqlx::Error> {
    record_history_all(uow, &[(order_id, status, note)], at).await
}

/// History rows `(order, status, note)` at one time, a statement per power of two.
async fn record_history_all(
    uow: &mut Uow,
    rows: &[(&str, &str, Option<&str>)],
    at: i64,
) -> Result<(), sqlx::Error> {
    for run in power_of_two_runs(rows, 64) {
        let values: Vec<String> = (0..run.len())
            .map(|i| format!("({}, $1)", placeholders(2 + 3 * i, 3)))
            .collect();
        let sql = format!(
            "INSERT INTO order_history (order_id, status, note, at) VALUES {}",
            values.join(",")
        );
        let mut query = sqlx::query(&sql).bind(at);
        for (order_id, status, note) in run {
            query = query.bind(*order_id).bind(*status).bind(*note);
        }
        query.execute(uow.conn()).await?;
    }
    Ok(())
}

/// Recomputes a cart's total from its lines, and sets its currency if given.
async fn refresh_totals(
    uow: &mut Uow,
    order_id: &str,
    now: i64,
    currency: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE orders SET total_minor = (SELECT COALESCE(SUM(quantity * unit_price_minor), 0) \
         FROM order_lines WHERE order_id = $1), updated_at = $2, \
         currency = COALESCE($3, currency) WHERE id = $1",
    )
    .bind(order_id)
    .bind(now)
    .bind(currency)
    .execute(uow.conn())
    .await?;
    Ok(())
}

/// Moves the user's cart to `placed` with the checkout's payment method and its history row;
/// answers its id, or `None` if the user has no cart. The move takes the cart's row lock
/// first thing, so a concurrent change to the cart is either committed before it or sees
/// no cart after it.
async fn place_cart(
    uow: &mut Uow,
    user: &str,
    method_json: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let set = "UPDATE orders SET status = 'placed', updated_at = $1, placed_at = $1, \
         payment_method = $2";
    if uow.backend() == Backend::Sqlite {
        // The writer's transaction excludes every other change: find, then move. (A
        // `RETURNING` clause would cost SQLite a temporary table per checkout.)
        let Some(id) = cart_id(uow.conn(), user).await? else {
            return Ok(None);
        };
        sqlx::query(&format!("{set} WHERE id = $3"))
            .bind(now)
            .bind(method_json)
            .bind(&id)
            .execute(uow.conn())
            .await?;
        record_history(uow, &id, OrderStatus::Placed.as_str(), None, now).await?;
        return Ok(Some(id));
    }
    let sql = format!(
        "WITH moved AS ({set} WHERE user_id = $3 AND status = 'cart' RETURNING id), \
         noted AS (INSERT INTO order_history (order_id, status, note, at) \
         SELECT id, 'placed', NULL, $1 FROM moved) SELECT id FROM moved"
    );
    sqlx::query_scalar(&sql)
        .bind(now)
        .bind(method_json)
        .bind(user)
        .fetch_optional(uow.conn())
        .await
}

fn empty_cart() -> ApiError {
    ApiError::conflict(
        "empty-cart",
        "The cart is empty",
        "add something to the cart before checking out",
    )
}

/// Whether `wanted` units of a product may be in one cart: within the per-order limit and
/// what is available.
fn check_wanted(info: &ProductInfo, wanted: i64) -> ApiResult<()> {
    if wanted > Quantity::MAX {
        return Err(ApiError::validation(format!(
            "at most {} of one product per order",
            Quantity::MAX
        )));
    }
    if wanted > info.available {
        return Err(not_enough(info, wanted));
    }
    Ok(())
}

fn not_enough(info: &ProductInfo, wanted: i64) -> ApiError {
    ApiError::conflict(
        "insufficient-stock",
        "Not enough stock",
        format!(
            "you asked for {wanted} of {}, but only {} are available",
            info.name, info.available
        ),
    )
    .with("available", info.available)
}

impl OrderStore {
    pub fn new(db: Db) -> OrderStore {
        OrderStore { db }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Order>, sqlx::Error> {
        let mut conn = self.db.read.acquire().await?;
        load(&mut conn, self.db.backend, id).await
    }

    /// The order if `who` may see it: their own, or any for an admin.
    pub async fn visible(&self, who: &Identity, id: &str) -> ApiResult<Order> {
        match self.get(id).await? {
            Some(o)
                if (who.is_admin() || o.user_id == who.sub) && o.status != OrderStatus::Cart =>
            {
                Ok(o)
            }
            _ => Err(ApiError::not_found("order")),
        }
    }

    /// A cart as just committed, read outside the writer so the writer stays free.
    pub async fn cart(&self, user: &str) -> Result<Option<Order>, sqlx::Error> {
        let mut conn = self.db.read.acquire().await?;
        match cart_id(&mut conn, user).await? {
            Some(id) => load_cart(&mut conn, self.db.backend, &id).await.map(Some),
            None => Ok(None),
        }
    }

    async fn add_item_in(
        uow: &mut Uow,
        user: &str,
        product_id: &str,
        info: &ProductInfo,
        quantity: Quantity,
    ) -> ApiResult<Option<Added>> {
        let now = now_ms();
        // A new cart is made only for a line that may be in it; an existing one is checked
        // with what it holds, below.
        let fits = check_wanted(info, quantity.get());
        let make = fits.is_ok();
        let order_id =
            match Self::open_cart(uow, user, product_id, info, quantity, now, make).await? {
                OpenedCart::Locked(id) => id,
                OpenedCart::Made(id) => {
                    return Ok(Some(Added::NewCart(new_cart(
                        id, product_id, info, quantity,
                    ))))
                }
                OpenedCart::Lost => return Ok(None),
                OpenedCart::Missing => return fits.map(|()| None),
            };
        let (currency, lines, existing): (Option<String>, i64, Option<i64>) = sqlx::query_as(
            "SELECT o.currency, \
             (SELECT COUNT(*) FROM order_lines l WHERE l.order_id = o.id), \
             (SELECT l.quantity FROM order_lines l \
              WHERE l.order_id = o.id AND l.product_id = $2) \
             FROM orders o WHERE o.id = $1",
        )
        .bind(&order_id)
        .bind(product_id)
        .fetch_one(uow.conn())
        .await?;
        if lines > 0 && currency.as_deref() != Some(info.currency.as_str()) {
            return Err(ApiError::conflict(
                "currency-mismatch",
                "One currency per order",
                format!(
                    "{} is priced in {}, but your cart is in {}",
                    info.name,
                    info.currency,
                    currency.unwrap_or_default()
                ),
            ));
        }
        let wanted = existing.unwrap_or(0) + quantity.get();
        check_wanted(info, wanted)?;
        let upsert = "INSERT INTO order_lines (order_id, product_id, name, quantity, \
             unit_price_minor, added_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (order_id, product_id) DO UPDATE SET quantity = excluded.quantity, \
             name = excluded.name, unit_price_minor = excluded.unit_price_minor";
        let line = |sql| {
            sqlx::query(sql)
                .bind(order_id.clone())
                .bind(product_id.to_string())
                .bind(info.name.clone())
                .bind(wanted)
                .bind(info.price_minor)
                .bind(now)
        };
        match uow.backend() {
            // The line and the cart's total in one round trip. The UPDATE sees the lines as
            // they were before the statement (one snapshot), so the total is the other lines'
            // plus this one's.
            Backend::Postgres => {
                let sql = format!(
                    "WITH line AS ({upsert} RETURNING quantity * unit_price_minor AS amount) \
                     UPDATE orders SET total_minor = (SELECT amount FROM line) + \
                     (SELECT COALESCE(SUM(quantity * unit_price_minor), 0) FROM order_lines \
                      WHERE order_id = $1 AND product_id <> $2), \
                     updated_at = $6, currency = $7 WHERE id = $1"
                );
                line(&sql)
                    .bind(info.currency.clone())
                    .execute(uow.conn())
                    .await?;
            }
            Backend::Sqlite => {
                line(upsert).execute(uow.conn()).await?;
                refresh_totals(uow, &order_id, now, Some(&info.currency)).await?;
            }
        }
        Ok(Some(Added::Changed(order_id)))
    }

    /// Locks the user's cart or, if there is none and `make`, makes one holding this first
    /// line (with its history row). Only a cart this transaction has locked may be read and changed: a cart
    /// that appears after the lock found none (another request of this user just committed
    /// it) is not locked here, so the caller starts over rather than race that request.
    async fn open_cart(
        uow: &mut Uow,
        user: &str,
        product_id: &str,
        info: &ProductInfo,
        quantity: Quantity,
        now: i64,
        make: bool,
    ) -> ApiResult<OpenedCart> {
        let id = uuid::Uuid::now_v7().to_string();
        let columns = "INSERT INTO orders (id, user_id, status, currency, total_minor, \
             created_at, updated_at)";
        let line = "INSERT INTO order_lines (order_id, product_id, name, quantity, \
             unit_price_minor, added_at)";
        if uow.backend() == Backend::Postgres && make {
            // The lock, or the new cart with its history row and line: one round trip.
            let sql = format!(
                "WITH locked AS ({LOCK_CART}), \
                 made AS ({columns} SELECT $2, $1, 'cart', $3, $4 * $5, $6, $6 \
                 WHERE NOT EXISTS (SELECT 1 FROM locked) ON CONFLICT DO NOTHING RETURNING id), \
                 noted AS (INSERT INTO order_history (order_id, status, note, at) \
                 SELECT id, 'cart', NULL, $6 FROM made), \
                 line AS ({line} SELECT id, $7, $8, $4, $5, $6 FROM made) \
                 SELECT (SELECT id FROM locked), (SELECT id FROM made)"
            );
            let (locked, made): (Option<String>, Option<String>) = sqlx::query_as(&sql)
                .bind(user)
                .bind(&id)
                .bind(&info.currency)
                .bind(quantity.get())
                .bind(info.price_minor)
                .bind(now)
                .bind(product_id)
                .bind(&info.name)
                .fetch_one(uow.conn())
                .await?;
            return Ok(match (locked, made) {
                (Some(id), _) => OpenedCart::Locked(id),
                (None, Some(id)) => OpenedCart::Made(id),
                (None, None) => OpenedCart::Lost,
            });
        }
        if let Some(id) = lock_cart(uow, user).await? {
            return Ok(OpenedCart::Locked(id));
        }
        if !make {
            return Ok(OpenedCart::Missing);
        }
        let made = sqlx::query(&format!(
            "{columns} VALUES ($1, $2, 'cart', $3, $4 * $5, $6, $6) ON CONFLICT DO NOTHING"
        ))
        .bind(&id)
        .bind(user)
        .bind(&info.currency)
        .bind(quantity.get())
        .bind(info.price_minor)
        .bind(now)
        .execute(uow.conn())
        .await?;
        if made.rows_affected() == 0 {
            return Ok(OpenedCart::Lost);
        }
        record_history(uow, &id, OrderStatus::Cart.as_str(), None, now).await?;
        sqlx::query(&format!("{line} VALUES ($1, $2, $3, $4, $5, $6)"))
            .bind(&id)
            .bind(product_id)
            .bind(&info.name)
            .bind(quantity.get())
            .bind(info.price_minor)
            .bind(now)
            .execute(uow.conn())
            .await?;
        Ok(OpenedCart::Made(id))
    }

    async fn set_quantity_in(
        uow: &mut Uow,
        user: &str,
        product_id: &str,
        info: Option<&ProductInfo>,
        quantity: Quantity,
    ) -> ApiResult<String> {
        let now = now_ms();
        let order_id = lock_cart(uow, user)
            .await?
            .ok_or_else(|| ApiError::not_found("cart item"))?;
        if let Some(info) = info {
            if quantity.get() > info.available {
                return Err(not_enough(info, quantity.get()));
            }
        }
        let done = sqlx::query(
            "UPDATE order_lines SET quantity = $1 WHERE order_id = $2 AND product_id = $3",
        )
        .bind(quantity.get())
        .bind(&order_id)
        .bind(product_id)
        .execute(uow.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::not_found("cart item"));
        }
        refresh_totals(uow, &order_id, now, None).await?;
        Ok(order_id)
    }

    async fn remove_item_in(uow: &mut Uow, user: &str, product_id: &str) -> ApiResult<String> {
        let now = now_ms();
        let order_id = lock_cart(uow, user)
            .await?
            .ok_or_else(|| ApiError::not_found("cart item"))?;
        let done = sqlx::query("DELETE FROM order_lines WHERE order_id = $1 AND product_id = $2")
            .bind(&order_id)
            .bind(product_id)
            .execute(uow.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::not_found("cart item"));
        }
        refresh_totals(uow, &order_id, now, None).await?;
        Ok(order_id)
    }

    async fn idempotent<C>(
        conn: &mut C,
        user: &str,
        key: &str,
    ) -> Result<Option<Placed>, sqlx::Error>
    where
        for<'e> &'e mut C: Executor<'e, Database = Any>,
    {
        Ok(sqlx::query_as::<_, (String, String)>(
            "SELECT order_id, fingerprint FROM idempotency_keys WHERE user_id = $1 AND idem_key = $2",
        )
        .bind(user)
        .bind(key)
        .fetch_optional(conn)
        .await?
        .map(|(order_id, fingerprint)| Placed::Existing {
            order_id,
            fingerprint,
        }))
    }

    async fn place_in(
        uow: &mut Uow,
        user: &str,
        session: Option<String>,
        method: &PaymentMethod,
        idempotency: Option<(&str, &str)>,
        waiters: &Arc<Waiters>,
    ) -> ApiResult<Placed> {
        if let Some((key, _)) = idempotency {
            if let Some(found) = Self::idempotent(uow.conn(), user, key).await? {
                return Ok(found);
            }
        }
        let now = now_ms();
        let method_json = serde_json::to_string(method).expect("method serializes");
        let Some(order_id) = place_cart(uow, user, &method_json, now).await? else {
            // No cart: nothing was added, or a concurrent checkout placed it a moment ago,
            // whose idempotency key (if it had this one) is visible now.
            if let Some((key, _)) = idempotency {
                if let Some(found) = Self::idempotent(uow.conn(), user, key).await? {
                    return Ok(found);
                }
            }
            return Err(empty_cart());
        };
        // Read after the move, which waited for any change to the cart in flight: these are
        // the lines the order was placed with, and none can be added any more.
        let lines: Vec<(String, i64)> =
            sqlx::query_as("SELECT product_id, quantity FROM order_lines WHERE order_id = $1")
                .bind(&order_id)
                .fetch_all(uow.conn())
                .await?;
        if lines.is_empty() {
            return Err(empty_cart()); // the job fails, so the move is undone
        }
        if let Some((key, fingerprint)) = idempotency {
            sqlx::query(
                "INSERT INTO idempotency_keys (user_id, idem_key, fingerprint, order_id, \
                 created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user)
            .bind(key)
            .bind(fingerprint)
            .bind(&order_id)
            .bind(now)
            .execute(uow.conn())
            .await?;
        }
        let placed = OrderPlaced {
            order_id: order_id.clone(),
            user_id: user.to_string(),
            session_id: session,
            lines: lines
                .into_iter()
                .map(|(product_id, quantity)| LineQuantity {
                    product_id,
                    quantity,
                })
                .collect(),
        };
        outbox::push(
            uow,
            topics::ORDER,
            &Event::new(SOURCE, events::PLACED, &order_id, placed),
        )
        .await?;
        // Before the commit, so that no outcome can be decided before the checkout waits.
        let waiting = waiters.register(&order_id);
        Ok(Placed::New { order_id, waiting })
    }

    /// Adds `quantity` of a product to the user's cart, creating the cart (the order) if needed.
    pub async fn add_item(
        &self,
        user: &str,
        product_id: &str,
        info: ProductInfo,
        quantity: Quantity,
    ) -> ApiResult<Cart> {
        let info = Arc::new(info);
        for _ in 0..3 {
            let (user, product_id, info) = (user.to_string(), product_id.to_string(), info.clone());
            let added = self
                .db
                .write(move |uow| {
                    Box::pin(async move {
                        Self::add_item_in(uow, &user, &product_id, &info, quantity).await
                    })
                })
                .await?;
            // None: a concurrent request created the cart first; the next look finds it.
            match added {
                Some(Added::NewCart(cart)) => return Ok(cart),
                Some(Added::Changed(id)) => return Ok(Some(self.cart_by_id(&id).await?).into()),
                None => {}
            }
        }
        Err(ApiError::conflict(
            "cart-busy",
            "The cart is changing",
            "your cart is being changed by other requests; try again",
        ))
    }

    /// Sets a cart line's quantity (`info` is the product now, to check availability).
    pub async fn set_quantity(
        &self,
        user: &str,
        product_id: &str,
        info: Option<ProductInfo>,
        quantity: Quantity,
    ) -> ApiResult<Order> {
        let (user, product_id) = (user.to_string(), product_id.to_string());
        let id = self
            .db
            .write(move |uow| {
                Box::pin(async move {
                    Self::set_quantity_in(uow, &user, &product_id, info.as_ref(), quantity).await
                })
            })
            .await?;
        self.cart_by_id(&id).await
    }

    pub async fn remove_item(&self, user: &str, product_id: &str) -> ApiResult<Order> {
        let (user, product_id) = (user.to_string(), product_id.to_string());
        let id = self
            .db
            .write(move |uow| {
                Box::pin(async move { Self::remove_item_in(uow, &user, &product_id).await })
            })
            .await?;
        self.cart_by_id(&id).await
    }

    /// A cart just changed, read after the change committed: the writer is kept for writes.
    async fn cart_by_id(&self, id: &str) -> ApiResult<Order> {
        let mut conn = self.db.read.acquire().await?;
        Ok(load_cart(&mut conn, self.db.backend, id).await?)
    }

    /// Turns the user's cart into a placed order and asks stock to hold it. With an
    /// idempotency key already used, returns the order that key placed instead.
    pub async fn place(
        &self,
        user: &str,
        session: Option<&str>,
        method: &PaymentMethod,
        idempotency: Option<(&str, &str)>,
        waiters: &Arc<Waiters>,
    ) -> ApiResult<Placed> {
        let (user, method, waiters) = (user.to_string(), method.clone(), waiters.clone());
        let session = session.map(str::to_string);
        let idempotency = idempotency.map(|(k, f)| (k.to_string(), f.to_string()));
        self.db
            .write(move |uow| {
                Box::pin(async move {
                    let idempotency = idempotency.as_ref().map(|(k, f)| (k.as_str(), f.as_str()));
                    Self::place_in(uow, &user, session, &method, idempotency, &waiters).await
                })
            })
            .await
    }

    /// Adds orders completed elsewhere (an import from another shop, or a million orders for
    /// `bench/scale.sh`) with their lines and history, in one transaction; answers their ids.
    /// Stock and payments are not touched: these orders are history, not sales to make.
    pub async fn import(&self, orders: Vec<PastOrder>) -> ApiResult<Vec<String>> {
        let mut rows = Vec::with_capacity(orders.len());
        let mut lines = vec![];
        let mut history = vec![];
        let mut ids = Vec::with_capacity(orders.len());
        for order in orders {
            if order.lines.is_empty() {
                return Err(ApiError::validation(
                    "an imported order needs at least one line",
                ));
            }
            let id = uuid::Uuid::now_v7().to_string();
            let mut total = 0i64;
            for line in &order.lines {
                // At most 1,000 units of at most 10^10 each: a line cannot overflow.
                total = total
                    .checked_add(line.unit_price_minor.get() * line.quantity.get())
                    .ok_or_else(|| {
                        ApiError::validation("an imported order's total is too large")
                    })?;
                lines.push(vec![
                    Cell::from(id.as_str()),
                    line.product_id.as_str().into(),
                    line.name.as_str().into(),
                    line.quantity.get().into(),
                    line.unit_price_minor.get().into(),
                    order.placed_at.into(),
                ]);
            }
            for (status, at) in [
                (OrderStatus::Placed.as_str(), order.placed_at),
                (OrderStatus::Completed.as_str(), order.completed_at),
            ] {
                history.push(vec![
                    Cell::from(id.as_str()),
                    status.into(),
                    Cell::Text(None),
                    at.into(),
                ]);
            }
            rows.push(vec![
                Cell::from(id.as_str()),
                order.user_id.into(),
                "completed".into(),
                order.currency.as_str().into(),
                total.into(),
                order.payment_method.into(),
                order.placed_at.into(),
                order.completed_at.into(),
                order.placed_at.into(),
                order.completed_at.into(),
            ]);
            ids.push(id);
        }
        self.db
            .write(move |uow| {
                Box::pin(async move {
                    let columns = [
                        "id",
                        "user_id",
                        "status",
                        "currency",
                        "total_minor",
                        "payment_method",
                        "created_at",
                        "updated_at",
                        "placed_at",
                        "completed_at",
                    ];
                    bulk::insert(uow, "orders", &columns, &rows).await?;
                    let columns = [
                        "order_id",
                        "product_id",
                        "name",
                        "quantity",
                        "unit_price_minor",
                        "added_at",
                    ];
                    bulk::insert(uow, "order_lines", &columns, &lines).await?;
                    let columns = ["order_id", "status", "note", "at"];
                    bulk::insert(uow, "order_history", &columns, &history).await?;
                    Ok::<_, ApiError>(())
                })
            })
            .await?;
        Ok(ids)
    }

    /// Cancels a completed order: stock takes the units back and payment refunds.
    pub async fn cancel(&self, who: &Identity, id: &str) -> ApiResult<Order> {
        let order = self.visible(who, id).await?;
        let who = who.clone();
        self.db
            .write(move |uow| Box::pin(async move { Self::cancel_in(uow, &who, order).await }))
            .await
    }

    /// Just an order's status: what a waiting checkout needs to know.
    pub async fn status(&self, id: &str) -> Result<Option<OrderStatus>, sqlx::Error> {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.read)
            .await?;
        status.as_deref().map(status_of).transpose()
    }

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
    ) -> ApiResult<(Vec<Order>, i64, bool, Next)> {
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

    async fn cancel_in(uow: &mut Uow, who: &Identity, order: Order) -> ApiResult<Order> {
        let id = order.id.as_str();
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE orders SET status = 'cancelled', cancelled_at = $1, updated_at = $1 \
             WHERE id = $2 AND status = 'completed'",
        )
        .bind(now)
        .bind(id)
        .execute(uow.conn())
        .await?;
        if done.rows_affected() == 0 {
            let backend = uow.backend();
            let status = load(uow.conn(), backend, id)
                .await?
                .map_or(order.status, |o| o.status);
            return Err(match status {
                OrderStatus::Placed | OrderStatus::Reserved => ApiError::conflict(
                    "order-in-progress",
                    "The order is still being processed",
                    "try again in a moment, once the order has completed",
                ),
                _ => ApiError::conflict(
                    "order-final",
                    "The order cannot be cancelled",
                    format!("the order is {}", status.as_str()),
                ),
            });
        }
        let note = format!(
            "cancelled by {}",
            if who.is_admin() && who.sub != order.user_id {
                "an admin"
            } else {
                "the shopper"
            }
        );
        record_history(uow, id, OrderStatus::Cancelled.as_str(), Some(&note), now).await?;
        outbox::push(
            uow,
            topics::ORDER,
            &Event::new(
                SOURCE,
                events::CANCELLED,
                id,
                events::OrderCancelled {
                    order_id: id.to_string(),
                },
            ),
        )
        .await?;
        let backend = uow.backend();
        let cancelled = load(uow.conn(), backend, id).await?.expect("order exists");
        Ok(cancelled)
    }

    /// Moves an order from `from` to `to` if it is in `from`, setting `also` in the same
    /// statement; `None` if it was not (a late or repeated event), in which case nothing
    /// changes.
    pub async fn transition(
        uow: &mut Uow,
        order_id: &str,
        from: OrderStatus,
        to: OrderStatus,
        note: Option<&str>,
        also: Also<'_>,
    ) -> Result<Option<Moved>, sqlx::Error> {
        let step = Move {
            order_id,
            from,
            to,
            note,
            also,
        };
        Ok(Self::transition_all(uow, &[step]).await?.pop().flatten())
    }

    /// Makes each move whose order is in its `from` state, with its history row, a statement
    /// per power of two in their count (on PostgreSQL the history rows go in the same
    /// statement). Answers each move's outcome in order: `None` for an order that was not
    /// in `from` (a late or repeated event). An order may appear only once.
    pub async fn transition_all(
        uow: &mut Uow,
        moves: &[Move<'_>],
    ) -> Result<Vec<Option<Moved>>, sqlx::Error> {
        let now = now_ms();
        let mut moved: HashMap<String, Moved> = HashMap::with_capacity(moves.len());
        let postgres = uow.backend() == Backend::Postgres;
        for run in power_of_two_runs(moves, 32) {
            let rows: Vec<String> = (0..run.len())
                .map(|i| format!("({})", placeholders(2 + 9 * i, 9)))
                .collect();
            // The new values of a move, or NULL for "keep": a handful of statement texts
            // serve every kind of move.
            let update = "UPDATE orders SET status = to_status, updated_at = $1, \
                 completed_at = CASE WHEN to_status = 'completed' THEN $1 ELSE completed_at END, \
                 total_minor = COALESCE(new_total, total_minor), \
                 currency = COALESCE(new_currency, currency), \
                 payment_reference = COALESCE(new_reference, payment_reference), \
                 failure_kind = COALESCE(new_failure_kind, failure_kind), \
                 failure_reason = COALESCE(new_failure_reason, failure_reason) \
                 FROM v WHERE id = move_id AND status = from_status";
            let values = format!(
                "WITH v (move_id, from_status, to_status, note_text, new_total, new_currency, \
                 new_reference, new_failure_kind, new_failure_reason) AS \
                 (VALUES {})",
                rows.join(",")
            );
            // PostgreSQL writes the history rows in the same round trip; SQLite runs
            // statements in the process (and has no DML in CTEs), so there a second one
            // costs little.
            let sql = if postgres {
                format!(
                    "{values}, moved AS ({update} RETURNING id, payment_method, user_id, \
                     to_status, note_text), noted AS (INSERT INTO order_history \
                     (order_id, status, note, at) SELECT id, to_status, note_text, $1 FROM moved) \
                     SELECT id, payment_method, user_id FROM moved"
                )
            } else {
                format!("{values} {update} RETURNING id, payment_method, user_id")
            };
            let mut query = sqlx::query_as::<_, (String, Option<String>, String)>(&sql).bind(now);
            for m in run {
                let (mut total, mut currency, mut reference) = (None, None, None);
                let (mut failure_kind, mut failure_reason) = (None, None);
                match m.also {
                    Also::Failure { kind, reason } => {
                        failure_kind = Some(kind);
                        failure_reason = Some(reason);
                    }
                    Also::PaymentReference(value) => reference = Some(value),
                    Also::Priced {
                        total_minor,
                        currency: value,
                    } => {
                        total = Some(total_minor);
                        currency = Some(value);
                    }
                }
                query = query
                    .bind(m.order_id)
                    .bind(m.from.as_str())
                    .bind(m.to.as_str())
                    .bind(m.note)
                    .bind(total)
                    .bind(currency)
                    .bind(reference)
                    .bind(failure_kind)
                    .bind(failure_reason);
            }
            let rows = query.fetch_all(uow.conn()).await?;
            if !postgres && !rows.is_empty() {
                let ids: HashSet<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
                let history: Vec<_> = run
                    .iter()
                    .filter(|m| ids.contains(m.order_id))
                    .map(|m| (m.order_id, m.to.as_str(), m.note))
                    .collect();
                record_history_all(uow, &history, now).await?;
            }
            for (id, payment_method, user_id) in rows {
                moved.insert(
                    id,
                    Moved {
                        payment_method,
                        user_id,
                    },
                );
            }
        }
        Ok(moves.iter().map(|m| moved.remove(m.order_id)).collect())
    }

    pub async fn line_name(
        uow: &mut Uow,
        order_id: &str,
        product_id: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT name FROM order_lines WHERE order_id = $1 AND product_id = $2")
            .bind(order_id)
            .bind(product_id)
            .fetch_optional(uow.conn())
            .await
    }

    /// Prices the orders' lines as stock reserved them (each order's total is set with its
    /// move to `reserved`): a statement per power of two in the number of lines.
    pub async fn apply_reserved_prices(
        uow: &mut Uow,
        reserved: &[&StockReserved],
    ) -> Result<(), sqlx::Error> {
        let lines: Vec<(&str, &ReservedLine)> = reserved
            .iter()
            .flat_map(|r| r.lines.iter().map(|l| (r.order_id.as_str(), l)))
            .collect();
        for run in power_of_two_runs(&lines, 32) {
            let rows: Vec<String> = (0..run.len())
                .map(|i| format!("({})", placeholders(1 + 4 * i, 4)))
                .collect();
            let sql = format!(
                "WITH v (line_order, line_product, new_price, new_name) AS (VALUES {}) \
                 UPDATE order_lines SET unit_price_minor = new_price, name = new_name FROM v \
                 WHERE order_id = line_order AND product_id = line_product",
                rows.join(",")
            );
            let mut query = sqlx::query(&sql);
            for (order_id, line) in run {
                query = query
                    .bind(*order_id)
                    .bind(&line.product_id)
                    .bind(line.unit_price_minor)
                    .bind(&line.name);
            }
            query.execute(uow.conn()).await?;
        }
        Ok(())
    }

    pub async fn mark_refunded(uow: &mut Uow, order_id: &str) -> Result<(), sqlx::Error> {
        let now = now_ms();
        sqlx::query("UPDATE orders SET refunded_at = $1, updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(order_id)
            .execute(uow.conn())
            .await?;
        record_history(uow, order_id, "refunded", None, now).await
    }
}

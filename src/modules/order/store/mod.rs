//! The order module's SQL: carts, orders, their lines and history, idempotency keys. By job:
//! `cart.rs` (a shopper's cart), `checkout.rs` (a cart becomes an order), `saga.rs` (the
//! order's moves as stock and payment answer), `queries.rs` (lists and searches); what they
//! share (reading an order, its history, importing and cancelling) is here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use super::catalog::ProductInfo;
use super::error::OrderError;
use super::events::{self, LineQuantity, OrderPlaced, PaymentMethod, SOURCE};
use super::model::{Cart, Failure, Order, OrderLine, OrderStatus, StatusChange};
use super::waiters::{Waiters, Waiting};
use crate::bus::{outbox, topics, Event};
use crate::contracts::stock::{ReservedLine, StockReserved};
use crate::db::bulk::{self, Cell};
use crate::db::keyset::{self, Next, Order as ListOrder, Paging};
use crate::db::{now_ms, placeholders, power_of_two_runs, rfc3339, Backend, Db, Uow};
use crate::domain::{Currency, PriceMinor, Quantity};

mod cart;
mod checkout;
mod queries;
mod saga;

pub use cart::Short;
pub use checkout::Placed;
pub use queries::OrderFilter;

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

/// One order's step in the saga: from one state to the next, with what else changes.
#[derive(Clone, Copy)]
pub struct Move<'a> {
    pub order_id: &'a str,
    pub from: OrderStatus,
    pub to: OrderStatus,
    pub note: Option<&'a str>,
    pub also: Also<'a>,
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

impl OrderStore {
    pub fn new(db: Db) -> OrderStore {
        OrderStore { db }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Order>, sqlx::Error> {
        let mut conn = self.db.read.acquire().await?;
        load(&mut conn, self.db.backend, id).await
    }

    /// Adds orders completed elsewhere (an import from another shop, or a million orders for
    /// `bench/scale.sh`) with their lines and history, in one transaction; answers their ids.
    /// Stock and payments are not touched: these orders are history, not sales to make.
    pub async fn import(&self, orders: Vec<PastOrder>) -> Result<Vec<String>, OrderError> {
        let mut rows = Vec::with_capacity(orders.len());
        let mut lines = vec![];
        let mut history = vec![];
        let mut ids = Vec::with_capacity(orders.len());
        for order in orders {
            if order.lines.is_empty() {
                return Err(OrderError::Invalid(
                    "an imported order needs at least one line".into(),
                ));
            }
            let id = uuid::Uuid::now_v7().to_string();
            let mut total = 0i64;
            for line in &order.lines {
                // At most 1,000 units of at most 10^10 each: a line cannot overflow.
                total = total
                    .checked_add(line.unit_price_minor.get() * line.quantity.get())
                    .ok_or_else(|| {
                        OrderError::Invalid("an imported order's total is too large".into())
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
                    Ok::<_, OrderError>(())
                })
            })
            .await?;
        Ok(ids)
    }

    /// Cancels a completed order: stock takes the units back and payment refunds. `by` is
    /// who asked, for the order's history: `"the shopper"` or `"an admin"`.
    pub async fn cancel(&self, order: Order, by: &'static str) -> Result<Order, OrderError> {
        self.db
            .write(move |uow| Box::pin(async move { Self::cancel_in(uow, order, by).await }))
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

    async fn cancel_in(uow: &mut Uow, order: Order, by: &'static str) -> Result<Order, OrderError> {
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
                OrderStatus::Placed | OrderStatus::Reserved => OrderError::InProgress,
                _ => OrderError::Final(status),
            });
        }
        let note = format!("cancelled by {by}");
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
                    amount_minor: order.total_minor,
                    currency: order.currency.clone().unwrap_or_default(),
                },
            ),
        )
        .await?;
        let backend = uow.backend();
        let cancelled = load(uow.conn(), backend, id).await?.expect("order exists");
        Ok(cancelled)
    }
}

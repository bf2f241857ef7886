//! The stock module's SQL: products and the reservations held for orders.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::events::{ReservedLine, StockRejected, StockReserved};
use super::model::{NewProduct, Product, ProductPatch, ProductQuery};
use crate::db::{like_pattern, now_ms, rfc3339, Db, Uow};
use crate::domain;
use crate::error::{ApiError, ApiResult};
use crate::modules::order::events::LineQuantity;

const COLUMNS: &str =
    "id, sku, name, description, price_minor, currency, on_hand, reserved, created_at, updated_at";

#[derive(Clone)]
pub struct StockStore {
    pub(super) db: Db,
}

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

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

impl StockStore {
    pub fn new(db: Db) -> StockStore {
        StockStore { db }
    }

    pub async fn list(&self, query: &ProductQuery) -> ApiResult<(Vec<Product>, i64, u32, u32)> {
        let (page, per_page) = crate::gateway::extract::paging(query.page, query.per_page)?;
        let q = query.q.as_deref().map(str::trim).unwrap_or("");
        if q.chars().count() > 100 {
            return Err(ApiError::bad_request("q must be at most 100 characters"));
        }
        let filter = if q.is_empty() {
            ""
        } else {
            "WHERE LOWER(name) LIKE $1 ESCAPE '\\' OR LOWER(sku) LIKE $1 ESCAPE '\\' \
             OR LOWER(description) LIKE $1 ESCAPE '\\'"
        };
        let (limit_at, offset_at) = if q.is_empty() { (1, 2) } else { (2, 3) };
        let sql = format!(
            "SELECT {COLUMNS} FROM products {filter} ORDER BY {} LIMIT ${limit_at} OFFSET ${offset_at}",
            query.sort.unwrap_or_default().order_by()
        );
        let count_sql = format!("SELECT COUNT(*) FROM products {filter}");
        let pattern = like_pattern(q);
        let mut items = sqlx::query(&sql);
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        if !q.is_empty() {
            items = items.bind(&pattern);
            count = count.bind(&pattern);
        }
        let rows = items
            .bind(per_page as i64)
            .bind((page as i64 - 1) * per_page as i64)
            .fetch_all(&self.db.read)
            .await?;
        let total = count.fetch_one(&self.db.read).await?;
        let items = rows.iter().map(product).collect::<Result<_, _>>()?;
        Ok((items, total, page, per_page))
    }

    pub async fn get(&self, id: &str) -> Result<Option<Product>, sqlx::Error> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db.read)
            .await?
            .map(|row| product(&row))
            .transpose()
    }

    async fn get_in(uow: &mut Uow, id: &str) -> ApiResult<Product> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
            .bind(id)
            .fetch_optional(uow.conn())
            .await?
            .ok_or_else(|| ApiError::not_found("product"))?;
        Ok(product(&row)?)
    }

    pub async fn create(&self, new: NewProduct) -> ApiResult<Product> {
        let sku = domain::sku(&new.sku).map_err(ApiError::validation)?;
        let name = domain::bounded_text("name", &new.name, 1, 200).map_err(ApiError::validation)?;
        let description = domain::bounded_text("description", &new.description, 0, 5000)
            .map_err(ApiError::validation)?;
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let mut uow = self.db.begin().await?;
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
        let created = Self::get_in(&mut uow, &id).await?;
        uow.commit().await?;
        Ok(created)
    }

    pub async fn update(&self, id: &str, patch: ProductPatch) -> ApiResult<Product> {
        let mut uow = self.db.begin().await?;
        let current = Self::get_in(&mut uow, id).await?;
        let sku = match &patch.sku {
            Some(s) => domain::sku(s).map_err(ApiError::validation)?,
            None => current.sku,
        };
        let name = match &patch.name {
            Some(n) => domain::bounded_text("name", n, 1, 200).map_err(ApiError::validation)?,
            None => current.name,
        };
        let description = match &patch.description {
            Some(d) => {
                domain::bounded_text("description", d, 0, 5000).map_err(ApiError::validation)?
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
        let product = Self::get_in(&mut uow, id).await?;
        uow.commit().await?;
        Ok(product)
    }

    pub async fn restock(&self, id: &str, quantity: i64) -> ApiResult<Product> {
        let mut uow = self.db.begin().await?;
        let current = Self::get_in(&mut uow, id).await?;
        if current.on_hand + quantity > domain::StockLevel::MAX * 100 {
            return Err(ApiError::validation(
                "that would put too many units on hand",
            ));
        }
        sqlx::query("UPDATE products SET on_hand = on_hand + $1, updated_at = $2 WHERE id = $3")
            .bind(quantity)
            .bind(now_ms())
            .bind(id)
            .execute(uow.conn())
            .await?;
        let product = Self::get_in(&mut uow, id).await?;
        uow.commit().await?;
        Ok(product)
    }

    /// Takes units off the shelf (damaged, lost). Units reserved for orders stay.
    pub async fn reduce(&self, id: &str, quantity: i64) -> ApiResult<Product> {
        let mut uow = self.db.begin().await?;
        let current = Self::get_in(&mut uow, id).await?;
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
            return Err(ApiError::conflict(
                "insufficient-stock",
                "Not enough stock",
                format!(
                    "only {} units are available to remove ({} are reserved for orders)",
                    current.available, current.reserved
                ),
            )
            .with("available", current.available));
        }
        let product = Self::get_in(&mut uow, id).await?;
        uow.commit().await?;
        Ok(product)
    }

    /// Holds every line for `order_id`, or none of them.
    pub async fn reserve(
        uow: &mut Uow,
        order_id: &str,
        lines: &[LineQuantity],
    ) -> Result<Reservation, sqlx::Error> {
        let existing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM reservations WHERE order_id = $1")
                .bind(order_id)
                .fetch_one(uow.conn())
                .await?;
        if existing > 0 {
            return Ok(Reservation::AlreadyHandled);
        }
        let now = now_ms();
        let mut held: Vec<ReservedLine> = Vec::with_capacity(lines.len());
        let mut currency: Option<String> = None;
        for line in lines {
            let row = sqlx::query(
                "UPDATE products SET reserved = reserved + $1, updated_at = $2 \
                 WHERE id = $3 AND on_hand - reserved >= $1 \
                 RETURNING name, price_minor, currency, on_hand, reserved",
            )
            .bind(line.quantity)
            .bind(now)
            .bind(&line.product_id)
            .fetch_optional(uow.conn())
            .await?;
            let rejection = match &row {
                None => {
                    let available: Option<i64> =
                        sqlx::query_scalar("SELECT on_hand - reserved FROM products WHERE id = $1")
                            .bind(&line.product_id)
                            .fetch_optional(uow.conn())
                            .await?;
                    Some(match available {
                        Some(available) => (available, "not enough stock"),
                        None => (0, "the product is no longer sold"),
                    })
                }
                Some(row) => {
                    let c: String = row.try_get("currency")?;
                    if currency.as_ref().is_some_and(|cur| *cur != c) {
                        let on_hand: i64 = row.try_get("on_hand")?;
                        let reserved: i64 = row.try_get("reserved")?;
                        // Count this line's units as held so the undo below releases them too.
                        held.push(ReservedLine {
                            product_id: line.product_id.clone(),
                            name: String::new(),
                            quantity: line.quantity,
                            unit_price_minor: 0,
                        });
                        Some((on_hand - reserved, "products in different currencies"))
                    } else {
                        currency = Some(c);
                        held.push(ReservedLine {
                            product_id: line.product_id.clone(),
                            name: row.try_get("name")?,
                            quantity: line.quantity,
                            unit_price_minor: row.try_get("price_minor")?,
                        });
                        None
                    }
                }
            };
            if let Some((available, reason)) = rejection {
                for h in &held {
                    sqlx::query("UPDATE products SET reserved = reserved - $1 WHERE id = $2")
                        .bind(h.quantity)
                        .bind(&h.product_id)
                        .execute(uow.conn())
                        .await?;
                }
                return Ok(Reservation::Rejected(StockRejected {
                    order_id: order_id.to_string(),
                    product_id: line.product_id.clone(),
                    requested: line.quantity,
                    available: available.max(0),
                    reason: reason.to_string(),
                }));
            }
        }
        for h in &held {
            sqlx::query(
                "INSERT INTO reservations (order_id, product_id, quantity, unit_price_minor, \
                 state, updated_at) VALUES ($1, $2, $3, $4, 'reserved', $5)",
            )
            .bind(order_id)
            .bind(&h.product_id)
            .bind(h.quantity)
            .bind(h.unit_price_minor)
            .bind(now)
            .execute(uow.conn())
            .await?;
        }
        let total_minor = held.iter().map(|h| h.quantity * h.unit_price_minor).sum();
        Ok(Reservation::Reserved(StockReserved {
            order_id: order_id.to_string(),
            lines: held,
            currency: currency.unwrap_or_default(),
            total_minor,
        }))
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

    /// The order is paid: its held units leave the warehouse.
    pub async fn commit(uow: &mut Uow, order_id: &str) -> Result<u64, sqlx::Error> {
        Self::settle(uow, order_id, "reserved", "committed", -1, -1).await
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
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
            .fetch_one(&self.db.read)
            .await?;
        Ok(n == 0)
    }
}

fn duplicate_sku(sku: &str) -> ApiError {
    ApiError::conflict(
        "duplicate-sku",
        "SKU already in use",
        format!("another product already has SKU {sku}"),
    )
}

//! Carts: adding, changing and removing lines, with the stock module's word on each product.

use super::*;

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

pub(super) async fn cart_id<C>(conn: &mut C, user: &str) -> Result<Option<String>, sqlx::Error>
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

/// Whether `wanted` units of a product may be in one cart: within the per-order limit and
/// what is available.
fn check_wanted(info: &ProductInfo, wanted: i64) -> Result<(), OrderError> {
    if wanted > Quantity::MAX {
        return Err(OrderError::Invalid(format!(
            "at most {} of one product per order",
            Quantity::MAX
        )));
    }
    if wanted > info.available {
        return Err(not_enough(info, wanted));
    }
    Ok(())
}

fn not_enough(info: &ProductInfo, wanted: i64) -> OrderError {
    OrderError::NotEnough {
        name: info.name.clone(),
        wanted,
        available: info.available,
    }
}

/// A product a failed order could not have, and how many of it were left.
pub struct Short<'a> {
    pub product_id: &'a str,
    pub available: i64,
}

impl OrderStore {
    /// Puts the lines of `order_id`, which just failed (declined, or short of stock), back in
    /// its shopper's cart, so that she is back at checkout with the same items and can pay
    /// another way rather than fill the cart again. The cart is made if she has none; a line
    /// she has put in a new cart meanwhile stays as she left it. The `short` product comes
    /// back only as far as it is available (not at all when none is). Answers the cart's id.
    pub async fn restore_cart(
        uow: &mut Uow,
        order_id: &str,
        short: Option<Short<'_>>,
    ) -> Result<Option<String>, sqlx::Error> {
        let now = now_ms();
        let Some((user, currency)): Option<(String, Option<String>)> =
            sqlx::query_as("SELECT user_id, currency FROM orders WHERE id = $1")
                .bind(order_id)
                .fetch_optional(uow.conn())
                .await?
        else {
            return Ok(None);
        };
        let (short_id, left) = short.map_or(("", 0), |s| (s.product_id, s.available.max(0)));
        let coming_back: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM order_lines WHERE order_id = $1 \
             AND NOT (product_id = $2 AND $3 = 0)",
        )
        .bind(order_id)
        .bind(short_id)
        .bind(left)
        .fetch_one(uow.conn())
        .await?;
        if coming_back == 0 {
            return Ok(None);
        }
        let cart = match lock_cart(uow, &user).await? {
            Some(cart) => cart,
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                let made = sqlx::query(
                    "INSERT INTO orders (id, user_id, status, currency, total_minor, \
                     created_at, updated_at) VALUES ($1, $2, 'cart', $3, 0, $4, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&id)
                .bind(&user)
                .bind(&currency)
                .bind(now)
                .execute(uow.conn())
                .await?;
                if made.rows_affected() == 1 {
                    record_history(uow, &id, OrderStatus::Cart.as_str(), None, now).await?;
                    id
                } else {
                    // The shopper's own request made one at this moment.
                    match lock_cart(uow, &user).await? {
                        Some(cart) => cart,
                        None => return Ok(None),
                    }
                }
            }
        };
        sqlx::query(
            "INSERT INTO order_lines (order_id, product_id, name, quantity, unit_price_minor, \
             added_at) SELECT $1, product_id, name, \
             CASE WHEN product_id = $3 AND quantity > $4 THEN $4 ELSE quantity END, \
             unit_price_minor, $5 FROM order_lines \
             WHERE order_id = $2 AND NOT (product_id = $3 AND $4 = 0) \
             ON CONFLICT (order_id, product_id) DO NOTHING",
        )
        .bind(&cart)
        .bind(order_id)
        .bind(short_id)
        .bind(left)
        .bind(now)
        .execute(uow.conn())
        .await?;
        refresh_totals(uow, &cart, now, currency.as_deref()).await?;
        Ok(Some(cart))
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
    ) -> Result<Option<Added>, OrderError> {
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
            return Err(OrderError::CurrencyMismatch {
                name: info.name.clone(),
                priced_in: info.currency.clone(),
                cart_in: currency.unwrap_or_default(),
            });
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
    ) -> Result<OpenedCart, OrderError> {
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

    /// Sets (`Some`, after checking `info`'s availability if given) or removes (`None`) the
    /// line of `product_id` in `user`'s cart; answers the cart's id.
    async fn edit_line_in(
        uow: &mut Uow,
        user: &str,
        product_id: &str,
        quantity: Option<(Quantity, Option<&ProductInfo>)>,
    ) -> Result<String, OrderError> {
        let now = now_ms();
        let order_id = lock_cart(uow, user)
            .await?
            .ok_or(OrderError::NotFound("cart item"))?;
        let edit = match quantity {
            Some((quantity, info)) => {
                if let Some(info) = info.filter(|info| quantity.get() > info.available) {
                    return Err(not_enough(info, quantity.get()));
                }
                sqlx::query(
                    "UPDATE order_lines SET quantity = $1 WHERE order_id = $2 AND product_id = $3",
                )
                .bind(quantity.get())
                .bind(&order_id)
                .bind(product_id)
            }
            None => sqlx::query("DELETE FROM order_lines WHERE order_id = $1 AND product_id = $2")
                .bind(&order_id)
                .bind(product_id),
        };
        if edit.execute(uow.conn()).await?.rows_affected() == 0 {
            return Err(OrderError::NotFound("cart item"));
        }
        refresh_totals(uow, &order_id, now, None).await?;
        Ok(order_id)
    }

    /// Adds `quantity` of a product to the user's cart, creating the cart (the order) if needed.
    pub async fn add_item(
        &self,
        user: &str,
        product_id: &str,
        info: ProductInfo,
        quantity: Quantity,
    ) -> Result<Cart, OrderError> {
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
        Err(OrderError::CartBusy)
    }

    /// Sets a cart line's quantity (`info` is the product now, to check availability).
    pub async fn set_quantity(
        &self,
        user: &str,
        product_id: &str,
        info: Option<ProductInfo>,
        quantity: Quantity,
    ) -> Result<Order, OrderError> {
        let (user, product_id) = (user.to_string(), product_id.to_string());
        let id = self
            .db
            .write(move |uow| {
                Box::pin(async move {
                    Self::edit_line_in(uow, &user, &product_id, Some((quantity, info.as_ref())))
                        .await
                })
            })
            .await?;
        self.cart_by_id(&id).await
    }

    pub async fn remove_item(&self, user: &str, product_id: &str) -> Result<Order, OrderError> {
        let (user, product_id) = (user.to_string(), product_id.to_string());
        let id = self
            .db
            .write(move |uow| {
                Box::pin(async move { Self::edit_line_in(uow, &user, &product_id, None).await })
            })
            .await?;
        self.cart_by_id(&id).await
    }

    /// A cart just changed, read after the change committed: the writer is kept for writes.
    async fn cart_by_id(&self, id: &str) -> Result<Order, OrderError> {
        let mut conn = self.db.read.acquire().await?;
        Ok(load_cart(&mut conn, self.db.backend, id).await?)
    }
}

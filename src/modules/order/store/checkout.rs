//! Checkout: a cart becomes a placed order, once per Idempotency-Key.

use super::cart::cart_id;
use super::*;

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

impl OrderStore {
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
    ) -> Result<Placed, OrderError> {
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
            return Err(OrderError::EmptyCart);
        };
        // Read after the move, which waited for any change to the cart in flight: these are
        // the lines the order was placed with, and none can be added any more.
        let lines: Vec<(String, i64)> =
            sqlx::query_as("SELECT product_id, quantity FROM order_lines WHERE order_id = $1")
                .bind(&order_id)
                .fetch_all(uow.conn())
                .await?;
        if lines.is_empty() {
            return Err(OrderError::EmptyCart); // the job fails, so the move is undone
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

    /// Turns the user's cart into a placed order and asks stock to hold it. With an
    /// idempotency key already used, returns the order that key placed instead.
    pub async fn place(
        &self,
        user: &str,
        session: Option<&str>,
        method: &PaymentMethod,
        idempotency: Option<(&str, &str)>,
        waiters: &Arc<Waiters>,
    ) -> Result<Placed, OrderError> {
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
}

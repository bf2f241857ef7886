//! The checkout saga's moves: an order from one state to the next as the other modules answer.

use super::*;

impl OrderStore {
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

//! The payment module's SQL.

use std::collections::HashSet;
use std::fmt::Write;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use utoipa::ToSchema;

use super::method::PaymentMethod;
use super::provider::Outcome;
use crate::db::{padded_to_power_of_two, placeholders, power_of_two_runs, rfc3339, Db, Uow};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Payment {
    pub id: String,
    pub order_id: String,
    /// CASH, UPI, CARD, EMI or NET_BANKING.
    pub mode: String,
    /// What paid, safe to show (`Card •••• 4242`).
    pub instrument: String,
    pub amount_minor: i64,
    pub currency: String,
    /// `pending` (the provider is being asked), `succeeded`, `failed`, `refunding` (the
    /// provider is being asked to refund) or `refunded`.
    pub status: String,
    pub reference: String,
    pub decline_code: Option<String>,
    pub decline_reason: Option<String>,
    pub created_at: String,
    pub refunded_at: Option<String>,
    pub refund_reference: Option<String>,
    #[serde(skip)]
    pub user_id: String,
    /// What the provider is asked to charge (None for payments settled before it was kept).
    #[serde(skip)]
    pub method: Option<PaymentMethod>,
    /// The trace the payment was asked for in, which the event of its outcome continues.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

const COLUMNS: &str = "id, order_id, user_id, mode, instrument, amount_minor, currency, status, \
    reference, decline_code, decline_reason, created_at, refunded_at, refund_reference, method, \
    traceparent";

fn payment(row: &AnyRow) -> Result<Payment, sqlx::Error> {
    Ok(Payment {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        user_id: row.try_get("user_id")?,
        mode: row.try_get("mode")?,
        instrument: row.try_get("instrument")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        status: row.try_get("status")?,
        reference: row.try_get("reference")?,
        decline_code: row.try_get("decline_code")?,
        decline_reason: row.try_get("decline_reason")?,
        created_at: rfc3339(row.try_get("created_at")?),
        refunded_at: row.try_get::<Option<i64>, _>("refunded_at")?.map(rfc3339),
        refund_reference: row.try_get("refund_reference")?,
        method: row
            .try_get::<Option<String>, _>("method")?
            .and_then(|json| serde_json::from_str(&json).ok()),
        traceparent: row.try_get("traceparent")?,
    })
}

#[derive(Clone)]
pub struct PaymentStore {
    pub(super) db: Db,
}

impl PaymentStore {
    pub fn new(db: Db) -> PaymentStore {
        PaymentStore { db }
    }

    pub async fn for_order(&self, order_id: &str) -> Result<Option<Payment>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(&self.db.read)
        .await?
        .map(|r| payment(&r))
        .transpose()
    }

    pub async fn for_order_in(
        uow: &mut Uow,
        order_id: &str,
    ) -> Result<Option<Payment>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(uow.conn())
        .await?
        .map(|r| payment(&r))
        .transpose()
    }

    pub async fn insert(uow: &mut Uow, p: &Payment, created_at: i64) -> Result<(), sqlx::Error> {
        Self::insert_all(uow, std::slice::from_ref(p), created_at).await
    }

    /// Inserts `payments`, a statement per power of two in their count.
    pub async fn insert_all(
        uow: &mut Uow,
        payments: &[Payment],
        created_at: i64,
    ) -> Result<(), sqlx::Error> {
        for run in power_of_two_runs(payments, 32) {
            let mut sql = String::from(
                "INSERT INTO payments (id, order_id, user_id, mode, instrument, amount_minor, \
                 currency, status, reference, decline_code, decline_reason, method, traceparent, \
                 created_at) VALUES ",
            );
            for i in 0..run.len() {
                let b = 2 + 13 * i;
                if i > 0 {
                    sql.push(',');
                }
                let _ = write!(sql, "({}, $1)", placeholders(b, 13));
            }
            let mut query = sqlx::query(&sql).bind(created_at);
            for p in run {
                query =
                    query
                        .bind(&p.id)
                        .bind(&p.order_id)
                        .bind(&p.user_id)
                        .bind(&p.mode)
                        .bind(&p.instrument)
                        .bind(p.amount_minor)
                        .bind(&p.currency)
                        .bind(&p.status)
                        .bind(&p.reference)
                        .bind(&p.decline_code)
                        .bind(&p.decline_reason)
                        .bind(p.method.as_ref().map(|m| {
                            serde_json::to_string(m).expect("a payment method serializes")
                        }))
                        .bind(&p.traceparent);
            }
            query.execute(uow.conn()).await?;
        }
        Ok(())
    }

    /// Which of `order_ids` already have a payment.
    pub async fn orders_with_payments(
        uow: &mut Uow,
        order_ids: &[&str],
    ) -> Result<HashSet<String>, sqlx::Error> {
        if order_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let ids = padded_to_power_of_two(order_ids);
        let sql = format!(
            "SELECT order_id FROM payments WHERE order_id IN ({})",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for id in ids {
            query = query.bind(id);
        }
        Ok(query.fetch_all(uow.conn()).await?.into_iter().collect())
    }

    /// The payments whose provider call is not recorded yet: asked for (`pending`) or being
    /// refunded (`refunding`). After a crash these are asked again, with the same keys.
    pub async fn unsettled(&self) -> Result<Vec<Payment>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE status IN ('pending', 'refunding') ORDER BY id"
        ))
        .fetch_all(&self.db.read)
        .await?
        .iter()
        .map(payment)
        .collect()
    }

    /// Records the provider's answers to pending charges, a statement per power of two in
    /// their count, and answers the ids recorded now: one recorded before (another instance
    /// asked too) is left as it is.
    pub async fn settle_charges(
        uow: &mut Uow,
        answers: &[(&str, &Outcome)],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let mut settled = HashSet::with_capacity(answers.len());
        for run in power_of_two_runs(answers, 32) {
            let mut sql = String::from(
                "UPDATE payments SET status = settled.column2, \
                 reference = settled.column3, decline_code = settled.column4, \
                 decline_reason = settled.column5 FROM (VALUES ",
            );
            for i in 0..run.len() {
                if i > 0 {
                    sql.push(',');
                }
                let _ = write!(sql, "({})", placeholders(1 + 5 * i, 5));
            }
            sql.push_str(
                ") AS settled WHERE payments.id = settled.column1 \
                 AND payments.status = 'pending' RETURNING payments.id",
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for (id, outcome) in run {
                let (status, reference, code, reason) = match outcome {
                    Outcome::Approved { reference } => {
                        ("succeeded", reference.as_str(), None, None)
                    }
                    Outcome::Declined { code, reason } => {
                        ("failed", "", Some(code.as_str()), Some(reason.as_str()))
                    }
                };
                query = query
                    .bind(*id)
                    .bind(status)
                    .bind(reference)
                    .bind(code)
                    .bind(reason);
            }
            settled.extend(query.fetch_all(uow.conn()).await?);
        }
        Ok(settled)
    }

    /// Marks the succeeded payment of `order_id` as being refunded, and answers it; None if
    /// it has no succeeded payment (none, declined, or refunded already).
    pub async fn start_refund(
        uow: &mut Uow,
        order_id: &str,
    ) -> Result<Option<Payment>, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE payments SET status = 'refunding' WHERE order_id = $1 AND status = 'succeeded'",
        )
        .bind(order_id)
        .execute(uow.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        Self::for_order_in(uow, order_id).await
    }

    /// Records the provider's refund. False if it was recorded already.
    pub async fn settle_refund(
        uow: &mut Uow,
        id: &str,
        refund_reference: &str,
        at: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE payments SET status = 'refunded', refunded_at = $1, refund_reference = $2 \
             WHERE id = $3 AND status = 'refunding'",
        )
        .bind(at)
        .bind(refund_reference)
        .bind(id)
        .execute(uow.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

//! The order side of the checkout saga: reacts to stock (`ekart.stock`) and payment
//! (`ekart.payment`) and moves each order along, compensating on every failure path.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;

use super::events::{self, OrderCompleted, OrderFailed, PaymentRequested, SOURCE};
use super::store::{Also, OrderStore};
use super::waiters::Waiters;
use crate::bus::inbox::{AfterCommit, Handler};
use crate::bus::{outbox, topics, Event};
use crate::db::Uow;
use crate::modules::payment::events::{
    self as payment_events, PaymentFailed, PaymentRefunded, PaymentSucceeded,
};
use crate::modules::stock::events::{self as stock_events, StockRejected, StockReserved};

pub struct SagaHandler {
    pub waiters: Arc<Waiters>,
}

async fn emit(
    uow: &mut Uow,
    kind: &str,
    order_id: &str,
    data: impl serde::Serialize,
) -> anyhow::Result<()> {
    outbox::push(
        uow,
        topics::ORDER,
        &Event::new(SOURCE, kind, order_id, data),
    )
    .await?;
    Ok(())
}

impl SagaHandler {
    fn wake_after_commit(&self, after: &mut AfterCommit, order_id: &str) {
        let waiters = self.waiters.clone();
        let order_id = order_id.to_string();
        after.push(Box::new(move || waiters.wake(&order_id)));
    }

    async fn fail(
        &self,
        uow: &mut Uow,
        after: &mut AfterCommit,
        order_id: &str,
        from: &str,
        kind: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        let failure = Also::Failure { kind, reason };
        if OrderStore::transition(uow, order_id, from, "failed", Some(reason), failure)
            .await?
            .is_some()
        {
            // Stock releases whatever it holds for the order.
            emit(
                uow,
                events::FAILED,
                order_id,
                OrderFailed {
                    order_id: order_id.to_string(),
                    reason: reason.to_string(),
                },
            )
            .await?;
            self.wake_after_commit(after, order_id);
        }
        Ok(())
    }
}

#[async_trait]
impl Handler for SagaHandler {
    fn handles(&self, kind: &str) -> bool {
        matches!(
            kind,
            stock_events::RESERVED
                | stock_events::REJECTED
                | payment_events::SUCCEEDED
                | payment_events::FAILED
                | payment_events::REFUNDED
        )
    }

    async fn handle(
        &self,
        uow: &mut Uow,
        event: &Event,
        after: &mut AfterCommit,
    ) -> anyhow::Result<()> {
        match event.kind.as_str() {
            stock_events::RESERVED => {
                let reserved: StockReserved = event.data()?;
                let priced = Also::Priced {
                    total_minor: reserved.total_minor,
                    currency: &reserved.currency,
                };
                let moved = OrderStore::transition(
                    uow,
                    &reserved.order_id,
                    "placed",
                    "reserved",
                    None,
                    priced,
                )
                .await?;
                if let Some(moved) = moved {
                    OrderStore::apply_reserved_prices(uow, &reserved).await?;
                    let method =
                        serde_json::from_str(moved.payment_method.as_deref().unwrap_or(""))
                            .context("the placed order's payment method")?;
                    let user_id = moved.user_id;
                    emit(
                        uow,
                        events::PAYMENT_REQUESTED,
                        &reserved.order_id,
                        PaymentRequested {
                            order_id: reserved.order_id.clone(),
                            user_id,
                            amount_minor: reserved.total_minor,
                            currency: reserved.currency.clone(),
                            method,
                        },
                    )
                    .await?;
                }
            }
            stock_events::REJECTED => {
                let rejected: StockRejected = event.data()?;
                let name = OrderStore::line_name(uow, &rejected.order_id, &rejected.product_id)
                    .await?
                    .unwrap_or_else(|| "a product".into());
                let reason = match rejected.available {
                    0 => format!("{name} is out of stock ({})", rejected.reason),
                    n => format!(
                        "only {n} of {name} left, you asked for {}",
                        rejected.requested
                    ),
                };
                self.fail(
                    uow,
                    after,
                    &rejected.order_id,
                    "placed",
                    "out_of_stock",
                    &reason,
                )
                .await?;
            }
            payment_events::SUCCEEDED => {
                let paid: PaymentSucceeded = event.data()?;
                let note = format!("paid, reference {}", paid.reference);
                let reference = Also::PaymentReference(&paid.reference);
                let moved = OrderStore::transition(
                    uow,
                    &paid.order_id,
                    "reserved",
                    "completed",
                    Some(&note),
                    reference,
                )
                .await?;
                if moved.is_some() {
                    emit(
                        uow,
                        events::COMPLETED,
                        &paid.order_id,
                        OrderCompleted {
                            order_id: paid.order_id.clone(),
                            amount_minor: paid.amount_minor,
                            currency: paid.currency.clone(),
                        },
                    )
                    .await?;
                    self.wake_after_commit(after, &paid.order_id);
                }
            }
            payment_events::FAILED => {
                let failed: PaymentFailed = event.data()?;
                self.fail(
                    uow,
                    after,
                    &failed.order_id,
                    "reserved",
                    "payment_declined",
                    &failed.reason,
                )
                .await?;
            }
            payment_events::REFUNDED => {
                let refunded: PaymentRefunded = event.data()?;
                OrderStore::mark_refunded(uow, &refunded.order_id).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

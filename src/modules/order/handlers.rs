//! The order side of the checkout saga: reacts to stock (`ekart.stock`) and payment
//! (`ekart.payment`) and moves each order along, compensating on every failure path.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;

use super::events::{self, OrderCompleted, OrderFailed, PaymentRequested, SOURCE};
use super::model::OrderStatus;
use super::store::{Also, Move, OrderStore, Short};
use super::waiters::Waiters;
use crate::bus::inbox::{handle_traced, handled_together, Handler};
use crate::bus::{outbox, topics, Event};
use crate::contracts::payment::{
    self as payment_events, PaymentFailed, PaymentRefunded, PaymentSucceeded,
};
use crate::contracts::stock::{self as stock_events, StockRejected, StockReserved};
use crate::db::Uow;

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
    fn wake_after_commit(&self, uow: &mut Uow, order_id: &str) {
        let waiters = self.waiters.clone();
        let order_id = order_id.to_string();
        uow.after_commit(move || waiters.wake(&order_id));
    }

    /// Fails the order (if it is still `from`) and puts its lines back in the shopper's cart,
    /// less what is `short`.
    async fn fail(
        &self,
        uow: &mut Uow,
        order_id: &str,
        from: OrderStatus,
        kind: &str,
        reason: &str,
        short: Short<'_>,
    ) -> anyhow::Result<()> {
        let failure = Also::Failure { kind, reason };
        if OrderStore::transition(
            uow,
            order_id,
            from,
            OrderStatus::Failed,
            Some(reason),
            failure,
        )
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
            OrderStore::restore_cart(uow, order_id, Some(short)).await?;
            self.wake_after_commit(uow, order_id);
        }
        Ok(())
    }
}

/// A saga step that moves an order with nothing to look up first: these are made together
/// for a run of events.
enum Step {
    Reserved(StockReserved),
    Paid(PaymentSucceeded),
    Declined(PaymentFailed),
}

impl Step {
    /// The step an event asks for, or `None` for the kinds handled one at a time.
    fn of(event: &Event) -> anyhow::Result<Option<Step>> {
        Ok(Some(match event.kind.as_str() {
            stock_events::RESERVED => Step::Reserved(event.data()?),
            payment_events::SUCCEEDED => Step::Paid(event.data()?),
            payment_events::FAILED => Step::Declined(event.data()?),
            _ => return Ok(None),
        }))
    }

    fn order_id(&self) -> &str {
        match self {
            Step::Reserved(r) => &r.order_id,
            Step::Paid(p) => &p.order_id,
            Step::Declined(d) => &d.order_id,
        }
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

    /// Runs of reservations and payment outcomes move their orders together, a few
    /// statements for the run; a stock rejection (which looks up the line's name) and a
    /// refund are handled on their own, in their place. A run ends before an order it already
    /// holds, so each order's steps keep their order.
    async fn handle_many(
        &self,
        uow: &mut Uow,
        consumer: &str,
        events: &[&Event],
    ) -> anyhow::Result<()> {
        let mut rest = events;
        while let Some(first) = rest.first() {
            let mut run = Vec::new();
            let mut orders = HashSet::new();
            for event in rest {
                match Step::of(event)? {
                    Some(step) if orders.insert(step.order_id().to_string()) => {
                        run.push((step, *event))
                    }
                    _ => break,
                }
            }
            if run.is_empty() {
                handle_traced(self, uow, consumer, first).await?;
                rest = &rest[1..];
                continue;
            }
            rest = &rest[run.len()..];
            let events: Vec<&Event> = run.iter().map(|(_, event)| *event).collect();
            let _span = handled_together(consumer, &events);
            self.advance_all(uow, run).await?;
        }
        Ok(())
    }

    async fn handle(&self, uow: &mut Uow, event: &Event) -> anyhow::Result<()> {
        if let Some(step) = Step::of(event)? {
            return self.advance_all(uow, vec![(step, event)]).await;
        }
        match event.kind.as_str() {
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
                    &rejected.order_id,
                    OrderStatus::Placed,
                    "out_of_stock",
                    &reason,
                    Short {
                        product_id: &rejected.product_id,
                        available: rejected.available,
                    },
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

impl SagaHandler {
    /// Makes a run of steps (no order twice): moves the orders in one statement per power
    /// of two, prices the reserved lines, and tells the next module in one outbox insert.
    /// An order not in the state a step expects (a late or repeated event) is left alone.
    async fn advance_all(&self, uow: &mut Uow, run: Vec<(Step, &Event)>) -> anyhow::Result<()> {
        let notes: Vec<Option<String>> = run
            .iter()
            .map(|(step, _)| match step {
                Step::Paid(paid) => Some(format!("paid, reference {}", paid.reference)),
                Step::Declined(failed) => Some(failed.reason.clone()),
                Step::Reserved(_) => None,
            })
            .collect();
        let moves: Vec<Move> = run
            .iter()
            .zip(&notes)
            .map(|((step, _), note)| {
                let (from, to, also) = match step {
                    Step::Reserved(r) => (
                        OrderStatus::Placed,
                        OrderStatus::Reserved,
                        Also::Priced {
                            total_minor: r.total_minor,
                            currency: &r.currency,
                        },
                    ),
                    Step::Paid(p) => (
                        OrderStatus::Reserved,
                        OrderStatus::Completed,
                        Also::PaymentReference(&p.reference),
                    ),
                    Step::Declined(d) => (
                        OrderStatus::Reserved,
                        OrderStatus::Failed,
                        Also::Failure {
                            kind: "payment_declined",
                            reason: &d.reason,
                        },
                    ),
                };
                Move {
                    order_id: step.order_id(),
                    from,
                    to,
                    note: note.as_deref(),
                    also,
                }
            })
            .collect();
        let moved = OrderStore::transition_all(uow, &moves).await?;

        let mut priced = Vec::new();
        let mut next = Vec::new();
        for ((step, cause), moved) in run.iter().zip(moved) {
            let Some(moved) = moved else { continue };
            let event = match step {
                Step::Reserved(reserved) => {
                    priced.push(reserved);
                    let method =
                        serde_json::from_str(moved.payment_method.as_deref().unwrap_or(""))
                            .context("the placed order's payment method")?;
                    let request = PaymentRequested {
                        order_id: reserved.order_id.clone(),
                        user_id: moved.user_id,
                        amount_minor: reserved.total_minor,
                        currency: reserved.currency.clone(),
                        method,
                    };
                    Event::new(
                        SOURCE,
                        events::PAYMENT_REQUESTED,
                        &reserved.order_id,
                        request,
                    )
                }
                Step::Paid(paid) => {
                    self.wake_after_commit(uow, &paid.order_id);
                    let completed = OrderCompleted {
                        order_id: paid.order_id.clone(),
                        amount_minor: paid.amount_minor,
                        currency: paid.currency.clone(),
                    };
                    Event::new(SOURCE, events::COMPLETED, &paid.order_id, completed)
                }
                // Stock releases whatever it holds for the order.
                Step::Declined(failed) => {
                    OrderStore::restore_cart(uow, &failed.order_id, None).await?;
                    self.wake_after_commit(uow, &failed.order_id);
                    let failure = OrderFailed {
                        order_id: failed.order_id.clone(),
                        reason: failed.reason.clone(),
                    };
                    Event::new(SOURCE, events::FAILED, &failed.order_id, failure)
                }
            };
            next.push(event.caused_by(cause));
        }
        OrderStore::apply_reserved_prices(uow, &priced).await?;
        outbox::push_all(uow, topics::ORDER, &next).await?;
        Ok(())
    }
}

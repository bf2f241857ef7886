//! How payment reacts to the order saga (topic `ekart.order`): charge when stock is held,
//! refund when a paid order is cancelled.

use std::sync::Arc;

use async_trait::async_trait;

use super::events::{
    self as payment_events, PaymentFailed, PaymentRefunded, PaymentSucceeded, SOURCE,
};
use super::provider::{Charge, Outcome, PaymentProvider};
use super::store::{Payment, PaymentStore};
use crate::bus::inbox::{handle_traced, AfterCommit, Handler};
use crate::bus::{outbox, topics, Event};
use crate::contracts::order::{self as order_events, OrderCancelled, PaymentRequested};
use crate::db::{now_ms, Uow};

pub struct OrderEventsHandler {
    pub provider: Arc<dyn PaymentProvider>,
}

#[async_trait]
impl Handler for OrderEventsHandler {
    fn handles(&self, kind: &str) -> bool {
        matches!(
            kind,
            order_events::PAYMENT_REQUESTED | order_events::CANCELLED
        )
    }

    /// Runs of payment requests are charged together; a cancellation (a refund) is handled
    /// on its own, in its place.
    async fn handle_many(
        &self,
        uow: &mut Uow,
        consumer: &str,
        events: &[&Event],
        after: &mut AfterCommit,
    ) -> anyhow::Result<()> {
        let mut rest = events;
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .take_while(|e| e.kind == order_events::PAYMENT_REQUESTED)
                .count();
            if run == 0 {
                handle_traced(self, uow, consumer, first, after).await?;
                rest = &rest[1..];
                continue;
            }
            let (requests, later) = rest.split_at(run);
            self.charge_all(uow, requests).await?;
            rest = later;
        }
        Ok(())
    }

    async fn handle(
        &self,
        uow: &mut Uow,
        event: &Event,
        _: &mut AfterCommit,
    ) -> anyhow::Result<()> {
        match event.kind.as_str() {
            order_events::PAYMENT_REQUESTED => {
                let req: PaymentRequested = event.data()?;
                self.charge(uow, req).await
            }
            order_events::CANCELLED => {
                let cancelled: OrderCancelled = event.data()?;
                self.refund(uow, &cancelled.order_id).await
            }
            _ => Ok(()),
        }
    }
}

impl OrderEventsHandler {
    async fn charge(&self, uow: &mut Uow, req: PaymentRequested) -> anyhow::Result<()> {
        if PaymentStore::for_order_in(uow, &req.order_id)
            .await?
            .is_some()
        {
            return Ok(()); // one payment per order, whatever asks twice
        }
        let (payment, event) = self.decide(req);
        PaymentStore::insert(uow, &payment, now_ms()).await?;
        outbox::push(uow, topics::PAYMENT, &event).await?;
        Ok(())
    }

    /// Charges a run of payment requests with a few statements for all of them: which orders
    /// are paid already, one insert of the payments, one of their outcomes.
    async fn charge_all(&self, uow: &mut Uow, requests: &[&Event]) -> anyhow::Result<()> {
        let asked: Vec<PaymentRequested> = requests
            .iter()
            .map(|e| e.data())
            .collect::<anyhow::Result<_>>()?;
        let order_ids: Vec<&str> = asked.iter().map(|r| r.order_id.as_str()).collect();
        // One payment per order, whatever asks twice (also twice in one batch).
        let mut paid = PaymentStore::orders_with_payments(uow, &order_ids).await?;
        let mut payments = Vec::with_capacity(asked.len());
        let mut outcomes = Vec::with_capacity(asked.len());
        for (req, cause) in asked.into_iter().zip(requests) {
            if !paid.insert(req.order_id.clone()) {
                continue;
            }
            let (payment, event) = self.decide(req);
            payments.push(payment);
            outcomes.push(event.caused_by(cause));
        }
        PaymentStore::insert_all(uow, &payments, now_ms()).await?;
        outbox::push_all(uow, topics::PAYMENT, &outcomes).await?;
        Ok(())
    }

    /// Asks the provider, and answers the payment to record and the event that tells the order.
    fn decide(&self, req: PaymentRequested) -> (Payment, Event) {
        let outcome = self.provider.charge(&Charge {
            order_id: &req.order_id,
            amount_minor: req.amount_minor,
            currency: &req.currency,
            method: &req.method,
        });
        let id = uuid::Uuid::now_v7().to_string();
        let (status, reference, decline) = match outcome {
            Outcome::Approved { reference } => ("succeeded", reference, None),
            Outcome::Declined { code, reason } => ("failed", String::new(), Some((code, reason))),
        };
        let payment = Payment {
            id: id.clone(),
            order_id: req.order_id.clone(),
            user_id: req.user_id.clone(),
            mode: req.method.mode().into(),
            instrument: req.method.instrument(),
            amount_minor: req.amount_minor,
            currency: req.currency.clone(),
            status: status.into(),
            reference: reference.clone(),
            decline_code: decline.as_ref().map(|(c, _)| c.to_string()),
            decline_reason: decline.as_ref().map(|(_, r)| r.clone()),
            created_at: String::new(),
            refunded_at: None,
            refund_reference: None,
        };
        let event = match decline {
            None => Event::new(
                SOURCE,
                payment_events::SUCCEEDED,
                &req.order_id,
                PaymentSucceeded {
                    order_id: req.order_id.clone(),
                    payment_id: id,
                    reference,
                    amount_minor: req.amount_minor,
                    currency: req.currency,
                },
            ),
            Some((code, reason)) => Event::new(
                SOURCE,
                payment_events::FAILED,
                &req.order_id,
                PaymentFailed {
                    order_id: req.order_id.clone(),
                    payment_id: id,
                    code: code.into(),
                    reason,
                },
            ),
        };
        (payment, event)
    }

    async fn refund(&self, uow: &mut Uow, order_id: &str) -> anyhow::Result<()> {
        let Some(payment) = PaymentStore::for_order_in(uow, order_id).await? else {
            return Ok(());
        };
        if payment.status != "succeeded" {
            return Ok(());
        }
        let refund_reference = self
            .provider
            .refund(&payment.reference, payment.amount_minor);
        PaymentStore::mark_refunded(uow, &payment.id, &refund_reference, now_ms()).await?;
        let event = Event::new(
            SOURCE,
            payment_events::REFUNDED,
            order_id,
            PaymentRefunded {
                order_id: order_id.to_string(),
                payment_id: payment.id,
                refund_reference,
                amount_minor: payment.amount_minor,
            },
        );
        outbox::push(uow, topics::PAYMENT, &event).await?;
        Ok(())
    }
}

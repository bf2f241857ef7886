//! How payment reacts to the order saga (topic `ekart.order`): charge when stock is held,
//! refund when a paid order is cancelled.

use std::sync::Arc;

use async_trait::async_trait;

use super::events::{
    self as payment_events, PaymentFailed, PaymentRefunded, PaymentSucceeded, SOURCE,
};
use super::provider::{Charge, Outcome, PaymentProvider};
use super::store::{Payment, PaymentStore};
use crate::bus::inbox::{AfterCommit, Handler};
use crate::bus::{outbox, topics, Event};
use crate::db::{now_ms, Uow};
use crate::modules::order::events::{self as order_events, OrderCancelled, PaymentRequested};

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
        PaymentStore::insert(uow, &payment, now_ms()).await?;
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
        outbox::push(uow, topics::PAYMENT, &event).await?;
        Ok(())
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

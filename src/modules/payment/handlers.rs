//! How payment reacts to the order saga (topic `ekart.order`): a charge is asked for when
//! stock is held, a refund when a paid order is cancelled. Here each is only recorded, in the
//! consumer's transaction; the provider is asked after it commits (`settle.rs`).

use async_trait::async_trait;

use super::settle::Settler;
use super::store::{Payment, PaymentStore};
use crate::bus::inbox::{handle_traced, handled_together, Handler};
use crate::bus::Event;
use crate::contracts::order::{self as order_events, OrderCancelled, PaymentRequested};
use crate::db::{now_ms, Uow};

pub struct OrderEventsHandler {
    pub settler: Settler,
}

#[async_trait]
impl Handler for OrderEventsHandler {
    fn handles(&self, kind: &str) -> bool {
        matches!(
            kind,
            order_events::PAYMENT_REQUESTED | order_events::CANCELLED
        )
    }

    /// Runs of payment requests are recorded together; a cancellation (a refund) is handled
    /// on its own, in its place.
    async fn handle_many(
        &self,
        uow: &mut Uow,
        consumer: &str,
        events: &[&Event],
    ) -> anyhow::Result<()> {
        let mut rest = events;
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .take_while(|e| e.kind == order_events::PAYMENT_REQUESTED)
                .count();
            if run == 0 {
                handle_traced(self, uow, consumer, first).await?;
                rest = &rest[1..];
                continue;
            }
            let (requests, later) = rest.split_at(run);
            let _span = handled_together(consumer, requests);
            self.ask_all(uow, requests).await?;
            rest = later;
        }
        Ok(())
    }

    async fn handle(&self, uow: &mut Uow, event: &Event) -> anyhow::Result<()> {
        match event.kind.as_str() {
            order_events::PAYMENT_REQUESTED => self.ask_all(uow, &[event]).await,
            order_events::CANCELLED => {
                let cancelled: OrderCancelled = event.data()?;
                if let Some(refunding) =
                    PaymentStore::start_refund(uow, &cancelled.order_id).await?
                {
                    let settler = self.settler.clone();
                    uow.after_commit(move || settler.settle(vec![refunding]));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl OrderEventsHandler {
    /// Records a run of payment requests as pending payments with a few statements for all of
    /// them (which orders have a payment already, one insert), to be charged once committed.
    async fn ask_all(&self, uow: &mut Uow, requests: &[&Event]) -> anyhow::Result<()> {
        let asked: Vec<PaymentRequested> = requests
            .iter()
            .map(|e| e.data())
            .collect::<anyhow::Result<_>>()?;
        let order_ids: Vec<&str> = asked.iter().map(|r| r.order_id.as_str()).collect();
        // One payment per order, whatever asks twice (also twice in one batch).
        let mut paid = PaymentStore::orders_with_payments(uow, &order_ids).await?;
        let mut pending = Vec::with_capacity(asked.len());
        for (req, cause) in asked.into_iter().zip(requests) {
            if paid.insert(req.order_id.clone()) {
                pending.push(intent(req, cause));
            }
        }
        PaymentStore::insert_all(uow, &pending, now_ms()).await?;
        if !pending.is_empty() {
            let settler = self.settler.clone();
            uow.after_commit(move || settler.settle(pending));
        }
        Ok(())
    }
}

/// The payment a request asks for, before the provider is asked.
fn intent(req: PaymentRequested, cause: &Event) -> Payment {
    Payment {
        id: uuid::Uuid::now_v7().to_string(),
        order_id: req.order_id,
        user_id: req.user_id,
        mode: req.method.mode().into(),
        instrument: req.method.instrument(),
        amount_minor: req.amount_minor,
        currency: req.currency,
        status: "pending".into(),
        reference: String::new(),
        decline_code: None,
        decline_reason: None,
        created_at: String::new(),
        refunded_at: None,
        refund_reference: None,
        method: Some(req.method),
        traceparent: cause.traceparent.clone(),
    }
}

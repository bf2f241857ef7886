//! How stock reacts to the order saga (topic `ekart.order`).

use async_trait::async_trait;

use super::events::{self as stock_events, SOURCE};
use super::store::{Reservation, StockStore};
use crate::bus::inbox::{AfterCommit, Handler};
use crate::bus::{outbox, topics, Event};
use crate::db::Uow;
use crate::modules::order::events::{
    self as order_events, OrderCancelled, OrderCompleted, OrderFailed, OrderPlaced,
};

pub struct OrderEventsHandler;

#[async_trait]
impl Handler for OrderEventsHandler {
    fn handles(&self, kind: &str) -> bool {
        matches!(
            kind,
            order_events::PLACED
                | order_events::COMPLETED
                | order_events::FAILED
                | order_events::CANCELLED
        )
    }

    async fn handle(
        &self,
        uow: &mut Uow,
        event: &Event,
        _: &mut AfterCommit,
    ) -> anyhow::Result<()> {
        match event.kind.as_str() {
            order_events::PLACED => {
                let placed: OrderPlaced = event.data()?;
                let answer = match StockStore::reserve(uow, &placed.order_id, &placed.lines).await?
                {
                    Reservation::AlreadyHandled => return Ok(()),
                    Reservation::Reserved(r) => {
                        Event::new(SOURCE, stock_events::RESERVED, &r.order_id.clone(), r)
                    }
                    Reservation::Rejected(r) => {
                        Event::new(SOURCE, stock_events::REJECTED, &r.order_id.clone(), r)
                    }
                };
                outbox::push(uow, topics::STOCK, &answer).await?;
            }
            order_events::COMPLETED => {
                let done: OrderCompleted = event.data()?;
                StockStore::commit(uow, &done.order_id).await?;
            }
            order_events::FAILED => {
                let failed: OrderFailed = event.data()?;
                StockStore::release(uow, &failed.order_id).await?;
            }
            order_events::CANCELLED => {
                let cancelled: OrderCancelled = event.data()?;
                StockStore::release(uow, &cancelled.order_id).await?;
                StockStore::take_back(uow, &cancelled.order_id).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

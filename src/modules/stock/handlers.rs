//! How stock reacts to the order saga (topic `ekart.order`).

use async_trait::async_trait;

use super::events::{self as stock_events, SOURCE};
use super::store::{Reservation, StockStore};
use crate::bus::inbox::{handle_traced, handled_together, Handler};
use crate::bus::{outbox, topics, Event};
use crate::contracts::order::{
    self as order_events, LineQuantity, OrderCancelled, OrderCompleted, OrderFailed, OrderPlaced,
};
use crate::db::Uow;

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

    /// Placed orders are reserved together and completed ones settled together, a few
    /// statements for each group (many orders take from the same products, so this handler's
    /// batches cannot be split across connections; they are made cheap instead). Settling a
    /// completed order leaves what is available unchanged, so it may wait until the placed
    /// orders beside it are served; a release (failed, cancelled) adds to what is available,
    /// so everything keeps its place around one, which is handled on its own.
    async fn handle_many(
        &self,
        uow: &mut Uow,
        consumer: &str,
        events: &[&Event],
    ) -> anyhow::Result<()> {
        let batchable = |e: &&Event| {
            matches!(
                e.kind.as_str(),
                order_events::PLACED | order_events::COMPLETED
            )
        };
        let mut rest = events;
        while !rest.is_empty() {
            let run = rest.iter().take_while(|e| batchable(e)).count();
            if run == 0 {
                handle_traced(self, uow, consumer, rest[0]).await?;
                rest = &rest[1..];
                continue;
            }
            let (these, later) = rest.split_at(run);
            let _span = handled_together(consumer, these);
            let (placed, completed): (Vec<&Event>, Vec<&Event>) =
                these.iter().partition(|e| e.kind == order_events::PLACED);
            reserve_all(uow, &placed).await?;
            let orders: Vec<OrderCompleted> = completed
                .iter()
                .map(|e| e.data())
                .collect::<anyhow::Result<_>>()?;
            let ids: Vec<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
            StockStore::commit_all(uow, &ids).await?;
            rest = later;
        }
        Ok(())
    }

    async fn handle(&self, uow: &mut Uow, event: &Event) -> anyhow::Result<()> {
        match event.kind.as_str() {
            // The same code as a batch's, for a batch of one.
            order_events::PLACED => reserve_all(uow, &[event]).await?,
            order_events::COMPLETED => {
                let done: OrderCompleted = event.data()?;
                StockStore::commit_all(uow, &[&done.order_id]).await?;
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

/// Reserves for a run of placed orders at once and writes each its answer, in its own trace.
async fn reserve_all(uow: &mut Uow, placed_events: &[&Event]) -> anyhow::Result<()> {
    if placed_events.is_empty() {
        return Ok(());
    }
    let placed: Vec<OrderPlaced> = placed_events
        .iter()
        .map(|e| e.data())
        .collect::<anyhow::Result<_>>()?;
    let orders: Vec<(&str, &[LineQuantity])> = placed
        .iter()
        .map(|p| (p.order_id.as_str(), p.lines.as_slice()))
        .collect();
    let answers = StockStore::reserve_all(uow, &orders).await?;
    let events: Vec<Event> = answers
        .into_iter()
        .zip(placed_events)
        .filter_map(|(answer, cause)| {
            let event = match answer {
                Reservation::AlreadyHandled => return None,
                Reservation::Reserved(r) => {
                    Event::new(SOURCE, stock_events::RESERVED, &r.order_id.clone(), r)
                }
                Reservation::Rejected(r) => {
                    Event::new(SOURCE, stock_events::REJECTED, &r.order_id.clone(), r)
                }
            };
            Some(event.caused_by(cause))
        })
        .collect();
    outbox::push_all(uow, topics::STOCK, &events).await?;
    Ok(())
}

//! The user module's consumers: the click-stream (`ekart.journey`) and the checkout outcomes
//! (`ekart.order`) that join the same journeys.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::journey::{self, Step};
use crate::bus::inbox::{save_position, stored_positions, AfterCommit, Handler};
use crate::bus::{topics, Bus, Event};
use crate::db::{Db, Uow};
use crate::modules::frontend::events::{self as journey_events, JourneyStep};
use crate::modules::frontend::format_money;
use crate::modules::order::events::{self as order_events, OrderCompleted, OrderPlaced};

pub const CONSUMER: &str = "user";

/// A click-stream event as a stored step; None (logged) if it cannot be read.
fn step_of(event: &Event) -> Option<Step> {
    let kind = match event.kind.as_str() {
        journey_events::PAGE_VIEWED => "page",
        journey_events::CLICKED => "click",
        _ => return None,
    };
    match event.data::<JourneyStep>() {
        Ok(s) => Some(Step {
            event_id: event.id.clone(),
            session_id: s.session_id,
            at: s.at_ms,
            kind: kind.into(),
            name: s.name,
            label: s.label,
            detail: s.detail,
            amount_minor: None,
            currency: None,
        }),
        Err(err) => {
            tracing::warn!(error = %err, "skipping an unreadable journey event");
            None
        }
    }
}

/// Stores each batch of the click-stream in one transaction with one multi-row insert: the
/// step's event id is its inbox entry, so a redelivered batch adds nothing.
pub async fn store_journey_batch(
    db: &Db,
    events: Arc<Vec<crate::bus::Delivered>>,
) -> anyhow::Result<u64> {
    db.write(move |uow| {
        Box::pin(async move {
            let steps: Vec<Step> = events.iter().filter_map(|d| step_of(&d.event)).collect();
            let added = journey::append(uow, &steps).await?;
            if let Some(last) = events.iter().rev().find_map(|d| d.position) {
                save_position(uow, CONSUMER, topics::JOURNEY, last).await?;
            }
            Ok::<_, anyhow::Error>(added)
        })
    })
    .await
}

/// Consumes `ekart.journey`, from where it stopped, until the process ends.
pub async fn spawn_journey_consumer(bus: &Arc<dyn Bus>, db: Db) -> Result<(), sqlx::Error> {
    let from = stored_positions(&db, CONSUMER, topics::JOURNEY).await?;
    let mut subscription = bus.subscribe(topics::JOURNEY, CONSUMER, from);
    tokio::spawn(async move {
        while let Some(batch) = subscription.recv().await {
            let result = store_journey_batch(&db, batch.events.clone()).await;
            if let Err(err) = &result {
                tracing::warn!(error = %format!("{err:#}"), "journey batch failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = batch.ack.send(result.map(|_| ()));
        }
    });
    Ok(())
}

/// Puts the checkout's outcomes into the journey of the session that placed the order.
pub struct OrderEventsHandler;

fn event_ms(event: &Event) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&event.time)
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|_| crate::db::now_ms())
}

/// The session that placed `order_id`.
async fn session_of(uow: &mut Uow, order_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT session_id FROM session_orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(uow.conn())
        .await
}

#[async_trait]
impl Handler for OrderEventsHandler {
    fn handles(&self, kind: &str) -> bool {
        matches!(
            kind,
            order_events::PLACED | order_events::COMPLETED | order_events::FAILED
        )
    }

    async fn handle(
        &self,
        uow: &mut Uow,
        event: &Event,
        _: &mut AfterCommit,
    ) -> anyhow::Result<()> {
        let step = |session_id: String, name: &str, label: &str, detail: Option<String>| Step {
            event_id: event.id.clone(),
            session_id,
            at: event_ms(event),
            kind: "order".into(),
            name: name.into(),
            label: label.into(),
            detail,
            amount_minor: None,
            currency: None,
        };
        match event.kind.as_str() {
            order_events::PLACED => {
                let placed: OrderPlaced = event.data()?;
                // Orders placed outside a sign-in session (none so far) have no journey.
                let Some(session_id) = placed.session_id else {
                    return Ok(());
                };
                sqlx::query(
                    "INSERT INTO session_orders (order_id, session_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&placed.order_id)
                .bind(&session_id)
                .execute(uow.conn())
                .await?;
                let items: i64 = placed.lines.iter().map(|l| l.quantity).sum();
                let detail = format!("{items} item{}", if items == 1 { "" } else { "s" });
                journey::append(
                    uow,
                    &[step(session_id, "placed", "Order placed", Some(detail))],
                )
                .await?;
            }
            order_events::COMPLETED | order_events::FAILED => {
                let Some(session_id) = session_of(uow, &event.subject).await? else {
                    return Ok(());
                };
                let step = if event.kind == order_events::COMPLETED {
                    let paid: OrderCompleted = event.data()?;
                    let detail =
                        format!("paid {}", format_money(paid.amount_minor, &paid.currency));
                    Step {
                        amount_minor: Some(paid.amount_minor),
                        currency: Some(paid.currency),
                        ..step(session_id, "completed", "Order completed", Some(detail))
                    }
                } else {
                    let failed: order_events::OrderFailed = event.data()?;
                    step(session_id, "failed", "Order failed", Some(failed.reason))
                };
                journey::append(uow, &[step]).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

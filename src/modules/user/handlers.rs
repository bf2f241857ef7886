//! The user module's consumers: the click-stream (`ekart.journey`) and the checkout outcomes
//! (`ekart.order`) that join the same journeys.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::journey::{self, Step};
use crate::bus::inbox::{consume, save_position, Handler};
use crate::bus::{topics, Bus, Event};
use crate::config::Knob;
use crate::contracts::journey::{self as journey_events, JourneyStep};
use crate::contracts::order::{
    self as order_events, OrderCancelled, OrderCompleted, OrderFailed, OrderPlaced,
};
use crate::db::{padded_to_power_of_two, placeholders, Db, Uow};

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
/// step's event id is its inbox entry, so a redelivered batch adds nothing. A session keeps
/// at most `max_steps` of them.
pub async fn store_journey_batch(
    db: &Db,
    events: Arc<Vec<crate::bus::Delivered>>,
    max_steps: u32,
) -> anyhow::Result<u64> {
    db.write(move |uow| {
        Box::pin(async move {
            let steps: Vec<Step> = events.iter().filter_map(|d| step_of(&d.event)).collect();
            let (steps, dropped) = journey::within_cap(uow, steps, max_steps).await?;
            if dropped > 0 {
                metrics::counter!("ekart_journey_steps_dropped_total").increment(dropped);
            }
            let added = journey::append(uow, &steps).await?;
            if let Some(last) = events.iter().rev().find_map(|d| d.position) {
                save_position(uow, CONSUMER, topics::JOURNEY, last).await?;
            }
            Ok::<_, anyhow::Error>(added)
        })
    })
    .await
}

/// Consumes `ekart.journey`, from where it stopped, until the process ends, keeping at most
/// `max_steps` per session (as the setting is when each batch comes: it reloads live).
pub fn spawn_journey_consumer(bus: &Arc<dyn Bus>, db: Db, max_steps: Knob) {
    let store = db.clone();
    consume(bus, &db, CONSUMER, topics::JOURNEY, move |events| {
        let db = store.clone();
        let max_steps = u32::try_from(max_steps.get()).unwrap_or(u32::MAX);
        async move { store_journey_batch(&db, events, max_steps).await }
    });
}

/// Puts the checkout's outcomes into the journey of the session that placed the order.
pub struct OrderEventsHandler;

fn event_ms(event: &Event) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&event.time)
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|_| crate::db::now_ms())
}

/// The sessions that placed `order_ids`, as (order, session).
async fn sessions_of(
    uow: &mut Uow,
    order_ids: &[&str],
) -> Result<HashMap<String, String>, sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids = padded_to_power_of_two(order_ids);
    let sql = format!(
        "SELECT order_id, session_id FROM session_orders WHERE order_id IN ({})",
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as::<_, (String, String)>(&sql);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(uow.conn()).await?.into_iter().collect())
}

/// Records which session placed which order, in one statement.
async fn link_sessions(uow: &mut Uow, links: &[(&str, &str)]) -> Result<(), sqlx::Error> {
    if links.is_empty() {
        return Ok(());
    }
    // A padded row repeats the last, which ON CONFLICT passes over.
    let links = padded_to_power_of_two(links);
    let values: Vec<String> = (0..links.len())
        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!(
        "INSERT INTO session_orders (order_id, session_id) VALUES {} ON CONFLICT DO NOTHING",
        values.join(",")
    );
    let mut query = sqlx::query(&sql);
    for (order_id, session_id) in links {
        query = query.bind(order_id).bind(session_id);
    }
    query.execute(uow.conn()).await?;
    Ok(())
}

/// What an order event adds to its session's journey.
enum Outcome {
    Placed(OrderPlaced),
    Completed(OrderCompleted),
    Failed(OrderFailed),
    Cancelled(OrderCancelled),
}

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

    /// A batch's steps go in with one insert. The sessions of the placed orders are linked
    /// first (one insert), then those of the finished orders looked up (one query), so an order
    /// placed and finished in the same batch still finds its session. Orders placed outside a
    /// sign-in session (none so far) have no journey.
    async fn handle_many(
        &self,
        uow: &mut Uow,
        _consumer: &str,
        events: &[&Event],
    ) -> anyhow::Result<()> {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let outcome = match event.kind.as_str() {
                order_events::PLACED => Outcome::Placed(event.data()?),
                order_events::COMPLETED => Outcome::Completed(event.data()?),
                order_events::FAILED => Outcome::Failed(event.data()?),
                order_events::CANCELLED => Outcome::Cancelled(event.data()?),
                _ => continue,
            };
            outcomes.push((*event, outcome));
        }
        let links: Vec<(&str, &str)> = outcomes
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                Outcome::Placed(p) => Some((p.order_id.as_str(), p.session_id.as_deref()?)),
                _ => None,
            })
            .collect();
        link_sessions(uow, &links).await?;
        let finished: Vec<&str> = outcomes
            .iter()
            .filter(|(_, outcome)| !matches!(outcome, Outcome::Placed(_)))
            .map(|(event, _)| event.subject.as_str())
            .collect();
        let sessions = sessions_of(uow, &finished).await?;
        let steps: Vec<Step> = outcomes
            .iter()
            .filter_map(|(event, outcome)| step(event, outcome, &sessions))
            .collect();
        journey::append(uow, &steps).await?;
        Ok(())
    }

    async fn handle(&self, uow: &mut Uow, event: &Event) -> anyhow::Result<()> {
        self.handle_many(uow, CONSUMER, &[event]).await
    }
}

/// The journey step of an order event, if its order belongs to a session.
fn step(event: &Event, outcome: &Outcome, sessions: &HashMap<String, String>) -> Option<Step> {
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
    let session = || sessions.get(&event.subject).cloned();
    Some(match outcome {
        Outcome::Placed(placed) => {
            let items: i64 = placed.lines.iter().map(|l| l.quantity).sum();
            let detail = format!("{items} item{}", if items == 1 { "" } else { "s" });
            step(
                placed.session_id.clone()?,
                "placed",
                "Order placed",
                Some(detail),
            )
        }
        // The amount, not a sentence about it: the journey's page and PDF each say it in
        // their own words and money format.
        Outcome::Completed(paid) => Step {
            amount_minor: Some(paid.amount_minor),
            currency: Some(paid.currency.clone()),
            ..step(session()?, "completed", "Order completed", None)
        },
        Outcome::Failed(failed) => step(
            session()?,
            "failed",
            "Order failed",
            Some(failed.reason.clone()),
        ),
        // Refunded: what it cost no longer counts as spent (`journey::totals`).
        Outcome::Cancelled(cancelled) => Step {
            amount_minor: Some(cancelled.amount_minor),
            currency: Some(cancelled.currency.clone()).filter(|c| !c.is_empty()),
            ..step(
                session()?,
                "cancelled",
                "Order cancelled and refunded",
                None,
            )
        },
    })
}

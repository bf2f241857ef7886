//! The inbox: idempotent, batched event handling.
//!
//! A consumer takes a batch from the bus and handles every event of it in one transaction
//! (one commit, one fsync, however many events), recording each event id in its `inbox` table
//! and its log position, if the bus has one, in `consumer_positions`. An event whose id is
//! already there was handled before and is skipped, so redelivery changes nothing.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::lease::Leases;
use super::{Bus, Delivered, Event, Position, PositionOf, Subscriber};
use crate::db::{now_ms, padded_to_power_of_two, Backend, Db, Uow};
use crate::telemetry::trace::{self, TraceContext};
use tracing::Instrument;

/// A module's reaction to events of one topic.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Whether this consumer acts on events of `kind`. Others are passed over without even an
    /// inbox row: a topic carries events for several consumers.
    fn handles(&self, kind: &str) -> bool;

    /// Applies new events inside `uow`, in order. By default one by one through `handle`, each
    /// in its own trace; a handler overrides it to do a run of events with a few set-based
    /// statements instead of a few statements each. What must wait for the commit (waking a
    /// request) goes in [`Uow::after_commit`].
    async fn handle_many(
        &self,
        uow: &mut Uow,
        consumer: &str,
        events: &[&Event],
    ) -> anyhow::Result<()> {
        for event in events {
            handle_traced(self, uow, consumer, event).await?;
        }
        Ok(())
    }

    /// Applies `event` inside `uow`. Unknown event kinds should be ignored. An error rolls the
    /// whole batch back, and it is retried.
    async fn handle(&self, uow: &mut Uow, event: &Event) -> anyhow::Result<()>;
}

/// Records the ids of `events` for `consumer` in one statement and answers those that were not
/// there yet (the rest are redeliveries). One statement for the whole batch: a round trip per
/// event is what made a batch cost as much as its events one by one on PostgreSQL.
pub async fn first_deliveries(
    uow: &mut Uow,
    consumer: &str,
    event_ids: &[&str],
) -> Result<HashSet<String>, sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(HashSet::new());
    }
    // One event, the usual case when the shop is quiet: on SQLite, `RETURNING` costs a
    // temporary table, and the count of inserted rows says the same.
    if let ([id], Backend::Sqlite) = (event_ids, uow.backend()) {
        let inserted = sqlx::query(
            "INSERT INTO inbox (consumer, event_id, handled_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(*id)
        .bind(now_ms())
        .execute(uow.conn())
        .await?;
        return Ok(if inserted.rows_affected() == 1 {
            HashSet::from([id.to_string()])
        } else {
            HashSet::new()
        });
    }
    // A repeated id does nothing (ON CONFLICT DO NOTHING).
    let ids = padded_to_power_of_two(event_ids);
    let mut sql = String::from("INSERT INTO inbox (consumer, event_id, handled_at) VALUES ");
    for i in 0..ids.len() {
        if i > 0 {
            sql.push(',');
        }
        let _ = write!(sql, "($1, ${}, $2)", i + 3);
    }
    sql.push_str(" ON CONFLICT DO NOTHING RETURNING event_id");
    let mut query = sqlx::query_scalar::<_, String>(&sql)
        .bind(consumer)
        .bind(now_ms());
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(uow.conn()).await?.into_iter().collect())
}

/// Handles one batch in one transaction (shared with other writes of the module where the
/// database groups commits); returns how many events were new.
pub async fn handle_batch(
    db: &Db,
    consumer: &str,
    topic: &str,
    events: Arc<Vec<Delivered>>,
    handler: Arc<dyn Handler>,
) -> anyhow::Result<usize> {
    // Nothing to record: no event of the batch is this consumer's, and no log position moves
    // (the in-process bus has none). A transaction here would only commit an empty inbox
    // insert; a checkout's events pass four such consumers.
    let ours = events.iter().any(|d| handler.handles(&d.event.kind));
    if !ours && events.iter().all(|d| d.position.is_none()) {
        return Ok(0);
    }
    let handled = metrics::counter!("ekart_events_handled_total",
        "consumer" => consumer.to_string(), "topic" => topic.to_string());
    let consumer = consumer.to_string();
    let topic = topic.to_string();
    let fresh = db
        .write(move |uow| Box::pin(apply(uow, consumer, topic, events, handler)))
        .await?;
    handled.increment(fresh as u64);
    Ok(fresh)
}

/// Records the batch's events for `consumer`, hands the new ones to the handler and stores the
/// log position, all in `uow`.
async fn apply(
    uow: &mut Uow,
    consumer: String,
    topic: String,
    events: Arc<Vec<Delivered>>,
    handler: Arc<dyn Handler>,
) -> anyhow::Result<usize> {
    let ours: Vec<&Event> = events
        .iter()
        .map(|d| &d.event)
        .filter(|event| handler.handles(&event.kind))
        .collect();
    let ids: Vec<&str> = ours.iter().map(|event| event.id.as_str()).collect();
    let mut new = first_deliveries(uow, &consumer, &ids).await?;
    // Taken out once chosen: a copy later in the same batch is a redelivery.
    let fresh: Vec<&Event> = ours
        .into_iter()
        .filter(|event| new.remove(&event.id))
        .collect();
    if !fresh.is_empty() {
        let work = handler.handle_many(uow, &consumer, &fresh);
        match crate::telemetry::spans::enabled() {
            true => DELIVERY.scope(Delivery::of(&topic, &events), work).await?,
            false => work.await?,
        }
    }
    if let Some(last) = events.iter().rev().find_map(|d| d.position) {
        save_position(uow, &consumer, &topic, last).await?;
    }
    Ok(fresh.len())
}

tokio::task_local! {
    /// Where the batch being handled came from, for its consumer spans' tags; set only while
    /// spans are exported.
    static DELIVERY: Delivery;
}

/// The topic of a batch and each event's place in its log (none on the in-process bus).
struct Delivery {
    topic: String,
    positions: HashMap<String, Position>,
}

impl Delivery {
    fn of(topic: &str, events: &[Delivered]) -> Delivery {
        Delivery {
            topic: topic.to_string(),
            positions: events
                .iter()
                .filter_map(|d| Some((d.event.id.clone(), d.position?)))
                .collect(),
        }
    }
}

/// Tags a consumer span of `event` with what every bus handling carries: the topic, the
/// event's type and key, and its partition and offset when the bus has a log.
fn tag_delivery(span: &mut crate::telemetry::spans::Span, consumer: &str, event: &Event) {
    span.tag("messaging.consumer", consumer.to_string());
    span.tag("messaging.event_type", event.kind.clone());
    span.tag("messaging.key", event.partitionkey.clone());
    let _ = DELIVERY.try_with(|delivery| {
        span.tag("messaging.destination", delivery.topic.clone());
        if let Some(position) = delivery.positions.get(&event.id) {
            span.tag("messaging.partition", i64::from(position.partition));
            span.tag("messaging.offset", position.offset);
        }
    });
}

/// Applies one event in the trace it carries, under a span of its own.
pub async fn handle_traced<H: Handler + ?Sized>(
    handler: &H,
    uow: &mut Uow,
    consumer: &str,
    event: &Event,
) -> anyhow::Result<()> {
    let trace = event.traceparent.as_deref().and_then(TraceContext::parse);
    let span = tracing::info_span!("handle", consumer = %consumer, kind = %event.kind,
        trace_id = %trace.map(|t| t.trace_id_hex()).unwrap_or_default());
    let context = trace.map(|t| t.child());
    let _recorded = context.map(|context| {
        use crate::telemetry::spans::{Kind, Span};
        let mut span = Span::start(Kind::Consumer, context, trace, || {
            format!("handle {}", event.kind)
        });
        if span.is_recording() {
            tag_delivery(&mut span, consumer, event);
        }
        span
    });
    let work = handler.handle(uow, event).instrument(span);
    trace::scope(context, work).await
}

/// The consumer span of a run of events a handler applies together with set-based
/// statements, where no one event's trace is the current one: a child of the span that
/// published the run's first event, linked to every event's publishing span (OpenTelemetry's
/// shape for a batch), and, since Zipkin's model has no links, naming them in the tag
/// `messaging.batch.parents` (as `traceparent` values, the first 32). Ends when dropped, once the
/// run is applied. None when tracing is off or the run's first trace is not sampled.
pub fn handled_together(
    consumer: &str,
    events: &[&Event],
) -> Option<crate::telemetry::spans::Span> {
    use crate::telemetry::spans::{self, Kind, Span};
    const NAMED: usize = 32;
    if !spans::enabled() {
        return None;
    }
    let parents: Vec<TraceContext> = events
        .iter()
        .filter_map(|event| event.traceparent.as_deref().and_then(TraceContext::parse))
        .collect();
    let first = *parents.first()?;
    let mut span = Span::start(Kind::Consumer, first.child(), Some(first), || {
        format!("handle {}", events[0].kind)
    });
    if span.is_recording() {
        tag_delivery(&mut span, consumer, events[0]);
        span.tag("messaging.batch.message_count", events.len() as i64);
        let mut named = String::new();
        for parent in parents.iter().take(NAMED) {
            if !named.is_empty() {
                named.push(',');
            }
            let _ = write!(named, "{parent}");
        }
        span.tag("messaging.batch.parents", named);
        for parent in parents {
            span.link(parent);
        }
    }
    Some(span)
}

/// Stores where the consumer is in a durable log, in the transaction of the effect.
pub async fn save_position(
    uow: &mut Uow,
    consumer: &str,
    topic: &str,
    last: Position,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO consumer_positions (consumer, topic, partition_no, next_offset) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (consumer, topic, partition_no) \
         DO UPDATE SET next_offset = excluded.next_offset",
    )
    .bind(consumer)
    .bind(topic)
    .bind(last.partition as i64)
    .bind(last.offset + 1)
    .execute(uow.conn())
    .await?;
    Ok(())
}

/// Where `consumer` stopped in one partition of `topic` (the offset it reads next), as its
/// module's database says.
pub async fn stored_position(
    db: &Db,
    consumer: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT next_offset FROM consumer_positions \
         WHERE consumer = $1 AND topic = $2 AND partition_no = $3",
    )
    .bind(consumer)
    .bind(topic)
    .bind(partition as i64)
    .fetch_optional(&db.read)
    .await
}

/// `consumer` of `topic` as the bus sees it: its positions read from its module's database,
/// and, on PostgreSQL, leases on the topic's partitions shared with the module's other
/// instances through that database (`bus::lease`).
pub fn subscriber(db: &Db, consumer: &str, topic: &str) -> Subscriber {
    let positions: PositionOf = {
        let (db, consumer, topic) = (db.clone(), consumer.to_string(), topic.to_string());
        Arc::new(move |partition| {
            let (db, consumer, topic) = (db.clone(), consumer.clone(), topic.clone());
            Box::pin(async move { Ok(stored_position(&db, &consumer, &topic, partition).await?) })
        })
    };
    let leases = (db.backend == Backend::Postgres).then(|| {
        let db = db.clone();
        Leases::new(
            consumer,
            topic,
            Box::new(move || {
                let db = db.clone();
                Box::pin(async move { Ok(db.own_connection().await?) })
            }),
        )
    });
    Subscriber {
        consumer: consumer.to_string(),
        positions,
        leases,
    }
}

/// Subscribes `consumer` to `topic` from where it stopped and handles its batches with
/// `handler` (each batch's new events in one transaction with their inbox entries) until the
/// process ends.
pub fn spawn_consumer(
    bus: &Arc<dyn Bus>,
    db: Db,
    consumer: &'static str,
    topic: &'static str,
    handler: Arc<dyn Handler>,
) {
    consume(bus, &db.clone(), consumer, topic, move |events| {
        let (db, handler) = (db.clone(), handler.clone());
        async move { handle_batch(&db, consumer, topic, events, handler).await }
    });
}

/// The one consumer loop: subscribes `consumer` to `topic` from the positions stored in `db`
/// and hands each batch to `handle`, one at a time, until the process ends. A batch that
/// fails is answered with the error, so the bus sends it again; `handle` must commit a batch's
/// effects, its inbox entries and its log position together (see [`handle_batch`]).
pub fn consume<F, Fut, T>(
    bus: &Arc<dyn Bus>,
    db: &Db,
    consumer: &'static str,
    topic: &'static str,
    handle: F,
) where
    F: Fn(Arc<Vec<Delivered>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send,
{
    let mut subscription = bus.subscribe(topic, subscriber(db, consumer, topic));
    tokio::spawn(async move {
        while let Some(batch) = subscription.recv().await {
            let result = handle(batch.events.clone()).await.map(|_| ());
            if let Err(err) = &result {
                tracing::warn!(consumer, topic, error = %format!("{err:#}"), "event batch failed");
                // Give a struggling database a moment before the publisher retries.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = batch.ack.send(result);
        }
    });
}

//! The bus: how modules tell each other what happened.
//!
//! Every event is a CloudEvents 1.0 document. Modules never publish directly: they write
//! events into their outbox inside the transaction that caused them ([`outbox`]), and a relay
//! hands them to the [`Bus`]. Consumers record each event id in their inbox in the same
//! transaction as the effect ([`inbox`]), so a redelivered event changes nothing.

pub mod inbox;
pub mod kafka;
pub mod lease;
pub mod memory;
pub mod outbox;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

/// Topic names, before the configurable prefix a Kafka backend may add.
pub mod topics {
    pub const STOCK: &str = "ekart.stock";
    pub const ORDER: &str = "ekart.order";
    pub const PAYMENT: &str = "ekart.payment";
    pub const USER: &str = "ekart.user";
    pub const JOURNEY: &str = "ekart.journey";

    /// Every topic, for backends that create them.
    pub const ALL: [&str; 5] = [STOCK, ORDER, PAYMENT, USER, JOURNEY];
}

/// A CloudEvents 1.0 event in structured mode: the whole document travels as one JSON value,
/// so nothing a consumer needs lives in transport headers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub specversion: String,
    pub id: String,
    /// The module that emitted it, e.g. `/ekart/order`.
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub time: String,
    /// What the event is about, usually an order id.
    pub subject: String,
    /// Events with the same key are delivered in the order they were written.
    pub partitionkey: String,
    /// W3C trace context (CloudEvents distributed-tracing extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub datacontenttype: String,
    /// The span of the work that wrote it, whose child the event's own span is: recorded
    /// when the event is written to the outbox ([`Event::record_published`]). Not sent.
    #[serde(skip)]
    pub parent: Option<crate::telemetry::trace::TraceContext>,
    /// The payload as written, JSON text kept whole: the relay reads every event back from the
    /// outbox, and building a `Value` tree of it there only to take it apart again in the
    /// handler cost a few percent of a checkout's instructions.
    pub data: Box<RawValue>,
}

impl Event {
    pub fn new(source: &str, kind: &str, key: &str, data: impl Serialize) -> Event {
        Event {
            specversion: "1.0".into(),
            id: uuid::Uuid::now_v7().to_string(),
            source: source.into(),
            kind: kind.into(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            subject: key.into(),
            partitionkey: key.into(),
            traceparent: Some(crate::telemetry::trace::outgoing().to_string()),
            parent: crate::telemetry::trace::current(),
            datacontenttype: "application/json".into(),
            data: serde_json::value::to_raw_value(&data).expect("event data serializes"),
        }
    }

    /// This event, continuing the trace of `cause`: for work done for several events at once,
    /// where no one trace is the current one.
    pub fn caused_by(self, cause: &Event) -> Event {
        self.continuing(cause.traceparent.as_deref())
    }

    /// This event, continuing the trace `traceparent` names (if it is one): for work done
    /// later than the request it answers, as a payment settled after its provider answered.
    pub fn continuing(mut self, traceparent: Option<&str>) -> Event {
        if let Some(parent) = traceparent.and_then(crate::telemetry::trace::TraceContext::parse) {
            self.traceparent = Some(parent.child().to_string());
            self.parent = Some(parent);
        }
        self
    }

    /// Records the event's own span (the ids its `traceparent` carries), a child of the work
    /// that wrote it and the parent of each handling of it: once, as it is written.
    pub fn record_published(&self, topic: &str) {
        use crate::telemetry::spans::{self, Kind, Span};
        use crate::telemetry::trace::TraceContext;
        if !spans::enabled() {
            return;
        }
        let Some(context) = self.traceparent.as_deref().and_then(TraceContext::parse) else {
            return;
        };
        let mut span = Span::start(Kind::Producer, context, self.parent, || {
            format!("publish {}", self.kind)
        });
        if span.is_recording() {
            span.tag("messaging.destination", topic.to_string());
            span.tag("messaging.key", self.partitionkey.clone());
        }
    }

    /// Reads an event as it comes off the wire: a CloudEvents 1.0 JSON document with an id, a
    /// source and a type. Anything else (another producer's record, a truncated or hostile
    /// one) is refused with why, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Event, String> {
        let event: Event = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if event.specversion != "1.0" {
            return Err(format!("specversion {:?} is not 1.0", event.specversion));
        }
        if [&event.id, &event.source, &event.kind]
            .iter()
            .any(|v| v.is_empty())
        {
            return Err("an event needs an id, a source and a type".into());
        }
        Ok(event)
    }

    /// Decodes `data` into the type this event kind carries.
    pub fn data<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_str(self.data.get())
            .map_err(|e| anyhow::anyhow!("event {} ({}) has bad data: {e}", self.id, self.kind))
    }
}

/// Where a delivered event sits in a durable log, so a consumer can store its position with
/// the effect and resume there. Backends without a durable log give none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// Where a consumer stopped, per partition: the offset it reads next.
pub type Positions = std::collections::HashMap<i32, i64>;

#[derive(Debug, Clone)]
pub struct Delivered {
    pub event: Event,
    pub position: Option<Position>,
}

/// A batch handed to one consumer. The consumer answers through `ack` once the batch's effects
/// are committed (or with an error, and the batch will come again).
pub struct Batch {
    pub topic: String,
    pub events: Arc<Vec<Delivered>>,
    pub ack: oneshot::Sender<anyhow::Result<()>>,
}

pub type Subscription = mpsc::Receiver<Batch>;

/// Where a consumer stopped in one partition of a topic (the offset it reads next), as its
/// module's database says at the moment it is asked: asked when this instance starts reading
/// the partition, which may be long after the process started (a lease taken over).
pub type PositionOf = Arc<
    dyn Fn(i32) -> futures::future::BoxFuture<'static, anyhow::Result<Option<i64>>> + Send + Sync,
>;

/// Who subscribes, and what a backend with a durable log needs to know of it.
pub struct Subscriber {
    /// The module's name for itself as a consumer.
    pub consumer: String,
    /// Where it stopped, per partition.
    pub positions: PositionOf,
    /// How its instances share the topic's partitions, when they share them by lease
    /// (PostgreSQL); without, the backend's own settings say which partitions it reads.
    pub leases: Option<lease::Leases>,
}

impl Subscriber {
    /// A consumer with nothing stored: reads every partition from its start.
    pub fn fresh(consumer: &str) -> Subscriber {
        Subscriber {
            consumer: consumer.to_string(),
            positions: Arc::new(|_| Box::pin(async { Ok(None) })),
            leases: None,
        }
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes events in order. Returns once the bus holds them durably: for the in-process
    /// backend that means every subscriber has committed them, for Kafka that the broker has.
    async fn publish(&self, topic: &str, events: Vec<Event>) -> anyhow::Result<()>;

    /// Subscribes a consumer (a module) to `topic`, each partition resumed at its stored
    /// position (a partition without one is read from its start). Must be called before the
    /// relays start. Backends without a durable log ignore positions and leases.
    fn subscribe(&self, topic: &str, subscriber: Subscriber) -> Subscription;

    /// Whether the bus can take events now (for `/readyz`).
    async fn ready(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use crate::telemetry::trace::{scope, TraceContext};

    #[tokio::test]
    async fn an_event_continues_the_trace_of_the_work_that_caused_it() {
        let context = TraceContext::root();
        let event = scope(Some(context), async {
            super::Event::new("/ekart/test", "test.happened", "key", 1)
        })
        .await;
        let carried = TraceContext::parse(event.traceparent.as_deref().unwrap()).unwrap();
        assert_eq!(carried.trace_id, context.trace_id);
        assert_ne!(carried.span_id, context.span_id);
    }
}

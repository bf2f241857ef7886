//! The in-process bus: channels between modules of one process.
//!
//! It keeps no log of its own, so `publish` waits until every subscriber has committed the
//! batch. The publishing outbox therefore keeps each event until it has been handled, and a
//! crash at any point leaves it there to be sent again on restart (the inbox drops repeats).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{Batch, Bus, Delivered, Event, Subscriber, Subscription};

/// A consumer's name and the channel its batches go to.
type Consumer = (String, mpsc::Sender<Batch>);

#[derive(Default)]
pub struct MemoryBus {
    subscribers: Mutex<HashMap<String, Vec<Consumer>>>,
}

impl MemoryBus {
    pub fn new() -> Arc<MemoryBus> {
        Arc::new(MemoryBus::default())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic: &str, events: Vec<Event>) -> anyhow::Result<()> {
        let subscribers = self
            .subscribers
            .lock()
            .expect("bus lock")
            .get(topic)
            .cloned()
            .unwrap_or_default();
        if subscribers.is_empty() || events.is_empty() {
            return Ok(());
        }
        let events = Arc::new(
            events
                .into_iter()
                .map(|event| Delivered {
                    event,
                    position: None,
                })
                .collect::<Vec<_>>(),
        );
        let mut acks = Vec::with_capacity(subscribers.len());
        for (consumer, tx) in &subscribers {
            let (ack, done) = oneshot::channel();
            tx.send(Batch {
                topic: topic.to_string(),
                events: events.clone(),
                ack,
            })
            .await
            .map_err(|_| anyhow::anyhow!("consumer {consumer} of {topic} has stopped"))?;
            acks.push((consumer, done));
        }
        for (consumer, done) in acks {
            done.await
                .map_err(|_| anyhow::anyhow!("consumer {consumer} of {topic} dropped a batch"))??;
        }
        Ok(())
    }

    fn subscribe(&self, topic: &str, subscriber: Subscriber) -> Subscription {
        let (tx, rx) = mpsc::channel(4);
        self.subscribers
            .lock()
            .expect("bus lock")
            .entry(topic.to_string())
            .or_default()
            .push((subscriber.consumer, tx));
        rx
    }

    async fn ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publish_waits_for_every_subscriber_and_keeps_order() {
        let bus = MemoryBus::new();
        let subs = vec![
            ("a", bus.subscribe("t", Subscriber::fresh("a"))),
            ("b", bus.subscribe("t", Subscriber::fresh("b"))),
        ];
        let seen = Arc::new(Mutex::new(Vec::new()));
        for (name, mut sub) in subs {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(batch) = sub.recv().await {
                    for d in batch.events.iter() {
                        seen.lock()
                            .unwrap()
                            .push(format!("{name}:{}", d.event.subject));
                    }
                    let _ = batch.ack.send(Ok(()));
                }
            });
        }
        let events = (0..3)
            .map(|i| Event::new("/test", "test.happened", &i.to_string(), i))
            .collect();
        bus.publish("t", events).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.len(),
            6,
            "both consumers handled all before publish returned"
        );
        let a_order: Vec<_> = seen.iter().filter(|s| s.starts_with("a:")).collect();
        assert_eq!(a_order, ["a:0", "a:1", "a:2"]);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_the_publish() {
        let bus = MemoryBus::new();
        let mut sub = bus.subscribe("t", Subscriber::fresh("a"));
        tokio::spawn(async move {
            while let Some(batch) = sub.recv().await {
                let _ = batch.ack.send(Err(anyhow::anyhow!("disk full")));
            }
        });
        let err = bus
            .publish("t", vec![Event::new("/test", "x", "k", 1)])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("disk full"));
    }
}

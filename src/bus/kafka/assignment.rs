//! Which partitions of a topic this process reads for one subscriber, and a reader for each.
//!
//! By lease (`bus::lease`, the default on PostgreSQL): instances of a module share the
//! partitions among themselves, and a partition moves when an instance joins or dies. By
//! settings (`bus.kafka.instance` of `instances`, when `instances` is above 1, and always on
//! SQLite, whose one process reads everything): a fixed share, `p % instances == instance`.
//!
//! `/metrics` shows each partition this process owns (`ekart_partition_owned`, 1 when it
//! reads it) and how far its reader is behind the partition's end (`ekart_consumer_lag`,
//! records), per consumer, topic and partition.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::Inner;
use crate::bus::lease::ROUND;
use crate::bus::{Batch, Subscriber};

/// What one partition's reader needs to know.
pub(super) struct Reader {
    pub topic: String,
    pub partition: i32,
    pub batches: mpsc::Sender<Batch>,
    /// Becomes `true` when the reader is to stop after its current batch.
    pub stop: watch::Receiver<bool>,
    lag: metrics::Gauge,
}

impl Reader {
    /// Told to stop, or its supervisor is gone.
    pub fn stopped(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    /// Records between what this reader has handed over and the partition's end.
    pub fn lag(&self, records: i64) {
        self.lag.set(records as f64);
    }
}

/// A running reader, and how to stop it.
struct Reading {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Starts and stops `subscriber`'s readers of `topic` for as long as its subscription lives.
pub(super) async fn supervise(
    inner: Arc<Inner>,
    topic: String,
    subscriber: Subscriber,
    batches: mpsc::Sender<Batch>,
) {
    let partitions = inner.settings.partitions;
    let mut readers = Readers {
        inner,
        topic,
        subscriber_positions: subscriber.positions,
        consumer: subscriber.consumer,
        batches,
        running: HashMap::new(),
    };
    let (instance, instances) = (
        readers.inner.settings.instance,
        readers.inner.settings.instances,
    );
    let leases = subscriber.leases.filter(|_| instances <= 1);
    let Some(mut leases) = leases else {
        for partition in (0..partitions).filter(|p| p % instances.max(1) == instance) {
            if let Err(err) = readers.start(partition).await {
                tracing::error!(consumer = %readers.consumer, topic = %readers.topic, partition,
                    error = %format!("{err:#}"), "cannot read where the consumer stopped");
            }
        }
        readers.batches.closed().await;
        readers.stop_all().await;
        return;
    };
    let members = metrics::gauge!("ekart_consumer_group_members",
        "consumer" => readers.consumer.clone(), "topic" => readers.topic.clone());
    loop {
        let round = leases.round(partitions).await;
        members.set(round.members as f64);
        for partition in &round.lost {
            readers.abort(*partition);
        }
        if !round.give.is_empty() {
            for partition in &round.give {
                readers.stop(*partition).await;
            }
            leases.release(&round.give).await;
            tracing::info!(consumer = %readers.consumer, topic = %readers.topic,
                partitions = ?round.give, "gave partitions to another instance");
        }
        for partition in round.taken.iter().copied() {
            if let Err(err) = readers.start(partition).await {
                tracing::warn!(consumer = %readers.consumer, topic = %readers.topic, partition,
                    error = %format!("{err:#}"), "cannot read where the consumer stopped; \
                    leaving the partition to the next round");
                leases.release(&[partition]).await;
            }
        }
        if !round.taken.is_empty() {
            tracing::info!(consumer = %readers.consumer, topic = %readers.topic,
                partitions = ?round.taken, members = round.members, "took partitions");
        }
        tokio::select! {
            _ = readers.batches.closed() => break,
            _ = tokio::time::sleep(ROUND) => {}
        }
    }
    readers.stop_all().await;
    leases.leave().await;
}

/// One subscriber's running readers.
struct Readers {
    inner: Arc<Inner>,
    topic: String,
    consumer: String,
    subscriber_positions: crate::bus::PositionOf,
    batches: mpsc::Sender<Batch>,
    running: HashMap<i32, Reading>,
}

impl Readers {
    fn owned(&self, partition: i32) -> metrics::Gauge {
        metrics::gauge!("ekart_partition_owned", "consumer" => self.consumer.clone(),
            "topic" => self.topic.clone(), "partition" => partition.to_string())
    }

    /// Starts reading `partition` where the consumer's database says it stopped.
    async fn start(&mut self, partition: i32) -> anyhow::Result<()> {
        let next = (self.subscriber_positions)(partition).await?;
        let (stop, stopped) = watch::channel(false);
        let reader = Reader {
            topic: self.topic.clone(),
            partition,
            batches: self.batches.clone(),
            stop: stopped,
            lag: metrics::gauge!("ekart_consumer_lag", "consumer" => self.consumer.clone(),
                "topic" => self.topic.clone(), "partition" => partition.to_string()),
        };
        let task = tokio::spawn(self.inner.clone().consume(reader, next));
        if let Some(earlier) = self.running.insert(partition, Reading { stop, task }) {
            earlier.task.abort();
        }
        self.owned(partition).set(1.0);
        Ok(())
    }

    /// Stops reading `partition` once its batch in hand has committed.
    async fn stop(&mut self, partition: i32) {
        if let Some(reading) = self.running.remove(&partition) {
            let _ = reading.stop.send(true);
            let _ = reading.task.await;
        }
        self.gone(partition);
    }

    /// Stops reading `partition` now: its lease is already lost.
    fn abort(&mut self, partition: i32) {
        if let Some(reading) = self.running.remove(&partition) {
            reading.task.abort();
        }
        self.gone(partition);
    }

    fn gone(&self, partition: i32) {
        self.owned(partition).set(0.0);
        // What this process no longer reads, another instance reports.
        metrics::gauge!("ekart_consumer_lag", "consumer" => self.consumer.clone(),
            "topic" => self.topic.clone(), "partition" => partition.to_string())
        .set(0.0);
    }

    async fn stop_all(&mut self) {
        let partitions: Vec<i32> = self.running.keys().copied().collect();
        for partition in partitions {
            self.stop(partition).await;
        }
    }
}

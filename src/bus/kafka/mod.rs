//! The Kafka backend (`[bus] kind = "kafka"`), on rskafka.
//!
//! Each record's value is the whole CloudEvents document and its key the event's partition
//! key; nothing lives in record headers. A key always maps to the same partition, so one
//! order's (or session's) events stay in order. The outbox relay is the only producer.
//!
//! rskafka has no consumer groups: the processes running the same module share its partitions
//! by lease in the module's database, or by configuration (`assignment.rs`). A subscriber
//! reads its partitions of its topic, each from
//! the positions its module stored with the effects of what it handled (or from the start),
//! and hands the records to its module a fetch at a time, waiting for the module's commit
//! before it reads further. A restart therefore resumes exactly where the commits stopped;
//! anything read twice is dropped by the inbox.
//!
//! A broker that cannot be reached does not stop the shop: the connection is made on first
//! use and retried, the relay keeps events in the outbox meanwhile, and `/readyz` says so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, RecordAndOffset};
use rskafka::BackoffConfig;
use tokio::sync::{mpsc, oneshot, Notify, OnceCell};

use super::{topics, Batch, Bus, Delivered, Event, Position, Subscriber, Subscription};
use crate::config::KafkaSettings;

mod assignment;
mod sockets;

/// Most bytes one fetch asks for.
const FETCH_BYTES: i32 = 4 * 1024 * 1024;
/// Fetches do not wait on the broker: tansu (0.6) sleeps after reading a fetch's records
/// whether it found any or not (the whole wait below 250 ms, half of it above), so a waiting
/// fetch always takes its wait. An empty fetch is followed by a pause here instead.
const FETCH_WAIT_MS: i32 = 0;
/// The pause after an empty fetch starts short, for events that follow one another (a
/// checkout's answer follows its request within milliseconds), and doubles with each empty
/// fetch up to the longest, so an idle partition costs the broker a fetch every
/// `LONGEST_PAUSE`. A publish from this process ends the pause at once (the doorbell).
const SHORTEST_PAUSE: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_millis(20);

pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    settings: KafkaSettings,
    client: OnceCell<Client>,
    /// Partition clients by topic, partition and use: producing and consuming each get their
    /// own, so a fetch never holds up a produce on the same connection.
    partitions: Mutex<HashMap<(String, i32, Use), Arc<PartitionClient>>>,
    /// The readers of each topic and partition in this process, rung when this process
    /// publishes to it.
    doorbells: Mutex<HashMap<(String, i32), Doorbells>>,
    /// Each topic and partition's last fetch, shared by this process's readers of it.
    fetches: Mutex<HashMap<(String, i32), SharedFetch>>,
}

/// One partition's last fetch, for every subscriber in this process that reads the partition
/// (`ekart.order` has three: stock, payment and the user module). Records never change once
/// written, so what one reader fetched serves the others as they come to the same offsets;
/// a doorbell wakes them together, and the lock makes the first one's fetch theirs too. Each
/// fetch costs the broker the same whatever it returns, so this saves a request per
/// subscriber per hop. Kept only for partitions with more than one reader here, so a busy
/// click-stream (one reader) holds no copy of its last fetch.
type SharedFetch = Arc<tokio::sync::Mutex<Fetch>>;

/// Records of one partition as fetched, shared by its readers, and the partition's end; a
/// reader takes those at or after the offset it asked for.
type SharedRecords = (Arc<Vec<RecordAndOffset>>, i64);

/// The records at or after `offset`: a shared fetch may have begun before a reader's offset.
fn from_offset(
    records: &[RecordAndOffset],
    offset: i64,
) -> impl Iterator<Item = &RecordAndOffset> + Clone {
    records.iter().filter(move |r| r.offset >= offset)
}

#[derive(Default)]
struct Fetch {
    /// The offset asked for, and what came back: records from there on, and the partition's end.
    from: i64,
    records: Arc<Vec<RecordAndOffset>>,
    high_watermark: i64,
    at: Option<tokio::time::Instant>,
}

impl Fetch {
    /// The records from `offset` on, if this fetch answers for that offset: it read from at
    /// or before it and brought records up to it, or it found nothing new from that very
    /// offset within the last [`SHORTEST_PAUSE`].
    fn answers(&self, offset: i64) -> Option<SharedRecords> {
        let last = self.records.last().map(|r| r.offset);
        let covered = self.from <= offset && last.is_some_and(|last| offset <= last);
        let just_empty = last.is_none()
            && self.from == offset
            && self.at.is_some_and(|at| at.elapsed() < SHORTEST_PAUSE);
        (covered || just_empty).then(|| (self.records.clone(), self.high_watermark))
    }
}

/// The doorbells of one partition's readers; a reader that has stopped drops its own.
type Doorbells = Vec<Weak<Notify>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Use {
    Produce,
    Consume,
}

impl KafkaBus {
    pub fn new(settings: KafkaSettings) -> Arc<KafkaBus> {
        let inner = Arc::new(Inner {
            settings,
            client: OnceCell::new(),
            partitions: Mutex::new(HashMap::new()),
            doorbells: Mutex::new(HashMap::new()),
            fetches: Mutex::new(HashMap::new()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(keep_nodelay(Arc::downgrade(&inner)));
        }
        Arc::new(KafkaBus { inner })
    }
}

/// Errors surface after this long, so callers (the relay, the fetch loops) can back off and
/// say what is waiting, rather than rskafka retrying silently forever.
fn backoff() -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        base: 2.0,
        deadline: Some(Duration::from_secs(10)),
    }
}

/// Keeps `TCP_NODELAY` on the connections to the brokers (see [`sockets`]) every second, for
/// those rskafka remakes on its own after an error, for as long as the bus is in use. The
/// brokers' names are looked up again every [`RESOLVE_EVERY`] sweeps.
async fn keep_nodelay(bus: Weak<Inner>) {
    const RESOLVE_EVERY: u32 = 30;
    let mut brokers = std::collections::HashSet::new();
    for sweep in 0.. {
        let Some(inner) = bus.upgrade() else { return };
        if sweep % RESOLVE_EVERY == 0 || brokers.is_empty() {
            brokers = sockets::resolve(&inner.settings.brokers).await;
        }
        drop(inner);
        sockets::set_nodelay_to(&brokers);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// FNV-1a: a key's partition must not change between processes or releases.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= byte as u32;
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % partitions as u32) as i32
}

impl Inner {
    fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.settings.topic_prefix)
    }

    /// The connection, made on first use, with the shop's topics created if missing.
    async fn client(&self) -> anyhow::Result<&Client> {
        self.client
            .get_or_try_init(|| async {
                let client = ClientBuilder::new(self.settings.brokers.clone())
                    .client_id("ekart")
                    .backoff_config(backoff())
                    .build()
                    .await?;
                sockets::set_nodelay_to(&sockets::resolve(&self.settings.brokers).await);
                // Asking first keeps a start with existing topics quiet (rskafka logs a
                // refused creation as an error).
                let existing: std::collections::HashSet<String> = client
                    .list_topics()
                    .await?
                    .into_iter()
                    .map(|t| t.name)
                    .collect();
                let controller = client.controller_client()?;
                for topic in topics::ALL.map(|t| self.topic(t)) {
                    if existing.contains(&topic) {
                        continue;
                    }
                    let created = controller
                        .create_topic(
                            &topic,
                            self.settings.partitions,
                            self.settings.replication,
                            5_000,
                        )
                        .await;
                    match created {
                        Ok(()) => tracing::info!(%topic, "created topic"),
                        // Another process created it meanwhile.
                        Err(KafkaError::ServerError {
                            protocol_error: ProtocolError::TopicAlreadyExists,
                            ..
                        }) => {}
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                }
                Ok(client)
            })
            .await
    }

    async fn partition(
        &self,
        topic: &str,
        partition: i32,
        role: Use,
    ) -> anyhow::Result<Arc<PartitionClient>> {
        let key = (topic.to_string(), partition, role);
        if let Some(client) = self.partitions.lock().expect("partitions").get(&key) {
            return Ok(client.clone());
        }
        let client = Arc::new(
            self.client()
                .await?
                .partition_client(self.topic(topic), partition, UnknownTopicHandling::Retry)
                .await?,
        );
        self.partitions
            .lock()
            .expect("partitions")
            .insert(key, client.clone());
        // A partition's leader may be a broker not connected to before.
        sockets::set_nodelay_to(&sockets::resolve(&self.settings.brokers).await);
        Ok(client)
    }

    /// Reads one partition for one subscriber until the subscriber goes away or the reader
    /// is told to stop (between batches: a batch handed over is committed first).
    async fn consume(self: Arc<Self>, mut reader: assignment::Reader, mut next: Option<i64>) {
        let (topic, partition) = (reader.topic.clone(), reader.partition);
        let bell = Arc::new(Notify::new());
        self.doorbells
            .lock()
            .expect("doorbells")
            .entry((topic.clone(), partition))
            .or_default()
            .push(Arc::downgrade(&bell));
        let mut wait = Duration::from_millis(100);
        let mut pause = SHORTEST_PAUSE;
        while !reader.stopped() {
            let rest = match self.fetch_once(&reader, &mut next).await {
                Ok(Fetched::Records) => {
                    wait = Duration::from_millis(100);
                    pause = SHORTEST_PAUSE;
                    continue;
                }
                Ok(Fetched::Nothing) => {
                    let rest = pause;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                    rest
                }
                Ok(Fetched::Unsubscribed) => return,
                Err(err) => {
                    tracing::warn!(topic = %topic, partition, error = %format!("{err:#}"),
                        retry_in_ms = wait.as_millis() as u64, "cannot read from Kafka");
                    let rest = wait;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    rest
                }
            };
            tokio::select! {
                _ = bell.notified() => pause = SHORTEST_PAUSE,
                _ = reader.stop.changed() => {}
                _ = tokio::time::sleep(rest) => {}
            }
        }
    }

    /// The records of `topic`'s `partition` from `offset` on, and the partition's end: from
    /// the fetch another reader of it in this process just made, or from the broker.
    async fn fetch_shared(
        &self,
        client: &PartitionClient,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<SharedRecords, KafkaError> {
        if self.readers_of(topic, partition) <= 1 {
            // Nobody to share with (the click-stream has one reader): keep no copy.
            let (records, high_watermark) = self.fetch_from_broker(client, topic, offset).await?;
            return Ok((Arc::new(records), high_watermark));
        }
        let shared = self
            .fetches
            .lock()
            .expect("fetches")
            .entry((topic.to_string(), partition))
            .or_default()
            .clone();
        // Held across the broker's answer: a reader that comes meanwhile waits for it.
        let mut last = shared.lock().await;
        if let Some(answer) = last.answers(offset) {
            return Ok(answer);
        }
        let (records, high_watermark) = self.fetch_from_broker(client, topic, offset).await?;
        *last = Fetch {
            from: offset,
            records: Arc::new(records),
            high_watermark,
            at: Some(tokio::time::Instant::now()),
        };
        Ok((last.records.clone(), high_watermark))
    }

    async fn fetch_from_broker(
        &self,
        client: &PartitionClient,
        topic: &str,
        offset: i64,
    ) -> Result<(Vec<RecordAndOffset>, i64), KafkaError> {
        let fetched = client
            .fetch_records(offset, 1..FETCH_BYTES, FETCH_WAIT_MS)
            .await?;
        let result = match fetched.0.is_empty() {
            true => "empty",
            false => "records",
        };
        metrics::counter!("ekart_kafka_fetches_total", "topic" => topic.to_string(),
            "result" => result)
        .increment(1);
        Ok(fetched)
    }

    /// How many readers of a topic's partition this process runs (each has a doorbell).
    fn readers_of(&self, topic: &str, partition: i32) -> usize {
        let doorbells = self.doorbells.lock().expect("doorbells");
        doorbells
            .get(&(topic.to_string(), partition))
            .map_or(0, |bells| {
                bells.iter().filter(|b| b.strong_count() > 0).count()
            })
    }

    /// Rings the doorbells of this process's readers of a topic's partition.
    fn ring(&self, topic: &str, partition: i32) {
        let mut doorbells = self.doorbells.lock().expect("doorbells");
        if let Some(bells) = doorbells.get_mut(&(topic.to_string(), partition)) {
            bells.retain(|bell| match bell.upgrade() {
                Some(bell) => {
                    // Stored when no one waits: the next wait returns at once.
                    bell.notify_one();
                    true
                }
                None => false,
            });
        }
    }

    /// One fetch, handed over and committed.
    async fn fetch_once(
        &self,
        reader: &assignment::Reader,
        next: &mut Option<i64>,
    ) -> anyhow::Result<Fetched> {
        let (topic, partition) = (reader.topic.as_str(), reader.partition);
        let client = self.partition(topic, partition, Use::Consume).await?;
        let offset = match *next {
            Some(offset) => offset,
            None => client.get_offset(OffsetAt::Earliest).await?,
        };
        *next = Some(offset);
        let records = match self.fetch_shared(&client, topic, partition, offset).await {
            Ok((records, high_watermark)) => {
                let read_to = records.last().map_or(offset, |r| r.offset + 1);
                reader.lag((high_watermark - read_to).max(0));
                records
            }
            Err(KafkaError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            }) => {
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    "offset out of range; reading from the earliest"
                );
                *next = None;
                return Ok(Fetched::Records);
            }
            Err(e) => return Err(e.into()),
        };
        let records = from_offset(&records, offset);
        let Some(last) = records.clone().last().map(|r| r.offset) else {
            return Ok(Fetched::Nothing);
        };
        let events: Vec<Delivered> = records
            .filter_map(|r| {
                let value = r.record.value.as_deref()?;
                match Event::decode(value) {
                    Ok(event) => Some(Delivered {
                        event,
                        position: Some(Position {
                            partition,
                            offset: r.offset,
                        }),
                    }),
                    Err(err) => {
                        tracing::warn!(topic, partition, offset = r.offset, error = %err,
                            "skipping a record that is not an event");
                        None
                    }
                }
            })
            .collect();
        if !events.is_empty() {
            let (ack, done) = oneshot::channel();
            let batch = Batch {
                topic: topic.to_string(),
                events: Arc::new(events),
                ack,
            };
            if reader.batches.send(batch).await.is_err() {
                return Ok(Fetched::Unsubscribed);
            }
            match done.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(err.context("the consumer could not handle a batch")),
                Err(_) => return Ok(Fetched::Unsubscribed),
            }
        }
        *next = Some(last + 1);
        Ok(Fetched::Records)
    }
}

/// What one fetch came to.
enum Fetched {
    /// Records, handed over and committed (or an offset put right).
    Records,
    /// Nothing new yet.
    Nothing,
    /// The subscriber has gone: stop reading.
    Unsubscribed,
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, topic: &str, events: Vec<Event>) -> anyhow::Result<()> {
        let partitions = self.inner.settings.partitions;
        let mut by_partition: HashMap<i32, Vec<Record>> = HashMap::new();
        for event in events {
            let record = Record {
                key: Some(event.partitionkey.clone().into_bytes()),
                value: Some(serde_json::to_vec(&event)?),
                headers: Default::default(),
                timestamp: chrono::Utc::now(),
            };
            by_partition
                .entry(partition_of(&event.partitionkey, partitions))
                .or_default()
                .push(record);
        }
        // Partitions at once: each keeps its records' order, and nothing orders one
        // partition's records against another's. One after another, a batch spread over
        // four partitions waited for four of the broker's commits in turn.
        let produced = by_partition
            .into_iter()
            .map(|(partition, records)| async move {
                let client = self.inner.partition(topic, partition, Use::Produce).await?;
                client.produce(records, Compression::NoCompression).await?;
                metrics::counter!("ekart_kafka_produces_total", "topic" => topic.to_string())
                    .increment(1);
                self.inner.ring(topic, partition);
                Ok::<_, anyhow::Error>(())
            });
        futures::future::try_join_all(produced).await?;
        Ok(())
    }

    fn subscribe(&self, topic: &str, subscriber: Subscriber) -> Subscription {
        let (batches, subscription) = mpsc::channel(4);
        tokio::spawn(assignment::supervise(
            self.inner.clone(),
            topic.to_string(),
            subscriber,
            batches,
        ));
        subscription
    }

    async fn ready(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.inner.client()).await,
            Ok(Ok(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rskafka::record::{Record, RecordAndOffset};

    use super::{from_offset, Fetch, SharedRecords, SHORTEST_PAUSE};

    fn fetched(from: i64, offsets: std::ops::Range<i64>) -> Fetch {
        let record = |offset| RecordAndOffset {
            record: Record {
                key: None,
                value: None,
                headers: Default::default(),
                timestamp: chrono::Utc::now(),
            },
            offset,
        };
        Fetch {
            from,
            records: Arc::new(offsets.map(record).collect()),
            high_watermark: 20,
            at: Some(tokio::time::Instant::now()),
        }
    }

    /// What a reader at `offset` takes of the fetch's answer.
    fn offsets(answer: Option<SharedRecords>, offset: i64) -> Option<Vec<i64>> {
        answer.map(|(records, _)| from_offset(&records, offset).map(|r| r.offset).collect())
    }

    #[tokio::test]
    async fn a_shared_fetch_answers_for_the_offsets_it_read_and_briefly_for_nothing_new() {
        let last = fetched(10, 10..13);
        assert_eq!(offsets(last.answers(10), 10), Some(vec![10, 11, 12]));
        assert_eq!(offsets(last.answers(12), 12), Some(vec![12]));
        // Past what it read, or before where it began: the broker is asked.
        assert_eq!(offsets(last.answers(13), 13), None);
        assert_eq!(offsets(last.answers(9), 9), None);
        // Nothing new at 13 just now: another reader at 13 takes that for its answer, but
        // not for long, and not for another offset.
        let empty = fetched(13, 13..13);
        assert_eq!(offsets(empty.answers(13), 13), Some(vec![]));
        assert_eq!(offsets(empty.answers(14), 14), None);
        tokio::time::sleep(SHORTEST_PAUSE * 2).await;
        assert_eq!(offsets(empty.answers(13), 13), None);
    }

    #[test]
    fn a_key_always_lands_on_the_same_partition() {
        let p = super::partition_of("order-42", 4);
        assert!((0..4).contains(&p));
        assert_eq!(super::partition_of("order-42", 4), p);
        let spread: std::collections::HashSet<i32> = (0..100)
            .map(|i| super::partition_of(&format!("order-{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4, "keys spread over every partition");
    }
}

//! One tailing reader of the offsets topic per worker, the counterpart of Kafka Connect's
//! `KafkaOffsetBackingStore`: it reads the topic once from the beginning and then follows
//! it, keeping every connector's latest offsets in memory. A task starting asks it for its
//! connector's offsets; the answer comes once the reader has consumed everything up to the
//! end offsets taken when the task asked (with read_committed, so what an aborted or still
//! open transaction wrote is never handed out). Before it, every task start rescanned the
//! whole shared topic: quadratic in the number of connectors.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use sluice_proto::config::redact;
use sluice_proto::offsets::{decode_offset, OffsetKey};
use sluice_proto::{SourceOffset, SourcePartition};
use tokio::sync::oneshot;

use crate::kafka::client_config;
use crate::storage::offsets::OffsetStoreError;

/// One connector's offsets.
pub(crate) type ConnectorOffsets = BTreeMap<SourcePartition, SourceOffset>;

/// A task's request: its connector's offsets, as of the topic's end now.
struct Request {
    connector: String,
    deadline: Instant,
    reply: oneshot::Sender<Result<ConnectorOffsets, OffsetStoreError>>,
}

/// The handle of the reader thread; the thread ends when every handle is gone.
pub(crate) struct OffsetReader {
    requests: std_mpsc::Sender<Request>,
}

impl std::fmt::Debug for OffsetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetReader").finish_non_exhaustive()
    }
}

/// What the reader knows.
#[derive(Default)]
struct State {
    offsets: HashMap<String, ConnectorOffsets>,
    /// Offsets of a connector's partition that could not be decoded (the latest record of
    /// that key is bad): reading that connector fails, naming the record, rather than
    /// resuming from an older offset (which would duplicate) or from none.
    poisoned: HashMap<String, BTreeMap<SourcePartition, (i32, i64, String)>>,
}

impl State {
    fn apply(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: &[u8],
        value: Option<&[u8]>,
    ) {
        metrics::counter!("sluice_offset_reader_records_total").increment(1);
        // The topic is shared by every connector of the cluster (and by Kafka Connect
        // workers configured with it): a record that is not an offset key is someone
        // else's; skip it rather than let it stop any task's start.
        let decoded = match OffsetKey::decode(key) {
            Ok(decoded) => decoded,
            Err(e) => {
                metrics::counter!("sluice_offset_records_undecodable_total", "topic" => topic.to_owned())
                    .increment(1);
                tracing::warn!(topic, partition, offset, error = %e, "undecodable key in the offsets topic; record skipped");
                return;
            }
        };
        let OffsetKey {
            connector,
            partition: source_partition,
        } = decoded;
        match decode_offset(value) {
            Ok(Some(v)) => {
                self.clear_poison(&connector, &source_partition);
                self.offsets
                    .entry(connector)
                    .or_default()
                    .insert(source_partition, v);
            }
            Ok(None) => {
                self.clear_poison(&connector, &source_partition);
                if let Some(map) = self.offsets.get_mut(&connector) {
                    map.remove(&source_partition);
                }
            }
            Err(e) => {
                tracing::warn!(connector = %connector, topic, partition, offset, error = %e, "undecodable offset value in the offsets topic");
                self.poisoned
                    .entry(connector)
                    .or_default()
                    .insert(source_partition, (partition, offset, e.to_string()));
            }
        }
    }

    fn clear_poison(&mut self, connector: &str, partition: &SourcePartition) {
        if let Some(p) = self.poisoned.get_mut(connector) {
            p.remove(partition);
        }
    }

    fn answer(&self, topic: &str, connector: &str) -> Result<ConnectorOffsets, OffsetStoreError> {
        if let Some((partition, offset, message)) =
            self.poisoned.get(connector).and_then(|p| p.values().next())
        {
            return Err(OffsetStoreError::Kafka {
                topic: topic.to_owned(),
                message: format!(
                    "the latest offset of connector {connector} at partition {partition} offset {offset} cannot be read: {message}"
                ),
            });
        }
        Ok(self.offsets.get(connector).cloned().unwrap_or_default())
    }
}

/// How long the reader waits for records while nobody is waiting for it.
const IDLE_POLL: Duration = Duration::from_millis(100);

impl OffsetReader {
    /// Starts the reader thread on `topic` (partitions `0..partitions`), from the beginning.
    pub(crate) fn start(
        topic: &str,
        partitions: i32,
        consumer_props: &BTreeMap<String, String>,
    ) -> Result<Self, OffsetStoreError> {
        let kafka = |message: String| OffsetStoreError::Kafka {
            topic: topic.to_owned(),
            message,
        };
        let mut props = consumer_props.clone();
        props.insert("group.id".into(), format!("sluice-offset-reader-{topic}"));
        props.insert("enable.auto.commit".into(), "false".into());
        props.insert("isolation.level".into(), "read_committed".into());
        let create = || -> Result<BaseConsumer, OffsetStoreError> {
            client_config(&props).create().map_err(|e| {
                kafka(format!(
                    "creating the offsets reader: {}",
                    redact(&e.to_string(), &props)
                ))
            })
        };
        let consumer = create()?;
        // End offsets are asked of a client of their own: asked of the consumer that is
        // fetching the partitions, a watermark query waited out its whole timeout.
        let meta = create()?;
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| kafka(e.to_string()))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| kafka(e.to_string()))?;
        let (requests, rx) = std_mpsc::channel();
        let name = topic.to_owned();
        std::thread::Builder::new()
            .name("sluice-offsets-reader".into())
            .spawn(move || run(&consumer, &meta, &name, partitions, &rx))
            .map_err(|e| kafka(format!("starting the offsets reader thread: {e}")))?;
        tracing::info!(topic, partitions, "offsets reader started");
        Ok(OffsetReader { requests })
    }

    /// `connector`'s offsets once the reader has caught up with the topic's end as of now.
    pub(crate) async fn read(
        &self,
        topic: &str,
        connector: &str,
        timeout: Duration,
    ) -> Result<ConnectorOffsets, OffsetStoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                connector: connector.to_owned(),
                deadline: Instant::now() + timeout,
                reply,
            })
            .map_err(|_| OffsetStoreError::Kafka {
                topic: topic.to_owned(),
                message: "the offsets reader thread is gone".into(),
            })?;
        match tokio::time::timeout(timeout + Duration::from_secs(5), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(OffsetStoreError::Kafka {
                topic: topic.to_owned(),
                message: "the offsets reader thread ended".into(),
            }),
            Err(_) => Err(OffsetStoreError::Timeout {
                topic: topic.to_owned(),
                timeout,
            }),
        }
    }
}

/// The end offset each partition must be read to, as of now; partitions holding nothing
/// readable are left out.
fn ends(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>, OffsetStoreError> {
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (low, high) =
            consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(|e| OffsetStoreError::Kafka {
                    topic: topic.to_owned(),
                    message: format!("watermarks of partition {p}: {e}"),
                })?;
        if high > low {
            ends.insert(p, high);
        }
    }
    Ok(ends)
}

/// Whether the consumer's position has reached every end (control records and aborted
/// data included: the position passes them once consumed).
fn caught_up(consumer: &BaseConsumer, ends: &BTreeMap<i32, i64>) -> bool {
    let Ok(position) = consumer.position() else {
        return false;
    };
    ends.iter().all(|(p, end)| {
        position
            .elements()
            .iter()
            .any(|e| e.partition() == *p && matches!(e.offset(), Offset::Offset(o) if o >= *end))
    })
}

fn run(
    consumer: &BaseConsumer,
    meta: &BaseConsumer,
    topic: &str,
    partitions: i32,
    requests: &std_mpsc::Receiver<Request>,
) {
    let mut state = State::default();
    let mut waiting: Vec<(Request, BTreeMap<i32, i64>)> = Vec::new();
    loop {
        loop {
            match requests.try_recv() {
                Ok(request) => {
                    let left = request.deadline.saturating_duration_since(Instant::now());
                    match ends(meta, topic, partitions, left) {
                        Ok(ends) => waiting.push((request, ends)),
                        Err(e) => {
                            let _ = request.reply.send(Err(e));
                        }
                    }
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    tracing::debug!(topic, "offsets reader stopped: no store left");
                    return;
                }
            }
        }
        let wait = if waiting.is_empty() {
            IDLE_POLL
        } else {
            Duration::from_millis(10)
        };
        match consumer.poll(wait) {
            Some(Ok(m)) => state.apply(
                topic,
                m.partition(),
                m.offset(),
                m.key().unwrap_or_default(),
                m.payload(),
            ),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => {
                tracing::warn!(topic, error = %e, "offsets reader: consumer error");
            }
        }
        if waiting.is_empty() {
            continue;
        }
        let now = Instant::now();
        let mut still = Vec::with_capacity(waiting.len());
        for (request, ends) in waiting.drain(..) {
            if caught_up(consumer, &ends) {
                let _ = request.reply.send(state.answer(topic, &request.connector));
            } else if now > request.deadline {
                let _ = request.reply.send(Err(OffsetStoreError::Timeout {
                    topic: topic.to_owned(),
                    timeout: Duration::ZERO,
                }));
            } else {
                still.push((request, ends));
            }
        }
        waiting = still;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(connector: &str, file: &str) -> Vec<u8> {
        let mut p = serde_json::Map::new();
        p.insert("filename".into(), file.into());
        OffsetKey {
            connector: connector.into(),
            partition: SourcePartition::new(p),
        }
        .encode()
    }

    #[test]
    fn foreign_keys_are_skipped_and_bad_values_named() {
        let mut state = State::default();
        state.apply("t", 0, 0, b"\xffnot json", Some(b"{}"));
        state.apply("t", 0, 1, &key("a", "f"), Some(br#"{"position":4}"#));
        state.apply("t", 0, 2, &key("b", "f"), Some(b"{not json"));
        let a = state.answer("t", "a").unwrap();
        assert_eq!(a.len(), 1);
        let e = state.answer("t", "b").unwrap_err().to_string();
        assert!(e.contains("partition 0 offset 2"), "{e}");
        // A later good record of the same key heals it; a tombstone erases.
        state.apply("t", 0, 3, &key("b", "f"), Some(br#"{"position":1}"#));
        assert_eq!(state.answer("t", "b").unwrap().len(), 1);
        state.apply("t", 0, 4, &key("a", "f"), None);
        assert!(state.answer("t", "a").unwrap().is_empty());
        assert!(state.answer("t", "nobody").unwrap().is_empty());
    }
}

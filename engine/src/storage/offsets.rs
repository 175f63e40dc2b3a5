//! Source offsets in Kafka, in Kafka Connect's format (see `sluice_proto::offsets`).
//! Reading goes through one tailing reader per worker (see `offset_reader`), with
//! read_committed up to the end of every partition, so offsets written in an aborted or
//! still-open transaction are never resumed from. Writing happens inside the
//! task's transaction, as ordinary records of the offsets topic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use sluice_proto::config::redact;
use sluice_proto::offsets::{encode_offset, OffsetKey};
use sluice_proto::{SourceOffset, SourcePartition};

use crate::kafka::client_config;
use crate::kafka::partitioner::partition_for_key;
use crate::kafka::producer::OutRecord;
use crate::storage::offset_reader::OffsetReader;

/// Reading or creating the offsets topic failed.
#[derive(Debug, thiserror::Error)]
pub enum OffsetStoreError {
    /// Kafka refused or failed.
    #[error("topic {topic}: {message}")]
    Kafka {
        /// The topic.
        topic: String,
        /// What happened.
        message: String,
    },
    /// A record could not be read; names its position.
    #[error("offsets topic {topic} partition {partition} offset {offset}: {source}")]
    Format {
        /// The topic.
        topic: String,
        /// Partition of the bad record.
        partition: i32,
        /// Offset of the bad record.
        offset: i64,
        /// What is wrong with it.
        #[source]
        source: sluice_proto::offsets::OffsetFormatError,
    },
    /// The blocking read did not finish.
    #[error("reading offsets topic {topic} did not finish within {timeout:?}")]
    Timeout {
        /// The topic.
        topic: String,
        /// The bound.
        timeout: Duration,
    },
}

/// Where a connector's offsets live, and how to reach them.
#[derive(Debug, Clone)]
pub struct OffsetStore {
    /// The offsets topic.
    pub topic: String,
    /// Its partition count (offset records are keyed like Kafka Connect's).
    pub partitions: i32,
    consumer_props: BTreeMap<String, String>,
    /// The worker's tailing reader, shared by every clone.
    reader: Arc<Mutex<Option<Arc<OffsetReader>>>>,
}

impl OffsetStore {
    /// A store on `topic` with `partitions` partitions.
    pub fn new(topic: String, partitions: i32, consumer_props: BTreeMap<String, String>) -> Self {
        OffsetStore {
            topic,
            partitions,
            consumer_props,
            reader: Arc::new(Mutex::new(None)),
        }
    }

    /// The record that commits `offset` for `connector`'s `partition`; partitioned by key
    /// hash as Kafka Connect's producer does, so both find the same record.
    pub fn record(
        &self,
        connector: &str,
        partition: &SourcePartition,
        offset: Option<&SourceOffset>,
    ) -> OutRecord {
        let key = OffsetKey {
            connector: connector.to_owned(),
            partition: partition.clone(),
        }
        .encode();
        OutRecord {
            topic: self.topic.clone(),
            partition: partition_for_key(&key, self.partitions),
            key: Some(key),
            value: encode_offset(offset),
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// Every committed offset of `connector`, as of the topic's end now (read_committed),
    /// from the worker's one tailing reader (started on the first read; every clone of
    /// this store shares it).
    pub async fn read(
        &self,
        connector: &str,
        timeout: Duration,
    ) -> Result<BTreeMap<SourcePartition, SourceOffset>, OffsetStoreError> {
        let reader = self.reader()?;
        let result = reader.read(&self.topic, connector, timeout).await;
        if result.is_err() {
            // A reader whose thread ended is replaced on the next read.
            if let Ok(mut slot) = self.reader.lock() {
                if slot.as_ref().is_some_and(|r| Arc::ptr_eq(r, &reader)) {
                    *slot = None;
                }
            }
        }
        result
    }

    fn reader(&self) -> Result<Arc<OffsetReader>, OffsetStoreError> {
        let mut slot = self.reader.lock().map_err(|_| OffsetStoreError::Kafka {
            topic: self.topic.clone(),
            message: "offsets reader lock poisoned".into(),
        })?;
        if let Some(reader) = slot.as_ref() {
            return Ok(Arc::clone(reader));
        }
        let reader = Arc::new(OffsetReader::start(
            &self.topic,
            self.partitions,
            &self.consumer_props,
        )?);
        *slot = Some(Arc::clone(&reader));
        Ok(reader)
    }
}

/// Reads `topic` (partitions `0..partitions`) from the beginning to its end with
/// read_committed, calling `on_record(partition, offset, key, value)` in order per
/// partition. Blocking: call it from a blocking thread.
pub fn read_to_end(
    consumer_props: &BTreeMap<String, String>,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    mut on_record: impl FnMut(i32, i64, &[u8], Option<&[u8]>) -> Result<(), OffsetStoreError>,
) -> Result<(), OffsetStoreError> {
    let kafka = |message: String| OffsetStoreError::Kafka {
        topic: topic.to_owned(),
        message,
    };
    let mut props = consumer_props.clone();
    props.insert("group.id".into(), group.to_owned());
    props.insert("enable.auto.commit".into(), "false".into());
    props.insert("isolation.level".into(), "read_committed".into());
    let consumer: BaseConsumer = client_config(&props).create().map_err(|e| {
        kafka(format!(
            "creating reader: {}",
            redact(&e.to_string(), &props)
        ))
    })?;
    let deadline = Instant::now() + timeout;
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| kafka(format!("watermarks of partition {p}: {e}")))?;
        if high > 0 {
            ends.insert(p, high);
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| kafka(e.to_string()))?;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer
        .assign(&assignment)
        .map_err(|e| kafka(e.to_string()))?;
    let mut done: BTreeMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    while done.values().any(|d| !d) {
        if Instant::now() > deadline {
            return Err(OffsetStoreError::Timeout {
                topic: topic.to_owned(),
                timeout,
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => on_record(
                message.partition(),
                message.offset(),
                message.key().unwrap_or_default(),
                message.payload(),
            )?,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => return Err(kafka(format!("consuming: {e}"))),
        }
        // The position passes the end once everything up to the last stable offset
        // (control records and aborted data included) has been consumed.
        let position = consumer.position().map_err(|e| kafka(e.to_string()))?;
        for element in position.elements() {
            if let Offset::Offset(o) = element.offset() {
                if ends.get(&element.partition()).is_some_and(|end| o >= *end) {
                    done.insert(element.partition(), true);
                }
            }
        }
    }
    Ok(())
}

/// Creates a compacted state topic if it does not exist (Kafka Connect's state topics are
/// compacted so the latest record per key survives forever).
pub async fn ensure_compacted_topic(
    admin_props: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    replication: i16,
) -> Result<(), OffsetStoreError> {
    ensure_topic(admin_props, topic, partitions, replication, true).await
}

/// Creates a topic if it does not exist (an existing one is left as it is).
pub async fn ensure_topic(
    admin_props: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    replication: i16,
    compacted: bool,
) -> Result<(), OffsetStoreError> {
    let kafka = |message: String| OffsetStoreError::Kafka {
        topic: topic.to_owned(),
        message,
    };
    let admin: AdminClient<DefaultClientContext> =
        client_config(admin_props).create().map_err(|e| {
            kafka(format!(
                "creating admin client: {}",
                redact(&e.to_string(), admin_props)
            ))
        })?;
    let replication = if replication < 1 {
        TopicReplication::Fixed(-1)
    } else {
        TopicReplication::Fixed(i32::from(replication))
    };
    let mut new = NewTopic::new(topic, partitions, replication);
    if compacted {
        new = new.set("cleanup.policy", "compact");
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = tokio::time::timeout(
        Duration::from_secs(40),
        admin.create_topics([&new], &options),
    )
    .await
    .map_err(|_| kafka("CreateTopics timed out".into()))?
    .map_err(|e| kafka(format!("CreateTopics: {e}")))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(kafka(format!("CreateTopics: {code}"))),
        }
    }
    Ok(())
}

/// The partition count of a topic. The request goes through a producer client, which asks
/// the broker to auto-create a missing topic (as Kafka Connect's producers do) when the
/// broker allows it.
pub async fn partition_count(
    props: &BTreeMap<String, String>,
    topic: &str,
    timeout: Duration,
) -> Result<i32, OffsetStoreError> {
    let props = props.clone();
    let name = topic.to_owned();
    let handle = crate::kafka::blocking(timeout, move || -> Result<i32, String> {
        let producer: BaseProducer = client_config(&props)
            .create()
            .map_err(|e| redact(&e.to_string(), &props))?;
        // A topic created a moment ago (by us or by auto-creation) can show no partitions
        // until the broker's metadata catches up: ask again within the timeout.
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let metadata = producer
                .client()
                .fetch_metadata(Some(&name), left.max(Duration::from_millis(100)))
                .map_err(|e| e.to_string())?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == name)
                .map_or(0, |t| t.partitions().len());
            if count > 0 || Instant::now() + Duration::from_millis(100) >= deadline {
                return i32::try_from(count).map_err(|e| e.to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let kafka = |message: String| OffsetStoreError::Kafka {
        topic: topic.to_owned(),
        message,
    };
    match handle.await {
        Ok(Ok(0)) => Err(kafka(
            "does not exist (or has no partitions yet), and the broker did not auto-create it"
                .into(),
        )),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(kafka(format!("metadata: {e}"))),
        Err(crate::kafka::Blocked::Failed(e)) => Err(kafka(format!("metadata thread failed: {e}"))),
        Err(crate::kafka::Blocked::TimedOut(_)) => Err(OffsetStoreError::Timeout {
            topic: topic.to_owned(),
            timeout,
        }),
    }
}

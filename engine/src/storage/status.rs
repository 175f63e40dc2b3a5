//! Connector and task status in Kafka (`status.storage.topic`), in Kafka Connect's record
//! format, so status outlives the process and tools that watch Kafka Connect's status topic
//! watch Sluice's:
//!
//! - `status-connector-<name>` -> `{"state": "RUNNING", "trace": null, "worker_id": "h:p", "generation": N}`
//! - `status-task-<name>-<n>` -> the same shape, per task
//! - `status-topic-<topic>:connector-<name>` -> `{"topic": {"name", "connector", "task",
//!   "discoverTimestamp"}}`, a topic the connector used (KIP-558; in a cluster; `:` cannot
//!   be in a topic name, so the key is unambiguous)
//!
//! Writes are fire-and-forget from the supervisor's point of view: a status write that
//! fails is logged and counted, and never stops a task.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::kafka::partitioner::partition_for_key;
use crate::kafka::producer::{OutRecord, ProducerError, TaskProducer};
use crate::storage::offsets::{ensure_compacted_topic, partition_count, OffsetStoreError};

/// The status topic and a producer for it.
#[derive(Clone)]
pub struct StatusStore {
    topic: String,
    partitions: i32,
    worker_id: String,
    producer: TaskProducer,
    /// In a cluster, the group generation this worker last joined at: written as every
    /// record's `generation` (instead of the task life's), so readers keep a task's record
    /// from its current owner over a late one from a worker that lost it (Kafka Connect's
    /// `KafkaStatusBackingStore` does the same).
    group_generation: Option<Arc<AtomicU64>>,
    /// In a cluster, the check a state record passes before it is written.
    guard: Option<WriteGuard>,
}

/// A cluster's check of a status write: given the record key, the state and this
/// worker's generation, `Err` says why the record must not go out (this worker lost its
/// membership, or the record would overwrite a newer owner's; Kafka Connect's `putSafe`).
pub type WriteGuard = Arc<dyn Fn(&str, &str, u64) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for StatusStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusStore")
            .field("topic", &self.topic)
            .field("worker_id", &self.worker_id)
            .field("guarded", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

/// Opening the status topic failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusStoreError {
    /// Creating or describing the topic failed.
    #[error(transparent)]
    Topic(#[from] OffsetStoreError),
    /// Creating the producer failed.
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

/// Kafka Connect's key of a KIP-558 topic record.
pub(crate) fn topic_key(topic: &str, connector: &str) -> String {
    format!("status-topic-{topic}:connector-{connector}")
}

impl StatusStore {
    /// Creates the topic (compacted) if missing, and the producer.
    pub async fn open(
        topic: String,
        partitions: i32,
        replication: i16,
        admin_props: &BTreeMap<String, String>,
        producer_props: BTreeMap<String, String>,
        worker_id: String,
    ) -> Result<Self, StatusStoreError> {
        ensure_compacted_topic(admin_props, &topic, partitions, replication).await?;
        let partitions = partition_count(admin_props, &topic, Duration::from_secs(30)).await?;
        let producer = TaskProducer::create(producer_props, None, Duration::from_secs(30)).await?;
        Ok(StatusStore {
            topic,
            partitions,
            worker_id,
            producer,
            group_generation: None,
            guard: None,
        })
    }

    /// The same store, writing the cluster's group generation into every record.
    #[must_use]
    pub fn with_group_generation(mut self, generation: Arc<AtomicU64>) -> Self {
        self.group_generation = Some(generation);
        self
    }

    /// The same store, asking `guard` before each state record.
    #[must_use]
    pub fn with_guard(mut self, guard: WriteGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The generation a record of this worker carries.
    fn generation(&self, life: u64) -> u64 {
        self.group_generation
            .as_ref()
            .map_or(life, |g| g.load(Ordering::SeqCst))
    }

    /// Whether the guard lets `state` go out under `key` (counted and logged when not).
    fn allowed(&self, key: &str, state: &str, life: u64) -> bool {
        let Some(guard) = &self.guard else {
            return true;
        };
        match guard(key, state, self.generation(life)) {
            Ok(()) => true,
            Err(why) => {
                metrics::counter!("sluice_status_writes_skipped_total").increment(1);
                tracing::info!(topic = %self.topic, key = %key, state = %state, reason = %why, "status not written");
                false
            }
        }
    }

    fn record(&self, key: String, state: Option<(&str, Option<&str>, u64)>) -> OutRecord {
        let value = state.map(|(state, trace, generation)| {
            let generation = self.generation(generation);
            json!({"state": state, "trace": trace, "worker_id": self.worker_id, "generation": generation})
                .to_string()
                .into_bytes()
        });
        self.out(key, value)
    }

    /// A record of the status topic under `key` (`None`: a tombstone).
    fn out(&self, key: String, value: Option<Vec<u8>>) -> OutRecord {
        let key = key.into_bytes();
        OutRecord {
            topic: self.topic.clone(),
            partition: partition_for_key(&key, self.partitions),
            key: Some(key),
            value,
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// Writes `records`; whether they were written (a failure is logged and counted).
    async fn write(&self, records: Vec<OutRecord>, what: &str) -> bool {
        let result = async {
            self.producer.send(records).await?;
            self.producer.commit().await
        }
        .await;
        if let Err(e) = &result {
            metrics::counter!("sluice_status_write_failures_total").increment(1);
            tracing::warn!(topic = %self.topic, status = %what, error = %e, "status write failed");
        }
        result.is_ok()
    }

    /// Records a task's state.
    pub async fn put_task(
        &self,
        connector: &str,
        task: u32,
        state: &str,
        trace: Option<&str>,
        generation: u64,
    ) {
        let key = format!("status-task-{connector}-{task}");
        if !self.allowed(&key, state, generation) {
            return;
        }
        let record = self.record(key, Some((state, trace, generation)));
        self.write(vec![record], &format!("{connector}/{task}={state}"))
            .await;
    }

    /// Records a connector's state.
    pub async fn put_connector(&self, connector: &str, state: &str) {
        let key = format!("status-connector-{connector}");
        if !self.allowed(&key, state, 0) {
            return;
        }
        let record = self.record(key, Some((state, None, 0)));
        self.write(vec![record], &format!("{connector}={state}"))
            .await;
    }

    /// Records that connectors used topics (KIP-558): `(connector, topic, task)`, one
    /// write for all; whether it was written.
    pub async fn put_topics(&self, used: &[(String, String, u32)]) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let records = used
            .iter()
            .map(|(connector, topic, task)| {
                let value = json!({"topic": {"name": topic, "connector": connector, "task": task, "discoverTimestamp": now}});
                self.out(
                    topic_key(topic, connector),
                    Some(value.to_string().into_bytes()),
                )
            })
            .collect();
        self.write(records, &format!("{} active topics", used.len()))
            .await
    }

    /// Erases `connector`'s topic records (a reset of its active topics).
    pub async fn delete_topics(&self, connector: &str, topics: &[String]) {
        if topics.is_empty() {
            return;
        }
        let records = topics
            .iter()
            .map(|t| self.out(topic_key(t, connector), None))
            .collect();
        self.write(records, &format!("{connector} topics reset"))
            .await;
    }

    /// Erases a deleted connector's status records.
    pub async fn delete(&self, connector: &str, tasks: u32) {
        let mut records = vec![self.record(format!("status-connector-{connector}"), None)];
        for t in 0..tasks {
            records.push(self.record(format!("status-task-{connector}-{t}"), None));
        }
        self.write(records, &format!("{connector} deleted")).await;
    }
}

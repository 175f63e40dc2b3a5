//! Connector configs in Kafka (`config.storage.topic`), in Kafka Connect's record format,
//! so a worker started again finds the connectors created over REST, and tools that read
//! Kafka Connect's config topic read Sluice's:
//!
//! - `connector-<name>` -> `{"properties": {...}}` (a tombstone deletes the connector)
//! - `task-<name>-<n>` -> `{"properties": {...}}`, then `commit-<name>` -> `{"tasks": N}`
//! - `target-state-<name>` -> `{"state": "STARTED"|"PAUSED", "state.v2": "STARTED"|"PAUSED"|"STOPPED"}`
//!
//! Like Kafka Connect's, the topic holds configs as given, secrets included: protect it
//! with ACLs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use sluice_proto::config::redact;

use crate::kafka::client_config;
use crate::kafka::producer::{OutRecord, TaskProducer};
use crate::storage::offsets::{ensure_compacted_topic, read_to_end, OffsetStoreError};
use crate::task::supervisor::TargetState;

/// A connector as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConnector {
    /// Its config.
    pub config: BTreeMap<String, String>,
    /// Its target state.
    pub target: TargetState,
    /// How many task configs its last `commit-<name>` record committed (none yet: a
    /// connector written by a tool that wrote no task configs).
    pub tasks: Option<u32>,
}

/// The connectors a replay of the config topic has found so far.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    configs: BTreeMap<String, BTreeMap<String, String>>,
    targets: BTreeMap<String, TargetState>,
    tasks: BTreeMap<String, u32>,
}

impl Replay {
    /// Applies one record; returns the connector it changed (task and commit records,
    /// derived from the connector config, change none).
    pub(crate) fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Option<String> {
        let key = String::from_utf8_lossy(key);
        let value: Option<Value> = value.and_then(|v| serde_json::from_slice(v).ok());
        if let Some(name) = key.strip_prefix("connector-") {
            match value
                .as_ref()
                .and_then(|v| v.get("properties"))
                .and_then(Value::as_object)
            {
                Some(props) => {
                    let config = props
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        })
                        .collect();
                    self.configs.insert(name.to_owned(), config);
                }
                None => {
                    self.configs.remove(name);
                    self.targets.remove(name);
                    self.tasks.remove(name);
                }
            }
            Some(name.to_owned())
        } else if let Some(name) = key.strip_prefix("commit-") {
            // The task count changes which tasks exist: a change, for the cluster's
            // assignment (task records before their commit change nothing).
            let count = value
                .as_ref()
                .and_then(|v| v.get("tasks"))
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok());
            match count {
                Some(n) => self.tasks.insert(name.to_owned(), n),
                None => self.tasks.remove(name),
            };
            Some(name.to_owned())
        } else if let Some(name) = key.strip_prefix("target-state-") {
            match value.as_ref().and_then(parse_target) {
                Some(t) => self.targets.insert(name.to_owned(), t),
                None => self.targets.remove(name),
            };
            Some(name.to_owned())
        } else {
            None
        }
    }

    /// One connector as stored now (`None`: deleted, or never created).
    pub(crate) fn get(&self, name: &str) -> Option<StoredConnector> {
        let config = self.configs.get(name)?.clone();
        let target = self
            .targets
            .get(name)
            .copied()
            .unwrap_or(TargetState::Started);
        Some(StoredConnector {
            config,
            target,
            tasks: self.tasks.get(name).copied(),
        })
    }

    /// Every stored connector.
    pub(crate) fn all(&self) -> BTreeMap<String, StoredConnector> {
        self.configs
            .keys()
            .filter_map(|name| Some((name.clone(), self.get(name)?)))
            .collect()
    }
}

/// What the config-topic follower has read: every connector as stored, and how far it
/// has read.
#[derive(Clone)]
pub struct Followed {
    topic: String,
    replay: Arc<Mutex<Replay>>,
    position: Arc<AtomicI64>,
    /// Asks for the topic's end offset. A client of its own: asked of the fetching
    /// consumer, a watermark query can wait out its whole timeout.
    meta: Arc<BaseConsumer>,
}

impl std::fmt::Debug for Followed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followed")
            .field("topic", &self.topic)
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}

impl Followed {
    fn apply(&self, key: &[u8], value: Option<&[u8]>) -> Option<String> {
        self.replay.lock().ok()?.apply(key, value)
    }

    /// A connector as stored, as of the follower's position (`None`: deleted or unknown).
    pub fn get(&self, name: &str) -> Option<StoredConnector> {
        self.replay.lock().ok()?.get(name)
    }

    /// Every connector as stored, as of the follower's position.
    pub fn all(&self) -> BTreeMap<String, StoredConnector> {
        self.replay.lock().map(|r| r.all()).unwrap_or_default()
    }

    /// The offset the follower reads next.
    pub fn position(&self) -> i64 {
        self.position.load(Ordering::SeqCst)
    }

    /// The topic's end offset now: what the follower must have read to have seen every
    /// record written so far.
    pub async fn end_offset(&self) -> Result<i64, ConfigStoreError> {
        let meta = Arc::clone(&self.meta);
        let topic = self.topic.clone();
        let timeout = Duration::from_secs(10);
        let end = crate::kafka::blocking(timeout, move || {
            meta.fetch_watermarks(&topic, 0, timeout)
                .map(|(_, high)| high)
        })
        .await;
        let message = match end {
            Ok(Ok(end)) => return Ok(end),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("{e:?}"),
        };
        Err(ConfigStoreError::Kafka(OffsetStoreError::Kafka {
            topic: self.topic.clone(),
            message,
        }))
    }
}

/// Reading or writing the config topic failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigStoreError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] OffsetStoreError),
    /// This worker may not write: it does not lead the cluster (never elected, or fenced
    /// by a newer leader).
    #[error("writing config topic {topic}: this worker does not lead the cluster ({reason})")]
    NotLeader {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Writing failed.
    #[error("writing config topic {topic}: {message}")]
    Write {
        /// The topic.
        topic: String,
        /// What happened.
        message: String,
    },
}

/// The config topic.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    topic: String,
    producer_props: BTreeMap<String, String>,
    consumer_props: BTreeMap<String, String>,
    /// How writes go (see [`ConfigStore::claim`]).
    writer: Arc<tokio::sync::Mutex<Writer>>,
}

/// How the config topic is written.
#[derive(Debug, Default)]
enum Writer {
    /// A producer per write (a single worker, the only writer).
    #[default]
    Plain,
    /// The cluster leader's transactional producer, and its transactional id.
    Claimed(TaskProducer, String),
    /// The leader's claim stands but its producer failed beyond an abort (a fatal error
    /// other than a fencing): the next write claims the id again with a new producer.
    Lapsed(String),
    /// In a cluster, without the claim (not elected, or fenced): writes are refused.
    Unclaimed,
}

fn target_value(target: TargetState) -> Value {
    let v2 = match target {
        TargetState::Started => "STARTED",
        TargetState::Paused => "PAUSED",
        TargetState::Stopped => "STOPPED",
    };
    // Readers that predate STOPPED see PAUSED, as Kafka Connect writes it.
    let v1 = if target == TargetState::Started {
        "STARTED"
    } else {
        "PAUSED"
    };
    json!({"state": v1, "state.v2": v2})
}

fn parse_target(value: &Value) -> Option<TargetState> {
    let state = value
        .get("state.v2")
        .or_else(|| value.get("state"))
        .and_then(Value::as_str)?;
    match state {
        "STARTED" => Some(TargetState::Started),
        "PAUSED" => Some(TargetState::Paused),
        "STOPPED" => Some(TargetState::Stopped),
        _ => None,
    }
}

impl ConfigStore {
    /// Creates the topic (one partition, compacted) if missing.
    pub async fn open(
        topic: String,
        admin_props: &BTreeMap<String, String>,
        replication: i16,
        producer_props: BTreeMap<String, String>,
        consumer_props: BTreeMap<String, String>,
    ) -> Result<Self, ConfigStoreError> {
        // One partition: Kafka Connect relies on a total order of config records.
        ensure_compacted_topic(admin_props, &topic, 1, replication).await?;
        Ok(ConfigStore {
            topic,
            producer_props,
            consumer_props,
            writer: Arc::default(),
        })
    }

    /// Every stored connector, replaying the topic to its end.
    pub async fn read_all(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, StoredConnector>, ConfigStoreError> {
        let store = self.clone();
        let handle = crate::kafka::blocking(timeout, move || {
            let mut replay = Replay::default();
            read_to_end(
                &store.consumer_props,
                "sluice-config-reader",
                &store.topic,
                1,
                timeout,
                |_, _, key, value| {
                    replay.apply(key, value);
                    Ok(())
                },
            )?;
            Ok::<_, ConfigStoreError>(replay.all())
        });
        handle.await.map_err(|e| ConfigStoreError::Write {
            topic: self.topic.clone(),
            message: format!("reader thread failed: {e}"),
        })?
    }

    /// Follows the topic from its beginning on a thread of its own, for as long as
    /// `changes` is open. It first catches up with the end of the topic as it was when
    /// it started, then names every connector it has seen on `changes`; from then on it
    /// names each connector a record changes, as it reads it. Whoever wrote the record
    /// (this worker, another one, a tool), the worker hears of it; [`Followed`] says how
    /// each connector is stored as of the follower's position.
    pub fn follow(
        &self,
        changes: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<Followed, ConfigStoreError> {
        let kafka = |message: String| {
            ConfigStoreError::Kafka(OffsetStoreError::Kafka {
                topic: self.topic.clone(),
                message,
            })
        };
        let mut props = self.consumer_props.clone();
        props.insert("group.id".into(), "sluice-config-follower".into());
        props.insert("enable.auto.commit".into(), "false".into());
        props.insert("isolation.level".into(), "read_committed".into());
        let client = || -> Result<BaseConsumer, ConfigStoreError> {
            client_config(&props).create().map_err(|e| {
                kafka(format!(
                    "creating the follower: {}",
                    redact(&e.to_string(), &props)
                ))
            })
        };
        let consumer = client()?;
        let meta = Arc::new(client()?);
        let (_, end) = meta
            .fetch_watermarks(&self.topic, 0, Duration::from_secs(30))
            .map_err(|e| kafka(format!("end offset: {e}")))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, 0, Offset::Beginning)
            .map_err(|e| kafka(e.to_string()))?;
        consumer
            .assign(&assignment)
            .map_err(|e| kafka(e.to_string()))?;
        let followed = Followed {
            topic: self.topic.clone(),
            replay: Arc::default(),
            position: Arc::default(),
            meta,
        };
        let view = followed.clone();
        let topic = self.topic.clone();
        std::thread::Builder::new()
            .name("sluice-config-follower".into())
            .spawn(move || {
                // Names seen while catching up: the worker hears of each once, at its
                // final state, not of every state it went through.
                let mut seen: Option<BTreeSet<String>> = (end > 0).then(BTreeSet::new);
                while !changes.is_closed() {
                    let changed = match consumer.poll(Duration::from_millis(200)) {
                        None => None,
                        Some(Ok(m)) => {
                            metrics::counter!("sluice_config_topic_records_total").increment(1);
                            m.key().and_then(|key| view.apply(key, m.payload()))
                        }
                        Some(Err(e)) => {
                            tracing::warn!(topic = %topic, error = %e, "reading the config topic failed; retrying");
                            std::thread::sleep(Duration::from_secs(1));
                            None
                        }
                    };
                    // The fetch position moves past transaction markers too.
                    let position = consumer.position().ok().and_then(|list| {
                        match list.find_partition(&topic, 0)?.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        }
                    });
                    if let Some(position) = position {
                        view.position.fetch_max(position, Ordering::SeqCst);
                    }
                    let names: Vec<String> = match (&mut seen, changed) {
                        (Some(seen), changed) => {
                            seen.extend(changed);
                            if view.position() < end {
                                continue;
                            }
                            let all = std::mem::take(seen).into_iter().collect();
                            tracing::info!(topic = %topic, end, "config topic caught up; following it");
                            all
                        }
                        (None, Some(name)) => vec![name],
                        (None, None) => continue,
                    };
                    seen = None;
                    if names.into_iter().any(|name| changes.send(name).is_err()) {
                        break;
                    }
                }
                tracing::debug!(topic = %topic, "config topic follower stopped");
            })
            .map_err(|e| kafka(format!("starting the follower thread: {e}")))?;
        Ok(followed)
    }

    fn record(&self, key: String, value: Option<Value>) -> OutRecord {
        OutRecord {
            topic: self.topic.clone(),
            partition: 0,
            key: Some(key.into_bytes()),
            value: value.map(|v| v.to_string().into_bytes()),
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// The store of a cluster member: it writes nothing until it is elected leader and
    /// [claims](ConfigStore::claim) the topic.
    #[must_use]
    pub fn clustered(self) -> Self {
        ConfigStore {
            writer: Arc::new(tokio::sync::Mutex::new(Writer::Unclaimed)),
            ..self
        }
    }

    /// Makes every later write go through a transactional producer with
    /// `transactional_id` (the cluster leader's, `sluice-cluster-<group.id>`): its
    /// `init_transactions` fences the producer of any earlier leader, so a deposed leader
    /// that has not noticed yet can no longer write a config.
    ///
    /// A store that holds the claim keeps it: claiming again would fence its own producer
    /// under a write in flight (a leader elected again at the next generation).
    pub async fn claim(&self, transactional_id: String) -> Result<(), ConfigStoreError> {
        let mut writer = self.writer.lock().await;
        if matches!(*writer, Writer::Claimed(..)) {
            return Ok(());
        }
        match self.claimed(&transactional_id).await {
            Ok(producer) => {
                *writer = Writer::Claimed(producer, transactional_id);
                Ok(())
            }
            Err(e) => {
                // Elected all the same: the next write tries the claim again.
                *writer = Writer::Lapsed(transactional_id);
                Err(e)
            }
        }
    }

    /// A transactional producer with `transactional_id`, its earlier instances fenced.
    async fn claimed(&self, transactional_id: &str) -> Result<TaskProducer, ConfigStoreError> {
        TaskProducer::create(
            self.producer_props.clone(),
            Some(transactional_id.to_owned()),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| ConfigStoreError::Write {
            topic: self.topic.clone(),
            message: format!("claiming the config topic: {e}"),
        })
    }

    /// Gives up the claim (this worker no longer leads): writes are refused until the next
    /// claim.
    pub async fn release(&self) {
        *self.writer.lock().await = Writer::Unclaimed;
    }

    async fn write(&self, records: Vec<OutRecord>) -> Result<(), ConfigStoreError> {
        let err = |e: crate::kafka::producer::ProducerError| ConfigStoreError::Write {
            topic: self.topic.clone(),
            message: e.to_string(),
        };
        let mut writer = self.writer.lock().await;
        if let Writer::Lapsed(id) = &*writer {
            let id = id.clone();
            let producer = self.claimed(&id).await?;
            tracing::info!(topic = %self.topic, "config topic claimed again after a failed write");
            *writer = Writer::Claimed(producer, id);
        }
        match &*writer {
            Writer::Plain => {}
            Writer::Unclaimed | Writer::Lapsed(_) => {
                return Err(ConfigStoreError::NotLeader {
                    topic: self.topic.clone(),
                    reason: "not elected, or fenced by a newer leader".into(),
                })
            }
            Writer::Claimed(producer, id) => {
                let written = async {
                    producer.begin().await?;
                    producer.send(records).await?;
                    producer.commit().await
                }
                .await;
                if let Err(e) = written {
                    if e.is_fenced() {
                        // Another worker leads now: the claim is over; this worker
                        // claims anew if it is elected again.
                        let _ = producer.abort().await;
                        *writer = Writer::Unclaimed;
                        tracing::warn!(topic = %self.topic, error = %e, "config write refused: a newer leader has claimed the config topic");
                        return Err(ConfigStoreError::NotLeader {
                            topic: self.topic.clone(),
                            reason: e.to_string(),
                        });
                    }
                    // Refused for its own reason (too large, a broker that did not answer
                    // in time): this write is lost, the claim is not. A producer that
                    // cannot even abort is replaced at the next write.
                    tracing::warn!(topic = %self.topic, error = %e, "config write failed; the leader's claim stays");
                    if let Err(abort) = producer.abort().await {
                        tracing::warn!(topic = %self.topic, error = %abort, "the config topic's producer cannot abort; it is replaced at the next write");
                        *writer = Writer::Lapsed(id.clone());
                    }
                    return Err(err(e));
                }
                return Ok(());
            }
        }
        drop(writer);
        let producer =
            TaskProducer::create(self.producer_props.clone(), None, Duration::from_secs(30))
                .await
                .map_err(err)?;
        producer.send(records).await.map_err(err)?;
        producer.commit().await.map_err(err)
    }

    /// Stores a connector: its config, task configs with their commit, and target state.
    pub async fn put(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
        task_configs: &[BTreeMap<String, String>],
        target: TargetState,
    ) -> Result<(), ConfigStoreError> {
        let mut records = vec![self.record(
            format!("connector-{name}"),
            Some(json!({"properties": config})),
        )];
        for (i, task) in task_configs.iter().enumerate() {
            records.push(self.record(
                format!("task-{name}-{i}"),
                Some(json!({"properties": task})),
            ));
        }
        records.push(self.record(
            format!("commit-{name}"),
            Some(json!({"tasks": task_configs.len()})),
        ));
        records.push(self.record(format!("target-state-{name}"), Some(target_value(target))));
        self.write(records).await
    }

    /// Stores a target state change.
    pub async fn put_target(
        &self,
        name: &str,
        target: TargetState,
    ) -> Result<(), ConfigStoreError> {
        self.write(vec![self.record(
            format!("target-state-{name}"),
            Some(target_value(target)),
        )])
        .await
    }

    /// Deletes a connector (tombstones).
    pub async fn delete(&self, name: &str) -> Result<(), ConfigStoreError> {
        self.write(vec![
            self.record(format!("connector-{name}"), None),
            self.record(format!("target-state-{name}"), None),
        ])
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_states_round_trip_in_kafka_connects_shape() {
        for t in [
            TargetState::Started,
            TargetState::Paused,
            TargetState::Stopped,
        ] {
            assert_eq!(parse_target(&target_value(t)), Some(t));
        }
        assert_eq!(
            target_value(TargetState::Stopped),
            json!({"state": "PAUSED", "state.v2": "STOPPED"})
        );
        // Written by an older Kafka Connect: only "state".
        assert_eq!(
            parse_target(&json!({"state": "PAUSED"})),
            Some(TargetState::Paused)
        );
        assert_eq!(parse_target(&json!({"state": "SLEEPING"})), None);
    }
}

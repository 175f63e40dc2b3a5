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

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

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
}

/// Reading or writing the config topic failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigStoreError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] OffsetStoreError),
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
        })
    }

    /// Every stored connector, replaying the topic to its end.
    pub async fn read_all(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, StoredConnector>, ConfigStoreError> {
        let store = self.clone();
        let handle = crate::kafka::blocking(timeout, move || {
            let mut configs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            let mut targets: BTreeMap<String, TargetState> = BTreeMap::new();
            read_to_end(
                &store.consumer_props,
                "sluice-config-reader",
                &store.topic,
                1,
                timeout,
                |_, _, key, value| {
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
                                configs.insert(name.to_owned(), config);
                            }
                            None => {
                                configs.remove(name);
                                targets.remove(name);
                            }
                        }
                    } else if let Some(name) = key.strip_prefix("target-state-") {
                        match value.as_ref().and_then(parse_target) {
                            Some(t) => targets.insert(name.to_owned(), t),
                            None => targets.remove(name),
                        };
                    }
                    Ok(())
                },
            )?;
            Ok::<_, ConfigStoreError>(
                configs
                    .into_iter()
                    .map(|(name, config)| {
                        let target = targets.get(&name).copied().unwrap_or(TargetState::Started);
                        (name, StoredConnector { config, target })
                    })
                    .collect(),
            )
        });
        handle.await.map_err(|e| ConfigStoreError::Write {
            topic: self.topic.clone(),
            message: format!("reader thread failed: {e}"),
        })?
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

    async fn write(&self, records: Vec<OutRecord>) -> Result<(), ConfigStoreError> {
        let err = |e: crate::kafka::producer::ProducerError| ConfigStoreError::Write {
            topic: self.topic.clone(),
            message: e.to_string(),
        };
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

//! KIP-875: a connector's committed offsets read, altered and reset while it is STOPPED:
//! a source's in the offsets topic, a sink's in its consumer group.

use std::collections::BTreeMap;
use std::time::Duration;

use super::HerderError;
use crate::task::sink;
use crate::task::supervisor::TargetState;

use super::plan::key_error;
use super::worker::Worker;

impl Worker {
    /// The connector's committed offsets: a source's source offsets, or a sink's consumer
    /// group offsets in Kafka Connect's shape (`{"kafka_topic","kafka_partition"}` ->
    /// `{"kafka_offset"}`).
    pub async fn offsets(
        &self,
        name: &str,
    ) -> Result<BTreeMap<sluice_proto::SourcePartition, sluice_proto::SourceOffset>, HerderError>
    {
        let entry = self.connector(name)?;
        self.read_offsets(name, entry.subscription.as_ref()).await
    }

    /// The committed offsets of connector `name`, a sink when it has a `subscription`
    /// (from its plan), wherever its tasks run (a cluster's worker answers for all).
    pub(crate) async fn read_offsets(
        &self,
        name: &str,
        subscription: Option<&sink::Subscription>,
    ) -> Result<BTreeMap<sluice_proto::SourcePartition, sluice_proto::SourceOffset>, HerderError>
    {
        if let Some(subscription) = subscription {
            let offsets = sink::group_offsets(
                &self.config.kafka_client_props("consumer."),
                &sink::group_id(name),
                subscription,
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
            return Ok(offsets
                .into_iter()
                .map(|(tp, o)| {
                    let mut p = serde_json::Map::new();
                    p.insert("kafka_topic".into(), tp.topic.into());
                    p.insert("kafka_partition".into(), tp.partition.into());
                    (
                        sluice_proto::SourcePartition::new(p),
                        sluice_proto::SourceOffset::single("kafka_offset", o),
                    )
                })
                .collect());
        }
        self.offsets
            .read(name, Duration::from_secs(30))
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))
    }

    /// Alters a STOPPED sink's group offsets; all-`None` (a reset) deletes the group.
    async fn alter_sink_offsets(
        &self,
        name: &str,
        changes: Vec<(
            sluice_proto::SourcePartition,
            Option<sluice_proto::SourceOffset>,
        )>,
    ) -> Result<(), HerderError> {
        let props = self.config.kafka_client_props("consumer.");
        let group = sink::group_id(name);
        if changes.iter().all(|(_, o)| o.is_none()) {
            sink::delete_group(&props, &group, Duration::from_secs(30))
                .await
                .map_err(|e| HerderError::Internal(e.to_string()))?;
            tracing::info!(connector = %name, group = %group, "sink offsets reset (consumer group deleted)");
            return Ok(());
        }
        let mut offsets = BTreeMap::new();
        for (i, (p, o)) in changes.iter().enumerate() {
            let topic = p
                .as_map()
                .get("kafka_topic")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| {
                    key_error(
                        &format!("offsets[{i}].partition.kafka_topic"),
                        "must be a string",
                    )
                })?;
            let partition = p
                .as_map()
                .get("kafka_partition")
                .and_then(serde_json::Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
                .filter(|v| *v >= 0)
                .ok_or_else(|| {
                    key_error(
                        &format!("offsets[{i}].partition.kafka_partition"),
                        "must be a non-negative integer",
                    )
                })?;
            let offset = o
                .as_ref()
                .ok_or_else(|| key_error(&format!("offsets[{i}].offset"), "null resets one partition, which Sluice does not support yet; DELETE the offsets to reset them all"))?
                .0
                .get("kafka_offset")
                .and_then(serde_json::Value::as_i64)
                .filter(|v| *v >= 0)
                .ok_or_else(|| key_error(&format!("offsets[{i}].offset.kafka_offset"), "must be a non-negative integer"))?;
            offsets.insert(
                sluice_proto::TopicPartition {
                    topic: topic.to_owned(),
                    partition,
                },
                offset,
            );
        }
        let count = offsets.len();
        sink::alter_group_offsets(&props, &group, offsets, Duration::from_secs(30))
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
        tracing::info!(connector = %name, group = %group, partitions = count, "sink offsets altered");
        Ok(())
    }

    /// Writes (or, with `None`, erases) offsets of a STOPPED connector (KIP-875).
    pub async fn alter_offsets(
        &self,
        name: &str,
        changes: Vec<(
            sluice_proto::SourcePartition,
            Option<sluice_proto::SourceOffset>,
        )>,
    ) -> Result<(), HerderError> {
        let entry = self.connector(name)?;
        self.write_offsets(name, entry.target, entry.subscription.as_ref(), changes)
            .await
    }

    /// Writes offsets of connector `name` in `target` state (refused unless STOPPED), a
    /// sink when it has a `subscription`.
    pub(crate) async fn write_offsets(
        &self,
        name: &str,
        target: TargetState,
        subscription: Option<&sink::Subscription>,
        changes: Vec<(
            sluice_proto::SourcePartition,
            Option<sluice_proto::SourceOffset>,
        )>,
    ) -> Result<(), HerderError> {
        if target != TargetState::Stopped {
            return Err(HerderError::WrongState(format!(
                "Connectors must be in the STOPPED state before their offsets can be modified. {name} is {target:?}"
            )));
        }
        if subscription.is_some() {
            return self.alter_sink_offsets(name, changes).await;
        }
        let records = changes
            .iter()
            .map(|(p, o)| self.offsets.record(name, p, o.as_ref()))
            .collect();
        let producer = crate::kafka::producer::TaskProducer::create(
            self.config.kafka_client_props("producer."),
            None,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| HerderError::Internal(e.to_string()))?;
        producer
            .send(records)
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
        producer
            .commit()
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
        tracing::info!(connector = %name, partitions = changes.len(), "source offsets altered");
        Ok(())
    }
}

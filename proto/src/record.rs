//! The records connectors exchange with the engine: [`SourceRecord`]s a source task
//! produces, [`SinkRecord`]s a sink task receives.

use std::sync::Arc;

use crate::data::{Schema, Value};
use crate::offsets::{SourceOffset, SourcePartition};

/// A record header. Values are bytes; the header converter (string by default) gives
/// them meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's key.
    pub key: String,
    /// Its value; `None` is a null header.
    pub value: Option<Vec<u8>>,
}

impl Header {
    /// A header with a UTF-8 value.
    pub fn text(key: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            key: key.into(),
            value: Some(value.into().into_bytes()),
        }
    }
}

/// A Kafka topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// A record read from an outside system, on its way to Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    /// Where it was read from.
    pub source_partition: SourcePartition,
    /// The position after it; committed with the record, in one transaction.
    pub source_offset: SourceOffset,
    /// The destination topic.
    pub topic: String,
    /// A fixed Kafka partition, or `None` to let the router choose (by key hash).
    pub partition: Option<i32>,
    /// The key's schema, if the key has one.
    pub key_schema: Option<Arc<Schema>>,
    /// The key; [`Value::Null`] for none.
    pub key: Value,
    /// The value's schema, if any.
    pub value_schema: Option<Arc<Schema>>,
    /// The value; [`Value::Null`] is a tombstone.
    pub value: Value,
    /// Milliseconds since the epoch, or `None` for the producer's clock.
    pub timestamp: Option<i64>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

impl SourceRecord {
    /// A record with no key, schema, timestamp or headers.
    pub fn new(
        source_partition: SourcePartition,
        source_offset: SourceOffset,
        topic: impl Into<String>,
        value: Value,
    ) -> Self {
        SourceRecord {
            source_partition,
            source_offset,
            topic: topic.into(),
            partition: None,
            key_schema: None,
            key: Value::Null,
            value_schema: None,
            value,
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// A record that writes nothing and only moves its partition's offset: committed like
    /// any record's (in exactly-once mode, in a transaction of its own if nothing else is
    /// pending). For a source that moved past data it does not emit, so its position (a
    /// replication slot's, say) may advance without a record on any topic.
    pub fn offset_only(source_partition: SourcePartition, source_offset: SourceOffset) -> Self {
        SourceRecord::new(source_partition, source_offset, String::new(), Value::Null)
    }

    /// Whether this is an [`SourceRecord::offset_only`] record (it has no topic).
    pub fn is_offset_only(&self) -> bool {
        self.topic.is_empty()
    }
}

/// How a consumed record's timestamp was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// None recorded.
    NoTimestamp,
    /// Set by the producer.
    CreateTime,
    /// Set by the broker on append.
    LogAppendTime,
}

/// A record consumed from Kafka, on its way to an outside system.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRecord {
    /// The topic (possibly renamed by a transform).
    pub topic: String,
    /// The Kafka partition.
    pub partition: i32,
    /// The Kafka offset: with topic and partition, a unique id for idempotent writes.
    pub offset: i64,
    /// The key's schema, if any.
    pub key_schema: Option<Arc<Schema>>,
    /// The key.
    pub key: Value,
    /// The value's schema, if any.
    pub value_schema: Option<Arc<Schema>>,
    /// The value; [`Value::Null`] is a tombstone.
    pub value: Value,
    /// Milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// What the timestamp means.
    pub timestamp_type: TimestampType,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

impl SinkRecord {
    /// The record's topic partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

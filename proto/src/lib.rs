//! `sluice-proto` is the contract between Sluice's engine and its connectors, in the
//! place Kafka Connect's `connect-api` holds: the record model ([`SourceRecord`],
//! [`SinkRecord`], Kafka Connect's [`data`] model of schemas and values), source
//! partitions and offsets with their persisted form in the offsets topic, the
//! [`Connector`], [`SourceTask`] and [`SinkTask`] traits, and config definitions used both
//! to validate configs before anything starts and to answer the REST validate endpoint.
//!
//! It depends on neither actix nor rdkafka, so a connector never depends on the runtime.

pub mod config;
pub mod connector;
pub mod data;
pub mod error;
pub mod offsets;
pub mod record;

pub use config::{
    ConfigDef, ConfigKey, ConfigType, ConfigValue, Importance, ParsedConfig, Password, Validator,
};
pub use connector::{
    BoxFuture, Connector, ExactlyOnceSupport, Props, Signal, SinkConnector, SinkTask,
    SourceConnector, SourceTask, SourceTaskContext,
};
pub use data::{Schema, SchemaType, Value};
pub use error::{ConnectorError, ErrorKind};
pub use offsets::{OffsetKey, SourceOffset, SourcePartition};
pub use record::{Header, SinkRecord, SourceRecord, TimestampType, TopicPartition};

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::SourceRecord>();
        assert_send_sync::<crate::SinkRecord>();
        assert_send_sync::<crate::ConfigDef>();
        assert_send_sync::<crate::ConnectorError>();
        assert_send_sync::<crate::OffsetKey>();
    }
}

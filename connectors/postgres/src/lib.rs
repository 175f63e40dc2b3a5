//! PostgreSQL change data capture, in the making (not registered as a connector yet):
//! Debezium's PostgresConnector's keys ([`config`]), the pgoutput decoder ([`pgoutput`]),
//! the replication session ([`replication`]: slot, stream from a stored position,
//! confirmation of durable positions only) and Debezium's mapping of column types to Kafka
//! Connect schemas and values ([`types`]). The source task, the snapshot and Debezium's
//! envelope build on these.

pub mod config;
pub mod envelope;
pub mod pgoutput;
pub mod preflight;
pub mod replication;
pub mod source;
pub mod types;

pub use source::{PostgresSource, PostgresSourceTask, ALIASES};

//! PostgreSQL change data capture as Debezium's PostgresConnector (registered in the engine):
//! Debezium's PostgresConnector's keys ([`config`]), the pgoutput decoder ([`pgoutput`]),
//! the replication session ([`replication`]: slot, stream from a stored position,
//! confirmation of durable positions only) and Debezium's mapping of column types to Kafka
//! Connect schemas and values ([`types`]), Debezium's change event ([`envelope`]), the
//! initial snapshot ([`snapshot`]), incremental snapshots ([`incremental`]), Debezium's
//! transaction metadata ([`txmeta`]), the checks and look-ups before reading
//! ([`preflight`], [`setup`]) and the source task ([`source`], its running state in
//! [`running`]).

pub mod config;
pub mod envelope;
pub mod incremental;
pub mod java;
pub mod pgoutput;
pub mod preflight;
pub mod replication;
pub mod running;
pub mod setup;
pub mod snapshot;
pub mod source;
pub mod textforms;
pub mod txmeta;
pub mod types;

pub use source::{PostgresSource, PostgresSourceTask, ALIASES};

/// A failure of PostgreSQL that a retry may get past (the task restarts with backoff),
/// naming what was being done.
pub(crate) fn retriable(what: &str, e: impl std::error::Error) -> sluice_proto::ConnectorError {
    // tokio-postgres says only "db error" until its source (the server's message) is added.
    let mut text = format!("{what}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    sluice_proto::ConnectorError::retriable(text)
}

/// Microseconds since 1970.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

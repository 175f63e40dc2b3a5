//! Kafka plumbing shared by the runtime. librdkafka's calls block their thread, so every
//! one of them runs on tokio's blocking pool under an outer timeout: an unreachable broker
//! never stalls an actor or the REST server.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::util::Timeout;

/// A Kafka client problem, naming what was asked of whom.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused the client config (message redacted of secrets).
    #[error("invalid Kafka client config: {0}")]
    Config(String),
    /// The cluster did not answer in time.
    #[error("no answer from Kafka at {bootstrap} within {timeout:?} (is the broker up?)")]
    Unreachable {
        /// The bootstrap servers tried.
        bootstrap: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The blocking task died (a panic inside librdkafka's wrapper).
    #[error("the Kafka call's thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Builds a librdkafka config from string properties.
pub fn client_config(props: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in props {
        config.set(k, v);
    }
    config
}

/// The cluster id, as Kafka Connect reports it in `GET /` (`kafka_cluster_id`).
pub async fn fetch_cluster_id(
    props: BTreeMap<String, String>,
    timeout: Duration,
) -> Result<String, KafkaError> {
    let bootstrap = props.get("bootstrap.servers").cloned().unwrap_or_default();
    let lookup = tokio::task::spawn_blocking(move || -> Result<Option<String>, KafkaError> {
        let producer: BaseProducer = client_config(&props).create().map_err(|e| {
            KafkaError::Config(sluice_proto::config::redact(&e.to_string(), &props))
        })?;
        Ok(producer.client().fetch_cluster_id(Timeout::After(timeout)))
    });
    // The outer timeout guards against librdkafka overrunning its own.
    match tokio::time::timeout(timeout + Duration::from_secs(5), lookup).await {
        Ok(joined) => joined??.ok_or(KafkaError::Unreachable { bootstrap, timeout }),
        Err(_) => Err(KafkaError::Unreachable { bootstrap, timeout }),
    }
}

//! Kafka plumbing shared by the runtime. librdkafka's calls block their thread, so every
//! one of them runs on tokio's blocking pool under an outer timeout: an unreachable broker
//! never stalls an actor or the REST server.

pub mod commit;
pub mod partitioner;
pub mod producer;
pub mod router;

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
}

/// A blocking call that did not come back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Blocked {
    /// It ran past its bound (it may still finish on its thread; nothing waits for it).
    #[error("did not finish within {0:?}")]
    TimedOut(Duration),
    /// Its thread panicked or was cancelled.
    #[error("its thread failed: {0}")]
    Failed(String),
}

/// How much longer than its own timeout a librdkafka call is given before it is abandoned:
/// librdkafka overruns its timeouts in some states (an unreachable group coordinator).
pub const OVERRUN_GRACE: Duration = Duration::from_secs(5);

/// Runs a blocking librdkafka call on tokio's blocking pool and waits at most `timeout` plus
/// [`OVERRUN_GRACE`]: the one way every such call is made, so none can stall an actor, a
/// task loop or the REST server.
pub async fn blocking<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Blocked> {
    let handle = tokio::task::spawn_blocking(f);
    match tokio::time::timeout(timeout + OVERRUN_GRACE, handle).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(join)) => Err(Blocked::Failed(join.to_string())),
        Err(_) => Err(Blocked::TimedOut(timeout + OVERRUN_GRACE)),
    }
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
    let lookup = blocking(timeout, move || -> Result<Option<String>, KafkaError> {
        let producer: BaseProducer = client_config(&props).create().map_err(|e| {
            KafkaError::Config(sluice_proto::config::redact(&e.to_string(), &props))
        })?;
        Ok(producer.client().fetch_cluster_id(Timeout::After(timeout)))
    });
    match lookup.await {
        Ok(found) => found?.ok_or(KafkaError::Unreachable { bootstrap, timeout }),
        Err(_) => Err(KafkaError::Unreachable { bootstrap, timeout }),
    }
}

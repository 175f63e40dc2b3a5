//! Kafka plumbing shared by the runtime. librdkafka's calls block their thread, so every
//! one of them runs on tokio's blocking pool under an outer timeout: an unreachable broker
//! never stalls an actor or the REST server.

pub mod commit;
pub mod partitioner;
pub mod producer;
pub mod router;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

/// A Kafka client problem, naming what was asked of whom.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused the client config (message redacted of secrets).
    #[error("invalid Kafka client config: {0}")]
    Config(String),
    /// The cluster did not answer in time.
    #[error("no answer from Kafka at {bootstrap} within {timeout:?} (is the broker up?){}", last.as_deref().map(|l| format!("; last error: {l}")).unwrap_or_default())]
    Unreachable {
        /// The bootstrap servers tried.
        bootstrap: String,
        /// How long we waited.
        timeout: Duration,
        /// The last error librdkafka reported meanwhile, if any.
        last: Option<String>,
    },
    /// The broker answered but refused this client: its TLS handshake or SASL login.
    #[error("Kafka at {bootstrap} refused this client (check security.protocol, ssl.* and sasl.*): {reason}")]
    Refused {
        /// The bootstrap servers tried.
        bootstrap: String,
        /// librdkafka's words.
        reason: String,
    },
}

/// A client context that keeps librdkafka's last error, so that a lookup that times out
/// can say why, and one refused by the broker's TLS or SASL can stop at once.
#[derive(Default)]
struct Watched {
    last: std::sync::Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl ClientContext for Watched {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let (Some(code), Ok(mut last)) = (error.rdkafka_error_code(), self.last.lock()) {
            *last = Some((code, reason.to_owned()));
        }
    }
}

impl rdkafka::producer::ProducerContext for Watched {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl Watched {
    fn last(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
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

/// The cluster id, as Kafka Connect reports it in `GET /` (`kafka_cluster_id`). Asked in
/// one-second rounds: a broker that refuses the client's TLS or SASL ends the wait at once.
pub async fn fetch_cluster_id(
    props: BTreeMap<String, String>,
    timeout: Duration,
) -> Result<String, KafkaError> {
    let bootstrap = props.get("bootstrap.servers").cloned().unwrap_or_default();
    let refused_or_last = {
        let bootstrap = bootstrap.clone();
        move |watched: &Watched| match watched.last() {
            Some((RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL, reason)) => {
                Err(KafkaError::Refused {
                    bootstrap: bootstrap.clone(),
                    reason,
                })
            }
            last => Ok(last.map(|(_, reason)| reason)),
        }
    };
    let lookup = blocking(
        timeout,
        move || -> Result<Result<String, Option<String>>, KafkaError> {
            let producer: BaseProducer<Watched> = client_config(&props)
                .create_with_context(Watched::default())
                .map_err(|e| {
                    KafkaError::Config(sluice_proto::config::redact(&e.to_string(), &props))
                })?;
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let round = deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .min(Duration::from_secs(1));
                if let Some(id) = producer.client().fetch_cluster_id(Timeout::After(round)) {
                    return Ok(Ok(id));
                }
                // Errors reach the context only when the client's queue is served.
                producer.poll(Duration::ZERO);
                let last = refused_or_last(producer.context())?;
                if std::time::Instant::now() >= deadline {
                    return Ok(Err(last));
                }
            }
        },
    );
    match lookup.await {
        Ok(Ok(Ok(id))) => Ok(id),
        Ok(Ok(Err(last))) => Err(KafkaError::Unreachable {
            bootstrap,
            timeout,
            last,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(KafkaError::Unreachable {
            bootstrap,
            timeout,
            last: None,
        }),
    }
}

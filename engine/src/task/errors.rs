//! Error handling with Kafka Connect's keys (`errors.tolerance`, `errors.retry.timeout`,
//! `errors.retry.delay.max.ms`, `errors.log.enable`, `errors.log.include.messages`,
//! `errors.deadletterqueue.*`), going further than Kafka Connect: the dead-letter queue
//! also serves source connectors, and a bad record never disappears silently. With
//! tolerance `all`, a record that fails a stage goes to the dead-letter queue (in the same
//! transaction as the batch, so exactly-once holds for it too) with headers naming the
//! stage, the error and where the record came from; with `none`, the task fails with the
//! record's coordinates and commits nothing past it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_proto::{ConfigDef, ConfigKey, ConfigType, Importance, ParsedConfig, Validator};

use crate::task::actor::Labels;

/// Sets `sluice_task_last_error_timestamp_seconds` of a task to now.
pub(crate) fn note_error_time(labels: &[(&'static str, String)]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("sluice_task_last_error_timestamp_seconds", labels).set(now);
}

/// Counts a record that failed `stage` and is tolerated (`errors.tolerance=all`): an
/// error, a skipped record, and the time of the task's last error.
pub(crate) fn count_tolerated(labels: &Labels, stage: &str) {
    metrics::counter!("sluice_task_record_errors_total", "connector" => labels.connector.clone(), "task" => labels.task.clone(), "stage" => stage.to_owned()).increment(1);
    metrics::counter!("sluice_task_records_skipped_total", &labels.pairs()).increment(1);
    note_error_time(&labels.pairs());
}

/// Header names, Kafka Connect's where it has them.
pub mod headers {
    /// The stage that failed (`TRANSFORMATION`, `VALUE_CONVERTER`, ...).
    pub const STAGE: &str = "__connect.errors.stage";
    /// The failing class (transform alias or converter).
    pub const CLASS: &str = "__connect.errors.class.name";
    /// The error's kind.
    pub const EXCEPTION_CLASS: &str = "__connect.errors.exception.class.name";
    /// The error's message.
    pub const EXCEPTION_MESSAGE: &str = "__connect.errors.exception.message";
    /// Connector name.
    pub const CONNECTOR: &str = "__connect.errors.connector.name";
    /// Task number.
    pub const TASK: &str = "__connect.errors.task.id";
    /// The record's destination topic (sources) or origin topic (sinks).
    pub const TOPIC: &str = "__connect.errors.topic";
    /// The consumed record's partition (sinks).
    pub const PARTITION: &str = "__connect.errors.partition";
    /// The consumed record's offset (sinks).
    pub const OFFSET: &str = "__connect.errors.offset";
    /// Sluice: the source partition, as JSON.
    pub const SOURCE_PARTITION: &str = "__connect.errors.source.partition";
    /// Sluice: the source offset, as JSON.
    pub const SOURCE_OFFSET: &str = "__connect.errors.source.offset";
}

/// The error-handling keys every connector accepts.
pub fn config_def() -> ConfigDef {
    let key = |name, ty| {
        ConfigKey::new(name, ty)
            .importance(Importance::Medium)
            .group("Error Handling")
    };
    ConfigDef::new()
        .define(
            key("errors.tolerance", ConfigType::String)
                .default_value("none")
                .validator(Validator::OneOf(&["none", "all"]))
                .doc("none: a bad record fails the task; all: it is skipped (and sent to the dead-letter queue if one is set)."),
        )
        .define(
            key("errors.retry.timeout", ConfigType::Long)
                .default_value("0")
                .validator(Validator::at_least(-1.0))
                .doc("How long retriable failures are retried, in ms; -1 for ever, 0 not at all."),
        )
        .define(
            key("errors.retry.delay.max.ms", ConfigType::Long)
                .default_value(RETRY_DELAY_MAX_DEFAULT_MS)
                .validator(Validator::at_least(1.0))
                .doc("Ceiling of the backoff between retries of a failed put or poll (Sluice's default is 5000, Kafka Connect's 60000)."),
        )
        .define(key("errors.log.enable", ConfigType::Boolean).default_value("false").doc("Log every tolerated error."))
        .define(
            key("errors.log.include.messages", ConfigType::Boolean)
                .default_value("false")
                .doc("Include the record in that log line."),
        )
        .define(
            key("errors.deadletterqueue.topic.name", ConfigType::String)
                .default_value("")
                .doc("Topic for records that failed; empty for none."),
        )
        .define(
            key("errors.deadletterqueue.topic.replication.factor", ConfigType::Short)
                .default_value("3")
                .doc("Replication factor of the dead-letter queue topic when Sluice creates it."),
        )
        .define(
            key("errors.deadletterqueue.context.headers.enable", ConfigType::Boolean)
                .default_value("false")
                .doc("Accepted for compatibility; Sluice always writes the context headers."),
        )
}

/// Sluice's default for `errors.retry.delay.max.ms` (Kafka Connect's is 60 s). A sink
/// retries a failed put for as long as the failure lasts, so the ceiling is also how long
/// a task may sit idle after what it writes to is back: with 60 s the backoff had reached
/// 38 s during an OpenSearch outage and recovery came 29 s late. Connectors back off on
/// their own too (Elasticsearch: under 3.2 s a wait).
const RETRY_DELAY_MAX_DEFAULT_MS: &str = "5000";
const RETRY_DELAY_MAX_DEFAULT: Duration = Duration::from_secs(5);

/// A connector's error policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorPolicy {
    /// `errors.tolerance=all`.
    pub tolerate_all: bool,
    /// `errors.retry.timeout`; `None` is for ever.
    pub retry_timeout: Option<Duration>,
    /// `errors.retry.delay.max.ms`.
    pub retry_delay_max: Duration,
    /// `errors.log.enable`.
    pub log: bool,
    /// `errors.log.include.messages`.
    pub log_messages: bool,
    /// `errors.deadletterqueue.topic.name`, if set.
    pub dlq_topic: Option<String>,
    /// `errors.deadletterqueue.topic.replication.factor`.
    pub dlq_replication: i16,
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        ErrorPolicy {
            tolerate_all: false,
            retry_timeout: Some(Duration::ZERO),
            retry_delay_max: RETRY_DELAY_MAX_DEFAULT,
            log: false,
            log_messages: false,
            dlq_topic: None,
            dlq_replication: 3,
        }
    }
}

impl ErrorPolicy {
    /// Reads the policy from a parsed connector config (defined with [`config_def`]).
    pub fn from_config(parsed: &ParsedConfig) -> Self {
        let ms = |key: &str, default: i64| parsed.long(key).unwrap_or(default);
        let retry = ms("errors.retry.timeout", 0);
        ErrorPolicy {
            tolerate_all: parsed.string("errors.tolerance") == Some("all"),
            retry_timeout: u64::try_from(retry).ok().map(Duration::from_millis),
            retry_delay_max: u64::try_from(ms("errors.retry.delay.max.ms", 5_000))
                .map_or(RETRY_DELAY_MAX_DEFAULT, Duration::from_millis),
            log: parsed.boolean("errors.log.enable").unwrap_or(false),
            log_messages: parsed
                .boolean("errors.log.include.messages")
                .unwrap_or(false),
            dlq_topic: parsed
                .string("errors.deadletterqueue.topic.name")
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            dlq_replication: i16::try_from(ms(
                "errors.deadletterqueue.topic.replication.factor",
                3,
            ))
            .unwrap_or(3),
        }
    }

    /// The wait before retry number `attempt` (1-based): 300 ms doubling, capped.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        Duration::from_millis(300)
            .saturating_mul(2_u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.retry_delay_max)
    }

    /// Whether another retry fits in the timeout, `elapsed` into retrying.
    pub fn may_retry(&self, elapsed: Duration) -> bool {
        self.retry_timeout.is_none_or(|t| elapsed < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn policy(pairs: &[(&str, &str)]) -> ErrorPolicy {
        let props: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        ErrorPolicy::from_config(&config_def().parse(&props).unwrap())
    }

    #[test]
    fn defaults_are_the_config_defs() {
        assert_eq!(policy(&[]), ErrorPolicy::default());
    }

    /// An outage of what a sink writes to is retried for ever by default; the wait between
    /// puts must stay short, or recovery lags the outage's end by up to the wait (29 s was
    /// seen with a 60 s cap).
    #[test]
    fn the_default_retry_backoff_is_capped_low() {
        let cap = Duration::from_secs(5);
        for p in [ErrorPolicy::default(), policy(&[])] {
            let waits: Vec<Duration> = (1..=100).map(|a| p.retry_delay(a)).collect();
            assert!(waits.iter().all(|w| *w <= cap), "{waits:?}");
            assert_eq!(waits[99], cap, "doubles up to the cap");
        }
    }

    #[test]
    fn keys_are_read_and_validated() {
        let p = policy(&[
            ("errors.tolerance", "all"),
            ("errors.retry.timeout", "-1"),
            ("errors.retry.delay.max.ms", "1000"),
            ("errors.deadletterqueue.topic.name", "dlq"),
            ("errors.log.enable", "true"),
        ]);
        assert!(p.tolerate_all && p.log);
        assert_eq!(p.retry_timeout, None);
        assert!(p.may_retry(Duration::from_secs(1_000_000)));
        assert_eq!(p.dlq_topic.as_deref(), Some("dlq"));
        assert_eq!(
            (1..=4)
                .map(|a| p.retry_delay(a).as_millis())
                .collect::<Vec<_>>(),
            [300, 600, 1000, 1000]
        );
        let e = config_def()
            .parse(&BTreeMap::from([(
                "errors.tolerance".to_owned(),
                "some".to_owned(),
            )]))
            .unwrap_err();
        assert_eq!(e.0[0].key, "errors.tolerance");
    }
}

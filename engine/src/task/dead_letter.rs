//! The dead-letter queue's records, for every path that tolerates a bad record: a source
//! record a converter or transform refused, a record the broker refused, a sink record
//! that failed conversion, a transform or the connector's put. One builder, so every dead
//! letter carries the same Kafka Connect error-context headers, and one place that counts
//! and logs a tolerated record.

use super::actor::Labels;
use super::errors::{headers as h, ErrorPolicy};
use crate::kafka::producer::OutRecord;

/// A record header as the producer writes it.
type Header = (String, Option<Vec<u8>>);

/// What failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure<'a> {
    /// Kafka Connect's stage name (`VALUE_CONVERTER`, `TRANSFORMATION`, `KAFKA_PRODUCE`, ...).
    pub(crate) stage: &'a str,
    /// The error's kind (`__connect.errors.exception.class.name`).
    pub(crate) kind: &'a str,
    /// The transform or converter that failed (`__connect.errors.class.name`), if named.
    pub(crate) failing: Option<String>,
    /// The error's message.
    pub(crate) message: String,
}

/// Where the bad record came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// A consumed record (sinks).
    Consumed {
        topic: &'a str,
        partition: i32,
        offset: i64,
    },
    /// A source record bound for `topic`, with its source partition and offset as JSON
    /// when known.
    Source {
        topic: &'a str,
        partition: Option<&'a str>,
        offset: Option<&'a str>,
    },
}

/// A dead letter's content, before it is routed (sources) or written (sinks).
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    /// The dead-letter queue topic.
    pub(crate) topic: String,
    /// Key bytes.
    pub(crate) key: Option<Vec<u8>>,
    /// Value bytes.
    pub(crate) value: Option<Vec<u8>>,
    /// Milliseconds since the epoch.
    pub(crate) timestamp: Option<i64>,
    /// The record's own headers, then the error context.
    pub(crate) headers: Vec<Header>,
}

impl DeadLetter {
    /// The record to produce (partition 0 of the dead-letter queue topic).
    pub(crate) fn into_record(self) -> OutRecord {
        OutRecord {
            topic: self.topic,
            partition: 0,
            key: self.key,
            value: self.value,
            timestamp: self.timestamp,
            headers: self.headers,
        }
    }
}

/// Counts a tolerated bad record (`errors.tolerance=all`) and logs it when
/// `errors.log.enable` asks, with the record when `errors.log.include.messages` does.
pub(crate) fn tolerated(
    policy: &ErrorPolicy,
    labels: &Labels,
    stage: &str,
    error: &dyn std::fmt::Display,
    record: &dyn std::fmt::Debug,
) {
    super::errors::count_tolerated(labels, stage);
    if policy.log {
        let (connector, task) = (&labels.connector, &labels.task);
        if policy.log_messages {
            tracing::warn!(%connector, %task, stage, error = %error, ?record, "bad record tolerated");
        } else {
            tracing::warn!(%connector, %task, stage, error = %error, "bad record tolerated");
        }
    }
}

/// The dead letter of a bad record (`None` when no dead-letter queue is set): its key,
/// value, timestamp and headers, with Kafka Connect's error-context headers added.
pub(crate) fn build(
    policy: &ErrorPolicy,
    labels: &Labels,
    failure: Failure<'_>,
    origin: Origin<'_>,
    (key, value, timestamp): (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>),
    mut headers: Vec<Header>,
) -> Option<DeadLetter> {
    let topic = policy.dlq_topic.clone()?;
    let text = |k: &str, v: String| (k.to_owned(), Some(v.into_bytes()));
    headers.push(text(h::STAGE, failure.stage.to_owned()));
    if let Some(failing) = failure.failing {
        headers.push(text(h::CLASS, failing));
    }
    headers.extend([
        text(h::EXCEPTION_CLASS, failure.kind.to_owned()),
        text(h::EXCEPTION_MESSAGE, failure.message),
        text(h::CONNECTOR, labels.connector.clone()),
        text(h::TASK, labels.task.clone()),
    ]);
    match origin {
        Origin::Consumed {
            topic,
            partition,
            offset,
        } => headers.extend([
            text(h::TOPIC, topic.to_owned()),
            text(h::PARTITION, partition.to_string()),
            text(h::OFFSET, offset.to_string()),
        ]),
        Origin::Source {
            topic,
            partition,
            offset,
        } => {
            headers.push(text(h::TOPIC, topic.to_owned()));
            if let Some(p) = partition {
                headers.push(text(h::SOURCE_PARTITION, p.to_owned()));
            }
            if let Some(o) = offset {
                headers.push(text(h::SOURCE_OFFSET, o.to_owned()));
            }
        }
    }
    metrics::counter!("sluice_dlq_records_total", &labels.pairs()).increment(1);
    Some(DeadLetter {
        topic,
        key,
        value,
        timestamp,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels {
            connector: "c".into(),
            task: "3".into(),
        }
    }

    fn header<'a>(letter: &'a DeadLetter, key: &str) -> Option<&'a str> {
        letter
            .headers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    #[test]
    fn a_dead_letter_names_stage_error_connector_task_and_origin() {
        let policy = ErrorPolicy {
            dlq_topic: Some("dlq".into()),
            ..ErrorPolicy::default()
        };
        let failure = Failure {
            stage: "VALUE_CONVERTER",
            kind: "ConvertError",
            failing: None,
            message: "bad byte 0x7f at 3".into(),
        };
        let origin = Origin::Consumed {
            topic: "in",
            partition: 2,
            offset: 41,
        };
        let own = vec![("trace".to_owned(), Some(b"t1".to_vec()))];
        let letter = build(
            &policy,
            &labels(),
            failure,
            origin,
            (None, Some(b"x".to_vec()), Some(7)),
            own,
        );
        let Some(letter) = letter else {
            panic!("no dead letter with a DLQ topic set");
        };
        assert_eq!(letter.topic, "dlq");
        assert_eq!(letter.value.as_deref(), Some(&b"x"[..]));
        assert_eq!(header(&letter, "trace"), Some("t1"));
        assert_eq!(header(&letter, h::STAGE), Some("VALUE_CONVERTER"));
        assert_eq!(
            header(&letter, h::EXCEPTION_MESSAGE),
            Some("bad byte 0x7f at 3")
        );
        assert_eq!(header(&letter, h::CONNECTOR), Some("c"));
        assert_eq!(header(&letter, h::TASK), Some("3"));
        assert_eq!(header(&letter, h::PARTITION), Some("2"));
        assert_eq!(header(&letter, h::OFFSET), Some("41"));
        assert_eq!(header(&letter, h::CLASS), None);
    }

    #[test]
    fn no_topic_no_dead_letter() {
        let failure = Failure {
            stage: "KAFKA_PRODUCE",
            kind: "RecordRefused",
            failing: None,
            message: String::new(),
        };
        let origin = Origin::Source {
            topic: "out",
            partition: Some("{}"),
            offset: None,
        };
        let letter = build(
            &ErrorPolicy::default(),
            &labels(),
            failure,
            origin,
            (None, None, None),
            Vec::new(),
        );
        assert!(letter.is_none());
    }
}

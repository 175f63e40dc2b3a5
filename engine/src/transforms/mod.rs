//! Single message transforms with Kafka Connect's names, config keys and semantics:
//! `transforms=a,b`, `transforms.a.type=org.apache.kafka.connect.transforms.InsertField$Value`,
//! `transforms.a.<setting>=...`, and predicates (`predicates=p`, `predicates.p.type=...`,
//! `transforms.a.predicate=p`, `transforms.a.negate=true`). The same chain runs on source
//! records (before conversion) and on sink records (after conversion).
//!
//! Implemented: InsertField, ReplaceField, MaskField, ValueToKey, ExtractField, HoistField,
//! Cast, Flatten, HeaderFrom, TimestampConverter, TimestampRouter, SetSchemaMetadata,
//! RegexRouter, Filter, InsertHeader, DropHeaders; predicates TopicNameMatches,
//! HasHeaderKey, RecordIsTombstone. `$Key` / `$Value` variants where Kafka Connect has them.
//! Debezium's `io.debezium.transforms.ExtractNewRecordState` too.

mod debezium;
mod fields;
mod headers;
mod reshape;
mod routing;
mod time;

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_proto::{Header, Schema, Value};

/// What a transform sees and returns: the parts of a record transforms may change.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Topic.
    pub topic: String,
    /// Kafka partition, if fixed.
    pub partition: Option<i32>,
    /// Kafka offset (sink records only).
    pub offset: Option<i64>,
    /// Key schema.
    pub key_schema: Option<Arc<Schema>>,
    /// Key.
    pub key: Value,
    /// Value schema.
    pub value_schema: Option<Arc<Schema>>,
    /// Value.
    pub value: Value,
    /// Timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: Vec<Header>,
}

/// A transform or predicate that cannot be configured, or a record it cannot handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// Bad configuration, naming the key.
    #[error("{key}: {message}")]
    Config {
        /// The full key, e.g. `transforms.addHost.static.field`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The record does not fit the transform (names the transform and the field).
    #[error("transform {transform}: {message}")]
    Record {
        /// The transform's alias.
        transform: String,
        /// What is wrong with the record.
        message: String,
    },
}

/// Which part of the record a `$Key`/`$Value` transform works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `$Key`.
    Key,
    /// `$Value`.
    Value,
}

impl Side {
    pub(crate) fn get(self, r: &Envelope) -> (Option<&Arc<Schema>>, &Value) {
        match self {
            Side::Key => (r.key_schema.as_ref(), &r.key),
            Side::Value => (r.value_schema.as_ref(), &r.value),
        }
    }

    pub(crate) fn set(self, r: &mut Envelope, schema: Option<Arc<Schema>>, value: Value) {
        match self {
            Side::Key => {
                r.key_schema = schema;
                r.key = value;
            }
            Side::Value => {
                r.value_schema = schema;
                r.value = value;
            }
        }
    }
}

/// One transform's settings (the keys after `transforms.<alias>.`).
#[derive(Debug, Clone)]
pub(crate) struct Settings<'a> {
    pub(crate) prefix: String,
    pub(crate) values: &'a BTreeMap<String, String>,
}

impl Settings<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(&format!("{}{key}", self.prefix))
            .map(String::as_str)
    }

    pub(crate) fn error(&self, key: &str, message: impl Into<String>) -> TransformError {
        TransformError::Config {
            key: format!("{}{key}", self.prefix),
            message: message.into(),
        }
    }

    pub(crate) fn required(&self, key: &str) -> Result<&str, TransformError> {
        self.get(key)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| self.error(key, "is required"))
    }

    /// A comma-separated list, trimmed, empty entries dropped.
    pub(crate) fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// A configured transform.
pub trait Transform: Send + Sync + std::fmt::Debug {
    /// Transforms a record; `None` drops it (Filter).
    fn apply(&self, record: Envelope) -> Result<Option<Envelope>, TransformError>;
}

/// A configured predicate.
pub trait Predicate: Send + Sync + std::fmt::Debug {
    /// Whether the record matches.
    fn test(&self, record: &Envelope) -> bool;
}

#[derive(Debug)]
struct Step {
    alias: String,
    transform: Box<dyn Transform>,
    predicate: Option<(Arc<dyn Predicate>, bool)>,
}

/// The transforms of a connector, in order.
#[derive(Debug, Default)]
pub struct TransformChain {
    steps: Vec<Step>,
}

fn split_class(class: &str) -> (&str, Option<Side>) {
    let short = class.rsplit('.').next().unwrap_or(class);
    match short.split_once('$') {
        Some((name, "Key")) => (name, Some(Side::Key)),
        Some((name, "Value")) => (name, Some(Side::Value)),
        Some((name, _)) => (name, None),
        None => (short, None),
    }
}

fn build_transform(
    alias: &str,
    settings: &Settings<'_>,
) -> Result<Box<dyn Transform>, TransformError> {
    let class = settings.required("type")?;
    let (name, side) = split_class(class);
    let needs_side = |side: Option<Side>| {
        side.ok_or_else(|| {
            settings.error("type", format!("{class} needs a $Key or $Value variant"))
        })
    };
    let alias = alias.to_owned();
    Ok(match name {
        "InsertField" => Box::new(fields::InsertField::new(alias, needs_side(side)?, settings)?),
        "ReplaceField" => Box::new(fields::ReplaceField::new(alias, needs_side(side)?, settings)?),
        "MaskField" => Box::new(fields::MaskField::new(alias, needs_side(side)?, settings)?),
        "ExtractField" => Box::new(fields::ExtractField::new(alias, needs_side(side)?, settings)?),
        "HoistField" => Box::new(fields::HoistField::new(alias, needs_side(side)?, settings)?),
        "SetSchemaMetadata" => Box::new(fields::SetSchemaMetadata::new(needs_side(side)?, settings)?),
        "ValueToKey" => Box::new(fields::ValueToKey::new(alias, settings)?),
        "RegexRouter" => Box::new(routing::RegexRouter::new(settings)?),
        "Filter" => Box::new(routing::Filter),
        "Cast" => Box::new(reshape::Cast::new(alias, needs_side(side)?, settings)?),
        "Flatten" => Box::new(reshape::Flatten::new(needs_side(side)?, settings)?),
        "HeaderFrom" => Box::new(reshape::HeaderFrom::new(alias, needs_side(side)?, settings)?),
        "TimestampConverter" => Box::new(time::TimestampConverter::new(alias, needs_side(side)?, settings)?),
        "TimestampRouter" => Box::new(time::TimestampRouter::new(alias, settings)?),
        "InsertHeader" => Box::new(headers::InsertHeader::new(settings)?),
        "DropHeaders" => Box::new(headers::DropHeaders::new(settings)?),
        "ExtractNewRecordState" => Box::new(debezium::ExtractNewRecordState::new(alias, settings)?),
        _ => {
            return Err(settings.error(
                "type",
                format!("unknown transform {class} (supported: InsertField, ReplaceField, MaskField, ExtractField, HoistField, SetSchemaMetadata, ValueToKey, Cast, Flatten, HeaderFrom, TimestampConverter, TimestampRouter, RegexRouter, Filter, InsertHeader, DropHeaders)"),
            ))
        }
    })
}

fn build_predicate(settings: &Settings<'_>) -> Result<Arc<dyn Predicate>, TransformError> {
    let class = settings.required("type")?;
    Ok(match split_class(class).0 {
        "TopicNameMatches" => Arc::new(routing::TopicNameMatches::new(settings)?),
        "HasHeaderKey" => Arc::new(headers::HasHeaderKey::new(settings)?),
        "RecordIsTombstone" => Arc::new(routing::RecordIsTombstone),
        _ => {
            return Err(settings.error(
                "type",
                format!("unknown predicate {class} (supported: TopicNameMatches, HasHeaderKey, RecordIsTombstone)"),
            ))
        }
    })
}

impl TransformChain {
    /// Builds the chain from a connector config; every error names the full key.
    pub fn from_config(config: &BTreeMap<String, String>) -> Result<Self, TransformError> {
        let list = |key: &str| -> Vec<String> {
            config
                .get(key)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut predicates = BTreeMap::new();
        for name in list("predicates") {
            let settings = Settings {
                prefix: format!("predicates.{name}."),
                values: config,
            };
            predicates.insert(name, build_predicate(&settings)?);
        }
        let mut steps = Vec::new();
        for alias in list("transforms") {
            let settings = Settings {
                prefix: format!("transforms.{alias}."),
                values: config,
            };
            let transform = build_transform(&alias, &settings)?;
            let predicate = match settings.get("predicate") {
                None | Some("") => None,
                Some(p) => {
                    let predicate = predicates.get(p).cloned().ok_or_else(|| {
                        settings.error("predicate", format!("{p:?} is not listed in predicates"))
                    })?;
                    let negate = match settings.get("negate").map(str::trim) {
                        None | Some("false") => false,
                        Some("true") => true,
                        Some(other) => {
                            return Err(settings
                                .error("negate", format!("expected true or false, got {other:?}")))
                        }
                    };
                    Some((predicate, negate))
                }
            };
            steps.push(Step {
                alias,
                transform,
                predicate,
            });
        }
        Ok(TransformChain { steps })
    }

    /// Whether the chain does nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every step in order; `None` once a step drops the record.
    pub fn apply(&self, mut record: Envelope) -> Result<Option<Envelope>, TransformError> {
        for step in &self.steps {
            if let Some((predicate, negate)) = &step.predicate {
                if predicate.test(&record) == *negate {
                    continue;
                }
            }
            match step.transform.apply(record) {
                Ok(Some(next)) => record = next,
                Ok(None) => return Ok(None),
                Err(TransformError::Record { message, .. }) => {
                    return Err(TransformError::Record {
                        transform: step.alias.clone(),
                        message,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(record))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    pub(crate) fn record(value: Value) -> Envelope {
        Envelope {
            topic: "orders".into(),
            partition: Some(2),
            offset: Some(41),
            key_schema: None,
            key: Value::Null,
            value_schema: None,
            value,
            timestamp: Some(1_478_654_589_000),
            headers: Vec::new(),
        }
    }

    pub(crate) fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::String((*k).into()), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn a_chain_applies_in_order_and_predicates_gate_steps() {
        let chain = TransformChain::from_config(&config(&[
            ("transforms", "route, dropTombstones, tag"),
            (
                "transforms.route.type",
                "org.apache.kafka.connect.transforms.RegexRouter",
            ),
            ("transforms.route.regex", "orders"),
            ("transforms.route.replacement", "orders-v2"),
            (
                "transforms.dropTombstones.type",
                "org.apache.kafka.connect.transforms.Filter",
            ),
            ("transforms.dropTombstones.predicate", "isTombstone"),
            (
                "transforms.tag.type",
                "org.apache.kafka.connect.transforms.InsertHeader",
            ),
            ("transforms.tag.header", "routed"),
            ("transforms.tag.value.literal", "yes"),
            ("transforms.tag.predicate", "isTombstone"),
            ("transforms.tag.negate", "true"),
            ("predicates", "isTombstone"),
            (
                "predicates.isTombstone.type",
                "org.apache.kafka.connect.transforms.predicates.RecordIsTombstone",
            ),
        ]))
        .unwrap();
        let out = chain
            .apply(record(map(&[("id", Value::Int64(1))])))
            .unwrap()
            .unwrap();
        assert_eq!(out.topic, "orders-v2");
        assert_eq!(out.headers, vec![Header::text("routed", "yes")]);
        assert_eq!(
            chain.apply(record(Value::Null)).unwrap(),
            None,
            "tombstones are dropped"
        );
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let e = TransformChain::from_config(&config(&[("transforms", "x")])).unwrap_err();
        assert_eq!(e.to_string(), "transforms.x.type: is required");
        let e = TransformChain::from_config(&config(&[
            ("transforms", "x"),
            (
                "transforms.x.type",
                "org.apache.kafka.connect.transforms.InsertField",
            ),
        ]))
        .unwrap_err();
        assert!(
            e.to_string().contains("needs a $Key or $Value variant"),
            "{e}"
        );
        let e = TransformChain::from_config(&config(&[
            ("transforms", "x"),
            ("transforms.x.type", "com.example.Nope"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("transforms.x.type: unknown transform"),
            "{e}"
        );
        let e = TransformChain::from_config(&config(&[
            ("transforms", "x"),
            ("transforms.x.type", "Filter"),
            ("transforms.x.predicate", "p"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("transforms.x.predicate"), "{e}");
    }
}

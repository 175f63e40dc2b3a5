//! Converters between Kafka Connect's data model and Kafka bytes, with Kafka Connect's class
//! names and behaviour, settable at worker and connector level (`key.converter`,
//! `value.converter`, plus `*.converter.<setting>` keys).

mod json;
mod json_write;
mod simple;

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_proto::{Schema, Value};

pub use json::JsonConverter;
pub use simple::{ByteArrayConverter, StringConverter};

/// Kafka Connect's class name of the JSON converter.
pub const JSON: &str = "org.apache.kafka.connect.json.JsonConverter";
/// Kafka Connect's class name of the string converter.
pub const STRING: &str = "org.apache.kafka.connect.storage.StringConverter";
/// Kafka Connect's class name of the byte-array converter.
pub const BYTE_ARRAY: &str = "org.apache.kafka.connect.converters.ByteArrayConverter";

/// A record part that cannot be converted, saying where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{converter} could not convert {what}: {message}")]
pub struct ConvertError {
    /// The converter's short name.
    pub converter: &'static str,
    /// What was converted, e.g. `value of topic syslog-tcp`.
    pub what: String,
    /// What is wrong, naming the field or byte at fault.
    pub message: String,
}

/// Whether a converter handles keys or values (they may be configured differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Record keys.
    Key,
    /// Record values.
    Value,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Key => "key",
            Part::Value => "value",
        }
    }
}

/// Turns data-model values into bytes and back.
pub trait Converter: Send + Sync + std::fmt::Debug {
    /// Serialises `value` (with its schema, if any) for `topic`; `None` is a Kafka null.
    fn to_kafka(
        &self,
        topic: &str,
        schema: Option<&Arc<Schema>>,
        value: &Value,
    ) -> Result<Option<Vec<u8>>, ConvertError>;

    /// Deserialises bytes read from `topic`.
    fn to_connect(
        &self,
        topic: &str,
        bytes: Option<&[u8]>,
    ) -> Result<(Option<Arc<Schema>>, Value), ConvertError>;
}

/// Builds the converter named `class` for `part`, with its `settings` (the keys after
/// `key.converter.` / `value.converter.`). Short names (`JsonConverter`) work too.
pub fn build(
    class: &str,
    part: Part,
    settings: &BTreeMap<String, String>,
) -> Result<Arc<dyn Converter>, String> {
    let short = class.rsplit('.').next().unwrap_or(class);
    match short {
        "JsonConverter" => {
            let schemas = match settings
                .get("schemas.enable")
                .map(|s| s.trim().to_ascii_lowercase())
            {
                None => true,
                Some(s) if s == "true" => true,
                Some(s) if s == "false" => false,
                Some(other) => {
                    return Err(format!(
                        "schemas.enable: expected true or false, got {other:?}"
                    ))
                }
            };
            Ok(Arc::new(JsonConverter::new(part, schemas)))
        }
        "StringConverter" => Ok(Arc::new(StringConverter::new(part))),
        "ByteArrayConverter" => Ok(Arc::new(ByteArrayConverter::new(part))),
        _ => Err(format!(
            "unknown converter class {class:?} (known: {JSON}, {STRING}, {BYTE_ARRAY})"
        )),
    }
}

//! The two converters without structure: `StringConverter` (UTF-8 text) and
//! `ByteArrayConverter` (bytes as they are).

use std::sync::Arc;

use sluice_proto::{Schema, SchemaType, Value};

use super::{ConvertError, Converter, Part};

/// `org.apache.kafka.connect.storage.StringConverter`: writes any primitive as its text,
/// reads UTF-8 into an optional string.
#[derive(Debug, Clone)]
pub struct StringConverter {
    part: Part,
}

impl StringConverter {
    /// A converter for `part`.
    pub fn new(part: Part) -> Self {
        StringConverter { part }
    }

    fn error(&self, topic: &str, message: String) -> ConvertError {
        ConvertError {
            converter: "StringConverter",
            what: format!("{} of topic {topic}", self.part.name()),
            message,
        }
    }
}

impl Converter for StringConverter {
    fn to_kafka(
        &self,
        topic: &str,
        _schema: Option<&Arc<Schema>>,
        value: &Value,
    ) -> Result<Option<Vec<u8>>, ConvertError> {
        let text = match value {
            Value::Null => return Ok(None),
            Value::String(s) => s.clone(),
            Value::Boolean(v) => v.to_string(),
            Value::Int8(v) => v.to_string(),
            Value::Int16(v) => v.to_string(),
            Value::Int32(v) => v.to_string(),
            Value::Int64(v) => v.to_string(),
            Value::Float32(v) => v.to_string(),
            Value::Float64(v) => v.to_string(),
            Value::Bytes(b) => String::from_utf8(b.clone()).map_err(|e| {
                self.error(
                    topic,
                    format!(
                        "bytes are not UTF-8 at byte {}",
                        e.utf8_error().valid_up_to()
                    ),
                )
            })?,
            Value::Array(_) | Value::Map(_) | Value::Struct(_) => {
                return Err(self.error(
                    topic,
                    format!(
                        "a {} has no plain-text form; use the JsonConverter",
                        value.schema_type().map_or("null", SchemaType::name)
                    ),
                ))
            }
        };
        Ok(Some(text.into_bytes()))
    }

    fn to_connect(
        &self,
        topic: &str,
        bytes: Option<&[u8]>,
    ) -> Result<(Option<Arc<Schema>>, Value), ConvertError> {
        let schema = Some(Arc::new(Schema::of(SchemaType::String).optional()));
        let Some(bytes) = bytes else {
            return Ok((schema, Value::Null));
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| self.error(topic, format!("not UTF-8 at byte {}", e.valid_up_to())))?;
        Ok((schema, Value::String(text.to_owned())))
    }
}

/// `org.apache.kafka.connect.converters.ByteArrayConverter`: bytes in, bytes out.
#[derive(Debug, Clone)]
pub struct ByteArrayConverter {
    part: Part,
}

impl ByteArrayConverter {
    /// A converter for `part`.
    pub fn new(part: Part) -> Self {
        ByteArrayConverter { part }
    }
}

impl Converter for ByteArrayConverter {
    fn to_kafka(
        &self,
        topic: &str,
        _schema: Option<&Arc<Schema>>,
        value: &Value,
    ) -> Result<Option<Vec<u8>>, ConvertError> {
        match value {
            Value::Null => Ok(None),
            Value::Bytes(b) => Ok(Some(b.clone())),
            other => Err(ConvertError {
                converter: "ByteArrayConverter",
                what: format!("{} of topic {topic}", self.part.name()),
                message: format!(
                    "expects bytes, got a {}",
                    other.schema_type().map_or("null", SchemaType::name)
                ),
            }),
        }
    }

    fn to_connect(
        &self,
        _topic: &str,
        bytes: Option<&[u8]>,
    ) -> Result<(Option<Arc<Schema>>, Value), ConvertError> {
        let schema = Some(Arc::new(Schema::of(SchemaType::Bytes).optional()));
        Ok((
            schema,
            bytes.map_or(Value::Null, |b| Value::Bytes(b.to_vec())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_primitives_print() {
        let c = StringConverter::new(Part::Key);
        assert_eq!(
            c.to_kafka("t", None, &Value::String("héllo".into()))
                .unwrap(),
            Some("héllo".as_bytes().to_vec())
        );
        assert_eq!(
            c.to_kafka("t", None, &Value::Int64(42)).unwrap(),
            Some(b"42".to_vec())
        );
        assert_eq!(c.to_kafka("t", None, &Value::Null).unwrap(), None);
        let (_, v) = c.to_connect("t", Some("héllo".as_bytes())).unwrap();
        assert_eq!(v, Value::String("héllo".into()));
    }

    #[test]
    fn invalid_utf8_names_the_byte() {
        let c = StringConverter::new(Part::Value);
        let e = c.to_connect("logs", Some(b"ok\xffno")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "StringConverter could not convert value of topic logs: not UTF-8 at byte 2"
        );
        assert!(c.to_kafka("t", None, &Value::Struct(vec![])).is_err());
    }

    #[test]
    fn byte_arrays_pass_through() {
        let c = ByteArrayConverter::new(Part::Value);
        assert_eq!(
            c.to_kafka("t", None, &Value::Bytes(vec![1, 2])).unwrap(),
            Some(vec![1, 2])
        );
        assert_eq!(
            c.to_connect("t", Some(&[3])).unwrap().1,
            Value::Bytes(vec![3])
        );
        let e = c
            .to_kafka("t", None, &Value::String("x".into()))
            .unwrap_err();
        assert!(e.message.contains("expects bytes, got a string"), "{e}");
    }
}

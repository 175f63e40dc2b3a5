//! `org.apache.kafka.connect.json.JsonConverter`: with `schemas.enable=true` (the default)
//! every message is an envelope `{"schema": {...}, "payload": ...}` in Kafka Connect's own
//! schema notation; with `false` only the payload is written and types are inferred on read.

use std::sync::Arc;

use serde_json::Value as Json;
use sluice_proto::{Schema, SchemaType, Value};

use super::json_write::{write_value, SchemaCache};
use super::{ConvertError, Converter, Part};

/// The JSON converter.
#[derive(Debug, Clone)]
pub struct JsonConverter {
    part: Part,
    schemas_enable: bool,
    /// A connector's records nearly always share a few schemas, and rendering one was most
    /// of an envelope's cost (18 us of 21 for a syslog message): each is rendered once.
    schema_cache: Arc<SchemaCache>,
}

impl JsonConverter {
    /// A converter for `part`, with or without the schema envelope.
    pub fn new(part: Part, schemas_enable: bool) -> Self {
        JsonConverter {
            part,
            schemas_enable,
            schema_cache: Arc::default(),
        }
    }

    /// `{"schema":...,"payload":...}`, as Kafka Connect writes it, the schema part reused.
    fn envelope(&self, schema: Option<&Arc<Schema>>, value: &Value) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"schema\":");
        match schema {
            Some(schema) => out.extend_from_slice(&self.schema_cache.rendered(schema)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"payload\":");
        write_value(&mut out, value, schema.map(|s| &**s));
        out.push(b'}');
        out
    }

    fn error(&self, topic: &str, message: impl Into<String>) -> ConvertError {
        ConvertError {
            converter: "JsonConverter",
            what: format!("{} of topic {topic}", self.part.name()),
            message: message.into(),
        }
    }
}

fn schema_from_json(json: &Json, path: &str) -> Result<Schema, String> {
    let obj = json
        .as_object()
        .ok_or_else(|| format!("{path}: a schema must be a JSON object"))?;
    let ty = match obj.get("type").and_then(Json::as_str) {
        Some("int8") => SchemaType::Int8,
        Some("int16") => SchemaType::Int16,
        Some("int32") => SchemaType::Int32,
        Some("int64") => SchemaType::Int64,
        Some("float") => SchemaType::Float32,
        Some("double") => SchemaType::Float64,
        Some("boolean") => SchemaType::Boolean,
        Some("string") => SchemaType::String,
        Some("bytes") => SchemaType::Bytes,
        Some("array") => SchemaType::Array,
        Some("map") => SchemaType::Map,
        Some("struct") => SchemaType::Struct,
        Some(other) => return Err(format!("{path}.type: unknown schema type {other:?}")),
        None => return Err(format!("{path}.type: missing")),
    };
    let mut schema = Schema::of(ty);
    schema.optional = obj.get("optional").and_then(Json::as_bool).unwrap_or(false);
    schema.name = obj.get("name").and_then(Json::as_str).map(str::to_owned);
    schema.version = obj
        .get("version")
        .and_then(Json::as_i64)
        .and_then(|v| i32::try_from(v).ok());
    schema.doc = obj.get("doc").and_then(Json::as_str).map(str::to_owned);
    if let Some(Json::Object(params)) = obj.get("parameters") {
        schema.parameters = params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect();
    }
    match ty {
        SchemaType::Struct => {
            let fields = obj
                .get("fields")
                .and_then(Json::as_array)
                .ok_or_else(|| format!("{path}.fields: a struct schema needs a fields array"))?;
            for (i, f) in fields.iter().enumerate() {
                let name = f
                    .get("field")
                    .and_then(Json::as_str)
                    .ok_or_else(|| format!("{path}.fields[{i}].field: missing field name"))?;
                let field_schema = schema_from_json(f, &format!("{path}.fields[{i}]"))?;
                schema = schema.field(name, field_schema);
            }
        }
        SchemaType::Array => {
            let items = obj
                .get("items")
                .ok_or_else(|| format!("{path}.items: an array schema needs items"))?;
            schema.value_schema =
                Some(Arc::new(schema_from_json(items, &format!("{path}.items"))?));
        }
        SchemaType::Map => {
            let keys = obj
                .get("keys")
                .ok_or_else(|| format!("{path}.keys: a map schema needs keys"))?;
            let values = obj
                .get("values")
                .ok_or_else(|| format!("{path}.values: a map schema needs values"))?;
            schema.key_schema = Some(Arc::new(schema_from_json(keys, &format!("{path}.keys"))?));
            schema.value_schema = Some(Arc::new(schema_from_json(
                values,
                &format!("{path}.values"),
            )?));
        }
        _ => {}
    }
    if let Some(default) = obj.get("default") {
        schema.default = Some(value_from_json(
            default,
            Some(&schema),
            &format!("{path}.default"),
        )?);
    }
    Ok(schema)
}

fn value_from_json(json: &Json, schema: Option<&Schema>, path: &str) -> Result<Value, String> {
    let Some(schema) = schema else {
        return Ok(infer(json));
    };
    if json.is_null() {
        if let Some(default) = &schema.default {
            return Ok(default.clone());
        }
        if schema.optional {
            return Ok(Value::Null);
        }
        return Err(format!("{path}: null in a required {} field", schema.ty));
    }
    let mismatch = || format!("{path}: expected {}, found {}", schema.ty, json_kind(json));
    let int = |min: i64, max: i64| -> Result<i64, String> {
        json.as_i64()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(mismatch)
    };
    Ok(match schema.ty {
        SchemaType::Int8 => {
            Value::Int8(i8::try_from(int(i8::MIN.into(), i8::MAX.into())?).map_err(|_| mismatch())?)
        }
        SchemaType::Int16 => Value::Int16(
            i16::try_from(int(i16::MIN.into(), i16::MAX.into())?).map_err(|_| mismatch())?,
        ),
        SchemaType::Int32 => Value::Int32(
            i32::try_from(int(i32::MIN.into(), i32::MAX.into())?).map_err(|_| mismatch())?,
        ),
        SchemaType::Int64 => Value::Int64(json.as_i64().ok_or_else(mismatch)?),
        // f64 -> f32 narrowing is what Kafka Connect's FLOAT32 does as well.
        #[allow(clippy::cast_possible_truncation)]
        SchemaType::Float32 => Value::Float32(json.as_f64().ok_or_else(mismatch)? as f32),
        SchemaType::Float64 => Value::Float64(json.as_f64().ok_or_else(mismatch)?),
        SchemaType::Boolean => Value::Boolean(json.as_bool().ok_or_else(mismatch)?),
        SchemaType::String => Value::String(json.as_str().ok_or_else(mismatch)?.to_owned()),
        SchemaType::Bytes => {
            use base64::Engine as _;
            let text = json.as_str().ok_or_else(mismatch)?;
            Value::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| format!("{path}: invalid base64 ({e})"))?,
            )
        }
        SchemaType::Array => {
            let items = json.as_array().ok_or_else(mismatch)?;
            let item_schema = schema.value_schema.as_deref();
            Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| value_from_json(v, item_schema, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        SchemaType::Map => {
            let ks = schema.key_schema.as_deref();
            let vs = schema.value_schema.as_deref();
            match json {
                Json::Object(m) => Value::Map(
                    m.iter()
                        .map(|(k, v)| {
                            Ok((
                                Value::String(k.clone()),
                                value_from_json(v, vs, &format!("{path}.{k}"))?,
                            ))
                        })
                        .collect::<Result<_, String>>()?,
                ),
                Json::Array(pairs) => Value::Map(
                    pairs
                        .iter()
                        .enumerate()
                        .map(|(i, pair)| match pair.as_array().map(Vec::as_slice) {
                            Some([k, v]) => Ok((
                                value_from_json(k, ks, &format!("{path}[{i}][0]"))?,
                                value_from_json(v, vs, &format!("{path}[{i}][1]"))?,
                            )),
                            _ => Err(format!("{path}[{i}]: expected a [key, value] pair")),
                        })
                        .collect::<Result<_, String>>()?,
                ),
                _ => return Err(mismatch()),
            }
        }
        SchemaType::Struct => {
            let m = json.as_object().ok_or_else(mismatch)?;
            Value::Struct(
                schema
                    .fields
                    .iter()
                    .map(|f| {
                        let v = m.get(&f.name).unwrap_or(&Json::Null);
                        Ok((
                            f.name.clone(),
                            value_from_json(v, Some(&f.schema), &format!("{path}.{}", f.name))?,
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
    })
}

fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Schemaless reads: Kafka Connect's inference (integers as INT64, decimals as FLOAT64,
/// objects as string-keyed maps).
fn infer(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => n.as_i64().map_or_else(
            || Value::Float64(n.as_f64().unwrap_or(f64::NAN)),
            Value::Int64,
        ),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(infer).collect()),
        Json::Object(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (Value::String(k.clone()), infer(v)))
                .collect(),
        ),
    }
}

impl Converter for JsonConverter {
    fn to_kafka(
        &self,
        topic: &str,
        schema: Option<&Arc<Schema>>,
        value: &Value,
    ) -> Result<Option<Vec<u8>>, ConvertError> {
        if let Some(schema) = schema {
            value
                .validate(schema)
                .map_err(|e| self.error(topic, e.to_string()))?;
        }
        // A null without a schema is a Kafka null (a tombstone), as in Kafka Connect.
        if matches!(value, Value::Null) && (schema.is_none() || !self.schemas_enable) {
            return Ok(None);
        }
        Ok(Some(if self.schemas_enable {
            self.envelope(schema, value)
        } else {
            let mut out = Vec::with_capacity(256);
            write_value(&mut out, value, schema.map(|s| &**s));
            out
        }))
    }

    fn to_connect(
        &self,
        topic: &str,
        bytes: Option<&[u8]>,
    ) -> Result<(Option<Arc<Schema>>, Value), ConvertError> {
        let Some(bytes) = bytes else {
            return Ok((None, Value::Null));
        };
        let json: Json = serde_json::from_slice(bytes).map_err(|e| {
            self.error(
                topic,
                format!(
                    "not valid JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if !self.schemas_enable {
            return Ok((None, infer(&json)));
        }
        let Json::Object(mut envelope) = json else {
            return Err(self.error(
                topic,
                "with schemas.enable=true the message must be an object with \"schema\" and \"payload\" fields",
            ));
        };
        if envelope.len() != 2
            || !envelope.contains_key("schema")
            || !envelope.contains_key("payload")
        {
            let keys: Vec<&String> = envelope.keys().collect();
            return Err(self.error(
                topic,
                format!(
                    "with schemas.enable=true the message needs exactly the fields \"schema\" and \"payload\", found {keys:?}; set schemas.enable=false for plain JSON"
                ),
            ));
        }
        let payload = envelope.remove("payload").unwrap_or(Json::Null);
        let schema = match envelope.remove("schema") {
            None | Some(Json::Null) => None,
            Some(s) => Some(Arc::new(
                schema_from_json(&s, "schema").map_err(|e| self.error(topic, e))?,
            )),
        };
        let value = value_from_json(&payload, schema.as_deref(), "payload")
            .map_err(|e| self.error(topic, e))?;
        Ok((schema, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_are_what_kafka_connect_writes_and_follow_schema_changes() {
        let converter = JsonConverter::new(Part::Value, true);
        let a = Arc::new(
            Schema::structure()
                .named("a")
                .field("n", Schema::of(SchemaType::Int32)),
        );
        let b = Arc::new(
            Schema::structure()
                .named("b")
                .field("s", Schema::of(SchemaType::String).optional()),
        );
        // An equal schema in another Arc (a source that builds its schema per record).
        let a2 = Arc::new((*a).clone());
        let va = Value::Struct(vec![("n".into(), Value::Int32(7))]);
        let vb = Value::Struct(vec![("s".into(), Value::String("x\"y".into()))]);
        let wa = r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"n"}],"optional":false,"name":"a"},"payload":{"n":7}}"#;
        let wb = r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":true,"field":"s"}],"optional":false,"name":"b"},"payload":{"s":"x\"y"}}"#;
        for (schema, value, expected) in [
            (&a, &va, wa),
            (&a, &va, wa),
            (&b, &vb, wb),
            (&a2, &va, wa),
            (&b, &vb, wb),
        ] {
            let written = converter
                .to_kafka("t", Some(schema), value)
                .unwrap()
                .unwrap();
            assert_eq!(String::from_utf8(written).unwrap(), expected);
        }
        let untyped = converter
            .to_kafka("t", None, &Value::Int32(3))
            .unwrap()
            .unwrap();
        assert_eq!(untyped, br#"{"schema":null,"payload":3}"#);
    }

    use sluice_proto::data::logical;

    fn syslog_schema() -> Schema {
        Schema::structure()
            .named("io.sluice.syslog.Message")
            .field(
                "date",
                Schema {
                    version: Some(1),
                    ..Schema::of(SchemaType::Int64).named(logical::TIMESTAMP)
                },
            )
            .field("level", Schema::of(SchemaType::Int32).optional())
            .field("message", Schema::of(SchemaType::String))
    }

    fn syslog_value() -> Value {
        Value::Struct(vec![
            ("date".into(), Value::Int64(1_478_654_589_000)),
            ("level".into(), Value::Int32(4)),
            ("message".into(), Value::String("kernel: hi".into())),
        ])
    }

    #[test]
    fn envelope_matches_kafka_connects() {
        let c = JsonConverter::new(Part::Value, true);
        let bytes = c
            .to_kafka(
                "syslog-tcp",
                Some(&Arc::new(syslog_schema())),
                &syslog_value(),
            )
            .unwrap()
            .unwrap();
        let got: Json = serde_json::from_slice(&bytes).unwrap();
        let expected = json!({
            "schema": {
                "type": "struct",
                "fields": [
                    {"type": "int64", "optional": false, "name": "org.apache.kafka.connect.data.Timestamp", "version": 1, "field": "date"},
                    {"type": "int32", "optional": true, "field": "level"},
                    {"type": "string", "optional": false, "field": "message"}
                ],
                "optional": false,
                "name": "io.sluice.syslog.Message"
            },
            "payload": {"date": 1_478_654_589_000_i64, "level": 4, "message": "kernel: hi"}
        });
        assert_eq!(got, expected);

        let (schema, value) = c.to_connect("syslog-tcp", Some(&bytes)).unwrap();
        assert_eq!(schema.as_deref(), Some(&syslog_schema()));
        assert_eq!(value, syslog_value());
    }

    #[test]
    fn schemaless_writes_the_payload_and_infers_on_read() {
        let c = JsonConverter::new(Part::Value, false);
        let bytes = c.to_kafka("t", None, &syslog_value()).unwrap().unwrap();
        assert_eq!(
            serde_json::from_slice::<Json>(&bytes).unwrap(),
            json!({"date": 1_478_654_589_000_i64, "level": 4, "message": "kernel: hi"})
        );
        let (schema, value) = c
            .to_connect("t", Some(br#"{"a": 1, "b": [1.5, "x"], "c": null}"#))
            .unwrap();
        assert!(schema.is_none());
        assert_eq!(
            value,
            Value::Map(vec![
                (Value::String("a".into()), Value::Int64(1)),
                (
                    Value::String("b".into()),
                    Value::Array(vec![Value::Float64(1.5), Value::String("x".into())])
                ),
                (Value::String("c".into()), Value::Null),
            ])
        );
    }

    #[test]
    fn bytes_are_base64_and_nulls_are_tombstones() {
        let c = JsonConverter::new(Part::Value, true);
        let schema = Arc::new(Schema::of(SchemaType::Bytes));
        let bytes = c
            .to_kafka("t", Some(&schema), &Value::Bytes(vec![0, 255, 16]))
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Json>(&bytes).unwrap()["payload"],
            json!("AP8Q")
        );
        assert_eq!(c.to_kafka("t", None, &Value::Null).unwrap(), None);
        assert_eq!(c.to_connect("t", None).unwrap(), (None, Value::Null));
    }

    #[test]
    fn bad_input_names_the_position_or_field() {
        let c = JsonConverter::new(Part::Value, true);
        let e = c.to_connect("t", Some(b"{\"schema\": nul")).unwrap_err();
        assert!(e.to_string().contains("line 1 column"), "{e}");
        assert!(e.to_string().contains("value of topic t"), "{e}");

        let e = c.to_connect("t", Some(br#"{"a": 1}"#)).unwrap_err();
        assert!(e.message.contains("schemas.enable=false"), "{e}");

        let e = c
            .to_connect(
                "t",
                Some(br#"{"schema": {"type": "struct", "fields": [{"type": "int32", "optional": false, "field": "n"}]}, "payload": {"n": "x"}}"#),
            )
            .unwrap_err();
        assert!(
            e.message
                .contains("payload.n: expected int32, found a string"),
            "{e}"
        );

        let e = c
            .to_connect(
                "t",
                Some(br#"{"schema": {"type": "int8"}, "payload": 300}"#),
            )
            .unwrap_err();
        assert!(e.message.contains("payload: expected int8"), "{e}");

        let e = c
            .to_kafka(
                "t",
                Some(&Arc::new(syslog_schema())),
                &Value::Struct(vec![("message".into(), Value::Int32(1))]),
            )
            .unwrap_err();
        assert!(e.message.contains("value.date"), "{e}");
    }

    #[test]
    fn maps_with_non_string_keys_are_pairs() {
        let c = JsonConverter::new(Part::Value, true);
        let schema = Arc::new(Schema::map(
            Schema::of(SchemaType::Int32),
            Schema::of(SchemaType::String),
        ));
        let value = Value::Map(vec![(Value::Int32(1), Value::String("one".into()))]);
        let bytes = c.to_kafka("t", Some(&schema), &value).unwrap().unwrap();
        let json: Json = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["payload"], json!([[1, "one"]]));
        let (_, back) = c.to_connect("t", Some(&bytes)).unwrap();
        assert_eq!(back, value);
    }
}

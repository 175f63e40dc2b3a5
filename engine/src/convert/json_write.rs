//! Writing Kafka Connect's JSON straight into bytes: a record's payload and its schema in
//! Kafka Connect's own order (a schema's keys `type`, then
//! `fields` / `items` / `keys` + `values`, `optional`, `name`, `version`, `doc`,
//! `parameters`, `default`, and a field's name last; a struct's values in their own order,
//! which is their schema's), without building a JSON tree first.
//! This is the hot path of every JSON-converted record: the tree cost an allocation per
//! node and a sorted map per struct.
//!
//! Rendered schemas are cached (a few, keyed by the schema's `Arc`, so records of
//! interleaved tables do not render theirs again and again).

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use serde_json::Number;
use sluice_proto::{Schema, SchemaType, Value};

/// How many rendered schemas a converter keeps (one per table or record type in flight).
const CACHED_SCHEMAS: usize = 32;

/// A schema and its rendering.
type Rendered = (Arc<Schema>, Arc<[u8]>);

/// Rendered schemas, most recently used last.
#[derive(Debug, Default)]
pub(super) struct SchemaCache(Mutex<Vec<Rendered>>);

impl SchemaCache {
    /// `schema` rendered, from the cache when it (or an equal schema) was rendered before.
    pub(super) fn rendered(&self, schema: &Arc<Schema>) -> Arc<[u8]> {
        if let Ok(mut cache) = self.0.lock() {
            // The same `Arc` first (the common case, and cheap), then an equal schema
            // (a source that builds its schema anew per record), which then takes its place.
            let hit = cache
                .iter()
                .position(|(s, _)| Arc::ptr_eq(s, schema))
                .or_else(|| cache.iter().position(|(s, _)| **s == **schema));
            if let Some(at) = hit {
                let (_, json) = cache.remove(at);
                cache.push((Arc::clone(schema), Arc::clone(&json)));
                return json;
            }
        }
        let mut out = Vec::with_capacity(256);
        write_schema(&mut out, schema);
        let json: Arc<[u8]> = out.into();
        if let Ok(mut cache) = self.0.lock() {
            if cache.len() >= CACHED_SCHEMAS {
                cache.remove(0);
            }
            cache.push((Arc::clone(schema), Arc::clone(&json)));
        }
        json
    }
}

/// A JSON string (escaped as serde_json escapes).
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_f64(out: &mut Vec<u8>, v: f64) {
    match Number::from_f64(v) {
        Some(n) => {
            let _ = serde_json::to_writer(&mut *out, &n);
        }
        // NaN and infinities have no JSON form.
        None => out.extend_from_slice(b"null"),
    }
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    use base64::Engine as _;
    out.push(b'"');
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

/// `value` as Kafka Connect's JsonConverter writes it under `schema`.
pub(super) fn write_value(out: &mut Vec<u8>, value: &Value, schema: Option<&Schema>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int8(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Int16(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Int32(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Int64(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Float32(v) => write_f64(out, f64::from(*v)),
        Value::Float64(v) => write_f64(out, *v),
        Value::String(s) => write_str(out, s),
        Value::Bytes(b) => write_base64(out, b),
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.value_schema.as_deref());
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, v, item_schema);
            }
            out.push(b']');
        }
        Value::Map(entries) => {
            let key_schema = schema.and_then(|s| s.key_schema.as_deref());
            let value_schema = schema.and_then(|s| s.value_schema.as_deref());
            // An object when the keys are strings (by the schema when there is one: an
            // empty map of int keys is `[]`, as Kafka Connect writes it and reads it back).
            let string_keys = match key_schema {
                Some(k) => k.ty == SchemaType::String,
                None => entries.iter().all(|(k, _)| matches!(k, Value::String(_))),
            };
            if string_keys {
                out.push(b'{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if let Value::String(k) = k {
                        write_str(out, k);
                    }
                    out.push(b':');
                    write_value(out, v, value_schema);
                }
                out.push(b'}');
            } else {
                // Kafka Connect writes maps with non-string keys as [[key, value], ...].
                out.push(b'[');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'[');
                    write_value(out, k, key_schema);
                    out.push(b',');
                    write_value(out, v, value_schema);
                    out.push(b']');
                }
                out.push(b']');
            }
        }
        Value::Struct(fields) => {
            out.push(b'{');
            for (i, (name, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Values come in schema order: the field at the same place, else by name.
                let field_schema = schema.and_then(|s| {
                    s.fields
                        .get(i)
                        .filter(|f| f.name == *name)
                        .or_else(|| s.field_named(name))
                        .map(|f| f.schema.as_ref())
                });
                write_str(out, name);
                out.push(b':');
                write_value(out, v, field_schema);
            }
            out.push(b'}');
        }
    }
}

/// `schema` in Kafka Connect's JSON notation and key order; `field`: its name in a struct.
fn write_schema_named(out: &mut Vec<u8>, schema: &Schema, field: Option<&str>) {
    out.extend_from_slice(b"{\"type\":");
    write_str(out, schema.ty.name());
    match schema.ty {
        SchemaType::Struct => {
            out.extend_from_slice(b",\"fields\":[");
            for (i, f) in schema.fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_schema_named(out, &f.schema, Some(&f.name));
            }
            out.push(b']');
        }
        SchemaType::Array => {
            if let Some(items) = &schema.value_schema {
                out.extend_from_slice(b",\"items\":");
                write_schema_named(out, items, None);
            }
        }
        SchemaType::Map => {
            if let Some(keys) = &schema.key_schema {
                out.extend_from_slice(b",\"keys\":");
                write_schema_named(out, keys, None);
            }
            if let Some(values) = &schema.value_schema {
                out.extend_from_slice(b",\"values\":");
                write_schema_named(out, values, None);
            }
        }
        _ => {}
    }
    out.extend_from_slice(if schema.optional {
        b",\"optional\":true"
    } else {
        b",\"optional\":false"
    });
    if let Some(name) = &schema.name {
        out.extend_from_slice(b",\"name\":");
        write_str(out, name);
    }
    if let Some(version) = schema.version {
        let _ = write!(out, ",\"version\":{version}");
    }
    if let Some(doc) = &schema.doc {
        out.extend_from_slice(b",\"doc\":");
        write_str(out, doc);
    }
    if !schema.parameters.is_empty() {
        out.extend_from_slice(b",\"parameters\":{");
        for (i, (k, v)) in schema.parameters.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, k);
            out.push(b':');
            write_str(out, v);
        }
        out.push(b'}');
    }
    if let Some(default) = &schema.default {
        out.extend_from_slice(b",\"default\":");
        write_value(out, default, Some(schema));
    }
    if let Some(field) = field {
        out.extend_from_slice(b",\"field\":");
        write_str(out, field);
    }
    out.push(b'}');
}

/// `schema` in Kafka Connect's JSON notation.
pub(super) fn write_schema(out: &mut Vec<u8>, schema: &Schema) {
    write_schema_named(out, schema, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(value: &Value, schema: Option<&Schema>) -> String {
        let mut out = Vec::new();
        write_value(&mut out, value, schema);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn values_are_written_as_kafka_connect_writes_them() {
        let ints = Schema::map(
            Schema::of(SchemaType::Int32),
            Schema::of(SchemaType::String),
        );
        assert_eq!(written(&Value::Map(vec![]), Some(&ints)), "[]");
        let strings = Schema::map(
            Schema::of(SchemaType::String),
            Schema::of(SchemaType::Int32),
        );
        assert_eq!(written(&Value::Map(vec![]), Some(&strings)), "{}");
        assert_eq!(
            written(
                &Value::Map(vec![(Value::String("a\"b".into()), Value::Int32(1))]),
                Some(&strings)
            ),
            r#"{"a\"b":1}"#
        );
        assert_eq!(written(&Value::Float64(f64::NAN), None), "null");
        assert_eq!(written(&Value::Float64(1.5), None), "1.5");
        assert_eq!(written(&Value::Bytes(vec![0, 255, 16]), None), r#""AP8Q""#);
        assert_eq!(
            written(
                &Value::Array(vec![Value::Boolean(true), Value::Null, Value::Int64(-7)]),
                None
            ),
            "[true,null,-7]"
        );
    }
}

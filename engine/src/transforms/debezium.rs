//! Debezium's `io.debezium.transforms.ExtractNewRecordState`: a change event's envelope
//! becomes the row it describes (`after`; for a delete, as
//! `delete.tombstone.handling.mode` says), with envelope and source fields added as
//! `__<name>` fields or headers on request. Records that are not change events
//! (heartbeats, schema changes) pass unchanged, as in Debezium.

use std::sync::Arc;

use sluice_proto::{Header, Schema, SchemaType, Value};

use super::{Envelope, Settings, Transform, TransformError};

/// `delete.tombstone.handling.mode` (Debezium 2.5+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeleteMode {
    /// Delete events and tombstones both removed.
    Drop,
    /// Delete events removed, tombstones kept (the default).
    Tombstone,
    /// Delete events kept as the old row with `__deleted: "true"`; tombstones removed.
    Rewrite,
    /// As `rewrite`, tombstones kept.
    RewriteWithTombstone,
    /// Delete events become tombstones; the original tombstones are removed.
    DeleteToTombstone,
}

/// A field of the envelope to copy into the row or the headers.
#[derive(Debug, Clone)]
struct Added {
    /// `op`, `ts_ms`, ... at the envelope's top, or a source block field.
    path: Vec<String>,
    /// The row field or header name (prefix + dots as underscores).
    name: String,
}

#[derive(Debug)]
pub(super) struct ExtractNewRecordState {
    alias: String,
    mode: DeleteMode,
    fields: Vec<Added>,
    headers: Vec<Added>,
}

/// The envelope's own fields; any other name is looked up in `source`.
const TOP_LEVEL: &[&str] = &["op", "ts_ms", "ts_us", "ts_ns", "before", "after"];

fn added(list: Vec<String>, prefix: &str) -> Vec<Added> {
    list.into_iter()
        .map(|f| {
            let path: Vec<String> = if f.contains('.') {
                f.split('.').map(str::to_owned).collect()
            } else if TOP_LEVEL.contains(&f.as_str()) {
                vec![f.clone()]
            } else {
                vec!["source".to_owned(), f.clone()]
            };
            Added {
                path,
                name: format!("{prefix}{}", f.replace('.', "_")),
            }
        })
        .collect()
}

impl ExtractNewRecordState {
    pub(super) fn new(alias: String, s: &Settings<'_>) -> Result<Self, TransformError> {
        for (legacy, instead) in [
            ("drop.tombstones", "delete.tombstone.handling.mode"),
            ("delete.handling.mode", "delete.tombstone.handling.mode"),
            ("route.by.field", "a RegexRouter"),
            ("drop.fields.header.name", "ReplaceField"),
        ] {
            if s.get(legacy).is_some() {
                return Err(s.error(
                    legacy,
                    format!("not supported by Sluice's ExtractNewRecordState (removed or replaced in Debezium 3; use {instead})"),
                ));
            }
        }
        let mode = match s
            .get("delete.tombstone.handling.mode")
            .unwrap_or("tombstone")
            .trim()
        {
            "drop" => DeleteMode::Drop,
            "tombstone" => DeleteMode::Tombstone,
            "rewrite" => DeleteMode::Rewrite,
            "rewrite-with-tombstone" => DeleteMode::RewriteWithTombstone,
            "delete-to-tombstone" => DeleteMode::DeleteToTombstone,
            other => {
                return Err(s.error(
                    "delete.tombstone.handling.mode",
                    format!("{other:?} is not one of drop, tombstone, rewrite, rewrite-with-tombstone, delete-to-tombstone"),
                ))
            }
        };
        let fields_prefix = s.get("add.fields.prefix").unwrap_or("__").to_owned();
        let headers_prefix = s.get("add.headers.prefix").unwrap_or("__").to_owned();
        Ok(ExtractNewRecordState {
            alias,
            mode,
            fields: added(s.list("add.fields"), &fields_prefix),
            headers: added(s.list("add.headers"), &headers_prefix),
        })
    }

    fn fail(&self, message: impl Into<String>) -> TransformError {
        TransformError::Record {
            transform: self.alias.clone(),
            message: message.into(),
        }
    }
}

/// The value and schema at `path` in the envelope.
fn lookup<'a>(
    value: &'a Value,
    schema: Option<&'a Schema>,
    path: &[String],
) -> (Option<&'a Value>, Option<Arc<Schema>>) {
    let mut v = Some(value);
    let mut s = schema;
    let mut found_schema = None;
    for part in path {
        v = v.and_then(|v| v.get(part));
        let field = s.and_then(|s| s.field_named(part));
        found_schema = field.map(|f| Arc::clone(&f.schema));
        s = field.map(|f| f.schema.as_ref());
    }
    (v, found_schema)
}

/// A value as a header's bytes (strings as they are, numbers in decimal).
fn header_bytes(v: &Value) -> Option<Vec<u8>> {
    Some(
        match v {
            Value::Null => return None,
            Value::String(s) => s.clone(),
            Value::Boolean(b) => b.to_string(),
            Value::Int8(n) => n.to_string(),
            Value::Int16(n) => n.to_string(),
            Value::Int32(n) => n.to_string(),
            Value::Int64(n) => n.to_string(),
            Value::Float32(n) => n.to_string(),
            Value::Float64(n) => n.to_string(),
            Value::Bytes(b) => return Some(b.clone()),
            other => format!("{other:?}"),
        }
        .into_bytes(),
    )
}

impl Transform for ExtractNewRecordState {
    fn apply(&self, mut record: Envelope) -> Result<Option<Envelope>, TransformError> {
        if record.value == Value::Null {
            return Ok(match self.mode {
                DeleteMode::Tombstone | DeleteMode::RewriteWithTombstone => Some(record),
                DeleteMode::Drop | DeleteMode::Rewrite | DeleteMode::DeleteToTombstone => None,
            });
        }
        let Some(Value::String(op)) = record.value.get("op").cloned() else {
            return Ok(Some(record));
        };
        let schema = record.value_schema.clone();
        let envelope = record.value.clone();
        let (side, deleted) = match op.as_str() {
            "c" | "u" | "r" => ("after", false),
            "d" => match self.mode {
                // The tombstone that follows stands for the delete (or is dropped too).
                DeleteMode::Drop | DeleteMode::Tombstone => return Ok(None),
                DeleteMode::DeleteToTombstone => {
                    record.value = Value::Null;
                    record.value_schema = None;
                    return Ok(Some(record));
                }
                DeleteMode::Rewrite | DeleteMode::RewriteWithTombstone => ("before", true),
            },
            // Truncates and messages carry no row: passed as they are.
            _ => return Ok(Some(record)),
        };
        let (row, row_schema) = lookup(&envelope, schema.as_deref(), &[side.to_owned()]);
        let Some(Value::Struct(mut fields)) = row.cloned() else {
            return Err(self.fail(format!(
                "a {op:?} event of topic {} has no {side} row",
                record.topic
            )));
        };
        let mut row_schema = row_schema.map(|s| (*s).clone());
        let rewrite = matches!(
            self.mode,
            DeleteMode::Rewrite | DeleteMode::RewriteWithTombstone
        );
        for add in &self.fields {
            let (v, s) = lookup(&envelope, schema.as_deref(), &add.path);
            fields.push((add.name.clone(), v.cloned().unwrap_or(Value::Null)));
            if let Some(rs) = row_schema.as_mut() {
                let field_schema = s.map_or_else(
                    || Schema::of(SchemaType::String).optional(),
                    |s| (*s).clone().optional(),
                );
                *rs = rs.clone().field(add.name.clone(), field_schema);
            }
        }
        if rewrite {
            fields.push(("__deleted".into(), Value::String(deleted.to_string())));
            if let Some(rs) = row_schema.as_mut() {
                *rs = rs
                    .clone()
                    .field("__deleted", Schema::of(SchemaType::String).optional());
            }
        }
        for add in &self.headers {
            let (v, _) = lookup(&envelope, schema.as_deref(), &add.path);
            record.headers.push(Header {
                key: add.name.clone(),
                value: v.and_then(header_bytes),
            });
        }
        record.value = Value::Struct(fields);
        record.value_schema = row_schema.map(Arc::new);
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("transforms.unwrap.{k}"), (*v).to_owned()))
            .collect()
    }

    fn smt(pairs: &[(&str, &str)]) -> Result<ExtractNewRecordState, TransformError> {
        let values = settings(pairs);
        ExtractNewRecordState::new(
            "unwrap".into(),
            &Settings {
                prefix: "transforms.unwrap.".into(),
                values: &values,
            },
        )
    }

    fn row(id: i32) -> Value {
        Value::Struct(vec![("id".into(), Value::Int32(id))])
    }

    fn event(op: &str, before: Value, after: Value) -> Envelope {
        let row_schema = Schema::structure()
            .optional()
            .field("id", Schema::of(SchemaType::Int32));
        let source_schema = Schema::structure()
            .field("table", Schema::of(SchemaType::String))
            .field("lsn", Schema::of(SchemaType::Int64).optional());
        let schema = Schema::structure()
            .field("before", row_schema.clone())
            .field("after", row_schema)
            .field("source", source_schema)
            .field("op", Schema::of(SchemaType::String));
        Envelope {
            topic: "shop.public.orders".into(),
            partition: None,
            offset: None,
            key_schema: None,
            key: row(1),
            value_schema: Some(Arc::new(schema)),
            value: Value::Struct(vec![
                ("before".into(), before),
                ("after".into(), after),
                (
                    "source".into(),
                    Value::Struct(vec![
                        ("table".into(), Value::String("orders".into())),
                        ("lsn".into(), Value::Int64(99)),
                    ]),
                ),
                ("op".into(), Value::String(op.into())),
            ]),
            timestamp: None,
            headers: Vec::new(),
        }
    }

    fn tombstone() -> Envelope {
        let mut t = event("d", Value::Null, Value::Null);
        t.value = Value::Null;
        t.value_schema = None;
        t
    }

    #[test]
    fn the_row_replaces_the_envelope_with_fields_and_headers_added() -> Result<(), TransformError> {
        let t = smt(&[("add.fields", "op,table,source.lsn"), ("add.headers", "op")])?;
        let out = t.apply(event("u", Value::Null, row(1)))?;
        let out = out.ok_or_else(|| t.fail("dropped"))?;
        assert_eq!(
            out.value,
            Value::Struct(vec![
                ("id".into(), Value::Int32(1)),
                ("__op".into(), Value::String("u".into())),
                ("__table".into(), Value::String("orders".into())),
                ("__source_lsn".into(), Value::Int64(99)),
            ])
        );
        let schema = out
            .value_schema
            .clone()
            .ok_or_else(|| t.fail("no schema"))?;
        assert!(out.value.validate(&schema).is_ok(), "{schema:?}");
        assert_eq!(out.headers, vec![Header::text("__op", "u")]);
        Ok(())
    }

    #[test]
    fn deletes_and_tombstones_follow_the_mode() -> Result<(), TransformError> {
        let delete = || event("d", row(1), Value::Null);
        // Default: the delete event is removed, the tombstone after it stays.
        let t = smt(&[])?;
        assert!(t.apply(delete())?.is_none());
        assert!(t.apply(tombstone())?.is_some());
        // delete-to-tombstone: the delete becomes the tombstone, the original goes.
        let t = smt(&[("delete.tombstone.handling.mode", "delete-to-tombstone")])?;
        assert_eq!(t.apply(delete())?.map(|r| r.value), Some(Value::Null));
        assert!(t.apply(tombstone())?.is_none());
        let t = smt(&[("delete.tombstone.handling.mode", "drop")])?;
        assert!(t.apply(delete())?.is_none() && t.apply(tombstone())?.is_none());
        let t = smt(&[("delete.tombstone.handling.mode", "rewrite")])?;
        let d = t.apply(delete())?.map(|r| r.value);
        assert_eq!(
            d,
            Some(Value::Struct(vec![
                ("id".into(), Value::Int32(1)),
                ("__deleted".into(), Value::String("true".into())),
            ]))
        );
        assert!(t.apply(tombstone())?.is_none());
        let c = t.apply(event("c", Value::Null, row(2)))?.map(|r| r.value);
        assert_eq!(
            c.and_then(|v| v.get("__deleted").cloned()),
            Some(Value::String("false".into()))
        );
        // Not a change event: unchanged.
        let mut beat = event("c", Value::Null, row(1));
        beat.value = Value::Struct(vec![("ts_ms".into(), Value::Int64(1))]);
        assert_eq!(t.apply(beat.clone())?, Some(beat));
        Ok(())
    }

    #[test]
    fn removed_keys_and_unknown_modes_are_refused_by_name() {
        let err = smt(&[("drop.tombstones", "false")])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("transforms.unwrap.drop.tombstones")));
        let err = smt(&[("delete.tombstone.handling.mode", "keep")])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("delete.tombstone.handling.mode")));
    }
}

//! Transforms that work on the fields of a struct (with a schema) or a map (schemaless).

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_proto::data::logical;
use sluice_proto::{Schema, SchemaType, Value};

use super::{Envelope, Settings, Side, Transform, TransformError};

/// The fields of a struct or string-keyed map, and whether a schema goes with them.
fn fields_of(
    alias: &str,
    what: &str,
    schema: Option<&Arc<Schema>>,
    value: &Value,
) -> Result<Vec<(String, Value)>, TransformError> {
    let fail = |found: &str| TransformError::Record {
        transform: alias.to_owned(),
        message: format!("{what} needs a struct (with a schema) or a map (without), found {found}"),
    };
    match (schema, value) {
        (Some(s), Value::Struct(fields)) if s.ty == SchemaType::Struct => Ok(fields.clone()),
        (None, Value::Map(entries)) => entries
            .iter()
            .map(|(k, v)| match k {
                Value::String(k) => Ok((k.clone(), v.clone())),
                _ => Err(fail("a map with non-string keys")),
            })
            .collect(),
        (_, other) => Err(fail(other.schema_type().map_or("null", SchemaType::name))),
    }
}

/// Rebuilds the value: a struct when there is a schema, a map otherwise.
fn rebuild(
    schema: Option<Arc<Schema>>,
    fields: Vec<(String, Value)>,
) -> (Option<Arc<Schema>>, Value) {
    match schema {
        Some(s) => (Some(s), Value::Struct(fields)),
        None => (
            None,
            Value::Map(
                fields
                    .into_iter()
                    .map(|(k, v)| (Value::String(k), v))
                    .collect(),
            ),
        ),
    }
}

/// Kafka Connect marks optional/required with a `?`/`!` suffix on field names.
fn field_name(raw: &str) -> String {
    raw.trim_end_matches(['?', '!']).to_owned()
}

/// `InsertField$Key` / `$Value`: adds the topic, partition, offset, timestamp or a static
/// value as fields.
#[derive(Debug)]
pub(super) struct InsertField {
    alias: String,
    side: Side,
    topic: Option<String>,
    partition: Option<String>,
    offset: Option<String>,
    timestamp: Option<String>,
    static_field: Option<(String, String)>,
}

impl InsertField {
    pub(super) fn new(alias: String, side: Side, s: &Settings<'_>) -> Result<Self, TransformError> {
        let named = |key: &str| s.get(key).filter(|v| !v.is_empty()).map(field_name);
        let static_field = match (named("static.field"), s.get("static.value")) {
            (Some(f), Some(v)) => Some((f, v.to_owned())),
            (Some(_), None) => return Err(s.error("static.value", "is required with static.field")),
            (None, _) => None,
        };
        let t = InsertField {
            alias,
            side,
            topic: named("topic.field"),
            partition: named("partition.field"),
            offset: named("offset.field"),
            timestamp: named("timestamp.field"),
            static_field,
        };
        if t.topic.is_none()
            && t.partition.is_none()
            && t.offset.is_none()
            && t.timestamp.is_none()
            && t.static_field.is_none()
        {
            return Err(s.error("topic.field", "no field to insert: set one of topic.field, partition.field, offset.field, timestamp.field, static.field"));
        }
        Ok(t)
    }

    fn additions(&self, r: &Envelope) -> Vec<(String, Schema, Value)> {
        let mut out = Vec::new();
        if let Some(f) = &self.topic {
            out.push((
                f.clone(),
                Schema::of(SchemaType::String).optional(),
                Value::String(r.topic.clone()),
            ));
        }
        if let Some(f) = &self.partition {
            out.push((
                f.clone(),
                Schema::of(SchemaType::Int32).optional(),
                r.partition.map_or(Value::Null, Value::Int32),
            ));
        }
        if let Some(f) = &self.offset {
            out.push((
                f.clone(),
                Schema::of(SchemaType::Int64).optional(),
                r.offset.map_or(Value::Null, Value::Int64),
            ));
        }
        if let Some(f) = &self.timestamp {
            out.push((
                f.clone(),
                Schema::of(SchemaType::Int64)
                    .named(logical::TIMESTAMP)
                    .optional(),
                r.timestamp.map_or(Value::Null, Value::Int64),
            ));
        }
        if let Some((f, v)) = &self.static_field {
            out.push((
                f.clone(),
                Schema::of(SchemaType::String).optional(),
                Value::String(v.clone()),
            ));
        }
        out
    }
}

impl Transform for InsertField {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let (schema, value) = self.side.get(&r);
        // Tombstones pass untouched, as in Kafka Connect.
        if matches!(value, Value::Null) {
            return Ok(Some(r));
        }
        let mut fields = fields_of(&self.alias, "InsertField", schema, value)?;
        let additions = self.additions(&r);
        let schema = schema.map(|s| {
            let mut s = (**s).clone();
            for (name, field_schema, _) in &additions {
                s = s.field(name.clone(), field_schema.clone());
            }
            Arc::new(s)
        });
        fields.extend(additions.into_iter().map(|(n, _, v)| (n, v)));
        let (schema, value) = rebuild(schema, fields);
        self.side.set(&mut r, schema, value);
        Ok(Some(r))
    }
}

/// `ReplaceField$Key` / `$Value`: keeps (`include`), drops (`exclude`) and renames fields.
#[derive(Debug)]
pub(super) struct ReplaceField {
    alias: String,
    side: Side,
    include: Vec<String>,
    exclude: Vec<String>,
    renames: BTreeMap<String, String>,
}

impl ReplaceField {
    pub(super) fn new(alias: String, side: Side, s: &Settings<'_>) -> Result<Self, TransformError> {
        // `whitelist`/`blacklist` are the pre-2.6 names; both spellings work.
        let mut include = s.list("include");
        include.extend(s.list("whitelist"));
        let mut exclude = s.list("exclude");
        exclude.extend(s.list("blacklist"));
        let renames = s
            .list("renames")
            .into_iter()
            .map(|pair| match pair.split_once(':') {
                Some((from, to)) if !from.is_empty() && !to.is_empty() => {
                    Ok((from.to_owned(), to.to_owned()))
                }
                _ => Err(s.error("renames", format!("{pair:?} is not old:new"))),
            })
            .collect::<Result<_, _>>()?;
        Ok(ReplaceField {
            alias,
            side,
            include,
            exclude,
            renames,
        })
    }

    fn keep(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|i| i == name))
            && !self.exclude.iter().any(|e| e == name)
    }

    fn renamed(&self, name: &str) -> String {
        self.renames
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }
}

impl Transform for ReplaceField {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let (schema, value) = self.side.get(&r);
        if matches!(value, Value::Null) {
            return Ok(Some(r));
        }
        let fields = fields_of(&self.alias, "ReplaceField", schema, value)?;
        let schema = schema.map(|s| {
            let mut out = Schema {
                fields: Vec::new(),
                ..(**s).clone()
            };
            for f in s.fields.iter().filter(|f| self.keep(&f.name)) {
                out = out.field(self.renamed(&f.name), (*f.schema).clone());
            }
            Arc::new(out)
        });
        let fields = fields
            .into_iter()
            .filter(|(n, _)| self.keep(n))
            .map(|(n, v)| (self.renamed(&n), v))
            .collect();
        let (schema, value) = rebuild(schema, fields);
        self.side.set(&mut r, schema, value);
        Ok(Some(r))
    }
}

/// `MaskField$Key` / `$Value`: replaces field values with a type's empty value or a given
/// `replacement`.
#[derive(Debug)]
pub(super) struct MaskField {
    alias: String,
    side: Side,
    fields: Vec<String>,
    replacement: Option<String>,
}

impl MaskField {
    pub(super) fn new(alias: String, side: Side, s: &Settings<'_>) -> Result<Self, TransformError> {
        let fields = s.list("fields");
        if fields.is_empty() {
            return Err(s.error("fields", "is required"));
        }
        Ok(MaskField {
            alias,
            side,
            fields,
            replacement: s.get("replacement").map(str::to_owned),
        })
    }

    fn mask(&self, name: &str, v: &Value) -> Result<Value, TransformError> {
        let bad = |what: &str| TransformError::Record {
            transform: self.alias.clone(),
            message: format!(
                "field {name}: replacement {:?} is not a valid {what}",
                self.replacement.as_deref().unwrap_or_default()
            ),
        };
        let r = self.replacement.as_deref();
        Ok(match v {
            Value::Null => Value::Null,
            Value::String(_) => Value::String(r.unwrap_or_default().to_owned()),
            Value::Boolean(_) => Value::Boolean(
                r.map(|r| r.parse().map_err(|_| bad("boolean")))
                    .transpose()?
                    .unwrap_or(false),
            ),
            Value::Int8(_) => Value::Int8(
                r.map(|r| r.parse().map_err(|_| bad("int8")))
                    .transpose()?
                    .unwrap_or(0),
            ),
            Value::Int16(_) => Value::Int16(
                r.map(|r| r.parse().map_err(|_| bad("int16")))
                    .transpose()?
                    .unwrap_or(0),
            ),
            Value::Int32(_) => Value::Int32(
                r.map(|r| r.parse().map_err(|_| bad("int32")))
                    .transpose()?
                    .unwrap_or(0),
            ),
            Value::Int64(_) => Value::Int64(
                r.map(|r| r.parse().map_err(|_| bad("int64")))
                    .transpose()?
                    .unwrap_or(0),
            ),
            Value::Float32(_) => Value::Float32(
                r.map(|r| r.parse().map_err(|_| bad("float")))
                    .transpose()?
                    .unwrap_or(0.0),
            ),
            Value::Float64(_) => Value::Float64(
                r.map(|r| r.parse().map_err(|_| bad("double")))
                    .transpose()?
                    .unwrap_or(0.0),
            ),
            Value::Bytes(_) => Value::Bytes(Vec::new()),
            Value::Array(_) => Value::Array(Vec::new()),
            Value::Map(_) => Value::Map(Vec::new()),
            Value::Struct(_) => {
                return Err(TransformError::Record {
                    transform: self.alias.clone(),
                    message: format!("field {name}: a struct cannot be masked"),
                })
            }
        })
    }
}

impl Transform for MaskField {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let (schema, value) = self.side.get(&r);
        if matches!(value, Value::Null) {
            return Ok(Some(r));
        }
        let schema = schema.cloned();
        let fields = fields_of(&self.alias, "MaskField", schema.as_ref(), value)?
            .into_iter()
            .map(|(n, v)| {
                if self.fields.contains(&n) {
                    Ok((n.clone(), self.mask(&n, &v)?))
                } else {
                    Ok((n, v))
                }
            })
            .collect::<Result<Vec<_>, TransformError>>()?;
        let (schema, value) = rebuild(schema, fields);
        self.side.set(&mut r, schema, value);
        Ok(Some(r))
    }
}

/// `ExtractField$Key` / `$Value`: replaces the struct or map with one of its fields.
#[derive(Debug)]
pub(super) struct ExtractField {
    alias: String,
    side: Side,
    field: String,
}

impl ExtractField {
    pub(super) fn new(alias: String, side: Side, s: &Settings<'_>) -> Result<Self, TransformError> {
        Ok(ExtractField {
            alias,
            side,
            field: s.required("field")?.to_owned(),
        })
    }
}

impl Transform for ExtractField {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let (schema, value) = self.side.get(&r);
        if matches!(value, Value::Null) {
            return Ok(Some(r));
        }
        let field_schema = match schema {
            Some(s) => Some(
                s.field_named(&self.field)
                    .map(|f| Arc::clone(&f.schema))
                    .ok_or_else(|| TransformError::Record {
                        transform: self.alias.clone(),
                        message: format!("field {} is not in the schema", self.field),
                    })?,
            ),
            None => None,
        };
        let extracted = fields_of(&self.alias, "ExtractField", schema, value)?
            .into_iter()
            .find(|(n, _)| *n == self.field)
            .map_or(Value::Null, |(_, v)| v);
        self.side.set(&mut r, field_schema, extracted);
        Ok(Some(r))
    }
}

/// `HoistField$Key` / `$Value`: wraps the whole key or value in a one-field struct or map.
#[derive(Debug)]
pub(super) struct HoistField {
    side: Side,
    field: String,
}

impl HoistField {
    pub(super) fn new(
        _alias: String,
        side: Side,
        s: &Settings<'_>,
    ) -> Result<Self, TransformError> {
        Ok(HoistField {
            side,
            field: s.required("field")?.to_owned(),
        })
    }
}

impl Transform for HoistField {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let (schema, value) = self.side.get(&r);
        let schema =
            schema.map(|s| Arc::new(Schema::structure().field(self.field.clone(), (**s).clone())));
        let (schema, value) = rebuild(schema, vec![(self.field.clone(), value.clone())]);
        self.side.set(&mut r, schema, value);
        Ok(Some(r))
    }
}

/// `ValueToKey`: the key becomes a struct or map of the given value fields.
#[derive(Debug)]
pub(super) struct ValueToKey {
    alias: String,
    fields: Vec<String>,
}

impl ValueToKey {
    pub(super) fn new(alias: String, s: &Settings<'_>) -> Result<Self, TransformError> {
        let fields = s.list("fields");
        if fields.is_empty() {
            return Err(s.error("fields", "is required"));
        }
        Ok(ValueToKey { alias, fields })
    }
}

impl Transform for ValueToKey {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let all = fields_of(&self.alias, "ValueToKey", r.value_schema.as_ref(), &r.value)?;
        let mut key = Vec::with_capacity(self.fields.len());
        let mut key_schema = Schema::structure();
        for name in &self.fields {
            let v = all
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| TransformError::Record {
                    transform: self.alias.clone(),
                    message: format!("field {name} is not in the value"),
                })?;
            if let Some(s) = &r.value_schema {
                if let Some(f) = s.field_named(name) {
                    key_schema = key_schema.field(name.clone(), (*f.schema).clone());
                }
            }
            key.push((name.clone(), v));
        }
        let schema = r.value_schema.as_ref().map(|_| Arc::new(key_schema));
        let (schema, value) = rebuild(schema, key);
        r.key_schema = schema;
        r.key = value;
        Ok(Some(r))
    }
}

/// `SetSchemaMetadata$Key` / `$Value`: sets the schema's name and/or version.
#[derive(Debug)]
pub(super) struct SetSchemaMetadata {
    side: Side,
    name: Option<String>,
    version: Option<i32>,
}

impl SetSchemaMetadata {
    pub(super) fn new(side: Side, s: &Settings<'_>) -> Result<Self, TransformError> {
        let version = match s.get("schema.version") {
            None | Some("") => None,
            Some(v) => Some(
                v.trim()
                    .parse()
                    .map_err(|_| s.error("schema.version", format!("{v:?} is not an integer")))?,
            ),
        };
        let name = s
            .get("schema.name")
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        if name.is_none() && version.is_none() {
            return Err(s.error("schema.name", "set schema.name and/or schema.version"));
        }
        Ok(SetSchemaMetadata {
            side,
            name,
            version,
        })
    }
}

impl Transform for SetSchemaMetadata {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let (schema, value) = self.side.get(&r);
        let Some(schema) = schema else {
            // Kafka Connect requires a schema here; a schemaless record passes unchanged.
            return Ok(Some(r));
        };
        let mut s = (**schema).clone();
        if let Some(n) = &self.name {
            s.name = Some(n.clone());
        }
        if let Some(v) = self.version {
            s.version = Some(v);
        }
        let value = value.clone();
        self.side.set(&mut r, Some(Arc::new(s)), value);
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{config, map, record};
    use super::super::TransformChain;
    use super::*;

    fn one(pairs: &[(&str, &str)]) -> TransformChain {
        let mut all = vec![("transforms", "t")];
        all.extend_from_slice(pairs);
        TransformChain::from_config(&config(&all)).unwrap()
    }

    fn structured() -> Envelope {
        let schema = Schema::structure()
            .named("Order")
            .field("id", Schema::of(SchemaType::Int64))
            .field("email", Schema::of(SchemaType::String))
            .field("total", Schema::of(SchemaType::Float64));
        let mut r = record(Value::Struct(vec![
            ("id".into(), Value::Int64(7)),
            ("email".into(), Value::String("a@b.c".into())),
            ("total".into(), Value::Float64(9.5)),
        ]));
        r.value_schema = Some(Arc::new(schema));
        r
    }

    #[test]
    fn insert_field_adds_metadata_with_and_without_schema() {
        let t = one(&[
            (
                "transforms.t.type",
                "org.apache.kafka.connect.transforms.InsertField$Value",
            ),
            ("transforms.t.topic.field", "topic"),
            ("transforms.t.partition.field", "partition"),
            ("transforms.t.offset.field", "offset!"),
            ("transforms.t.static.field", "source"),
            ("transforms.t.static.value", "sluice"),
        ]);
        let out = t
            .apply(record(map(&[("a", Value::Int64(1))])))
            .unwrap()
            .unwrap();
        assert_eq!(
            out.value,
            map(&[
                ("a", Value::Int64(1)),
                ("topic", Value::String("orders".into())),
                ("partition", Value::Int32(2)),
                ("offset", Value::Int64(41)),
                ("source", Value::String("sluice".into())),
            ])
        );
        let out = t.apply(structured()).unwrap().unwrap();
        out.value
            .validate(out.value_schema.as_deref().unwrap())
            .unwrap();
        assert_eq!(
            out.value.get("topic"),
            Some(&Value::String("orders".into()))
        );
        assert_eq!(
            t.apply(record(Value::Null)).unwrap().unwrap().value,
            Value::Null
        );
        let e = t.apply(record(Value::String("x".into()))).unwrap_err();
        assert!(
            e.to_string()
                .contains("transform t: InsertField needs a struct"),
            "{e}"
        );
    }

    #[test]
    fn replace_field_includes_excludes_and_renames() {
        let t = one(&[
            ("transforms.t.type", "ReplaceField$Value"),
            ("transforms.t.exclude", "email"),
            ("transforms.t.renames", "total:amount"),
        ]);
        let out = t.apply(structured()).unwrap().unwrap();
        assert_eq!(
            out.value,
            Value::Struct(vec![
                ("id".into(), Value::Int64(7)),
                ("amount".into(), Value::Float64(9.5))
            ])
        );
        out.value
            .validate(out.value_schema.as_deref().unwrap())
            .unwrap();
        let t = one(&[
            ("transforms.t.type", "ReplaceField$Value"),
            ("transforms.t.include", "id"),
        ]);
        let out = t
            .apply(record(map(&[
                ("id", Value::Int64(1)),
                ("x", Value::Int64(2)),
            ])))
            .unwrap()
            .unwrap();
        assert_eq!(out.value, map(&[("id", Value::Int64(1))]));
        let e = TransformChain::from_config(&config(&[
            ("transforms", "t"),
            ("transforms.t.type", "ReplaceField$Value"),
            ("transforms.t.renames", "nocolon"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("transforms.t.renames:"), "{e}");
    }

    #[test]
    fn mask_extract_hoist_value_to_key_and_schema_metadata() {
        let mask = one(&[
            ("transforms.t.type", "MaskField$Value"),
            ("transforms.t.fields", "email,total"),
        ]);
        let out = mask.apply(structured()).unwrap().unwrap();
        assert_eq!(out.value.get("email"), Some(&Value::String(String::new())));
        assert_eq!(out.value.get("total"), Some(&Value::Float64(0.0)));
        let mask = one(&[
            ("transforms.t.type", "MaskField$Value"),
            ("transforms.t.fields", "total"),
            ("transforms.t.replacement", "not-a-number"),
        ]);
        assert!(mask
            .apply(structured())
            .unwrap_err()
            .to_string()
            .contains("field total"));

        let extract = one(&[
            ("transforms.t.type", "ExtractField$Value"),
            ("transforms.t.field", "email"),
        ]);
        let out = extract.apply(structured()).unwrap().unwrap();
        assert_eq!(out.value, Value::String("a@b.c".into()));
        assert_eq!(out.value_schema.map(|s| s.ty), Some(SchemaType::String));

        let hoist = one(&[
            ("transforms.t.type", "HoistField$Value"),
            ("transforms.t.field", "line"),
        ]);
        let out = hoist
            .apply(record(Value::String("hello".into())))
            .unwrap()
            .unwrap();
        assert_eq!(out.value, map(&[("line", Value::String("hello".into()))]));

        let to_key = one(&[
            ("transforms.t.type", "ValueToKey"),
            ("transforms.t.fields", "id"),
        ]);
        let out = to_key.apply(structured()).unwrap().unwrap();
        assert_eq!(out.key, Value::Struct(vec![("id".into(), Value::Int64(7))]));
        out.key
            .validate(out.key_schema.as_deref().unwrap())
            .unwrap();

        let meta = one(&[
            ("transforms.t.type", "SetSchemaMetadata$Value"),
            ("transforms.t.schema.name", "io.sluice.Order"),
            ("transforms.t.schema.version", "3"),
        ]);
        let out = meta.apply(structured()).unwrap().unwrap();
        let schema = out.value_schema.unwrap();
        assert_eq!(
            (schema.name.as_deref(), schema.version),
            (Some("io.sluice.Order"), Some(3))
        );
    }
}

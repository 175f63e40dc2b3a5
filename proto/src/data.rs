//! Kafka Connect's data model: schemas and the values they describe. Connectors produce
//! and consume [`Value`]s with optional [`Schema`]s; converters (JSON, String, bytes, Avro)
//! turn them into Kafka bytes and back, so a connector never sees the wire format.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Logical type names Kafka Connect puts in [`Schema::name`].
pub mod logical {
    /// Milliseconds since the epoch, on an INT64.
    pub const TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";
    /// Days since the epoch, on an INT32.
    pub const DATE: &str = "org.apache.kafka.connect.data.Date";
    /// Milliseconds since midnight, on an INT32.
    pub const TIME: &str = "org.apache.kafka.connect.data.Time";
    /// An unscaled big-endian two's-complement integer, on BYTES; parameter `scale`.
    pub const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
}

/// The primitive or container type of a schema, with Kafka Connect's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaType {
    /// 8-bit signed integer.
    Int8,
    /// 16-bit signed integer.
    Int16,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// Boolean.
    Boolean,
    /// UTF-8 string.
    String,
    /// Byte array.
    Bytes,
    /// Ordered list of values of one schema.
    Array,
    /// Map from key schema to value schema.
    Map,
    /// Named fields, each with its own schema.
    Struct,
}

impl SchemaType {
    /// The lower-case name used by the JSON converter's envelope (`"int32"`, `"struct"`).
    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Int8 => "int8",
            SchemaType::Int16 => "int16",
            SchemaType::Int32 => "int32",
            SchemaType::Int64 => "int64",
            SchemaType::Float32 => "float",
            SchemaType::Float64 => "double",
            SchemaType::Boolean => "boolean",
            SchemaType::String => "string",
            SchemaType::Bytes => "bytes",
            SchemaType::Array => "array",
            SchemaType::Map => "map",
            SchemaType::Struct => "struct",
        }
    }
}

impl fmt::Display for SchemaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field of a struct schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// The field's schema.
    pub schema: Arc<Schema>,
}

/// A Kafka Connect schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// The type.
    pub ty: SchemaType,
    /// Whether `null` is allowed.
    pub optional: bool,
    /// A fully qualified name (also the logical type, e.g. [`logical::TIMESTAMP`]).
    pub name: Option<String>,
    /// A version number.
    pub version: Option<i32>,
    /// Documentation.
    pub doc: Option<String>,
    /// Free-form parameters (e.g. a decimal's `scale`).
    pub parameters: BTreeMap<String, String>,
    /// The default value.
    pub default: Option<Value>,
    /// Fields, for [`SchemaType::Struct`].
    pub fields: Vec<Field>,
    /// Key schema, for [`SchemaType::Map`].
    pub key_schema: Option<Arc<Schema>>,
    /// Element schema for [`SchemaType::Array`], value schema for [`SchemaType::Map`].
    pub value_schema: Option<Arc<Schema>>,
}

impl Schema {
    /// A required schema of a primitive type.
    pub fn of(ty: SchemaType) -> Self {
        Schema {
            ty,
            optional: false,
            name: None,
            version: None,
            doc: None,
            parameters: BTreeMap::new(),
            default: None,
            fields: Vec::new(),
            key_schema: None,
            value_schema: None,
        }
    }

    /// An empty required struct schema; add fields with [`Schema::field`].
    pub fn structure() -> Self {
        Schema::of(SchemaType::Struct)
    }

    /// An array of `items`.
    pub fn array(items: Schema) -> Self {
        Schema {
            value_schema: Some(Arc::new(items)),
            ..Schema::of(SchemaType::Array)
        }
    }

    /// A map from `keys` to `values`.
    pub fn map(keys: Schema, values: Schema) -> Self {
        Schema {
            key_schema: Some(Arc::new(keys)),
            value_schema: Some(Arc::new(values)),
            ..Schema::of(SchemaType::Map)
        }
    }

    /// Marks the schema optional.
    #[must_use]
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Sets the name.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Appends a field to a struct schema.
    #[must_use]
    pub fn field(mut self, name: impl Into<String>, schema: Schema) -> Self {
        self.fields.push(Field {
            name: name.into(),
            schema: Arc::new(schema),
        });
        self
    }

    /// The field named `name`, for a struct schema.
    pub fn field_named(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A value of Kafka Connect's data model.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Absent (a tombstone when it is a record's whole value).
    Null,
    /// Boolean.
    Boolean(bool),
    /// INT8.
    Int8(i8),
    /// INT16.
    Int16(i16),
    /// INT32 (also Date and Time).
    Int32(i32),
    /// INT64 (also Timestamp).
    Int64(i64),
    /// FLOAT32.
    Float32(f32),
    /// FLOAT64.
    Float64(f64),
    /// STRING.
    String(String),
    /// BYTES (also Decimal).
    Bytes(Vec<u8>),
    /// ARRAY.
    Array(Vec<Value>),
    /// MAP, in insertion order (keys need not be strings).
    Map(Vec<(Value, Value)>),
    /// STRUCT: field values in the schema's field order.
    Struct(Vec<(String, Value)>),
}

impl Value {
    /// The schema type this value has, `None` for [`Value::Null`].
    pub fn schema_type(&self) -> Option<SchemaType> {
        Some(match self {
            Value::Null => return None,
            Value::Boolean(_) => SchemaType::Boolean,
            Value::Int8(_) => SchemaType::Int8,
            Value::Int16(_) => SchemaType::Int16,
            Value::Int32(_) => SchemaType::Int32,
            Value::Int64(_) => SchemaType::Int64,
            Value::Float32(_) => SchemaType::Float32,
            Value::Float64(_) => SchemaType::Float64,
            Value::String(_) => SchemaType::String,
            Value::Bytes(_) => SchemaType::Bytes,
            Value::Array(_) => SchemaType::Array,
            Value::Map(_) => SchemaType::Map,
            Value::Struct(_) => SchemaType::Struct,
        })
    }

    /// A struct field's value by name.
    pub fn get(&self, field: &str) -> Option<&Value> {
        match self {
            Value::Struct(fields) => fields.iter().find(|(n, _)| n == field).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Checks that the value conforms to `schema`; the error gives the path of the first
    /// offending field (`value.payload.level`), so a bad record can be pinned down.
    pub fn validate(&self, schema: &Schema) -> Result<(), DataError> {
        self.validate_at(schema, "value")
    }

    fn validate_at(&self, schema: &Schema, path: &str) -> Result<(), DataError> {
        let mismatch = |found: &str| DataError {
            path: path.to_owned(),
            message: format!("expected {}, found {found}", schema.ty),
        };
        let Some(ty) = self.schema_type() else {
            return if schema.optional || schema.default.is_some() {
                Ok(())
            } else {
                Err(DataError {
                    path: path.to_owned(),
                    message: format!("null in a required {} field", schema.ty),
                })
            };
        };
        if ty != schema.ty {
            return Err(mismatch(ty.name()));
        }
        match self {
            Value::Array(items) => {
                let Some(item_schema) = &schema.value_schema else {
                    return Err(mismatch("an array schema without an element schema"));
                };
                for (i, item) in items.iter().enumerate() {
                    item.validate_at(item_schema, &format!("{path}[{i}]"))?;
                }
            }
            Value::Map(entries) => {
                let (Some(ks), Some(vs)) = (&schema.key_schema, &schema.value_schema) else {
                    return Err(mismatch("a map schema without key and value schemas"));
                };
                for (i, (k, v)) in entries.iter().enumerate() {
                    k.validate_at(ks, &format!("{path}{{key {i}}}"))?;
                    v.validate_at(vs, &format!("{path}{{value {i}}}"))?;
                }
            }
            Value::Struct(values) => {
                for field in &schema.fields {
                    let v = values
                        .iter()
                        .find(|(n, _)| *n == field.name)
                        .map_or(&Value::Null, |(_, v)| v);
                    v.validate_at(&field.schema, &format!("{path}.{}", field.name))?;
                }
                if let Some((extra, _)) =
                    values.iter().find(|(n, _)| schema.field_named(n).is_none())
                {
                    return Err(DataError {
                        path: format!("{path}.{extra}"),
                        message: "field is not in the schema".to_owned(),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A value that does not fit its schema, with the path of the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DataError {
    /// Where, e.g. `value.payload.level` or `value.tags[3]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syslog_schema() -> Schema {
        Schema::structure()
            .named("io.sluice.syslog.Message")
            .field(
                "date",
                Schema::of(SchemaType::Int64).named(logical::TIMESTAMP),
            )
            .field("level", Schema::of(SchemaType::Int32).optional())
            .field("message", Schema::of(SchemaType::String))
            .field(
                "tags",
                Schema::array(Schema::of(SchemaType::String)).optional(),
            )
    }

    #[test]
    fn a_conforming_struct_validates() {
        let v = Value::Struct(vec![
            ("date".into(), Value::Int64(1_478_654_589_000)),
            ("level".into(), Value::Null),
            ("message".into(), Value::String("kernel: hello".into())),
        ]);
        v.validate(&syslog_schema()).unwrap();
        assert_eq!(
            v.get("message"),
            Some(&Value::String("kernel: hello".into()))
        );
    }

    #[test]
    fn errors_name_the_offending_path() {
        let wrong_type = Value::Struct(vec![
            ("date".into(), Value::Int64(1)),
            ("message".into(), Value::Int32(5)),
        ]);
        let e = wrong_type.validate(&syslog_schema()).unwrap_err();
        assert_eq!(e.to_string(), "value.message: expected string, found int32");

        let missing = Value::Struct(vec![("message".into(), Value::String("m".into()))]);
        let e = missing.validate(&syslog_schema()).unwrap_err();
        assert_eq!(e.path, "value.date");

        let bad_item = Value::Struct(vec![
            ("date".into(), Value::Int64(1)),
            ("message".into(), Value::String("m".into())),
            (
                "tags".into(),
                Value::Array(vec![Value::String("a".into()), Value::Boolean(true)]),
            ),
        ]);
        let e = bad_item.validate(&syslog_schema()).unwrap_err();
        assert_eq!(e.path, "value.tags[1]");

        let extra = Value::Struct(vec![
            ("date".into(), Value::Int64(1)),
            ("message".into(), Value::String("m".into())),
            ("colour".into(), Value::String("red".into())),
        ]);
        assert_eq!(
            extra.validate(&syslog_schema()).unwrap_err().path,
            "value.colour"
        );
    }
}

//! Transforms that change types and shapes: Cast, Flatten, HeaderFrom.

use std::sync::Arc;

use sluice_proto::{Header, Schema, SchemaType, Value};

use super::{Envelope, Settings, Side, Transform, TransformError};

fn parse_type(name: &str) -> Option<SchemaType> {
    Some(match name {
        "int8" => SchemaType::Int8,
        "int16" => SchemaType::Int16,
        "int32" => SchemaType::Int32,
        "int64" => SchemaType::Int64,
        "float32" => SchemaType::Float32,
        "float64" => SchemaType::Float64,
        "boolean" => SchemaType::Boolean,
        "string" => SchemaType::String,
        _ => return None,
    })
}

fn as_f64(v: &Value) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    Some(match v {
        Value::Int8(n) => f64::from(*n),
        Value::Int16(n) => f64::from(*n),
        Value::Int32(n) => f64::from(*n),
        Value::Int64(n) => *n as f64,
        Value::Float32(n) => f64::from(*n),
        Value::Float64(n) => *n,
        Value::Boolean(b) => f64::from(u8::from(*b)),
        _ => return None,
    })
}

fn as_i64(v: &Value) -> Option<i64> {
    #[allow(clippy::cast_possible_truncation)]
    Some(match v {
        Value::Int8(n) => i64::from(*n),
        Value::Int16(n) => i64::from(*n),
        Value::Int32(n) => i64::from(*n),
        Value::Int64(n) => *n,
        // Kafka Connect's casts truncate toward zero, as Java's do.
        Value::Float32(n) => *n as i64,
        Value::Float64(n) => *n as i64,
        Value::Boolean(b) => i64::from(*b),
        _ => return None,
    })
}

fn text(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Boolean(b) => b.to_string(),
        Value::Int8(n) => n.to_string(),
        Value::Int16(n) => n.to_string(),
        Value::Int32(n) => n.to_string(),
        Value::Int64(n) => n.to_string(),
        Value::Float32(n) => n.to_string(),
        Value::Float64(n) => n.to_string(),
        _ => return None,
    })
}

/// Casts a primitive; the error says what could not be cast to what.
#[allow(clippy::cast_possible_truncation)]
fn cast(v: &Value, to: SchemaType) -> Result<Value, String> {
    if matches!(v, Value::Null) {
        return Ok(Value::Null);
    }
    let fail = || format!("cannot cast {v:?} to {to}");
    let parsed_text = |v: &Value| match v {
        Value::String(s) => Some(s.trim().to_owned()),
        _ => None,
    };
    let int = |min: i64, max: i64| -> Result<i64, String> {
        let n = match parsed_text(v) {
            Some(s) => s.parse::<i64>().map_err(|_| fail())?,
            None => as_i64(v).ok_or_else(fail)?,
        };
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} does not fit in {to}"))
        }
    };
    let float = || -> Result<f64, String> {
        match parsed_text(v) {
            Some(s) => s.parse::<f64>().map_err(|_| fail()),
            None => as_f64(v).ok_or_else(fail),
        }
    };
    Ok(match to {
        SchemaType::Int8 => Value::Int8(int(i8::MIN.into(), i8::MAX.into())? as i8),
        SchemaType::Int16 => Value::Int16(int(i16::MIN.into(), i16::MAX.into())? as i16),
        SchemaType::Int32 => Value::Int32(int(i32::MIN.into(), i32::MAX.into())? as i32),
        SchemaType::Int64 => Value::Int64(int(i64::MIN, i64::MAX)?),
        SchemaType::Float32 => Value::Float32(float()? as f32),
        SchemaType::Float64 => Value::Float64(float()?),
        SchemaType::Boolean => match v {
            Value::String(s) => Value::Boolean(s.trim().parse().map_err(|_| fail())?),
            other => Value::Boolean(as_f64(other).ok_or_else(fail)? != 0.0),
        },
        SchemaType::String => Value::String(text(v).ok_or_else(fail)?),
        _ => return Err(fail()),
    })
}

/// `Cast$Key` / `$Value`: `spec` is `type` for the whole key/value or `field:type,...`.
#[derive(Debug)]
pub(super) struct Cast {
    alias: String,
    side: Side,
    whole: Option<SchemaType>,
    fields: Vec<(String, SchemaType)>,
}

impl Cast {
    pub(super) fn new(alias: String, side: Side, s: &Settings<'_>) -> Result<Self, TransformError> {
        let spec = s.list("spec");
        if spec.is_empty() {
            return Err(s.error("spec", "is required"));
        }
        let bad = |item: &str| {
            s.error("spec", format!("{item:?}: expected type or field:type, types int8, int16, int32, int64, float32, float64, boolean, string"))
        };
        if spec.len() == 1 && !spec[0].contains(':') {
            let to = parse_type(&spec[0]).ok_or_else(|| bad(&spec[0]))?;
            return Ok(Cast {
                alias,
                side,
                whole: Some(to),
                fields: Vec::new(),
            });
        }
        let fields = spec
            .iter()
            .map(|item| {
                let (f, t) = item.split_once(':').ok_or_else(|| bad(item))?;
                Ok((
                    f.trim().to_owned(),
                    parse_type(t.trim()).ok_or_else(|| bad(item))?,
                ))
            })
            .collect::<Result<_, TransformError>>()?;
        Ok(Cast {
            alias,
            side,
            whole: None,
            fields,
        })
    }
}

impl Transform for Cast {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let fail = |m: String| TransformError::Record {
            transform: self.alias.clone(),
            message: m,
        };
        let (schema, value) = self.side.get(&r);
        if let Some(to) = self.whole {
            let v = cast(value, to).map_err(fail)?;
            let s = schema.map(|s| {
                Arc::new(Schema {
                    optional: s.optional,
                    ..Schema::of(to)
                })
            });
            self.side.set(&mut r, s, v);
            return Ok(Some(r));
        }
        if matches!(value, Value::Null) {
            return Ok(Some(r));
        }
        let target = |name: &str| self.fields.iter().find(|(f, _)| f == name).map(|(_, t)| *t);
        let (new_schema, new_value) = match (schema, value) {
            (Some(s), Value::Struct(fields)) => {
                let mut out = Schema {
                    fields: Vec::new(),
                    ..(**s).clone()
                };
                for f in &s.fields {
                    let fs = match target(&f.name) {
                        Some(t) => Schema {
                            optional: f.schema.optional,
                            ..Schema::of(t)
                        },
                        None => (*f.schema).clone(),
                    };
                    out = out.field(f.name.clone(), fs);
                }
                let values = fields
                    .iter()
                    .map(|(n, v)| match target(n) {
                        Some(t) => cast(v, t)
                            .map(|c| (n.clone(), c))
                            .map_err(|e| fail(format!("field {n}: {e}"))),
                        None => Ok((n.clone(), v.clone())),
                    })
                    .collect::<Result<_, _>>()?;
                (Some(Arc::new(out)), Value::Struct(values))
            }
            (None, Value::Map(entries)) => {
                let values = entries
                    .iter()
                    .map(|(k, v)| match k {
                        Value::String(n) => match target(n) {
                            Some(t) => cast(v, t)
                                .map(|c| (k.clone(), c))
                                .map_err(|e| fail(format!("field {n}: {e}"))),
                            None => Ok((k.clone(), v.clone())),
                        },
                        _ => Ok((k.clone(), v.clone())),
                    })
                    .collect::<Result<_, _>>()?;
                (None, Value::Map(values))
            }
            (_, other) => {
                return Err(fail(format!(
                    "field casts need a struct or map, found {}",
                    other.schema_type().map_or("null", SchemaType::name)
                )))
            }
        };
        self.side.set(&mut r, new_schema, new_value);
        Ok(Some(r))
    }
}

/// `Flatten$Key` / `$Value`: nested structs and maps become top-level fields named
/// `outer<delimiter>inner`.
#[derive(Debug)]
pub(super) struct Flatten {
    side: Side,
    delimiter: String,
}

impl Flatten {
    pub(super) fn new(side: Side, s: &Settings<'_>) -> Result<Self, TransformError> {
        Ok(Flatten {
            side,
            delimiter: s.get("delimiter").unwrap_or(".").to_owned(),
        })
    }

    fn flatten_struct(
        &self,
        prefix: &str,
        schema: &Schema,
        fields: &[(String, Value)],
        optional: bool,
        out_schema: &mut Schema,
        out: &mut Vec<(String, Value)>,
    ) {
        for f in &schema.fields {
            let name = if prefix.is_empty() {
                f.name.clone()
            } else {
                format!("{prefix}{}{}", self.delimiter, f.name)
            };
            let v = fields
                .iter()
                .find(|(n, _)| *n == f.name)
                .map_or(Value::Null, |(_, v)| v.clone());
            if f.schema.ty == SchemaType::Struct {
                let inner = match &v {
                    Value::Struct(inner) => inner.clone(),
                    _ => Vec::new(),
                };
                self.flatten_struct(
                    &name,
                    &f.schema,
                    &inner,
                    optional || f.schema.optional,
                    out_schema,
                    out,
                );
            } else {
                let mut fs = (*f.schema).clone();
                fs.optional = fs.optional || optional;
                *out_schema =
                    std::mem::replace(out_schema, Schema::structure()).field(name.clone(), fs);
                out.push((name, v));
            }
        }
    }

    fn flatten_map(&self, prefix: &str, entries: &[(Value, Value)], out: &mut Vec<(Value, Value)>) {
        for (k, v) in entries {
            let key = match k {
                Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}{}{key}", self.delimiter)
            };
            match v {
                Value::Map(inner) => self.flatten_map(&name, inner, out),
                other => out.push((Value::String(name), other.clone())),
            }
        }
    }
}

impl Transform for Flatten {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let (schema, value) = self.side.get(&r);
        match (schema, value) {
            (Some(s), Value::Struct(fields)) => {
                let mut out_schema = Schema {
                    fields: Vec::new(),
                    ..(**s).clone()
                };
                let mut out = Vec::new();
                let s = Arc::clone(s);
                let fields = fields.clone();
                self.flatten_struct("", &s, &fields, false, &mut out_schema, &mut out);
                self.side
                    .set(&mut r, Some(Arc::new(out_schema)), Value::Struct(out));
            }
            (None, Value::Map(entries)) => {
                let mut out = Vec::new();
                let entries = entries.clone();
                self.flatten_map("", &entries, &mut out);
                self.side.set(&mut r, None, Value::Map(out));
            }
            // Primitives and tombstones have nothing to flatten.
            _ => {}
        }
        Ok(Some(r))
    }
}

/// `HeaderFrom$Key` / `$Value`: copies or moves fields into headers (values as text,
/// structured ones as JSON).
#[derive(Debug)]
pub(super) struct HeaderFrom {
    alias: String,
    side: Side,
    pairs: Vec<(String, String)>,
    remove: bool,
}

impl HeaderFrom {
    pub(super) fn new(alias: String, side: Side, s: &Settings<'_>) -> Result<Self, TransformError> {
        let fields = s.list("fields");
        let headers = s.list("headers");
        if fields.is_empty() {
            return Err(s.error("fields", "is required"));
        }
        if fields.len() != headers.len() {
            return Err(s.error(
                "headers",
                format!(
                    "lists {} headers for {} fields",
                    headers.len(),
                    fields.len()
                ),
            ));
        }
        let remove = match s.required("operation")? {
            "copy" => false,
            "move" => true,
            other => return Err(s.error("operation", format!("{other:?} is not copy or move"))),
        };
        Ok(HeaderFrom {
            alias,
            side,
            pairs: fields.into_iter().zip(headers).collect(),
            remove,
        })
    }
}

impl Transform for HeaderFrom {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let (schema, value) = self.side.get(&r);
        let schema = schema.cloned();
        let entries: Vec<(String, Value)> = match value {
            Value::Null => return Ok(Some(r)),
            Value::Struct(f) => f.clone(),
            Value::Map(m) => m
                .iter()
                .filter_map(|(k, v)| match k {
                    Value::String(k) => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect(),
            other => {
                return Err(TransformError::Record {
                    transform: self.alias.clone(),
                    message: format!(
                        "HeaderFrom needs a struct or map, found {}",
                        other.schema_type().map_or("null", SchemaType::name)
                    ),
                })
            }
        };
        let json = crate::convert::JsonConverter::new(crate::convert::Part::Value, false);
        for (field, header) in &self.pairs {
            let v = entries
                .iter()
                .find(|(n, _)| n == field)
                .map_or(&Value::Null, |(_, v)| v);
            let bytes = match text(v) {
                Some(t) => Some(t.into_bytes()),
                None => crate::convert::Converter::to_kafka(&json, &r.topic, None, v)
                    .ok()
                    .flatten(),
            };
            r.headers.push(Header {
                key: header.clone(),
                value: bytes,
            });
        }
        if self.remove {
            let moved = |n: &str| self.pairs.iter().any(|(f, _)| f == n);
            let schema = schema.map(|s| {
                let mut out = Schema {
                    fields: Vec::new(),
                    ..(*s).clone()
                };
                for f in s.fields.iter().filter(|f| !moved(&f.name)) {
                    out = out.field(f.name.clone(), (*f.schema).clone());
                }
                Arc::new(out)
            });
            let kept: Vec<(String, Value)> =
                entries.into_iter().filter(|(n, _)| !moved(n)).collect();
            let value = if schema.is_some() {
                Value::Struct(kept)
            } else {
                Value::Map(
                    kept.into_iter()
                        .map(|(k, v)| (Value::String(k), v))
                        .collect(),
                )
            };
            self.side.set(&mut r, schema, value);
        }
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

    #[test]
    fn cast_fields_and_whole_values() {
        let t = one(&[
            (
                "transforms.t.type",
                "org.apache.kafka.connect.transforms.Cast$Value",
            ),
            ("transforms.t.spec", "level:int8,ok:boolean,n:string"),
        ]);
        let out = t
            .apply(record(map(&[
                ("level", Value::String("4".into())),
                ("ok", Value::Int32(0)),
                ("n", Value::Float64(1.5)),
            ])))
            .unwrap()
            .unwrap();
        assert_eq!(
            out.value,
            map(&[
                ("level", Value::Int8(4)),
                ("ok", Value::Boolean(false)),
                ("n", Value::String("1.5".into()))
            ])
        );
        let e = t
            .apply(record(map(&[("level", Value::String("400".into()))])))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("field level: 400 does not fit in int8"),
            "{e}"
        );
        let whole = one(&[
            ("transforms.t.type", "Cast$Value"),
            ("transforms.t.spec", "int64"),
        ]);
        assert_eq!(
            whole
                .apply(record(Value::Float64(2.9)))
                .unwrap()
                .unwrap()
                .value,
            Value::Int64(2)
        );
        let e = TransformChain::from_config(&config(&[
            ("transforms", "t"),
            ("transforms.t.type", "Cast$Value"),
            ("transforms.t.spec", "a:decimal"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("transforms.t.spec:"), "{e}");
    }

    #[test]
    fn flatten_nested_structs_and_maps() {
        let inner = Schema::structure()
            .field("city", Schema::of(SchemaType::String))
            .optional();
        let schema = Schema::structure()
            .field("id", Schema::of(SchemaType::Int64))
            .field("address", inner);
        let mut r = record(Value::Struct(vec![
            ("id".into(), Value::Int64(1)),
            (
                "address".into(),
                Value::Struct(vec![("city".into(), Value::String("Kyoto".into()))]),
            ),
        ]));
        r.value_schema = Some(Arc::new(schema));
        let t = one(&[
            ("transforms.t.type", "Flatten$Value"),
            ("transforms.t.delimiter", "_"),
        ]);
        let out = t.apply(r).unwrap().unwrap();
        assert_eq!(
            out.value,
            Value::Struct(vec![
                ("id".into(), Value::Int64(1)),
                ("address_city".into(), Value::String("Kyoto".into()))
            ])
        );
        let s = out.value_schema.unwrap();
        assert!(
            s.field_named("address_city").unwrap().schema.optional,
            "optional parent makes children optional"
        );
        let t = one(&[("transforms.t.type", "Flatten$Value")]);
        let out = t
            .apply(record(map(&[("a", map(&[("b", Value::Int64(2))]))])))
            .unwrap()
            .unwrap();
        assert_eq!(out.value, map(&[("a.b", Value::Int64(2))]));
    }

    #[test]
    fn header_from_copies_or_moves() {
        let t = one(&[
            ("transforms.t.type", "HeaderFrom$Value"),
            ("transforms.t.fields", "host,level"),
            ("transforms.t.headers", "h,l"),
            ("transforms.t.operation", "move"),
        ]);
        let out = t
            .apply(record(map(&[
                ("host", Value::String("web1".into())),
                ("level", Value::Int32(4)),
                ("msg", Value::String("x".into())),
            ])))
            .unwrap()
            .unwrap();
        assert_eq!(
            out.headers,
            vec![Header::text("h", "web1"), Header::text("l", "4")]
        );
        assert_eq!(out.value, map(&[("msg", Value::String("x".into()))]));
        let e = TransformChain::from_config(&config(&[
            ("transforms", "t"),
            ("transforms.t.type", "HeaderFrom$Value"),
            ("transforms.t.fields", "a,b"),
            ("transforms.t.headers", "x"),
            ("transforms.t.operation", "copy"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("transforms.t.headers: lists 1 headers for 2 fields"),
            "{e}"
        );
    }
}

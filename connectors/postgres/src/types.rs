//! PostgreSQL column types to Kafka Connect schemas and values, as Debezium's PostgreSQL
//! connector maps them (`decimal.handling.mode`, `time.precision.mode`), from pgoutput's
//! text output format.
//!
//! Covered so far: booleans, integers, floats, NUMERIC (precise `Decimal`, or
//! `VariableScaleDecimal` when unconstrained; double; string), MONEY, the character types,
//! BYTEA, UUID, JSON/JSONB, XML, DATE, TIME, TIMESTAMP, TIMESTAMPTZ, TIMETZ (`ZonedTime`),
//! INTERVAL (`MicroDuration`), BIT and BIT VARYING (`Bits`, or BOOLEAN for `bit(1)`), POINT
//! (`geometry.Point`), TSVECTOR, the built-in range types (their text), the network and OID
//! types, and one-dimensional arrays of the scalar ones (enums are mapped where the table's
//! schemas are built: their labels come from the database's catalogue; the text forms of
//! bits, points and zoned times are read by [`crate::textforms`]). A type not covered yet
//! maps to `None`: the column is left out of the record, as Debezium does with
//! `include.unknown.datatypes=false` (the caller logs it); with it true, to BYTES holding
//! its text output, as Debezium's pgoutput connector does.
//! Every conversion error names the column and the text at fault.

use sluice_proto::data::{Schema, SchemaType, Value};

use crate::pgoutput::Column;

/// `decimal.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalMode {
    Precise,
    Double,
    String,
}

/// `time.precision.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeMode {
    /// Debezium's default: milli- or microsecond types after the column's precision.
    Adaptive,
    /// As adaptive, but TIME always in microseconds.
    AdaptiveTimeMicroseconds,
    /// Kafka Connect's own logical types (millisecond precision).
    Connect,
}

/// `hstore.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HstoreMode {
    /// `io.debezium.data.Json` text (Debezium's default).
    #[default]
    Json,
    /// A MAP of STRING to optional STRING.
    Map,
}

/// The OIDs of the extension types Sluice maps (they differ from one database to the
/// next: looked up by name when a task starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    pub hstore: Option<u32>,
    pub ltree: Option<u32>,
    pub citext: Option<u32>,
}

impl Extensions {
    /// None known.
    pub const NONE: Extensions = Extensions {
        hstore: None,
        ltree: None,
        citext: None,
    };

    /// Whether `oid` is one of them.
    pub fn knows(&self, oid: u32) -> bool {
        [self.hstore, self.ltree, self.citext].contains(&Some(oid))
    }
}

/// How columns map.
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    pub decimal: DecimalMode,
    pub time: TimeMode,
    /// `include.unknown.datatypes`: a type not covered as BYTES of its text output, instead
    /// of leaving the column out.
    pub unknown: bool,
    pub hstore: HstoreMode,
    pub extensions: Extensions,
}

/// A BIT or BIT VARYING column's length (`bit` alone is `bit(1)`; an unbounded `varbit`
/// is Debezium's `Integer.MAX_VALUE`).
fn bit_length(column: &Column) -> i32 {
    match (column.type_oid, column.type_modifier) {
        (_, m) if m >= 0 => m,
        (BIT, _) => 1,
        _ => i32::MAX,
    }
}

/// A value that does not convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column} ({type_name}): {problem}: {text:?}")]
pub struct TypeError {
    pub column: String,
    pub type_name: &'static str,
    pub problem: String,
    pub text: String,
}

// Type OIDs (pg_type.dat).
const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const CHAR: u32 = 18;
const NAME: u32 = 19;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const TEXT: u32 = 25;
const OID: u32 = 26;
const JSON: u32 = 114;
const XML: u32 = 142;
const CIDR: u32 = 650;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const MACADDR8: u32 = 774;
const MONEY: u32 = 790;
const MACADDR: u32 = 829;
const INET: u32 = 869;
const BPCHAR: u32 = 1042;
const VARCHAR: u32 = 1043;
const DATE: u32 = 1082;
const TIME: u32 = 1083;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const INTERVAL: u32 = 1186;
const NUMERIC: u32 = 1700;
const UUID: u32 = 2950;
const JSONB: u32 = 3802;
const POINT: u32 = 600;
const BIT: u32 = 1560;
const VARBIT: u32 = 1562;
const TIMETZ: u32 = 1266;
const TSVECTOR: u32 = 3614;
/// The built-in range types: int4range, numrange, tsrange, tstzrange, daterange, int8range.
const RANGES: [u32; 6] = [3904, 3906, 3908, 3910, 3912, 3926];

/// Debezium's and Kafka Connect's logical type names.
pub mod names {
    pub const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
    pub const VARIABLE_SCALE_DECIMAL: &str = "io.debezium.data.VariableScaleDecimal";
    pub const JSON: &str = "io.debezium.data.Json";
    pub const XML: &str = "io.debezium.data.Xml";
    pub const UUID: &str = "io.debezium.data.Uuid";
    pub const DATE: &str = "io.debezium.time.Date";
    pub const TIME: &str = "io.debezium.time.Time";
    pub const MICRO_TIME: &str = "io.debezium.time.MicroTime";
    pub const TIMESTAMP: &str = "io.debezium.time.Timestamp";
    pub const MICRO_TIMESTAMP: &str = "io.debezium.time.MicroTimestamp";
    pub const ZONED_TIMESTAMP: &str = "io.debezium.time.ZonedTimestamp";
    pub const MICRO_DURATION: &str = "io.debezium.time.MicroDuration";
    pub const CONNECT_DATE: &str = "org.apache.kafka.connect.data.Date";
    pub const CONNECT_TIME: &str = "org.apache.kafka.connect.data.Time";
    pub const CONNECT_TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";
    pub const BITS: &str = "io.debezium.data.Bits";
    pub const ZONED_TIME: &str = "io.debezium.time.ZonedTime";
    pub const POINT: &str = "io.debezium.data.geometry.Point";
    pub const TSVECTOR: &str = "io.debezium.data.Tsvector";
    pub const LTREE: &str = "io.debezium.data.Ltree";
}

/// The element type of the one-dimensional built-in array types covered.
fn element_of(oid: u32) -> Option<u32> {
    Some(match oid {
        1000 => BOOL,
        1001 => BYTEA,
        1005 => INT2,
        1007 => INT4,
        1016 => INT8,
        1021 => FLOAT4,
        1022 => FLOAT8,
        1009 => TEXT,
        1014 => BPCHAR,
        1015 => VARCHAR,
        1231 => NUMERIC,
        1182 => DATE,
        1183 => TIME,
        1115 => TIMESTAMP,
        1185 => TIMESTAMPTZ,
        1187 => INTERVAL,
        2951 => UUID,
        199 => JSON,
        3807 => JSONB,
        1041 => INET,
        _ => return None,
    })
}

/// An array column's element, as a column of its own (elements are optional).
fn element_column(column: &Column, oid: u32) -> Column {
    Column {
        name: column.name.clone(),
        key: false,
        type_oid: oid,
        type_modifier: column.type_modifier,
    }
}

/// A NUMERIC's declared precision and scale, from its type modifier.
fn numeric_precision_scale(modifier: i32) -> Option<(i32, i32)> {
    (modifier >= 4).then(|| (((modifier - 4) >> 16) & 0xFFFF, (modifier - 4) & 0xFFFF))
}

/// The fractional-second digits a TIME or TIMESTAMP keeps (6 when undeclared).
fn time_precision(modifier: i32) -> i32 {
    if modifier < 0 {
        6
    } else {
        modifier
    }
}

impl Mapping {
    /// The schema of `column` (optional unless it is part of the key), or `None` for a
    /// type not covered yet.
    pub fn schema(&self, column: &Column) -> Option<Schema> {
        if let Some(element) = element_of(column.type_oid) {
            let items = self.schema(&element_column(column, element))?;
            let array = Schema::array(items);
            return Some(if column.key { array } else { array.optional() });
        }
        let s = |ty| Schema::of(ty);
        let schema = match column.type_oid {
            BOOL => s(SchemaType::Boolean),
            INT2 => s(SchemaType::Int16),
            INT4 => s(SchemaType::Int32),
            INT8 | OID => s(SchemaType::Int64),
            FLOAT4 => s(SchemaType::Float32),
            FLOAT8 => s(SchemaType::Float64),
            TEXT | VARCHAR | BPCHAR | CHAR | NAME | INET | CIDR | MACADDR | MACADDR8 => {
                s(SchemaType::String)
            }
            BYTEA => s(SchemaType::Bytes),
            UUID => s(SchemaType::String).named(names::UUID),
            JSON | JSONB => s(SchemaType::String).named(names::JSON),
            XML => s(SchemaType::String).named(names::XML),
            NUMERIC | MONEY => match self.decimal {
                DecimalMode::Double => s(SchemaType::Float64),
                DecimalMode::String => s(SchemaType::String),
                DecimalMode::Precise => {
                    let declared = if column.type_oid == MONEY {
                        Some((19, 2))
                    } else {
                        numeric_precision_scale(column.type_modifier)
                    };
                    match declared {
                        Some((precision, scale)) => {
                            let mut d = s(SchemaType::Bytes).named(names::DECIMAL);
                            d.version = Some(1);
                            d.parameters.insert("scale".into(), scale.to_string());
                            // Debezium gives NUMERIC(p,s) its precision; MONEY its scale only.
                            if column.type_oid != MONEY {
                                d.parameters.insert(
                                    "connect.decimal.precision".into(),
                                    precision.to_string(),
                                );
                            }
                            d
                        }
                        None => Schema {
                            doc: Some("Variable scaled decimal".into()),
                            ..Schema::structure()
                                .named(names::VARIABLE_SCALE_DECIMAL)
                                .field("scale", s(SchemaType::Int32))
                                .field("value", s(SchemaType::Bytes))
                        },
                    }
                }
            },
            DATE => match self.time {
                TimeMode::Connect => s(SchemaType::Int32).named(names::CONNECT_DATE),
                _ => s(SchemaType::Int32).named(names::DATE),
            },
            TIME => match self.time {
                TimeMode::Connect => s(SchemaType::Int32).named(names::CONNECT_TIME),
                TimeMode::Adaptive if time_precision(column.type_modifier) <= 3 => {
                    s(SchemaType::Int32).named(names::TIME)
                }
                _ => s(SchemaType::Int64).named(names::MICRO_TIME),
            },
            TIMESTAMP => match self.time {
                TimeMode::Connect => s(SchemaType::Int64).named(names::CONNECT_TIMESTAMP),
                _ if time_precision(column.type_modifier) <= 3 => {
                    s(SchemaType::Int64).named(names::TIMESTAMP)
                }
                _ => s(SchemaType::Int64).named(names::MICRO_TIMESTAMP),
            },
            TIMESTAMPTZ => s(SchemaType::String).named(names::ZONED_TIMESTAMP),
            INTERVAL => s(SchemaType::Int64).named(names::MICRO_DURATION),
            BIT if bit_length(column) == 1 => s(SchemaType::Boolean),
            BIT | VARBIT => {
                let mut b = s(SchemaType::Bytes).named(names::BITS);
                b.parameters
                    .insert("length".into(), bit_length(column).to_string());
                b
            }
            TIMETZ => s(SchemaType::String).named(names::ZONED_TIME),
            TSVECTOR => s(SchemaType::String).named(names::TSVECTOR),
            POINT => Schema {
                doc: Some("Geometry (POINT)".into()),
                ..Schema::structure()
                    .named(names::POINT)
                    .field("x", s(SchemaType::Float64))
                    .field("y", s(SchemaType::Float64))
                    .field("wkb", s(SchemaType::Bytes).optional())
                    .field("srid", s(SchemaType::Int32).optional())
            },
            oid if RANGES.contains(&oid) => s(SchemaType::String),
            oid if Some(oid) == self.extensions.hstore => match self.hstore {
                HstoreMode::Json => s(SchemaType::String).named(names::JSON),
                HstoreMode::Map => {
                    Schema::map(s(SchemaType::String), s(SchemaType::String).optional())
                }
            },
            oid if Some(oid) == self.extensions.ltree => s(SchemaType::String).named(names::LTREE),
            oid if Some(oid) == self.extensions.citext => s(SchemaType::String),
            _ if self.unknown => s(SchemaType::Bytes),
            _ => return None,
        };
        let mut schema = schema;
        if schema.ty == SchemaType::Struct || schema.name.is_some() {
            schema.version = schema.version.or(Some(1));
        }
        Some(if column.key {
            schema
        } else {
            schema.optional()
        })
    }

    /// `text` (pgoutput's text output of the column's value) as a value of
    /// [`Mapping::schema`]'s schema.
    pub fn value(&self, column: &Column, text: &[u8]) -> Result<Value, TypeError> {
        let type_name = type_name(column.type_oid);
        let raw = String::from_utf8_lossy(text);
        let fail = |problem: &str| TypeError {
            column: column.name.clone(),
            type_name,
            problem: problem.to_owned(),
            text: raw.chars().take(64).collect(),
        };
        let t = raw.as_ref();
        if let Some(element) = element_of(column.type_oid) {
            let items = parse_array(t).ok_or_else(|| fail("not a one-dimensional array"))?;
            let element = element_column(column, element);
            return items
                .into_iter()
                .map(|item| match item {
                    None => Ok(Value::Null),
                    Some(text) => self.value(&element, text.as_bytes()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array);
        }
        Ok(match column.type_oid {
            BOOL => match t {
                "t" => Value::Boolean(true),
                "f" => Value::Boolean(false),
                _ => return Err(fail("not t or f")),
            },
            INT2 => Value::Int16(t.parse().map_err(|_| fail("not a smallint"))?),
            INT4 => Value::Int32(t.parse().map_err(|_| fail("not an integer"))?),
            INT8 | OID => Value::Int64(t.parse().map_err(|_| fail("not a bigint"))?),
            FLOAT4 => Value::Float32(parse_float(t).ok_or_else(|| fail("not a real"))? as f32),
            FLOAT8 => Value::Float64(parse_float(t).ok_or_else(|| fail("not a double"))?),
            TEXT | VARCHAR | BPCHAR | CHAR | NAME | INET | CIDR | MACADDR | MACADDR8 | UUID
            | JSON | JSONB | XML => Value::String(t.to_owned()),
            BYTEA => Value::Bytes(parse_bytea(t).ok_or_else(|| fail("not bytea hex output"))?),
            NUMERIC | MONEY => {
                let plain = if column.type_oid == MONEY {
                    money_digits(t)
                } else {
                    t.to_owned()
                };
                match self.decimal {
                    DecimalMode::String => Value::String(plain),
                    DecimalMode::Double => {
                        Value::Float64(parse_float(&plain).ok_or_else(|| fail("not a number"))?)
                    }
                    DecimalMode::Precise => {
                        let declared = if column.type_oid == MONEY {
                            Some((19, 2))
                        } else {
                            numeric_precision_scale(column.type_modifier)
                        };
                        let (digits, scale) =
                            decimal_digits(&plain).ok_or_else(|| fail("not a finite number"))?;
                        match declared {
                            Some((_, declared_scale)) => {
                                let digits = rescale(&digits, scale, declared_scale)
                                    .ok_or_else(|| fail("more fraction digits than its scale"))?;
                                Value::Bytes(twos_complement(&digits))
                            }
                            None => Value::Struct(vec![
                                ("scale".into(), Value::Int32(scale)),
                                ("value".into(), Value::Bytes(twos_complement(&digits))),
                            ]),
                        }
                    }
                }
            }
            DATE => Value::Int32(
                parse_date(t)
                    .and_then(|d| i32::try_from(d).ok())
                    .ok_or_else(|| fail("not a date in ISO format"))?,
            ),
            TIME => {
                let micros = parse_time(t).ok_or_else(|| fail("not a time"))?;
                match self.schema(column).map(|s| s.ty) {
                    Some(SchemaType::Int32) => Value::Int32(
                        i32::try_from(micros / 1000).map_err(|_| fail("out of range"))?,
                    ),
                    _ => Value::Int64(micros),
                }
            }
            TIMESTAMP => {
                let micros = parse_timestamp(t).ok_or_else(|| fail("not a timestamp"))?;
                match self.schema(column).and_then(|s| s.name) {
                    Some(n) if n == names::MICRO_TIMESTAMP => Value::Int64(micros),
                    _ => Value::Int64(micros.div_euclid(1000)),
                }
            }
            TIMESTAMPTZ => Value::String(
                // The fraction as wide as the column's precision (6 unless declared).
                zoned_timestamp(
                    t,
                    usize::try_from(column.type_modifier).map_or(6, |p| p.min(6)),
                )
                .ok_or_else(|| fail("not a timestamp with time zone"))?,
            ),
            INTERVAL => Value::Int64(parse_interval(t).ok_or_else(|| fail("not an interval"))?),
            BIT if bit_length(column) == 1 => match t {
                "1" => Value::Boolean(true),
                "0" => Value::Boolean(false),
                _ => return Err(fail("not a bit")),
            },
            BIT | VARBIT => {
                Value::Bytes(crate::textforms::bits(t).ok_or_else(|| fail("not a bit string"))?)
            }
            TIMETZ => Value::String(
                crate::textforms::zoned_time(t).ok_or_else(|| fail("not a time with time zone"))?,
            ),
            TSVECTOR => Value::String(t.to_owned()),
            POINT => {
                let (x, y, wkb) = crate::textforms::point(t).ok_or_else(|| fail("not a point"))?;
                Value::Struct(vec![
                    ("x".into(), Value::Float64(x)),
                    ("y".into(), Value::Float64(y)),
                    ("wkb".into(), Value::Bytes(wkb)),
                    ("srid".into(), Value::Null),
                ])
            }
            oid if RANGES.contains(&oid) => Value::String(t.to_owned()),
            oid if Some(oid) == self.extensions.hstore => {
                // Debezium's pairs come out of a java.util.HashMap (pgjdbc's): its order.
                let pairs = crate::java::java_hashmap_order(
                    crate::textforms::hstore(t).ok_or_else(|| fail("not an hstore"))?,
                );
                match self.hstore {
                    HstoreMode::Json => Value::String(hstore_json(&pairs)),
                    HstoreMode::Map => Value::Map(
                        pairs
                            .into_iter()
                            .map(|(k, v)| (Value::String(k), v.map_or(Value::Null, Value::String)))
                            .collect(),
                    ),
                }
            }
            oid if self.extensions.knows(oid) => Value::String(t.to_owned()),
            _ if self.unknown => Value::Bytes(text.to_vec()),
            _ => return Err(fail("type not covered")),
        })
    }
}

/// hstore pairs as compact JSON (Jackson's, as Debezium writes them), in their order.
fn hstore_json(pairs: &[(String, Option<String>)]) -> String {
    let text = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let fields: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", text(k), v.as_deref().map_or("null".into(), text)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn type_name(oid: u32) -> &'static str {
    match oid {
        BOOL => "boolean",
        BYTEA => "bytea",
        INT2 => "smallint",
        INT4 => "integer",
        INT8 => "bigint",
        OID => "oid",
        FLOAT4 => "real",
        FLOAT8 => "double precision",
        NUMERIC => "numeric",
        MONEY => "money",
        DATE => "date",
        TIME => "time",
        TIMESTAMP => "timestamp",
        TIMESTAMPTZ => "timestamptz",
        INTERVAL => "interval",
        BIT => "bit",
        VARBIT => "bit varying",
        TIMETZ => "timetz",
        POINT => "point",
        _ if element_of(oid).is_some() => "array",
        _ => "text-like",
    }
}

fn parse_float(t: &str) -> Option<f64> {
    match t {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

/// BYTEA's hex output (`\x0a0b`, the default `bytea_output`).
fn parse_bytea(t: &str) -> Option<Vec<u8>> {
    let hex = t.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// MONEY's output (`$1,234.56`, `-$0.50`) as a plain decimal.
fn money_digits(t: &str) -> String {
    let negative = t.contains('-') || (t.starts_with('(') && t.ends_with(')'));
    let digits: String = t
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    if negative {
        format!("-{digits}")
    } else {
        digits
    }
}

/// A decimal's sign and digits without the point, and its scale (digits after the point).
fn decimal_digits(t: &str) -> Option<((bool, Vec<u8>), i32)> {
    let (negative, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut digits = Vec::with_capacity(int.len() + frac.len());
    for c in int.chars().chain(frac.chars()) {
        digits.push(u8::try_from(c.to_digit(10)?).ok()?);
    }
    Some(((negative, digits), i32::try_from(frac.len()).ok()?))
}

/// The digits at `to` fraction digits (padding with zeros; never dropping a non-zero).
fn rescale(value: &(bool, Vec<u8>), from: i32, to: i32) -> Option<(bool, Vec<u8>)> {
    let (negative, digits) = value;
    let mut digits = digits.clone();
    if to >= from {
        digits.extend(std::iter::repeat_n(0, usize::try_from(to - from).ok()?));
    } else {
        let cut = usize::try_from(from - to).ok()?;
        let keep = digits.len().checked_sub(cut)?;
        if digits[keep..].iter().any(|d| *d != 0) {
            return None;
        }
        digits.truncate(keep);
    }
    Some((*negative, digits))
}

/// Kafka Connect's Decimal bytes: the unscaled value, big-endian two's complement, in as
/// few bytes as keep the sign (Java's `BigInteger.toByteArray`).
fn twos_complement(value: &(bool, Vec<u8>)) -> Vec<u8> {
    let (negative, digits) = value;
    // Decimal digits to base 256, little-endian.
    let mut magnitude: Vec<u8> = Vec::new();
    for d in digits {
        let mut carry = u32::from(*d);
        for byte in &mut magnitude {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xFF) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            magnitude.push((carry & 0xFF) as u8);
            carry >>= 8;
        }
    }
    let zero = magnitude.iter().all(|b| *b == 0);
    if *negative && !zero {
        // Two's complement: invert and add one.
        let mut carry = 1_u16;
        for byte in &mut magnitude {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xFF) as u8;
            carry = v >> 8;
        }
        if magnitude.last().is_none_or(|b| b & 0x80 == 0) {
            magnitude.push(0xFF);
        }
    } else if magnitude.last().is_none_or(|b| b & 0x80 != 0) {
        magnitude.push(0);
    }
    // Drop redundant sign bytes.
    while magnitude.len() > 1 {
        let top = magnitude[magnitude.len() - 1];
        let next = magnitude[magnitude.len() - 2];
        if (top == 0 && next & 0x80 == 0) || (top == 0xFF && next & 0x80 != 0) {
            magnitude.pop();
        } else {
            break;
        }
    }
    magnitude.reverse();
    magnitude
}

/// A one-dimensional array's text output (`{1,NULL,"a \\"b\\"",c}`) as its elements, `None`
/// for NULL; `None` for a multi-dimensional array or one with explicit bounds.
fn parse_array(t: &str) -> Option<Vec<Option<String>>> {
    let inner = t.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let item = if chars.peek() == Some(&'"') {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next()? {
                    '\\' => s.push(chars.next()?),
                    '"' => break,
                    c => s.push(c),
                }
            }
            Some(s)
        } else {
            let mut s = String::new();
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                if *c == '{' {
                    return None;
                }
                s.push(*c);
                chars.next();
            }
            (!s.eq_ignore_ascii_case("NULL")).then_some(s)
        };
        out.push(item);
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// INTERVAL's output (IntervalStyle `postgres`: `1 year 2 mons -3 days +04:05:06.5`) as
/// Debezium's `MicroDuration`: months count 365.25 / 12 days, as Debezium counts them.
fn parse_interval(t: &str) -> Option<i64> {
    const DAYS_PER_MONTH: f64 = 365.25 / 12.0;
    let mut months = 0.0_f64;
    let mut days = 0.0_f64;
    let mut micros = 0_i64;
    let mut words = t.split_whitespace().peekable();
    while let Some(word) = words.next() {
        if word.contains(':') {
            let (negative, hms) = match word.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, word.strip_prefix('+').unwrap_or(word)),
            };
            let (hours, rest) = hms.split_once(':')?;
            let hours: i64 = hours.parse().ok()?;
            let within = parse_time(&format!("00:{rest}"))?;
            let total = hours.checked_mul(3_600_000_000)?.checked_add(within)?;
            micros += if negative { -total } else { total };
            continue;
        }
        let n: f64 = word.parse().ok()?;
        match words.next()?.trim_end_matches('s') {
            "year" => months += n * 12.0,
            "mon" => months += n,
            "day" => days += n,
            _ => return None,
        }
    }
    let day_micros = (months * DAYS_PER_MONTH + days) * 86_400_000_000.0;
    Some(day_micros as i64 + micros)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DD` (ISO DateStyle, with ` BC` for years before 1) as days since the epoch.
fn parse_date(t: &str) -> Option<i64> {
    let (t, bc) = match t.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (t, false),
    };
    let mut parts = t.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // 1 BC is year 0 of the proleptic calendar.
    let year = if bc { 1 - year } else { year };
    Some(days_from_civil(year, month, day))
}

/// `HH:MM:SS[.ffffff]` as microseconds since midnight (24:00:00 allowed, as PostgreSQL).
fn parse_time(t: &str) -> Option<i64> {
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let mut parts = hms.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let s: i64 = parts.next()?.parse().ok()?;
    if frac.len() > 6 || !frac.chars().all(|c| c.is_ascii_digit()) || h > 24 || m > 59 || s > 60 {
        return None;
    }
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + micros)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][ BC]` as microseconds since the epoch.
fn parse_timestamp(t: &str) -> Option<i64> {
    let (t, bc) = match t.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (t, false),
    };
    let (date, time) = t.split_once(' ')?;
    let days = parse_date(&if bc {
        format!("{date} BC")
    } else {
        date.to_owned()
    })?;
    Some(days * 86_400_000_000 + parse_time(time)?)
}

/// TIMESTAMPTZ's output in the session's zone (`2024-03-05 13:45:06.5+05:30`) as
/// Debezium's `ZonedTimestamp`: ISO-8601 in UTC with `width` fraction digits, as Debezium
/// pads them to the column's precision (`2024-03-05T08:15:06.500000Z` for a plain
/// TIMESTAMPTZ; none for TIMESTAMPTZ(0)).
fn zoned_timestamp(t: &str, width: usize) -> Option<String> {
    let split = t.rfind(['+', '-']).filter(|i| *i > 10)?;
    let (local, zone) = t.split_at(split);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let mut z = zone[1..].split(':');
    let zh: i64 = z.next()?.parse().ok()?;
    let zm: i64 = z.next().map_or(Some(0), |v| v.parse().ok())?;
    let zs: i64 = z.next().map_or(Some(0), |v| v.parse().ok())?;
    let offset = sign * ((zh * 60 + zm) * 60 + zs) * 1_000_000;
    let utc = parse_timestamp(local)? - offset;
    let days = utc.div_euclid(86_400_000_000);
    let in_day = utc.rem_euclid(86_400_000_000);
    let (y, mo, d) = civil_from_days(days);
    let secs = in_day / 1_000_000;
    let micros = in_day % 1_000_000;
    let fraction = if width == 0 {
        String::new()
    } else {
        let digits = format!("{micros:06}");
        format!(".{}", digits.get(..width).unwrap_or(&digits))
    };
    Some(format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}{fraction}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(oid: u32, modifier: i32) -> Column {
        Column {
            name: "c".into(),
            key: false,
            type_oid: oid,
            type_modifier: modifier,
        }
    }

    const ADAPTIVE: Mapping = Mapping {
        decimal: DecimalMode::Precise,
        time: TimeMode::Adaptive,
        unknown: false,
        hstore: HstoreMode::Json,
        extensions: Extensions::NONE,
    };

    /// NUMERIC(p, s)'s type modifier.
    fn numeric(p: i32, s: i32) -> i32 {
        ((p << 16) | s) + 4
    }

    #[test]
    fn decimals_are_kafka_connects_bytes_at_the_declared_scale() -> Result<(), TypeError> {
        let c = column(NUMERIC, numeric(10, 2));
        let schema = ADAPTIVE.schema(&c);
        assert_eq!(
            schema.as_ref().and_then(|s| s.name.as_deref()),
            Some(names::DECIMAL)
        );
        assert_eq!(
            schema.and_then(|s| s.parameters.get("scale").cloned()),
            Some("2".into())
        );
        // 1234.50 -> 123450 = 0x01E23A; -1.00 -> -100 = 0x9C; 0 -> 0x00; 128 -> 0x0080.
        assert_eq!(
            ADAPTIVE.value(&c, b"1234.50")?,
            Value::Bytes(vec![0x01, 0xE2, 0x3A])
        );
        assert_eq!(ADAPTIVE.value(&c, b"-1.00")?, Value::Bytes(vec![0x9C]));
        assert_eq!(ADAPTIVE.value(&c, b"0.00")?, Value::Bytes(vec![0x00]));
        assert_eq!(ADAPTIVE.value(&c, b"1.28")?, Value::Bytes(vec![0x00, 0x80]));
        assert_eq!(ADAPTIVE.value(&c, b"-1.28")?, Value::Bytes(vec![0x80]));
        assert!(ADAPTIVE.value(&c, b"NaN").is_err());
        // Unconstrained: VariableScaleDecimal with the value's own scale.
        let free = column(NUMERIC, -1);
        assert_eq!(
            ADAPTIVE.value(&free, b"-12.345")?,
            Value::Struct(vec![
                ("scale".into(), Value::Int32(3)),
                ("value".into(), Value::Bytes(vec![0xCF, 0xC7])),
            ])
        );
        let text = Mapping {
            decimal: DecimalMode::String,
            time: TimeMode::Adaptive,
            unknown: false,
            hstore: HstoreMode::Json,
            extensions: Extensions::NONE,
        };
        assert_eq!(text.value(&c, b"1234.50")?, Value::String("1234.50".into()));
        assert_eq!(
            ADAPTIVE.value(&column(MONEY, -1), b"-$1,000.05")?,
            Value::Bytes(twos_complement(&(true, vec![1, 0, 0, 0, 0, 5])))
        );
        Ok(())
    }

    #[test]
    fn times_follow_the_adaptive_mode() -> Result<(), TypeError> {
        assert_eq!(
            ADAPTIVE.value(&column(DATE, -1), b"2024-03-05")?,
            Value::Int32(19_787)
        );
        assert_eq!(
            ADAPTIVE.value(&column(DATE, -1), b"1969-12-31")?,
            Value::Int32(-1)
        );
        // TIME(3) in ms, TIME in µs; TIMESTAMP(3) in ms, TIMESTAMP in µs.
        let t3 = column(TIME, 3);
        assert_eq!(
            ADAPTIVE.schema(&t3).and_then(|s| s.name),
            Some(names::TIME.into())
        );
        assert_eq!(ADAPTIVE.value(&t3, b"01:00:00.5")?, Value::Int32(3_600_500));
        assert_eq!(
            ADAPTIVE.value(&column(TIME, -1), b"01:00:00.000001")?,
            Value::Int64(3_600_000_001)
        );
        assert_eq!(
            ADAPTIVE.value(&column(TIMESTAMP, 3), b"1970-01-02 00:00:00.25")?,
            Value::Int64(86_400_250)
        );
        assert_eq!(
            ADAPTIVE.value(&column(TIMESTAMP, -1), b"1969-12-31 23:59:59.999999")?,
            Value::Int64(-1)
        );
        assert_eq!(
            ADAPTIVE.value(&column(TIMESTAMPTZ, -1), b"2024-03-05 13:45:06.5+05:30")?,
            Value::String("2024-03-05T08:15:06.500000Z".into())
        );
        assert_eq!(
            ADAPTIVE.value(&column(TIMESTAMPTZ, 0), b"2024-01-01 00:30:00-01")?,
            Value::String("2024-01-01T01:30:00Z".into())
        );
        assert_eq!(
            ADAPTIVE.value(&column(TIMESTAMPTZ, 3), b"2024-01-01 00:30:00.25-01")?,
            Value::String("2024-01-01T01:30:00.250Z".into())
        );
        let err = ADAPTIVE.value(&column(DATE, -1), b"infinity").err();
        assert!(err.is_some_and(|e| e.to_string().contains("column c (date)")));
        Ok(())
    }

    #[test]
    fn arrays_and_intervals() -> Result<(), TypeError> {
        let ints = column(1007, -1);
        assert_eq!(
            ADAPTIVE
                .schema(&ints)
                .and_then(|s| s.value_schema.map(|e| (e.ty, e.optional))),
            Some((SchemaType::Int32, true))
        );
        assert_eq!(
            ADAPTIVE.value(&ints, b"{1,NULL,-3}")?,
            Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(-3)])
        );
        assert_eq!(
            ADAPTIVE.value(&column(1009, -1), br#"{a,"b,c","d \"e\"",""}"#)?,
            Value::Array(vec![
                Value::String("a".into()),
                Value::String("b,c".into()),
                Value::String("d \"e\"".into()),
                Value::String(String::new()),
            ])
        );
        assert_eq!(ADAPTIVE.value(&ints, b"{}")?, Value::Array(vec![]));
        assert!(ADAPTIVE.value(&ints, b"{{1,2},{3,4}}").is_err());
        let interval = column(INTERVAL, -1);
        assert_eq!(
            ADAPTIVE.value(&interval, b"00:00:01.5")?,
            Value::Int64(1_500_000)
        );
        assert_eq!(
            ADAPTIVE.value(&interval, b"1 day -01:00:00")?,
            Value::Int64(82_800_000_000)
        );
        // A month is 30.4375 days, as Debezium counts.
        assert_eq!(
            ADAPTIVE.value(&interval, b"1 mon")?,
            Value::Int64(2_629_800_000_000)
        );
        assert_eq!(
            ADAPTIVE.value(&interval, b"-1 years +2 mons")?,
            Value::Int64(-(10.0 * 30.4375 * 86_400_000_000.0) as i64)
        );
        Ok(())
    }

    #[test]
    fn scalars_keys_and_unknown_types() -> Result<(), TypeError> {
        assert_eq!(
            ADAPTIVE.value(&column(BOOL, -1), b"t")?,
            Value::Boolean(true)
        );
        assert_eq!(ADAPTIVE.value(&column(INT8, -1), b"-9")?, Value::Int64(-9));
        assert_eq!(
            ADAPTIVE.value(&column(BYTEA, -1), b"\\x0aff")?,
            Value::Bytes(vec![0x0a, 0xff])
        );
        let mut key = column(INT4, -1);
        key.key = true;
        assert_eq!(ADAPTIVE.schema(&key).map(|s| s.optional), Some(false));
        assert_eq!(
            ADAPTIVE.schema(&column(INT4, -1)).map(|s| s.optional),
            Some(true)
        );
        assert_eq!(
            ADAPTIVE.schema(&column(JSONB, -1)).and_then(|s| s.name),
            Some(names::JSON.into())
        );
        // Extension types by the OIDs found in the database: hstore as Debezium's JSON (in
        // java.util.HashMap order: by hash bucket, "a" before "b") or as a map.
        let ext = Mapping {
            extensions: Extensions {
                hstore: Some(70_000),
                ltree: Some(70_001),
                citext: None,
            },
            ..ADAPTIVE
        };
        assert_eq!(
            ext.value(&column(70_000, -1), br#""b"=>NULL, "a"=>"1""#)?,
            Value::String(r#"{"a":"1","b":null}"#.into())
        );
        let map = Mapping {
            hstore: HstoreMode::Map,
            ..ext
        };
        assert_eq!(
            map.value(&column(70_000, -1), br#""a"=>"x""#)?,
            Value::Map(vec![(Value::String("a".into()), Value::String("x".into()))])
        );
        assert_eq!(
            ext.schema(&column(70_001, -1)).and_then(|s| s.name),
            Some(names::LTREE.into())
        );
        assert!(ext.schema(&column(70_002, -1)).is_none());
        // A type not covered (here: box) has no schema: the column is left out, unless
        // include.unknown.datatypes keeps it as the bytes of its text.
        assert!(ADAPTIVE.schema(&column(603, -1)).is_none());
        let unknown = Mapping {
            unknown: true,
            ..ADAPTIVE
        };
        assert_eq!(
            unknown.schema(&column(603, -1)).map(|s| (s.ty, s.optional)),
            Some((SchemaType::Bytes, true))
        );
        assert_eq!(
            unknown.value(&column(603, -1), b"(1,1),(0,0)")?,
            Value::Bytes(b"(1,1),(0,0)".to_vec())
        );
        assert!(ADAPTIVE.value(&column(INT4, -1), b"x").is_err());
        Ok(())
    }
}

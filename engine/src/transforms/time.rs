//! Time transforms: TimestampConverter and TimestampRouter, with the part of Java's
//! `SimpleDateFormat` they are used with (`yyyy MM dd HH mm ss SSS`, quoted literals,
//! other characters as they are), always in UTC as Kafka Connect's are.

use std::sync::Arc;

use sluice_proto::data::logical;
use sluice_proto::{Schema, SchemaType, Value};

use super::{Envelope, Settings, Side, Transform, TransformError};

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) -> days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millis,
    Literal(String),
}

/// A `SimpleDateFormat` pattern, the subset Kafka Connect configs use.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DatePattern(Vec<Token>);

impl DatePattern {
    pub(super) fn parse(pattern: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let chars: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == '\'')
                    .ok_or_else(|| format!("unterminated quote in {pattern:?}"))?;
                let text: String = chars[i + 1..i + 1 + end].iter().collect();
                tokens.push(Token::Literal(if text.is_empty() {
                    "'".into()
                } else {
                    text
                }));
                i += end + 2;
                continue;
            }
            let run = chars[i..].iter().take_while(|&&x| x == c).count();
            let token = match (c, run) {
                ('y', 4) => Token::Year,
                ('M', 2) => Token::Month,
                ('d', 2) => Token::Day,
                ('H', 2) => Token::Hour,
                ('m', 2) => Token::Minute,
                ('s', 2) => Token::Second,
                ('S', 3) => Token::Millis,
                (c, _) if c.is_ascii_alphabetic() => {
                    return Err(format!(
                        "pattern letter {:?} is not supported (yyyy MM dd HH mm ss SSS are)",
                        c.to_string().repeat(run)
                    ))
                }
                (c, run) => Token::Literal(c.to_string().repeat(run)),
            };
            tokens.push(token);
            i += run;
        }
        Ok(DatePattern(tokens))
    }

    pub(super) fn format(&self, millis: i64) -> String {
        let days = millis.div_euclid(MS_PER_DAY);
        let ms_of_day = millis.rem_euclid(MS_PER_DAY);
        let (y, mo, d) = civil_from_days(days);
        let mut out = String::new();
        for t in &self.0 {
            match t {
                Token::Year => out.push_str(&format!("{y:04}")),
                Token::Month => out.push_str(&format!("{mo:02}")),
                Token::Day => out.push_str(&format!("{d:02}")),
                Token::Hour => out.push_str(&format!("{:02}", ms_of_day / 3_600_000)),
                Token::Minute => out.push_str(&format!("{:02}", ms_of_day / 60_000 % 60)),
                Token::Second => out.push_str(&format!("{:02}", ms_of_day / 1000 % 60)),
                Token::Millis => out.push_str(&format!("{:03}", ms_of_day % 1000)),
                Token::Literal(l) => out.push_str(l),
            }
        }
        out
    }

    pub(super) fn parse_millis(&self, text: &str) -> Result<i64, String> {
        let mut rest = text;
        let (mut y, mut mo, mut d, mut h, mut mi, mut s, mut ms) =
            (1970_i64, 1_u32, 1_u32, 0_i64, 0_i64, 0_i64, 0_i64);
        for t in &self.0 {
            let mut number = |width: usize| -> Result<i64, String> {
                let digits = rest
                    .get(..width)
                    .filter(|d| d.chars().all(|c| c.is_ascii_digit()));
                let digits = digits
                    .ok_or_else(|| format!("{text:?} does not match the pattern at {rest:?}"))?;
                rest = &rest[width..];
                digits.parse().map_err(|_| format!("bad number {digits:?}"))
            };
            match t {
                Token::Year => y = number(4)?,
                Token::Month => mo = u32::try_from(number(2)?).unwrap_or(0),
                Token::Day => d = u32::try_from(number(2)?).unwrap_or(0),
                Token::Hour => h = number(2)?,
                Token::Minute => mi = number(2)?,
                Token::Second => s = number(2)?,
                Token::Millis => ms = number(3)?,
                Token::Literal(l) => {
                    rest = rest.strip_prefix(l.as_str()).ok_or_else(|| {
                        format!("{text:?} does not match the pattern: expected {l:?} at {rest:?}")
                    })?;
                }
            }
        }
        if !rest.is_empty()
            || !(1..=12).contains(&mo)
            || !(1..=31).contains(&d)
            || h > 23
            || mi > 59
            || s > 59
        {
            return Err(format!("{text:?} is not a valid date for the pattern"));
        }
        Ok(days_from_civil(y, mo, d) * MS_PER_DAY + ((h * 60 + mi) * 60 + s) * 1000 + ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Str,
    Unix,
    Date,
    Time,
    Timestamp,
}

/// `TimestampConverter$Key` / `$Value`: converts a timestamp (the whole key/value or one
/// field) between string, unix epoch, Date, Time and Timestamp.
#[derive(Debug)]
pub(super) struct TimestampConverter {
    alias: String,
    side: Side,
    field: Option<String>,
    target: Target,
    format: Option<DatePattern>,
    /// Unix values are in this many units per millisecond (as a divisor/multiplier).
    unix_per_ms: (i64, i64),
}

impl TimestampConverter {
    pub(super) fn new(alias: String, side: Side, s: &Settings<'_>) -> Result<Self, TransformError> {
        let target = match s.required("target.type")? {
            "string" => Target::Str,
            "unix" => Target::Unix,
            "Date" => Target::Date,
            "Time" => Target::Time,
            "Timestamp" => Target::Timestamp,
            other => {
                return Err(s.error(
                    "target.type",
                    format!("{other:?} is not one of string, unix, Date, Time, Timestamp"),
                ))
            }
        };
        let format = match s.get("format").filter(|f| !f.is_empty()) {
            Some(f) => Some(DatePattern::parse(f).map_err(|e| s.error("format", e))?),
            None if target == Target::Str => {
                return Err(s.error("format", "is required when target.type is string"))
            }
            None => None,
        };
        let unix_per_ms = match s.get("unix.precision").unwrap_or("milliseconds") {
            "milliseconds" => (1, 1),
            "seconds" => (1, 1000),
            "microseconds" => (1000, 1),
            "nanoseconds" => (1_000_000, 1),
            other => {
                return Err(s.error(
                    "unix.precision",
                    format!(
                        "{other:?} is not one of seconds, milliseconds, microseconds, nanoseconds"
                    ),
                ))
            }
        };
        Ok(TimestampConverter {
            alias,
            side,
            field: s.get("field").filter(|f| !f.is_empty()).map(str::to_owned),
            target,
            format,
            unix_per_ms,
        })
    }

    fn to_millis(&self, v: &Value, schema: Option<&Schema>) -> Result<Option<i64>, TransformError> {
        let fail = |m: String| TransformError::Record {
            transform: self.alias.clone(),
            message: m,
        };
        Ok(match v {
            Value::Null => None,
            Value::String(text) => {
                let pattern = self
                    .format
                    .as_ref()
                    .ok_or_else(|| fail("a string timestamp needs format".into()))?;
                Some(pattern.parse_millis(text).map_err(fail)?)
            }
            Value::Int64(n) => {
                let named = schema.and_then(|s| s.name.as_deref());
                if named == Some(logical::TIMESTAMP) {
                    Some(*n)
                } else {
                    let (mul, div) = self.unix_per_ms;
                    Some(n / mul * div)
                }
            }
            Value::Int32(n) => match schema.and_then(|s| s.name.as_deref()) {
                Some(logical::DATE) => Some(i64::from(*n) * MS_PER_DAY),
                Some(logical::TIME) => Some(i64::from(*n)),
                _ => return Err(fail(format!("an int32 {n} is neither a Date nor a Time"))),
            },
            other => {
                return Err(fail(format!(
                    "cannot read a timestamp from {}",
                    other.schema_type().map_or("null", SchemaType::name)
                )))
            }
        })
    }

    fn convert(&self, millis: Option<i64>) -> (Schema, Value) {
        let (schema, make): (Schema, fn(&Self, i64) -> Value) = match self.target {
            Target::Str => (Schema::of(SchemaType::String), |t, ms| {
                Value::String(t.format.as_ref().map(|f| f.format(ms)).unwrap_or_default())
            }),
            Target::Unix => (Schema::of(SchemaType::Int64), |t, ms| {
                let (mul, div) = t.unix_per_ms;
                Value::Int64(ms * mul / div)
            }),
            Target::Date => (
                Schema::of(SchemaType::Int32).named(logical::DATE),
                |_, ms| Value::Int32(i32::try_from(ms.div_euclid(MS_PER_DAY)).unwrap_or(i32::MAX)),
            ),
            Target::Time => (
                Schema::of(SchemaType::Int32).named(logical::TIME),
                |_, ms| Value::Int32(i32::try_from(ms.rem_euclid(MS_PER_DAY)).unwrap_or(0)),
            ),
            Target::Timestamp => (
                Schema::of(SchemaType::Int64).named(logical::TIMESTAMP),
                |_, ms| Value::Int64(ms),
            ),
        };
        match millis {
            Some(ms) => (schema, make(self, ms)),
            None => (schema.optional(), Value::Null),
        }
    }
}

impl Transform for TimestampConverter {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let (schema, value) = self.side.get(&r);
        let Some(field) = &self.field else {
            let millis = self.to_millis(value, schema.map(AsRef::as_ref))?;
            let (new_schema, new_value) = self.convert(millis);
            let new_schema = schema.map(|_| Arc::new(new_schema));
            self.side.set(&mut r, new_schema, new_value);
            return Ok(Some(r));
        };
        if matches!(value, Value::Null) {
            return Ok(Some(r));
        }
        let schema = schema.cloned();
        let mut fields = match value {
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
                        "field {field}: the {} is not a struct or map",
                        other.schema_type().map_or("null", SchemaType::name)
                    ),
                })
            }
        };
        let field_schema = schema
            .as_ref()
            .and_then(|s| s.field_named(field))
            .map(|f| (*f.schema).clone());
        let mut new_field_schema = None;
        for (name, v) in &mut fields {
            if name == field {
                let millis = self.to_millis(v, field_schema.as_ref())?;
                let (s, converted) = self.convert(millis);
                *v = converted;
                new_field_schema = Some(s);
            }
        }
        let new_schema = schema.map(|s| {
            let mut out = Schema {
                fields: Vec::new(),
                ..(*s).clone()
            };
            for f in &s.fields {
                let fs = match (&new_field_schema, f.name == *field) {
                    (Some(ns), true) => ns.clone(),
                    _ => (*f.schema).clone(),
                };
                out = out.field(f.name.clone(), fs);
            }
            Arc::new(out)
        });
        let value = if new_schema.is_some() {
            Value::Struct(fields)
        } else {
            Value::Map(
                fields
                    .into_iter()
                    .map(|(k, v)| (Value::String(k), v))
                    .collect(),
            )
        };
        self.side.set(&mut r, new_schema, value);
        Ok(Some(r))
    }
}

/// `TimestampRouter`: renames the topic from `topic.format` (`${topic}`, `${timestamp}`)
/// with the record's timestamp in `timestamp.format`.
#[derive(Debug)]
pub(super) struct TimestampRouter {
    alias: String,
    topic_format: String,
    timestamp_format: DatePattern,
}

impl TimestampRouter {
    pub(super) fn new(alias: String, s: &Settings<'_>) -> Result<Self, TransformError> {
        Ok(TimestampRouter {
            alias,
            topic_format: s
                .get("topic.format")
                .unwrap_or("${topic}-${timestamp}")
                .to_owned(),
            timestamp_format: DatePattern::parse(s.get("timestamp.format").unwrap_or("yyyyMMdd"))
                .map_err(|e| s.error("timestamp.format", e))?,
        })
    }
}

impl Transform for TimestampRouter {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        let ts = r.timestamp.ok_or_else(|| TransformError::Record {
            transform: self.alias.clone(),
            message: "the record has no timestamp to route by".into(),
        })?;
        r.topic = self
            .topic_format
            .replace("${topic}", &r.topic)
            .replace("${timestamp}", &self.timestamp_format.format(ts));
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{config, map, record};
    use super::super::TransformChain;
    use super::*;

    #[test]
    fn calendar_arithmetic_round_trips() {
        for days in [-719_468, -1, 0, 1, 10_957, 17_114, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(17_114), (2016, 11, 9));
    }

    #[test]
    fn patterns_format_and_parse() {
        let p = DatePattern::parse("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").unwrap();
        // The seed article's first document: 1478654589000.
        assert_eq!(p.format(1_478_654_589_000), "2016-11-09T01:23:09.000Z");
        assert_eq!(
            p.parse_millis("2016-11-09T01:23:09.000Z").unwrap(),
            1_478_654_589_000
        );
        assert!(p.parse_millis("2016-13-09T01:23:09.000Z").is_err());
        assert!(DatePattern::parse("EEE, d MMM").is_err());
    }

    #[test]
    fn converter_and_router() {
        let chain = TransformChain::from_config(&config(&[
            ("transforms", "ts, route"),
            (
                "transforms.ts.type",
                "org.apache.kafka.connect.transforms.TimestampConverter$Value",
            ),
            ("transforms.ts.field", "date"),
            ("transforms.ts.target.type", "string"),
            ("transforms.ts.format", "yyyy-MM-dd"),
            (
                "transforms.route.type",
                "org.apache.kafka.connect.transforms.TimestampRouter",
            ),
            ("transforms.route.topic.format", "${topic}-${timestamp}"),
            ("transforms.route.timestamp.format", "yyyy.MM"),
        ]))
        .unwrap();
        let out = chain
            .apply(record(map(&[("date", Value::Int64(1_478_654_589_000))])))
            .unwrap()
            .unwrap();
        assert_eq!(
            out.value,
            map(&[("date", Value::String("2016-11-09".into()))])
        );
        assert_eq!(out.topic, "orders-2016.11");

        let to_unix = TransformChain::from_config(&config(&[
            ("transforms", "t"),
            ("transforms.t.type", "TimestampConverter$Value"),
            ("transforms.t.target.type", "unix"),
            ("transforms.t.unix.precision", "seconds"),
            ("transforms.t.format", "yyyy-MM-dd"),
        ]))
        .unwrap();
        let out = to_unix
            .apply(record(Value::String("2016-11-09".into())))
            .unwrap()
            .unwrap();
        assert_eq!(out.value, Value::Int64(1_478_649_600));
        let e = to_unix
            .apply(record(Value::String("09/11/2016".into())))
            .unwrap_err();
        assert!(e.to_string().contains("does not match the pattern"), "{e}");
        let e = TransformChain::from_config(&config(&[
            ("transforms", "t"),
            ("transforms.t.type", "TimestampConverter$Value"),
            ("transforms.t.target.type", "string"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "transforms.t.format: is required when target.type is string"
        );
    }
}

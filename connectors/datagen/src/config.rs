//! The datagen source's configuration keys: Confluent's datagen keys where they apply
//! (`kafka.topic`, `max.interval`, `iterations`, `random.seed`), Sluice's own for the record
//! size, the rate and the batch, and Confluent's Avro schema keys, refused until Sluice
//! has Avro and a schema registry.

use std::time::Duration;

use sluice_proto::config::{ConfigError, ConfigErrors};
use sluice_proto::{ConfigDef, ConfigKey, ConfigType, ConfigValue, Importance, Props, Validator};

/// Destination topic (Confluent's key).
pub const TOPIC: &str = "kafka.topic";
/// The most milliseconds between two records of a task (Confluent's key).
pub const MAX_INTERVAL: &str = "max.interval";
/// Records per task, across restarts; below 1 is unlimited (Confluent's key).
pub const ITERATIONS: &str = "iterations";
/// Seed of the payloads and of the `max.interval` gaps (Confluent's key).
pub const RANDOM_SEED: &str = "random.seed";
/// The size a value is padded to, in bytes (Sluice's key).
pub const RECORD_BYTES: &str = "datagen.record.bytes";
/// Records per second per task; overrides `max.interval` (Sluice's key).
pub const RECORDS_PER_SECOND: &str = "datagen.records.per.second";
/// Most records one poll returns (Sluice's key, as the file and syslog sources name it).
pub const BATCH_SIZE: &str = "batch.size";

/// Confluent's keys that need Avro schemas: refused with [`NOT_SUPPORTED`] when set.
pub const SCHEMA_KEYS: &[&str] = &[
    "quickstart",
    "schema.filename",
    "schema.string",
    "schema.keyfield",
    "schema.string.format",
];

/// Why a key of [`SCHEMA_KEYS`] is refused.
pub const NOT_SUPPORTED: &str =
    "not supported yet: Avro schemas come with the schema registry work";

/// The largest `max.interval`: a day, so a schedule never leaves the clock's range.
const MAX_INTERVAL_LIMIT_MS: f64 = 86_400_000.0;
/// The largest `datagen.record.bytes`: 64 MiB, what a task keeps of an open transaction.
const RECORD_BYTES_LIMIT: f64 = 67_108_864.0;
/// The smallest non-zero rate: one record per 1000 s.
const MIN_RATE: f64 = 0.001;

/// The source's keys.
pub fn source_def() -> ConfigDef {
    let mut def = ConfigDef::new()
        .define(
            ConfigKey::new(TOPIC, ConfigType::String)
                .importance(Importance::High)
                .validator(Validator::NonEmptyString)
                .doc("The topic the generated records are written to."),
        )
        .define(
            ConfigKey::new(MAX_INTERVAL, ConfigType::Long)
                .default_value("500")
                .importance(Importance::High)
                .validator(Validator::between(0.0, MAX_INTERVAL_LIMIT_MS))
                .doc(
                    "As in Confluent's datagen: before each record a task waits a random time \
                      below this many milliseconds (so on average half of it); 0 waits not at \
                      all. Ignored when datagen.records.per.second is set.",
                ),
        )
        .define(
            ConfigKey::new(ITERATIONS, ConfigType::Long)
                .default_value("-1")
                .importance(Importance::High)
                .doc(
                    "How many records each task generates in all, across restarts (a task \
                      resumes after its last committed record and counts those too); below 1 \
                      is unlimited. A task that has generated them all stays RUNNING, idle.",
                ),
        )
        .define(
            ConfigKey::new(RANDOM_SEED, ConfigType::Long)
                .optional()
                .importance(Importance::Low)
                .doc(
                    "Seed of the payloads and of the max.interval gaps: with a seed, a record \
                      is the same whenever it is generated (ts aside), and tasks differ from \
                      each other. Without one, the clock seeds them.",
                ),
        )
        .define(
            ConfigKey::new(RECORD_BYTES, ConfigType::Int)
                .default_value("100")
                .importance(Importance::Medium)
                .validator(Validator::between(0.0, RECORD_BYTES_LIMIT))
                .doc(
                    "The size of each value as schemaless JSON (the JsonConverter with \
                      schemas.enable=false), reached with a random printable payload; a \
                      value that is larger without any payload is left as it is. Other \
                      converters add their own envelope.",
                ),
        )
        .define(
            ConfigKey::new(RECORDS_PER_SECOND, ConfigType::Double)
                .optional()
                .importance(Importance::Medium)
                .validator(Validator::Custom(validate_rate))
                .doc(
                    "Records per second per task, evenly spaced; 0 is as fast as the worker \
                      takes them. When set, max.interval is ignored. A task that fell behind \
                      (a slow commit) catches up at most one second of its schedule.",
                ),
        )
        .define(
            ConfigKey::new(BATCH_SIZE, ConfigType::Int)
                .default_value("2000")
                .importance(Importance::Low)
                .validator(Validator::at_least(1.0))
                .doc(
                    "The most records one poll returns (and at most 8 MiB of values); a poll \
                      returns what falls due within 100 ms.",
                ),
        );
    for key in SCHEMA_KEYS {
        def = def.define(
            ConfigKey::new(key, ConfigType::String)
                .optional()
                .importance(Importance::Low)
                .validator(Validator::Custom(refuse_schema))
                .doc(
                    "Confluent's Avro schema key; not supported yet, so a value is refused \
                      (empty counts as not set, as in Confluent's datagen).",
                ),
        );
    }
    def
}

fn validate_rate(value: &ConfigValue) -> Result<(), String> {
    match value {
        ConfigValue::Double(r) if *r == 0.0 || *r >= MIN_RATE => Ok(()),
        _ => Err(format!(
            "must be 0 (as fast as possible) or at least {MIN_RATE} (one record per 1000 s)"
        )),
    }
}

/// Empty is Confluent's default for these keys: it means "not set", nothing is ignored.
fn refuse_schema(value: &ConfigValue) -> Result<(), String> {
    match value {
        ConfigValue::String(s) if s.is_empty() => Ok(()),
        _ => Err(NOT_SUPPORTED.to_owned()),
    }
}

/// How a task spaces its records in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As fast as the task is polled (`datagen.records.per.second=0`, or `max.interval=0`).
    Unpaced,
    /// One record every period (`datagen.records.per.second`).
    Every(Duration),
    /// A random gap below this before each record (Confluent's `max.interval`).
    Below(Duration),
}

/// A datagen config, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DatagenConfig {
    /// `kafka.topic`: where the records go.
    pub topic: String,
    /// From `datagen.records.per.second` when set, else from `max.interval`.
    pub pace: Pace,
    /// `iterations`: records per task across restarts; `None` is unlimited.
    pub iterations: Option<u64>,
    /// `random.seed`, if set.
    pub random_seed: Option<i64>,
    /// `datagen.record.bytes`: the size a value is padded to.
    pub record_bytes: usize,
    /// `batch.size`: most records per poll.
    pub batch_size: usize,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }])
}

impl DatagenConfig {
    /// Parses `props`; every error names its key.
    pub fn parse(props: &Props) -> Result<DatagenConfig, ConfigErrors> {
        let parsed = source_def().parse(props)?;
        let long = |key: &str| parsed.long(key).ok_or_else(|| invalid(key, "has no value"));
        let size = |key: &str| {
            long(key).and_then(|v| {
                usize::try_from(v).map_err(|_| invalid(key, format!("{v} is out of range")))
            })
        };
        let topic = parsed
            .string(TOPIC)
            .ok_or_else(|| invalid(TOPIC, "is required and has no default"))?
            .to_owned();
        let pace = match parsed.get(RECORDS_PER_SECOND) {
            Some(ConfigValue::Double(rate)) if *rate == 0.0 => Pace::Unpaced,
            Some(ConfigValue::Double(rate)) => {
                match Duration::try_from_secs_f64(rate.recip()) {
                    // Past a billion a second the period rounds to nothing.
                    Ok(Duration::ZERO) => Pace::Unpaced,
                    Ok(period) => Pace::Every(period),
                    Err(e) => return Err(invalid(RECORDS_PER_SECOND, format!("{rate}: {e}"))),
                }
            }
            Some(other) => {
                return Err(invalid(
                    RECORDS_PER_SECOND,
                    format!("expected a number, got {other:?}"),
                ))
            }
            None => match u64::try_from(long(MAX_INTERVAL)?) {
                Ok(0) => Pace::Unpaced,
                Ok(ms) => Pace::Below(Duration::from_millis(ms)),
                Err(_) => return Err(invalid(MAX_INTERVAL, "must be at least 0")),
            },
        };
        // As in Confluent's datagen, "less than 1 for unlimited".
        let iterations = u64::try_from(long(ITERATIONS)?).ok().filter(|n| *n > 0);
        Ok(DatagenConfig {
            topic,
            pace,
            iterations,
            random_seed: parsed.long(RANDOM_SEED),
            record_bytes: size(RECORD_BYTES)?,
            batch_size: size(BATCH_SIZE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<DatagenConfig, ConfigErrors> {
        let mut all = vec![(TOPIC, "t")];
        all.extend_from_slice(pairs);
        DatagenConfig::parse(&props(&all))
    }

    fn error_of(pairs: &[(&str, &str)]) -> String {
        match parse(pairs) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_confluents_where_confluent_has_the_key() {
        let config = parse(&[]).unwrap();
        assert_eq!(
            config,
            DatagenConfig {
                topic: "t".to_owned(),
                pace: Pace::Below(Duration::from_millis(500)),
                iterations: None,
                random_seed: None,
                record_bytes: 100,
                batch_size: 2000,
            }
        );
    }

    #[test]
    fn the_rate_overrides_max_interval_and_zero_is_unpaced() {
        let pace = |pairs: &[(&str, &str)]| parse(pairs).unwrap().pace;
        assert_eq!(
            pace(&[(RECORDS_PER_SECOND, "1000"), (MAX_INTERVAL, "50")]),
            Pace::Every(Duration::from_millis(1))
        );
        assert_eq!(
            pace(&[(RECORDS_PER_SECOND, "0.5")]),
            Pace::Every(Duration::from_secs(2))
        );
        assert_eq!(pace(&[(RECORDS_PER_SECOND, "0")]), Pace::Unpaced);
        assert_eq!(pace(&[(RECORDS_PER_SECOND, "1e12")]), Pace::Unpaced);
        assert_eq!(pace(&[(MAX_INTERVAL, "0")]), Pace::Unpaced);
        assert_eq!(
            pace(&[(MAX_INTERVAL, "20")]),
            Pace::Below(Duration::from_millis(20))
        );
    }

    #[test]
    fn iterations_below_one_are_unlimited_as_in_confluents() {
        let iterations = |v: &str| parse(&[(ITERATIONS, v)]).unwrap().iterations;
        assert_eq!(iterations("-1"), None);
        assert_eq!(iterations("0"), None);
        assert_eq!(iterations("5"), Some(5));
        assert_eq!(iterations("10000000000"), Some(10_000_000_000));
    }

    #[test]
    fn every_error_names_its_key() {
        let e = DatagenConfig::parse(&props(&[(MAX_INTERVAL, "10")])).unwrap_err();
        assert!(e.to_string().contains("kafka.topic: is required"), "{e}");
        for (pairs, expected) in [
            (&[(TOPIC, "")][..], "kafka.topic: must not be empty"),
            (
                &[(RECORDS_PER_SECOND, "-1")],
                "datagen.records.per.second: must be 0",
            ),
            (
                &[(RECORDS_PER_SECOND, "0.0001")],
                "datagen.records.per.second: must be 0",
            ),
            (
                &[(RECORDS_PER_SECOND, "fast")],
                "datagen.records.per.second: expected a number",
            ),
            (&[(MAX_INTERVAL, "-5")], "max.interval: must be at least 0"),
            (
                &[(MAX_INTERVAL, "86400001")],
                "max.interval: must be no more than",
            ),
            (&[(BATCH_SIZE, "0")], "batch.size: must be at least 1"),
            (
                &[(RECORD_BYTES, "67108865")],
                "datagen.record.bytes: must be no more than",
            ),
            (
                &[(RECORD_BYTES, "-1")],
                "datagen.record.bytes: must be at least 0",
            ),
            (
                &[(ITERATIONS, "many")],
                "iterations: expected a 64-bit integer",
            ),
            (
                &[(RANDOM_SEED, "x")],
                "random.seed: expected a 64-bit integer",
            ),
        ] {
            let e = error_of(pairs);
            assert!(e.contains(expected), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn avro_schema_keys_are_refused_by_name_never_ignored() {
        for key in SCHEMA_KEYS {
            let e = error_of(&[(key, "users")]);
            assert!(e.contains(&format!("{key}: {NOT_SUPPORTED}")), "{key}: {e}");
            // The REST validate endpoint reports it on that key too.
            let all = props(&[(TOPIC, "t"), (key, "users")]);
            let reports = source_def().validate(&all);
            let errors: Vec<_> = reports.iter().filter(|r| !r.errors.is_empty()).collect();
            assert_eq!(errors.len(), 1, "{key}: {errors:?}");
            assert_eq!(errors[0].name, *key);
            assert!(errors[0].errors[0].contains(NOT_SUPPORTED), "{errors:?}");
        }
        // All of them at once: each named.
        let all: Vec<(&str, &str)> = SCHEMA_KEYS.iter().map(|k| (*k, "x")).collect();
        let e = parse(&all).unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, SCHEMA_KEYS);
        // Confluent's default, the empty string, sets nothing.
        assert!(parse(&[("quickstart", ""), ("schema.keyfield", " ")]).is_ok());
    }
}

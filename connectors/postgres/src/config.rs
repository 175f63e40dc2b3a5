//! The PostgreSQL source's keys: Debezium's PostgresConnector's names, defaults and
//! meanings, so a Debezium config file is read as it is. A Debezium key whose behaviour is
//! not built yet is refused by validate with a message saying so (never ignored): see
//! [`NOT_YET`]; a value of a supported key that asks for such behaviour (a snapshot mode,
//! `plugin.name=decoderbufs`) is refused the same way.

use regex::Regex;
use sluice_proto::config::{ConfigError, ConfigErrors};
use sluice_proto::{ConfigDef, ConfigKey, ConfigType, ConfigValue, Importance, Props, Validator};

use crate::types::{DecimalMode, Extensions, HstoreMode, Mapping, TimeMode};

pub const HOSTNAME: &str = "database.hostname";
pub const PORT: &str = "database.port";
pub const USER: &str = "database.user";
pub const PASSWORD: &str = "database.password";
pub const DBNAME: &str = "database.dbname";
pub const TOPIC_PREFIX: &str = "topic.prefix";
pub const PLUGIN_NAME: &str = "plugin.name";
pub const SLOT_NAME: &str = "slot.name";
pub const PUBLICATION_NAME: &str = "publication.name";
pub const PUBLICATION_AUTOCREATE: &str = "publication.autocreate.mode";
pub const TABLE_INCLUDE: &str = "table.include.list";
pub const TABLE_EXCLUDE: &str = "table.exclude.list";
pub const SCHEMA_INCLUDE: &str = "schema.include.list";
pub const SCHEMA_EXCLUDE: &str = "schema.exclude.list";
pub const COLUMN_INCLUDE: &str = "column.include.list";
pub const COLUMN_EXCLUDE: &str = "column.exclude.list";
pub const SNAPSHOT_MODE: &str = "snapshot.mode";
pub const TOMBSTONES_ON_DELETE: &str = "tombstones.on.delete";
pub const DECIMAL_HANDLING: &str = "decimal.handling.mode";
pub const TIME_PRECISION: &str = "time.precision.mode";
pub const SKIPPED_OPERATIONS: &str = "skipped.operations";
pub const SLOT_DROP_ON_STOP: &str = "slot.drop.on.stop";
pub const UNAVAILABLE_PLACEHOLDER: &str = "unavailable.value.placeholder";
pub const MAX_BATCH_SIZE: &str = "max.batch.size";
pub const HEARTBEAT_INTERVAL: &str = "heartbeat.interval.ms";
pub const HEARTBEAT_PREFIX: &str = "topic.heartbeat.prefix";
pub const HEARTBEAT_ACTION_QUERY: &str = "heartbeat.action.query";
pub const TRANSACTION_METADATA: &str = "provide.transaction.metadata";
pub const MESSAGE_KEY_COLUMNS: &str = "message.key.columns";
pub const TRANSACTION_TOPIC: &str = "topic.transaction";
pub const SIGNAL_DATA_COLLECTION: &str = "signal.data.collection";
pub const INCLUDE_UNKNOWN: &str = "include.unknown.datatypes";
pub const HSTORE_MODE: &str = "hstore.handling.mode";
pub const SIGNAL_CHANNELS: &str = "signal.enabled.channels";
pub const INCREMENTAL_CHUNK_SIZE: &str = "incremental.snapshot.chunk.size";

/// Debezium keys whose behaviour Sluice has not built yet: refused when set, with
/// [`NOT_YET`]'s reason, rather than silently doing something else.
pub const UNSUPPORTED: &[&str] = &[
    "database.sslmode",
    "database.sslcert",
    "database.sslkey",
    "database.sslrootcert",
    "database.initial.statements",
    "snapshot.select.statement.overrides",
    "snapshot.include.collection.list",
    "binary.handling.mode",
    "column.mask.hash",
    "column.truncate.to",
    "column.propagate.source.type",
    "datatype.propagate.source.type",
    "publish.via.partition.root",
    "slot.failover",
    "converters",
    "schema.name.adjustment.mode",
    "field.name.adjustment.mode",
];

/// Why a key of [`UNSUPPORTED`] (or a value asking for unbuilt behaviour) is refused.
pub const NOT_YET: &str = "not supported by Sluice's PostgreSQL source yet";

const SNAPSHOT_MODES: &[&str] = &[
    "initial",
    "always",
    "initial_only",
    "no_data",
    "when_needed",
    "never",
    "configuration_based",
    "custom",
];

/// The source's keys.
pub fn source_def() -> ConfigDef {
    let s = |k| ConfigKey::new(k, ConfigType::String);
    let mut def = ConfigDef::new()
        .define(
            s(HOSTNAME)
                .importance(Importance::High)
                .validator(Validator::NonEmptyString)
                .doc("The PostgreSQL server's host."),
        )
        .define(
            ConfigKey::new(PORT, ConfigType::Int)
                .default_value("5432")
                .importance(Importance::High)
                .validator(Validator::between(1.0, 65535.0))
                .doc("The PostgreSQL server's port."),
        )
        .define(
            s(USER)
                .importance(Importance::High)
                .validator(Validator::NonEmptyString)
                .doc("A user with the REPLICATION attribute (or a superuser)."),
        )
        .define(
            ConfigKey::new(PASSWORD, ConfigType::Password)
                .default_value("")
                .importance(Importance::High)
                .doc("The user's password."),
        )
        .define(
            s(DBNAME)
                .importance(Importance::High)
                .validator(Validator::NonEmptyString)
                .doc("The database to capture."),
        )
        .define(
            s(TOPIC_PREFIX)
                .importance(Importance::High)
                .validator(Validator::Custom(topic_prefix))
                .doc("Prefix of every topic: changes of schema.table go to <prefix>.<schema>.<table>; also the source block's name."),
        )
        .define(
            s(PLUGIN_NAME)
                .default_value("decoderbufs")
                .importance(Importance::Medium)
                .validator(Validator::Custom(plugin))
                .doc("The logical decoding plugin. Only pgoutput (built into PostgreSQL 10+) is supported; Debezium's default, decoderbufs, must be changed."),
        )
        .define(
            s(SLOT_NAME)
                .default_value("debezium")
                .importance(Importance::Medium)
                .validator(Validator::Custom(slot_name))
                .doc("The logical replication slot, created if missing."),
        )
        .define(
            s(PUBLICATION_NAME)
                .default_value("dbz_publication")
                .importance(Importance::Medium)
                .validator(Validator::NonEmptyString)
                .doc("The publication the slot streams."),
        )
        .define(
            s(PUBLICATION_AUTOCREATE)
                .default_value("all_tables")
                .importance(Importance::Medium)
                .validator(Validator::Custom(autocreate))
                .doc("all_tables: create the publication FOR ALL TABLES if missing; disabled: it must exist; filtered: created or altered to the included tables; no_tables: created empty."),
        )
        .define(
            s(SNAPSHOT_MODE)
                .default_value("initial")
                .importance(Importance::Medium)
                .validator(Validator::Custom(snapshot_mode))
                .doc("When to read the tables' existing rows: initial (when nothing was committed yet, then stream), initial_only (then stop), no_data (stream only), when_needed (as initial, and again whenever the changes after the committed offset are gone: the slot missing or confirmed past it), always (as initial, and at every later start all tables again as an incremental snapshot while streaming goes on, which needs signal.data.collection). The custom modes are not built yet."),
        )
        .define(
            ConfigKey::new(TOMBSTONES_ON_DELETE, ConfigType::Boolean)
                .default_value("true")
                .importance(Importance::Medium)
                .doc("Follow each delete event with a tombstone (the key, a null value), so compaction can remove the row's records."),
        )
        .define(
            s(DECIMAL_HANDLING)
                .default_value("precise")
                .importance(Importance::Medium)
                .validator(Validator::OneOf(&["precise", "double", "string"]))
                .doc("NUMERIC and MONEY as Kafka Connect's Decimal (VariableScaleDecimal when unconstrained), as double, or as string."),
        )
        .define(
            s(TIME_PRECISION)
                .default_value("adaptive")
                .importance(Importance::Medium)
                .validator(Validator::Custom(time_mode))
                .doc("adaptive: Debezium's millisecond or microsecond types after the column's precision; adaptive_time_microseconds: TIME always in microseconds; connect: Kafka Connect's logical types."),
        )
        .define(
            ConfigKey::new("snapshot.fetch.size", ConfigType::Int)
                .default_value("10240")
                .importance(Importance::Low)
                .validator(Validator::at_least(1.0))
                .doc("Rows per snapshot chunk (a range of heap pages sized from the table's statistics; one chunk per poll, committed with its progress)."),
        )
        .define(
            ConfigKey::new("snapshot.max.threads", ConfigType::Int)
                .default_value("1")
                .importance(Importance::Medium)
                .validator(Validator::between(1.0, 64.0))
                .doc("Parallel snapshot readers, each a session inside the one exported snapshot, reading chunks of any table (Debezium's threads split by table; Sluice's split large tables too)."),
        )
        .define(
            s("interval.handling.mode")
                .default_value("numeric")
                .importance(Importance::Low)
                .validator(Validator::Custom(interval_mode))
                .doc("numeric: INTERVAL as io.debezium.time.MicroDuration (microseconds, a month counted as 30.4375 days)."),
        )
        .define(
            s(SKIPPED_OPERATIONS)
                .default_value("t")
                .importance(Importance::Low)
                .validator(Validator::Custom(skipped_operations))
                .doc("Operations not emitted: comma-separated c (insert), u (update), d (delete), t (truncate), or none."),
        )
        .define(
            ConfigKey::new(SLOT_DROP_ON_STOP, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Low)
                .doc("Drop the slot when the connector stops (for tests: its changes are lost)."),
        )
        .define(
            s(UNAVAILABLE_PLACEHOLDER)
                .default_value("__debezium_unavailable_value")
                .importance(Importance::Low)
                .doc("The value of an unchanged TOASTed column the server did not send."),
        )
        .define(
            ConfigKey::new(HEARTBEAT_INTERVAL, ConfigType::Long)
                .default_value("0")
                .importance(Importance::Medium)
                .validator(Validator::at_least(0.0))
                .doc("How often, while nothing captured is written, a heartbeat record carries the slot's position to Kafka so the slot can be confirmed and PostgreSQL can recycle WAL; 0 sends none."),
        )
        .define(
            s(HEARTBEAT_ACTION_QUERY)
                .default_value("")
                .importance(Importance::Low)
                .doc("SQL run on the database every heartbeat.interval.ms (with heartbeats on), e.g. to write to a heartbeat table; a failure fails the task naming this key."),
        )
        .define(
            s(MESSAGE_KEY_COLUMNS)
                .default_value("")
                .importance(Importance::Low)
                .doc("Custom message keys: <schema>.<table>:<column>,<column>;... (the table a regular expression), instead of the primary key."),
        )
        .define(
            ConfigKey::new(TRANSACTION_METADATA, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Low)
                .doc("BEGIN and END records of each PostgreSQL transaction on <topic.prefix>.<topic.transaction>, and a transaction block (id, total_order, data_collection_order) in each change event, as Debezium's."),
        )
        .define(
            s(TRANSACTION_TOPIC)
                .default_value("transaction")
                .importance(Importance::Low)
                .validator(Validator::NonEmptyString)
                .doc("The name after <topic.prefix>. of the transaction metadata topic."),
        )
        .define(
            s(HEARTBEAT_PREFIX)
                .default_value("__debezium-heartbeat")
                .importance(Importance::Low)
                .validator(Validator::NonEmptyString)
                .doc("Heartbeat records go to <this>.<topic.prefix>."),
        )
        .define(
            s(HSTORE_MODE)
                .default_value("json")
                .importance(Importance::Low)
                .validator(Validator::Custom(hstore_mode))
                .doc("hstore columns as io.debezium.data.Json text (json) or as a MAP of STRING to optional STRING (map)."),
        )
        .define(
            ConfigKey::new(INCLUDE_UNKNOWN, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Low)
                .doc("A column of a type Sluice does not map (hstore, ltree, citext and other extension types; box, circle, line, lseg, path, polygon; composite types) as BYTES holding its text output, instead of leaving it out of the events with a WARN."),
        )
        .define(
            s(SIGNAL_DATA_COLLECTION)
                .default_value("")
                .importance(Importance::Medium)
                .validator(Validator::Custom(signal_table))
                .doc("The signal table, <schema>.<table>, with columns id, type and data (text types, in that order): an execute-snapshot row starts an incremental snapshot, a stop-snapshot row stops it; the task writes its snapshot-window-open/close watermarks there (so the user needs INSERT on it, and the table must be in the publication)."),
        )
        .define(
            ConfigKey::new(SIGNAL_CHANNELS, ConfigType::List)
                .default_value("source")
                .importance(Importance::Low)
                .validator(Validator::Custom(signal_channels))
                .doc("Where signals are read: source (the signal table). The kafka, jmx and file channels are not supported yet."),
        )
        .define(
            ConfigKey::new(INCREMENTAL_CHUNK_SIZE, ConfigType::Int)
                .default_value("1024")
                .importance(Importance::Low)
                .validator(Validator::at_least(1.0))
                .doc("Rows per chunk of an incremental snapshot (each read between two watermarks, held in memory until the stream reaches the second)."),
        )
        .define(
            ConfigKey::new(MAX_BATCH_SIZE, ConfigType::Int)
                .default_value("2048")
                .importance(Importance::Low)
                .validator(Validator::at_least(1.0))
                .doc("Most change events one poll returns (a transaction is never split)."),
        );
    for key in [
        TABLE_INCLUDE,
        TABLE_EXCLUDE,
        SCHEMA_INCLUDE,
        SCHEMA_EXCLUDE,
        COLUMN_INCLUDE,
        COLUMN_EXCLUDE,
    ] {
        def = def.define(
            ConfigKey::new(key, ConfigType::List)
                .optional()
                .importance(Importance::Medium)
                .validator(Validator::Custom(regex_list))
                .doc("Comma-separated regular expressions matched against whole names (schema.table for tables, schema.table.column for columns)."),
        );
    }
    for key in UNSUPPORTED {
        def = def.define(
            ConfigKey::new(key, ConfigType::String)
                .optional()
                .importance(Importance::Low)
                .validator(Validator::Custom(refuse))
                .doc("A Debezium key not supported by Sluice yet: refused when set."),
        );
    }
    def
}

fn refuse(_: &ConfigValue) -> Result<(), String> {
    Err(NOT_YET.to_owned())
}

fn string(value: &ConfigValue) -> &str {
    match value {
        ConfigValue::String(s) => s,
        _ => "",
    }
}

fn topic_prefix(value: &ConfigValue) -> Result<(), String> {
    let p = string(value);
    if !p.is_empty()
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Ok(())
    } else {
        Err("must be non-empty and hold only ASCII letters, digits, '.', '_' and '-' (it starts topic names)".into())
    }
}

fn plugin(value: &ConfigValue) -> Result<(), String> {
    match string(value) {
        "pgoutput" => Ok(()),
        "decoderbufs" => Err(format!(
            "decoderbufs (Debezium's default) is {NOT_YET}: set plugin.name=pgoutput"
        )),
        other => Err(format!(
            "{other} is not a logical decoding plugin Sluice reads (pgoutput)"
        )),
    }
}

fn signal_table(value: &ConfigValue) -> Result<(), String> {
    let s = string(value);
    match s.split_once('.') {
        _ if s.is_empty() => Ok(()),
        Some((schema, table))
            if !schema.is_empty() && !table.is_empty() && !table.contains('.') =>
        {
            Ok(())
        }
        _ => Err(format!("{s:?} is not <schema>.<table>")),
    }
}

fn hstore_mode(value: &ConfigValue) -> Result<(), String> {
    match string(value).to_ascii_lowercase().as_str() {
        "json" | "map" => Ok(()),
        m => Err(format!("{m} is not one of json, map")),
    }
}

fn signal_channels(value: &ConfigValue) -> Result<(), String> {
    if let ConfigValue::List(items) = value {
        for item in items {
            if item.trim() != "source" {
                return Err(format!(
                    "{item:?}: only the source channel (the signal table) is supported by Sluice yet"
                ));
            }
        }
    }
    Ok(())
}

fn slot_name(value: &ConfigValue) -> Result<(), String> {
    let s = string(value);
    if !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(())
    } else {
        Err("a slot name is 1 to 63 lower-case letters, digits or '_' (PostgreSQL's rule)".into())
    }
}

fn autocreate(value: &ConfigValue) -> Result<(), String> {
    match string(value).to_ascii_lowercase().as_str() {
        "all_tables" | "disabled" | "no_tables" | "filtered" => Ok(()),
        m => Err(format!(
            "{m} is not one of all_tables, disabled, filtered, no_tables"
        )),
    }
}

fn interval_mode(value: &ConfigValue) -> Result<(), String> {
    match string(value).to_ascii_lowercase().as_str() {
        "numeric" => Ok(()),
        "string" => Err(format!("string is {NOT_YET}; numeric is")),
        m => Err(format!("{m} is not one of numeric, string")),
    }
}

fn snapshot_mode(value: &ConfigValue) -> Result<(), String> {
    match string(value).to_ascii_lowercase().as_str() {
        "no_data" | "initial" | "initial_only" | "when_needed" | "always" => Ok(()),
        "never" => Err("never was removed in Debezium 3.3; use no_data".into()),
        m if SNAPSHOT_MODES.contains(&m) => Err(format!(
            "{m} is {NOT_YET} (initial, initial_only, when_needed, always and no_data are)"
        )),
        m => Err(format!("{m} is not one of {}", SNAPSHOT_MODES.join(", "))),
    }
}

fn time_mode(value: &ConfigValue) -> Result<(), String> {
    match string(value).to_ascii_lowercase().as_str() {
        "adaptive" | "adaptive_time_microseconds" | "connect" => Ok(()),
        m @ ("isostring" | "microseconds" | "nanoseconds") => Err(format!("{m} is {NOT_YET}")),
        m => Err(format!(
            "{m} is not one of adaptive, adaptive_time_microseconds, connect"
        )),
    }
}

fn skipped_operations(value: &ConfigValue) -> Result<(), String> {
    let s = string(value);
    if s.eq_ignore_ascii_case("none") {
        return Ok(());
    }
    match s
        .split(',')
        .map(str::trim)
        .find(|op| !["c", "u", "d", "t"].contains(op))
    {
        None => Ok(()),
        Some(op) => Err(format!("{op:?} is not an operation (c, u, d, t) or none")),
    }
}

fn regex_list(value: &ConfigValue) -> Result<(), String> {
    if let ConfigValue::List(items) = value {
        for item in items {
            Regex::new(&format!("^(?:{item})$")).map_err(|e| format!("{item:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Which names an include list and an exclude list let through (Debezium's rule: the two
/// lists of a kind exclude each other; no list lets everything through).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Option<Vec<Regex>>,
    exclude: Vec<Regex>,
}

impl Filter {
    fn new(
        parsed: &sluice_proto::config::ParsedConfig,
        include: &str,
        exclude: &str,
    ) -> Result<Self, ConfigErrors> {
        let compile = |key: &str| -> Result<Option<Vec<Regex>>, ConfigErrors> {
            parsed
                .list(key)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    l.iter()
                        .map(|r| {
                            Regex::new(&format!("^(?:{r})$"))
                                .map_err(|e| invalid(key, format!("{r:?}: {e}")))
                        })
                        .collect()
                })
                .transpose()
        };
        let include_list = compile(include)?;
        let exclude_list = compile(exclude)?;
        if include_list.is_some() && exclude_list.is_some() {
            return Err(invalid(
                exclude,
                format!("{include} and {exclude} cannot both be set"),
            ));
        }
        Ok(Filter {
            include: include_list,
            exclude: exclude_list.unwrap_or_default(),
        })
    }

    /// Whether `name` is let through.
    pub fn allows(&self, name: &str) -> bool {
        self.include
            .as_ref()
            .is_none_or(|inc| inc.iter().any(|r| r.is_match(name)))
            && !self.exclude.iter().any(|r| r.is_match(name))
    }
}

/// A PostgreSQL source config, parsed and checked.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub hostname: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub topic_prefix: String,
    pub slot: String,
    pub publication: String,
    pub publication_autocreate: String,
    pub schemas: Filter,
    pub tables: Filter,
    pub columns: Filter,
    pub tombstones_on_delete: bool,
    pub mapping: Mapping,
    /// Operations not emitted: of `c`, `u`, `d`, `t`.
    pub skipped: Vec<char>,
    pub slot_drop_on_stop: bool,
    pub unavailable_placeholder: String,
    pub max_batch_size: usize,
    /// `snapshot.mode`, lower case.
    pub snapshot_mode: String,
    /// `snapshot.fetch.size`: rows per snapshot chunk (one chunk per poll).
    pub snapshot_fetch_size: usize,
    /// `snapshot.max.threads`: parallel snapshot readers.
    pub snapshot_max_threads: usize,
    /// `heartbeat.interval.ms`; `None` when 0.
    pub heartbeat_interval: Option<std::time::Duration>,
    pub heartbeat_prefix: String,
    /// `provide.transaction.metadata`: the topic of BEGIN/END records, if on.
    pub transaction_topic: Option<String>,
    /// `heartbeat.action.query`, if set (run only with heartbeats on).
    pub heartbeat_action_query: Option<String>,
    /// `message.key.columns`: tables (`schema.table` patterns) and their key columns.
    pub message_keys: Vec<(Regex, Vec<String>)>,
    /// `signal.data.collection`: the signal table's schema and name, if set.
    pub signal_table: Option<(String, String)>,
    /// `incremental.snapshot.chunk.size`.
    pub incremental_chunk_size: usize,
}

/// `message.key.columns`: `<table pattern>:<column>,<column>;...`.
fn message_keys(text: &str) -> Result<Vec<(Regex, Vec<String>)>, ConfigErrors> {
    text.split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let Some((table, columns)) = entry.rsplit_once(':') else {
                return Err(invalid(
                    MESSAGE_KEY_COLUMNS,
                    format!("{entry:?} is not <schema>.<table>:<column>[,<column>...]"),
                ));
            };
            let columns: Vec<String> = columns
                .split(',')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect();
            if columns.is_empty() {
                return Err(invalid(
                    MESSAGE_KEY_COLUMNS,
                    format!("{entry:?} names no column"),
                ));
            }
            let pattern = Regex::new(&format!("^(?:{})$", table.trim()))
                .map_err(|e| invalid(MESSAGE_KEY_COLUMNS, format!("{table:?}: {e}")))?;
            Ok((pattern, columns))
        })
        .collect()
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }])
}

impl PostgresConfig {
    /// Parses `props`; every error names its key.
    pub fn parse(props: &Props) -> Result<PostgresConfig, ConfigErrors> {
        let parsed = source_def().parse(props)?;
        let text = |key: &str| -> Result<String, ConfigErrors> {
            parsed
                .string(key)
                .map(str::to_owned)
                .ok_or_else(|| invalid(key, "is required and has no default"))
        };
        let port = parsed
            .long(PORT)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| invalid(PORT, "is not a port"))?;
        let decimal = match text(DECIMAL_HANDLING)?.to_ascii_lowercase().as_str() {
            "double" => DecimalMode::Double,
            "string" => DecimalMode::String,
            _ => DecimalMode::Precise,
        };
        let time = match text(TIME_PRECISION)?.to_ascii_lowercase().as_str() {
            "connect" => TimeMode::Connect,
            "adaptive_time_microseconds" => TimeMode::AdaptiveTimeMicroseconds,
            _ => TimeMode::Adaptive,
        };
        let skipped_text = text(SKIPPED_OPERATIONS)?;
        let skipped = if skipped_text.eq_ignore_ascii_case("none") {
            Vec::new()
        } else {
            skipped_text
                .split(',')
                .filter_map(|op| op.trim().chars().next())
                .collect()
        };
        let signal_table = text(SIGNAL_DATA_COLLECTION)?
            .split_once('.')
            .map(|(schema, table)| (schema.to_owned(), table.to_owned()));
        if text(SNAPSHOT_MODE)?.eq_ignore_ascii_case("always") && signal_table.is_none() {
            return Err(invalid(
                SNAPSHOT_MODE,
                "always reads every table again at each start as an incremental snapshot (streaming goes on meanwhile, so nothing is stale or lost), which needs the signal table: set signal.data.collection",
            ));
        }
        Ok(PostgresConfig {
            hostname: text(HOSTNAME)?,
            port,
            user: text(USER)?,
            password: parsed
                .password(PASSWORD)
                .map(|p| p.expose().to_owned())
                .unwrap_or_default(),
            dbname: text(DBNAME)?,
            topic_prefix: text(TOPIC_PREFIX)?,
            slot: text(SLOT_NAME)?,
            publication: text(PUBLICATION_NAME)?,
            publication_autocreate: text(PUBLICATION_AUTOCREATE)?.to_ascii_lowercase(),
            schemas: Filter::new(&parsed, SCHEMA_INCLUDE, SCHEMA_EXCLUDE)?,
            tables: Filter::new(&parsed, TABLE_INCLUDE, TABLE_EXCLUDE)?,
            columns: Filter::new(&parsed, COLUMN_INCLUDE, COLUMN_EXCLUDE)?,
            tombstones_on_delete: parsed.boolean(TOMBSTONES_ON_DELETE).unwrap_or(true),
            mapping: Mapping {
                decimal,
                time,
                unknown: parsed.boolean(INCLUDE_UNKNOWN).unwrap_or(false),
                hstore: if text(HSTORE_MODE)?.eq_ignore_ascii_case("map") {
                    HstoreMode::Map
                } else {
                    HstoreMode::Json
                },
                // Looked up in the database when a task starts.
                extensions: Extensions::NONE,
            },
            skipped,
            slot_drop_on_stop: parsed.boolean(SLOT_DROP_ON_STOP).unwrap_or(false),
            unavailable_placeholder: text(UNAVAILABLE_PLACEHOLDER)?,
            max_batch_size: parsed
                .long(MAX_BATCH_SIZE)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(2048),
            heartbeat_interval: parsed
                .long(HEARTBEAT_INTERVAL)
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0)
                .map(std::time::Duration::from_millis),
            heartbeat_prefix: text(HEARTBEAT_PREFIX)?,
            message_keys: message_keys(&text(MESSAGE_KEY_COLUMNS)?)?,
            heartbeat_action_query: Some(text(HEARTBEAT_ACTION_QUERY)?)
                .filter(|q| !q.trim().is_empty()),
            transaction_topic: if parsed.boolean(TRANSACTION_METADATA).unwrap_or(false) {
                Some(format!(
                    "{}.{}",
                    text(TOPIC_PREFIX)?,
                    text(TRANSACTION_TOPIC)?
                ))
            } else {
                None
            },
            snapshot_mode: text(SNAPSHOT_MODE)?.to_ascii_lowercase(),
            snapshot_fetch_size: parsed
                .long("snapshot.fetch.size")
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(10_240),
            snapshot_max_threads: parsed
                .long("snapshot.max.threads")
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1),
            signal_table,
            incremental_chunk_size: parsed
                .long(INCREMENTAL_CHUNK_SIZE)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1024),
        })
    }

    /// The message key columns `message.key.columns` gives `schema.table`, if it names it.
    pub fn message_key(&self, schema: &str, table: &str) -> Option<&[String]> {
        let name = format!("{schema}.{table}");
        self.message_keys
            .iter()
            .find(|(pattern, _)| pattern.is_match(&name))
            .map(|(_, columns)| columns.as_slice())
    }

    /// Whether changes of `schema.table` are captured.
    pub fn captures(&self, schema: &str, table: &str) -> bool {
        self.schemas.allows(schema) && self.tables.allows(&format!("{schema}.{table}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_key_columns_parse_as_debezium_writes_them() {
        let keys = message_keys("inventory.customers:pk1,pk2;(.*).purchaseorders:pk3").unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys[0].0.is_match("inventory.customers"));
        assert_eq!(keys[0].1, ["pk1", "pk2"]);
        assert!(keys[1].0.is_match("sales.purchaseorders"));
        assert!(!keys[1].0.is_match("sales.purchaseorders2"));
        let e = message_keys("inventory.customers").unwrap_err();
        assert!(e.to_string().contains(MESSAGE_KEY_COLUMNS), "{e}");
        assert!(message_keys("t:").is_err());
        assert!(message_keys("").unwrap().is_empty());
    }

    fn props(pairs: &[(&str, &str)]) -> Props {
        let mut p: Props = [
            ("database.hostname", "db"),
            ("database.user", "u"),
            ("database.dbname", "shop"),
            ("topic.prefix", "shop"),
            ("plugin.name", "pgoutput"),
            ("snapshot.mode", "no_data"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in pairs {
            p.insert((*k).to_owned(), (*v).to_owned());
        }
        p
    }

    fn refused(pairs: &[(&str, &str)], key: &str, fragment: &str) {
        let errors = PostgresConfig::parse(&props(pairs))
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(
            errors
                .iter()
                .any(|e| e.key == key && e.message.contains(fragment)),
            "{pairs:?}: {errors:?} should refuse {key} with {fragment:?}"
        );
    }

    #[test]
    fn a_debezium_config_parses_with_debeziums_defaults() -> Result<(), ConfigErrors> {
        let c = PostgresConfig::parse(&props(&[("table.include.list", "public.orders,inv\\..*")]))?;
        assert_eq!(
            (c.port, c.slot.as_str(), c.publication.as_str()),
            (5432, "debezium", "dbz_publication")
        );
        assert!(c.tombstones_on_delete && !c.slot_drop_on_stop);
        assert_eq!(c.skipped, vec!['t']);
        assert_eq!(c.mapping.decimal, DecimalMode::Precise);
        assert!(c.captures("public", "orders") && c.captures("inv", "items"));
        assert!(!c.captures("public", "orders_old") && !c.captures("public", "users"));
        Ok(())
    }

    #[test]
    fn what_is_not_built_is_refused_by_name() {
        refused(&[("plugin.name", "decoderbufs")], PLUGIN_NAME, "pgoutput");
        refused(&[("snapshot.mode", "custom")], SNAPSHOT_MODE, "no_data");
        refused(
            &[("snapshot.mode", "always")],
            SNAPSHOT_MODE,
            "signal.data.collection",
        );
        refused(&[("snapshot.mode", "never")], SNAPSHOT_MODE, "3.3");
        refused(
            &[("database.sslmode", "require")],
            "database.sslmode",
            NOT_YET,
        );
        refused(
            &[("time.precision.mode", "isostring")],
            TIME_PRECISION,
            NOT_YET,
        );
        refused(
            &[("skipped.operations", "c,x")],
            SKIPPED_OPERATIONS,
            "\"x\"",
        );
        refused(&[("slot.name", "Bad-Slot")], SLOT_NAME, "lower-case");
        refused(
            &[("table.include.list", "a"), ("table.exclude.list", "b")],
            TABLE_EXCLUDE,
            "cannot both",
        );
        refused(&[("table.include.list", "(")], TABLE_INCLUDE, "\"(\"");
        refused(
            &[("signal.data.collection", "debezium_signal")],
            SIGNAL_DATA_COLLECTION,
            "<schema>.<table>",
        );
        refused(
            &[("signal.enabled.channels", "source,kafka")],
            SIGNAL_CHANNELS,
            "kafka",
        );
    }
}

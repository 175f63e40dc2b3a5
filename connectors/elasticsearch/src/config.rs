//! The Elasticsearch sink's configuration keys, as Confluent's Elasticsearch sink names them.

use sluice_proto::{ConfigDef, ConfigKey, ConfigType, Importance, Validator};

/// Comma-separated node URLs.
pub const URL: &str = "connection.url";
/// Basic auth user.
pub const USER: &str = "connection.username";
/// Basic auth password.
pub const PASSWORD: &str = "connection.password";
/// Mapping type: accepted, ignored (servers since 7 have none).
pub const TYPE_NAME: &str = "type.name";
/// `_id` = topic+partition+offset instead of the record key.
pub const KEY_IGNORE: &str = "key.ignore";
/// Index the value without its Connect schema.
pub const SCHEMA_IGNORE: &str = "schema.ignore";
/// Retries of a failed bulk request (or of its failed items).
pub const MAX_RETRIES: &str = "max.retries";
/// First backoff between retries.
pub const RETRY_BACKOFF: &str = "retry.backoff.ms";
/// Bound for each HTTP request.
pub const READ_TIMEOUT: &str = "read.timeout.ms";
/// `ignore`, `delete` or `fail` on a null value.
pub const NULL_VALUES: &str = "behavior.on.null.values";
/// `ignore`, `warn` or `fail` on a document the server rejects.
pub const MALFORMED: &str = "behavior.on.malformed.documents";
/// `insert` or `upsert`.
pub const WRITE_METHOD: &str = "write.method";

/// The keys.
pub fn sink_def() -> ConfigDef {
    ConfigDef::new()
        .define(
            ConfigKey::new(URL, ConfigType::List)
                .importance(Importance::High)
                .doc("The URLs of the Elasticsearch or OpenSearch nodes."),
        )
        .define(ConfigKey::new(USER, ConfigType::String).optional().importance(Importance::Medium))
        .define(ConfigKey::new(PASSWORD, ConfigType::Password).optional().importance(Importance::Medium))
        .define(
            ConfigKey::new(TYPE_NAME, ConfigType::String)
                .optional()
                .importance(Importance::Low)
                .doc("Accepted for old configs; mapping types no longer exist, so it is ignored with a warning."),
        )
        .define(ConfigKey::new(KEY_IGNORE, ConfigType::Boolean).default_value("false").importance(Importance::High)
            .doc("true: the document id is topic+partition+offset; false: the record key, versioned by offset."))
        .define(ConfigKey::new(SCHEMA_IGNORE, ConfigType::Boolean).default_value("false").importance(Importance::Low))
        .define(ConfigKey::new(MAX_RETRIES, ConfigType::Int).default_value("5").importance(Importance::Low).validator(Validator::at_least(0.0)))
        .define(ConfigKey::new(RETRY_BACKOFF, ConfigType::Long).default_value("100").importance(Importance::Low).validator(Validator::at_least(0.0)))
        .define(ConfigKey::new(READ_TIMEOUT, ConfigType::Int).default_value("15000").importance(Importance::Low).validator(Validator::at_least(1.0)))
        .define(ConfigKey::new("batch.size", ConfigType::Int).default_value("2000").importance(Importance::Low))
        .define(ConfigKey::new("linger.ms", ConfigType::Long).default_value("1").importance(Importance::Low))
        .define(ConfigKey::new("max.in.flight.requests", ConfigType::Int).default_value("5").importance(Importance::Low))
        .define(ConfigKey::new("flush.timeout.ms", ConfigType::Long).default_value("180000").importance(Importance::Low))
        .define(
            ConfigKey::new(NULL_VALUES, ConfigType::String)
                .default_value("fail")
                .importance(Importance::Low)
                .validator(Validator::OneOf(&["ignore", "delete", "fail"])),
        )
        .define(
            ConfigKey::new(MALFORMED, ConfigType::String)
                .default_value("fail")
                .importance(Importance::Low)
                .validator(Validator::OneOf(&["ignore", "warn", "fail"])),
        )
        .define(
            ConfigKey::new(WRITE_METHOD, ConfigType::String)
                .default_value("insert")
                .importance(Importance::Low)
                .validator(Validator::OneOf(&["insert", "upsert"])),
        )
}

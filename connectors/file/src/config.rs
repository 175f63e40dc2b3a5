//! The file connectors' configuration keys, as in Kafka Connect's `FileStreamSourceConnector`
//! and `FileStreamSinkConnector`.

use sluice_proto::{ConfigDef, ConfigKey, ConfigType, Importance, Validator};

/// Source file path.
pub const FILE: &str = "file";
/// Destination topic.
pub const TOPIC: &str = "topic";
/// Most lines returned by one poll.
pub const BATCH_SIZE: &str = "batch.size";

/// The source connector's keys.
pub fn source_def() -> ConfigDef {
    ConfigDef::new()
        .define(
            ConfigKey::new(FILE, ConfigType::String)
                .importance(Importance::High)
                .validator(Validator::NonEmptyString)
                .doc("The file to read, line by line. It may grow while it is read."),
        )
        .define(
            ConfigKey::new(TOPIC, ConfigType::String)
                .importance(Importance::High)
                .validator(Validator::NonEmptyString)
                .doc("The topic the lines are written to."),
        )
        .define(
            ConfigKey::new(BATCH_SIZE, ConfigType::Int)
                .default_value("2000")
                .importance(Importance::Low)
                .validator(Validator::at_least(1.0))
                .doc("The most lines one poll returns."),
        )
}

/// The sink connector's keys (`topics` and `topics.regex` are the runtime's).
pub fn sink_def() -> ConfigDef {
    ConfigDef::new().define(
        ConfigKey::new(FILE, ConfigType::String)
            .importance(Importance::High)
            .validator(Validator::NonEmptyString)
            .doc("The file the records' values are appended to, one per line."),
    )
}

//! The Kafka replicator: a sink connector whose output is Kafka itself. It copies `topics`
//! (or `topics.regex`) to `topic.rename.format` topics, through the connector's transforms,
//! and the runtime writes its output and the consumer offsets in one transaction, so each
//! input record appears exactly once in the output for read_committed readers, whenever
//! the worker is killed. Records are copied byte for byte unless transforms are set (then
//! the connector's converters, ByteArrayConverter by default, decode and re-encode them).
//! Output and input are the same cluster: the offsets must commit with the transaction.

use sluice_proto::{
    ConfigDef, ConfigKey, ConfigType, Connector, ConnectorError, Importance, Props,
};

/// The class names the replicator answers to.
pub const ALIASES: &[&str] = &[
    "io.sluice.connect.kafka.KafkaReplicatorConnector",
    "KafkaReplicator",
    "KafkaReplicatorConnector",
];

/// `topic.rename.format`.
pub const RENAME: &str = "topic.rename.format";
/// `topic.preserve.partitions`.
pub const PRESERVE: &str = "topic.preserve.partitions";
/// `commit.interval.ms`.
pub const COMMIT_INTERVAL: &str = "commit.interval.ms";

/// The connector: its tasks share the input partitions through the consumer group.
#[derive(Debug, Default)]
pub struct Replicator;

fn validate_rename(value: &sluice_proto::ConfigValue) -> Result<(), String> {
    match value {
        sluice_proto::ConfigValue::String(s) if s.contains("${topic}") => Ok(()),
        sluice_proto::ConfigValue::String(_) => Err(
            "must contain ${topic}: a fixed name would merge every input topic into one, and copying a topic onto itself loops"
                .into(),
        ),
        _ => Err("must be a string".into()),
    }
}

impl Connector for Replicator {
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new()
            .define(
                ConfigKey::new(RENAME, ConfigType::String)
                    .default_value("${topic}.replica")
                    .importance(Importance::High)
                    .validator(sluice_proto::Validator::Custom(validate_rename))
                    .doc("The output topic's name; ${topic} is the input topic's."),
            )
            .define(
                ConfigKey::new(PRESERVE, ConfigType::Boolean)
                    .default_value("true")
                    .importance(Importance::Medium)
                    .doc("Write each record to its input partition (missing output topics are created with the input's partition count); false partitions by key."),
            )
            .define(
                ConfigKey::new(COMMIT_INTERVAL, ConfigType::Long)
                    .default_value("100")
                    .importance(Importance::Medium)
                    .validator(sluice_proto::Validator::at_least(1.0))
                    .doc("How often the open transaction (output records plus consumer offsets) commits; read_committed readers see records this late."),
            )
    }

    fn task_configs(&self, config: &Props, max_tasks: u32) -> Result<Vec<Props>, ConnectorError> {
        Ok((0..max_tasks.max(1)).map(|_| config.clone()).collect())
    }
}

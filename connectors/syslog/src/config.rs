//! The syslog source's configuration keys, as Confluent's syslog source names them.

use sluice_proto::{ConfigDef, ConfigKey, ConfigType, Importance, Validator};

/// Destination topic.
pub const TOPIC: &str = "kafka.topic";
/// Port to listen on.
pub const PORT: &str = "syslog.port";
/// Address to listen on.
pub const LISTEN: &str = "syslog.listen.address";
/// Look up the peer's host name.
pub const REVERSE_DNS: &str = "syslog.reverse.dns.remote.ip";
/// The largest message kept whole (Sluice's key).
pub const MAX_MESSAGE: &str = "syslog.max.message.bytes";
/// Most records one poll returns.
pub const BATCH: &str = "batch.size";
/// RELP: how many recent messages per peer a resend is recognised against (Sluice's key).
pub const RELP_WINDOW: &str = "syslog.relp.dedupe.window";

/// The keys.
pub fn source_def() -> ConfigDef {
    ConfigDef::new()
        .define(
            ConfigKey::new(TOPIC, ConfigType::String)
                .importance(Importance::High)
                .validator(Validator::NonEmptyString)
                .doc("The topic the messages are written to."),
        )
        .define(
            ConfigKey::new(PORT, ConfigType::Int)
                .importance(Importance::High)
                .validator(Validator::at_least(1.0))
                .doc("The port to listen on."),
        )
        .define(
            ConfigKey::new(LISTEN, ConfigType::String)
                .default_value("0.0.0.0")
                .importance(Importance::Medium)
                .doc("The address to listen on."),
        )
        .define(
            ConfigKey::new(REVERSE_DNS, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Low)
                .doc("Resolve the peer's address to a name for the hostname field (loopback and /etc/hosts only: the name is looked up without a DNS client)."),
        )
        .define(
            ConfigKey::new(MAX_MESSAGE, ConfigType::Int)
                .default_value("65536")
                .importance(Importance::Low)
                .validator(Validator::at_least(64.0))
                .doc("Messages longer than this are cut to this many bytes, logged and counted."),
        )
        .define(
            ConfigKey::new(BATCH, ConfigType::Int)
                .default_value("1000")
                .importance(Importance::Low)
                .validator(Validator::at_least(1.0))
                .doc("The most messages one poll returns."),
        )
        .define(
            ConfigKey::new(RELP_WINDOW, ConfigType::Int)
                .default_value("512")
                .importance(Importance::Low)
                .validator(Validator::at_least(0.0))
                .doc("RELP only: fingerprints of this many recent messages per peer are committed with the offsets, so a message the client resends after a crash (it had no acknowledgement yet) is recognised and not written twice. Keep it at least the sum of the peer's omrelp window sizes (128 each by default); 0 turns recognition off (resends are then written again)."),
        )
}

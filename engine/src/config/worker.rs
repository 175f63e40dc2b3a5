//! The worker's configuration, with Kafka Connect's keys, defaults and meaning, checked
//! against a [`ConfigDef`] at start: a malformed value stops the process with a message
//! naming the key; an unknown key is warned about, never silently ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use sluice_proto::config::{
    ConfigDef, ConfigError, ConfigErrors, ConfigKey, ConfigType, Importance, Validator,
};

const JSON_CONVERTER: &str = "org.apache.kafka.connect.json.JsonConverter";

/// How the worker is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connectors from the command line (`connect-standalone`).
    Standalone,
    /// Connectors managed over REST, state in Kafka (`connect-distributed`).
    Distributed,
}

/// The worker's config definition.
pub fn config_def() -> ConfigDef {
    use ConfigType::{Class, Int, List, Long};
    use Importance::{High, Low, Medium};
    ConfigDef::new()
        .define(
            ConfigKey::new("bootstrap.servers", List)
                .default_value("localhost:9092")
                .importance(High)
                .doc("Kafka brokers to bootstrap from, host:port, comma-separated."),
        )
        .define(
            ConfigKey::new("group.id", ConfigType::String)
                .optional()
                .importance(High)
                .doc("The Connect cluster this worker belongs to; required in distributed mode."),
        )
        .define(
            ConfigKey::new("log.format", ConfigType::String)
                .default_value("text")
                .validator(sluice_proto::Validator::OneOf(&["text", "json"]))
                .importance(Low)
                .doc("Log lines on stderr: text, or one JSON object per line (fields such as connector and task at the top level)."),
        )
        .define(storage_topic("offset.storage.topic", "Topic holding source offsets."))
        .define(storage_topic("config.storage.topic", "Topic holding connector and task configs."))
        .define(storage_topic("status.storage.topic", "Topic holding connector and task status."))
        .define(replication("offset.storage.replication.factor"))
        .define(replication("config.storage.replication.factor"))
        .define(replication("status.storage.replication.factor"))
        .define(partitions("offset.storage.partitions", "25"))
        .define(partitions("status.storage.partitions", "5"))
        .define(
            ConfigKey::new("key.converter", Class)
                .default_value(JSON_CONVERTER)
                .importance(High)
                .doc("Converter between record keys and Kafka bytes."),
        )
        .define(
            ConfigKey::new("value.converter", Class)
                .default_value(JSON_CONVERTER)
                .importance(High)
                .doc("Converter between record values and Kafka bytes."),
        )
        .define(
            ConfigKey::new("header.converter", Class)
                .default_value("org.apache.kafka.connect.storage.SimpleHeaderConverter")
                .importance(Low)
                .doc("Converter between header values and Kafka bytes."),
        )
        .define(
            ConfigKey::new("exactly.once.source.support", ConfigType::String)
                .default_value("disabled")
                .importance(High)
                .validator(Validator::OneOf(&["disabled", "preparing", "enabled"]))
                .doc("Whether source tasks write records and offsets in Kafka transactions (KIP-618)."),
        )
        .define(
            ConfigKey::new("listeners", List)
                .default_value("http://127.0.0.1:8083")
                .importance(Low)
                .validator(Validator::Custom(validate_listeners))
                .doc("REST listeners, as http://host:port, comma-separated."),
        )
        .define(ConfigKey::new("rest.advertised.host.name", ConfigType::String).optional().importance(Low))
        .define(ConfigKey::new("rest.advertised.port", Int).optional().importance(Low))
        .define(ConfigKey::new("rest.advertised.listener", ConfigType::String).optional().importance(Low))
        // Cluster membership (Kafka Connect's distributed keys; Sluice's defaults are
        // shorter, for failover within seconds: 6 s is the broker's minimum session).
        .define(
            ConfigKey::new("session.timeout.ms", Int)
                .default_value("6000")
                .importance(High)
                .validator(Validator::at_least(1.0))
                .doc("A worker that does not heartbeat for this long leaves the cluster; its work moves."),
        )
        .define(
            ConfigKey::new("heartbeat.interval.ms", Int)
                .default_value("1000")
                .importance(High)
                .validator(Validator::at_least(1.0))
                .doc("How often a worker heartbeats to the group coordinator; below session.timeout.ms."),
        )
        .define(
            ConfigKey::new("rebalance.timeout.ms", Int)
                .default_value("60000")
                .importance(High)
                .validator(Validator::at_least(1.0))
                .doc("How long a rebalance waits for every worker to join."),
        )
        .define(
            ConfigKey::new("scheduled.rebalance.max.delay.ms", Int)
                .default_value("0")
                .importance(Low)
                .validator(Validator::at_least(0.0))
                .doc("How long the leader holds the work of a worker that left the cluster, waiting for it (or another worker) to join, before handing that work to the others (KIP-415). Kafka Connect's default is 300000; Sluice's is 0: lost work moves at once."),
        )
        .define(
            ConfigKey::new("topic.tracking.enable", ConfigType::Boolean)
                .default_value("true")
                .importance(Low)
                .doc("Track the topics each connector uses (KIP-558): GET /connectors/{name}/topics; when false, that endpoint answers 403 and nothing is recorded."),
        )
        .define(
            ConfigKey::new("topic.tracking.allow.reset", ConfigType::Boolean)
                .default_value("true")
                .importance(Low)
                .doc("Allow PUT /connectors/{name}/topics/reset; when false it answers 403."),
        )
        .define(
            ConfigKey::new("sluice.cluster.membership", ConfigType::String)
                .default_value("group")
                .importance(Low)
                .validator(Validator::OneOf(&["none", "group"]))
                .doc("Sluice's own: `group` (the default) makes `sluice worker` join group.id as a cluster member (connectors and tasks spread over the workers, as in Kafka Connect's distributed mode); `none` runs every stored connector on this worker alone."),
        )
        .define(
            ConfigKey::new("plugin.path", List)
                .optional()
                .importance(Low)
                .doc("Accepted for compatibility; Sluice's connectors are built in."),
        )
        .define(
            ConfigKey::new("offset.flush.interval.ms", Long)
                .default_value("60000")
                .importance(Low)
                .validator(Validator::at_least(1.0))
                .doc("How often at-least-once source tasks commit offsets."),
        )
        .define(
            ConfigKey::new("offset.flush.timeout.ms", Long)
                .default_value("5000")
                .importance(Low)
                .validator(Validator::at_least(1.0)),
        )
        .define(
            ConfigKey::new("task.shutdown.graceful.timeout.ms", Long)
                .default_value("5000")
                .importance(Low)
                .validator(Validator::at_least(0.0)),
        )
        .define(ConfigKey::new("offset.storage.file.filename", ConfigType::String).optional().importance(Low))
        // Sluice's own: Kafka Connect leaves failed tasks failed; Sluice restarts them.
        .define(
            ConfigKey::new("task.restart.max.attempts", Int)
                .default_value("5")
                .importance(Low)
                .validator(Validator::at_least(0.0))
                .doc("Automatic restarts of a failed task before it is FAILED."),
        )
        .define(
            ConfigKey::new("task.restart.backoff.initial.ms", Long)
                .default_value("1000")
                .importance(Low)
                .validator(Validator::at_least(0.0))
                .doc("Wait before the first automatic restart; doubles each time."),
        )
        .define(
            ConfigKey::new("task.restart.backoff.max.ms", Long)
                .default_value("60000")
                .importance(Low)
                .validator(Validator::at_least(0.0))
                .doc("Ceiling of the restart backoff."),
        )
        .define(ConfigKey::new("client.id", ConfigType::String).default_value("").importance(Low))
        .define(
            ConfigKey::new("connector.client.config.override.policy", ConfigType::String)
                .default_value("All")
                .importance(Medium)
                .validator(Validator::OneOf(&["All", "None", "Principal"])),
        )
        .define(
            ConfigKey::new("security.protocol", ConfigType::String)
                .default_value("PLAINTEXT")
                .importance(Medium)
                .validator(Validator::OneOf(&["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])),
        )
        .pass_through("producer.")
        .pass_through("consumer.")
        .pass_through("admin.")
        .pass_through("key.converter.")
        .pass_through("value.converter.")
        .pass_through("header.converter.")
        .pass_through("ssl.")
        .pass_through("sasl.")
}

fn storage_topic(name: &'static str, doc: &'static str) -> ConfigKey {
    ConfigKey::new(name, ConfigType::String)
        .optional()
        .importance(Importance::High)
        .validator(Validator::NonEmptyString)
        .doc(doc)
}

fn replication(name: &'static str) -> ConfigKey {
    ConfigKey::new(name, ConfigType::Short)
        .default_value("3")
        .importance(Importance::Low)
        // -1 means "the broker's default", as in Kafka Connect.
        .validator(Validator::Custom(|v| match v {
            sluice_proto::ConfigValue::Short(n) if *n == -1 || *n >= 1 => Ok(()),
            _ => Err("must be -1 (broker default) or at least 1".to_owned()),
        }))
}

fn partitions(name: &'static str, default: &'static str) -> ConfigKey {
    ConfigKey::new(name, ConfigType::Int)
        .default_value(default)
        .importance(Importance::Low)
        .validator(Validator::at_least(1.0))
}

fn validate_listeners(value: &sluice_proto::ConfigValue) -> Result<(), String> {
    let sluice_proto::ConfigValue::List(urls) = value else {
        return Err("expected a list".to_owned());
    };
    if urls.is_empty() {
        return Err("needs at least one listener".to_owned());
    }
    for url in urls {
        parse_listener(url)?;
    }
    Ok(())
}

/// `http://host:port` -> a socket address. An empty host means all interfaces, as in
/// Kafka Connect's `http://:8083`.
pub fn parse_listener(url: &str) -> Result<SocketAddr, String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => return Err(format!("{url}: https listeners are not supported yet")),
        _ => return Err(format!("{url}: expected http://host:port")),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{url}: missing port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{url}: bad port {port:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "" | "0.0.0.0" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        other => other,
    };
    let ip = host
        .parse()
        .map_err(|_| format!("{url}: host must be an IP address or localhost"))?;
    Ok(SocketAddr::new(ip, port))
}

/// The parsed worker configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How the worker runs.
    pub mode: Mode,
    /// `bootstrap.servers`, joined for librdkafka.
    pub bootstrap_servers: String,
    /// `group.id`.
    pub group_id: Option<String>,
    /// REST listener addresses.
    pub listeners: Vec<SocketAddr>,
    /// `log.format`.
    pub log_format: crate::telemetry::LogFormat,
    /// Keys neither defined nor passed through: warned about at start.
    pub unknown_keys: Vec<String>,
    /// The whole parsed config, for the keys later parts of the engine read.
    pub parsed: sluice_proto::ParsedConfig,
}

impl WorkerConfig {
    /// Checks `props` for `mode`; every error names its key.
    pub fn parse(props: &BTreeMap<String, String>, mode: Mode) -> Result<Self, ConfigErrors> {
        let parsed = config_def().parse(props)?;
        if mode == Mode::Distributed {
            let missing: Vec<ConfigError> = [
                "group.id",
                "offset.storage.topic",
                "config.storage.topic",
                "status.storage.topic",
            ]
            .into_iter()
            .filter(|k| parsed.string(k).is_none())
            .map(|k| ConfigError {
                key: k.to_owned(),
                message: "is required in distributed mode".to_owned(),
            })
            .collect();
            if !missing.is_empty() {
                return Err(ConfigErrors(missing));
            }
        }
        let listeners = parsed
            .list("listeners")
            .unwrap_or_default()
            .iter()
            .map(|l| parse_listener(l))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| {
                ConfigErrors(vec![ConfigError {
                    key: "listeners".into(),
                    message,
                }])
            })?;
        Ok(WorkerConfig {
            mode,
            bootstrap_servers: parsed
                .list("bootstrap.servers")
                .unwrap_or_default()
                .join(","),
            group_id: parsed.string("group.id").map(str::to_owned),
            listeners,
            log_format: match parsed.string("log.format") {
                Some("json") => crate::telemetry::LogFormat::Json,
                _ => crate::telemetry::LogFormat::Text,
            },
            unknown_keys: parsed.unknown_keys().to_vec(),
            parsed,
        })
    }

    /// Client settings every Kafka client of this worker shares (security, `client.id`),
    /// plus the `<prefix>` pass-through keys (`producer.`, `consumer.`, `admin.`), which win.
    pub fn kafka_client_props(&self, prefix: &str) -> BTreeMap<String, String> {
        let mut props = self.security_props();
        props.insert(
            "bootstrap.servers".to_owned(),
            self.bootstrap_servers.clone(),
        );
        props.extend(self.parsed.with_prefix(prefix));
        props
    }

    /// The worker-level security settings (`security.protocol`, `ssl.*`, `sasl.*`) in
    /// librdkafka's spelling: what every connection of this worker to Kafka uses,
    /// the cluster's group member's included.
    pub fn security_props(&self) -> BTreeMap<String, String> {
        let mut props = BTreeMap::new();
        if let Some(protocol) = self.parsed.string("security.protocol") {
            props.insert(
                "security.protocol".to_owned(),
                protocol.to_ascii_lowercase(),
            );
        }
        for (k, v) in self.parsed.originals() {
            if k.starts_with("ssl.") || k.starts_with("sasl.") {
                props.insert(k.clone(), v.clone());
            }
        }
        props
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn kafka_connects_distributed_sample_parses() {
        let p = props(&[
            ("bootstrap.servers", "127.0.0.1:9092"),
            ("group.id", "connect-cluster"),
            (
                "key.converter",
                "org.apache.kafka.connect.json.JsonConverter",
            ),
            ("key.converter.schemas.enable", "true"),
            ("offset.storage.topic", "connect-offsets"),
            ("offset.storage.replication.factor", "1"),
            ("config.storage.topic", "connect-configs"),
            ("config.storage.replication.factor", "1"),
            ("status.storage.topic", "connect-status"),
            ("status.storage.replication.factor", "1"),
            ("offset.flush.interval.ms", "10000"),
            ("listeners", "http://:8083"),
            ("producer.linger.ms", "5"),
        ]);
        let c = WorkerConfig::parse(&p, Mode::Distributed).unwrap();
        assert_eq!(c.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(c.group_id.as_deref(), Some("connect-cluster"));
        assert_eq!(c.listeners, ["0.0.0.0:8083".parse().unwrap()]);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert_eq!(c.kafka_client_props("producer.")["linger.ms"], "5");
        assert_eq!(
            c.kafka_client_props("producer.")["security.protocol"],
            "plaintext"
        );
    }

    #[test]
    fn distributed_mode_requires_the_storage_topics() {
        let e = WorkerConfig::parse(&props(&[("group.id", "g")]), Mode::Distributed).unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "offset.storage.topic",
                "config.storage.topic",
                "status.storage.topic"
            ]
        );
        assert!(WorkerConfig::parse(&props(&[]), Mode::Standalone).is_ok());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value, fragment) in [
            ("listeners", "ftp://x:1", "expected http://host:port"),
            ("listeners", "http://127.0.0.1:99999", "bad port"),
            ("exactly.once.source.support", "maybe", "one of"),
            ("offset.storage.replication.factor", "0", "-1"),
            ("offset.flush.interval.ms", "soon", "64-bit"),
        ] {
            let e = WorkerConfig::parse(&props(&[(key, value)]), Mode::Standalone).unwrap_err();
            assert_eq!(e.0[0].key, key);
            assert!(e.to_string().contains(fragment), "{key}={value}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_kept_for_a_warning() {
        let c =
            WorkerConfig::parse(&props(&[("bootstrap.server", "x:1")]), Mode::Standalone).unwrap();
        assert_eq!(c.unknown_keys, ["bootstrap.server"]);
    }
}

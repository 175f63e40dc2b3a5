//! The explicit registry of connectors built into Sluice, with the class names the Kafka
//! ecosystem knows them by, so configs written for Kafka Connect work unchanged.

use sluice_proto::{Connector, SinkConnector, SourceConnector};

/// A source connector constructor.
pub type SourceCtor = fn() -> Box<dyn SourceConnector>;

/// A sink connector constructor.
pub type SinkCtor = fn() -> Box<dyn SinkConnector>;

/// What a plugin is, and how to build it.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Reads an outside system into Kafka.
    Source(SourceCtor),
    /// Writes Kafka records to an outside system.
    Sink(SinkCtor),
    /// A sink whose output is Kafka itself, written by the runtime in the same transaction
    /// as the consumer offsets (exactly-once Kafka -> Kafka).
    KafkaSink,
}

/// A connector plugin.
#[derive(Clone, Copy)]
pub struct Plugin {
    /// The canonical class name (reported by the REST API).
    pub class: &'static str,
    /// Other names accepted in `connector.class`.
    pub aliases: &'static [&'static str],
    /// Constructor.
    pub kind: Kind,
}

impl Plugin {
    /// A fresh connector instance (for its config definition and task configs).
    pub fn connector(&self) -> Box<dyn Connector> {
        match self.kind {
            Kind::Source(ctor) => ctor(),
            Kind::Sink(ctor) => ctor(),
            Kind::KafkaSink => Box::new(crate::replicator::Replicator),
        }
    }

    /// `source` or `sink`, as the REST API's plugin list says.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Source(_) => "source",
            Kind::Sink(_) | Kind::KafkaSink => "sink",
        }
    }

    /// Whether the connector consumes topics.
    pub fn is_sink(&self) -> bool {
        !matches!(self.kind, Kind::Source(_))
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

fn file_source() -> Box<dyn SourceConnector> {
    Box::new(sluice_connector_file::FileSource)
}

fn syslog_tcp() -> Box<dyn SourceConnector> {
    Box::new(sluice_connector_syslog::SyslogSource(
        sluice_connector_syslog::Protocol::Tcp,
    ))
}

fn syslog_udp() -> Box<dyn SourceConnector> {
    Box::new(sluice_connector_syslog::SyslogSource(
        sluice_connector_syslog::Protocol::Udp,
    ))
}

fn syslog_generic() -> Box<dyn SourceConnector> {
    Box::new(sluice_connector_syslog::SyslogSource(
        sluice_connector_syslog::Protocol::Listener,
    ))
}

fn syslog_relp() -> Box<dyn SourceConnector> {
    Box::new(sluice_connector_syslog::SyslogSource(
        sluice_connector_syslog::Protocol::Relp,
    ))
}

fn datagen_source() -> Box<dyn SourceConnector> {
    Box::new(sluice_connector_datagen::DatagenSource)
}

fn elasticsearch_sink() -> Box<dyn SinkConnector> {
    Box::new(sluice_connector_elasticsearch::ElasticsearchSink)
}

fn postgres_source() -> Box<dyn SourceConnector> {
    Box::new(sluice_connector_postgres::PostgresSource)
}

fn file_sink() -> Box<dyn SinkConnector> {
    Box::new(sluice_connector_file::FileSink)
}

/// Every built-in plugin.
pub fn plugins() -> Vec<Plugin> {
    vec![
        Plugin {
            class: sluice_connector_file::SOURCE_ALIASES[0],
            aliases: sluice_connector_file::SOURCE_ALIASES,
            kind: Kind::Source(file_source),
        },
        Plugin {
            class: sluice_connector_file::SINK_ALIASES[0],
            aliases: sluice_connector_file::SINK_ALIASES,
            kind: Kind::Sink(file_sink),
        },
        Plugin {
            class: sluice_connector_syslog::TCP_ALIASES[0],
            aliases: sluice_connector_syslog::TCP_ALIASES,
            kind: Kind::Source(syslog_tcp),
        },
        Plugin {
            class: sluice_connector_syslog::UDP_ALIASES[0],
            aliases: sluice_connector_syslog::UDP_ALIASES,
            kind: Kind::Source(syslog_udp),
        },
        Plugin {
            class: sluice_connector_syslog::GENERIC_ALIASES[0],
            aliases: sluice_connector_syslog::GENERIC_ALIASES,
            kind: Kind::Source(syslog_generic),
        },
        Plugin {
            class: sluice_connector_syslog::RELP_ALIASES[0],
            aliases: sluice_connector_syslog::RELP_ALIASES,
            kind: Kind::Source(syslog_relp),
        },
        Plugin {
            class: sluice_connector_datagen::ALIASES[0],
            aliases: sluice_connector_datagen::ALIASES,
            kind: Kind::Source(datagen_source),
        },
        Plugin {
            class: sluice_connector_postgres::ALIASES[0],
            aliases: sluice_connector_postgres::ALIASES,
            kind: Kind::Source(postgres_source),
        },
        Plugin {
            class: sluice_connector_elasticsearch::ALIASES[0],
            aliases: sluice_connector_elasticsearch::ALIASES,
            kind: Kind::Sink(elasticsearch_sink),
        },
        Plugin {
            class: crate::replicator::ALIASES[0],
            aliases: crate::replicator::ALIASES,
            kind: Kind::KafkaSink,
        },
    ]
}

/// The plugin a `connector.class` value names (full or short name).
pub fn lookup(class: &str) -> Option<Plugin> {
    let class = class.trim();
    plugins()
        .into_iter()
        .find(|p| p.class == class || p.aliases.contains(&class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_connect_names_resolve() {
        for name in [
            "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "FileStreamSource",
            " FileStreamSourceConnector ",
        ] {
            assert_eq!(
                lookup(name).map(|p| p.class),
                Some("org.apache.kafka.connect.file.FileStreamSourceConnector"),
                "{name}"
            );
        }
        assert_eq!(
            lookup("FileStreamSink").map(|p| p.type_name()),
            Some("sink")
        );
        for name in [
            "io.confluent.kafka.connect.datagen.DatagenConnector",
            "DatagenConnector",
        ] {
            assert_eq!(
                lookup(name).map(|p| p.class),
                Some("io.sluice.connect.datagen.DatagenSourceConnector"),
                "{name}"
            );
        }
        assert!(lookup("com.example.Nope").is_none());
    }
}

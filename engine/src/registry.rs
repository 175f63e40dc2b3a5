//! The explicit registry of connectors built into Sluice, with the class names the Kafka
//! ecosystem knows them by, so configs written for Kafka Connect work unchanged.

use sluice_proto::SourceConnector;

/// A source connector constructor.
pub type SourceCtor = fn() -> Box<dyn SourceConnector>;

/// A connector plugin.
#[derive(Clone, Copy)]
pub struct Plugin {
    /// The canonical class name (reported by the REST API).
    pub class: &'static str,
    /// Other names accepted in `connector.class`.
    pub aliases: &'static [&'static str],
    /// Constructor.
    pub source: SourceCtor,
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

/// Every built-in plugin.
pub fn plugins() -> Vec<Plugin> {
    vec![Plugin {
        class: sluice_connector_file::SOURCE_ALIASES[0],
        aliases: sluice_connector_file::SOURCE_ALIASES,
        source: file_source,
    }]
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
        assert!(lookup("com.example.Nope").is_none());
    }
}

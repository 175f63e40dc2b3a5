//! The keys every connector accepts, whatever its class (Kafka Connect's
//! `ConnectorConfig` and `SourceConnectorConfig`), and the reading of connector config
//! files given to `sluice standalone` (`.properties`, or JSON as the REST API takes it).

use std::collections::BTreeMap;
use std::path::Path;

use sluice_proto::{ConfigDef, ConfigKey, ConfigType, Importance, Validator};

/// Keys common to all connectors.
pub fn common_def() -> ConfigDef {
    ConfigDef::new()
        .define(
            ConfigKey::new("name", ConfigType::String)
                .importance(Importance::High)
                .validator(Validator::Custom(validate_name))
                .doc("Unique connector name."),
        )
        .define(
            ConfigKey::new("connector.class", ConfigType::Class)
                .importance(Importance::High)
                .doc("The connector's class (Kafka Connect names work)."),
        )
        .define(
            ConfigKey::new("tasks.max", ConfigType::Int)
                .default_value("1")
                .importance(Importance::High)
                .validator(Validator::at_least(1.0))
                .doc("The most tasks the connector may run."),
        )
        .define(ConfigKey::new("key.converter", ConfigType::Class).optional().importance(Importance::Low))
        .define(ConfigKey::new("value.converter", ConfigType::Class).optional().importance(Importance::Low))
        .define(ConfigKey::new("header.converter", ConfigType::Class).optional().importance(Importance::Low))
        .define(
            ConfigKey::new("exactly.once.support", ConfigType::String)
                .default_value("requested")
                .importance(Importance::Medium)
                .validator(Validator::OneOf(&["requested", "required"]))
                .doc("`required` refuses to start unless the connector can be exactly-once."),
        )
        .define(
            ConfigKey::new("transaction.boundary", ConfigType::String)
                .default_value("poll")
                .importance(Importance::Medium)
                .validator(Validator::OneOf(&["poll", "interval"]))
                .doc("When a transaction commits: after each poll, or every transaction.boundary.interval.ms."),
        )
        .define(
            ConfigKey::new("transaction.boundary.interval.ms", ConfigType::Long)
                .optional()
                .importance(Importance::Low)
                .validator(Validator::at_least(1.0)),
        )
        .define(
            ConfigKey::new("transforms", ConfigType::List)
                .optional()
                .importance(Importance::Low)
                .group("Transforms")
                .doc("Aliases of the single message transforms, applied in order."),
        )
        .define(
            ConfigKey::new("predicates", ConfigType::List)
                .optional()
                .importance(Importance::Low)
                .group("Predicates")
                .doc("Aliases of the predicates transforms may refer to."),
        )
        .merge(&crate::task::errors::config_def())
        .pass_through("transforms.")
        .pass_through("predicates.")
        .pass_through("key.converter.")
        .pass_through("value.converter.")
        .pass_through("header.converter.")
        .pass_through("producer.override.")
        .pass_through("consumer.override.")
        .pass_through("admin.override.")
}

/// Keys of one kind of connector: a sink's `topics` / `topics.regex`.
pub fn kind_def(plugin: &crate::registry::Plugin) -> ConfigDef {
    if !plugin.is_sink() {
        return ConfigDef::new();
    }
    ConfigDef::new()
        .define(
            ConfigKey::new("topics", ConfigType::List)
                .optional()
                .importance(Importance::High)
                .doc("The topics to consume; or topics.regex."),
        )
        .define(
            ConfigKey::new("topics.regex", ConfigType::String)
                .optional()
                .importance(Importance::High)
                .doc("A regular expression of the topics to consume (whole names); or topics."),
        )
}

/// The longest connector name, in bytes, that every REST path can still carry.
pub const MAX_NAME_BYTES: usize = 1000;

/// Kafka Connect refuses names with ISO control characters; an empty name cannot be
/// stored; a `/` would break every REST path.
fn validate_name(value: &sluice_proto::ConfigValue) -> Result<(), String> {
    let sluice_proto::ConfigValue::String(name) = value else {
        return Err("must be a string".into());
    };
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "must not contain control characters (found U+{:04X})",
            c as u32
        ));
    }
    if name.contains('/') {
        return Err("must not contain '/'".into());
    }
    // Clients normalise `.` and `..` away from a URL path, so such a connector could not
    // be read or deleted.
    if name == "." || name == ".." {
        return Err(format!("{name:?} cannot be a path segment of the REST API"));
    }
    // A longer name would not fit a request line (actix reads at most 32 KiB of head,
    // and a name may grow threefold when percent-encoded).
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_NAME_BYTES} bytes",
            name.len()
        ));
    }
    Ok(())
}

/// Reads a connector config file: `.json` as `{"name":..,"config":{..}}` or a flat object;
/// anything else as `.properties`. Non-string JSON values become their text.
pub fn read_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    } else {
        crate::config::properties::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// A connector config from JSON, in the REST API's create shape or as a flat object.
pub fn from_json(text: &str) -> Result<BTreeMap<String, String>, String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "not valid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        )
    })?;
    let serde_json::Value::Object(mut top) = json else {
        return Err("expected a JSON object".into());
    };
    let mut out = BTreeMap::new();
    let (name, config) = match top.remove("config") {
        Some(serde_json::Value::Object(config)) => (top.remove("name"), config),
        Some(_) => return Err("\"config\" must be an object".into()),
        None => (None, top),
    };
    for (k, v) in config {
        let v = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => return Err(format!("\"{k}\" is null")),
            other => other.to_string(),
        };
        out.insert(k, v);
    }
    if let Some(name) = name {
        let name = name.as_str().ok_or("\"name\" must be a string")?.to_owned();
        if let Some(inner) = out.get("name") {
            if *inner != name {
                return Err(format!("\"name\" is {name:?} but config.name is {inner:?}"));
            }
        }
        out.insert("name".into(), name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_in_both_shapes() {
        let a = from_json(
            r#"{"name":"src","config":{"connector.class":"FileStreamSource","tasks.max":1}}"#,
        )
        .unwrap();
        assert_eq!(a["name"], "src");
        assert_eq!(a["tasks.max"], "1");
        let b = from_json(r#"{"name":"src","connector.class":"FileStreamSource"}"#).unwrap();
        assert_eq!(b["connector.class"], "FileStreamSource");
        let e = from_json(r#"{"name":"a","config":{"name":"b"}}"#).unwrap_err();
        assert!(e.contains("config.name"), "{e}");
        assert!(from_json("[1]").is_err());
        assert!(from_json("{\"x\": ").unwrap_err().contains("line 1"));
    }

    #[test]
    fn names_are_checked() {
        let def = common_def();
        for (name, ok) in [
            ("syslog-source", true),
            ("", false),
            ("a/b", false),
            ("tab\there", false),
            (".", false),
            ("..", false),
            ("...", true),
            (&"n".repeat(MAX_NAME_BYTES), true),
            (&"n".repeat(MAX_NAME_BYTES + 1), false),
        ] {
            let props = BTreeMap::from([
                ("name".to_owned(), name.to_owned()),
                ("connector.class".to_owned(), "X".to_owned()),
            ]);
            assert_eq!(def.parse(&props).is_ok(), ok, "{name:?}");
        }
    }
}

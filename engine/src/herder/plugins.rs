//! The connector plugins built into this worker, their config definitions, and config
//! validation, in the shapes of Kafka Connect's `PluginInfo` and `ConfigInfos`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use sluice_proto::config::{ConfigKey, DefaultValue};
use sluice_proto::ConfigDef;

use super::HerderError;
use crate::config::connector::{common_def, kind_def};
use crate::{convert, registry};

/// A plugin as `GET /connector-plugins` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Its class name.
    pub class: String,
    /// `source`, `sink` or `converter`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its version.
    pub version: String,
}

/// One config key's definition.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigKeyInfo {
    name: String,
    #[serde(rename = "type")]
    ty: &'static str,
    required: bool,
    default_value: Value,
    importance: &'static str,
    documentation: String,
    group: String,
    width: &'static str,
    display_name: String,
    dependents: Vec<String>,
    order: usize,
}

/// One key's value as validation saw it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigValueInfo {
    name: String,
    value: Option<String>,
    recommended_values: Vec<String>,
    errors: Vec<String>,
    visible: bool,
}

/// A key's definition and its validated value.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfo {
    definition: ConfigKeyInfo,
    value: ConfigValueInfo,
}

/// What validation found (`PUT /connector-plugins/{plugin}/config/validate`).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfos {
    /// The plugin's class name.
    pub name: String,
    /// Errors over all keys.
    pub error_count: usize,
    /// Key groups, in order.
    pub groups: Vec<String>,
    /// Every key.
    pub configs: Vec<ConfigInfo>,
}

/// How long a connector's checks against its outside system may take at validate.
const LIVE_CHECKS: std::time::Duration = std::time::Duration::from_secs(15);

/// Adds the connector's checks against its outside system
/// ([`sluice_proto::Connector::validate_live`]) to `infos`, once every key passed its own:
/// each problem under the key it names (or `connector.class` for a key not listed).
pub async fn validate_live(
    name: &str,
    config: &BTreeMap<String, String>,
    mut infos: ConfigInfos,
) -> Result<ConfigInfos, HerderError> {
    if infos.error_count > 0 {
        return Ok(infos);
    }
    let connector: Box<dyn sluice_proto::Connector> = match plugin(name)?.kind {
        registry::Kind::Source(source) => source(),
        registry::Kind::Sink(sink) => sink(),
        registry::Kind::KafkaSink => return Ok(infos),
    };
    let problems = tokio::time::timeout(LIVE_CHECKS, connector.validate_live(config))
        .await
        .unwrap_or_else(|_| {
            vec![(
                "connector.class".to_owned(),
                format!(
                    "the connector's checks against its outside system did not finish in {} s",
                    LIVE_CHECKS.as_secs()
                ),
            )]
        });
    for (key, message) in problems {
        let at = infos
            .configs
            .iter()
            .position(|c| c.value.name == key)
            .or_else(|| {
                infos
                    .configs
                    .iter()
                    .position(|c| c.value.name == "connector.class")
            });
        if let Some(at) = at {
            infos.configs[at].value.errors.push(message);
            infos.error_count += 1;
        }
    }
    Ok(infos)
}

fn plugin(name: &str) -> Result<registry::Plugin, HerderError> {
    registry::lookup(name).ok_or_else(|| HerderError::UnknownPlugin(name.to_owned()))
}

fn definition(key: &ConfigKey, order: usize) -> ConfigKeyInfo {
    let default_value = match &key.default {
        DefaultValue::Value(v) => json!(v),
        DefaultValue::Null | DefaultValue::Required => Value::Null,
    };
    ConfigKeyInfo {
        name: key.name.to_owned(),
        ty: key.ty.rest_name(),
        required: key.default == DefaultValue::Required,
        default_value,
        importance: key.importance.rest_name(),
        documentation: key.documentation.to_owned(),
        group: key.group.unwrap_or("Common").to_owned(),
        width: "NONE",
        display_name: key.name.to_owned(),
        dependents: Vec::new(),
        order,
    }
}

/// The connector plugins, and unless `connectors_only` the converters.
pub fn list(connectors_only: bool) -> Vec<PluginInfo> {
    let mut out: Vec<PluginInfo> = registry::plugins()
        .iter()
        .map(|p| PluginInfo {
            class: p.class.to_owned(),
            kind: p.type_name(),
            version: p.connector().version().to_owned(),
        })
        .collect();
    if !connectors_only {
        for class in [convert::JSON, convert::STRING, convert::BYTE_ARRAY] {
            out.push(PluginInfo {
                class: class.to_owned(),
                kind: "converter",
                version: env!("CARGO_PKG_VERSION").to_owned(),
            });
        }
    }
    out
}

/// A plugin's own config keys.
pub fn config(name: &str) -> Result<Vec<ConfigKeyInfo>, HerderError> {
    let plugin = plugin(name)?;
    Ok(plugin
        .connector()
        .config_def()
        .keys()
        .iter()
        .enumerate()
        .map(|(i, k)| definition(k, i + 1))
        .collect())
}

fn full_def(plugin: registry::Plugin) -> ConfigDef {
    common_def()
        .merge(&kind_def(&plugin))
        .merge(&plugin.connector().config_def())
}

/// Validates `config` against the plugin `name`: the common keys, the plugin kind's and
/// the plugin's own.
pub fn validate(name: &str, config: &BTreeMap<String, String>) -> Result<ConfigInfos, HerderError> {
    let plugin = plugin(name)?;
    if let Some(class) = config.get("connector.class") {
        if registry::lookup(class).map(|p| p.class) != Some(plugin.class) {
            return Err(HerderError::BadConfig(format!(
                "connector.class: {class:?} does not match the plugin in the path, {name:?}"
            )));
        }
    }
    let def = full_def(plugin);
    let reports = def.validate(config);
    let error_count: usize = reports.iter().map(|r| r.errors.len()).sum();
    let mut groups: Vec<String> = def
        .keys()
        .iter()
        .map(|k| k.group.unwrap_or("Common").to_owned())
        .collect();
    groups.dedup();
    let configs = def
        .keys()
        .iter()
        .zip(reports)
        .enumerate()
        .map(|(i, (key, report))| ConfigInfo {
            definition: definition(key, i + 1),
            value: ConfigValueInfo {
                name: report.name,
                value: report.value,
                recommended_values: report.recommended_values,
                errors: report.errors,
                visible: true,
            },
        })
        .collect();
    Ok(ConfigInfos {
        name: plugin.class.to_owned(),
        error_count,
        groups,
        configs,
    })
}

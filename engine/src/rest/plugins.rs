//! `/connector-plugins/...`: what connectors (and converters) this worker has, their config
//! definitions, and validation of a config before it is submitted.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use sluice_proto::config::{ConfigKey, DefaultValue};
use sluice_proto::ConfigDef;

use super::{method_not_allowed, RestError};
use crate::config::connector::common_def;
use crate::{convert, registry};

/// The routes of this module.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/connector-plugins"),
    ("GET", "/connector-plugins/{plugin}/config"),
    ("PUT", "/connector-plugins/{plugin}/config/validate"),
];

fn plugin(name: &str) -> Result<registry::Plugin, RestError> {
    registry::lookup(name)
        .ok_or_else(|| RestError::new(StatusCode::NOT_FOUND, format!("Unknown plugin {name}")))
}

fn definition(key: &ConfigKey, order: usize) -> Value {
    let default = match &key.default {
        DefaultValue::Value(v) => json!(v),
        DefaultValue::Null | DefaultValue::Required => Value::Null,
    };
    json!({
        "name": key.name,
        "type": key.ty.rest_name(),
        "required": key.default == DefaultValue::Required,
        "default_value": default,
        "importance": key.importance.rest_name(),
        "documentation": key.documentation,
        "group": key.group.unwrap_or("Common"),
        "width": "NONE",
        "display_name": key.name,
        "dependents": [],
        "order": order,
    })
}

async fn list(req: HttpRequest) -> Result<HttpResponse, RestError> {
    let connectors_only = match req
        .query_string()
        .split('&')
        .find_map(|p| p.strip_prefix("connectorsOnly="))
    {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(RestError::new(
                StatusCode::BAD_REQUEST,
                format!("query parameter connectorsOnly: expected true or false, got {other:?}"),
            ))
        }
    };
    let mut out: Vec<Value> = registry::plugins()
        .iter()
        .map(|p| json!({"class": p.class, "type": p.type_name(), "version": p.connector().version()}))
        .collect();
    if !connectors_only {
        for class in [convert::JSON, convert::STRING, convert::BYTE_ARRAY] {
            out.push(
                json!({"class": class, "type": "converter", "version": env!("CARGO_PKG_VERSION")}),
            );
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

fn full_def(plugin: registry::Plugin) -> ConfigDef {
    common_def()
        .merge(&crate::config::connector::kind_def(&plugin))
        .merge(&plugin.connector().config_def())
}

async fn config(path: web::Path<String>) -> Result<HttpResponse, RestError> {
    let plugin = plugin(&path.into_inner())?;
    let keys: Vec<Value> = plugin
        .connector()
        .config_def()
        .keys()
        .iter()
        .enumerate()
        .map(|(i, k)| definition(k, i + 1))
        .collect();
    Ok(HttpResponse::Ok().json(keys))
}

async fn validate(path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse, RestError> {
    let name = path.into_inner();
    let plugin = plugin(&name)?;
    let config: BTreeMap<String, String> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect(),
        Ok(_) => {
            return Err(RestError::new(
                StatusCode::BAD_REQUEST,
                "Request body must be a JSON object of config values",
            ))
        }
        Err(e) => {
            return Err(RestError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Request body is not valid JSON (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            ))
        }
    };
    if let Some(class) = config.get("connector.class") {
        if registry::lookup(class).map(|p| p.class) != Some(plugin.class) {
            return Err(RestError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "connector.class: {class:?} does not match the plugin in the path, {name:?}"
                ),
            ));
        }
    }
    let def = full_def(plugin);
    let reports = def.validate(&config);
    let error_count: usize = reports.iter().map(|r| r.errors.len()).sum();
    let mut groups: Vec<&str> = def
        .keys()
        .iter()
        .map(|k| k.group.unwrap_or("Common"))
        .collect();
    groups.dedup();
    let configs: Vec<Value> = def
        .keys()
        .iter()
        .zip(&reports)
        .enumerate()
        .map(|(i, (key, report))| {
            json!({
                "definition": definition(key, i + 1),
                "value": {
                    "name": report.name,
                    "value": report.value,
                    "recommended_values": report.recommended_values,
                    "errors": report.errors,
                    "visible": true,
                }
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "name": plugin.class,
        "error_count": error_count,
        "groups": groups,
        "configs": configs,
    })))
}

/// Mounts the routes.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(resource("/connector-plugins").route(web::get().to(list)))
        .service(resource("/connector-plugins/{plugin}/config").route(web::get().to(config)))
        .service(
            resource("/connector-plugins/{plugin}/config/validate").route(web::put().to(validate)),
        );
}

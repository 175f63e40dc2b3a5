//! `/connector-plugins/...`: what connectors (and converters) this worker has, their config
//! definitions, and validation of a config before it is submitted.

use std::collections::BTreeMap;

use super::connectors::{herder_error, parse_json};
use super::{method_not_allowed, RestError, RestState};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

/// The routes of this module.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/connector-plugins"),
    ("GET", "/connector-plugins/{plugin}/config"),
    ("PUT", "/connector-plugins/{plugin}/config/validate"),
];

async fn list(state: web::Data<RestState>, req: HttpRequest) -> Result<HttpResponse, RestError> {
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
    let out = state.herder().plugins(connectors_only);
    Ok(HttpResponse::Ok().json(out))
}

async fn config(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    let keys = state
        .herder()
        .plugin_config(&path.into_inner())
        .map_err(herder_error)?;
    Ok(HttpResponse::Ok().json(keys))
}

async fn validate(
    state: web::Data<RestState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, RestError> {
    let herder = state.herder();
    let name = path.into_inner();
    // Any JSON value is taken as its text: validation reports what is wrong with it.
    let Value::Object(map) = parse_json(&body)? else {
        return Err(RestError::new(
            StatusCode::BAD_REQUEST,
            "Request body must be a JSON object of config values",
        ));
    };
    let config: BTreeMap<String, String> = map
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    let infos = herder.validate(&name, config).await.map_err(herder_error)?;
    Ok(HttpResponse::Ok().json(infos))
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

//! `/connectors/...`: Kafka Connect 4.x paths, bodies and status codes. Every handler
//! validates before it acts, so a bad request gets a 4xx naming the field and changes
//! nothing.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::{method_not_allowed, RestError, RestState};
use crate::herder::{
    ConfigPatch, ConnectorInfo, ConnectorStatus, Herder, HerderError, SourceOffset,
    SourcePartition, TargetState,
};

/// The routes of this module.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/connectors"),
    ("POST", "/connectors"),
    ("GET", "/connectors/{connector}"),
    ("DELETE", "/connectors/{connector}"),
    ("GET", "/connectors/{connector}/config"),
    ("PUT", "/connectors/{connector}/config"),
    ("PATCH", "/connectors/{connector}/config"),
    ("GET", "/connectors/{connector}/status"),
    ("POST", "/connectors/{connector}/restart"),
    ("PUT", "/connectors/{connector}/pause"),
    ("PUT", "/connectors/{connector}/resume"),
    ("PUT", "/connectors/{connector}/stop"),
    ("POST", "/connectors/{connector}/signals"),
    ("GET", "/connectors/{connector}/tasks"),
    ("GET", "/connectors/{connector}/tasks/{task}/status"),
    ("POST", "/connectors/{connector}/tasks/{task}/restart"),
    ("GET", "/connectors/{connector}/topics"),
    ("PUT", "/connectors/{connector}/topics/reset"),
    ("GET", "/connectors/{connector}/offsets"),
    ("PATCH", "/connectors/{connector}/offsets"),
    ("DELETE", "/connectors/{connector}/offsets"),
];

pub(crate) fn herder_error(e: HerderError) -> RestError {
    let status = match e {
        HerderError::BadConfig(_) | HerderError::WrongState(_) => StatusCode::BAD_REQUEST,
        HerderError::Exists(_) | HerderError::Conflict(_) => StatusCode::CONFLICT,
        HerderError::NotFound(_)
        | HerderError::TaskNotFound(..)
        | HerderError::UnknownPlugin(_) => StatusCode::NOT_FOUND,
        HerderError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        HerderError::External(_) => StatusCode::BAD_GATEWAY,
        HerderError::Unavailable(_) | HerderError::Starting => StatusCode::SERVICE_UNAVAILABLE,
    };
    RestError::new(status, e.to_string())
}

fn bad_request(message: impl Into<String>) -> RestError {
    RestError::new(StatusCode::BAD_REQUEST, message)
}

pub(super) fn parse_json(body: &[u8]) -> Result<Value, RestError> {
    serde_json::from_slice(body).map_err(|e| {
        bad_request(format!(
            "Request body is not valid JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })
}

/// A JSON object of config values; numbers and booleans are accepted as their text.
fn config_map(value: Value, what: &str) -> Result<BTreeMap<String, String>, RestError> {
    let Value::Object(map) = value else {
        return Err(bad_request(format!("{what} must be a JSON object")));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(_) | Value::Bool(_) => Ok((k, v.to_string())),
            other => Err(bad_request(format!(
                "{what}: the value of {k:?} must be a string, not {other}"
            ))),
        })
        .collect()
}

fn query(req: &HttpRequest) -> Vec<(String, String)> {
    req.query_string()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn flag(req: &HttpRequest, key: &str) -> Result<bool, RestError> {
    match query(req).into_iter().find(|(k, _)| k == key) {
        None => Ok(false),
        Some((_, v)) => match v.to_ascii_lowercase().as_str() {
            "true" | "" => Ok(true),
            "false" => Ok(false),
            other => Err(bad_request(format!(
                "query parameter {key}: expected true or false, got {other:?}"
            ))),
        },
    }
}

fn info(c: &ConnectorInfo) -> Value {
    let tasks: Vec<Value> = (0..c.tasks)
        .map(|t| json!({"connector": c.name, "task": t}))
        .collect();
    json!({"name": c.name, "config": c.config, "tasks": tasks, "type": c.kind})
}

fn connector_state(target: TargetState) -> &'static str {
    match target {
        TargetState::Started => "RUNNING",
        TargetState::Paused => "PAUSED",
        TargetState::Stopped => "STOPPED",
    }
}

fn status_json(s: &ConnectorStatus) -> Value {
    json!({
        "name": s.name,
        "connector": {"state": connector_state(s.target), "worker_id": s.worker_id},
        "tasks": s.tasks,
        "type": s.kind,
    })
}

async fn status(herder: &dyn Herder, name: &str) -> Result<Value, RestError> {
    let s = herder.connector_status(name).await.map_err(herder_error)?;
    Ok(status_json(&s))
}

async fn list(state: web::Data<RestState>, req: HttpRequest) -> Result<HttpResponse, RestError> {
    let names = state.herder().connectors().await.map_err(herder_error)?;
    let expand: Vec<String> = query(&req)
        .into_iter()
        .filter(|(k, _)| k == "expand")
        .map(|(_, v)| v)
        .collect();
    if expand.is_empty() {
        return Ok(HttpResponse::Ok().json(names));
    }
    if let Some(bad) = expand.iter().find(|e| *e != "status" && *e != "info") {
        return Err(bad_request(format!(
            "query parameter expand: unknown value {bad:?} (status, info)"
        )));
    }
    let herder = state.herder();
    let mut out = Map::new();
    for name in names {
        let mut item = Map::new();
        if expand.iter().any(|e| e == "status") {
            item.insert("status".into(), status(herder, &name).await?);
        }
        if expand.iter().any(|e| e == "info") {
            let c = herder.connector_info(&name).await.map_err(herder_error)?;
            item.insert("info".into(), info(&c));
        }
        out.insert(name, Value::Object(item));
    }
    Ok(HttpResponse::Ok().json(out))
}

async fn create(state: web::Data<RestState>, body: web::Bytes) -> Result<HttpResponse, RestError> {
    let herder = state.herder();
    let Value::Object(mut request) = parse_json(&body)? else {
        return Err(bad_request("Request body must be a JSON object"));
    };
    let name = match request.remove("name") {
        Some(Value::String(n)) => n,
        Some(_) => return Err(bad_request("name: must be a string")),
        None => return Err(bad_request("name: the connector name is required")),
    };
    let target = match request.remove("initial_state") {
        None | Some(Value::Null) => TargetState::Started,
        Some(Value::String(s)) => match s.to_ascii_uppercase().as_str() {
            "RUNNING" => TargetState::Started,
            "PAUSED" => TargetState::Paused,
            "STOPPED" => TargetState::Stopped,
            _ => {
                return Err(bad_request(format!(
                    "initial_state: {s:?} is not one of RUNNING, PAUSED, STOPPED"
                )))
            }
        },
        Some(other) => {
            return Err(bad_request(format!(
                "initial_state: must be a string, not {other}"
            )))
        }
    };
    let mut config = config_map(
        request
            .remove("config")
            .ok_or_else(|| bad_request("config: the connector config is required"))?,
        "config",
    )?;
    if let Some(unexpected) = request.keys().next() {
        return Err(bad_request(format!(
            "{unexpected}: unknown field (expected name, config, initial_state)"
        )));
    }
    match config.get("name") {
        Some(n) if *n != name => {
            return Err(bad_request(format!(
                "config.name: {n:?} does not match name {name:?}"
            )))
        }
        _ => {
            config.insert("name".into(), name.clone());
        }
    }
    let created = herder
        .create_connector(config, target)
        .await
        .map_err(herder_error)?;
    tracing::info!(connector = %name, "connector created over REST");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/connectors/{name}")))
        .json(info(&created)))
}

async fn get(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    let c = state
        .herder()
        .connector_info(&path.into_inner())
        .await
        .map_err(herder_error)?;
    Ok(HttpResponse::Ok().json(info(&c)))
}

async fn delete(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    let name = path.into_inner();
    state
        .herder()
        .delete_connector(&name)
        .await
        .map_err(herder_error)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn get_config(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    let c = state
        .herder()
        .connector_info(&path.into_inner())
        .await
        .map_err(herder_error)?;
    Ok(HttpResponse::Ok().json(c.config))
}

async fn put_config(
    state: web::Data<RestState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, RestError> {
    let herder = state.herder();
    let name = path.into_inner();
    let config = config_map(parse_json(&body)?, "config")?;
    let (created, c) = herder
        .put_connector_config(&name, config)
        .await
        .map_err(herder_error)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(info(&c)))
}

async fn patch_config(
    state: web::Data<RestState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, RestError> {
    let herder = state.herder();
    let name = path.into_inner();
    let Value::Object(body) = parse_json(&body)? else {
        return Err(bad_request("Request body must be a JSON object"));
    };
    let mut patch = ConfigPatch::new();
    for (k, v) in body {
        match v {
            // A null removes the key, as in Kafka Connect's PATCH.
            Value::Null => {
                patch.insert(k, None);
            }
            Value::String(s) => {
                patch.insert(k, Some(s));
            }
            Value::Number(_) | Value::Bool(_) => {
                patch.insert(k, Some(v.to_string()));
            }
            other => {
                return Err(bad_request(format!(
                    "the value of {k:?} must be a string or null, not {other}"
                )))
            }
        }
    }
    let c = herder
        .patch_connector_config(&name, patch)
        .await
        .map_err(herder_error)?;
    Ok(HttpResponse::Ok().json(info(&c)))
}

async fn get_status(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    Ok(HttpResponse::Ok().json(status(state.herder(), &path.into_inner()).await?))
}

async fn restart(
    state: web::Data<RestState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, RestError> {
    let herder = state.herder();
    let name = path.into_inner();
    let include_tasks = flag(&req, "includeTasks")?;
    let only_failed = flag(&req, "onlyFailed")?;
    herder.connector_info(&name).await.map_err(herder_error)?;
    if !include_tasks {
        // The connector object itself holds no running state in Sluice: nothing to restart.
        return Ok(HttpResponse::NoContent().finish());
    }
    let restarted = herder
        .restart_connector(&name, only_failed)
        .await
        .map_err(herder_error)?;
    tracing::info!(connector = %name, ?restarted, only_failed, "tasks restarted over REST");
    Ok(HttpResponse::Accepted().json(status(herder, &name).await?))
}

async fn set_target(state: &RestState, name: &str, target: TargetState) -> Result<(), RestError> {
    state
        .herder()
        .set_target_state(name, target)
        .await
        .map_err(herder_error)?;
    tracing::info!(connector = %name, ?target, "target state set over REST");
    Ok(())
}

async fn pause(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    set_target(&state, &path.into_inner(), TargetState::Paused).await?;
    Ok(HttpResponse::Accepted().finish())
}

async fn resume(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    set_target(&state, &path.into_inner(), TargetState::Started).await?;
    Ok(HttpResponse::Accepted().finish())
}

async fn stop(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    set_target(&state, &path.into_inner(), TargetState::Stopped).await?;
    Ok(HttpResponse::Accepted().finish())
}

async fn tasks(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    let name = path.into_inner();
    let c = state
        .herder()
        .connector_info(&name)
        .await
        .map_err(herder_error)?;
    let tasks: Vec<Value> = c
        .task_configs
        .iter()
        .zip(0_u32..)
        .map(|(config, t)| json!({"id": {"connector": name, "task": t}, "config": config}))
        .collect();
    Ok(HttpResponse::Ok().json(tasks))
}

fn task_id(name: &str, task: &str) -> Result<u32, RestError> {
    task.parse().map_err(|_| {
        RestError::new(
            StatusCode::NOT_FOUND,
            format!("Task {task} of connector {name} not found"),
        )
    })
}

async fn task_status(
    state: web::Data<RestState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, RestError> {
    let (name, task) = path.into_inner();
    let id = task_id(&name, &task)?;
    let status = state
        .herder()
        .connector_status(&name)
        .await
        .map_err(herder_error)?;
    let t = status
        .tasks
        .iter()
        .find(|t| t.id == id)
        .ok_or_else(|| herder_error(HerderError::TaskNotFound(name.clone(), id)))?;
    Ok(HttpResponse::Ok().json(t))
}

async fn task_restart(
    state: web::Data<RestState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, RestError> {
    let (name, task) = path.into_inner();
    let id = task_id(&name, &task)?;
    state
        .herder()
        .restart_task(&name, id)
        .await
        .map_err(herder_error)?;
    tracing::info!(connector = %name, task = id, "task restart requested over REST");
    Ok(HttpResponse::NoContent().finish())
}

/// Kafka Connect's answer when `topic.tracking.enable=false`.
fn tracking_on(state: &RestState) -> Result<(), RestError> {
    if state.topic_tracking.enabled {
        Ok(())
    } else {
        Err(RestError::new(
            StatusCode::FORBIDDEN,
            "Topic tracking is disabled.",
        ))
    }
}

async fn topics(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    tracking_on(&state)?;
    let name = path.into_inner();
    let topics = state.herder().topics(&name).await.map_err(herder_error)?;
    Ok(HttpResponse::Ok().json(json!({ name: {"topics": topics} })))
}

async fn reset_topics(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    tracking_on(&state)?;
    if !state.topic_tracking.allow_reset {
        return Err(RestError::new(
            StatusCode::FORBIDDEN,
            "Topic tracking reset is disabled.",
        ));
    }
    state
        .herder()
        .reset_topics(&path.into_inner())
        .await
        .map_err(herder_error)?;
    Ok(HttpResponse::Accepted().finish())
}

async fn get_offsets(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    let offsets = state
        .herder()
        .offsets(&path.into_inner())
        .await
        .map_err(herder_error)?;
    let list: Vec<Value> = offsets
        .iter()
        .map(|(p, o)| json!({"partition": p.as_map(), "offset": o.0}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "offsets": list })))
}

async fn patch_offsets(
    state: web::Data<RestState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, RestError> {
    let herder = state.herder();
    let name = path.into_inner();
    let request = parse_json(&body)?;
    let entries = request
        .get("offsets")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            bad_request(
                "offsets: expected {\"offsets\": [{\"partition\": {...}, \"offset\": {...}}]}",
            )
        })?;
    let mut changes = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let partition = e
            .get("partition")
            .and_then(Value::as_object)
            .ok_or_else(|| bad_request(format!("offsets[{i}].partition: must be a JSON object")))?;
        let offset = match e.get("offset") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(SourceOffset(o.clone())),
            Some(_) => {
                return Err(bad_request(format!(
                    "offsets[{i}].offset: must be a JSON object or null"
                )))
            }
        };
        changes.push((SourcePartition::new(partition.clone()), offset));
    }
    herder
        .alter_offsets(&name, changes)
        .await
        .map_err(herder_error)?;
    Ok(HttpResponse::Ok()
        .json(json!({"message": "The offsets for this connector have been altered successfully"})))
}

async fn delete_offsets(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    state
        .herder()
        .reset_offsets(&path.into_inner())
        .await
        .map_err(herder_error)?;
    Ok(HttpResponse::Ok()
        .json(json!({"message": "The offsets for this connector have been reset successfully"})))
}

/// `POST /connectors/{name}/signals` (Sluice's; Debezium's signal, `{"type": ..., "data":
/// {...}, "id": ...}`, the id made up when absent): handed to the connector's own durable
/// channel, so it reaches the task wherever and whenever it runs. 202 once durable.
async fn signal(
    state: web::Data<RestState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, RestError> {
    let name = path.into_inner();
    let Value::Object(mut request) = parse_json(&body)? else {
        return Err(bad_request("Request body must be a JSON object"));
    };
    let kind = match request.remove("type") {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => {
            return Err(bad_request(
                "type: the signal's type (e.g. execute-snapshot) is required",
            ))
        }
    };
    let data = match request.remove("data") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text,
        Some(Value::Object(o)) => Value::Object(o).to_string(),
        Some(other) => {
            return Err(bad_request(format!(
                "data: must be a JSON object (or its text), not {other}"
            )))
        }
    };
    let id = match request.remove("id") {
        None | Some(Value::Null) => format!(
            "rest-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros())
        ),
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 42 => id,
        Some(_) => return Err(bad_request("id: must be a string of 1 to 42 characters")),
    };
    if let Some(unexpected) = request.keys().next() {
        return Err(bad_request(format!(
            "{unexpected}: unknown field (expected type, data, id)"
        )));
    }
    let signal = sluice_proto::Signal {
        id: id.clone(),
        kind: kind.clone(),
        data,
    };
    state
        .herder()
        .signal(&name, signal)
        .await
        .map_err(herder_error)?;
    Ok(HttpResponse::Accepted().json(json!({"id": id, "type": kind})))
}

/// Mounts the routes.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(
        resource("/connectors")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/connectors/{connector}")
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    )
    .service(
        resource("/connectors/{connector}/config")
            .route(web::get().to(get_config))
            .route(web::put().to(put_config))
            .route(web::patch().to(patch_config)),
    )
    .service(resource("/connectors/{connector}/status").route(web::get().to(get_status)))
    .service(resource("/connectors/{connector}/restart").route(web::post().to(restart)))
    .service(resource("/connectors/{connector}/pause").route(web::put().to(pause)))
    .service(resource("/connectors/{connector}/resume").route(web::put().to(resume)))
    .service(resource("/connectors/{connector}/stop").route(web::put().to(stop)))
    .service(resource("/connectors/{connector}/signals").route(web::post().to(signal)))
    .service(resource("/connectors/{connector}/tasks").route(web::get().to(tasks)))
    .service(
        resource("/connectors/{connector}/tasks/{task}/status").route(web::get().to(task_status)),
    )
    .service(
        resource("/connectors/{connector}/tasks/{task}/restart")
            .route(web::post().to(task_restart)),
    )
    .service(resource("/connectors/{connector}/topics").route(web::get().to(topics)))
    .service(resource("/connectors/{connector}/topics/reset").route(web::put().to(reset_topics)))
    .service(
        resource("/connectors/{connector}/offsets")
            .route(web::get().to(get_offsets))
            .route(web::patch().to(patch_offsets))
            .route(web::delete().to(delete_offsets)),
    );
}

//! `/admin/loggers` (KIP-495, KIP-976): log levels read and changed at runtime.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{method_not_allowed, RestError, RestState};
use crate::herder::LoggersError;

/// The routes this module serves, for the OpenAPI check.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/loggers"),
    ("GET", "/admin/loggers/{logger}"),
    ("PUT", "/admin/loggers/{logger}"),
];

fn loggers_error(e: LoggersError) -> RestError {
    let status = match e {
        LoggersError::Apply(_) => StatusCode::INTERNAL_SERVER_ERROR,
        LoggersError::BadLevel(_) | LoggersError::BadName(_) => StatusCode::BAD_REQUEST,
    };
    RestError::new(status, e.to_string())
}

async fn list(state: web::Data<RestState>) -> Result<HttpResponse, RestError> {
    Ok(HttpResponse::Ok().json(state.herder().logger_levels()))
}

async fn get(
    state: web::Data<RestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, RestError> {
    let level = state.herder().logger_level(&path).map_err(loggers_error)?;
    Ok(HttpResponse::Ok().json(level))
}

#[derive(Deserialize)]
struct LevelBody {
    level: Option<String>,
}

#[derive(Deserialize)]
struct ScopeQuery {
    scope: Option<String>,
}

async fn put(
    state: web::Data<RestState>,
    path: web::Path<String>,
    query: web::Query<ScopeQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, RestError> {
    let body: LevelBody = serde_json::from_slice(&body).map_err(|e| {
        RestError::new(
            StatusCode::BAD_REQUEST,
            format!("request body is not a JSON object with a level: {e}"),
        )
    })?;
    let level = body.level.ok_or_else(|| {
        RestError::new(
            StatusCode::BAD_REQUEST,
            "Desired 'level' parameter was not specified in request.",
        )
    })?;
    // The scope first: a refused request changes no level.
    let cluster = match query
        .scope
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("cluster") => true,
        Some("worker") | None => false,
        Some(other) => {
            return Err(RestError::new(
                StatusCode::BAD_REQUEST,
                format!("scope: invalid value {other:?}; must be 'worker' or 'cluster'"),
            ))
        }
    };
    let changed = state
        .herder()
        .set_logger_level(&path, &level, cluster)
        .await
        .map_err(loggers_error)?;
    // Kafka Connect answers the cluster scope with 204 and no body.
    if cluster {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Ok(HttpResponse::Ok().json(changed))
    }
}

/// Mounts the routes.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/loggers")
            .route(web::get().to(list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/loggers/{logger}")
            .route(web::get().to(get))
            .route(web::put().to(put))
            .default_service(web::to(method_not_allowed)),
    );
}

//! The REST API, in Kafka Connect's dialect: same paths, bodies, status codes and error
//! shape (`{"error_code":N,"message":"..."}`), so existing tools and scripts work
//! unchanged: the worker's identity (`GET /`), its health (`GET /health`, KIP-1017),
//! Prometheus metrics (`GET /metrics`), connectors (`/connectors/...`) and plugins
//! (`/connector-plugins/...`). `openapi.json` beside this crate documents every route.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::worker::Worker;

mod connectors;
mod plugins;

pub use connectors::ROUTES as CONNECTOR_ROUTES;
pub use plugins::ROUTES as PLUGIN_ROUTES;

/// Every route this API serves, as (method, path template): checked against the OpenAPI
/// document by a test.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![("GET", "/"), ("GET", "/health"), ("GET", "/metrics")];
    all.extend_from_slice(CONNECTOR_ROUTES);
    all.extend_from_slice(PLUGIN_ROUTES);
    all
}

/// What `GET /` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// Sluice's version.
    pub version: String,
    /// The git commit it was built from.
    pub commit: String,
    /// The Kafka cluster the worker is connected to.
    pub kafka_cluster_id: String,
}

impl ServerInfo {
    /// This build's version and commit, for the given cluster.
    pub fn new(kafka_cluster_id: String) -> Self {
        ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: env!("SLUICE_GIT_COMMIT").to_owned(),
            kafka_cluster_id,
        }
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct RestState {
    /// `GET /`.
    pub info: ServerInfo,
    /// Renders `GET /metrics`.
    pub metrics: PrometheusHandle,
    /// The worker, once it runs connectors.
    pub worker: Option<Worker>,
}

/// An error in Kafka Connect's shape.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct RestError {
    /// The HTTP status, repeated in the body.
    pub error_code: u16,
    /// What went wrong, naming the field or resource at fault.
    pub message: String,
}

impl RestError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        RestError {
            error_code: status.as_u16(),
            message: message.into(),
        }
    }
}

impl ResponseError for RestError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.error_code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self)
    }
}

async fn root(state: web::Data<RestState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.info)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "healthy",
        "message": "Worker has completed startup and is ready to handle requests."
    }))
}

async fn metrics(state: web::Data<RestState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

pub(crate) async fn not_found() -> Result<HttpResponse, RestError> {
    Err(RestError::new(StatusCode::NOT_FOUND, "HTTP 404 Not Found"))
}

pub(crate) async fn method_not_allowed() -> Result<HttpResponse, RestError> {
    Err(RestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "HTTP 405 Method Not Allowed",
    ))
}

/// Counts requests and times them by route pattern (never the raw path, whose names would
/// explode the label set).
async fn instrument(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let response = next.call(req).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    metrics::counter!("sluice_rest_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("sluice_rest_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// Mounts the API on an actix-web app.
pub fn configure(state: RestState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state)).service(
            web::scope("")
                .wrap(actix_web::middleware::from_fn(instrument))
                // Kafka Connect tolerates a trailing slash; scripts rely on it.
                .wrap(actix_web::middleware::NormalizePath::trim())
                .service(
                    web::resource("/")
                        .route(web::get().to(root))
                        .default_service(web::to(method_not_allowed)),
                )
                .service(
                    web::resource("/health")
                        .route(web::get().to(health))
                        .default_service(web::to(method_not_allowed)),
                )
                .service(
                    web::resource("/metrics")
                        .route(web::get().to(metrics))
                        .default_service(web::to(method_not_allowed)),
                )
                .configure(connectors::routes)
                .configure(plugins::routes)
                .default_service(web::to(not_found)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};
    use std::sync::OnceLock;

    fn handle() -> PrometheusHandle {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        HANDLE
            .get_or_init(|| crate::telemetry::install_metrics().unwrap())
            .clone()
    }

    fn state() -> RestState {
        RestState {
            info: ServerInfo::new("abc123".into()),
            metrics: handle(),
            worker: None,
        }
    }

    #[actix_web::test]
    async fn root_reports_version_commit_and_cluster() {
        let app = test::init_service(App::new().configure(configure(state()))).await;
        let body: serde_json::Value =
            test::call_and_read_body_json(&app, test::TestRequest::get().uri("/").to_request())
                .await;
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(body["kafka_cluster_id"], "abc123");
        assert!(body["commit"].is_string());
    }

    #[actix_web::test]
    async fn health_is_kip_1017_shaped() {
        let app = test::init_service(App::new().configure(configure(state()))).await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["status"], "healthy");
    }

    #[actix_web::test]
    async fn unknown_paths_and_methods_get_kafka_connect_errors() {
        let app = test::init_service(App::new().configure(configure(state()))).await;
        let response = test::call_service(
            &app,
            test::TestRequest::get().uri("/no/such/thing").to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(
            body,
            serde_json::json!({"error_code": 404, "message": "HTTP 404 Not Found"})
        );

        let response =
            test::call_service(&app, test::TestRequest::delete().uri("/").to_request()).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["error_code"], 405);
    }

    #[actix_web::test]
    async fn metrics_count_requests_by_route() {
        let app = test::init_service(App::new().configure(configure(state()))).await;
        test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
        assert!(
            text.contains(
                r#"sluice_rest_requests_total{method="GET",route="/health",status="200"}"#
            ),
            "{text}"
        );
    }
}

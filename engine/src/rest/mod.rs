//! The REST API, in Kafka Connect's dialect: same paths, bodies, status codes and error
//! shape (`{"error_code":N,"message":"..."}`), so existing tools and scripts work
//! unchanged: the worker's identity (`GET /`), its health (`GET /health`, KIP-1017),
//! Prometheus metrics (`GET /metrics`), connectors (`/connectors/...`), plugins
//! (`/connector-plugins/...`) and log levels (`/admin/loggers`). `openapi.json` beside
//! this crate documents every route.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::herder::{Health, Herder};

mod admin;
mod connectors;
mod forward;
mod plugins;

pub use admin::ROUTES as ADMIN_ROUTES;
pub use connectors::ROUTES as CONNECTOR_ROUTES;
pub use plugins::ROUTES as PLUGIN_ROUTES;

/// Every route this API serves, as (method, path template): checked against the OpenAPI
/// document by a test.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![("GET", "/"), ("GET", "/health"), ("GET", "/metrics")];
    all.extend_from_slice(CONNECTOR_ROUTES);
    all.extend_from_slice(PLUGIN_ROUTES);
    all.extend_from_slice(ADMIN_ROUTES);
    all
}

/// The routes that require a JSON body (the OpenAPI document marks exactly these).
pub const BODY_ROUTES: &[(&str, &str)] = &[
    ("POST", "/connectors"),
    ("PUT", "/connectors/{connector}/config"),
    ("PATCH", "/connectors/{connector}/config"),
    ("PATCH", "/connectors/{connector}/offsets"),
    ("POST", "/connectors/{connector}/signals"),
    ("PUT", "/connector-plugins/{plugin}/config/validate"),
    ("PUT", "/admin/loggers/{logger}"),
];

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

/// Renders the Prometheus text exposition of `GET /metrics`.
pub type Exposition = Arc<dyn Fn() -> String + Send + Sync>;

/// Everything the handlers share.
#[derive(Clone)]
pub struct RestState {
    /// `GET /`.
    pub info: ServerInfo,
    /// Renders `GET /metrics` (the worker's Prometheus exposition).
    pub metrics: Exposition,
    /// The herder (while the worker starts, `/health` and the connector routes answer
    /// 503).
    pub herder: Arc<dyn Herder>,
    /// `topic.tracking.enable` and `topic.tracking.allow.reset` (KIP-558).
    pub topic_tracking: TopicTracking,
}

/// Whether active topics are tracked and may be reset (both on by default).
#[derive(Debug, Clone, Copy)]
pub struct TopicTracking {
    pub enabled: bool,
    pub allow_reset: bool,
}

impl Default for TopicTracking {
    fn default() -> Self {
        TopicTracking {
            enabled: true,
            allow_reset: true,
        }
    }
}

impl RestState {
    /// State for the API of `herder`.
    pub fn new(info: ServerInfo, metrics: Exposition, herder: Arc<dyn Herder>) -> Self {
        RestState {
            info,
            metrics,
            herder,
            topic_tracking: TopicTracking::default(),
        }
    }

    /// The same state with the worker's `topic.tracking.*` settings.
    #[must_use]
    pub fn with_topic_tracking(mut self, enabled: bool, allow_reset: bool) -> Self {
        self.topic_tracking = TopicTracking {
            enabled,
            allow_reset,
        };
        self
    }

    /// The herder.
    pub(crate) fn herder(&self) -> &dyn Herder {
        self.herder.as_ref()
    }
}

/// How long `/health` waits for the worker's actors to answer before it says unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

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

/// KIP-1017: 503 while starting, 200 when every actor the worker relies on answers,
/// 500 (naming the one that did not) otherwise.
async fn health(state: web::Data<RestState>) -> HttpResponse {
    match state.herder.health(HEALTH_TIMEOUT).await {
        Health::Starting => HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "starting",
            "message": "Worker is still starting up."
        })),
        Health::Healthy => HttpResponse::Ok().json(serde_json::json!({
            "status": "healthy",
            "message": "Worker has completed startup and is ready to handle requests."
        })),
        Health::Unhealthy(problem) => {
            tracing::warn!(problem = %problem, "health check failed");
            HttpResponse::InternalServerError().json(serde_json::json!({
                "status": "unhealthy",
                "message": problem
            }))
        }
    }
}

async fn metrics(state: web::Data<RestState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body((state.metrics)())
}

pub(crate) async fn not_found() -> Result<HttpResponse, RestError> {
    Err(RestError::new(StatusCode::NOT_FOUND, "HTTP 404 Not Found"))
}

/// 405 with the `Allow` header RFC 9110 asks for: the methods the matched path serves.
pub(crate) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let pattern = req.match_pattern().unwrap_or_default();
    let allowed: Vec<&str> = routes()
        .into_iter()
        .filter(|(_, p)| *p == pattern)
        .map(|(m, _)| m)
        .collect();
    let mut response = RestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "HTTP 405 Method Not Allowed",
    )
    .error_response();
    if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
        if !allowed.is_empty() {
            response.headers_mut().insert(header::ALLOW, value);
        }
    }
    response
}

/// Errors raised outside the handlers (an oversized body, a bad query string) come out of
/// actix as plain text; every error of this API has Kafka Connect's JSON envelope.
async fn envelope_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let response = next.call(req).await?;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return Ok(response.map_into_boxed_body());
    }
    let (request, response) = response.into_parts();
    let text = actix_web::body::to_bytes(response.into_body())
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
    } else {
        text
    };
    let response = RestError::new(status, message).error_response();
    Ok(ServiceResponse::new(request, response).map_into_boxed_body())
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
                .wrap(actix_web::middleware::from_fn(forward::forward_writes))
                .wrap(actix_web::middleware::from_fn(envelope_errors))
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
                .configure(admin::routes)
                .default_service(web::to(not_found)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};
    use std::sync::OnceLock;

    fn handle() -> Exposition {
        static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
        let handle = HANDLE
            .get_or_init(|| crate::telemetry::install_metrics().unwrap())
            .clone();
        Arc::new(move || crate::telemetry::render(&handle))
    }

    fn state() -> RestState {
        let loggers = Arc::new(crate::telemetry::Loggers::new("info", Box::new(|_| Ok(()))));
        RestState::new(
            ServerInfo::new("abc123".into()),
            handle(),
            Arc::new(crate::herder::Standalone::new(loggers)),
        )
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
    async fn health_says_starting_until_the_worker_is_there() {
        let app = test::init_service(App::new().configure(configure(state()))).await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["status"], "starting");
        assert!(body["message"].is_string());
    }

    #[actix_web::test]
    async fn loggers_are_listed_read_and_set() {
        let app = test::init_service(App::new().configure(configure(state()))).await;
        let put = |uri: &str, body: &str| {
            test::TestRequest::put()
                .uri(uri)
                .insert_header(("Content-Type", "application/json"))
                .set_payload(body.to_owned())
                .to_request()
        };
        let response = test::call_service(
            &app,
            put(
                "/admin/loggers/sluice_engine::task::sink",
                r#"{"level":"debug"}"#,
            ),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body, serde_json::json!(["sluice_engine::task::sink"]));

        let all: serde_json::Value = test::call_and_read_body_json(
            &app,
            test::TestRequest::get().uri("/admin/loggers").to_request(),
        )
        .await;
        assert_eq!(all["root"]["level"], "INFO");
        assert_eq!(all["root"]["last_modified"], serde_json::Value::Null);
        assert_eq!(all["sluice_engine::task::sink"]["level"], "DEBUG");
        assert!(all["sluice_engine::task::sink"]["last_modified"].is_u64());

        let one: serde_json::Value = test::call_and_read_body_json(
            &app,
            test::TestRequest::get()
                .uri("/admin/loggers/sluice_engine::task::sink::inner")
                .to_request(),
        )
        .await;
        assert_eq!(one["level"], "DEBUG");

        let cluster = test::call_service(
            &app,
            put("/admin/loggers/root?scope=cluster", r#"{"level":"WARN"}"#),
        )
        .await;
        assert_eq!(cluster.status(), StatusCode::NO_CONTENT);

        for (uri, body, fault) in [
            ("/admin/loggers/x", r#"{"level":"LOUD"}"#, "LOUD"),
            ("/admin/loggers/x", r#"{}"#, "level"),
            ("/admin/loggers/x", r#"not json"#, "JSON"),
            ("/admin/loggers/a=b", r#"{"level":"INFO"}"#, "a=b"),
        ] {
            let response = test::call_service(&app, put(uri, body)).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri} {body}");
            let error: serde_json::Value = test::read_body_json(response).await;
            assert_eq!(error["error_code"], 400);
            assert!(
                error["message"].as_str().unwrap_or("").contains(fault),
                "{error}"
            );
        }
        // Nothing changed by the refusals.
        let all: serde_json::Value = test::call_and_read_body_json(
            &app,
            test::TestRequest::get().uri("/admin/loggers").to_request(),
        )
        .await;
        assert_eq!(all.as_object().map(|o| o.len()), Some(2));
        assert_eq!(all["root"]["level"], "WARN");
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
    async fn method_not_allowed_names_the_allowed_methods() {
        let app = test::init_service(App::new().configure(configure(state()))).await;
        for (uri, allowed) in [
            ("/", "GET"),
            ("/connectors", "GET, POST"),
            ("/connectors/x/config", "GET, PUT, PATCH"),
            ("/admin/loggers/root", "GET, PUT"),
        ] {
            let response =
                test::call_service(&app, test::TestRequest::delete().uri(uri).to_request()).await;
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{uri}");
            let allow = response
                .headers()
                .get("Allow")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            assert_eq!(allow.as_deref(), Some(allowed), "{uri}");
        }
    }

    #[actix_web::test]
    async fn an_oversized_body_gets_the_error_envelope() {
        let app = test::init_service(App::new().configure(configure(state()))).await;
        let body = format!(r#"{{"level":"{}"}}"#, "x".repeat(4 * 1024 * 1024));
        let response = test::call_service(
            &app,
            test::TestRequest::put()
                .uri("/admin/loggers/root")
                .insert_header(("Content-Type", "application/json"))
                .set_payload(body)
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bytes = test::read_body(response).await;
        let error: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        assert_eq!(error["error_code"], 413, "{error}");
        assert!(error["message"].is_string(), "{error}");
    }

    #[actix_web::test]
    async fn an_unknown_logger_scope_is_refused_and_changes_nothing() {
        let app = test::init_service(App::new().configure(configure(state()))).await;
        let response = test::call_service(
            &app,
            test::TestRequest::put()
                .uri("/admin/loggers/root?scope=galaxy")
                .insert_header(("Content-Type", "application/json"))
                .set_payload(r#"{"level":"ERROR"}"#)
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let error: serde_json::Value = test::read_body_json(response).await;
        assert!(
            error["message"].as_str().unwrap_or("").contains("galaxy"),
            "{error}"
        );
        let all: serde_json::Value = test::call_and_read_body_json(
            &app,
            test::TestRequest::get().uri("/admin/loggers").to_request(),
        )
        .await;
        assert_eq!(all["root"]["level"], "INFO", "{all}");
    }

    /// The routes that take a body and the OpenAPI document agree, and such a route
    /// answers 400 (not 500, not success) when the body is missing.
    #[actix_web::test]
    async fn openapi_marks_exactly_the_routes_that_need_a_body() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).unwrap_or_default();
        let mut documented = Vec::new();
        for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in ops.as_object().into_iter().flatten() {
                if op["requestBody"]["required"] == true {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = BODY_ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
        let app = test::init_service(App::new().configure(configure(state()))).await;
        for (method, path) in &served {
            // Only the routes that need no worker can be called here; the connector
            // routes answer 503 before reading a body in this state.
            if path.starts_with("/connectors") {
                continue;
            }
            let uri = path
                .replace("{plugin}", "FileStreamSource")
                .replace("{logger}", "root");
            let request = match method.as_str() {
                "PUT" => test::TestRequest::put(),
                "POST" => test::TestRequest::post(),
                "PATCH" => test::TestRequest::patch(),
                other => panic!("method {other}"),
            }
            .uri(&uri)
            .to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{method} {uri}");
        }
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
                r#"sluice_rest_requests_total{method="GET",route="/health",status="503"}"#
            ),
            "{text}"
        );
    }
}

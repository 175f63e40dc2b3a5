//! In a cluster, config writes are the leader's: a write that reaches another worker is
//! sent on to the leader as it came (method, path, query, body) and the leader's answer is
//! returned as it is, as Kafka Connect's `completeOrForwardRequest` does. A forwarded
//! request carries a header, so it is served where it lands and never forwarded twice.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _, HttpResponse, ResponseError};
use futures_util::StreamExt as _;

use super::{RestError, RestState};
use crate::herder::cluster::herder::FORWARDED;

/// The largest body forwarded (far above any connector config).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// One HTTP client for every forwarded request (its connection pool and TLS setup are
/// made once, not per request).
fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// Whether the request changes the cluster's connectors (and so is the leader's).
fn is_write(method: &Method, path: &str) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) && (path == "/connectors" || path.starts_with("/connectors/"))
}

pub(super) async fn forward_writes(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let local = !is_write(req.method(), req.path()) || req.headers().contains_key(FORWARDED);
    let route = match req.app_data::<web::Data<RestState>>() {
        Some(state) if !local => state.herder.route_writes(),
        _ => Ok(None),
    };
    let leader = match route {
        Ok(None) => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body)
        }
        Ok(Some(url)) => url,
        Err(e) => {
            let response = RestError::new(StatusCode::CONFLICT, e.to_string()).error_response();
            let (request, _) = req.into_parts();
            return Ok(ServiceResponse::new(request, response));
        }
    };
    let mut body = web::BytesMut::new();
    let mut payload = req.take_payload();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_BODY {
            let response = RestError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                .error_response();
            let (request, _) = req.into_parts();
            return Ok(ServiceResponse::new(request, response));
        }
        body.extend_from_slice(&chunk);
    }
    let target = format!(
        "{}{}",
        leader.trim_end_matches('/'),
        req.uri()
            .path_and_query()
            .map_or_else(|| req.path().to_owned(), ToString::to_string)
    );
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .unwrap_or(reqwest::Method::POST);
    let mut forwarded = client()
        .request(method, &target)
        .header(FORWARDED, "1")
        .timeout(Duration::from_secs(90))
        .body(body.freeze());
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        forwarded = forwarded.header(reqwest::header::CONTENT_TYPE, ct.as_bytes());
    }
    metrics::counter!("sluice_rest_forwarded_requests_total").increment(1);
    tracing::debug!(target = %target, "write forwarded to the cluster's leader");
    let response = match forwarded.send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let content_type = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            match r.bytes().await {
                Ok(bytes) => HttpResponse::build(status)
                    .insert_header((header::CONTENT_TYPE, content_type))
                    .body(bytes),
                Err(e) => RestError::new(
                    StatusCode::CONFLICT,
                    format!("the leader ({leader}) did not answer in full: {e}"),
                )
                .error_response(),
            }
        }
        Err(e) => {
            metrics::counter!("sluice_rest_forward_failures_total").increment(1);
            RestError::new(
                StatusCode::CONFLICT,
                format!("Cannot complete request because of a conflicting operation (e.g. worker rebalance): the leader ({leader}) did not answer: {e}"),
            )
            .error_response()
        }
    };
    let (request, _) = req.into_parts();
    Ok(ServiceResponse::new(request, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connector_writes_go_to_the_leader() {
        assert!(is_write(&Method::POST, "/connectors"));
        assert!(is_write(&Method::PUT, "/connectors/a/config"));
        assert!(is_write(&Method::DELETE, "/connectors/a"));
        assert!(is_write(&Method::POST, "/connectors/a/tasks/0/restart"));
        assert!(!is_write(&Method::GET, "/connectors/a/status"));
        assert!(!is_write(
            &Method::PUT,
            "/connector-plugins/x/config/validate"
        ));
        assert!(!is_write(&Method::PUT, "/admin/loggers/root"));
    }
}

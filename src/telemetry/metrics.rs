//! Prometheus metrics at `GET /metrics`, on every process: requests by method and status with
//! their latency, events handled per consumer and published per module, outbox backlog while
//! the bus refuses events, and each remote module's breaker state and healthy instances.
//!
//! The recorder is process-wide (the `metrics` facade has one), installed on first use; tests
//! that start several shops in one process share it.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;
use crate::gateway::security::same_secret;

/// Request latency buckets, seconds: from a cached page to a checkout that waited for its saga.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the Prometheus recorder, once per process.
pub fn install() {
    handle();
}

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &LATENCY_BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if something else installed a recorder first; then that one records.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// `GET /metrics` in Prometheus' text format, for a scraper with `token` as its bearer token
/// (anyone else gets a 404: the shop's traffic and failures are not public), or, with an empty
/// token, for every client: only for an address of its own (`server.metrics_addr`), which
/// the operator keeps private. Nothing is judged from a client's address or headers: behind
/// a proxy every client looks local, and proxies mark what they forward in different ways.
pub fn router(token: String) -> Router {
    handle();
    let token = Arc::new(token);
    Router::new().route(
        "/metrics",
        get(move |req: Request| async move {
            if !may_scrape(&req, &token) {
                return ApiError::not_found("this address").into_response();
            }
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle().render(),
            )
                .into_response()
        }),
    )
}

fn may_scrape(req: &Request, token: &str) -> bool {
    if token.is_empty() {
        return true;
    }
    let sent = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    same_secret(sent.as_bytes(), token.as_bytes())
}

/// The method as a label: the standard ones by name, anything else as `other`, so that made-up
/// methods cannot grow the number of series without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts and times every request.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("ekart_http_requests_total", "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("ekart_http_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

//! The HTTP surface: shared state, the router of every route, and the middleware
//! stack (request id, request span without the raw URI, body limit, timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument;

use crate::ingest::Ingestor;
use crate::store::Store;
use crate::telemetry;

pub mod error;
mod health;
mod postbacks;

use error::AppError;

#[derive(Clone)]
pub struct AppState {
    pub ingestor: Arc<Ingestor>,
    pub store: Arc<dyn Store>,
    pub prometheus: PrometheusHandle,
    pub max_body_bytes: usize,
}

pub struct RouterOptions {
    pub request_timeout: Duration,
    /// Serve `/metrics` on the main router (false when it has its own listener).
    pub metrics_on_main: bool,
}

pub fn router(state: AppState, options: RouterOptions) -> Router {
    let mut routes = Router::new()
        .merge(postbacks::router())
        .merge(health::router());
    if options.metrics_on_main {
        routes = routes.merge(health::metrics_router());
    }
    let max_body = state.max_body_bytes;
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(observe))
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    AppError::Unavailable
                }))
                .layer(tower::timeout::TimeoutLayer::new(options.request_timeout))
                .layer(DefaultBodyLimit::max(max_body)),
        )
}

/// The metrics-only router for a separate listener.
pub fn metrics_router(state: AppState) -> Router {
    health::metrics_router().with_state(state)
}

async fn not_found() -> AppError {
    AppError::NotFound("no such route".into())
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed {
        allow: "see /openapi.json",
    }
}

/// One span per request with its id and matched route, never the raw URI (its query
/// may carry `api_key`); a log line when it ends; the latency histogram.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!("request", %request_id, method = %request.method(), %route);
    async move {
        let response = next.run(request).await.into_response();
        let status = response.status();
        let elapsed = started.elapsed();
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                elapsed_ms = elapsed.as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                elapsed_ms = elapsed.as_millis() as u64,
                "request done"
            );
        }
        telemetry::request_finished(route, status.as_u16(), elapsed);
        response
    }
    .instrument(span)
    .await
}

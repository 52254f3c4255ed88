//! Probes and the Prometheus scrape endpoint; none of them needs a token.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::AppError;
use super::AppState;
use crate::stale::Health;
use crate::telemetry;
use chrono::Utc;

/// `/readyz` answers 503 if the database does not answer within this time.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

pub fn metrics_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the JSON the probes write
struct ProbeOut {
    /// `ok` (healthz) or `ready` (readyz).
    status: String,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, body = ProbeOut, description = "alive")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the database answers, else 503.
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses((status = 200, body = ProbeOut, description = "ready")))]
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    if is_ready(&state).await {
        Ok(Json(json!({"status": "ready"})))
    } else {
        Err(AppError::Unavailable)
    }
}

/// Whether the database answers within [`READY_TIMEOUT`]; also sets the readiness gauge.
async fn is_ready(state: &AppState) -> bool {
    let ready = matches!(
        tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    );
    telemetry::ready(ready);
    ready
}

/// Longest a scrape waits for the partners' stale detection; past it, the partner
/// gauges keep the values of the last scrape that got them.
const PARTNER_GAUGES_TIMEOUT: Duration = Duration::from_secs(5);

/// Prometheus text format. Each scrape first checks readiness and reads every
/// partner's stale detection (the learned gaps are cached; see `stale.rs`), so the
/// gauges are as of the scrape on every node.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, body = String, content_type = "text/plain", description = "metrics")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (depth, capacity) = state.writer_queue.queue_depth();
    telemetry::writer_queue(depth, capacity);
    if is_ready(&state).await {
        refresh_partner_gauges(&state).await;
        refresh_forward_gauges(&state).await;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.prometheus.render(),
    )
}

async fn refresh_partner_gauges(state: &AppState) {
    let read = state.health.all(state.store.as_ref(), Utc::now());
    match tokio::time::timeout(PARTNER_GAUGES_TIMEOUT, read).await {
        Ok(Ok(partners)) => {
            for (app, partner, health) in partners {
                telemetry::partner_health(
                    app.to_string(),
                    partner.as_str(),
                    health
                        .last_accepted_at
                        .map(|t| t.timestamp_micros() as f64 / 1e6),
                    health.health == Health::Stale,
                    health.stale_after.num_milliseconds() as f64 / 1000.0,
                );
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::error_chain(&e), "partner gauges not refreshed")
        }
        Err(_) => tracing::warn!("partner gauges not refreshed: the database took too long"),
    }
}

/// The outbox backlog and dead count of every destination, as of this scrape.
async fn refresh_forward_gauges(state: &AppState) {
    let read = state.store.destination_backlogs();
    match tokio::time::timeout(PARTNER_GAUGES_TIMEOUT, read).await {
        Ok(Ok(destinations)) => {
            for d in destinations {
                telemetry::forward_backlog(
                    d.app_id.to_string(),
                    d.destination_id.to_string(),
                    d.backlog,
                    d.dead,
                );
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::error_chain(&e), "forwarding gauges not refreshed")
        }
        Err(_) => tracing::warn!("forwarding gauges not refreshed: the database took too long"),
    }
}

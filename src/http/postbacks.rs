//! `/v1/postbacks/{partner}`: a thin shell around [`crate::ingest`].

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use super::error::AppError;
use super::{AppState, BodyTimedOut};
use crate::domain::AppId;
use crate::ingest::{Outcome, PostbackRequest};
use crate::partners::{Method, PartnerId};
use crate::quota::RateInfo;
use crate::telemetry;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The body of a 200 answer to a postback.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PostbackAnswer {
    /// `accepted`, `duplicate` or `ignored`.
    status: String,
    /// The stored event (for `duplicate`: the first delivery's).
    event_id: Option<uuid::Uuid>,
    /// `organic` when ignored.
    reason: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive))
}

/// Receive one postback. Kochava and Branch POST JSON; Tune GET (or form POST);
/// Adjust GET; AppsFlyer and Singular GET or POST JSON. The API key travels in
/// `X-Api-Key`, the `api_key` query parameter, or an `api_key` body field.
#[utoipa::path(method(get, post), path = "/v1/postbacks/{partner}", tag = "postbacks",
    params(
        ("partner" = String, Path, description = "kochava, tune, appsflyer, adjust, singular or branch"),
        ("X-Api-Key" = Option<String>, Header, description = "the app's API key"),
        ("api_key" = Option<String>, Query, description = "the app's API key, when headers cannot be set"),
    ),
    request_body(content = Object, description = "partner fields (POST JSON or form)"),
    responses(
        (status = 200, description = "accepted, duplicate or ignored (organic)", body = PostbackAnswer),
        (status = 400, description = "invalid_payload"),
        (status = 401, description = "unauthorized"),
        (status = 404, description = "unknown_partner"),
        (status = 405, description = "method_not_allowed"),
        (status = 408, description = "request_timeout: the body did not arrive in time"),
        (status = 413, description = "payload_too_large"),
        (status = 429, description = "rate_limited"),
        (status = 503, description = "unavailable"),
    ))]
async fn receive(
    State(state): State<AppState>,
    partner: Result<Path<String>, PathRejection>,
    method: HttpMethod,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let handled = handle(state, partner, method, &headers, query, body).await;
    let status = handled.response.status();
    if status == StatusCode::OK {
        tracing::debug!(
            partner = handled.partner,
            app_id = handled.app_id.map(tracing::field::display),
            verdict = handled.verdict,
            "postback answered"
        );
    } else {
        // The request id and route are on the request span. Never the key: reasons
        // name fields, not values.
        tracing::info!(
            partner = handled.partner,
            app_id = handled.app_id.map(tracing::field::display),
            status = status.as_u16(),
            verdict = handled.verdict,
            reason = truncated(&handled.reason),
            "postback rejected"
        );
    }
    handled.response
}

/// One answered postback, with what its log line needs.
struct Handled {
    response: Response,
    /// The partner id, or `unknown` when the segment names none.
    partner: &'static str,
    app_id: Option<AppId>,
    verdict: &'static str,
    /// The error message of a non-200 answer.
    reason: String,
}

impl Handled {
    fn rejected(partner: &'static str, verdict: &'static str, error: AppError) -> Self {
        if partner != UNKNOWN {
            telemetry::postback_handled(partner, verdict);
        }
        Self {
            partner,
            app_id: None,
            verdict,
            reason: error.to_string(),
            response: error.into_response(),
        }
    }
}

const UNKNOWN: &str = "unknown";

/// Longest reason logged: a reason may quote a payload key name of any length.
const MAX_LOGGED_REASON: usize = 200;

fn truncated(reason: &str) -> &str {
    match reason.char_indices().nth(MAX_LOGGED_REASON) {
        Some((end, _)) => &reason[..end],
        None => reason,
    }
}

async fn handle(
    state: AppState,
    partner: Result<Path<String>, PathRejection>,
    method: HttpMethod,
    headers: &HeaderMap,
    query: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Handled {
    let received_at = Utc::now();
    // A segment that does not even decode (`%FF`) names no partner either: 404 in
    // JSON, not axum's plain-text 400.
    let partner: PartnerId = match partner.map(|Path(p)| p.parse()) {
        Ok(Ok(p)) => p,
        _ => return Handled::rejected(UNKNOWN, "unknown_partner", AppError::UnknownPartner),
    };
    let name = partner.as_str();
    let method = match method {
        HttpMethod::GET => Method::Get,
        HttpMethod::POST => Method::Post,
        _ => {
            let allow = partner.allowed_methods();
            return Handled::rejected(
                name,
                "method_not_allowed",
                AppError::MethodNotAllowed { allow },
            );
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = state.max_body_bytes;
            return Handled::rejected(
                name,
                "payload_too_large",
                AppError::PayloadTooLarge { limit },
            );
        }
        Err(rejection) if BodyTimedOut::caused(&rejection) => {
            return Handled::rejected(name, "request_timeout", AppError::RequestTimeout);
        }
        Err(_) => {
            let error = AppError::InvalidPayload("could not read the request body".into());
            return Handled::rejected(name, "invalid", error);
        }
    };
    let reply = state
        .ingestor
        .handle(PostbackRequest {
            partner,
            method,
            header_key: headers.get("x-api-key").and_then(|v| v.to_str().ok()),
            query: query.as_deref().unwrap_or(""),
            body: &body,
            received_at,
        })
        .await;

    let mut handled = match reply.result {
        Ok(outcome) => {
            telemetry::postback_handled(name, outcome.verdict());
            let body = match outcome {
                Outcome::Accepted { event_id } => {
                    json!({"status": "accepted", "event_id": event_id})
                }
                Outcome::Duplicate { first_event_id } => {
                    json!({"status": "duplicate", "event_id": first_event_id})
                }
                Outcome::Organic => json!({"status": "ignored", "reason": "organic"}),
            };
            Handled {
                response: Json(body).into_response(),
                partner: name,
                app_id: None,
                verdict: outcome.verdict(),
                reason: String::new(),
            }
        }
        Err(e) => Handled::rejected(name, e.verdict(), AppError::from(e)),
    };
    handled.app_id = reply.app_id;
    if let Some(rate) = reply.rate {
        add_rate_headers(handled.response.headers_mut(), rate);
    }
    handled
}

fn add_rate_headers(headers: &mut HeaderMap, rate: RateInfo) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(rate.reset));
}

//! `/v1/postbacks/{partner}`: a thin shell around [`crate::ingest`].

use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;

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
    #[schema(inline)]
    status: PostbackStatus,
    /// The stored event (for `duplicate`: the first delivery's).
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<uuid::Uuid>,
    /// `organic` when ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// What became of the postback.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PostbackStatus {
    Accepted,
    Duplicate,
    Ignored,
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
    request: Request,
) -> Response {
    let handled = handle(state, partner, method, &headers, query, request.into_body()).await;
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
    body: Body,
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
        HttpMethod::GET => Some(Method::Get),
        HttpMethod::POST => Some(Method::Post),
        _ => None,
    };
    // Before the body: a method the partner does not use needs none of it.
    let Some(method) = method.filter(|&m| partner.input(m).is_some()) else {
        let allow = partner.allowed_methods();
        return Handled::rejected(
            name,
            "method_not_allowed",
            AppError::MethodNotAllowed { allow },
        );
    };
    let limit = state.max_body_bytes;
    let too_large = || {
        let mut handled = Handled::rejected(
            name,
            "payload_too_large",
            AppError::PayloadTooLarge { limit },
        );
        // The body is left unread (with `Expect: 100-continue`, never asked for).
        handled
            .response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        handled
    };
    // A declared length over the limit is refused before reading a byte.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let body = match read_body(body, limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::TimedOut) => {
            return Handled::rejected(name, "request_timeout", AppError::RequestTimeout);
        }
        Err(BodyError::Unreadable) => {
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
            request_id: headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        })
        .await;

    let mut handled = match reply.result {
        Ok(outcome) => {
            telemetry::postback_handled(name, outcome.verdict());
            let (status, event_id, reason) = match outcome {
                Outcome::Accepted { event_id } => (PostbackStatus::Accepted, Some(event_id), None),
                Outcome::Duplicate { first_event_id } => {
                    (PostbackStatus::Duplicate, Some(first_event_id), None)
                }
                Outcome::Organic => (PostbackStatus::Ignored, None, Some("organic")),
            };
            let body = PostbackAnswer {
                status,
                event_id,
                reason,
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

pub(super) enum BodyError {
    TooLarge,
    TimedOut,
    Unreadable,
}

/// The whole body, or an error as soon as it grows past `limit`.
pub(super) async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > limit {
                        return Err(BodyError::TooLarge);
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Err(e) if BodyTimedOut::caused(&e) => return Err(BodyError::TimedOut),
            Err(_) => return Err(BodyError::Unreadable),
        }
    }
    Ok(Bytes::from(bytes))
}

fn add_rate_headers(headers: &mut HeaderMap, rate: RateInfo) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(rate.reset));
}

//! `/v1/postbacks/{partner}/test`: the dry run of a postback, behind the same checks
//! as the real endpoint (unknown partner, method, body size and time, API key). See
//! [`crate::dry_run`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::AppError;
use super::postbacks::{read_body, BodyError};
use super::AppState;
use crate::dry_run::{DryRunAnswer, DryRunError, DryRunRequest};
use crate::partners::{Method, PartnerId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(dry_run))
}

/// Try one postback without storing it: the same auth and payload as the real
/// endpoint; stores nothing, counts nothing, uses no quota.
#[utoipa::path(method(get, post), path = "/v1/postbacks/{partner}/test", tag = "postbacks",
    params(
        ("partner" = String, Path, description = "kochava, tune, appsflyer, adjust, singular or branch"),
    ),
    responses(
        (status = 200, description = "what the real endpoint would do", body = DryRunAnswer),
    ))]
async fn dry_run(
    State(state): State<AppState>,
    partner: Result<Path<String>, PathRejection>,
    method: HttpMethod,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    match run(state, partner, method, &headers, query, request).await {
        Ok(answer) => Json(answer).into_response(),
        // The body is left unread (with `Expect: 100-continue`, never asked for).
        Err(e @ AppError::PayloadTooLarge { .. }) => close_after(e.into_response()),
        Err(e) => e.into_response(),
    }
}

async fn run(
    state: AppState,
    partner: Result<Path<String>, PathRejection>,
    method: HttpMethod,
    headers: &HeaderMap,
    query: Option<String>,
    request: Request,
) -> Result<DryRunAnswer, AppError> {
    let received_at = Utc::now();
    let partner: PartnerId = match partner.map(|Path(p)| p.parse()) {
        Ok(Ok(p)) => p,
        _ => return Err(AppError::UnknownPartner),
    };
    let method = match method {
        HttpMethod::GET => Some(Method::Get),
        HttpMethod::POST => Some(Method::Post),
        _ => None,
    };
    let Some(method) = method.filter(|&m| partner.input(m).is_some()) else {
        return Err(AppError::MethodNotAllowed {
            allow: partner.allowed_methods(),
        });
    };
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(AppError::PayloadTooLarge { limit });
    }
    let body = match read_body(request.into_body(), limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Err(AppError::PayloadTooLarge { limit }),
        Err(BodyError::TimedOut) => return Err(AppError::RequestTimeout),
        Err(BodyError::Unreadable) => {
            return Err(AppError::InvalidPayload(
                "could not read the request body".into(),
            ))
        }
    };
    state
        .dry_run
        .run(DryRunRequest {
            partner,
            method,
            header_key: headers.get("x-api-key").and_then(|v| v.to_str().ok()),
            query: query.as_deref().unwrap_or(""),
            body: &body,
            received_at,
        })
        .await
        .map_err(|e| match e {
            DryRunError::MethodNotAllowed { partner } => AppError::MethodNotAllowed {
                allow: partner.allowed_methods(),
            },
            DryRunError::Unauthorized => AppError::Unauthorized,
            DryRunError::Unavailable => AppError::Unavailable,
        })
}

/// `Connection: close` on a 413: the unread body is not drained.
fn close_after(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

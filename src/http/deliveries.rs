//! The delivery log over HTTP (admin bearer token): what was answered to each
//! postback of an app, newest first, one delivery by its request id, and the
//! requests no key authenticated.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::admin::{
    decode_cursor, encode_cursor, find_app, non_empty, parse_bound, parse_limit, query_param,
    CURSOR_PATTERN, DEFAULT_PAGE, MAX_PAGE,
};
use super::auth::Admin;
use super::error::AppError;
use super::extract::{Params, Path, QueryParams};
use super::AppState;
use crate::domain::PartnerId;
use crate::store::deliveries::{
    DeliveryCursor, DeliveryFilter, DeliveryRecord, UnauthenticatedDelivery, Verdict,
};
use crate::store::UserCursor;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one))
        .routes(routes!(unauthenticated))
        .layer(axum::middleware::map_response(super::private_response))
}

/// The query parameters of each route, for the OpenAPI document.
pub fn documented_queries() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/v1/apps/{app_id}/deliveries",
            DeliveriesQuery::documented(),
        ),
        (
            "/v1/apps/{app_id}/deliveries/{request_id}",
            super::extract::NoParams::documented(),
        ),
        (
            "/v1/deliveries/unauthenticated",
            UnauthenticatedQuery::documented(),
        ),
    ]
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    partner: Option<String>,
    verdict: Option<String>,
    status: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl QueryParams for DeliveriesQuery {
    const NAMES: &'static [&'static str] =
        &["partner", "verdict", "status", "since", "limit", "cursor"];

    fn documented() -> Value {
        let mut partners = vec![""];
        partners.extend(PartnerId::ALL.map(PartnerId::as_str));
        let mut verdicts = vec![""];
        verdicts.extend(Verdict::ALL.map(Verdict::as_str));
        json!([
            query_param(
                "partner",
                "Only this partner's; empty: any.",
                json!({"type": "string", "enum": partners})
            ),
            query_param(
                "verdict",
                "Only this verdict; empty: any.",
                json!({"type": "string", "enum": verdicts})
            ),
            query_param(
                "status",
                "Only this HTTP status answered.",
                json!({"type": "integer", "minimum": 100, "maximum": 599})
            ),
            query_param(
                "since",
                "Received at or after: an RFC 3339 time or YYYY-MM-DD; empty: no bound.",
                json!({"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}, {"maxLength": 0}]}),
            ),
            query_param(
                "limit",
                &format!("Page size (default {DEFAULT_PAGE})."),
                json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
            ),
            query_param(
                "cursor",
                "`next_cursor` of the previous page, passed as given; empty: the first page.",
                json!({"type": "string", "pattern": CURSOR_PATTERN}),
            ),
        ])
    }
}

#[derive(Deserialize)]
pub struct UnauthenticatedQuery {
    limit: Option<String>,
}

impl QueryParams for UnauthenticatedQuery {
    const NAMES: &'static [&'static str] = &["limit"];

    fn documented() -> Value {
        json!([query_param(
            "limit",
            &format!("How many, newest first (default {DEFAULT_PAGE})."),
            json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
        )])
    }
}

/// One postback request of the app and what was answered.
#[derive(Serialize, ToSchema)]
pub struct DeliveryOut {
    received_at: DateTime<Utc>,
    #[schema(example = "kochava")]
    partner: String,
    #[schema(example = "POST")]
    method: String,
    /// The HTTP status answered.
    status: u16,
    /// accepted, duplicate, organic, invalid, rate_limited or unavailable.
    #[schema(example = "organic")]
    verdict: String,
    /// The rule that decided, in words.
    #[schema(example = "organic: network_name is \"Organic\"")]
    reason: String,
    #[schema(value_type = Option<String>, format = Uuid)]
    event_id: Option<Uuid>,
    request_id: String,
    /// The mapped source, campaign, adgroup and ad (accepted deliveries).
    #[schema(value_type = Option<Object>)]
    segments: Option<Value>,
    /// The mapped identifiers (accepted deliveries).
    #[schema(value_type = Option<Object>)]
    identifiers: Option<Value>,
    /// The request's fields without the API key, cut to `deliveries.payload_max_bytes`.
    #[schema(value_type = Object)]
    payload: Value,
}

impl From<DeliveryRecord> for DeliveryOut {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            received_at: d.received_at,
            partner: d.partner.to_string(),
            method: d.method,
            status: d.answer.status,
            verdict: d.answer.verdict.as_str().to_owned(),
            reason: d.answer.reason,
            event_id: d.answer.event_id,
            request_id: d.request_id,
            segments: d.segments,
            identifiers: d.identifiers,
            payload: d.payload,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveriesOut {
    deliveries: Vec<DeliveryOut>,
    /// Pass back as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// An app's delivery log, newest first.
#[utoipa::path(get, path = "/v1/apps/{app_id}/deliveries", tag = "admin",
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    responses((status = 200, body = DeliveriesOut)),
    security(("admin_token" = [])))]
async fn list(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    Params(q): Params<DeliveriesQuery>,
) -> Result<Json<DeliveriesOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let limit = parse_limit(q.limit)?;
    let bad = |what: &str| AppError::BadRequest(what.to_owned());
    let filter = DeliveryFilter {
        partner: non_empty(q.partner)
            .map(|p| p.parse::<PartnerId>().map_err(|_| bad("unknown partner")))
            .transpose()?,
        verdict: non_empty(q.verdict)
            .map(|v| {
                Verdict::parse(&v).ok_or_else(|| {
                    bad("verdict must be one of accepted, duplicate, organic, invalid, rate_limited, unavailable")
                })
            })
            .transpose()?,
        status: non_empty(q.status)
            .map(|s| {
                s.parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| bad("status must be an HTTP status code"))
            })
            .transpose()?,
        since: parse_bound("since", q.since)?,
    };
    let cursor = non_empty(q.cursor)
        .map(|c| {
            decode_cursor(&c)
                .map(|c| DeliveryCursor {
                    received_at: c.attributed_at,
                    id: c.id,
                })
                .ok_or_else(|| bad("cursor is not a next_cursor this server gave"))
        })
        .transpose()?;
    let mut rows = state
        .store
        .list_deliveries(app.id, &filter, cursor, limit + 1)
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| {
            encode_cursor(&UserCursor {
                attributed_at: r.received_at,
                id: r.id,
            })
        })
    } else {
        None
    };
    Ok(Json(DeliveriesOut {
        deliveries: rows.into_iter().map(DeliveryOut::from).collect(),
        next_cursor,
    }))
}

/// One delivery of the app, by the `X-Request-Id` it was answered with.
#[utoipa::path(get, path = "/v1/apps/{app_id}/deliveries/{request_id}", tag = "admin",
    params(("app_id" = String, Path, format = Uuid, description = "app id"),
           ("request_id" = String, Path, description = "the answer's X-Request-Id")),
    responses((status = 200, body = DeliveryOut)),
    security(("admin_token" = [])))]
async fn one(
    _: Admin,
    State(state): State<AppState>,
    Path((app_id, request_id)): Path<(String, String)>,
    Params(_): Params<super::extract::NoParams>,
) -> Result<Json<DeliveryOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let found = state.store.get_delivery(app.id, &request_id).await?;
    found
        .map(|d| Json(DeliveryOut::from(d)))
        .ok_or_else(|| AppError::NotFound(format!("no delivery with request id {request_id:?}")))
}

#[derive(Serialize, ToSchema)]
pub struct UnauthenticatedOut {
    received_at: DateTime<Utc>,
    partner: String,
    method: String,
    status: u16,
    reason: String,
    /// The display prefix of the presented key, when it has this server's format.
    key_prefix: Option<String>,
    request_id: String,
}

impl From<UnauthenticatedDelivery> for UnauthenticatedOut {
    fn from(u: UnauthenticatedDelivery) -> Self {
        Self {
            received_at: u.received_at,
            partner: u.partner.to_string(),
            method: u.method.to_owned(),
            status: u.status,
            reason: u.reason,
            key_prefix: u.key_prefix,
            request_id: u.request_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UnauthenticatedList {
    deliveries: Vec<UnauthenticatedOut>,
}

/// Postback requests whose API key was missing or unknown, newest first (at most
/// 20 a second are logged).
#[utoipa::path(get, path = "/v1/deliveries/unauthenticated", tag = "admin",
    responses((status = 200, body = UnauthenticatedList)),
    security(("admin_token" = [])))]
async fn unauthenticated(
    _: Admin,
    State(state): State<AppState>,
    Params(q): Params<UnauthenticatedQuery>,
) -> Result<Json<UnauthenticatedList>, AppError> {
    let limit = parse_limit(q.limit)?;
    let rows = state.store.list_unauthenticated(limit).await?;
    Ok(Json(UnauthenticatedList {
        deliveries: rows.into_iter().map(UnauthenticatedOut::from).collect(),
    }))
}

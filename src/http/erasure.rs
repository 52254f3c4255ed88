//! Erasure on request under `/v1/apps/{app_id}` (admin bearer token): delete one
//! user's data, and list the receipts (which never hold the identifier).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::admin::{find_app, parse_limit, query_param, LookupQuery, MAX_PAGE};
use super::auth::Admin;
use super::error::AppError;
use super::extract::{Params, Path, QueryParams};
use super::AppState;
use crate::store::privacy::{ErasureCounts, ErasureReceipt};

/// What one erasure removed.
#[derive(Serialize, ToSchema)]
pub struct ErasedOut {
    /// Attributions (0 or 1: the user's first touch).
    attributions: u64,
    /// Stored events that carried any of the user's identifiers (every partner).
    events: u64,
    /// Delivery log rows of those events or carrying those identifiers.
    deliveries: u64,
    /// Forwarding outbox messages of those events.
    outbox: u64,
}

impl From<ErasureCounts> for ErasedOut {
    fn from(c: ErasureCounts) -> Self {
        Self {
            attributions: c.attributions,
            events: c.events,
            deliveries: c.deliveries,
            outbox: c.outbox,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EraseOut {
    erased: ErasedOut,
    /// The receipt's id (listed by `GET /v1/apps/{app_id}/erasures`).
    #[schema(value_type = String, format = Uuid)]
    erasure_id: Uuid,
}

/// Erase one user: found by exactly one identifier, it removes the attribution,
/// every stored event carrying any of the user's identifiers, their delivery log
/// rows and forwarding messages, in one transaction, and keeps a receipt. Asking
/// again answers 200 with zero counts.
#[utoipa::path(delete, path = "/v1/apps/{app_id}/users", tag = "admin",
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    responses((status = 200, body = EraseOut)),
    security(("admin_token" = [])))]
pub async fn erase(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    Params(q): Params<LookupQuery>,
) -> Result<Json<EraseOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let (kind, value) = q.one_identifier()?;
    let receipt = state
        .store
        .erase_user(app.id, kind, &value, Utc::now())
        .await?;
    tracing::info!(app_id = %app.id, kind = kind.column(), erasure_id = %receipt.id,
        events = receipt.counts.events, "user erased");
    Ok(Json(EraseOut {
        erased: receipt.counts.into(),
        erasure_id: receipt.id,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ErasureOut {
    #[schema(value_type = String, format = Uuid)]
    id: Uuid,
    erased_at: DateTime<Utc>,
    /// Which identifier the request named: user_id, idfa, idfv, google_aid,
    /// android_id or partner_device_id.
    kind: &'static str,
    /// Hex HMAC-SHA256 of `kind:value` under the app's secret salt; never the value.
    value_hash: String,
    erased: ErasedOut,
}

impl From<ErasureReceipt> for ErasureOut {
    fn from(r: ErasureReceipt) -> Self {
        Self {
            id: r.id,
            erased_at: r.erased_at,
            kind: r.kind.column(),
            value_hash: r.value_hash,
            erased: r.counts.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ErasuresOut {
    erasures: Vec<ErasureOut>,
}

#[derive(Deserialize)]
pub struct ErasuresQuery {
    limit: Option<String>,
}

impl QueryParams for ErasuresQuery {
    const NAMES: &'static [&'static str] = &["limit"];

    fn documented() -> Value {
        json!([query_param(
            "limit",
            "How many receipts to list, newest first (default 100).",
            json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
        )])
    }
}

/// The app's erasure receipts, newest first.
#[utoipa::path(get, path = "/v1/apps/{app_id}/erasures", tag = "admin",
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    responses((status = 200, body = ErasuresOut)),
    security(("admin_token" = [])))]
pub async fn erasures(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    Params(q): Params<ErasuresQuery>,
) -> Result<Json<ErasuresOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let limit = parse_limit(q.limit)?;
    let receipts = state.store.list_erasures(app.id, limit).await?;
    Ok(Json(ErasuresOut {
        erasures: receipts.into_iter().map(ErasureOut::from).collect(),
    }))
}

/// Query parameters of these routes for the OpenAPI document: `(path, method, params)`.
pub fn documented_queries() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "/v1/apps/{app_id}/users",
            "delete",
            LookupQuery::documented(),
        ),
        (
            "/v1/apps/{app_id}/erasures",
            "get",
            ErasuresQuery::documented(),
        ),
    ]
}

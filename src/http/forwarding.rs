//! Repairing forwarding over HTTP (admin bearer token): a destination's messages
//! by status, and replay, which re-queues them with their `webhook-id` unchanged.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::admin::{find_app, non_empty, parse_bound, parse_limit};
use super::auth::Admin;
use super::error::AppError;
use super::extract::{Params, Path, QueryParams};
use super::AppState;
use crate::forwarding::replay::{self, ReplayError};
use crate::forwarding::sign::webhook_id;
use crate::store::forwarding::{MessageRecord, MessageStatus, ReplayFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(messages))
        .routes(routes!(replay_route))
        .layer(axum::middleware::map_response(super::private_response))
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    status: Option<String>,
    limit: Option<String>,
}

impl QueryParams for MessagesQuery {
    const NAMES: &'static [&'static str] = &["status", "limit"];
}

#[derive(Deserialize)]
pub struct ReplayQuery {
    dead: Option<String>,
    since: Option<String>,
}

impl QueryParams for ReplayQuery {
    const NAMES: &'static [&'static str] = &["dead", "since"];
}

/// One outbox message of a destination.
#[derive(Serialize, ToSchema)]
pub struct MessageOut {
    /// The Standard Webhooks message id, the same on every attempt and replay.
    #[schema(example = "msg_0193a1b2c3d47e5f8a9b0c1d2e3f4a5b")]
    webhook_id: String,
    /// `attribution.created` or `event.accepted`.
    #[schema(example = "attribution.created")]
    r#type: String,
    /// pending (due, or waiting for a retry when `attempts` > 0), delivered or dead.
    #[schema(example = "pending")]
    status: String,
    /// Attempts since it was committed or last replayed.
    attempts: i32,
    #[schema(value_type = String, format = Uuid)]
    event_id: Uuid,
    #[schema(value_type = Option<String>, format = Uuid)]
    attribution_id: Option<Uuid>,
    /// When its batch committed.
    created_at: DateTime<Utc>,
    /// When the next attempt is due (pending messages only).
    next_attempt_at: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status at the last attempt; null for a timeout, a
    /// connection error or a refused address.
    last_status: Option<i32>,
    /// What went wrong at the last attempt.
    last_error: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
}

impl From<MessageRecord> for MessageOut {
    fn from(m: MessageRecord) -> Self {
        Self {
            webhook_id: webhook_id(m.id),
            r#type: m.kind,
            status: m.status.as_str().to_owned(),
            attempts: m.attempts,
            event_id: m.event_id,
            attribution_id: m.attribution_id,
            created_at: m.created_at,
            next_attempt_at: m.next_attempt_at,
            last_attempt_at: m.last_attempt_at,
            last_status: m.last_status,
            last_error: m.last_error,
            delivered_at: m.delivered_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MessagesOut {
    /// Newest first.
    messages: Vec<MessageOut>,
}

#[derive(Serialize, ToSchema)]
pub struct ReplayOut {
    #[schema(value_type = String, format = Uuid)]
    destination_id: Uuid,
    /// Messages made pending again.
    requeued: u64,
    /// False when the destination is disabled: nothing is sent until it is enabled.
    enabled: bool,
}

/// The destination named in the path, of the app named in the path, or 404.
async fn find_destination(
    state: &AppState,
    app_id: &str,
    dest: &str,
) -> Result<(crate::domain::AppId, Uuid), AppError> {
    let app = find_app(state, app_id).await?;
    let not_found = || AppError::NotFound(format!("no destination with id {dest:?} in this app"));
    let id = Uuid::parse_str(dest).map_err(|_| not_found())?;
    match state.store.get_destination(id).await? {
        Some(d) if d.app_id == app.id => Ok((app.id, id)),
        _ => Err(not_found()),
    }
}

/// A destination's outbox messages, newest first.
#[utoipa::path(get, path = "/v1/apps/{app_id}/destinations/{destination_id}/messages", tag = "admin",
    params(
        ("app_id" = String, Path, format = Uuid, description = "app id"),
        ("destination_id" = String, Path, format = Uuid, description = "destination id"),
        ("status" = Option<String>, Query, description = "Only this status; empty: any.",
            pattern = "^(|pending|delivered|dead)$"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "How many, newest first (default 100)."),
    ),
    responses((status = 200, body = MessagesOut)),
    security(("admin_token" = [])))]
async fn messages(
    _: Admin,
    State(state): State<AppState>,
    Path((app_id, dest)): Path<(String, String)>,
    Params(q): Params<MessagesQuery>,
) -> Result<Json<MessagesOut>, AppError> {
    let (app, dest) = find_destination(&state, &app_id, &dest).await?;
    let status = non_empty(q.status)
        .map(|s| {
            MessageStatus::parse(&s).ok_or_else(|| {
                AppError::BadRequest("status must be one of pending, delivered, dead".into())
            })
        })
        .transpose()?;
    let limit = parse_limit(q.limit)?;
    let rows = state.store.list_messages(app, dest, status, limit).await?;
    Ok(Json(MessagesOut {
        messages: rows.into_iter().map(MessageOut::from).collect(),
    }))
}

/// Re-queue a destination's dead messages (`dead=true`), or its dead and delivered
/// ones created at or after `since`, or the dead ones since then (both). They are
/// sent again with the same `webhook-id`.
#[utoipa::path(post, path = "/v1/apps/{app_id}/destinations/{destination_id}/replay", tag = "admin",
    params(
        ("app_id" = String, Path, format = Uuid, description = "app id"),
        ("destination_id" = String, Path, format = Uuid, description = "destination id"),
        ("dead" = Option<bool>, Query, description = "Only dead messages."),
        ("since" = Option<String>, Query,
            description = "Only messages created at or after: an RFC 3339 time or YYYY-MM-DD."),
    ),
    responses((status = 200, body = ReplayOut)),
    security(("admin_token" = [])))]
async fn replay_route(
    _: Admin,
    State(state): State<AppState>,
    Path((app_id, dest)): Path<(String, String)>,
    Params(q): Params<ReplayQuery>,
) -> Result<Json<ReplayOut>, AppError> {
    let (app, dest) = find_destination(&state, &app_id, &dest).await?;
    let dead_only = match non_empty(q.dead).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(AppError::BadRequest("dead must be true or false".into())),
    };
    let filter = ReplayFilter {
        dead_only,
        since: parse_bound("since", q.since)?,
    };
    match replay::replay(state.store.as_ref(), Some(app), dest, filter).await {
        Ok(done) => Ok(Json(ReplayOut {
            destination_id: done.destination_id,
            requeued: done.requeued,
            enabled: done.enabled,
        })),
        Err(ReplayError::Unbounded) => Err(AppError::BadRequest(
            "say which messages: dead=true, since=TIME, or both".into(),
        )),
        Err(ReplayError::UnknownDestination(_)) => Err(AppError::NotFound(
            "no destination with this id in this app".into(),
        )),
        Err(ReplayError::Store(e)) => Err(e.into()),
    }
}

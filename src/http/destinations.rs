//! An app's forwarding destinations over HTTP (admin bearer token): list, add
//! (answers the signing secret, this once), remove. The rules live in
//! `forwarding::destinations`, shared with the CLI.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::admin::find_app;
use super::auth::Admin;
use super::error::AppError;
use super::extract::{NoParams, Params, Path, QueryParams};
use super::postbacks::{read_body, BodyError};
use super::AppState;
use crate::forwarding::destinations::{
    self as dest, CreatedView, DestinationError, DestinationView, MAX_URL_CHARS,
};
use crate::store::forwarding::DestinationWhat;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, add))
        .routes(routes!(remove))
        .layer(axum::middleware::map_response(super::private_response))
}

/// The query parameters of each GET route, for the OpenAPI document.
pub fn documented_queries() -> Vec<(&'static str, Value)> {
    vec![("/v1/apps/{app_id}/destinations", NoParams::documented())]
}

impl From<DestinationError> for AppError {
    fn from(e: DestinationError) -> Self {
        match e {
            DestinationError::UnknownApp(_) | DestinationError::UnknownDestination(_) => {
                AppError::NotFound(e.to_string())
            }
            DestinationError::InvalidUrl(_) | DestinationError::PrivateTarget(_) => {
                AppError::BadRequest(e.to_string())
            }
            DestinationError::Store(e) => e.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DestinationsOut {
    destinations: Vec<DestinationView>,
}

/// The app's destinations, oldest first, with their state, backlog and dead count
/// (never their secrets).
#[utoipa::path(get, path = "/v1/apps/{app_id}/destinations", tag = "admin",
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    responses((status = 200, body = DestinationsOut)),
    security(("admin_token" = [])))]
async fn list(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    _: Params<NoParams>,
) -> Result<Json<DestinationsOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let list = state.store.list_destinations(app.id).await?;
    Ok(Json(DestinationsOut {
        destinations: list.iter().map(DestinationView::from).collect(),
    }))
}

/// What a destination is sent, as the API spells it.
#[derive(ToSchema, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // documents `what`; the handler reads the JSON by hand
pub enum WhatIn {
    Attributions,
    Events,
    All,
}

/// A destination to add.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by hand from the JSON body, for messages naming the field
pub struct NewDestinationIn {
    /// Where messages are POSTed. Loopback, link-local and private addresses (IP
    /// literals, `localhost`, names that resolve there now) are refused unless
    /// `forwarding.allow_private_targets` is set.
    #[schema(
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://",
        max_length = 2048,
        example = "https://hooks.example.com/attributions"
    )]
    url: String,
    /// `attributions` (default): one message per new first-touch attribution;
    /// `events`: one per accepted delivery, installs included; `all`: both.
    #[schema(required = false)]
    what: WhatIn,
}

/// Add a destination; the answer carries its signing secret, shown only this once.
#[utoipa::path(post, path = "/v1/apps/{app_id}/destinations", tag = "admin",
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    request_body(content = NewDestinationIn, content_type = "application/json"),
    responses((status = 201, body = CreatedView, description = "added; `secret` is shown only here")),
    security(("admin_token" = [])))]
async fn add(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    _: Params<NoParams>,
    body: Body,
) -> Result<(StatusCode, Json<CreatedView>), AppError> {
    let app = find_app(&state, &app_id).await?;
    let body = read_body(body, state.max_body_bytes)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => AppError::PayloadTooLarge {
                limit: state.max_body_bytes,
            },
            BodyError::TimedOut => AppError::RequestTimeout,
            BodyError::Unreadable => AppError::BadRequest("could not read the request body".into()),
        })?;
    let (url, what) = parse_new_destination(&body)?;
    let created = dest::add_destination(
        state.store.as_ref(),
        app.id,
        &url,
        what,
        state.allow_private_targets,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedView::from(&created))))
}

/// `{"url": "…", "what": "…"}` with `what` optional; anything else is named.
fn parse_new_destination(body: &[u8]) -> Result<(String, DestinationWhat), AppError> {
    let bad = |m: &str| AppError::BadRequest(m.to_owned());
    let shape =
        r#"the body must be a JSON object {"url": "https://…", "what": "attributions|events|all"}"#;
    let value: Value = serde_json::from_slice(body).map_err(|_| bad(shape))?;
    let Value::Object(fields) = value else {
        return Err(bad(shape));
    };
    if let Some(other) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "url" | "what"))
    {
        let shown: String = other.chars().take(64).collect();
        return Err(bad(&format!(
            "unknown field {shown:?}; expected url and optionally what"
        )));
    }
    let url = match fields.get("url") {
        Some(Value::String(url)) => url.clone(),
        Some(_) => return Err(bad("url must be a string")),
        None => return Err(bad("url is required")),
    };
    if url.chars().count() > MAX_URL_CHARS {
        return Err(bad(&format!(
            "invalid destination URL: longer than {MAX_URL_CHARS} characters"
        )));
    }
    let what = match fields.get("what") {
        None => DestinationWhat::Attributions,
        Some(Value::String(w)) => DestinationWhat::parse(w)
            .ok_or_else(|| bad("what must be one of attributions, events, all"))?,
        Some(_) => return Err(bad("what must be one of attributions, events, all")),
    };
    Ok((url, what))
}

#[derive(Serialize, ToSchema)]
pub struct RemovedOut {
    #[schema(value_type = String, format = Uuid)]
    destination_id: Uuid,
    /// The destination's messages deleted with it (pending, dead and delivered).
    messages_removed: u64,
}

/// Remove a destination and all its messages: nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/apps/{app_id}/destinations/{destination_id}", tag = "admin",
    params(("app_id" = String, Path, format = Uuid, description = "app id"),
        ("destination_id" = String, Path, format = Uuid, description = "destination id")),
    responses((status = 200, body = RemovedOut)),
    security(("admin_token" = [])))]
async fn remove(
    _: Admin,
    State(state): State<AppState>,
    Path((app_id, destination_id)): Path<(String, String)>,
    _: Params<NoParams>,
) -> Result<Json<RemovedOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let not_found = || {
        AppError::NotFound(format!(
            "no destination with id {destination_id:?} in this app"
        ))
    };
    let id = Uuid::parse_str(&destination_id).map_err(|_| not_found())?;
    // Found by id alone: make sure it is this app's.
    match state.store.get_destination(id).await? {
        Some(d) if d.app_id == app.id => {}
        _ => return Err(not_found()),
    }
    let messages_removed = dest::remove(state.store.as_ref(), id).await?;
    Ok(Json(RemovedOut {
        destination_id: id,
        messages_removed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_strictly_and_problems_named() {
        let ok = parse_new_destination(br#"{"url":"https://x.example/h"}"#).unwrap();
        assert_eq!(ok.1, DestinationWhat::Attributions);
        let all = parse_new_destination(br#"{"url":"https://x.example/h","what":"all"}"#);
        assert_eq!(all.unwrap().1, DestinationWhat::All);
        for (body, says) in [
            (&b""[..], "JSON object"),
            (b"[]", "JSON object"),
            (br#"{"what":"all"}"#, "url is required"),
            (br#"{"url":1}"#, "url must be a string"),
            (
                br#"{"url":"https://x.example","what":"clicks"}"#,
                "what must be",
            ),
            (
                br#"{"url":"https://x.example","what":null}"#,
                "what must be",
            ),
            (
                br#"{"url":"https://x.example","secret":"x"}"#,
                "unknown field \"secret\"",
            ),
        ] {
            let err = parse_new_destination(body).unwrap_err().to_string();
            assert!(
                err.contains(says),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

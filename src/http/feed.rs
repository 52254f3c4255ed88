//! The pull feed (admin bearer token): an app's attributions in commit order, for
//! consumers that poll rather than take webhooks. The cursor is stable: resuming
//! from a stored `next_cursor` never skips or repeats a row (README "Attribution feed").

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::admin::{
    find_app, non_empty, parse_limit, query_param, UserOut, DEFAULT_PAGE, MAX_PAGE,
};
use super::auth::Admin;
use super::error::AppError;
use super::extract::{Params, Path, QueryParams};
use super::AppState;
use crate::store::feed::{FeedCursor, FeedEntry};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(feed))
        .layer(axum::middleware::map_response(super::private_response))
}

/// The query parameters of the route, for the OpenAPI document.
pub fn documented_queries() -> Vec<(&'static str, Value)> {
    vec![(
        "/v1/apps/{app_id}/attributions/feed",
        FeedQuery::documented(),
    )]
}

#[derive(Deserialize)]
pub struct FeedQuery {
    after: Option<String>,
    limit: Option<String>,
}

impl QueryParams for FeedQuery {
    const NAMES: &'static [&'static str] = &["after", "limit"];

    fn documented() -> Value {
        json!([
            query_param(
                "after",
                "A `next_cursor` this route gave, passed as given; absent or empty: from the \
                 first attribution.",
                json!({"type": "string", "pattern": FEED_CURSOR_PATTERN}),
            ),
            query_param(
                "limit",
                &format!("Most attributions on the page (default {DEFAULT_PAGE})."),
                json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
            ),
        ])
    }
}

/// One attribution: the users API's object, with the attribution's own id.
#[derive(Serialize, ToSchema)]
pub struct FeedAttributionOut {
    #[schema(value_type = String, format = Uuid)]
    attribution_id: Uuid,
    #[serde(flatten)]
    user: UserOut,
}

impl From<FeedEntry> for FeedAttributionOut {
    fn from(e: FeedEntry) -> Self {
        Self {
            attribution_id: e.attribution.id,
            user: UserOut::from(e.attribution),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct FeedOut {
    /// In commit order; fewer than `limit` (even none) when no more are committed yet.
    attributions: Vec<FeedAttributionOut>,
    /// On every page, the last and empty ones too: pass it as `after` to go on, now
    /// or later; a stored one stays valid.
    #[schema(pattern = "^[0-9]{1,18}-[0-9a-f]{32}$")]
    next_cursor: String,
}

/// The app's attributions in the order they were committed, after a cursor.
#[utoipa::path(get, path = "/v1/apps/{app_id}/attributions/feed", tag = "admin",
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    responses((status = 200, body = FeedOut)),
    security(("admin_token" = [])))]
async fn feed(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    Params(q): Params<FeedQuery>,
) -> Result<Json<FeedOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let limit = parse_limit(q.limit)?;
    let after = match non_empty(q.after) {
        None => FeedCursor::START,
        Some(c) => decode_feed_cursor(&c).ok_or_else(|| {
            AppError::BadRequest("after is not a next_cursor this route gave".into())
        })?,
    };
    let entries = state.store.attribution_feed(app.id, after, limit).await?;
    let next = entries.last().map_or(after, |e| e.cursor);
    Ok(Json(FeedOut {
        attributions: entries.into_iter().map(FeedAttributionOut::from).collect(),
        next_cursor: encode_feed_cursor(next),
    }))
}

/// What [`decode_feed_cursor`] accepts, and empty.
const FEED_CURSOR_PATTERN: &str = "^([0-9]{1,18}-[0-9a-f]{32})?$";

/// Longest position of a cursor: 18 digits fit both backends' integers (a
/// PostgreSQL transaction id of 10^18 is centuries of transactions away).
const POSITION_DIGITS: usize = 18;

/// Opaque to clients: `<position>-<row id as 32 hex digits>`. A different shape
/// from the users cursor (`<micros>.<hex>`), so one is never taken for the other.
fn encode_feed_cursor(c: FeedCursor) -> String {
    format!("{}-{}", c.position, c.id.simple())
}

fn decode_feed_cursor(s: &str) -> Option<FeedCursor> {
    let (position, id) = s.split_once('-')?;
    let well_formed = (1..=POSITION_DIGITS).contains(&position.len())
        && position.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !well_formed {
        return None;
    }
    Some(FeedCursor {
        position: position.parse().ok()?,
        id: Uuid::parse_str(id).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_cursors_round_trip_and_garbage_is_rejected() {
        for c in [
            FeedCursor::START,
            FeedCursor {
                position: 7_286,
                id: Uuid::now_v7(),
            },
            FeedCursor {
                position: 999_999_999_999_999_999,
                id: Uuid::now_v7(),
            },
        ] {
            let text = encode_feed_cursor(c);
            assert_eq!(decode_feed_cursor(&text), Some(c), "{text}");
        }
        let hex = Uuid::now_v7().simple().to_string();
        for garbage in [
            "not a cursor".to_owned(),
            "1-2".to_owned(),
            format!("1-{}", hex.to_uppercase()),
            format!("+1-{hex}"),
            format!("-1-{hex}"),
            format!("1-{hex}0"),
            format!("-{hex}"),
            format!("{}-{hex}", "9".repeat(19)),
            // A users-API cursor is not a feed cursor.
            format!("1714665600123456.{hex}"),
        ] {
            assert_eq!(decode_feed_cursor(&garbage), None, "{garbage}");
        }
    }
}

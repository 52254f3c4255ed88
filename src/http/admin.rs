//! The read API under `/v1/apps…` (admin bearer token): apps, partner status and
//! endpoints, users by segment, lookup by identifier, summaries.

use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::auth::Admin;
use super::error::AppError;
use super::extract::{Path, Query};
use super::AppState;
use crate::apps;
use crate::domain::PartnerId;
use crate::domain::{AppId, ConnectionStatus};
use crate::store::{
    AppRecord, AttributionRecord, Dimension, IdentifierKind, PartnerConnection, UserCursor,
    UserFilter,
};

pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_apps))
        .routes(routes!(partners))
        .routes(routes!(users))
        .routes(routes!(lookup))
        .routes(routes!(summary))
}

#[derive(Serialize, ToSchema)]
pub struct AppOut {
    #[schema(value_type = String, format = Uuid)]
    app_id: AppId,
    name: String,
    #[schema(example = "standard")]
    tier: String,
    /// Display prefixes of the keys that work now (never the keys).
    key_prefixes: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<AppRecord> for AppOut {
    fn from(a: AppRecord) -> Self {
        Self {
            app_id: a.id,
            name: a.name,
            tier: a.tier.to_string(),
            key_prefixes: a.key_prefixes,
            created_at: a.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AppsOut {
    apps: Vec<AppOut>,
}

/// All apps with their tier.
#[utoipa::path(get, path = "/v1/apps", tag = "admin",
    responses((status = 200, body = AppsOut), (status = 401), (status = 403)),
    security(("admin_token" = [])))]
async fn list_apps(_: Admin, State(state): State<AppState>) -> Result<Json<AppsOut>, AppError> {
    let apps = state.store.list_apps().await?;
    Ok(Json(AppsOut {
        apps: apps.into_iter().map(AppOut::from).collect(),
    }))
}

#[derive(Serialize, ToSchema, Default)]
pub struct Counters {
    pub installs: i64,
    pub events: i64,
    pub organic_ignored: i64,
    pub duplicates: i64,
    pub rejected: i64,
    /// Answered 429: over the install quota or the request limit.
    pub rate_limited: i64,
}

#[derive(Serialize, ToSchema)]
pub struct PartnerOut {
    #[schema(example = "tune")]
    pub partner: String,
    pub name: &'static str,
    /// `connected` after the first accepted attributed install, else `not_connected`.
    #[schema(example = "connected")]
    status: &'static str,
    pub last_success_at: Option<DateTime<Utc>>,
    pub counters: Counters,
    #[schema(example = "GET, POST")]
    pub method: &'static str,
    pub endpoint_url: String,
    /// GET partners: the full URL with the partner's macros; replace YOUR_API_KEY.
    pub postback_url_template: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PartnersOut {
    #[schema(value_type = String, format = Uuid)]
    app_id: AppId,
    key_prefixes: Vec<String>,
    partners: Vec<PartnerOut>,
}

/// Every partner with its status, counters and the URL to paste into its dashboard.
#[utoipa::path(get, path = "/v1/apps/{app_id}/partners", tag = "admin",
    params(("app_id" = String, Path, description = "app id")),
    responses((status = 200, body = PartnersOut), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
async fn partners(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<Json<PartnersOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let overview = partner_overview(&state, &app).await?;
    Ok(Json(PartnersOut {
        app_id: app.id,
        key_prefixes: app.key_prefixes,
        partners: overview,
    }))
}

/// One entry per partner (connected or not), in registry order; shared with the page.
pub async fn partner_overview(
    state: &AppState,
    app: &AppRecord,
) -> Result<Vec<PartnerOut>, AppError> {
    let connections = state.store.partner_connections(app.id).await?;
    let endpoints = apps::endpoints(&state.base_url, None);
    Ok(endpoints
        .into_iter()
        .map(|e| {
            let conn = connections.iter().find(|c| c.partner == e.partner);
            PartnerOut {
                partner: e.partner.to_string(),
                name: e.partner.display_name(),
                status: match conn.map(|c| c.status) {
                    Some(ConnectionStatus::Connected) => "connected",
                    _ => "not_connected",
                },
                last_success_at: conn.and_then(|c| c.last_success_at),
                counters: conn.map(counters).unwrap_or_default(),
                method: e.method,
                endpoint_url: e.endpoint_url,
                postback_url_template: e.postback_url_template,
            }
        })
        .collect())
}

fn counters(c: &PartnerConnection) -> Counters {
    Counters {
        installs: c.installs,
        events: c.events,
        organic_ignored: c.organic_ignored,
        duplicates: c.duplicates,
        rejected: c.rejected,
        rate_limited: c.rate_limited,
    }
}

impl PartnerOut {
    pub fn is_connected(&self) -> bool {
        self.status == "connected"
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Exact source (network).
    source: Option<String>,
    campaign: Option<String>,
    adgroup: Option<String>,
    ad: Option<String>,
    /// Partner id, e.g. `kochava`.
    partner: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserOut {
    user_id: Option<String>,
    idfa: Option<String>,
    idfv: Option<String>,
    google_aid: Option<String>,
    android_id: Option<String>,
    partner_device_id: Option<String>,
    partner: String,
    source: Option<String>,
    campaign: Option<String>,
    adgroup: Option<String>,
    ad: Option<String>,
    attributed_at: DateTime<Utc>,
    /// The install that won the attribution.
    event_id: Uuid,
}

impl From<AttributionRecord> for UserOut {
    fn from(a: AttributionRecord) -> Self {
        Self {
            user_id: a.ids.user_id,
            idfa: a.ids.idfa,
            idfv: a.ids.idfv,
            google_aid: a.ids.google_aid,
            android_id: a.ids.android_id,
            partner_device_id: a.ids.partner_device_id,
            partner: a.partner.to_string(),
            source: a.segments.source,
            campaign: a.segments.campaign,
            adgroup: a.segments.adgroup,
            ad: a.segments.ad,
            attributed_at: a.attributed_at,
            event_id: a.event_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UsersOut {
    users: Vec<UserOut>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Users whose attribution matches every given filter, newest first.
#[utoipa::path(get, path = "/v1/apps/{app_id}/users", tag = "admin",
    params(("app_id" = String, Path, description = "app id"), UsersQuery),
    responses((status = 200, body = UsersOut), (status = 400), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
async fn users(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    Query(q): Query<UsersQuery>,
) -> Result<Json<UsersOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let limit = parse_limit(q.limit)?;
    let partner = match non_empty(q.partner) {
        None => None,
        Some(p) => Some(
            p.parse::<PartnerId>()
                .map_err(|_| AppError::BadRequest(format!("unknown partner {p:?}")))?,
        ),
    };
    let cursor = match non_empty(q.cursor) {
        None => None,
        Some(c) => {
            Some(decode_cursor(&c).ok_or_else(|| AppError::BadRequest("invalid cursor".into()))?)
        }
    };
    let filter = UserFilter {
        source: non_empty(q.source),
        campaign: non_empty(q.campaign),
        adgroup: non_empty(q.adgroup),
        ad: non_empty(q.ad),
        partner,
    };
    // One row more than asked tells whether another page exists.
    let mut rows = state
        .store
        .list_users(app.id, &filter, cursor.as_ref(), limit + 1)
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| {
            encode_cursor(&UserCursor {
                attributed_at: r.attributed_at,
                id: r.id,
            })
        })
    } else {
        None
    };
    Ok(Json(UsersOut {
        users: rows.into_iter().map(UserOut::from).collect(),
        next_cursor,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    user_id: Option<String>,
    idfa: Option<String>,
    idfv: Option<String>,
    google_aid: Option<String>,
    android_id: Option<String>,
    partner_device_id: Option<String>,
}

/// One user's attribution, found by exactly one identifier.
#[utoipa::path(get, path = "/v1/apps/{app_id}/users/lookup", tag = "admin",
    params(("app_id" = String, Path, description = "app id"), LookupQuery),
    responses((status = 200, body = UserOut), (status = 400), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
async fn lookup(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    Query(q): Query<LookupQuery>,
) -> Result<Json<UserOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let given: Vec<(IdentifierKind, String)> = [
        (IdentifierKind::UserId, q.user_id),
        (IdentifierKind::Idfa, q.idfa),
        (IdentifierKind::Idfv, q.idfv),
        (IdentifierKind::GoogleAid, q.google_aid),
        (IdentifierKind::AndroidId, q.android_id),
        (IdentifierKind::PartnerDeviceId, q.partner_device_id),
    ]
    .into_iter()
    .filter_map(|(k, v)| non_empty(v).map(|v| (k, v)))
    .collect();
    let [(kind, value)] = given.as_slice() else {
        return Err(AppError::BadRequest(
            "give exactly one of user_id, idfa, idfv, google_aid, android_id, partner_device_id"
                .into(),
        ));
    };
    let found = state.store.lookup_user(app.id, *kind, value).await?;
    found.map(|a| Json(UserOut::from(a))).ok_or_else(|| {
        AppError::NotFound(format!("no attributed user with that {}", kind.column()))
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// source, campaign, adgroup or ad.
    by: Option<String>,
    /// Inclusive start: RFC 3339 time or YYYY-MM-DD (UTC midnight).
    since: Option<String>,
    /// Exclusive end: RFC 3339 time or YYYY-MM-DD (UTC midnight).
    until: Option<String>,
    /// How many values to list, 1–1000 (default 100); the rest are summed in `other`.
    limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SummaryRowOut {
    /// The dimension's value; null for installs without one.
    value: Option<String>,
    installs: i64,
}

#[derive(Serialize, ToSchema)]
pub struct SummaryOut {
    by: &'static str,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    /// Installs over every value, listed or not.
    total: i64,
    /// Installs of the values beyond `limit`.
    other: i64,
    rows: Vec<SummaryRowOut>,
}

/// Attributed installs (first-touch attributions) counted by one dimension.
#[utoipa::path(get, path = "/v1/apps/{app_id}/summary", tag = "admin",
    params(("app_id" = String, Path, description = "app id"), SummaryQuery),
    responses((status = 200, body = SummaryOut), (status = 400), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
async fn summary(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    Query(q): Query<SummaryQuery>,
) -> Result<Json<SummaryOut>, AppError> {
    let app = find_app(&state, &app_id).await?;
    let by = non_empty(q.by)
        .as_deref()
        .and_then(Dimension::parse)
        .ok_or_else(|| {
            AppError::BadRequest("by must be one of source, campaign, adgroup, ad".into())
        })?;
    let since = parse_bound("since", q.since)?;
    let until = parse_bound("until", q.until)?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(AppError::BadRequest("since must be before until".into()));
        }
    }
    let limit = parse_limit(q.limit)?;
    let page = state.store.summary(app.id, by, since, until, limit).await?;
    Ok(Json(SummaryOut {
        by: by.column(),
        since,
        until,
        total: page.total,
        other: page.other(),
        rows: page
            .rows
            .into_iter()
            .map(|r| SummaryRowOut {
                value: r.value,
                installs: r.installs,
            })
            .collect(),
    }))
}

/// `limit` of the users and summary routes: 1–1000, default 100.
fn parse_limit(limit: Option<String>) -> Result<u32, AppError> {
    match limit.as_deref() {
        None | Some("") => Ok(DEFAULT_PAGE),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                AppError::BadRequest(format!("limit must be a whole number from 1 to {MAX_PAGE}"))
            }),
    }
}

/// The app named in the path, or 404 (also for ids that are not UUIDs).
pub async fn find_app(state: &AppState, app_id: &str) -> Result<AppRecord, AppError> {
    let not_found = || AppError::NotFound(format!("no app with id {app_id:?}"));
    let id: AppId = app_id.parse().map_err(|_| not_found())?;
    state.store.get_app(id).await?.ok_or_else(not_found)
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

fn parse_bound(name: &str, value: Option<String>) -> Result<Option<DateTime<Utc>>, AppError> {
    let Some(v) = non_empty(value) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&v) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    NaiveDate::parse_from_str(&v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Some(t.and_utc()))
        .ok_or_else(|| {
            AppError::BadRequest(format!("{name} must be an RFC 3339 time or YYYY-MM-DD"))
        })
}

/// Opaque to clients: base64url of `<unix micros>.<row id>`.
fn encode_cursor(c: &UserCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}.{}",
        c.attributed_at.timestamp_micros(),
        c.id.simple()
    ))
}

fn decode_cursor(s: &str) -> Option<UserCursor> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let (micros, id) = raw.split_once('.')?;
    Some(UserCursor {
        attributed_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id: Uuid::parse_str(id).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let c = UserCursor {
            attributed_at: DateTime::from_timestamp_micros(1_714_665_600_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("1.2")), None);
    }

    #[test]
    fn bounds_accept_dates_and_rfc3339() {
        assert!(parse_bound("since", Some("2024-05-01".into()))
            .unwrap()
            .is_some());
        assert!(parse_bound("since", Some("2024-05-01T10:00:00Z".into()))
            .unwrap()
            .is_some());
        assert!(parse_bound("since", Some("yesterday".into())).is_err());
        assert_eq!(parse_bound("since", None).unwrap(), None);
    }
}

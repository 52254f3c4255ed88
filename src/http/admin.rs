//! The read API under `/v1/apps…` (admin bearer token): apps, partner status and
//! endpoints, users by segment, lookup by identifier, summaries.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::auth::Admin;
use super::error::AppError;
use super::extract::{NoParams, Params, Path, QueryParams};
use super::AppState;
use crate::apps;
use crate::domain::PartnerId;
use crate::domain::{AppId, ConnectionStatus};
use crate::stale::Health;
use crate::store::{
    AppRecord, AttributionRecord, Dimension, IdentifierKind, PartnerConnection, SummaryPage,
    UserCursor, UserFilter,
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
        .layer(axum::middleware::map_response(super::private_response))
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
    responses((status = 200, body = AppsOut)),
    security(("admin_token" = [])))]
async fn list_apps(
    _: Admin,
    State(state): State<AppState>,
    _: Params<NoParams>,
) -> Result<Json<AppsOut>, AppError> {
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

/// Whether a partner's postbacks arrive.
#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum PartnerStatus {
    /// Never sent an accepted attributed install.
    NotConnected,
    /// Connected, and not quiet for longer than it usually is.
    Connected,
    /// Connected, but nothing was accepted for longer than `stale_after_seconds`.
    Stale,
}

#[derive(Serialize, ToSchema)]
pub struct PartnerOut {
    #[schema(example = "tune")]
    pub partner: String,
    pub name: &'static str,
    /// `connected` after the first accepted attributed install, `stale` when nothing
    /// was accepted since for longer than `stale_after_seconds`, else `not_connected`.
    pub status: PartnerStatus,
    /// The newest attributed install.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The newest accepted postback (install or in-app event): what staleness reads.
    pub last_accepted_at: Option<DateTime<Utc>>,
    /// The partner's usual gap between accepted postbacks, learned from the last
    /// `stale.history_days`; null with too little history (then the floor alone applies).
    pub expected_gap_seconds: Option<i64>,
    /// How long it may stay quiet before it is stale: max(stale.factor × the usual
    /// gap, stale.floor_minutes).
    #[schema(minimum = 0)]
    pub stale_after_seconds: i64,
    /// When a stale partner's allowed quiet time ran out; null unless stale.
    pub stale_since: Option<DateTime<Utc>>,
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
    responses((status = 200, body = PartnersOut)),
    security(("admin_token" = [])))]
async fn partners(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    _: Params<NoParams>,
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
    let now = Utc::now();
    let connections = state.store.partner_connections(app.id).await?;
    let health = state.health.app(state.store.as_ref(), app.id, now).await?;
    let endpoints = apps::endpoints(&state.base_url, None);
    Ok(endpoints
        .into_iter()
        .map(|e| {
            let conn = connections.iter().find(|c| c.partner == e.partner);
            // A row written between the two reads is judged as never heard from.
            let judged = health.get(&e.partner).copied().unwrap_or_else(|| {
                crate::stale::judge(
                    state.health.rule(),
                    ConnectionStatus::NotConnected,
                    None,
                    None,
                    now,
                )
            });
            PartnerOut {
                partner: e.partner.to_string(),
                name: e.partner.display_name(),
                status: match judged.health {
                    Health::NotConnected => PartnerStatus::NotConnected,
                    Health::Connected => PartnerStatus::Connected,
                    Health::Stale => PartnerStatus::Stale,
                },
                last_success_at: conn.and_then(|c| c.last_success_at),
                last_accepted_at: judged.last_accepted_at,
                expected_gap_seconds: judged.expected_gap.map(|g| g.num_seconds()),
                stale_after_seconds: judged.stale_after.num_seconds(),
                stale_since: judged.stale_since,
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

#[derive(Deserialize)]
pub struct UsersQuery {
    source: Option<String>,
    campaign: Option<String>,
    adgroup: Option<String>,
    ad: Option<String>,
    partner: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl QueryParams for UsersQuery {
    const NAMES: &'static [&'static str] = &[
        "source", "campaign", "adgroup", "ad", "partner", "limit", "cursor",
    ];

    fn documented() -> Value {
        let segment = |name: &str| {
            query_param(
                name,
                &format!("Exact {name} (case-sensitive); empty: any."),
                json!({"type": "string", "pattern": NO_NUL}),
            )
        };
        let mut partners = vec![""];
        partners.extend(PartnerId::ALL.map(PartnerId::as_str));
        json!([
            segment("source"),
            segment("campaign"),
            segment("adgroup"),
            segment("ad"),
            query_param(
                "partner",
                "The partner that attributed the user; empty: any.",
                json!({"type": "string", "enum": partners}),
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

/// The query parameters of each read-API route, for the OpenAPI document.
pub fn documented_queries() -> Vec<(&'static str, Value)> {
    let mut queries = vec![
        ("/v1/apps", NoParams::documented()),
        ("/v1/apps/{app_id}/partners", NoParams::documented()),
        ("/v1/apps/{app_id}/users", UsersQuery::documented()),
        ("/v1/apps/{app_id}/users/lookup", LookupQuery::documented()),
        ("/v1/apps/{app_id}/summary", SummaryQuery::documented()),
    ];
    queries.extend(super::deliveries::documented_queries());
    queries.extend(super::destinations::documented_queries());
    queries
}

/// Text without a NUL (PostgreSQL text cannot hold one).
pub(super) const NO_NUL: &str = "^[^\\x00]*$";

/// What [`decode_cursor`] accepts, and empty.
pub(super) const CURSOR_PATTERN: &str = "^(-?[0-9]{1,16}\\.[0-9a-f]{32})?$";

pub(super) fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
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
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    responses((status = 200, body = UsersOut)),
    security(("admin_token" = [])))]
async fn users(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    Params(q): Params<UsersQuery>,
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
        Some(c) => Some(decode_cursor(&c).ok_or_else(|| {
            AppError::BadRequest("cursor is not a next_cursor this server gave".into())
        })?),
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

#[derive(Deserialize)]
pub struct LookupQuery {
    user_id: Option<String>,
    idfa: Option<String>,
    idfv: Option<String>,
    google_aid: Option<String>,
    android_id: Option<String>,
    partner_device_id: Option<String>,
}

impl QueryParams for LookupQuery {
    const NAMES: &'static [&'static str] = &[
        "user_id",
        "idfa",
        "idfv",
        "google_aid",
        "android_id",
        "partner_device_id",
    ];

    /// One object parameter, each identifier a property: OpenAPI's way to say
    /// "exactly one of these query parameters".
    fn documented() -> Value {
        let one_of: Vec<Value> = Self::NAMES
            .iter()
            .map(|&name| {
                json!({
                    "type": "object",
                    "title": name,
                    "required": [name],
                    "additionalProperties": false,
                    "properties": {name: {"type": "string", "minLength": 1, "pattern": NO_NUL}},
                })
            })
            .collect();
        json!([{
            "name": "identifier",
            "in": "query",
            "required": true,
            "style": "form",
            "explode": true,
            "description": "Exactly one identifier, as its own query parameter: `?idfa=…`.",
            "schema": {"oneOf": one_of},
        }])
    }
}

/// One user's attribution, found by exactly one identifier.
#[utoipa::path(get, path = "/v1/apps/{app_id}/users/lookup", tag = "admin",
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    responses((status = 200, body = UserOut)),
    security(("admin_token" = [])))]
async fn lookup(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    Params(q): Params<LookupQuery>,
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

#[derive(Deserialize)]
pub struct SummaryQuery {
    by: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// How many values to list, 1–1000 (default 100); the rest are summed in `other`.
    limit: Option<String>,
}

impl QueryParams for SummaryQuery {
    const NAMES: &'static [&'static str] = &["by", "since", "until", "limit"];

    fn documented() -> Value {
        let bound = |name: &str, which: &str| {
            query_param(
                name,
                &format!(
                    "{which}: an RFC 3339 time or YYYY-MM-DD (UTC midnight); before year 1 or \
                     after 9999 (in UTC) it is clamped to those; empty: no bound."
                ),
                json!({"type": "string", "anyOf": [
                    {"format": "date"}, {"format": "date-time"}, {"maxLength": 0}
                ]}),
            )
        };
        json!([
            {
                "name": "by", "in": "query", "required": true,
                "description": "The dimension to count by.",
                "schema": {"type": "string", "enum": ["source", "campaign", "adgroup", "ad"]},
            },
            bound("since", "Inclusive start"),
            bound("until", "Exclusive end (since at or after until: nothing is counted)"),
            {
                "name": "limit", "in": "query", "required": false,
                "description": "How many values to list, most installs first (default 100); \
                    the installs of the others are summed in `other`.",
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
        ])
    }
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
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    responses((status = 200, body = SummaryOut)),
    security(("admin_token" = [])))]
async fn summary(
    _: Admin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    Params(q): Params<SummaryQuery>,
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
    // [since, until) holds no time when since is not before until: nothing to count.
    let empty_window = matches!((since, until), (Some(s), Some(u)) if s >= u);
    let limit = parse_limit(q.limit)?;
    let page = if empty_window {
        SummaryPage::default()
    } else {
        state.store.summary(app.id, by, since, until, limit).await?
    };
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
pub(super) fn parse_limit(limit: Option<String>) -> Result<u32, AppError> {
    match limit.as_deref() {
        None => Ok(DEFAULT_PAGE),
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

pub(super) fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// Earliest and latest times either backend compares correctly: PostgreSQL
/// `timestamptz` starts in 4713 BC, and SQLite stores times as text that sorts
/// chronologically only for four-digit years.
fn stored_range() -> (DateTime<Utc>, DateTime<Utc>) {
    let first = NaiveDate::from_ymd_opt(1, 1, 1).expect("valid date");
    let last = NaiveDate::from_ymd_opt(9999, 12, 31).expect("valid date");
    (
        first.and_hms_opt(0, 0, 0).expect("valid time").and_utc(),
        last.and_hms_micro_opt(23, 59, 59, 999_999)
            .expect("valid time")
            .and_utc(),
    )
}

/// A `since`/`until` bound in UTC, to the microsecond both backends keep. A bound
/// outside the stored range is clamped to it (every stored time lies inside), so
/// `until=+10000-01-01` means "no end" on both backends alike.
pub(super) fn parse_bound(
    name: &str,
    value: Option<String>,
) -> Result<Option<DateTime<Utc>>, AppError> {
    let Some(v) = non_empty(value) else {
        return Ok(None);
    };
    let parsed = match DateTime::parse_from_rfc3339(&v) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => NaiveDate::parse_from_str(&v, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc()),
    };
    let t = parsed.ok_or_else(|| {
        AppError::BadRequest(format!("{name} must be an RFC 3339 time or YYYY-MM-DD"))
    })?;
    let (first, last) = stored_range();
    Ok(Some(t.trunc_subsecs(6).clamp(first, last)))
}

/// Opaque to clients: `<unix micros>.<row id as 32 hex digits>`, checked this
/// strictly so that what decodes is a time both backends store.
pub(super) fn encode_cursor(c: &UserCursor) -> String {
    format!("{}.{}", c.attributed_at.timestamp_micros(), c.id.simple())
}

/// Longest micros field of a cursor: up to ±10^16 µs, years 1653 to 2286.
const CURSOR_MICROS_DIGITS: usize = 16;

pub(super) fn decode_cursor(s: &str) -> Option<UserCursor> {
    let (micros, id) = s.split_once('.')?;
    let digits = micros.strip_prefix('-').unwrap_or(micros);
    let well_formed = (1..=CURSOR_MICROS_DIGITS).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !well_formed {
        return None;
    }
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
        let before_1970 = UserCursor {
            attributed_at: DateTime::from_timestamp_micros(-1_000).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&before_1970)),
            Some(before_1970)
        );
        let hex = Uuid::now_v7().simple().to_string();
        for garbage in [
            "not a cursor".to_owned(),
            "1.2".to_owned(),
            format!("1.{}", hex.to_uppercase()),
            format!("+1.{hex}"),
            format!("1.{hex}0"),
            format!(".{hex}"),
            // Before 4713 BC: PostgreSQL cannot hold it (error 22008 once gave a 500).
            format!("-210000000000000000.{hex}"),
            format!("{}.{hex}", "9".repeat(17)),
        ] {
            assert_eq!(decode_cursor(&garbage), None, "{garbage}");
        }
    }

    #[test]
    fn bounds_accept_dates_and_rfc3339_and_clamp_to_the_stored_range() {
        let bound = |v: &str| parse_bound("since", Some(v.into())).unwrap().unwrap();
        assert_eq!(
            bound("2024-05-01").to_rfc3339(),
            "2024-05-01T00:00:00+00:00"
        );
        assert_eq!(
            bound("2024-05-01T10:00:00+02:00").to_rfc3339(),
            "2024-05-01T08:00:00+00:00"
        );
        let (first, last) = stored_range();
        assert_eq!(bound("+10000-01-01"), last);
        assert_eq!(bound("9999-12-31T23:59:59-23:59"), last);
        assert_eq!(bound("0001-01-01T00:00:00+01:00"), first);
        assert_eq!(bound("-5000-01-01"), first);
        assert_eq!(
            bound("2024-05-01T10:00:00.1234567Z").timestamp_subsec_nanos(),
            123_456_000
        );
        assert!(parse_bound("since", Some("yesterday".into())).is_err());
        assert_eq!(parse_bound("since", None).unwrap(), None);
        assert_eq!(parse_bound("since", Some(String::new())).unwrap(), None);
    }
}

//! The "Technology Partners → Attribution" page: a summary line, a chart of attributed
//! installs by source over the last 30 days, and a section per partner with its masked
//! key, endpoint, status dot (green connected, amber stale, grey not connected), what
//! it has been sending, counters, and a form that sends a test postback through the
//! dry run. Server-rendered, no scripts, no external assets; the form carries a token
//! derived from the admin token, so another site cannot make a browser submit it.

use axum::extract::rejection::PathRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use sha2::Sha256;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::admin::{find_app, partner_overview, PartnerOut, PartnerStatus};
use super::auth::PageLogin;
use super::chart::{chart, CHART_DAYS, CHART_SOURCES};
use super::error::AppError;
use super::postbacks::{read_body, BodyError};
use super::AppState;
use crate::domain::{AppId, PartnerId};
use crate::dry_run::{DryRunAnswer, DryRunRequest};
use crate::keys::Caller;
use crate::partners::{InputFormat, Method};
use crate::store::deliveries::{DeliveryFilter, DeliveryRecord, Verdict};
use crate::store::{AppRecord, DailySourceCount};

/// Scripts are never needed; styles are inline. Nothing may be framed or loaded, and
/// forms may only be sent to this server.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(apps_index))
        .routes(routes!(home))
        .routes(routes!(attribution_page))
        .routes(routes!(test_postback))
        .layer(axum::middleware::map_response(page_response))
}

/// Every answer of the page routes (logins and errors too) is private and unframeable.
async fn page_response(response: Response) -> Response {
    let mut response = super::private_response(response).await;
    response
        .headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// HTML list of the apps, each linking to its attribution page (HTTP Basic, ADMIN_TOKEN as password).
#[utoipa::path(get, path = "/apps", tag = "page",
    responses((status = 200, body = String, content_type = "text/html", description = "the list of apps")),
    security(("admin_basic" = [])))]
async fn apps_index(login: PageLogin, State(state): State<AppState>) -> Result<Response, AppError> {
    index(login, state).await
}

/// The list of apps, as at `/apps`.
#[utoipa::path(get, path = "/", tag = "page",
    responses((status = 200, body = String, content_type = "text/html", description = "the list of apps")),
    security(("admin_basic" = [])))]
async fn home(login: PageLogin, State(state): State<AppState>) -> Result<Response, AppError> {
    index(login, state).await
}

async fn index(_: PageLogin, state: AppState) -> Result<Response, AppError> {
    let apps = state.store.list_apps().await?;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Apps"))
            body {
                nav { "Technology Partners" span.sep { " → " } strong { "Apps" } }
                h1 { "Apps" }
                @if apps.is_empty() {
                    p.muted { "No apps yet: create one with " code { "postback-gateway apps create --name NAME" } "." }
                }
                ul.apps {
                    @for app in &apps {
                        li {
                            // Relative, so it resolves from `/` and from `/apps` alike.
                            a href=(format!("apps/{}/attribution", app.id)) { (app.name) }
                            " " span.muted { (app.tier) " · " code { (app.id) } }
                        }
                    }
                }
            }
        }
    };
    Ok(html_response(StatusCode::OK, page))
}

/// An HTML 404 for a page that names no app.
fn no_such_app(app_id: &str) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head("No such app"))
            body {
                nav { a href="../../apps" { "Apps" } }
                h1 { "No such app" }
                p { "There is no app with id " code { (app_id) } "." }
            }
        }
    };
    html_response(StatusCode::NOT_FOUND, page)
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · postback-gateway" }
            style { (PreEscaped(STYLE)) }
        }
    }
}

fn html_response(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        page.into_string(),
    )
        .into_response()
}

/// HTML status page of one app's attribution partners (HTTP Basic, ADMIN_TOKEN as password).
#[utoipa::path(get, path = "/apps/{app_id}/attribution", tag = "page",
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    responses((status = 200, body = String, content_type = "text/html", description = "the page")),
    security(("admin_basic" = [])))]
async fn attribution_page(
    _: PageLogin,
    State(state): State<AppState>,
    app_id: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let app = match page_app(&state, app_id).await? {
        Ok(app) => app,
        Err(not_found) => return Ok(not_found),
    };
    let page = load(&state, &app).await?;
    Ok(html_response(StatusCode::OK, render(&state, &page, None)))
}

/// The app a page path names, or the HTML 404 to answer.
async fn page_app(
    state: &AppState,
    app_id: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Result<AppRecord, Response>, AppError> {
    // An id that does not even decode is no app either: the HTML 404 too.
    let Ok(axum::extract::Path(app_id)) = app_id else {
        return Ok(Err(no_such_app("(not UTF-8)")));
    };
    match find_app(state, &app_id).await {
        Ok(app) => Ok(Ok(app)),
        Err(AppError::NotFound(_)) => Ok(Err(no_such_app(&app_id))),
        Err(e) => Err(e),
    }
}

/// Everything the page shows, read once.
struct PageData {
    app: AppRecord,
    partners: Vec<PartnerOut>,
    daily: Vec<DailySourceCount>,
    /// The newest deliveries of each partner (by its id), newest first.
    recent: std::collections::HashMap<String, Vec<DeliveryRecord>>,
    /// The newest refused (400) or rate-limited (429) delivery of each partner.
    last_refused: std::collections::HashMap<String, DeliveryRecord>,
    now: DateTime<Utc>,
    destinations: Vec<crate::store::forwarding::DestinationRecord>,
}

/// Rows of the "Recent deliveries" table under each partner.
const RECENT_DELIVERIES: u32 = 20;

async fn load(state: &AppState, app: &AppRecord) -> Result<PageData, AppError> {
    let partners = partner_overview(state, app).await?;
    let now = Utc::now();
    let since = now.date_naive() - Duration::days(CHART_DAYS - 1);
    let daily = state
        .store
        .daily_installs_by_source(app.id, since, CHART_SOURCES as u32)
        .await?;
    let mut recent = std::collections::HashMap::new();
    let mut last_refused = std::collections::HashMap::new();
    for partner in PartnerId::ALL {
        let filter = DeliveryFilter {
            partner: Some(partner),
            ..DeliveryFilter::default()
        };
        let rows = state
            .store
            .list_deliveries(app.id, &filter, None, RECENT_DELIVERIES)
            .await?;
        recent.insert(partner.as_str().to_owned(), rows);
        let mut refused = Vec::new();
        for verdict in [Verdict::Invalid, Verdict::RateLimited] {
            let filter = DeliveryFilter {
                partner: Some(partner),
                verdict: Some(verdict),
                ..DeliveryFilter::default()
            };
            refused.extend(
                state
                    .store
                    .list_deliveries(app.id, &filter, None, 1)
                    .await?,
            );
        }
        if let Some(newest) = refused.into_iter().max_by_key(|d| (d.received_at, d.id)) {
            last_refused.insert(partner.as_str().to_owned(), newest);
        }
    }
    let destinations = state.store.list_destinations(app.id).await?;
    Ok(PageData {
        destinations,
        app: app.clone(),
        partners,
        daily,
        recent,
        last_refused,
        now,
    })
}

/// The answer of the test form, shown under its partner.
struct Tried {
    partner: PartnerId,
    payload: String,
    answer: DryRunAnswer,
}

/// The fields of the test form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the form the page sends
struct TestForm {
    /// The partner whose postback this is.
    #[schema(inline)]
    partner: FormPartner,
    /// The page's form token (it proves the form came from the page).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    csrf: String,
    /// A query string or the whole URL with the values filled in (GET partners), or
    /// the JSON body (POST partners).
    payload: String,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
enum FormPartner {
    Kochava,
    Tune,
    Appsflyer,
    Adjust,
    Singular,
    Branch,
}

/// "Send a test postback": runs the dry run for one partner of the app and shows the
/// page with its answer. Needs the page login and the page's form token.
#[utoipa::path(post, path = "/apps/{app_id}/attribution/test", tag = "page",
    params(("app_id" = String, Path, format = Uuid, description = "app id")),
    request_body(content = TestForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = String, content_type = "text/html", description = "the page, with the dry run's answer under the partner"),
        (status = 400, description = "bad_request: the partner is missing or unknown"),
        (status = 413, description = "payload_too_large"),
    ),
    security(("admin_basic" = [])))]
async fn test_postback(
    _: PageLogin,
    State(state): State<AppState>,
    app_id: Result<axum::extract::Path<String>, PathRejection>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, AppError> {
    // A browser says when another site sent the form; the token is the real check.
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Err(AppError::Forbidden(CROSS_SITE));
    }
    let app = match page_app(&state, app_id).await? {
        Ok(app) => app,
        Err(not_found) => return Ok(not_found),
    };
    let limit = state.max_body_bytes;
    let body = match read_body(request.into_body(), limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Err(AppError::PayloadTooLarge { limit }),
        Err(BodyError::TimedOut) => return Err(AppError::RequestTimeout),
        Err(BodyError::Unreadable) => {
            return Err(AppError::BadRequest("could not read the form".into()))
        }
    };
    let field = |name: &str| {
        form_urlencoded::parse(&body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let token_ok =
        field("csrf").is_some_and(|t| form_token_ok(state.admin_token.expose(), app.id, &t));
    if !token_ok {
        return Err(AppError::Forbidden(CROSS_SITE));
    }
    let partner: PartnerId = field("partner")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| {
            AppError::BadRequest(
                "partner must be one of kochava, tune, appsflyer, adjust, singular, branch".into(),
            )
        })?;
    let payload = field("payload").unwrap_or_default();
    let (method, query, body) = test_request(partner, &payload);
    let page = load(&state, &app).await?;
    let answer = state
        .dry_run
        .run_for_app(
            Caller {
                app_id: app.id,
                tier: app.tier,
            },
            DryRunRequest {
                partner,
                method,
                header_key: None,
                query: &query,
                body: &body,
                received_at: page.now,
            },
        )
        .await
        .map_err(|_| AppError::Unavailable)?;
    let tried = Tried {
        partner,
        payload,
        answer,
    };
    Ok(html_response(
        StatusCode::OK,
        render(&state, &page, Some(&tried)),
    ))
}

const CROSS_SITE: &str = "the form's token is missing or wrong (or another site sent it): \
                          reload the page and send the form from there";

type HmacSha256 = Hmac<Sha256>;

/// The form token of an app's page: HMAC-SHA256 of the app id under the admin token,
/// so it needs no storage, differs per app and changes when the token does.
fn form_token(admin_token: &str, app: AppId) -> String {
    hex::encode(form_mac(admin_token, app).finalize().into_bytes())
}

fn form_token_ok(admin_token: &str, app: AppId, given: &str) -> bool {
    let Ok(given) = hex::decode(given.trim()) else {
        return false;
    };
    // Constant time.
    form_mac(admin_token, app).verify_slice(&given).is_ok()
}

fn form_mac(admin_token: &str, app: AppId) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(admin_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"postback-gateway page form v1:");
    mac.update(app.to_string().as_bytes());
    mac
}

/// How the form's payload travels: a JSON object as a POST body when the partner
/// takes one; else a query string (the part after `?` of a pasted URL) as a GET, or
/// the text as a POST body for partners that only POST JSON (it is then read, and
/// refused, as JSON).
fn test_request(partner: PartnerId, payload: &str) -> (Method, String, Vec<u8>) {
    let text = payload.trim();
    let takes_json = partner.input(Method::Post) == Some(InputFormat::JsonBody);
    if (text.starts_with('{') && takes_json) || partner.input(Method::Get).is_none() {
        return (Method::Post, String::new(), text.as_bytes().to_vec());
    }
    let query = match text.split_once('?') {
        Some((_, q)) => q,
        None => text,
    };
    (Method::Get, query.to_owned(), Vec::new())
}

/// A realistic payload per partner to start the test form with.
fn example_payload(partner: PartnerId) -> &'static str {
    match partner {
        PartnerId::Kochava => include_str!("../../tests/fixtures/kochava/docs_example.json"),
        PartnerId::Tune => include_str!("../../tests/fixtures/tune/install_ios.query"),
        PartnerId::Appsflyer => include_str!("../../tests/fixtures/appsflyer/install_android.json"),
        PartnerId::Adjust => include_str!("../../tests/fixtures/adjust/install_android.query"),
        PartnerId::Singular => include_str!("../../tests/fixtures/singular/install_android.query"),
        PartnerId::Branch => include_str!("../../tests/fixtures/branch/install_ios.json"),
    }
}

fn render(state: &AppState, page: &PageData, tried: Option<&Tried>) -> Markup {
    let app = &page.app;
    let key_prefix = app.key_prefixes.first().cloned().unwrap_or_default();
    let token = form_token(state.admin_token.expose(), app.id);
    let today = page.now.date_naive();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&format!("Attribution · {}", app.name)))
            body {
                nav { a href="../../apps" { "Technology Partners" } span.sep { " → " } strong { "Attribution" } }
                h1 { "Attribution partners" }
                p.muted { "App " strong { (app.name) } " · API key " code { (key_prefix) "…" } }
                p.summary data-summary { (summary(&page.partners)) }
                section.chart aria-label="Attributed installs by source, last 30 days" {
                    h2 { "Attributed installs by source, last 30 days" }
                    (chart(&page.daily, today))
                }
                @for p in &page.partners {
                    (partner_section(p, &key_prefix, &token, page.now, tried.filter(|t| t.partner.as_str() == p.partner), page.recent.get(&p.partner).map_or(&[][..], Vec::as_slice), page.last_refused.get(&p.partner)))
                }
                (super::destinations_section::destinations_section(&page.destinations, page.now, time_ago))
            }
        }
    }
}

/// "2 of 6 partners connected, 1 stale".
fn summary(partners: &[PartnerOut]) -> String {
    let connected = partners
        .iter()
        .filter(|p| p.status == PartnerStatus::Connected)
        .count();
    let stale = partners
        .iter()
        .filter(|p| p.status == PartnerStatus::Stale)
        .count();
    let mut text = format!("{connected} of {} partners connected", partners.len());
    if stale > 0 {
        text.push_str(&format!(", {stale} stale"));
    }
    text
}

fn partner_section(
    p: &PartnerOut,
    key_prefix: &str,
    token: &str,
    now: DateTime<Utc>,
    tried: Option<&Tried>,
    recent: &[DeliveryRecord],
    last_refused: Option<&DeliveryRecord>,
) -> Markup {
    let partner: PartnerId = p.partner.parse().unwrap_or(PartnerId::Kochava);
    html! {
        section.partner data-partner=(p.partner) {
            h2 {
                @match p.status {
                    PartnerStatus::Connected => span.dot.green role="img" aria-label="connected" data-status="connected" {},
                    PartnerStatus::Stale => span.dot.amber role="img" aria-label="stale" data-status="stale" {},
                    PartnerStatus::NotConnected => span.dot.grey role="img" aria-label="not connected" data-status="not_connected" {},
                }
                (p.name)
            }
            (status_line(p, now))
            dl {
                dt { "API key" } dd { code { (key_prefix) "…" } }
                dt { "Method" } dd { (p.method) }
                @match &p.postback_url_template {
                    Some(url) => { dt { "Postback URL" } dd { textarea readonly rows="3" aria-label="postback URL" { (url) } } },
                    None => { dt { "Endpoint" } dd { input readonly value=(format!("{}?api_key=YOUR_API_KEY", p.endpoint_url)) aria-label="endpoint"; } },
                }
            }
            (counters(p))
            @if let Some(r) = last_refused {
                p.warn data-last-refused {
                    "Last refused " (time_ago(Some(r.received_at), now)) " (" (r.answer.status) "): " (r.answer.reason)
                }
            }
            (recent_deliveries(recent, now))
            details.test open[tried.is_some()] {
                summary { "Send a test postback" }
                p.muted {
                    "Runs the dry run: nothing is stored or counted. "
                    @if partner.input(Method::Get).is_some() {
                        "Paste a query string or the whole postback URL with its values filled in"
                        @if partner.input(Method::Post) == Some(InputFormat::JsonBody) { ", or a JSON body" }
                        "."
                    } @else {
                        "Paste the JSON body."
                    }
                }
                form method="post" action="attribution/test" {
                    input type="hidden" name="csrf" value=(token);
                    input type="hidden" name="partner" value=(p.partner);
                    textarea name="payload" rows="6" aria-label=(format!("test {} postback", p.name)) {
                        (tried.map_or(example_payload(partner).trim_end(), |t| t.payload.as_str()))
                    }
                    button type="submit" { "Send a test postback" }
                }
                @if let Some(t) = tried {
                    (answer(&t.answer))
                }
            }
        }
    }
}

/// The partner's last deliveries: when, verdict, reason and segments, each with its
/// details (request id, identifiers, payload) one click away.
fn recent_deliveries(rows: &[DeliveryRecord], now: DateTime<Utc>) -> Markup {
    let segments = |d: &DeliveryRecord| -> String {
        let Some(s) = &d.segments else {
            return String::new();
        };
        ["source", "campaign", "adgroup", "ad"]
            .iter()
            .filter_map(|k| s.get(*k).and_then(|v| v.as_str()))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    html! {
        details.deliveries data-deliveries {
            summary { "Recent deliveries (" (rows.len()) ")" }
            @if rows.is_empty() {
                p.muted { "No postbacks from this partner yet." }
            } @else {
                table {
                    thead { tr { th { "When" } th { "Answer" } th { "Why" } th { "Segments" } } }
                    tbody {
                        @for d in rows {
                            tr data-verdict=(d.answer.verdict.as_str()) {
                                td { (time_ago(Some(d.received_at), now)) }
                                td { (d.answer.status) " " (d.answer.verdict.as_str()) }
                                td {
                                    (d.answer.reason)
                                    details {
                                        summary { "details" }
                                        dl {
                                            dt { "Request id" } dd { code { (d.request_id) } }
                                            @if let Some(id) = d.answer.event_id { dt { "Event id" } dd { code { (id) } } }
                                            @if let Some(ids) = &d.identifiers { dt { "Identifiers" } dd { code { (ids) } } }
                                            dt { "Payload" } dd { code { (d.payload) } }
                                        }
                                    }
                                }
                                td { (segments(d)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the partner has been doing, in one or two lines.
fn status_line(p: &PartnerOut, now: DateTime<Utc>) -> Markup {
    let c = &p.counters;
    html! {
        p.status {
            @match p.status {
                PartnerStatus::Connected => {
                    "last attributed install " (time_ago(p.last_success_at, now))
                },
                PartnerStatus::Stale => {
                    strong.stale {
                        "stale: nothing accepted for "
                        (span(p.last_accepted_at.map_or(Duration::zero(), |t| now - t)))
                    }
                    ", longer than the " (span(Duration::seconds(p.stale_after_seconds))) " it may be quiet"
                    @match p.expected_gap_seconds {
                        Some(gap) => { " (its usual gap: " (span(Duration::seconds(gap))) ")" },
                        None => { " (too little history to learn its usual gap: the floor applies)" },
                    }
                    br;
                    "last attributed install " (time_ago(p.last_success_at, now))
                },
                PartnerStatus::NotConnected => {
                    @if c.events > 0 {
                        "receiving in-app events (" (count(c.events, "event", "events")) "), but no attributed install yet"
                    } @else if c.organic_ignored > 0 && c.rejected == 0 {
                        "receiving only organic postbacks (" (c.organic_ignored) " so far): nothing to attribute yet"
                    } @else if c.rejected > 0 && c.organic_ignored == 0 {
                        "receiving only rejected postbacks (" (c.rejected) " so far): send a test postback below to see why"
                    } @else if c.rejected > 0 {
                        "receiving only organic and rejected postbacks ("
                        (c.organic_ignored) " organic, " (c.rejected) " rejected): no attributed install yet"
                    } @else if c.rate_limited > 0 {
                        "every attributed install so far was over the app's hourly quota ("
                        (count(c.rate_limited, "postback", "postbacks")) " rate limited)"
                    } @else {
                        "waiting for the first attributed install"
                    }
                },
            }
        }
    }
}

/// "3 h ago", with the exact time on hover.
fn time_ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    match t {
        None => html! { "never" },
        Some(t) => {
            let ago = now - t;
            let text = if ago < Duration::minutes(1) {
                "just now".to_owned()
            } else {
                format!("{} ago", span(ago))
            };
            html! {
                time datetime=(t.to_rfc3339()) title=(t.format("%Y-%m-%d %H:%M:%S UTC")) { (text) }
            }
        }
    }
}

/// A length of time, rounded down to its largest unit: "45 s", "20 min", "3 h", "2 d".
fn span(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// "1 event", "2 events".
pub(super) fn count(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn counters(p: &PartnerOut) -> Markup {
    let c = &p.counters;
    let items = [
        (count(c.installs, "install", "installs"), false),
        (count(c.events, "event", "events"), false),
        (format!("{} organic ignored", c.organic_ignored), false),
        (count(c.duplicates, "duplicate", "duplicates"), false),
        (format!("{} rejected", c.rejected), c.rejected > 0),
        (
            format!("{} rate limited", c.rate_limited),
            c.rate_limited > 0,
        ),
    ];
    html! {
        ul.counters {
            @for (text, warn) in items {
                @let (n, label) = text.split_once(' ').unwrap_or((&text, ""));
                @if warn {
                    li.warn data-warn { strong { (n) } " " (label) }
                } @else {
                    li { strong { (n) } " " (label) }
                }
            }
        }
        @if c.rejected > 0 {
            p.warn {
                (count(c.rejected, "postback was", "postbacks were")) " refused (400): a payload without any \
                 identifier, over-long values or a body that is not JSON. Send one below as a test postback to see \
                 the rule that refuses it."
            }
        }
        @if c.rate_limited > 0 {
            p.warn {
                (count(c.rate_limited, "postback was", "postbacks were")) " answered 429: the app's hourly quota \
                 was used up. Partners that retry only on 5xx never resend them; the enterprise tier has no quota."
            }
        }
    }
}

/// The dry run's answer, as the form shows it.
fn answer(a: &DryRunAnswer) -> Markup {
    let verdict = a.verdict.as_str();
    html! {
        div.result data-verdict=(verdict) {
            p {
                strong class=(format!("verdict {verdict}")) { (verdict) }
                " · the real endpoint would answer " strong { (a.status) }
                @if let Some(first) = a.duplicate_of { " · first stored as " code { (first) } }
            }
            p { (a.reason) }
            @if let Some(w) = &a.would_store {
                dl {
                    dt { "kind" } dd { (w.kind) }
                    @for (name, value) in [("event name", &w.event_name), ("source", &w.source), ("campaign", &w.campaign), ("adgroup", &w.adgroup), ("ad", &w.ad)] {
                        dt { (name) } dd { @match value { Some(v) => { (v) }, None => { span.muted { "(none)" } } } }
                    }
                    @for (name, value) in w.identifiers.pairs().filter_map(|(n, v)| v.map(|v| (n, v))) {
                        dt { (name) } dd { code { (value) } }
                    }
                    dt { "event time" } dd { @match w.event_time { Some(t) => { (t.to_rfc3339()) }, None => { span.muted { "(none)" } } } }
                }
            }
            @if !a.warnings.is_empty() {
                ul.warnings {
                    @for w in &a.warnings {
                        li { (w.message) }
                    }
                }
            }
        }
    }
}

const STYLE: &str = r#"
*{box-sizing:border-box}body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:960px;padding:16px;color:#111827;background:#f9fafb}
nav{color:#6b7280;font-size:14px}nav strong{color:#111827}h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:0 0 8px;display:flex;align-items:center;gap:8px}
table{width:100%;border-collapse:collapse;font-size:13px}th,td{text-align:left;padding:4px 6px;border-top:1px solid #e5e7eb;vertical-align:top}td code{word-break:break-all}.muted{color:#6b7280}.apps{list-style:none;padding:0}.apps li{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;margin:8px 0}section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px;margin:12px 0}
.dot{display:inline-block;width:12px;height:12px;border-radius:50%}.dot.green{background:#16a34a}.dot.amber{background:#f59e0b}.dot.grey{background:#9ca3af}
.summary{font-size:15px;margin:4px 0 12px}.stale{color:#b45309}.warn{color:#92400e}li.warn{background:#fef3c7;border-radius:4px;padding:0 6px}p.warn{font-size:13px;margin:6px 0 0}
details.test{margin-top:10px;font-size:14px}details.test summary{cursor:pointer;color:#2563eb}form{display:grid;gap:6px;margin:6px 0}
button{justify-self:start;font:inherit;padding:4px 12px;border:1px solid #2563eb;border-radius:4px;background:#2563eb;color:#fff;cursor:pointer}
.result{border-left:3px solid #9ca3af;padding:4px 10px;margin-top:8px}.result[data-verdict=accepted]{border-color:#16a34a}.result[data-verdict=invalid]{border-color:#dc2626}.result[data-verdict=organic],.result[data-verdict=duplicate]{border-color:#f59e0b}
.warnings{margin:6px 0;padding-left:18px;color:#92400e}
.status{margin:0 0 8px;font-size:14px}dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 12px;margin:8px 0;font-size:14px}dt{color:#6b7280}dd{margin:0;min-width:0}
textarea,input{width:100%;font-family:ui-monospace,Menlo,monospace;font-size:12px;border:1px solid #d1d5db;border-radius:4px;padding:6px;background:#f9fafb;resize:vertical}
.counters{display:flex;flex-wrap:wrap;gap:12px;list-style:none;padding:0;margin:8px 0 0;font-size:14px}
svg.chart{width:100%;height:auto}.legend{display:flex;flex-wrap:wrap;gap:12px;list-style:none;padding:0;font-size:13px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
@media (max-width:560px){dl{grid-template-columns:1fr}}
"#;

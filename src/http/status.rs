//! The "Technology Partners → Attribution" page: a section per partner with its
//! masked key, endpoint, status dot and counters, and a chart of attributed installs
//! by source over the last 30 days. Server-rendered, no scripts, no external assets.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, NaiveDate, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::admin::{find_app, partner_overview, PartnerOut};
use super::auth::PageLogin;
use super::error::AppError;
use super::AppState;
use crate::store::{ChartSource, DailySourceCount};

const CHART_DAYS: i64 = 30;
/// Sources drawn with their own colour; the rest are grouped as "other".
const CHART_SOURCES: usize = 8;
const PALETTE: [&str; CHART_SOURCES + 1] = [
    "#2563eb", "#16a34a", "#d97706", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626",
    "#6b7280",
];

/// Scripts are never needed; styles are inline. Nothing may be framed or loaded.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(apps_index))
        .routes(routes!(home))
        .routes(routes!(attribution_page))
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
    // An id that does not even decode is no app either: the HTML 404 too.
    let Ok(axum::extract::Path(app_id)) = app_id else {
        return Ok(no_such_app("(not UTF-8)"));
    };
    let app = match find_app(&state, &app_id).await {
        Ok(app) => app,
        Err(AppError::NotFound(_)) => return Ok(no_such_app(&app_id)),
        Err(e) => return Err(e),
    };
    let partners = partner_overview(&state, &app).await?;
    let today = Utc::now().date_naive();
    let since = today - Duration::days(CHART_DAYS - 1);
    let daily = state
        .store
        .daily_installs_by_source(app.id, since, CHART_SOURCES as u32)
        .await?;
    let key_prefix = app.key_prefixes.first().cloned().unwrap_or_default();
    let page = render(&app.name, &key_prefix, &partners, &daily, today);
    Ok(html_response(StatusCode::OK, page))
}

fn render(
    app_name: &str,
    key_prefix: &str,
    partners: &[PartnerOut],
    daily: &[DailySourceCount],
    today: NaiveDate,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&format!("Attribution · {app_name}")))
            body {
                nav { a href="../../apps" { "Technology Partners" } span.sep { " → " } strong { "Attribution" } }
                h1 { "Attribution partners" }
                p.muted { "App " strong { (app_name) } " · API key " code { (key_prefix) "…" } }
                section.chart aria-label="Attributed installs by source, last 30 days" {
                    h2 { "Attributed installs by source, last 30 days" }
                    (chart(daily, today))
                }
                @for p in partners {
                    section.partner data-partner=(p.partner) {
                        h2 {
                            @if p.is_connected() {
                                span.dot.green role="img" aria-label="connected" data-status="connected" {}
                            } @else {
                                span.dot.grey role="img" aria-label="not connected" data-status="not_connected" {}
                            }
                            (p.name)
                        }
                        p.status {
                            @match (p.is_connected(), p.last_success_at) {
                                (true, Some(t)) => { "last attributed install: " time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } },
                                _ => { "waiting for the first attributed install" },
                            }
                        }
                        dl {
                            dt { "API key" } dd { code { (key_prefix) "…" } }
                            dt { "Method" } dd { (p.method) }
                            @match &p.postback_url_template {
                                Some(url) => { dt { "Postback URL" } dd { textarea readonly rows="3" aria-label="postback URL" { (url) } } },
                                None => { dt { "Endpoint" } dd { input readonly value=(format!("{}?api_key=YOUR_API_KEY", p.endpoint_url)) aria-label="endpoint"; } },
                            }
                        }
                        (counters(p))
                    }
                }
            }
        }
    }
}

fn counters(p: &PartnerOut) -> Markup {
    let c = &p.counters;
    let items = [
        ("installs", c.installs),
        ("events", c.events),
        ("organic ignored", c.organic_ignored),
        ("duplicates", c.duplicates),
        ("rejected", c.rejected),
        ("rate limited", c.rate_limited),
    ];
    html! {
        ul.counters {
            @for (label, n) in items {
                li { strong { (n) } " " (label) }
            }
        }
    }
}

/// One drawn segment of a stacked bar.
struct Bar {
    x: f64,
    y: f64,
    height: f64,
    colour: &'static str,
    label: String,
}

/// A stacked bar per day, one colour per top source.
fn chart(daily: &[DailySourceCount], today: NaiveDate) -> Markup {
    // The store already kept the top sources by name and summed the rest as Other.
    let mut totals: BTreeMap<&ChartSource, i64> = BTreeMap::new();
    for d in daily.iter().filter(|d| d.source != ChartSource::Other) {
        *totals.entry(&d.source).or_default() += d.installs;
    }
    let mut ranked: Vec<(&ChartSource, i64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = ranked
        .iter()
        .take(CHART_SOURCES)
        .map(|(s, _)| source_label(s))
        .collect();
    let series_of = |s: &ChartSource| {
        ranked
            .iter()
            .take(CHART_SOURCES)
            .position(|(t, _)| *t == s)
            .unwrap_or(CHART_SOURCES)
    };

    let first_day = today - Duration::days(CHART_DAYS - 1);
    let mut grid = vec![[0i64; CHART_SOURCES + 1]; CHART_DAYS as usize];
    for d in daily {
        let idx = (d.day - first_day).num_days();
        if (0..CHART_DAYS).contains(&idx) {
            grid[idx as usize][series_of(&d.source)] += d.installs;
        }
    }
    let max = grid
        .iter()
        .map(|day| day.iter().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height, bar) = (600.0, 160.0, 600.0 / CHART_DAYS as f64);
    let mut bars = Vec::new();
    for (i, day) in grid.iter().enumerate() {
        let mut y = height;
        for (series, &count) in day.iter().enumerate().filter(|(_, c)| **c > 0) {
            let h = count as f64 / max as f64 * (height - 4.0);
            y -= h;
            let name = top.get(series).map_or("other", String::as_str);
            bars.push(Bar {
                x: i as f64 * bar + 1.0,
                y,
                height: h,
                colour: PALETTE[series],
                label: format!("{}: {name} {count}", first_day + Duration::days(i as i64)),
            });
        }
    }
    let has_other = daily.iter().any(|d| d.source == ChartSource::Other);
    html! {
        svg.chart viewBox=(format!("0 0 {width} {}", height + 16.0)) role="img" data-chart="installs-by-source" {
            title { "Attributed installs per day by source" }
            line x1="0" y1=(height) x2=(width) y2=(height) stroke="#d1d5db" {}
            @for b in &bars {
                rect x=(format!("{:.1}", b.x)) y=(format!("{:.1}", b.y)) width=(format!("{:.1}", bar - 2.0)) height=(format!("{:.1}", b.height)) fill=(b.colour) {
                    title { (b.label) }
                }
            }
            text x="0" y=(height + 14.0) font-size="10" fill="#6b7280" { (first_day) }
            text x=(width) y=(height + 14.0) font-size="10" fill="#6b7280" text-anchor="end" { (today) }
        }
        @if ranked.is_empty() {
            p.muted { "No attributed installs in the last 30 days." }
        } @else {
            ul.legend {
                @for (i, name) in top.iter().enumerate() {
                    li { span.swatch style=(format!("background:{}", PALETTE[i])) {} (name) }
                }
                @if has_other {
                    li { span.swatch style=(format!("background:{}", PALETTE[CHART_SOURCES])) {} "other" }
                }
            }
        }
    }
}

fn source_label(source: &ChartSource) -> String {
    match source {
        ChartSource::Source(s) => s.clone(),
        ChartSource::NoSource => "(no source)".to_owned(),
        ChartSource::Other => "other".to_owned(),
    }
}

const STYLE: &str = r#"
*{box-sizing:border-box}body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:960px;padding:16px;color:#111827;background:#f9fafb}
nav{color:#6b7280;font-size:14px}nav strong{color:#111827}h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:0 0 8px;display:flex;align-items:center;gap:8px}
.muted{color:#6b7280}.apps{list-style:none;padding:0}.apps li{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;margin:8px 0}section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px;margin:12px 0}
.dot{display:inline-block;width:12px;height:12px;border-radius:50%}.dot.green{background:#16a34a}.dot.grey{background:#9ca3af}
.status{margin:0 0 8px;font-size:14px}dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 12px;margin:8px 0;font-size:14px}dt{color:#6b7280}dd{margin:0;min-width:0}
textarea,input{width:100%;font-family:ui-monospace,Menlo,monospace;font-size:12px;border:1px solid #d1d5db;border-radius:4px;padding:6px;background:#f9fafb;resize:vertical}
.counters{display:flex;flex-wrap:wrap;gap:12px;list-style:none;padding:0;margin:8px 0 0;font-size:14px}
svg.chart{width:100%;height:auto}.legend{display:flex;flex-wrap:wrap;gap:12px;list-style:none;padding:0;font-size:13px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
@media (max-width:560px){dl{grid-template-columns:1fr}}
"#;

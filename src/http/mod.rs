//! The HTTP surface: shared state, the router of every route (each documented in
//! the OpenAPI document by construction), and the middleware stack (request id,
//! request span without the raw URI, body limit, timeout).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Extension, Router};
use hyper::body::{Frame, SizeHint};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tracing::Instrument;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Secret;
use crate::domain::PartnerId;
use crate::ingest::Ingestor;
use crate::store::Store;
use crate::telemetry;

mod admin;
mod auth;
mod chart;
mod deliveries;
mod destinations;
mod destinations_section;
mod dry_run;
mod erasure;
pub mod error;
mod extract;
mod feed;
mod forwarding;
mod health;
mod openapi;
mod postbacks;
pub mod serve;
mod status;
pub mod tls;

pub use auth::LoginThrottle;
use error::AppError;

#[derive(Clone)]
pub struct AppState {
    pub ingestor: Arc<Ingestor>,
    pub dry_run: Arc<crate::dry_run::DryRunner>,
    /// The writer's queue, read at each scrape (a handle like the ingestor's: it is
    /// dropped with the routers, so the writer still finishes on shutdown).
    pub writer_queue: crate::writer::Writer,
    /// Stale detection, for the partners API, the page and `/metrics`.
    pub health: Arc<crate::stale::HealthView>,
    pub store: Arc<dyn Store>,
    pub prometheus: PrometheusHandle,
    pub max_body_bytes: usize,
    pub admin_token: Secret,
    /// `forwarding.allow_private_targets`: the SSRF rule is off for new destinations.
    pub allow_private_targets: bool,
    /// Base of printed endpoint URLs.
    pub base_url: String,
    pub login_throttle: Arc<LoginThrottle>,
}

pub struct RouterOptions {
    pub request_timeout: Duration,
    /// Serve `/metrics` on the main router (false when it has its own listener).
    pub metrics_on_main: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "postback-gateway", description = "Receives mobile attribution postbacks and stores attributed installs."),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "admin_basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// Every documented route but `/metrics`, which may live on its own listener.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(postbacks::router())
        .merge(dry_run::router())
        .merge(admin::router())
        .merge(deliveries::router())
        .merge(forwarding::router())
        .merge(destinations::router())
        .merge(feed::router())
        .merge(status::router())
        .merge(health::router())
        .routes(utoipa_axum::routes!(openapi_json))
}

/// The OpenAPI 3 document of every route (`/metrics` included wherever it is served).
pub fn openapi() -> serde_json::Value {
    openapi::finish(
        api_routes()
            .merge(health::metrics_router())
            .split_for_parts()
            .1,
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "probes",
    responses((status = 200, body = Object, content_type = "application/json", description = "OpenAPI 3 document")))]
async fn openapi_json(Extension(doc): Extension<Arc<str>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
}

pub fn router(state: AppState, options: RouterOptions) -> Router {
    let routes = if options.metrics_on_main {
        api_routes()
            .merge(health::metrics_router())
            .split_for_parts()
            .0
    } else {
        // Documented, but served on its own listener.
        api_routes()
            .split_for_parts()
            .0
            .route("/metrics", get(metrics_moved))
    };
    let doc: Arc<str> = openapi().to_string().into();
    let max_body = state.max_body_bytes;
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(Extension(doc))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::map_request(drop_unsafe_request_id))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuidV7))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(observe))
                // A bug must not take the connection down with it: answer 500 with
                // our body, never the panic message (it could hold request data).
                .layer(CatchPanicLayer::custom(
                    |_panic: Box<dyn std::any::Any + Send>| {
                        tracing::error!("a request handler panicked");
                        AppError::Internal.into_response()
                    },
                ))
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    AppError::Unavailable
                }))
                .layer(tower::timeout::TimeoutLayer::new(options.request_timeout))
                .layer(middleware::from_fn_with_state(
                    options.request_timeout.mul_f64(BODY_DEADLINE_SHARE),
                    body_deadline,
                ))
                .layer(DefaultBodyLimit::max(max_body)),
        )
}

/// Share of the request timeout a request body may take to arrive. A body still
/// arriving then is answered 408 by the handler (a client that trickles its body is at
/// fault: it must not get the 503 of the timeout layer, which means "server trouble").
const BODY_DEADLINE_SHARE: f64 = 0.8;

/// Put a deadline on reading the request body: past it, reading fails with
/// [`BodyTimedOut`].
async fn body_deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let sleep = Box::pin(tokio::time::sleep(limit));
    next.run(request.map(|inner| Body::new(DeadlineBody { inner, sleep })))
        .await
}

/// Reading the request body took longer than its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

impl BodyTimedOut {
    /// Whether `error` or any error in its source chain is a [`BodyTimedOut`].
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.is::<BodyTimedOut>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Answers that carry admin data: never stored by a cache, never content-sniffed.
async fn private_response(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The metrics-only router for a separate listener.
pub fn metrics_router(state: AppState) -> Router {
    let (routes, _) = health::metrics_router().split_for_parts();
    routes.with_state(state)
}

async fn not_found() -> AppError {
    AppError::NotFound("no such route".into())
}

async fn metrics_moved() -> AppError {
    AppError::NotFound("/metrics is served on METRICS_LISTEN_ADDR".into())
}

/// 405 with the right `Allow`; on the postback route an unknown partner is still 404.
async fn method_not_allowed(uri: Uri) -> AppError {
    let postback = uri.path().strip_prefix("/v1/postbacks/");
    // The dry run takes the same methods as the postback it tries.
    let postback = postback.map(|p| p.strip_suffix("/test").unwrap_or(p));
    match postback {
        Some(segment) => match segment.parse::<PartnerId>() {
            Ok(partner) => AppError::MethodNotAllowed {
                allow: partner.allowed_methods(),
            },
            Err(_) => AppError::UnknownPartner,
        },
        None => AppError::MethodNotAllowed {
            allow: documented_methods(uri.path()),
        },
    }
}

/// The methods the OpenAPI document gives the route of `path`, as `Allow` lists them
/// (`GET, POST`; `DELETE`): read from the document once, so a new route needs no
/// entry here. The most literal template wins; an unknown path gets `GET`.
fn documented_methods(path: &str) -> &'static str {
    type Route = (Vec<String>, &'static str);
    static ROUTES: std::sync::OnceLock<Vec<Route>> = std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        let doc = openapi();
        let Some(paths) = doc["paths"].as_object() else {
            return Vec::new();
        };
        paths
            .iter()
            .map(|(template, item)| {
                let methods: Vec<String> = ["get", "post", "put", "patch", "delete"]
                    .into_iter()
                    .filter(|m| item.get(*m).is_some())
                    .map(str::to_uppercase)
                    .collect();
                // Built once per route for the life of the process.
                let allow: &'static str = Box::leak(methods.join(", ").into_boxed_str());
                (template.split('/').map(str::to_owned).collect(), allow)
            })
            .collect()
    });
    let segments: Vec<&str> = path.split('/').collect();
    let is_param = |t: &str| t.starts_with('{') && t.ends_with('}');
    routes
        .iter()
        .filter(|(template, _)| {
            template.len() == segments.len()
                && template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| is_param(t) || t == s)
        })
        .max_by_key(|(template, _)| template.iter().filter(|t| !is_param(t)).count())
        .map_or("GET", |(_, allow)| allow)
}

/// Longest client-chosen request id kept; a UUID is 36 characters.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A client's `X-Request-Id` is logged and echoed: keep it only when it is short and
/// made of characters that cannot forge a log line (letters, digits, `-_.:`), else
/// drop it so that one is generated.
async fn drop_unsafe_request_id(mut request: Request) -> Request {
    let safe = |v: &[u8]| {
        (1..=MAX_REQUEST_ID_LEN).contains(&v.len())
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    };
    let headers = request.headers_mut();
    let ids = headers.get_all(REQUEST_ID);
    let mut ids = ids.iter();
    let keep = match (ids.next(), ids.next()) {
        (Some(id), None) => safe(id.as_bytes()),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !keep {
        headers.remove(REQUEST_ID);
    }
    request
}

const REQUEST_ID: &str = "x-request-id";

/// Request ids for requests that bring none: UUIDv7, so they grow with time. The
/// delivery log indexes them per app (`deliveries_request`), and time-ordered ids
/// are appended at the index's end instead of dirtying a random page per postback
/// (SQLite writes each dirty page whole into its WAL at every commit).
#[derive(Clone, Copy)]
struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::now_v7().hyphenated().to_string();
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(RequestId::new)
    }
}

/// One span per request with its id and matched route, never the raw URI (its query
/// may carry `api_key`); a log line when it ends; the latency histogram.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!("request", %request_id, method = %request.method(), %route);
    async move {
        let response = next.run(request).await.into_response();
        let status = response.status();
        let elapsed = started.elapsed();
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                elapsed_ms = elapsed.as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                elapsed_ms = elapsed.as_millis() as u64,
                "request done"
            );
        }
        telemetry::request_finished(route, status.as_u16(), elapsed);
        response
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of SPEC §4 and the postback route are in the generated document,
    /// with the methods they are served under.
    #[test]
    fn openapi_documents_every_route() {
        let json = openapi();
        let expected = [
            ("/v1/postbacks/kochava", "post"),
            ("/v1/postbacks/tune", "get"),
            ("/v1/postbacks/tune", "post"),
            ("/v1/postbacks/appsflyer", "get"),
            ("/v1/postbacks/appsflyer", "post"),
            ("/v1/postbacks/adjust", "get"),
            ("/v1/postbacks/singular", "get"),
            ("/v1/postbacks/singular", "post"),
            ("/v1/postbacks/branch", "post"),
            ("/v1/postbacks/kochava/test", "post"),
            ("/v1/postbacks/tune/test", "get"),
            ("/v1/postbacks/tune/test", "post"),
            ("/v1/postbacks/appsflyer/test", "get"),
            ("/v1/postbacks/appsflyer/test", "post"),
            ("/v1/postbacks/adjust/test", "get"),
            ("/v1/postbacks/singular/test", "get"),
            ("/v1/postbacks/singular/test", "post"),
            ("/v1/postbacks/branch/test", "post"),
            ("/v1/apps", "get"),
            ("/v1/apps/{app_id}/partners", "get"),
            ("/v1/apps/{app_id}/users", "get"),
            ("/v1/apps/{app_id}/users", "delete"),
            ("/v1/apps/{app_id}/erasures", "get"),
            ("/v1/apps/{app_id}/users/lookup", "get"),
            ("/v1/apps/{app_id}/summary", "get"),
            ("/v1/apps/{app_id}/deliveries", "get"),
            ("/v1/apps/{app_id}/deliveries/{request_id}", "get"),
            ("/v1/apps/{app_id}/destinations", "get"),
            ("/v1/apps/{app_id}/destinations", "post"),
            ("/v1/apps/{app_id}/destinations/{destination_id}", "delete"),
            ("/v1/deliveries/unauthenticated", "get"),
            ("/v1/apps/{app_id}/attributions/feed", "get"),
            (
                "/v1/apps/{app_id}/destinations/{destination_id}/messages",
                "get",
            ),
            (
                "/v1/apps/{app_id}/destinations/{destination_id}/replay",
                "post",
            ),
            ("/apps/{app_id}/attribution", "get"),
            ("/apps/{app_id}/attribution/test", "post"),
            ("/apps", "get"),
            ("/", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/metrics", "get"),
            ("/openapi.json", "get"),
        ];
        assert!(json["openapi"].as_str().unwrap().starts_with("3."));
        for (path, method) in expected {
            assert!(
                json["paths"][path][method].is_object(),
                "{method} {path} missing from openapi.json"
            );
        }
        let documented: std::collections::BTreeSet<&str> = json["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let listed: std::collections::BTreeSet<&str> = expected.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            documented, listed,
            "documented paths and SPEC routes differ"
        );
    }

    /// A 405 lists the methods the route takes, as documented.
    #[test]
    fn method_not_allowed_lists_the_documented_methods() {
        let app = "0190c0de-0000-7000-8000-000000000000";
        assert_eq!(
            documented_methods(&format!("/v1/apps/{app}/destinations")),
            "GET, POST"
        );
        assert_eq!(
            documented_methods(&format!("/v1/apps/{app}/destinations/{app}")),
            "DELETE"
        );
        assert_eq!(
            documented_methods(&format!("/v1/apps/{app}/users/lookup")),
            "GET"
        );
        assert_eq!(documented_methods("/v1/apps"), "GET");
        assert_eq!(documented_methods("/nowhere/at/all"), "GET");
    }

    /// The document is as strict as the handlers (schemathesis once found every
    /// difference as "valid request rejected").
    #[test]
    fn openapi_is_as_strict_as_the_code() {
        let doc = openapi();
        let param = |path: &str, name: &str| {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{name} of {path}"))["schema"]
                .clone()
        };
        let by = param("/v1/apps/{app_id}/summary", "by");
        assert_eq!(
            by["enum"],
            serde_json::json!(["source", "campaign", "adgroup", "ad"])
        );
        let limit = param("/v1/apps/{app_id}/users", "limit");
        assert_eq!(
            (&limit["type"], &limit["minimum"], &limit["maximum"]),
            (&"integer".into(), &1.into(), &1000.into())
        );
        let feed = "/v1/apps/{app_id}/attributions/feed";
        assert_eq!(
            param(feed, "limit"),
            limit,
            "the feed's limit is the users' one"
        );
        assert_eq!(
            param(feed, "after")["pattern"],
            "^([0-9]{1,18}-[0-9a-f]{32})?$",
            "the cursors decode_feed_cursor accepts"
        );
        let identifier = param("/v1/apps/{app_id}/users/lookup", "identifier");
        assert_eq!(identifier["oneOf"].as_array().unwrap().len(), 6);
        let dry_runs = PartnerId::ALL.map(|p| format!("/v1/postbacks/{p}/test"));
        for path in PartnerId::ALL
            .map(|p| format!("/v1/postbacks/{p}"))
            .iter()
            .chain(&dry_runs)
        {
            let partner: PartnerId = path
                .trim_start_matches("/v1/postbacks/")
                .trim_end_matches("/test")
                .parse()
                .unwrap();
            let item = &doc["paths"][path];
            for (method, name) in [
                (crate::partners::Method::Get, "get"),
                (crate::partners::Method::Post, "post"),
            ] {
                assert_eq!(
                    item[name].is_object(),
                    partner.input(method).is_some(),
                    "{name} {partner}"
                );
            }
            assert!(
                item["head"]["responses"]["405"].is_object(),
                "HEAD {partner}"
            );
        }
        let answer = &doc["paths"]["/v1/postbacks/tune/test"]["get"]["responses"]["200"];
        assert_eq!(
            answer["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/DryRunAnswer"
        );
        let dry = &doc["components"]["schemas"]["DryRunAnswer"];
        assert_eq!(
            dry["properties"]["verdict"]["$ref"],
            "#/components/schemas/DryVerdict"
        );
        assert_eq!(
            doc["components"]["schemas"]["DryVerdict"]["enum"],
            serde_json::json!(["accepted", "duplicate", "organic", "invalid"])
        );
        assert!(
            doc["paths"]["/v1/postbacks/tune/test"]["get"]["responses"]["429"].is_null(),
            "the dry run never answers 429"
        );
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = &operation["responses"];
                assert!(responses["431"].is_object(), "431 on {method} {path}");
                let secured = operation["security"][0].as_object().is_some_and(|s| {
                    s.contains_key("admin_token") || s.contains_key("admin_basic")
                });
                if secured {
                    for status in ["401", "403", "429"] {
                        assert!(responses[status].is_object(), "{status} on {method} {path}");
                    }
                }
                if path.starts_with("/v1/postbacks/") && method != "head" {
                    assert!(responses["401"].is_object(), "401 on {method} {path}");
                }
            }
        }
    }
}

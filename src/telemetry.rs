//! Logging and metrics setup, and one named function per metric so that metric names
//! and labels exist in exactly one place.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

/// Production logging: `RUST_LOG` (default `info`) to stderr. Stdout is kept for
/// the CLI's output and the first-start printout.
pub fn init_logging() {
    let filter = EnvFilter::try_new(log_filter(std::env::var("RUST_LOG").ok().as_deref()))
        .unwrap_or_else(|_| EnvFilter::new(log_filter(None)));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The filter for `RUST_LOG`: sqlx logs every statement at debug and PostgreSQL's
/// notices (`relation "_sqlx_migrations" already exists, skipping` on every start) at
/// info, so sqlx is held at `warn` unless `RUST_LOG` names it.
fn log_filter(rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim) {
        None | Some("") => "info,sqlx=warn".to_owned(),
        Some(v) if v.contains("sqlx") => v.to_owned(),
        Some(v) => format!("{v},sqlx=warn"),
    }
}

/// Log panics through tracing with their location only: a formatted panic message
/// could carry request data (an API key in a URL, say); a literal message cannot.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&'static str>()
            .copied()
            .unwrap_or("(message withheld)");
        tracing::error!(%location, message, "panic");
    }));
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide Prometheus recorder once and return its handle.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::REQUEST_SECONDS.to_owned()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::BATCH_SIZE.to_owned()),
                        &[
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::FORWARD_LATENCY.to_owned()),
                        &[
                            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                            3600.0, 21600.0, 86400.0,
                        ],
                    )
                })
                .expect("static bucket lists are non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests in one process); the
            // handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            // Histograms keep every sample until upkeep folds them into their
            // buckets; without it memory grows with every request between scrapes
            // (about 18 bytes each: 10 → 106 MiB over 5 million requests unscraped).
            // `PrometheusBuilder::install` would start this; `build_recorder` does not.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}

mod names {
    pub const POSTBACKS: &str = "postback_gateway_postbacks_total";
    pub const REQUEST_SECONDS: &str = "postback_gateway_http_request_duration_seconds";
    pub const BATCH_SIZE: &str = "postback_gateway_write_batch_size";
    pub const DB_ERRORS: &str = "postback_gateway_db_errors_total";
    pub const QUOTA_REJECTIONS: &str = "postback_gateway_quota_rejections_total";
    pub const QUEUE_FULL: &str = "postback_gateway_writer_queue_full_total";
    pub const CONNECTIONS: &str = "postback_gateway_http_connections";
    pub const CONNECTIONS_SHED: &str = "postback_gateway_http_connections_shed_total";
    pub const KEY_RELOADS: &str = "postback_gateway_key_reloads_total";
    pub const READY: &str = "postback_gateway_ready";
    pub const QUEUE_DEPTH: &str = "postback_gateway_writer_queue_depth";
    pub const QUEUE_CAPACITY: &str = "postback_gateway_writer_queue_capacity";
    pub const PARTNER_LAST_SUCCESS: &str =
        "postback_gateway_partner_last_success_timestamp_seconds";
    pub const PARTNER_STALE: &str = "postback_gateway_partner_stale";
    pub const PARTNER_STALE_AFTER: &str = "postback_gateway_partner_stale_after_seconds";
    pub const FORWARD_ATTEMPTS: &str = "postback_gateway_forward_attempts_total";
    pub const FORWARD_LATENCY: &str = "postback_gateway_forward_delivery_seconds";
    pub const FORWARD_BACKLOG: &str = "postback_gateway_forward_backlog";
    pub const FORWARD_DEAD: &str = "postback_gateway_forward_dead";
}

/// Create the counters that only grow on trouble, at 0, so that they are exported
/// (and rates over them defined) before the first time it happens.
pub fn register() {
    metrics::counter!(names::QUEUE_FULL).increment(0);
    metrics::counter!(names::CONNECTIONS_SHED).increment(0);
    for kind in ["unavailable", "other"] {
        metrics::counter!(names::DB_ERRORS, "kind" => kind).increment(0);
    }
    metrics::gauge!(names::CONNECTIONS).increment(0.0);
    for result in FORWARD_RESULTS {
        metrics::counter!(names::FORWARD_ATTEMPTS, "result" => result).increment(0);
    }
}

/// The results a delivery attempt is counted under: `delivered`, `retry` (failed,
/// tried again later), `dead` (failed for good), `unrecorded` (its result could not
/// be stored; the message is sent again when its lease ends).
pub const FORWARD_RESULTS: [&str; 4] = ["delivered", "retry", "dead", "unrecorded"];

/// One delivery attempt to a destination ended with `result` (see [`FORWARD_RESULTS`]).
pub fn forward_attempt(result: &'static str) {
    metrics::counter!(names::FORWARD_ATTEMPTS, "result" => result).increment(1);
}

/// A message was delivered this long after its commit (`None`: clocks disagree).
pub fn forward_delivered(since_commit: Result<Duration, chrono::OutOfRangeError>) {
    metrics::histogram!(names::FORWARD_LATENCY)
        .record(since_commit.map_or(0.0, |d| d.as_secs_f64()));
}

/// One destination's pending and dead messages at a scrape.
pub fn forward_backlog(app_id: String, destination_id: String, backlog: i64, dead: i64) {
    let labels = [("app_id", app_id), ("destination_id", destination_id)];
    metrics::gauge!(names::FORWARD_BACKLOG, &labels).set(backlog as f64);
    metrics::gauge!(names::FORWARD_DEAD, &labels).set(dead as f64);
}

/// The writer's queue at a scrape: postbacks and counter increments waiting, and
/// the queue's size (`writer.queue_capacity`); when it is full, postbacks get 503.
pub fn writer_queue(depth: usize, capacity: usize) {
    metrics::gauge!(names::QUEUE_DEPTH).set(depth as f64);
    metrics::gauge!(names::QUEUE_CAPACITY).set(capacity as f64);
}

/// Whether the database answered the last readiness check (`/readyz`, or the check
/// every scrape of `/metrics` makes): 1 ready, 0 not.
pub fn ready(ready: bool) {
    metrics::gauge!(names::READY).set(if ready { 1.0 } else { 0.0 });
}

/// One connected (or once heard-from) partner of one app, as stale detection reads
/// it at a scrape: the newest accepted postback (unix seconds), whether it is stale,
/// and how long it may stay quiet.
pub fn partner_health(
    app_id: String,
    partner: &'static str,
    last_accepted: Option<f64>,
    stale: bool,
    stale_after_seconds: f64,
) {
    let labels = [("app_id", app_id), ("partner", partner.to_owned())];
    if let Some(at) = last_accepted {
        metrics::gauge!(names::PARTNER_LAST_SUCCESS, &labels).set(at);
    }
    metrics::gauge!(names::PARTNER_STALE, &labels).set(if stale { 1.0 } else { 0.0 });
    metrics::gauge!(names::PARTNER_STALE_AFTER, &labels).set(stale_after_seconds);
}

/// One postback answered, by partner and verdict (`accepted`, `duplicate`, `organic`,
/// `invalid`, `unauthorized`, `rate_limited`, `unavailable`, …).
pub fn postback_handled(partner: &'static str, verdict: &'static str) {
    metrics::counter!(names::POSTBACKS, "partner" => partner, "verdict" => verdict).increment(1);
}

/// Latency of one HTTP request, by matched route.
pub fn request_finished(route: String, status: u16, elapsed: Duration) {
    metrics::histogram!(names::REQUEST_SECONDS, "route" => route, "status" => status.to_string())
        .record(elapsed.as_secs_f64());
}

/// One transaction committed (or attempted) by the writer with this many postbacks.
pub fn batch_written(size: usize) {
    metrics::histogram!(names::BATCH_SIZE).record(size as f64);
}

/// A database operation failed; `kind` is `unavailable` or `other`.
pub fn db_error(kind: &'static str) {
    metrics::counter!(names::DB_ERRORS, "kind" => kind).increment(1);
}

pub fn quota_rejected(partner: &'static str) {
    metrics::counter!(names::QUOTA_REJECTIONS, "partner" => partner).increment(1);
}

pub fn writer_queue_full() {
    metrics::counter!(names::QUEUE_FULL).increment(1);
}

/// An HTTP connection was accepted and is being served.
pub fn connection_opened() {
    metrics::gauge!(names::CONNECTIONS).increment(1.0);
}

/// A served HTTP connection closed.
pub fn connection_closed() {
    metrics::gauge!(names::CONNECTIONS).decrement(1.0);
}

/// The API key table was read from the database; `trigger` is `periodic` or
/// `unknown_key`.
pub fn keys_reloaded(trigger: &'static str) {
    metrics::counter!(names::KEY_RELOADS, "trigger" => trigger).increment(1);
}

/// A connection over `http.max_connections` was closed at accept.
pub fn connection_shed() {
    metrics::counter!(names::CONNECTIONS_SHED).increment(1);
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn sqlx_stays_at_warn_unless_rust_log_names_it() {
        assert_eq!(log_filter(None), "info,sqlx=warn");
        assert_eq!(log_filter(Some("")), "info,sqlx=warn");
        assert_eq!(log_filter(Some("debug")), "debug,sqlx=warn");
        assert_eq!(
            log_filter(Some("info,sqlx=debug")),
            "info,sqlx=debug",
            "asked for"
        );
    }
}

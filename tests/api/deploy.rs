//! What ships under deploy/: every metric the Prometheus alert rules and the Grafana
//! dashboard read is one the server really exports, checked against a live
//! `/metrics` after some traffic of each kind.

use std::collections::BTreeSet;

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestConfig};

both_backends!(every_metric_the_alerts_and_the_dashboard_read_is_exported);

const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yml");
const ALERT_TESTS: &str = include_str!("../../deploy/prometheus/alerts_test.yml");
const DASHBOARD: &str = include_str!("../../deploy/grafana/postback-gateway.json");

/// Every `postback_gateway_…` name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("postback_gateway_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The names of the samples of a Prometheus text exposition (histograms as their
/// `_bucket`, `_sum` and `_count` series).
fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

async fn every_metric_the_alerts_and_the_dashboard_read_is_exported(backend: Backend) {
    let tc = TestConfig {
        standard_per_hour: 1,
        ..Default::default()
    };
    let Some(app) = TestApp::spawn_with(backend, tc).await else {
        return;
    };
    // Traffic of each kind: accepted, organic, refused, over the quota.
    app.install(json!({"network_name": "Liftoff", "idfa": "00000000-0000-4000-8000-000000000001"}))
        .await;
    assert_eq!(
        app.post_kochava(&json!({"network_name": "organic"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_kochava(&json!({"network_name": "Liftoff"}))
            .await
            .status(),
        400
    );
    let over = json!({"network_name": "Liftoff", "idfa": "00000000-0000-4000-8000-000000000002"});
    assert_eq!(app.post_kochava(&over).await.status(), 429);

    let metrics = app.metrics_text().await;
    let exported = exported(&metrics);
    let mut referenced = metric_names(ALERTS);
    referenced.extend(metric_names(DASHBOARD));
    assert!(referenced.len() >= 12, "{referenced:?}");
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "referenced by deploy/ but not exported: {missing:?}\n/metrics:\n{metrics}"
    );
    // The alert tests feed the same names the rules read.
    for name in metric_names(ALERT_TESTS) {
        assert!(exported.contains(&name), "alerts_test.yml uses {name}");
    }
    // The dashboard is JSON Grafana can import.
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    app.stop().await;
}

/// `postback_gateway_ready` (what the readiness alert reads) follows the database at
/// every scrape, and `/metrics` still answers while the database is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readiness_gauge_follows_the_database() {
    use crate::helpers::{wait_until, ProxyState, ServerProcess, TcpProxy, TestDb};
    use std::time::Duration;
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let upstream = crate::outage::pg_socket_addr(db.url());
    let proxy = TcpProxy::start(upstream).await;
    let proxied = db
        .url()
        .replace(&upstream.to_string(), &format!("127.0.0.1:{}", proxy.port));
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::start(&proxied, &[("PBG_DATABASE__ACQUIRE_TIMEOUT_MS", "500")])
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let metrics_url = format!("{}/metrics", server.address);
    let ready = |client: reqwest::Client, url: String| async move {
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(
            resp.status(),
            200,
            "/metrics answers whatever the database does"
        );
        let text = resp.text().await.unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("postback_gateway_ready "))
            .unwrap_or_else(|| panic!("the readiness gauge in\n{text}"))
            .to_owned();
        assert!(
            text.contains("postback_gateway_writer_queue_capacity 8192"),
            "{text}"
        );
        line.ends_with(" 1")
    };
    assert!(ready(client.clone(), metrics_url.clone()).await);
    proxy.cut(ProxyState::Refuse);
    wait_until(Duration::from_secs(20), "ready drops to 0", || {
        let (c, u) = (client.clone(), metrics_url.clone());
        async move { !ready(c, u).await }
    })
    .await;
    proxy.restore();
    wait_until(Duration::from_secs(20), "ready back to 1", || {
        let (c, u) = (client.clone(), metrics_url.clone());
        async move { ready(c, u).await }
    })
    .await;
    let (status, _) = server.terminate();
    assert!(status.success());
}

//! Probes, metrics and request ids.

use crate::both_backends;
use crate::helpers::{json_body, Backend, TestApp};

both_backends!(
    health_and_readiness_answer_and_carry_request_ids,
    metrics_count_postbacks_by_partner_and_verdict
);

async fn health_and_readiness_answer_and_carry_request_ids(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    json_body(resp, 200, "healthz").await;
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(json_body(resp, 200, "readyz").await["status"], "ready");
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-request-id"],
        "abc-123",
        "a caller's request id is echoed"
    );
    app.stop().await;
}

async fn metrics_count_postbacks_by_partner_and_verdict(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let resp = app
        .get_tune("advertiser_sub_publisher=x&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF")
        .await;
    assert_eq!(resp.status(), 200);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("postback_gateway_postbacks_total")
                && l.contains("partner=\"tune\"")
                && l.contains("verdict=\"accepted\"")),
        "{text}"
    );
    assert!(
        text.contains("postback_gateway_http_request_duration_seconds_bucket"),
        "{text}"
    );
    app.stop().await;
}

//! Probes, metrics and request ids.

use crate::both_backends;
use crate::helpers::{assert_error, json_body, Backend, ServerProcess, TestApp, TestDb};

both_backends!(
    health_and_readiness_answer_and_carry_request_ids,
    metrics_count_postbacks_by_partner_and_verdict,
    metrics_listen_addr_serves_metrics_on_its_own_port,
    client_request_ids_are_echoed_only_when_short_and_safe,
);

async fn health_and_readiness_answer_and_carry_request_ids(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    json_body(resp, 200, "healthz").await;
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    let made: Vec<uuid::Uuid> = [
        &resp,
        &app.client.get(app.url("/readyz")).send().await.unwrap(),
    ]
    .iter()
    .map(|resp| {
        let id = resp.headers()["x-request-id"].to_str().unwrap();
        uuid::Uuid::parse_str(id).expect("a made request id is a UUID")
    })
    .collect();
    assert!(
        made.iter().all(|id| id.get_version_num() == 7) && made[0] < made[1],
        "made request ids are UUIDv7, growing with time: {made:?}"
    );
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

/// `METRICS_LISTEN_ADDR` once panicked at start (the route was added twice) and the
/// binary exited 101.
async fn metrics_listen_addr_serves_metrics_on_its_own_port(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // A port that was free a moment ago: the server binds it itself.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let server = ServerProcess::start(db.url(), &[("METRICS_LISTEN_ADDR", &metrics_addr)]);
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .expect("the metrics listener answers");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let resp = client
        .get(format!("{}/metrics", server.address))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "not_found", "/metrics on the main listener").await;
    let resp = client
        .get(format!("{}/openapi.json", server.address))
        .send()
        .await
        .unwrap();
    let doc = json_body(resp, 200, "openapi.json").await;
    assert!(
        doc["paths"]["/metrics"]["get"].is_object(),
        "still documented"
    );
    let (status, logs) = server.terminate();
    assert!(status.success(), "exit 0 on SIGTERM, got {status}:\n{logs}");
}

/// A client's `X-Request-Id` is logged: one that could forge a log line (spaces,
/// quotes, `=`, non-ASCII bytes) or is very long is replaced by a generated one.
async fn client_request_ids_are_echoed_only_when_short_and_safe(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let get = |id: Vec<u8>| {
        let request = app.client.get(app.url("/healthz")).header(
            "x-request-id",
            reqwest::header::HeaderValue::from_bytes(&id).unwrap(),
        );
        async move { request.send().await.unwrap() }
    };
    let uuid = uuid::Uuid::new_v4().to_string();
    for kept in ["abc-123", "a", "Root.1:2_3", &uuid, &"x".repeat(128)] {
        let resp = get(kept.as_bytes().to_vec()).await;
        assert_eq!(resp.headers()["x-request-id"], kept, "{kept:?} is echoed");
    }
    let forged: [&[u8]; 7] = [
        b"abc status=500 message=\"forged\"",
        b"\"quoted\"",
        b"a=b",
        b"tab\there",
        "caf\u{e9}".as_bytes(),
        &[b'x'; 129],
        &[b'y'; 60_000],
    ];
    for id in forged {
        let resp = get(id.to_vec()).await;
        assert_eq!(resp.status(), 200);
        let echoed = resp.headers()["x-request-id"].to_str().unwrap();
        assert!(
            uuid::Uuid::parse_str(echoed).is_ok(),
            "{:?} is replaced by a generated id, got {echoed:?}",
            String::from_utf8_lossy(&id[..id.len().min(40)])
        );
    }
    app.stop().await;
}

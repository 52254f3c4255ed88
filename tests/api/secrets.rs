//! API keys never reach the logs: the real binary at TRACE level, its whole output
//! captured, a key sent in Tune's query string.

use crate::both_backends;
use crate::helpers::{run_cli, Backend, ServerProcess, TestDb};

both_backends!(api_key_in_a_query_string_appears_nowhere_in_the_logs);

async fn api_key_in_a_query_string_appears_nowhere_in_the_logs(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let created = run_cli(db.url(), &["apps", "create", "--name", "logged", "--json"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();

    let server = ServerProcess::start(db.url(), &[("RUST_LOG", "trace")]);
    let client = reqwest::Client::new();
    let base = &server.address;
    let urls = [
        format!("{base}/v1/postbacks/tune?advertiser_sub_publisher=Vungle&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF&api_key={key}"),
        format!("{base}/v1/postbacks/tune?advertiser_sub_publisher=Vungle&api_key={key}"), // 400
        format!("{base}/v1/postbacks/nope?api_key={key}"),                                   // 404
        format!("{base}/v1/postbacks/kochava?api_key={key}"),                                // 405
    ];
    let mut statuses = Vec::new();
    for url in &urls {
        statuses.push(client.get(url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 400, 404, 405]);
    let resp = client
        .post(format!("{base}/v1/postbacks/kochava"))
        .header("x-api-key", &key)
        .body(format!(r#"{{"api_key":"{key}","network_name":"Liftoff","idfa":"A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let (status, logs) = server.terminate();
    assert!(
        status.success(),
        "exit 0 on SIGTERM, got {status}; logs:\n{logs}"
    );
    assert!(
        logs.contains("/v1/postbacks/{partner}"),
        "request spans were logged:\n{logs}"
    );
    assert!(logs.lines().count() > 10, "TRACE logging produced output");
    let secret_part = &key["pbgk_".len()..];
    assert!(
        !logs.contains(secret_part),
        "the API key leaked into the logs:\n{logs}"
    );
}

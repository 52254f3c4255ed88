//! The delivery log: every authenticated postback with its answer and the rule that
//! decided it, pages newest first, pruning, and the unauthenticated log.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{json_body, wait_until, Backend, TestApp, TestConfig};

both_backends!(
    each_verdict_is_logged_with_its_reason,
    the_log_pages_newest_first_and_is_pruned_to_its_bound,
    no_key_ever_appears_in_a_delivery_record,
    unauthenticated_requests_go_to_the_global_log_with_a_prefix_at_most,
    deliveries_tail_prints_the_last_ones_oldest_first,
);

impl TestApp {
    async fn deliveries(&self, query: &str) -> Value {
        let resp = self
            .admin_get(&format!("/v1/apps/{}/deliveries?{query}", self.app_id))
            .await;
        json_body(resp, 200, "deliveries").await
    }

    /// Wait until the log holds `n` rows (rows of requests that store no event are
    /// committed with the next batch).
    async fn wait_for_deliveries(&self, n: usize) -> Vec<Value> {
        let rows = std::sync::Mutex::new(Vec::new());
        wait_until(Duration::from_secs(10), "delivery rows", || async {
            let list = self.deliveries("limit=1000").await["deliveries"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let enough = list.len() >= n;
            *rows.lock().unwrap() = list;
            enough
        })
        .await;
        rows.into_inner().unwrap()
    }
}

fn install(n: u32) -> Value {
    json!({"network_name": "Liftoff", "campaign_name": "c", "idfa": format!("00000000-0000-4000-8000-{n:012}")})
}

async fn each_verdict_is_logged_with_its_reason(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        TestConfig {
            standard_per_hour: 1,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let accepted = app.post_kochava(&install(1)).await;
    let request_id = accepted.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let event_id = json_body(accepted, 200, "install").await["event_id"].clone();
    assert_eq!(app.post_kochava(&install(1)).await.status(), 200);
    assert_eq!(app.post_kochava(&install(2)).await.status(), 429);
    let organic = json!({"network_name": "Organic", "idfa": "x"});
    assert_eq!(app.post_kochava(&organic).await.status(), 200);
    let no_id = json!({"network_name": "Liftoff"});
    assert_eq!(app.post_kochava(&no_id).await.status(), 400);

    let rows = app.wait_for_deliveries(5).await;
    let by_verdict = |v: &str| {
        rows.iter()
            .find(|r| r["verdict"] == v)
            .unwrap_or_else(|| panic!("a {v} row in {rows:?}"))
    };
    let row = by_verdict("accepted");
    assert_eq!(
        (row["status"].as_u64(), row["event_id"].clone()),
        (Some(200), event_id.clone())
    );
    assert_eq!(row["reason"], "install stored");
    assert_eq!(row["segments"]["source"], "Liftoff");
    assert_eq!(
        row["identifiers"]["idfa"],
        "00000000-0000-4000-8000-000000000001"
    );
    assert_eq!(row["method"], "POST");
    assert_eq!(row["partner"], "kochava");
    assert_eq!(row["payload"]["network_name"], "Liftoff");
    let row = by_verdict("duplicate");
    assert_eq!(row["event_id"], event_id);
    assert!(
        row["reason"].as_str().unwrap().contains("redelivery"),
        "{row}"
    );
    let row = by_verdict("rate_limited");
    assert_eq!(row["status"], 429);
    assert!(
        row["reason"].as_str().unwrap().contains("quota of 1"),
        "{row}"
    );
    let row = by_verdict("organic");
    assert_eq!(row["reason"], "organic: network_name is \"Organic\"");
    let row = by_verdict("invalid");
    assert_eq!(row["status"], 400);
    assert_eq!(row["reason"], "no device or user identifier present");

    // One delivery by the request id it was answered with.
    let one = app
        .admin_get(&format!("/v1/apps/{}/deliveries/{request_id}", app.app_id))
        .await;
    assert_eq!(
        json_body(one, 200, "by request id").await["verdict"],
        "accepted"
    );
    let none = app
        .admin_get(&format!("/v1/apps/{}/deliveries/nope", app.app_id))
        .await;
    assert_eq!(none.status(), 404);
    // Filters.
    let organic_only = app.deliveries("verdict=organic").await;
    assert_eq!(organic_only["deliveries"].as_array().map(Vec::len), Some(1));
    let rejected = app.deliveries("status=400&partner=kochava").await;
    assert_eq!(rejected["deliveries"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        app.admin_get(&format!("/v1/apps/{}/deliveries?verdict=maybe", app.app_id))
            .await
            .status(),
        400
    );
    // The page names the last refusal and lists the deliveries.
    let page = app
        .client
        .get(app.url(&format!("/apps/{}/attribution", app.app_id)))
        .basic_auth("ops", Some(crate::helpers::ADMIN_TOKEN))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("data-last-refused")
            && page.contains("(400): no device or user identifier present"),
        "the last refusal on the page"
    );
    assert!(
        page.contains("data-verdict=\"rate_limited\""),
        "the deliveries table"
    );
    app.stop().await;
}

async fn the_log_pages_newest_first_and_is_pruned_to_its_bound(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for n in 0..5 {
        assert_eq!(app.post_kochava(&install(n)).await.status(), 200);
    }
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let page = app.deliveries(&query).await;
        let rows = page["deliveries"].as_array().unwrap().clone();
        seen.extend(rows.iter().map(|r| r["identifiers"]["idfa"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<Value> = (0..5)
        .rev()
        .map(|n| json!(format!("00000000-0000-4000-8000-{n:012}")))
        .collect();
    assert_eq!(seen, expected, "every row once, newest first");

    let removed = app
        .store
        .prune_deliveries(chrono::Utc::now(), 3, 7, 1000)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let left = app.deliveries("").await["deliveries"]
        .as_array()
        .unwrap()
        .clone();
    let left: Vec<Value> = left
        .iter()
        .map(|r| r["identifiers"]["idfa"].clone())
        .collect();
    assert_eq!(left, expected[..3].to_vec(), "the newest 3 stay");
    // Age wins where it removes more.
    let removed = app
        .store
        .prune_deliveries(chrono::Utc::now() + chrono::Duration::days(8), 3, 7, 1000)
        .await
        .unwrap();
    assert_eq!(removed, 3);
    app.stop().await;
}

async fn no_key_ever_appears_in_a_delivery_record(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let key = app.api_key.clone();
    let secret = &key[5..];
    let url = app.url(&format!("/v1/postbacks/kochava?api_key={key}"));
    for body in [
        format!(
            r#"{{"network_name":"Liftoff","idfa":"A","api_key":"{key}","x":{{"api_key":"{key}"}}}}"#
        ),
        format!(r#"{{"network_name":"Organic","api_key":"{key}"}}"#),
        format!(r#"{{"api_key":"{key}", not json"#),
    ] {
        let resp = app.client.post(&url).body(body).send().await.unwrap();
        assert!(resp.status().as_u16() < 500);
    }
    let tune = app
        .get_tune("advertiser_sub_publisher=Vungle&ios_ifa=B")
        .await;
    assert_eq!(tune.status(), 200);
    let rows = app.wait_for_deliveries(4).await;
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains(secret), "a key in the log: {text}");
    app.stop().await;
}

async fn unauthenticated_requests_go_to_the_global_log_with_a_prefix_at_most(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let made_up = format!("pbgk_{}", "ab".repeat(32));
    let resp = app.post_json("kochava", Some(&made_up), &install(1)).await;
    assert_eq!(resp.status(), 401);
    let resp = app
        .post_json("kochava", Some("not-ours-secret"), &install(1))
        .await;
    assert_eq!(resp.status(), 401);
    let resp = app.post_json("kochava", None, &install(1)).await;
    assert_eq!(resp.status(), 401);
    let rows = std::sync::Mutex::new(Vec::new());
    wait_until(Duration::from_secs(10), "unauthenticated rows", || async {
        let resp = app.admin_get("/v1/deliveries/unauthenticated").await;
        let list = json_body(resp, 200, "unauthenticated").await["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let enough = list.len() >= 3;
        *rows.lock().unwrap() = list;
        enough
    })
    .await;
    let rows = rows.into_inner().unwrap();
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains(&made_up[13..]), "{text}");
    assert!(!text.contains("not-ours-secret"), "{text}");
    let prefixes: Vec<Value> = rows.iter().map(|r| r["key_prefix"].clone()).collect();
    assert!(prefixes.contains(&json!("pbgk_abababab")), "{prefixes:?}");
    assert_eq!(prefixes.iter().filter(|p| p.is_null()).count(), 2);
    assert!(rows.iter().all(|r| r["status"] == 401));
    app.stop().await;
}

async fn deliveries_tail_prints_the_last_ones_oldest_first(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for n in 0..3 {
        assert_eq!(app.post_kochava(&install(n)).await.status(), 200);
    }
    let organic = json!({"network_name": "Organic"});
    assert_eq!(app.post_kochava(&organic).await.status(), 200);
    app.wait_for_deliveries(4).await;
    let app_id = app.app_id.to_string();
    let out = crate::helpers::run_cli(
        app.db.url(),
        &["deliveries", "tail", &app_id, "--limit", "2", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["identifiers"]["idfa"],
        "00000000-0000-4000-8000-000000000002"
    );
    assert_eq!(lines[1]["verdict"], "organic", "the newest last");
    let text = crate::helpers::run_cli(app.db.url(), &["deliveries", "tail", &app_id]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.contains("organic: network_name is \"Organic\""),
        "{text}"
    );
    app.stop().await;
}

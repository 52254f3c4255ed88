//! The dry run, `GET|POST /v1/postbacks/{partner}/test`: the real endpoint's checks
//! and reading, answered with the verdict, reason, row and warnings; it stores,
//! counts and uses nothing.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{assert_error, json_body, Backend, TestApp, TestConfig};

both_backends!(
    dry_run_stores_and_counts_nothing_and_names_unfilled_macros,
    dry_run_uses_no_quota_and_works_when_it_is_used_up,
    dry_run_recognises_a_duplicate_of_a_stored_delivery,
    dry_run_refuses_what_the_real_endpoint_refuses,
);

const IDFA: &str = "a1b2c3d4-e5f6-4711-8899-aabbccddeeff";

/// A Tune delivery whose `advertiser_sub_ad` macro was left unfilled.
fn tune_query(publisher: &str) -> String {
    format!(
        "advertiser_sub_publisher={publisher}&advertiser_sub_campaign=Spring%20Launch\
         &advertiser_sub_adgroup=Tier1&advertiser_sub_ad=%7Badvertiser_sub_ad%7D\
         &ios_ifa={IDFA}&conversion_timestamp=1714665600&retry_attempts=0"
    )
}

impl TestApp {
    async fn dry_get(&self, partner: &str, query: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/postbacks/{partner}/test?{query}")))
            .header("x-api-key", &self.api_key)
            .send()
            .await
            .expect("request sent")
    }

    async fn dry_post(&self, partner: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/postbacks/{partner}/test")))
            .header("content-type", "application/json")
            .header("x-api-key", &self.api_key)
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    /// Everything a postback can leave behind, as one comparable value.
    async fn footprint(&self) -> Value {
        let connections = self
            .db
            .text_rows(
                "select partner, cast(installs as text), cast(events as text), \
                 cast(organic_ignored as text), cast(duplicates as text), \
                 cast(rejected as text), cast(rate_limited as text) \
                 from partner_connections order by partner",
            )
            .await;
        json!({
            "events": self.count("select count(*) from postback_events").await,
            "attributions": self.count("select count(*) from attributions").await,
            "connections": connections,
            "postbacks_metric": self.postbacks_metric().await,
        })
    }

    /// The lines of `postback_gateway_postbacks_total`.
    async fn postbacks_metric(&self) -> Vec<String> {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("postback_gateway_postbacks_total"))
            .map(str::to_owned)
            .collect()
    }
}

async fn dry_run_stores_and_counts_nothing_and_names_unfilled_macros(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // A real delivery first, so that counters and the quota have something to keep.
    assert_eq!(app.get_tune(&tune_query("Vungle")).await.status(), 200);
    // The writer commits organic and rejected counts with the next batch: wait for it.
    crate::helpers::wait_until(
        std::time::Duration::from_secs(10),
        "the install is counted",
        || async { app.count("select count(*) from postback_events").await == 1 },
    )
    .await;
    let before = app.footprint().await;

    let answer = json_body(
        app.dry_get("tune", &tune_query("ironSource")).await,
        200,
        "dry run",
    )
    .await;
    assert_eq!(answer["verdict"], "accepted", "{answer}");
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["reason"], "attributed install");
    assert_eq!(
        answer["would_store"],
        json!({
            "kind": "install", "event_name": null, "source": "ironSource",
            "campaign": "Spring Launch", "adgroup": "Tier1", "ad": null,
            "identifiers": {"user_id": null, "idfa": IDFA.to_uppercase(), "idfv": null,
                            "google_aid": null, "android_id": null, "partner_device_id": null},
            "event_time": "2024-05-02T16:00:00Z",
        })
    );
    let warnings = answer["warnings"].as_array().unwrap();
    let unfilled: Vec<&Value> = warnings
        .iter()
        .filter(|w| w["code"] == "unfilled_macro")
        .collect();
    assert_eq!(unfilled.len(), 1, "{answer}");
    assert_eq!(unfilled[0]["key"], "advertiser_sub_ad");
    assert!(unfilled[0]["message"]
        .as_str()
        .unwrap()
        .contains("{advertiser_sub_ad}"));
    assert!(
        warnings.iter().any(|w| w["code"] == "missing_dimension"
            && w["message"].as_str().unwrap().starts_with("ad is missing")),
        "{answer}"
    );
    assert!(
        warnings.iter().any(|w| w["code"] == "event_time"
            && w["message"].as_str().unwrap().contains("as unix seconds")),
        "{answer}"
    );

    // Organic, invalid and unreadable JSON: answered, and still nothing counted.
    let organic = json_body(
        app.dry_post(
            "kochava",
            r#"{"network_name":"Organic","idfa":"A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"}"#,
        )
        .await,
        200,
        "organic",
    )
    .await;
    assert_eq!(organic["verdict"], "organic");
    assert_eq!(organic["reason"], r#"organic: network_name is "Organic""#);
    assert_eq!(organic["would_store"], Value::Null);
    let invalid = json_body(
        app.dry_post("kochava", r#"{"network_name":"Liftoff"}"#)
            .await,
        200,
        "no identifier",
    )
    .await;
    assert_eq!(
        (&invalid["verdict"], &invalid["status"], &invalid["reason"]),
        (
            &json!("invalid"),
            &json!(400),
            &json!("no device or user identifier present")
        )
    );
    let broken = json_body(app.dry_post("kochava", "{not json").await, 200, "bad json").await;
    assert_eq!(broken["verdict"], "invalid");
    assert!(broken["reason"]
        .as_str()
        .unwrap()
        .starts_with("body is not valid JSON"));
    // The key may also travel in the query, as for the real endpoint.
    let resp = app
        .client
        .get(app.url(&format!(
            "/v1/postbacks/adjust/test?network_name=Moloco&adid=abc&api_key={}",
            app.api_key
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_body(resp, 200, "key in query").await["verdict"],
        "accepted"
    );

    // A real postback is committed with the next batch; give the writer a batch so
    // anything the dry runs had queued would be committed too.
    assert_eq!(
        app.post_kochava(&json!({"network_name":"organic"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_kochava(
            &json!({"network_name":"Liftoff","idfa":"B1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"})
        )
        .await
        .status(),
        200
    );
    let after = app.footprint().await;
    // Exactly what the real postbacks stored: the Tune install, then one Kochava
    // install (the organic one stores nothing); none of the dry runs.
    assert_eq!(before["events"], 1, "{before}");
    assert_eq!(after["events"], 2, "{after}");
    assert_eq!(after["attributions"], 2, "{after}");
    let tune_row = |f: &Value| {
        f["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == "tune")
            .cloned()
    };
    assert_eq!(
        tune_row(&after),
        tune_row(&before),
        "tune counters unchanged"
    );
    assert!(
        !after["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r[0] == "adjust"),
        "a dry run creates no connection row: {after}"
    );
    let metric = |f: &Value, partner: &str| -> Vec<String> {
        f["postbacks_metric"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .filter(|l| l.contains(&format!("partner=\"{partner}\"")))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(metric(&after, "tune"), metric(&before, "tune"));
    assert!(metric(&after, "adjust").is_empty(), "{after}");
    app.stop().await;
}

async fn dry_run_uses_no_quota_and_works_when_it_is_used_up(backend: Backend) {
    let tc = TestConfig {
        standard_per_hour: 1,
        requests_per_hour: 3,
        ..Default::default()
    };
    let Some(app) = TestApp::spawn_with(backend, tc).await else {
        return;
    };
    // Many dry runs: none uses the request limit (3) or the install quota (1).
    for i in 0..6 {
        let answer = json_body(
            app.dry_get("tune", &tune_query(&format!("net{i}"))).await,
            200,
            "dry run",
        )
        .await;
        assert_eq!(
            (&answer["verdict"], &answer["status"]),
            (&json!("accepted"), &json!(200)),
            "{answer}"
        );
    }
    assert_eq!(app.count("select count(*) from quota_usage").await, 0);
    // So the real endpoint still has its whole quota: one install…
    let resp = app.get_tune(&tune_query("first")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    // …and then the quota is used up: the dry run still answers, and says so.
    let answer = json_body(
        app.dry_get(
            "tune",
            &tune_query("second").replace(IDFA, "B1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"),
        )
        .await,
        200,
        "dry run over the quota",
    )
    .await;
    assert_eq!(answer["verdict"], "accepted");
    assert_eq!(answer["status"], 429, "{answer}");
    assert!(
        answer["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "quota_used_up"),
        "{answer}"
    );
    let real = app
        .get_tune(&tune_query("second").replace(IDFA, "B1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"))
        .await;
    assert_error(real, 429, "rate_limited", "the real endpoint agrees").await;
    app.stop().await;
}

async fn dry_run_recognises_a_duplicate_of_a_stored_delivery(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let query = tune_query("Vungle");
    let first = json_body(app.get_tune(&query).await, 200, "first").await;
    // Tune's retry_attempts changes on a retry and is not part of the dedupe key.
    let retry = query.replace("retry_attempts=0", "retry_attempts=2");
    let answer = json_body(app.dry_get("tune", &retry).await, 200, "dry run").await;
    assert_eq!(answer["verdict"], "duplicate", "{answer}");
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["duplicate_of"], first["event_id"]);
    assert!(
        answer["reason"].as_str().unwrap().contains("same payload"),
        "{answer}"
    );
    let real = json_body(app.get_tune(&retry).await, 200, "retry").await;
    assert_eq!(real["status"], "duplicate");
    assert_eq!(real["event_id"], first["event_id"]);
    // Branch dedupes by its own id.
    let branch = json!({"id": 77, "name": "INSTALL",
        "last_attributed_touch_data": {"~channel": "Facebook"},
        "user_data": {"idfa": IDFA}});
    let stored = json_body(
        app.post_json("branch", Some(&app.api_key), &branch).await,
        200,
        "branch",
    )
    .await;
    let mut again = branch.clone();
    again["last_attributed_touch_data"]["~campaign"] = json!("other");
    let answer = json_body(
        app.dry_post("branch", &again.to_string()).await,
        200,
        "branch dry run",
    )
    .await;
    assert_eq!(answer["verdict"], "duplicate");
    assert_eq!(answer["duplicate_of"], stored["event_id"]);
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("same Branch id"),
        "{answer}"
    );
    app.stop().await;
}

async fn dry_run_refuses_what_the_real_endpoint_refuses(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let url = |path: &str| app.url(path);
    let resp = app
        .client
        .get(url(
            "/v1/postbacks/tune/test?advertiser_sub_publisher=x&ios_ifa=y",
        ))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized", "no key").await;
    let resp = app
        .client
        .get(url(
            "/v1/postbacks/tune/test?advertiser_sub_publisher=x&api_key=pbgk_nope",
        ))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized", "unknown key").await;
    let resp = app
        .client
        .post(url("/v1/postbacks/adjust/test"))
        .header("x-api-key", &app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "GET");
    assert_error(resp, 405, "method_not_allowed", "adjust takes GET").await;
    let resp = app
        .client
        .delete(url("/v1/postbacks/kochava/test"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    assert_error(resp, 405, "method_not_allowed", "DELETE").await;
    let resp = app
        .client
        .get(url("/v1/postbacks/facebook/test"))
        .header("x-api-key", &app.api_key)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "unknown_partner", "unknown partner").await;
    let resp = app
        .client
        .post(url("/v1/postbacks/kochava/test"))
        .header("x-api-key", &app.api_key)
        .body(vec![b' '; 70_000])
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "payload_too_large", "big body").await;
    app.stop().await;
}

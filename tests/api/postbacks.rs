//! `/v1/postbacks/{partner}`: every verdict and error status, with its database effect.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{assert_error, json_body, Backend, TestApp};

fn kochava_install() -> Value {
    json!({
        "event_name": "_install",
        "network_name": "Liftoff",
        "campaign_name": "KO_iOS_US_Launch",
        "site_id": "pub_88412",
        "creative_id": "{creative_id}",
        "kochava_device_id": "KA4B8E2F1C07D24E3A9B6C1D0E8F7A6B5C4",
        "idfa": "4E5F6A7B-8C9D-4E0F-A1B2-C3D4E5F6A7B8"
    })
}

const TUNE_INSTALL: &str =
    "advertiser_sub_publisher=Vungle%20Inc.&advertiser_sub_campaign=Summer+Sale+%26+Deals\
&advertiser_sub_adgroup=%7Badvertiser_sub_adgroup%7D&publisher_id=11902\
&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF&event_name=Install";

both_backends!(
    kochava_attributed_install_is_accepted_stored_and_connects_the_partner,
    tune_get_install_is_decoded_once_and_stored,
    tune_form_post_is_accepted,
    partner_retry_answers_duplicate_with_the_first_event_id,
    tune_retry_attempts_do_not_defeat_dedupe,
    organic_install_is_ignored_not_stored_and_does_not_connect,
    first_install_of_a_user_wins_the_attribution,
    in_app_event_is_stored_without_attribution,
    malformed_and_unidentifiable_postbacks_get_400_and_count_as_rejected,
    missing_and_unknown_keys_get_the_same_401,
    api_key_is_accepted_from_header_query_and_body_and_never_stored,
    unknown_partner_is_404_and_wrong_method_is_405,
    body_over_64_kib_is_413,
    concurrent_postbacks_are_each_answered_with_their_own_verdict,
);

async fn kochava_attributed_install_is_accepted_stored_and_connects_the_partner(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let conns = app.store.partner_connections(app.app_id).await.unwrap();
    assert!(conns.is_empty(), "no partner connected before any postback");

    let resp = app.post_kochava(&kochava_install()).await;
    let body = json_body(resp, 200, "kochava install").await;
    assert_eq!(body["status"], "accepted");
    let event_id = body["event_id"].as_str().expect("event_id").to_owned();

    let row = |col: &str| {
        format!("select {col} from postback_events where cast(id as text) = '{event_id}'")
    };
    assert_eq!(app.text(&row("source")).await.as_deref(), Some("Liftoff"));
    assert_eq!(
        app.text(&row("campaign")).await.as_deref(),
        Some("KO_iOS_US_Launch")
    );
    assert_eq!(
        app.text(&row("adgroup")).await.as_deref(),
        Some("pub_88412")
    );
    assert_eq!(app.text(&row("ad")).await, None, "unfilled macro is absent");
    assert_eq!(app.text(&row("kind")).await.as_deref(), Some("install"));
    assert_eq!(app.text(&row("partner")).await.as_deref(), Some("kochava"));
    assert_eq!(app.count("select count(*) from attributions").await, 1);

    let conns = app.store.partner_connections(app.app_id).await.unwrap();
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    assert_eq!(c.partner.as_str(), "kochava");
    assert_eq!(
        c.status,
        postback_gateway::domain::ConnectionStatus::Connected
    );
    assert!(c.last_success_at.is_some());
    assert_eq!((c.installs, c.events, c.duplicates), (1, 0, 0));
    app.stop().await;
}

async fn tune_get_install_is_decoded_once_and_stored(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = json_body(app.get_tune(TUNE_INSTALL).await, 200, "tune GET").await;
    assert_eq!(body["status"], "accepted");
    let id = body["event_id"].as_str().unwrap();
    let row =
        |col: &str| format!("select {col} from postback_events where cast(id as text) = '{id}'");
    assert_eq!(
        app.text(&row("source")).await.as_deref(),
        Some("Vungle Inc.")
    );
    assert_eq!(
        app.text(&row("campaign")).await.as_deref(),
        Some("Summer Sale & Deals")
    );
    assert_eq!(app.text(&row("adgroup")).await, None);
    assert_eq!(
        app.text(&row("idfa")).await.as_deref(),
        Some("A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF")
    );
    assert_eq!(app.text(&row("partner")).await.as_deref(), Some("tune"));
    app.stop().await;
}

async fn tune_form_post_is_accepted(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let resp = app
        .client
        .post(app.url("/v1/postbacks/tune"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-api-key", &app.api_key)
        .body(TUNE_INSTALL)
        .send()
        .await
        .unwrap();
    let body = json_body(resp, 200, "tune form POST").await;
    assert_eq!(body["status"], "accepted");
    assert_eq!(
        app.count("select count(*) from postback_events where source = 'Vungle Inc.'")
            .await,
        1
    );
    app.stop().await;
}

async fn partner_retry_answers_duplicate_with_the_first_event_id(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let first = json_body(app.post_kochava(&kochava_install()).await, 200, "first").await;
    // Kochava retries the same delivery; key order and whitespace may differ.
    let retry = r#"{ "idfa":"4E5F6A7B-8C9D-4E0F-A1B2-C3D4E5F6A7B8", "kochava_device_id":"KA4B8E2F1C07D24E3A9B6C1D0E8F7A6B5C4",
        "creative_id":"{creative_id}", "site_id":"pub_88412", "campaign_name":"KO_iOS_US_Launch",
        "network_name":"Liftoff", "event_name":"_install" }"#;
    for attempt in 0..3 {
        let resp = app
            .client
            .post(app.url("/v1/postbacks/kochava"))
            .header("x-api-key", &app.api_key)
            .body(retry)
            .send()
            .await
            .unwrap();
        let body = json_body(resp, 200, &format!("retry {attempt}")).await;
        assert_eq!(body["status"], "duplicate", "retry {attempt}");
        assert_eq!(
            body["event_id"], first["event_id"],
            "retry {attempt} names the first event"
        );
    }
    assert_eq!(app.count("select count(*) from postback_events").await, 1);
    let c = &app.store.partner_connections(app.app_id).await.unwrap()[0];
    assert_eq!((c.installs, c.duplicates), (1, 3));
    app.stop().await;
}

async fn tune_retry_attempts_do_not_defeat_dedupe(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let first = json_body(
        app.get_tune(&format!("{TUNE_INSTALL}&retry_attempts=0"))
            .await,
        200,
        "first",
    )
    .await;
    let retry = json_body(
        app.get_tune(&format!("{TUNE_INSTALL}&retry_attempts=1"))
            .await,
        200,
        "retry",
    )
    .await;
    assert_eq!(first["status"], "accepted");
    assert_eq!(retry["status"], "duplicate");
    assert_eq!(retry["event_id"], first["event_id"]);
    // A different delivery (another device) is not a duplicate.
    let other = TUNE_INSTALL.replace("A1B2C3D4", "FFFFFFFF");
    let third = json_body(
        app.get_tune(&format!("{other}&retry_attempts=0")).await,
        200,
        "other",
    )
    .await;
    assert_eq!(third["status"], "accepted");
    assert_eq!(app.count("select count(*) from postback_events").await, 2);
    app.stop().await;
}

async fn organic_install_is_ignored_not_stored_and_does_not_connect(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let cases = [
        (
            "kochava organic marker",
            json!({"event_name":"_install","network_name":"Organic","idfa":"4E5F6A7B-8C9D-4E0F-A1B2-C3D4E5F6A7B8"}),
        ),
        (
            "kochava unattributed",
            json!({"network_name":"unattributed","campaign_name":"x","idfa":"4E5F6A7B-8C9D-4E0F-A1B2-C3D4E5F6A7B8"}),
        ),
        (
            "kochava nothing to credit",
            json!({"event_name":"_install","campaign_name":"{campaign}","idfa":"4E5F6A7B-8C9D-4E0F-A1B2-C3D4E5F6A7B8"}),
        ),
    ];
    for (case, body) in cases {
        let body = json_body(app.post_kochava(&body).await, 200, case).await;
        assert_eq!(
            body,
            json!({"status":"ignored","reason":"organic"}),
            "{case}"
        );
    }
    let body = json_body(app.get_tune("publisher_name=organic&advertiser_sub_publisher=x&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF").await, 200, "tune organic").await;
    assert_eq!(body["status"], "ignored");

    assert_eq!(app.count("select count(*) from postback_events").await, 0);
    assert_eq!(app.count("select count(*) from attributions").await, 0);
    let app_id = app.app_id;
    let store = app.store.clone();
    crate::helpers::wait_until(
        std::time::Duration::from_secs(5),
        "organic counters committed",
        || {
            let store = store.clone();
            async move {
                let conns = store.partner_connections(app_id).await.unwrap();
                conns.iter().map(|c| c.organic_ignored).sum::<i64>() == 4
            }
        },
    )
    .await;
    for c in app.store.partner_connections(app.app_id).await.unwrap() {
        assert_eq!(
            c.status,
            postback_gateway::domain::ConnectionStatus::NotConnected,
            "{:?}",
            c.partner
        );
        assert!(c.last_success_at.is_none());
    }
    app.stop().await;
}

async fn first_install_of_a_user_wins_the_attribution(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let first = json!({"network_name":"Liftoff","campaign_name":"first","idfa":"AAAAAAAA-0000-4000-8000-000000000001"});
    let again = json!({"network_name":"AppLovin","campaign_name":"second","idfa":"AAAAAAAA-0000-4000-8000-000000000001","idfv":"new-idfv"});
    let other_user = json!({"network_name":"AppLovin","campaign_name":"other","idfa":"BBBBBBBB-0000-4000-8000-000000000002"});
    for (case, body) in [
        ("first", first),
        ("same user again", again),
        ("other user", other_user),
    ] {
        let body = json_body(app.post_kochava(&body).await, 200, case).await;
        assert_eq!(body["status"], "accepted", "{case}");
    }
    assert_eq!(
        app.count("select count(*) from postback_events").await,
        3,
        "every install is kept"
    );
    assert_eq!(
        app.count("select count(*) from attributions").await,
        2,
        "one attribution per user"
    );
    assert_eq!(
        app.text(
            "select campaign from attributions where idfa = 'AAAAAAAA-0000-4000-8000-000000000001'"
        )
        .await
        .as_deref(),
        Some("first")
    );
    app.stop().await;
}

async fn in_app_event_is_stored_without_attribution(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let event = json!({"event_name":"purchase","network_name":"Liftoff","campaign_name":"c","idfa":"CCCCCCCC-0000-4000-8000-000000000003"});
    let body = json_body(app.post_kochava(&event).await, 200, "event").await;
    assert_eq!(body["status"], "accepted");
    assert_eq!(
        app.text("select kind from postback_events")
            .await
            .as_deref(),
        Some("event")
    );
    assert_eq!(app.count("select count(*) from attributions").await, 0);
    let c = &app.store.partner_connections(app.app_id).await.unwrap()[0];
    assert_eq!((c.installs, c.events), (0, 1));
    assert_eq!(
        c.status,
        postback_gateway::domain::ConnectionStatus::NotConnected,
        "events do not connect"
    );
    app.stop().await;
}

async fn malformed_and_unidentifiable_postbacks_get_400_and_count_as_rejected(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let long = "x".repeat(257);
    let cases: Vec<(&str, String)> = vec![
        ("not JSON", "{not json".into()),
        ("JSON array", "[1,2]".into()),
        ("no partner field", r#"{"foo":"bar"}"#.into()),
        (
            "no identifier",
            r#"{"network_name":"Liftoff","campaign_name":"c"}"#.into(),
        ),
        (
            "over-long campaign",
            format!(
                r#"{{"network_name":"Liftoff","campaign_name":"{long}","idfa":"DDDDDDDD-0000-4000-8000-000000000004"}}"#
            ),
        ),
    ];
    for (case, body) in &cases {
        let resp = app
            .client
            .post(app.url("/v1/postbacks/kochava"))
            .header("x-api-key", &app.api_key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid_payload", case).await;
    }
    // Tune: no identifier at all.
    let resp = app.get_tune("advertiser_sub_publisher=Vungle").await;
    assert_error(resp, 400, "invalid_payload", "tune without identifier").await;

    assert_eq!(app.count("select count(*) from postback_events").await, 0);
    let app_id = app.app_id;
    let store = app.store.clone();
    crate::helpers::wait_until(
        std::time::Duration::from_secs(5),
        "rejected counters committed",
        || {
            let store = store.clone();
            async move {
                let conns = store.partner_connections(app_id).await.unwrap();
                conns.iter().map(|c| c.rejected).sum::<i64>() == 6
            }
        },
    )
    .await;
    app.stop().await;
}

async fn missing_and_unknown_keys_get_the_same_401(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let missing = app.post_json("kochava", None, &kochava_install()).await;
    let missing = assert_error(missing, 401, "unauthorized", "missing key").await;
    let unknown = app
        .post_json("kochava", Some("pbgk_not-a-real-key"), &kochava_install())
        .await;
    let unknown = assert_error(unknown, 401, "unauthorized", "unknown key").await;
    assert_eq!(
        missing, unknown,
        "missing and unknown keys are indistinguishable"
    );
    let tune = app.get_postback("tune", Some("wrong"), TUNE_INSTALL).await;
    assert_error(tune, 401, "unauthorized", "tune unknown key").await;
    assert_eq!(app.count("select count(*) from postback_events").await, 0);
    app.stop().await;
}

async fn api_key_is_accepted_from_header_query_and_body_and_never_stored(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let key = app.api_key.clone();
    let mut body = kochava_install();
    body["idfa"] = json!("EEEEEEEE-0000-4000-8000-000000000001");
    let header = app.post_json("kochava", Some(&key), &body).await;
    assert_eq!(json_body(header, 200, "header").await["status"], "accepted");

    body["idfa"] = json!("EEEEEEEE-0000-4000-8000-000000000002");
    let query = app
        .client
        .post(app.url(&format!("/v1/postbacks/kochava?api_key={key}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(query, 200, "query").await["status"], "accepted");

    body["idfa"] = json!("EEEEEEEE-0000-4000-8000-000000000003");
    body["api_key"] = json!(key);
    let in_body = app.post_json("kochava", None, &body).await;
    assert_eq!(json_body(in_body, 200, "body").await["status"], "accepted");

    let tune = app.get_tune(TUNE_INSTALL).await;
    assert_eq!(
        json_body(tune, 200, "tune query").await["status"],
        "accepted"
    );

    assert_eq!(app.count("select count(*) from postback_events").await, 4);
    let leaked = app
        .count(&format!("select count(*) from postback_events where cast(raw_payload as text) like '%{key}%' or cast(raw_payload as text) like '%api_key%'"))
        .await;
    assert_eq!(leaked, 0, "the API key is never stored in the raw payload");
    app.stop().await;
}

async fn unknown_partner_is_404_and_wrong_method_is_405(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let resp = app
        .post_json("facebook", Some(&app.api_key), &kochava_install())
        .await;
    assert_error(resp, 404, "unknown_partner", "unknown partner").await;
    let resp = app
        .post_json("Kochava", Some(&app.api_key), &kochava_install())
        .await;
    assert_error(resp, 404, "unknown_partner", "partner ids are lowercase").await;

    let resp = app
        .get_postback("kochava", Some(&app.api_key.clone()), "idfa=x")
        .await;
    let allow = resp
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_error(resp, 405, "method_not_allowed", "GET kochava").await;
    assert_eq!(allow.as_deref(), Some("POST"));
    let resp = app
        .client
        .put(app.url("/v1/postbacks/tune"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 405, "method_not_allowed", "PUT tune").await;
    let resp = app
        .client
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "not_found", "unknown route").await;
    app.stop().await;
}

async fn body_over_64_kib_is_413(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut body = kochava_install();
    body["padding"] = json!("x".repeat(70 * 1024));
    let resp = app.post_kochava(&body).await;
    assert_error(resp, 413, "payload_too_large", "70 KiB body").await;
    // Just under the limit is fine (unmapped fields may be long).
    body["padding"] = json!("x".repeat(60 * 1024));
    let resp = app.post_kochava(&body).await;
    assert_eq!(
        json_body(resp, 200, "60 KiB body").await["status"],
        "accepted"
    );
    app.stop().await;
}

async fn concurrent_postbacks_are_each_answered_with_their_own_verdict(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, key) = app
        .create_app("busy", postback_gateway::domain::Tier::Enterprise)
        .await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let client = app.client.clone();
        let url = app.url("/v1/postbacks/kochava");
        let key = key.clone();
        // Every 4th request repeats the delivery before it: same batch or the next.
        let n = if i % 4 == 3 { i - 1 } else { i };
        tasks.push(tokio::spawn(async move {
            let body = json!({"network_name":"Liftoff","campaign_name":"c","idfa":format!("00000000-0000-4000-8000-{n:012}"), "seq": n});
            let resp = client.post(url).header("x-api-key", key).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let v: Value = resp.json().await.unwrap();
            (n, v["status"].as_str().unwrap().to_owned(), v["event_id"].as_str().unwrap().to_owned())
        }));
    }
    let mut by_delivery: std::collections::HashMap<u32, Vec<(String, String)>> = Default::default();
    for t in tasks {
        let (n, status, id) = t.await.unwrap();
        by_delivery.entry(n).or_default().push((status, id));
    }
    for (n, answers) in &by_delivery {
        let accepted = answers.iter().filter(|(s, _)| s == "accepted").count();
        assert_eq!(
            accepted, 1,
            "delivery {n}: exactly one accepted among {answers:?}"
        );
        let ids: std::collections::HashSet<_> = answers.iter().map(|(_, id)| id).collect();
        assert_eq!(ids.len(), 1, "delivery {n}: duplicates name the first id");
    }
    assert_eq!(
        app.count("select count(*) from postback_events").await,
        by_delivery.len() as i64
    );
    app.stop().await;
}

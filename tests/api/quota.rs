//! The hourly limits of `standard` apps and their headers: the install quota (only
//! a delivery stored as a new install uses it) and the request limit.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{assert_error, json_body, Backend, TestApp, TestConfig};
use postback_gateway::domain::Tier;

both_backends!(
    standard_app_gets_429_on_the_101st_attributed_install_of_the_hour,
    the_request_limit_protects_the_server_and_says_so,
    enterprise_app_is_not_limited,
    the_hour_count_survives_a_restart,
    a_tier_change_keeps_the_hours_installs,
);

fn install(n: u32) -> Value {
    json!({"network_name": "Liftoff", "idfa": format!("00000000-0000-4000-8000-{n:012}")})
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn the_hour_count_survives_a_restart(backend: Backend) {
    let tc = TestConfig {
        standard_per_hour: 5,
        ..Default::default()
    };
    let Some(app) = TestApp::spawn_with(backend, tc).await else {
        return;
    };
    let mut reset_before = String::new();
    for i in 0..3u32 {
        let resp = app.post_kochava(&install(i)).await;
        reset_before = header(&resp, "x-ratelimit-reset").unwrap();
        assert_eq!(resp.status(), 200);
    }
    let app = app.restart().await;
    let resp = app.post_kochava(&json!({"network_name":"organic"})).await;
    if header(&resp, "x-ratelimit-reset").unwrap() != reset_before {
        eprintln!("the clock hour turned during the test; nothing to compare");
        return app.stop().await;
    }
    assert_eq!(
        header(&resp, "x-ratelimit-remaining").as_deref(),
        Some("2"),
        "3 of 5 installs were stored before the restart"
    );
    for i in 3..5u32 {
        assert_eq!(app.post_kochava(&install(i)).await.status(), 200);
    }
    let resp = app.post_kochava(&install(5)).await;
    assert_error(resp, 429, "rate_limited", "6th install across a restart").await;
    app.stop().await;
}

async fn standard_app_gets_429_on_the_101st_attributed_install_of_the_hour(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Organic, invalid, redelivered and in-app postbacks use none of the quota.
    for i in 0..100u32 {
        let resp = app.post_kochava(&install(i)).await;
        assert_eq!(resp.status(), 200, "install {i}");
        assert_eq!(header(&resp, "x-ratelimit-limit").as_deref(), Some("100"));
        assert_eq!(
            header(&resp, "x-ratelimit-remaining"),
            Some((99 - i).to_string()),
            "install {i}"
        );
        let reset: i64 = header(&resp, "x-ratelimit-reset").unwrap().parse().unwrap();
        assert_eq!(reset % 3600, 0, "reset is the end of the clock hour");
        let others = [
            (json!({"network_name":"organic","idfa":"x"}), 200),
            (json!({"network_name":"Liftoff"}), 400),
            (install(i), 200),
            (
                json!({"network_name":"Liftoff","event_name":"purchase",
                       "idfa": format!("00000000-0000-4000-8000-{i:012}")}),
                200,
            ),
        ];
        let (body, status) = &others[i as usize % others.len()];
        let resp = app.post_kochava(body).await;
        assert_eq!(resp.status(), *status, "{body}");
        assert_eq!(
            header(&resp, "x-ratelimit-remaining"),
            Some((99 - i).to_string()),
            "{body} uses no quota"
        );
    }
    let resp = app.post_kochava(&install(100)).await;
    let retry_after: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=3600).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(header(&resp, "x-ratelimit-remaining").as_deref(), Some("0"));
    let body = assert_error(resp, 429, "rate_limited", "101st install").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100 attributed installs"),
        "{body}"
    );
    assert_eq!(
        app.count("select count(*) from postback_events where idfa = '00000000-0000-4000-8000-000000000100'").await,
        0,
        "a rate-limited install is not stored"
    );
    // Once the quota is used up, everything that stores no new install still works.
    let organic = app.post_kochava(&json!({"network_name":"organic"})).await;
    assert_eq!(
        json_body(organic, 200, "organic").await["status"],
        "ignored"
    );
    let again = app.post_kochava(&install(7)).await;
    assert_eq!(
        json_body(again, 200, "redelivery").await["status"],
        "duplicate"
    );
    let event = app
        .post_kochava(&json!({"network_name":"Liftoff","event_name":"purchase",
                              "idfa":"00000000-0000-4000-8000-000000000007","x":"late"}))
        .await;
    assert_eq!(json_body(event, 200, "event").await["status"], "accepted");

    let partners = app
        .admin_get(&format!("/v1/apps/{}/partners", app.app_id))
        .await;
    let partners = json_body(partners, 200, "partners").await;
    let kochava = partners["partners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["partner"] == "kochava")
        .unwrap();
    assert_eq!(kochava["counters"]["rate_limited"], 1, "{kochava}");
    assert_eq!(kochava["counters"]["installs"], 100);

    // Another app has its own quota.
    let (_, other_key) = app.create_app("other", Tier::Standard).await;
    let resp = app
        .post_json("kochava", Some(&other_key), &install(100))
        .await;
    assert_eq!(
        json_body(resp, 200, "other app").await["status"],
        "accepted"
    );
    app.stop().await;
}

async fn the_request_limit_protects_the_server_and_says_so(backend: Backend) {
    let tc = TestConfig {
        requests_per_hour: 3,
        ..Default::default()
    };
    let Some(app) = TestApp::spawn_with(backend, tc).await else {
        return;
    };
    for _ in 0..3 {
        let resp = app.post_kochava(&json!({"network_name":"organic"})).await;
        assert_eq!(resp.status(), 200);
    }
    let resp = app.post_kochava(&install(1)).await;
    assert!(header(&resp, "retry-after").is_some());
    let body = assert_error(resp, 429, "rate_limited", "4th request").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request limit"),
        "names the limit that was hit: {body}"
    );
    app.stop().await;
}

async fn enterprise_app_is_not_limited(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        TestConfig {
            standard_per_hour: 2,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let (_, key) = app.create_app("big", Tier::Enterprise).await;
    for i in 0..10u32 {
        let resp = app.post_json("kochava", Some(&key), &install(i)).await;
        assert!(
            resp.headers().get("x-ratelimit-limit").is_none(),
            "no limit headers for enterprise"
        );
        assert_eq!(
            json_body(resp, 200, &format!("enterprise install {i}")).await["status"],
            "accepted"
        );
    }
    // Moving the app to standard applies the quota once the key table reloads.
    let (app_id, key2) = app.create_app("mover", Tier::Enterprise).await;
    postback_gateway::apps::set_tier(app.store.as_ref(), app_id, Tier::Standard)
        .await
        .unwrap();
    let client = app.client.clone();
    let url = app.url("/v1/postbacks/kochava");
    let n = std::sync::atomic::AtomicU32::new(1000);
    crate::helpers::wait_until(
        std::time::Duration::from_secs(5),
        "tier change applied",
        || {
            let (client, url, key2) = (client.clone(), url.clone(), key2.clone());
            let body = install(n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            async move {
                let resp = client
                    .post(url)
                    .header("x-api-key", key2)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                resp.status() == 429
            }
        },
    )
    .await;
    app.stop().await;
}

async fn a_tier_change_keeps_the_hours_installs(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        TestConfig {
            standard_per_hour: 2,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let (app_id, key) = app.create_app("big", Tier::Enterprise).await;
    for i in 0..3u32 {
        let resp = app.post_json("kochava", Some(&key), &install(i)).await;
        assert_eq!(resp.status(), 200);
    }
    let hour = chrono::Utc::now().timestamp() / 3600;
    postback_gateway::apps::set_tier(app.store.as_ref(), app_id, Tier::Standard)
        .await
        .unwrap();
    let usage = app
        .store
        .quota_usage(postback_gateway::quota::current_window(chrono::Utc::now()))
        .await
        .unwrap();
    if chrono::Utc::now().timestamp() / 3600 != hour {
        eprintln!("the clock hour turned during the test; nothing to compare");
        return app.stop().await;
    }
    let counted = usage
        .iter()
        .find(|u| u.app_id == app_id)
        .map(|u| u.installs);
    assert_eq!(counted, Some(3), "the installs stored as enterprise count");
    // Once the node has reloaded the tier, this hour grants nothing more.
    let n = std::sync::atomic::AtomicU32::new(100);
    crate::helpers::wait_until(
        std::time::Duration::from_secs(5),
        "tier change applied",
        || {
            let body = install(n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            let (app, key) = (&app, &key);
            async move { app.post_json("kochava", Some(key), &body).await.status() == 429 }
        },
    )
    .await;
    app.stop().await;
}

//! The hourly quota of `standard` apps and its headers.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{assert_error, json_body, Backend, TestApp};
use postback_gateway::domain::Tier;

both_backends!(
    standard_app_gets_429_on_the_101st_request_of_the_hour,
    enterprise_app_is_not_limited,
    the_hour_count_survives_a_restart,
);

async fn the_hour_count_survives_a_restart(backend: Backend) {
    let tc = crate::helpers::TestConfig {
        standard_per_hour: 5,
        ..Default::default()
    };
    let Some(app) = TestApp::spawn_with(backend, tc).await else {
        return;
    };
    let mut reset_before = String::new();
    for i in 0..3u32 {
        let body =
            json!({"network_name":"Liftoff","idfa":format!("00000000-0000-4000-8000-{i:012}")});
        let resp = app.post_kochava(&body).await;
        reset_before = resp.headers()["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(resp.status(), 200);
    }
    let app = app.restart().await;
    let resp = app.post_kochava(&json!({"network_name":"organic"})).await;
    let reset_after = resp.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .to_owned();
    let remaining = resp.headers()["x-ratelimit-remaining"]
        .to_str()
        .unwrap()
        .to_owned();
    if reset_after != reset_before {
        eprintln!("the clock hour turned during the test; nothing to compare");
        return app.stop().await;
    }
    assert_eq!(
        remaining, "1",
        "3 of 5 were used before the restart, this is the 4th"
    );
    assert_eq!(
        app.post_kochava(&json!({"network_name":"organic"}))
            .await
            .status(),
        200
    );
    let resp = app.post_kochava(&json!({"network_name":"organic"})).await;
    assert_error(resp, 429, "rate_limited", "6th request across a restart").await;
    app.stop().await;
}

async fn standard_app_gets_429_on_the_101st_request_of_the_hour(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Organic and invalid requests count too: mix them in.
    for i in 0..100u32 {
        let body = match i % 3 {
            0 => {
                json!({"network_name":"Liftoff","idfa":format!("00000000-0000-4000-8000-{i:012}")})
            }
            1 => json!({"network_name":"organic","idfa":"x"}),
            _ => json!({"network_name":"Liftoff"}),
        };
        let resp = app.post_kochava(&body).await;
        assert!(
            matches!(resp.status().as_u16(), 200 | 400),
            "request {i}: {}",
            resp.status()
        );
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            h("x-ratelimit-limit").as_deref(),
            Some("100"),
            "request {i}"
        );
        assert_eq!(
            h("x-ratelimit-remaining"),
            Some((99 - i).to_string()),
            "request {i}"
        );
        let reset: i64 = h("x-ratelimit-reset").unwrap().parse().unwrap();
        assert_eq!(reset % 3600, 0, "reset is the end of the clock hour");
    }
    let resp = app
        .post_kochava(
            &json!({"network_name":"Liftoff","idfa":"ABCDEF00-0000-4000-8000-000000000000"}),
        )
        .await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=3600).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    assert_error(resp, 429, "rate_limited", "101st request").await;
    assert_eq!(
        app.count("select count(*) from postback_events where idfa = 'ABCDEF00-0000-4000-8000-000000000000'").await,
        0,
        "a rate-limited postback is not stored"
    );
    // Another app has its own quota.
    let (_, other_key) = app.create_app("other", Tier::Standard).await;
    let resp = app
        .post_json(
            "kochava",
            Some(&other_key),
            &json!({"network_name":"Liftoff","idfa":"ABCDEF00-0000-4000-8000-000000000001"}),
        )
        .await;
    assert_eq!(
        json_body(resp, 200, "other app").await["status"],
        "accepted"
    );
    app.stop().await;
}

async fn enterprise_app_is_not_limited(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        crate::helpers::TestConfig {
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
        let body =
            json!({"network_name":"Liftoff","idfa":format!("00000000-0000-4000-8000-{i:012}")});
        let resp = app.post_json("kochava", Some(&key), &body).await;
        assert!(
            resp.headers().get("x-ratelimit-limit").is_none(),
            "no limit headers for enterprise"
        );
        assert_eq!(
            json_body(resp, 200, &format!("enterprise request {i}")).await["status"],
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
    crate::helpers::wait_until(
        std::time::Duration::from_secs(5),
        "tier change applied",
        || {
            let (client, url, key2) = (client.clone(), url.clone(), key2.clone());
            async move {
                let resp = client
                    .post(url)
                    .header("x-api-key", key2)
                    .json(&json!({"network_name":"organic"}))
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

//! API key rotation with its grace period.

use serde_json::json;

use std::sync::Arc;

use crate::both_backends;
use crate::helpers::{json_body, wait_until, Backend, TestApp, TestConfig};
use postback_gateway::apps;

both_backends!(
    rotated_key_works_at_once_and_old_key_works_until_its_grace_ends,
    made_up_keys_reload_the_key_table_at_most_once_per_interval,
);

async fn rotated_key_works_at_once_and_old_key_works_until_its_grace_ends(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let old = app.api_key.clone();
    let install = |n: u32| json!({"network_name":"Liftoff","idfa":format!("00000000-0000-4000-8000-{n:012}")});

    let new = apps::rotate_key(app.store.as_ref(), app.app_id, 24)
        .await
        .unwrap();
    let resp = app
        .post_json("kochava", Some(new.expose()), &install(1))
        .await;
    assert_eq!(
        json_body(resp, 200, "new key at once").await["status"],
        "accepted"
    );
    let resp = app.post_json("kochava", Some(&old), &install(2)).await;
    assert_eq!(
        json_body(resp, 200, "old key within grace").await["status"],
        "accepted"
    );

    // A rotation with no grace ends every earlier key, the 24 h one included.
    let newest = apps::rotate_key(app.store.as_ref(), app.app_id, 0)
        .await
        .unwrap();
    let (client, url) = (app.client.clone(), app.url("/v1/postbacks/kochava"));
    for (what, key) in [
        ("first key", old.clone()),
        ("second key", new.expose().to_owned()),
    ] {
        wait_until(
            std::time::Duration::from_secs(5),
            &format!("{what} rejected after grace"),
            || {
                let (client, url, key) = (client.clone(), url.clone(), key.clone());
                async move {
                    let resp = client
                        .post(url)
                        .header("x-api-key", key)
                        .json(&install(3))
                        .send()
                        .await
                        .unwrap();
                    resp.status() == 401
                }
            },
        )
        .await;
    }
    let resp = app
        .post_json("kochava", Some(newest.expose()), &install(4))
        .await;
    assert_eq!(
        json_body(resp, 200, "newest key").await["status"],
        "accepted"
    );
    let listed = app.store.get_app(app.app_id).await.unwrap().unwrap();
    assert_eq!(listed.key_prefixes, vec![newest.display_prefix()]);
    app.stop().await;
}

impl TestApp {
    /// Key table reloads so far, by trigger (`periodic`, `unknown_key`).
    async fn key_reloads(&self, trigger: &str) -> u64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let label = format!("postback_gateway_key_reloads_total{{trigger=\"{trigger}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&label))
            .map_or(0, |n| n.trim().parse().unwrap())
    }
}

/// 3,000 requests with random `pbgk_` keys once caused 356 reloads of the whole key
/// table. Unknown keys now trigger at most one per `keys.miss_reload_interval_ms`
/// (a minute here, longer than the test), and the same unknown key none again.
async fn made_up_keys_reload_the_key_table_at_most_once_per_interval(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        TestConfig {
            key_refresh_ms: 600_000,
            key_miss_reload_interval_ms: 600_000,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let before = app.key_reloads("unknown_key").await;
    let app = Arc::new(app);
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..(3000 / 16 + 1) {
                    let key = format!("pbgk_{:064x}", rand_u128(w, i));
                    let resp = app
                        .get_postback("tune", Some(&key), "advertiser_sub_publisher=x")
                        .await;
                    assert_eq!(resp.status(), 401, "made-up key {key}");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let unknown = "pbgk_".to_owned() + &"ab".repeat(32);
    for _ in 0..50 {
        let resp = app
            .get_postback("tune", Some(&unknown), "advertiser_sub_publisher=x")
            .await;
        assert_eq!(resp.status(), 401);
    }
    let reloads = app.key_reloads("unknown_key").await - before;
    println!("3,058 unknown-key requests caused {reloads} key table reload(s)");
    assert!(reloads <= 1, "{reloads} reloads triggered by unknown keys");
    // Known keys are unaffected.
    let resp = app
        .get_tune("advertiser_sub_publisher=x&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF")
        .await;
    assert_eq!(
        json_body(resp, 200, "known key").await["status"],
        "accepted"
    );
    Arc::into_inner(app).expect("workers done").stop().await;
}

/// Distinct, well-spread numbers without a random number generator.
fn rand_u128(worker: u32, i: u32) -> u128 {
    let x = (u128::from(worker) << 32 | u128::from(i))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    x ^ (x >> 61)
}

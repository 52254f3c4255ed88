//! API key rotation with its grace period.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{json_body, wait_until, Backend, TestApp};
use postback_gateway::apps;

both_backends!(rotated_key_works_at_once_and_old_key_works_until_its_grace_ends);

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

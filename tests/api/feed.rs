//! The pull feed, `GET /v1/apps/{id}/attributions/feed`: every attribution exactly
//! once across pages while writers commit concurrently, a cursor on every page,
//! and 4xx answers naming what is wrong.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{assert_error, json_body, wait_until, Backend, TestApp, TestConfig};

both_backends!(
    feed_under_concurrent_writers_returns_every_attribution_exactly_once,
    feed_objects_are_the_users_objects_with_their_attribution_id,
    feed_gives_a_cursor_on_every_page_and_resumes_from_a_stored_one,
    feed_refuses_bad_cursors_and_limits_and_unknown_apps,
);

/// A Kochava install of a new user `n`.
fn install_body(n: usize) -> Value {
    json!({
        "network_name": "Liftoff", "campaign_name": "spring", "site_id": "g1", "creative_id": "a1",
        "idfa": format!("00000000-0000-4000-8000-{n:012}"), "identity_link": format!("user-{n}"),
    })
}

impl TestApp {
    fn feed_path(&self, query: &str) -> String {
        format!("/v1/apps/{}/attributions/feed{query}", self.app_id)
    }

    /// One page of the feed after `cursor` (from the start when `None`).
    async fn feed_page(&self, cursor: Option<&str>, limit: u32) -> Value {
        let after = cursor.map_or(String::new(), |c| format!("&after={c}"));
        let path = self.feed_path(&format!("?limit={limit}{after}"));
        json_body(self.admin_get(&path).await, 200, "feed page").await
    }
}

fn attributions(page: &Value) -> &Vec<Value> {
    page["attributions"].as_array().expect("attributions array")
}

fn cursor(page: &Value) -> String {
    page["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("next_cursor on every page: {page}"))
        .to_owned()
}

/// A consumer's state: the cursor it stores and the event ids it has read.
#[derive(Default)]
struct Consumer {
    cursor: Option<String>,
    seen: Vec<String>,
    pages: usize,
}

async fn feed_under_concurrent_writers_returns_every_attribution_exactly_once(backend: Backend) {
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 30;
    const TOTAL: usize = WRITERS * PER_WRITER;
    let tc = TestConfig {
        standard_per_hour: 10_000,
        ..TestConfig::default()
    };
    let Some(app) = TestApp::spawn_with(backend, tc).await else {
        return;
    };
    // Writers post installs of new users in parallel: their batches commit
    // concurrently (PostgreSQL: `writer.writers` transactions at a time).
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, key) = (app.client.clone(), app.api_key.clone());
            let url = app.url("/v1/postbacks/kochava");
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..PER_WRITER {
                    let resp = client
                        .post(&url)
                        .header("x-api-key", &key)
                        .json(&install_body(w * PER_WRITER + i))
                        .send()
                        .await
                        .expect("install sent");
                    let body = json_body(resp, 200, "install").await;
                    assert_eq!(body["status"], "accepted", "{body}");
                    ids.push(body["event_id"].as_str().unwrap().to_owned());
                }
                ids
            })
        })
        .collect();

    // Meanwhile a consumer pages through with a small limit, resuming each time
    // from the cursor of the page before, until it has read as many as are posted.
    let consumer = Mutex::new(Consumer::default());
    wait_until(
        Duration::from_secs(120),
        "the feed to deliver every install",
        || {
            let (consumer, app) = (&consumer, &app);
            async move {
                let after = consumer.lock().unwrap().cursor.clone();
                let page = app.feed_page(after.as_deref(), 7).await;
                let rows = attributions(&page);
                assert!(rows.len() <= 7, "a page holds at most limit");
                let mut c = consumer.lock().unwrap();
                c.seen.extend(
                    rows.iter()
                        .map(|r| r["event_id"].as_str().unwrap().to_owned()),
                );
                c.cursor = Some(cursor(&page));
                c.pages += 1;
                c.seen.len() >= TOTAL
            }
        },
    )
    .await;

    let mut posted = BTreeSet::new();
    for writer in writers {
        posted.extend(writer.await.expect("writer task"));
    }
    assert_eq!(posted.len(), TOTAL, "every install accepted once");
    let c = consumer.into_inner().unwrap();
    let read: BTreeSet<String> = c.seen.iter().cloned().collect();
    assert_eq!(read.len(), c.seen.len(), "no attribution read twice");
    assert_eq!(read, posted, "every attribution read, none missing");
    assert!(c.pages > TOTAL / 7, "read in pages of at most 7");
    let last = c.cursor;

    // The end: an empty page whose cursor is the one given.
    let page = app.feed_page(last.as_deref(), 7).await;
    assert_eq!(attributions(&page).len(), 0, "nothing after the last");
    assert_eq!(Some(cursor(&page)), last, "an empty page keeps the cursor");
    app.stop().await;
}

async fn feed_objects_are_the_users_objects_with_their_attribution_id(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let event_id = app.install(install_body(1)).await;
    let page = Mutex::new(json!(null));
    wait_until(Duration::from_secs(20), "the install in the feed", || {
        let (app, page) = (&app, &page);
        async move {
            let got = app.feed_page(None, 10).await;
            let found = !attributions(&got).is_empty();
            *page.lock().unwrap() = got;
            found
        }
    })
    .await;
    let page = page.into_inner().unwrap();
    let users = json_body(
        app.admin_get(&format!("/v1/apps/{}/users", app.app_id))
            .await,
        200,
        "users",
    )
    .await;
    let mut item = attributions(&page)[0].clone();
    assert_eq!(item["event_id"], event_id.as_str());
    let attribution_id = item
        .as_object_mut()
        .unwrap()
        .remove("attribution_id")
        .expect("attribution_id");
    assert!(
        uuid::Uuid::parse_str(attribution_id.as_str().unwrap()).is_ok(),
        "{attribution_id}"
    );
    assert_eq!(
        item, users["users"][0],
        "the rest is the users API's object"
    );
    assert_eq!(item["idfa"], "00000000-0000-4000-8000-000000000001");
    assert_eq!(item["user_id"], "user-1");
    assert_eq!(item["source"], "Liftoff");
    app.stop().await;
}

async fn feed_gives_a_cursor_on_every_page_and_resumes_from_a_stored_one(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // No attribution yet: an empty page, with a cursor to resume from later.
    let empty = app.feed_page(None, 10).await;
    assert_eq!(attributions(&empty).len(), 0);
    let stored = cursor(&empty);
    let from_empty = json_body(
        app.admin_get(&app.feed_path("?after=")).await,
        200,
        "empty after",
    )
    .await;
    assert_eq!(cursor(&from_empty), stored, "empty after: the start");

    let mut posted = Vec::new();
    for n in 0..5 {
        posted.push(app.install(install_body(n)).await);
    }
    // Resumed from the cursor of the empty page, in pages of 2: 2, 2, 1.
    let consumer = Mutex::new(Consumer {
        cursor: Some(stored.clone()),
        ..Consumer::default()
    });
    wait_until(Duration::from_secs(20), "five installs in the feed", || {
        let (app, consumer) = (&app, &consumer);
        async move {
            let after = consumer.lock().unwrap().cursor.clone();
            let page = app.feed_page(after.as_deref(), 2).await;
            let mut c = consumer.lock().unwrap();
            c.seen.extend(
                attributions(&page)
                    .iter()
                    .map(|r| r["event_id"].as_str().unwrap().to_owned()),
            );
            c.cursor = Some(cursor(&page));
            c.seen.len() >= 5
        }
    })
    .await;
    let Consumer {
        seen: read,
        cursor: at,
        ..
    } = consumer.into_inner().unwrap();
    let at = at.unwrap();
    assert_eq!(read, posted, "in the order they were committed, once each");
    let end = app.feed_page(Some(&at), 2).await;
    assert_eq!(attributions(&end).len(), 0, "the last page is empty");
    assert_eq!(cursor(&end), at, "and keeps its cursor");

    // Later, from the stored cursor: only what came since.
    let later = app.install(install_body(9)).await;
    let page = Mutex::new(json!(null));
    wait_until(Duration::from_secs(20), "the later install", || {
        let (app, page, at) = (&app, &page, &at);
        async move {
            let got = app.feed_page(Some(at), 10).await;
            let found = !attributions(&got).is_empty();
            *page.lock().unwrap() = got;
            found
        }
    })
    .await;
    let page = page.into_inner().unwrap();
    let got: Vec<&str> = attributions(&page)
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [later.as_str()], "only the new one");
    app.stop().await;
}

async fn feed_refuses_bad_cursors_and_limits_and_unknown_apps(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let hex = "0a".repeat(16);
    let users_cursor = format!("1714665600123456.{hex}");
    let long = format!("{}-{hex}", "9".repeat(19));
    for (query, names) in [
        ("?after=garbage", "after"),
        (&format!("?after={users_cursor}") as &str, "after"),
        (&format!("?after={long}"), "after"),
        (&format!("?after=1-{}", hex.to_uppercase()), "after"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=1", "cursor"),
        ("?limit=1&limit=2", "limit"),
    ] {
        let body = assert_error(
            app.admin_get(&app.feed_path(query)).await,
            400,
            "bad_request",
            query,
        )
        .await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{query}: {message}");
    }
    let unknown = "/v1/apps/00000000-0000-4000-8000-000000000000/attributions/feed";
    assert_error(
        app.admin_get(unknown).await,
        404,
        "not_found",
        "unknown app",
    )
    .await;
    let anonymous = app
        .client
        .get(app.url(&app.feed_path("")))
        .send()
        .await
        .expect("sent");
    assert_error(anonymous, 401, "unauthorized", "no token").await;
    app.stop().await;
}

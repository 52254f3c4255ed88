//! The read API: admin auth, apps, partner status, users by segment with pagination,
//! lookup, summaries.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{assert_error, json_body, Backend, TestApp, TestConfig, ADMIN_TOKEN};

both_backends!(
    admin_routes_need_the_bearer_token_and_are_disabled_without_one,
    apps_and_partner_status_show_connection_and_paste_ready_urls,
    users_filter_on_every_segment_and_partner,
    users_pages_walk_every_row_once_and_reject_bad_input,
    lookup_finds_a_user_by_each_identifier,
    summary_counts_attributed_installs_by_dimension_and_window,
    values_the_database_cannot_hold_get_400s_naming_the_parameter,
    times_outside_the_stored_range_compare_alike_on_both_backends,
    unknown_query_parameters_get_a_400_naming_them,
    admin_answers_are_neither_cached_nor_sniffed,
    failed_admin_logins_are_throttled_per_client_address,
);

impl TestApp {
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request sent")
    }

    /// Store one attributed Kochava install and return its event id.
    pub async fn install(&self, fields: Value) -> String {
        let body = json_body(self.post_kochava(&fields).await, 200, "seed install").await;
        assert_eq!(body["status"], "accepted", "seed install {fields}");
        body["event_id"].as_str().unwrap().to_owned()
    }
}

fn user(n: u32, source: &str, campaign: &str, adgroup: &str, ad: &str) -> Value {
    json!({
        "network_name": source, "campaign_name": campaign, "site_id": adgroup, "creative_id": ad,
        "idfa": format!("00000000-0000-4000-8000-{n:012}"), "identity_link": format!("user-{n}"),
    })
}

async fn admin_routes_need_the_bearer_token_and_are_disabled_without_one(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.app_id;
    let routes = [
        "/v1/apps".to_owned(),
        format!("/v1/apps/{id}/partners"),
        format!("/v1/apps/{id}/users"),
        format!("/v1/apps/{id}/users/lookup?idfa=x"),
        format!("/v1/apps/{id}/summary?by=source"),
    ];
    for route in &routes {
        let resp = app.client.get(app.url(route)).send().await.unwrap();
        assert_error(resp, 401, "unauthorized", &format!("{route} without token")).await;
        let resp = app
            .client
            .get(app.url(route))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_error(resp, 401, "unauthorized", &format!("{route} wrong token")).await;
        let resp = app
            .client
            .get(app.url(route))
            .bearer_auth(&app.api_key)
            .send()
            .await
            .unwrap();
        assert_error(
            resp,
            401,
            "unauthorized",
            &format!("{route} with an app key"),
        )
        .await;
    }
    let resp = app
        .admin_get(&format!("/v1/apps/{}/partners", uuid::Uuid::now_v7()))
        .await;
    assert_error(resp, 404, "not_found", "unknown app").await;
    let resp = app.admin_get("/v1/apps/not-a-uuid/partners").await;
    assert_error(resp, 404, "not_found", "malformed app id").await;
    let resp = app.admin_get("/v1/apps/%FF/partners").await;
    assert_error(resp, 404, "not_found", "app id that is not UTF-8").await;
    let resp = app
        .admin_get(&format!("/v1/apps/{id}/users?source=a&source=b"))
        .await;
    assert_error(resp, 400, "bad_request", "a filter given twice").await;
    // Probes stay open.
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let resp = app.client.get(app.url(open)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{open} needs no token");
    }
    app.stop().await;

    let Some(app) = TestApp::spawn_with(
        backend,
        TestConfig {
            admin_token: None,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let resp = app
        .client
        .get(app.url("/v1/apps"))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 403, "forbidden", "no ADMIN_TOKEN configured").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ADMIN_TOKEN"));
    let resp = app
        .client
        .get(app.url(&format!("/apps/{}/attribution", app.app_id)))
        .basic_auth("x", Some(""))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "forbidden", "page disabled too").await;
    app.stop().await;
}

async fn apps_and_partner_status_show_connection_and_paste_ready_urls(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = json_body(app.admin_get("/v1/apps").await, 200, "apps").await;
    let apps = body["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["name"], "default");
    assert_eq!(apps[0]["tier"], "standard");
    assert!(
        !body.to_string().contains(&app.api_key[5..]),
        "never the key"
    );

    app.install(user(1, "Liftoff", "c", "g", "a")).await;
    let tune = app.get_tune("advertiser_sub_publisher=x&publisher_name=organic&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF").await;
    assert_eq!(tune.status(), 200);

    let body = json_body(
        app.admin_get(&format!("/v1/apps/{}/partners", app.app_id))
            .await,
        200,
        "partners",
    )
    .await;
    let partners = body["partners"].as_array().unwrap();
    let names: Vec<&str> = partners
        .iter()
        .map(|p| p["partner"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "kochava",
            "tune",
            "appsflyer",
            "adjust",
            "singular",
            "branch"
        ]
    );
    let kochava = &partners[0];
    assert_eq!(kochava["status"], "connected");
    assert!(kochava["last_success_at"].is_string());
    assert_eq!(kochava["counters"]["installs"], 1);
    assert_eq!(kochava["method"], "POST");
    assert_eq!(kochava["endpoint_url"], app.url("/v1/postbacks/kochava"));
    assert!(kochava["postback_url_template"].is_null());
    let tune = &partners[1];
    assert_eq!(tune["status"], "not_connected", "organic does not connect");
    assert!(tune["last_success_at"].is_null());
    let template = tune["postback_url_template"].as_str().unwrap();
    assert!(
        template.starts_with(&format!(
            "{}?api_key=YOUR_API_KEY&",
            app.url("/v1/postbacks/tune")
        )),
        "{template}"
    );
    assert!(template.contains("advertiser_sub_publisher={advertiser_sub_publisher}"));
    for p in &partners[2..] {
        assert_eq!(p["status"], "not_connected");
        assert_eq!(p["counters"]["installs"], 0);
    }
    app.stop().await;
}

async fn users_filter_on_every_segment_and_partner(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rows = [
        (1, "Liftoff", "spring", "g1", "a1"),
        (2, "Liftoff", "spring", "g2", "a2"),
        (3, "Liftoff", "summer", "g1", "a1"),
        (4, "AppLovin", "spring", "g1", "a1"),
    ];
    for (n, s, c, g, a) in rows {
        app.install(user(n, s, c, g, a)).await;
    }
    let tune = app
        .get_tune("advertiser_sub_publisher=Liftoff&advertiser_sub_campaign=spring&user_id=user-5")
        .await;
    assert_eq!(tune.status(), 200);
    let id = app.app_id;
    let cases: [(&str, &[&str]); 9] = [
        ("", &["user-5", "user-4", "user-3", "user-2", "user-1"]),
        ("source=Liftoff", &["user-5", "user-3", "user-2", "user-1"]),
        ("campaign=spring", &["user-5", "user-4", "user-2", "user-1"]),
        ("adgroup=g1", &["user-4", "user-3", "user-1"]),
        ("ad=a2", &["user-2"]),
        (
            "source=Liftoff&campaign=spring&adgroup=g1&ad=a1",
            &["user-1"],
        ),
        ("partner=tune", &["user-5"]),
        ("source=liftoff", &[]),
        ("source=Lift", &[]),
    ];
    for (query, expected) in cases {
        let body = json_body(
            app.admin_get(&format!("/v1/apps/{id}/users?{query}")).await,
            200,
            query,
        )
        .await;
        let got: Vec<&str> = body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap())
            .collect();
        assert_eq!(got, expected, "filter {query:?}");
        assert!(body["next_cursor"].is_null(), "{query}: one page");
    }
    let body = json_body(
        app.admin_get(&format!("/v1/apps/{id}/users?ad=a2")).await,
        200,
        "shape",
    )
    .await;
    let u = &body["users"][0];
    assert_eq!(u["source"], "Liftoff");
    assert_eq!(u["campaign"], "spring");
    assert_eq!(u["adgroup"], "g2");
    assert_eq!(u["partner"], "kochava");
    assert_eq!(u["idfa"], "00000000-0000-4000-8000-000000000002");
    assert!(u["attributed_at"].is_string() && u["event_id"].is_string());
    app.stop().await;
}

async fn users_pages_walk_every_row_once_and_reject_bad_input(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for n in 0..25 {
        app.install(user(n, "Liftoff", "c", "g", "a")).await;
    }
    let id = app.app_id;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let q = cursor
            .as_ref()
            .map_or(String::new(), |c| format!("&cursor={c}"));
        let body = json_body(
            app.admin_get(&format!("/v1/apps/{id}/users?limit=10{q}"))
                .await,
            200,
            "page",
        )
        .await;
        let users = body["users"].as_array().unwrap();
        pages.push(users.len());
        seen.extend(
            users
                .iter()
                .map(|u| u["user_id"].as_str().unwrap().to_owned()),
        );
        if pages.len() == 1 {
            // A newer install after the first page must not shift later pages.
            app.install(user(99, "Liftoff", "c", "g", "a")).await;
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, [10, 10, 5], "pages");
    let expected: Vec<String> = (0..25).rev().map(|n| format!("user-{n}")).collect();
    assert_eq!(seen, expected, "newest first, each once");

    // A cursor whose row has been deleted since still continues after it.
    let body = json_body(
        app.admin_get(&format!("/v1/apps/{id}/users?limit=3")).await,
        200,
        "first page",
    )
    .await;
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let last = body["users"][2]["user_id"].as_str().unwrap().to_owned();
    app.delete_attribution_of(&last).await;
    let body = json_body(
        app.admin_get(&format!("/v1/apps/{id}/users?limit=3&cursor={cursor}"))
            .await,
        200,
        "after delete",
    )
    .await;
    let next: Vec<&str> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        next,
        ["user-22", "user-21", "user-20"],
        "user-99, 24, 23 were the first page"
    );

    let body = json_body(
        app.admin_get(&format!("/v1/apps/{id}/users?source=none"))
            .await,
        200,
        "empty",
    )
    .await;
    assert_eq!(body, json!({"users": [], "next_cursor": null}));

    for (query, case) in [
        ("limit=0", "limit 0"),
        ("limit=1001", "limit over 1000"),
        ("limit=ten", "limit not a number"),
        ("limit=", "limit empty"),
        ("cursor=garbage", "bad cursor"),
        ("partner=facebook", "unknown partner"),
    ] {
        let resp = app.admin_get(&format!("/v1/apps/{id}/users?{query}")).await;
        assert_error(resp, 400, "bad_request", case).await;
    }
    let body = json_body(
        app.admin_get(&format!("/v1/apps/{id}/users?limit=1000"))
            .await,
        200,
        "limit 1000",
    )
    .await;
    assert_eq!(
        body["users"].as_array().unwrap().len(),
        25,
        "25 + user-99 - the deleted one"
    );
    app.stop().await;
}

impl TestApp {
    async fn delete_attribution_of(&self, user_id: &str) {
        let sql = format!("delete from attributions where user_id = '{user_id}'");
        match &self.db {
            crate::helpers::TestDb::Postgres { url, .. } => {
                let mut c = crate::helpers::pg_connect(url).await.unwrap();
                sqlx::query(&sql).execute(&mut c).await.unwrap();
            }
            crate::helpers::TestDb::Sqlite { url, .. } => {
                use sqlx::Connection;
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::query(&sql).execute(&mut c).await.unwrap();
            }
        }
    }
}

async fn lookup_finds_a_user_by_each_identifier(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.install(json!({"network_name":"Liftoff","campaign_name":"first","identity_link":"braze-1",
        "idfa":"AAAAAAAA-0000-4000-8000-000000000001","idfv":"IDFV-1","adid":"gaid-1","android_id":"andi-1",
        "kochava_device_id":"kd-1"}))
        .await;
    let id = app.app_id;
    for (param, value) in [
        ("user_id", "braze-1"),
        ("idfa", "AAAAAAAA-0000-4000-8000-000000000001"),
        ("idfv", "IDFV-1"),
        ("google_aid", "gaid-1"),
        ("android_id", "andi-1"),
        ("partner_device_id", "kd-1"),
    ] {
        let body = json_body(
            app.admin_get(&format!("/v1/apps/{id}/users/lookup?{param}={value}"))
                .await,
            200,
            param,
        )
        .await;
        assert_eq!(body["campaign"], "first", "{param}");
        assert_eq!(body["user_id"], "braze-1", "{param}");
    }
    let resp = app
        .admin_get(&format!("/v1/apps/{id}/users/lookup?idfa=nobody"))
        .await;
    assert_error(resp, 404, "not_found", "unknown user").await;
    let resp = app.admin_get(&format!("/v1/apps/{id}/users/lookup")).await;
    assert_error(resp, 400, "bad_request", "no identifier").await;
    let resp = app
        .admin_get(&format!("/v1/apps/{id}/users/lookup?idfa=a&idfv=b"))
        .await;
    assert_error(resp, 400, "bad_request", "two identifiers").await;
    app.stop().await;
}

async fn summary_counts_attributed_installs_by_dimension_and_window(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for (n, s, c) in [
        (1, "Liftoff", "spring"),
        (2, "Liftoff", "summer"),
        (3, "AppLovin", "spring"),
    ] {
        app.install(user(n, s, c, "g", "a")).await;
    }
    app.install(json!({"campaign_name":"spring","idfa":"00000000-0000-4000-8000-000000000004"}))
        .await;
    // The same user again (shared idfa) is not a second attributed install.
    app.install(json!({"network_name":"Liftoff","campaign_name":"winter","idfa":"00000000-0000-4000-8000-000000000001","seq":2})).await;
    let id = app.app_id;
    let body = json_body(
        app.admin_get(&format!("/v1/apps/{id}/summary?by=source"))
            .await,
        200,
        "by source",
    )
    .await;
    assert_eq!(body["by"], "source");
    assert_eq!(body["total"], 4);
    assert_eq!(
        body["rows"],
        json!([{"value":"Liftoff","installs":2},{"value":"AppLovin","installs":1},{"value":null,"installs":1}])
    );
    let body = json_body(
        app.admin_get(&format!("/v1/apps/{id}/summary?by=campaign"))
            .await,
        200,
        "by campaign",
    )
    .await;
    assert_eq!(body["rows"][0], json!({"value":"spring","installs":3}));
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let body = json_body(
        app.admin_get(&format!("/v1/apps/{id}/summary?by=ad&since={tomorrow}"))
            .await,
        200,
        "future window",
    )
    .await;
    assert_eq!(body["total"], 0);
    let body = json_body(
        app.admin_get(&format!(
            "/v1/apps/{id}/summary?by=adgroup&until={tomorrow}"
        ))
        .await,
        200,
        "until",
    )
    .await;
    assert_eq!(body["total"], 4);
    let body = json_body(
        app.admin_get(&format!(
            "/v1/apps/{id}/summary?by=source&since={tomorrow}&until=2024-01-01"
        ))
        .await,
        200,
        "since after until: an empty window",
    )
    .await;
    assert_eq!((&body["total"], &body["rows"]), (&json!(0), &json!([])));
    for (query, case) in [
        ("", "no by"),
        ("by=country", "bad by"),
        ("by=source&since=yesterday", "bad since"),
    ] {
        let resp = app
            .admin_get(&format!("/v1/apps/{id}/summary?{query}"))
            .await;
        assert_error(resp, 400, "bad_request", case).await;
    }
    app.stop().await;
}

/// A NUL (PostgreSQL text cannot hold one: error 22021 once gave a 500) and hand-made
/// cursors (one before 4713 BC gave error 22008, a 500).
async fn values_the_database_cannot_hold_get_400s_naming_the_parameter(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.install(user(1, "Liftoff", "c", "g", "a")).await;
    let id = app.app_id;
    let mut cases: Vec<(String, &str)> = Vec::new();
    for param in [
        "source", "campaign", "adgroup", "ad", "partner", "limit", "cursor",
    ] {
        cases.push((format!("users?{param}=a%00b"), param));
    }
    for param in [
        "user_id",
        "idfa",
        "idfv",
        "google_aid",
        "android_id",
        "partner_device_id",
    ] {
        cases.push((format!("users/lookup?{param}=%00"), param));
    }
    for param in ["by", "since", "until"] {
        cases.push((format!("summary?by=source&{param}=2024-01-01%00"), param));
    }
    for (query, param) in &cases {
        let resp = app.admin_get(&format!("/v1/apps/{id}/{query}")).await;
        let body = assert_error(resp, 400, "bad_request", query).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(param), "{query}: {message}");
    }

    let hex = uuid::Uuid::now_v7().simple().to_string();
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    for cursor in [
        format!("-210000000000000000.{hex}"),
        b64(&format!("-210000000000000000.{hex}")),
        format!("99999999999999999999.{hex}"),
        format!("1.{}", &hex[..31]),
        "%00".to_owned(),
    ] {
        let resp = app
            .admin_get(&format!("/v1/apps/{id}/users?cursor={cursor}"))
            .await;
        let body = assert_error(resp, 400, "bad_request", &cursor).await;
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cursor"));
    }
    // Well-formed hand-made cursors page from where they say.
    for (cursor, expected) in [
        (format!("0.{hex}"), 0),
        (format!("-9999999999999999.{hex}"), 0),
        (format!("9999999999999999.{hex}"), 1),
    ] {
        let body = json_body(
            app.admin_get(&format!("/v1/apps/{id}/users?cursor={cursor}"))
                .await,
            200,
            &cursor,
        )
        .await;
        assert_eq!(
            body["users"].as_array().unwrap().len(),
            expected,
            "{cursor}"
        );
    }
    app.stop().await;
}

/// SQLite compared times as text: `until=+10000-01-01` counted nothing there and
/// everything on PostgreSQL; a time zone pushing `since` past year 9999 matched every
/// row. Bounds outside years 1 to 9999 (UTC) are clamped to that range on both.
async fn times_outside_the_stored_range_compare_alike_on_both_backends(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.install(user(1, "Liftoff", "c", "g", "a")).await;
    let id = app.app_id;
    for (window, total) in [
        ("until=%2B10000-01-01", 1),
        ("until=9999-12-31T23:59:59-23:59", 1),
        ("since=9999-12-31T23:59:59-23:59", 0),
        ("since=%2B10000-01-01", 0),
        ("since=9999-12-31", 0),
        ("since=-5000-01-01", 1),
        ("since=0001-01-01T00:00:00%2B14:00", 1),
        ("since=-5000-01-01&until=0001-01-01", 0),
        ("since=1970-01-01&until=%2B200000-01-01", 1),
    ] {
        let body = json_body(
            app.admin_get(&format!("/v1/apps/{id}/summary?by=source&{window}"))
                .await,
            200,
            window,
        )
        .await;
        assert_eq!(body["total"], total, "{window}: {body}");
    }
    app.stop().await;
}

async fn unknown_query_parameters_get_a_400_naming_them(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.install(user(1, "Liftoff", "c", "g", "a")).await;
    let id = app.app_id;
    for (path, param) in [
        (format!("/v1/apps/{id}/users?campaing=x"), "campaing"),
        (
            format!("/v1/apps/{id}/users?source=Liftoff&Source=x"),
            "Source",
        ),
        (format!("/v1/apps/{id}/users/lookup?idfa=x&ifa=y"), "ifa"),
        (
            format!("/v1/apps/{id}/summary?by=source&from=2024-01-01"),
            "from",
        ),
        (format!("/v1/apps/{id}/partners?verbose=1"), "verbose"),
        ("/v1/apps?page=2".to_owned(), "page"),
    ] {
        let resp = app.admin_get(&path).await;
        let body = assert_error(resp, 400, "bad_request", &path).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("\"{param}\"")),
            "{path}: {message}"
        );
    }
    app.stop().await;
}

async fn admin_answers_are_neither_cached_nor_sniffed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.app_id;
    let answers = [
        (app.admin_get("/v1/apps").await, 200),
        (app.admin_get(&format!("/v1/apps/{id}/partners")).await, 200),
        (app.admin_get(&format!("/v1/apps/{id}/users")).await, 200),
        (
            app.admin_get(&format!("/v1/apps/{id}/users/lookup?idfa=x"))
                .await,
            404,
        ),
        (
            app.admin_get(&format!("/v1/apps/{id}/summary?by=source"))
                .await,
            200,
        ),
        (app.admin_get(&format!("/v1/apps/{id}/summary")).await, 400),
        (
            app.client.get(app.url("/v1/apps")).send().await.unwrap(),
            401,
        ),
    ];
    for (resp, status) in answers {
        let case = resp.url().path().to_owned();
        assert_eq!(resp.status(), status, "{case}");
        assert_eq!(resp.headers()["cache-control"], "no-store", "{case}");
        assert_eq!(
            resp.headers()["x-content-type-options"],
            "nosniff",
            "{case}"
        );
    }
    app.stop().await;
}

/// Guessing the admin token is throttled: past `http.failed_logins_per_minute` wrong
/// logins, that client address gets 429 (even with the right token) for the rest of
/// the minute; other addresses are not affected, and no credentials is no failure.
async fn failed_admin_logins_are_throttled_per_client_address(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        TestConfig {
            failed_logins_per_minute: 3,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(Some(ip.parse().unwrap()))
            .build()
            .unwrap()
    };
    let (guesser, colleague, browser) = (from("127.0.0.2"), from("127.0.0.3"), from("127.0.0.4"));
    let apps = app.url("/v1/apps");
    let page = app.url(&format!("/apps/{}/attribution", app.app_id));
    for n in 0..3 {
        let resp = guesser
            .get(&apps)
            .bearer_auth(format!("guess-{n}"))
            .send()
            .await
            .unwrap();
        assert_error(resp, 401, "unauthorized", &format!("guess {n}")).await;
    }
    for (case, request) in [
        ("another guess", guesser.get(&apps).bearer_auth("guess-4")),
        (
            "the right token",
            guesser.get(&apps).bearer_auth(ADMIN_TOKEN),
        ),
        (
            "the page",
            guesser.get(&page).basic_auth("x", Some(ADMIN_TOKEN)),
        ),
    ] {
        let resp = request.send().await.unwrap();
        let retry_after: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{case}: {retry_after}");
        assert_error(resp, 429, "rate_limited", case).await;
    }
    let resp = guesser.get(&apps).send().await.unwrap();
    assert_error(resp, 401, "unauthorized", "no credentials: asked to log in").await;
    let resp = colleague
        .get(&apps)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    json_body(resp, 200, "another address").await;
    // A browser's first request carries no credentials: not a failed login.
    for _ in 0..5 {
        let resp = browser.get(&page).send().await.unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = browser
        .get(&page)
        .basic_auth("x", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "no credentials is not a failure");
    app.stop().await;
}

//! Every partner end to end over HTTP: one attributed, one organic and one invalid
//! delivery each (from the shared real-shaped fixtures), Branch's own dedupe id, and
//! the real payload shapes of issue 10 (Singular `__START__`, TUNE publisher-only).

use crate::both_backends;
use crate::helpers::{assert_error, json_body, Backend, TestApp};

/// How a fixture travels: a raw query string (GET) or a JSON body (POST).
enum Payload {
    Query(&'static str),
    Json(&'static str),
}

macro_rules! fixture {
    ($partner:literal, $file:literal) => {{
        let text = include_str!(concat!("../fixtures/", $partner, "/", $file));
        if $file.ends_with(".json") {
            Payload::Json(text)
        } else {
            Payload::Query(text.trim())
        }
    }};
}

struct Case {
    partner: &'static str,
    attributed: Payload,
    /// (source, campaign, adgroup, ad) expected in postback_events.
    expected: [Option<&'static str>; 4],
    organic: Payload,
    invalid: Payload,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            partner: "kochava",
            attributed: fixture!("kochava", "docs_example.json"),
            expected: [
                Some("Liftoff"),
                Some("KO_iOS_US_Launch"),
                Some("pub_88412"),
                None,
            ],
            organic: fixture!("kochava", "organic.json"),
            invalid: fixture!("kochava", "no_identifier.json"),
        },
        Case {
            partner: "tune",
            attributed: fixture!("tune", "docs_example.query"),
            expected: [Some("Vungle Inc."), Some("Summer Sale & Deals"), None, None],
            organic: fixture!("tune", "organic.query"),
            invalid: fixture!("tune", "no_identifier.query"),
        },
        Case {
            partner: "appsflyer",
            attributed: fixture!("appsflyer", "docs_example.json"),
            expected: [
                Some("applovin_int"),
                Some("Brand - US"),
                None,
                Some("uac_half&half_1200x1500"),
            ],
            organic: fixture!("appsflyer", "organic.json"),
            invalid: fixture!("appsflyer", "no_identifier.json"),
        },
        Case {
            partner: "adjust",
            attributed: fixture!("adjust", "docs_example.query"),
            expected: [
                Some("Moloco"),
                Some("Frühling 2024 – DE"),
                None,
                Some("Video+&+Static"),
            ],
            organic: fixture!("adjust", "organic.query"),
            invalid: fixture!("adjust", "no_identifier.query"),
        },
        Case {
            partner: "singular",
            attributed: fixture!("singular", "docs_example.query"),
            expected: [
                Some("Digital Turbine"),
                Some("Q3 Promo + Bonus"),
                Some("a&b=test"),
                None,
            ],
            organic: fixture!("singular", "organic.json"),
            invalid: fixture!("singular", "no_identifier.query"),
        },
        Case {
            partner: "branch",
            attributed: fixture!("branch", "docs_example.json"),
            expected: [
                Some("AppLovin"),
                Some("summer_launch"),
                Some("US_Android_Broad"),
                Some("playable_03"),
            ],
            organic: fixture!("branch", "organic_stale_latd.json"),
            invalid: fixture!("branch", "no_identifier.json"),
        },
    ]
}

async fn send(app: &TestApp, partner: &str, payload: &Payload) -> reqwest::Response {
    match payload {
        Payload::Query(q) => {
            app.get_postback(partner, Some(&app.api_key.clone()), q)
                .await
        }
        Payload::Json(body) => app
            .client
            .post(app.url(&format!("/v1/postbacks/{partner}")))
            .header("x-api-key", &app.api_key)
            .header("content-type", "application/json")
            .body(*body)
            .send()
            .await
            .expect("request sent"),
    }
}

both_backends!(
    every_partner_accepts_attributed_ignores_organic_and_rejects_invalid,
    branch_redelivery_with_the_same_id_is_a_duplicate,
    singular_start_install_creates_an_attribution_and_connects_singular,
    tune_publisher_only_install_is_credited_to_the_publisher,
);

/// The `GET /v1/apps/{id}/partners` entry of one partner.
async fn partner_status(app: &TestApp, partner: &str) -> serde_json::Value {
    let body = json_body(
        app.admin_get(&format!("/v1/apps/{}/partners", app.app_id))
            .await,
        200,
        "partners",
    )
    .await;
    body["partners"]
        .as_array()
        .expect("partners")
        .iter()
        .find(|p| p["partner"] == partner)
        .cloned()
        .unwrap_or_else(|| panic!("{partner} listed: {body}"))
}

/// One text column of the stored event `id`.
async fn event_column(app: &TestApp, id: &str, column: &str) -> Option<String> {
    app.text(&format!(
        "select {column} from postback_events where cast(id as text) = '{id}'"
    ))
    .await
}

async fn singular_start_install_creates_an_attribution_and_connects_singular(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    assert_eq!(
        partner_status(&app, "singular").await["status"],
        "not_connected"
    );
    let body = json_body(
        send(
            &app,
            "singular",
            &fixture!("singular", "install_start.json"),
        )
        .await,
        200,
        "__START__ install",
    )
    .await;
    assert_eq!(body["status"], "accepted", "{body}");
    let id = body["event_id"].as_str().unwrap();
    assert_eq!(
        event_column(&app, id, "kind").await.as_deref(),
        Some("install")
    );
    assert_eq!(
        event_column(&app, id, "event_name").await.as_deref(),
        Some("__START__")
    );
    assert_eq!(
        app.text("select source from attributions where partner = 'singular'")
            .await
            .as_deref(),
        Some("AppLovin"),
        "the install is attributed"
    );
    let singular = partner_status(&app, "singular").await;
    assert_eq!(singular["status"], "connected", "{singular}");
    assert!(singular["last_success_at"].is_string());
    assert_eq!(singular["counters"]["installs"], 1);

    // The same device's re-engagement `__START__` is an event: stored, attributes nobody.
    let body = json_body(
        send(
            &app,
            "singular",
            &fixture!("singular", "reengagement_start.json"),
        )
        .await,
        200,
        "__START__ re-engagement",
    )
    .await;
    assert_eq!(body["status"], "accepted", "{body}");
    let id = body["event_id"].as_str().unwrap();
    assert_eq!(
        event_column(&app, id, "kind").await.as_deref(),
        Some("event")
    );

    // An Android install whose Braze id sits in the event arguments (a JSON string).
    let body = json_body(
        send(
            &app,
            "singular",
            &fixture!("singular", "install_braze_in_arguments.json"),
        )
        .await,
        200,
        "Braze id in arguments",
    )
    .await;
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(
        app.text("select source from attributions where user_id = '1c9e7a52-3f0b-4d86-9a21-6b4e8d0c2f17'")
            .await
            .as_deref(),
        Some("Unity Ads")
    );
    assert_eq!(
        app.count("select count(*) from attributions where partner = 'singular'")
            .await,
        2,
        "two users; the re-engagement attributes nobody"
    );
    app.stop().await;
}

async fn tune_publisher_only_install_is_credited_to_the_publisher(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = json_body(
        send(
            &app,
            "tune",
            &fixture!("tune", "install_publisher_only.query"),
        )
        .await,
        200,
        "publisher-only install",
    )
    .await;
    assert_eq!(body["status"], "accepted", "{body}");
    let id = body["event_id"].as_str().unwrap();
    assert_eq!(
        event_column(&app, id, "source").await.as_deref(),
        Some("Facebook"),
        "publisher_name stands in for source"
    );
    assert_eq!(
        event_column(&app, id, "campaign").await.as_deref(),
        Some("Spring Launch - iOS US"),
        "campaign_name stands in for campaign"
    );
    assert_eq!(
        app.text("select source from attributions where partner = 'tune'")
            .await
            .as_deref(),
        Some("Facebook")
    );
    assert_eq!(partner_status(&app, "tune").await["status"], "connected");
    app.stop().await;
}

async fn every_partner_accepts_attributed_ignores_organic_and_rejects_invalid(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for case in cases() {
        let p = case.partner;
        let body = json_body(
            send(&app, p, &case.attributed).await,
            200,
            &format!("{p} attributed"),
        )
        .await;
        assert_eq!(body["status"], "accepted", "{p} attributed: {body}");
        let id = body["event_id"].as_str().unwrap();
        for (column, expected) in ["source", "campaign", "adgroup", "ad"]
            .into_iter()
            .zip(case.expected)
        {
            let got = app
                .text(&format!(
                    "select {column} from postback_events where cast(id as text) = '{id}'"
                ))
                .await;
            assert_eq!(got.as_deref(), expected, "{p}: {column}");
        }
        assert_eq!(
            app.text(&format!(
                "select partner from postback_events where cast(id as text) = '{id}'"
            ))
            .await
            .as_deref(),
            Some(p)
        );

        let body = json_body(
            send(&app, p, &case.organic).await,
            200,
            &format!("{p} organic"),
        )
        .await;
        assert_eq!(body["status"], "ignored", "{p} organic: {body}");

        let resp = send(&app, p, &case.invalid).await;
        assert_error(resp, 400, "invalid_payload", &format!("{p} invalid")).await;
    }
    assert_eq!(
        app.count("select count(*) from postback_events").await,
        6,
        "only the attributed deliveries are stored"
    );
    app.stop().await;
}

async fn branch_redelivery_with_the_same_id_is_a_duplicate(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let first = json_body(
        send(&app, "branch", &fixture!("branch", "docs_example.json")).await,
        200,
        "first",
    )
    .await;
    assert_eq!(first["status"], "accepted");
    // Branch's retry carries the same `id`, even if other fields (a timestamp) differ.
    let retry = include_str!("../fixtures/branch/docs_example.json")
        .replace("1714665600123", "1714665602999");
    let resp = app
        .client
        .post(app.url("/v1/postbacks/branch"))
        .header("x-api-key", &app.api_key)
        .body(retry)
        .send()
        .await
        .unwrap();
    let body = json_body(resp, 200, "retry").await;
    assert_eq!(body["status"], "duplicate");
    assert_eq!(body["event_id"], first["event_id"]);
    assert_eq!(app.count("select count(*) from postback_events").await, 1);
    app.stop().await;
}

//! Erasure on request over HTTP and the CLI, and `privacy.raw_days` through `prune`.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    erasure_finds_the_user_by_a_secondary_identifier_and_removes_both_partners_events,
    erasure_refuses_bad_requests_with_a_clear_4xx,
    users_erase_on_the_command_line,
    prune_clears_raw_data_past_raw_days_and_keeps_newer,
);

const IDFA: &str = "AAAAAAAA-0000-4000-8000-000000000009";
const USER: &str = "braze-9";

impl TestApp {
    async fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request sent")
    }

    async fn accepted(&self, partner: &str, body: Value) {
        let resp = self.post_json(partner, Some(&self.api_key), &body).await;
        let body = json_body(resp, 200, partner).await;
        assert_eq!(body["status"], "accepted", "{partner}: {body}");
    }

    /// The user's Kochava install (IDFA and user id), an AppsFlyer purchase that
    /// carries the user id only, and a stranger's install.
    async fn seed_user_and_stranger(&self) {
        self.accepted("kochava", kochava_install()).await;
        self.accepted(
            "appsflyer",
            json!({"event_name": "af_purchase", "media_source": "applovin_int",
                   "appsflyer_id": "1714644931000-4412908",
                   "custom_data": format!("{{\"brazeCustomerId\":\"{USER}\"}}"),
                   "event_time": "2024-05-03 18:02:44.120"}),
        )
        .await;
        self.accepted(
            "kochava",
            json!({"network_name": "Liftoff", "idfa": "AAAAAAAA-0000-4000-8000-000000000001",
                   "identity_link": "someone-else"}),
        )
        .await;
    }
}

fn kochava_install() -> Value {
    json!({"network_name": "Liftoff", "campaign_name": "spring", "idfa": IDFA,
           "identity_link": USER})
}

async fn erasure_finds_the_user_by_a_secondary_identifier_and_removes_both_partners_events(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.seed_user_and_stranger().await;
    assert_eq!(app.count("select count(*) from postback_events").await, 3);
    let id = app.app_id;
    // Found by the IDFA (given lower case); the AppsFlyer event shares only the user id.
    let erase = format!("/v1/apps/{id}/users?idfa={}", IDFA.to_lowercase());
    let resp = app.admin(reqwest::Method::DELETE, &erase).await;
    assert_eq!(
        resp.headers()["cache-control"],
        "no-store",
        "an admin answer"
    );
    let body = json_body(resp, 200, "erase").await;
    assert_eq!(
        body["erased"],
        json!({"attributions": 1, "events": 2, "deliveries": 2, "outbox": 0}),
        "{body}"
    );
    assert_eq!(app.count("select count(*) from postback_events").await, 1);
    assert_eq!(
        app.count("select count(*) from postback_events where user_id = 'someone-else'")
            .await,
        1,
        "the stranger's event stays"
    );
    assert_eq!(app.count("select count(*) from attributions").await, 1);
    assert_eq!(app.count("select count(*) from deliveries").await, 1);
    let lookup = app
        .admin(
            reqwest::Method::GET,
            &format!("/v1/apps/{id}/users/lookup?user_id={USER}"),
        )
        .await;
    assert_error(lookup, 404, "not_found", "erased user").await;

    // Idempotent.
    let again = json_body(
        app.admin(reqwest::Method::DELETE, &erase).await,
        200,
        "again",
    )
    .await;
    assert_eq!(
        again["erased"],
        json!({"attributions": 0, "events": 0, "deliveries": 0, "outbox": 0})
    );

    // Two receipts, newest first, neither holding the identifier.
    let resp = app
        .admin(reqwest::Method::GET, &format!("/v1/apps/{id}/erasures"))
        .await;
    let listed = json_body(resp, 200, "erasures").await;
    let receipts = listed["erasures"].as_array().expect("a list");
    assert_eq!(receipts.len(), 2, "{listed}");
    assert_eq!(receipts[0]["id"], again["erasure_id"]);
    assert_eq!(receipts[1]["erased"]["events"], 2);
    assert_eq!(receipts[0]["kind"], "idfa");
    assert_eq!(receipts[0]["value_hash"], receipts[1]["value_hash"]);
    let stored = app
        .db
        .text_rows("select kind, value_hash, cast(erased_at as text) from erasures")
        .await;
    let everything = format!("{listed} {stored:?}").to_ascii_uppercase();
    for value in [IDFA, "BRAZE-9", "1714644931000-4412908"] {
        assert!(!everything.contains(value), "{value} in {everything}");
    }

    // The dedupe keys went too: a redelivery is stored again, as a new user.
    let resp = app.post_kochava(&kochava_install()).await;
    let body = json_body(resp, 200, "redelivery").await;
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(app.count("select count(*) from attributions").await, 2);
    app.stop().await;
}

async fn erasure_refuses_bad_requests_with_a_clear_4xx(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.app_id;
    let delete = reqwest::Method::DELETE;
    let resp = app
        .admin(delete.clone(), &format!("/v1/apps/{id}/users"))
        .await;
    assert_error(resp, 400, "bad_request", "no identifier").await;
    let resp = app
        .admin(
            delete.clone(),
            &format!("/v1/apps/{id}/users?idfa=a&user_id=b"),
        )
        .await;
    assert_error(resp, 400, "bad_request", "two identifiers").await;
    let resp = app
        .admin(delete.clone(), &format!("/v1/apps/{id}/users?email=a"))
        .await;
    assert_error(resp, 400, "bad_request", "unknown parameter").await;
    let resp = app
        .admin(
            delete.clone(),
            "/v1/apps/00000000-0000-4000-8000-000000000000/users?idfa=a",
        )
        .await;
    assert_error(resp, 404, "not_found", "unknown app").await;
    let resp = app
        .client
        .delete(app.url(&format!("/v1/apps/{id}/users?idfa=a")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized", "no token").await;
    let resp = app
        .admin(
            reqwest::Method::GET,
            &format!("/v1/apps/{id}/erasures?limit=0"),
        )
        .await;
    assert_error(resp, 400, "bad_request", "limit 0").await;
    assert_eq!(app.count("select count(*) from erasures").await, 0);
    app.stop().await;
}

async fn users_erase_on_the_command_line(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.seed_user_and_stranger().await;
    let id = app.app_id.to_string();
    let out = run_cli(
        app.db.url(),
        &["users", "erase", &id, "--user-id", USER, "--json"],
    );
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(
        printed["erased"],
        json!({"attributions": 1, "events": 2, "deliveries": 2, "outbox": 0})
    );
    assert_eq!(app.count("select count(*) from erasures").await, 1);
    // Exactly one identifier per call.
    let out = run_cli(
        app.db.url(),
        &["users", "erase", &id, "--idfa", IDFA, "--user-id", USER],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{out:?}"
    );
    let out = run_cli(app.db.url(), &["users", "erase", &id]);
    assert!(!out.status.success());
    assert_eq!(app.count("select count(*) from erasures").await, 1);
    app.stop().await;
}

async fn prune_clears_raw_data_past_raw_days_and_keeps_newer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.accepted("kochava", kochava_install()).await;
    let prune = |raw_days: &str| {
        let out = std::process::Command::new(BIN)
            .args(["prune", "--json"])
            .env("DATABASE_URL", app.db.url())
            .env("PBG_PRIVACY__RAW_DAYS", raw_days)
            .env_remove("RUST_LOG")
            .output()
            .expect("run prune");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).expect("one JSON object")
    };
    let kept = "select count(*) from postback_events where ip is null and user_agent is null";
    // 30 days (the default): a new event keeps its raw payload.
    assert_eq!(prune("30")["raw_cleared"], 0);
    let raw = app
        .text("select cast(raw_payload as text) from postback_events")
        .await;
    assert!(raw.unwrap_or_default().contains(IDFA));
    // 0 days: everything received before now is past it.
    assert_eq!(prune("0")["raw_cleared"], 1);
    let raw = app
        .text("select cast(raw_payload as text) from postback_events")
        .await;
    assert_eq!(
        raw.as_deref().map(|r| r.replace(' ', "")),
        Some("{}".into())
    );
    assert_eq!(app.count(kept).await, 1);
    assert_eq!(
        app.count("select count(*) from postback_events where idfa is not null")
            .await,
        1,
        "ids stay"
    );
    assert_eq!(prune("0")["raw_cleared"], 0, "nothing left to clear");
    app.stop().await;
}

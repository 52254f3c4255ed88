//! Forwarding over real HTTP: signed deliveries to a receiver on 127.0.0.1, retries
//! with the same `webhook-id`, dead messages and replay (HTTP and CLI), the SSRF
//! guard at delivery time, a `kill -9` under load, and two nodes sharing PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use postback_gateway::config::{Config, ForwardingConfig};
use postback_gateway::domain::AppId;
use postback_gateway::store::forwarding::{DestinationWhat, NewDestination};
use postback_gateway::store::Store;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{
    create_app_cli, json_body, run_cli, wait_until, Backend, ServerProcess, TestApp, TestConfig,
    TestDb, ADMIN_TOKEN,
};
use crate::receiver::{Receiver, Reply};

both_backends!(
    deliveries_are_signed_per_standard_webhooks_and_carry_the_document,
    a_receiver_failing_three_times_gets_the_fourth_attempt_with_the_same_webhook_id,
    a_410_is_dead_at_once_and_replay_delivers_it_again,
    a_private_address_is_refused_at_delivery_unless_allowed,
    kill_9_under_load_loses_no_committed_attribution,
    a_hanging_destination_does_not_hold_up_another,
);

mod two_nodes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::two_nodes_sharing_postgresql_deliver_each_message_once().await
    }
}

/// Quick retries, so that a test sees several attempts in well under a second.
fn quick(allow_private_targets: bool) -> ForwardingConfig {
    ForwardingConfig {
        allow_private_targets,
        attempt_timeout_ms: 2_000,
        retry_initial_ms: 50,
        retry_max_ms: 200,
        horizon_hours: 72,
        max_in_flight: 4,
    }
}

/// The same as environment variables for a `serve` child process.
const QUICK_ENV: [(&str, &str); 5] = [
    ("PBG_FORWARDING__ALLOW_PRIVATE_TARGETS", "true"),
    ("PBG_FORWARDING__ATTEMPT_TIMEOUT_MS", "1000"),
    ("PBG_FORWARDING__RETRY_INITIAL_MS", "50"),
    ("PBG_FORWARDING__RETRY_MAX_MS", "200"),
    ("PBG_FORWARDING__MAX_IN_FLIGHT", "4"),
];

async fn spawn(backend: Backend, forwarding: ForwardingConfig) -> Option<TestApp> {
    TestApp::spawn_with(
        backend,
        TestConfig {
            forwarding,
            ..TestConfig::default()
        },
    )
    .await
}

/// A destination stored directly (what `destinations add` does, without its
/// add-time URL check): its id and signing secret.
async fn add_destination(
    store: &dyn Store,
    app: AppId,
    url: &str,
    what: DestinationWhat,
) -> (Uuid, String) {
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(Uuid::new_v4().as_bytes())
    );
    let dest = NewDestination {
        id: Uuid::now_v7(),
        app_id: app,
        url: url.to_owned(),
        what,
        secret: secret.clone(),
        created_at: chrono::Utc::now(),
    };
    store
        .create_destination(&dest)
        .await
        .expect("create destination");
    (dest.id, secret)
}

fn install(n: usize) -> Value {
    json!({
        "event_name": "_install",
        "network_name": "Liftoff",
        "campaign_name": "KO_iOS_US_Launch",
        "site_id": "pub_88412",
        "kochava_device_id": format!("KDEVICE{n:08}"),
        "idfa": format!("4E5F6A7B-8C9D-4E0F-A1B2-{n:012}"),
    })
}

/// `Webhook::verify` of the Standard Webhooks reference library.
fn verify(secret: &str, received: &crate::receiver::Received) {
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .verify(&received.body, &received.headers)
        .unwrap_or_else(|e| {
            panic!(
                "signature of {} does not verify: {e}",
                received.webhook_id()
            )
        });
}

async fn messages(app: &TestApp, dest: Uuid, status: &str) -> Vec<Value> {
    let resp = app
        .client
        .get(app.url(&format!(
            "/v1/apps/{}/destinations/{dest}/messages?status={status}",
            app.app_id
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    let body = json_body(resp, 200, "messages").await;
    body["messages"].as_array().expect("messages").clone()
}

async fn deliveries_are_signed_per_standard_webhooks_and_carry_the_document(backend: Backend) {
    let Some(app) = spawn(backend, quick(true)).await else {
        return;
    };
    let receiver = Receiver::start(&[], None).await;
    let (dest, secret) = add_destination(
        app.store.as_ref(),
        app.app_id,
        &receiver.url,
        DestinationWhat::All,
    )
    .await;
    let resp = app.post_kochava(&install(1)).await;
    let answer = json_body(resp, 200, "install").await;
    wait_until(Duration::from_secs(10), "two messages received", || async {
        receiver.count() >= 2
    })
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 2, "an attribution and an event, once each");
    for r in &received {
        verify(&secret, r);
        assert_eq!(r.headers["content-type"], "application/json");
    }
    let by_type: BTreeMap<String, &crate::receiver::Received> = received
        .iter()
        .map(|r| (r.json()["type"].as_str().unwrap().to_owned(), r))
        .collect();
    let attribution = by_type["attribution.created"].json();
    let event = by_type["event.accepted"].json();
    assert_eq!(attribution["app_id"], app.app_id.to_string());
    assert_eq!(attribution["partner"], "kochava");
    assert_eq!(attribution["event_id"], answer["event_id"]);
    assert_eq!(attribution["kind"], "install");
    assert_eq!(attribution["source"], "Liftoff");
    assert_eq!(attribution["campaign"], "KO_iOS_US_Launch");
    assert_eq!(
        attribution["identifiers"]["idfa"],
        "4E5F6A7B-8C9D-4E0F-A1B2-000000000001"
    );
    let stored_attribution = app
        .text("select cast(id as text) from attributions")
        .await
        .expect("an attribution");
    assert_eq!(attribution["attribution_id"], stored_attribution);
    let received_at = attribution["received_at"].as_str().unwrap();
    assert_eq!(
        received_at.len(),
        "2026-12-02T07:46:39.123456Z".len(),
        "{received_at}"
    );
    assert!(received_at.ends_with('Z'));
    assert_eq!(event["attribution_id"], Value::Null);
    assert_eq!(event["event_id"], answer["event_id"]);
    // webhook-id is msg_ + the outbox id.
    let outbox_id = app
        .text("select cast(id as text) from outbox where type = 'attribution.created'")
        .await
        .expect("outbox row");
    assert_eq!(
        by_type["attribution.created"].webhook_id(),
        format!("msg_{}", outbox_id.replace('-', ""))
    );
    wait_until(
        Duration::from_secs(5),
        "both recorded as delivered",
        || async { messages(&app, dest, "delivered").await.len() == 2 },
    )
    .await;
    let delivered = messages(&app, dest, "delivered").await;
    for m in &delivered {
        assert_eq!(m["attempts"], 1);
        assert_eq!(m["last_status"], 204);
        assert!(m["delivered_at"].is_string());
        assert_eq!(m["next_attempt_at"], Value::Null);
    }

    // Operators see it on the status page and in /metrics.
    let page = app
        .client
        .get(app.url(&format!("/apps/{}/attribution", app.app_id)))
        .basic_auth("operator", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<h2>Destinations</h2>"), "{page}");
    assert!(page.contains(&format!("data-destination=\"{dest}\"")));
    assert!(page.contains(&receiver.url), "the URL is shown");
    assert!(!page.contains(&secret), "never the secret");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let backlog = format!(
        "postback_gateway_forward_backlog{{app_id=\"{}\",destination_id=\"{dest}\"}} 0",
        app.app_id
    );
    assert!(metrics.contains(&backlog), "{backlog} in:\n{metrics}");
    assert!(metrics.contains("postback_gateway_forward_attempts_total{result=\"delivered\"}"));
    assert!(metrics.contains("postback_gateway_forward_delivery_seconds_bucket"));
    app.stop().await;
}

async fn a_receiver_failing_three_times_gets_the_fourth_attempt_with_the_same_webhook_id(
    backend: Backend,
) {
    let Some(app) = spawn(backend, quick(true)).await else {
        return;
    };
    let script = [
        Reply::Status(500),
        Reply::RetryAfter(503, 0),
        Reply::Status(408),
    ];
    let receiver = Receiver::start(&script, None).await;
    let (dest, secret) = add_destination(
        app.store.as_ref(),
        app.app_id,
        &receiver.url,
        DestinationWhat::Attributions,
    )
    .await;
    let resp = app.post_kochava(&install(1)).await;
    json_body(resp, 200, "install").await;
    wait_until(Duration::from_secs(10), "the message delivered", || async {
        messages(&app, dest, "delivered").await.len() == 1
    })
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 4, "three failures, then the delivery");
    let ids: BTreeSet<String> = received.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(ids.len(), 1, "one webhook-id on every attempt: {ids:?}");
    for r in &received {
        verify(&secret, r);
        assert_eq!(r.body, received[0].body, "the same document each time");
    }
    let delivered = &messages(&app, dest, "delivered").await[0];
    assert_eq!(delivered["attempts"], 4);
    assert_eq!(delivered["last_status"], 204);
    assert_eq!(delivered["webhook_id"], received[0].webhook_id());
    app.stop().await;
}

async fn a_410_is_dead_at_once_and_replay_delivers_it_again(backend: Backend) {
    let Some(app) = spawn(backend, quick(true)).await else {
        return;
    };
    let receiver = Receiver::start(&[Reply::Status(410), Reply::Status(410)], None).await;
    let (dest, _) = add_destination(
        app.store.as_ref(),
        app.app_id,
        &receiver.url,
        DestinationWhat::Attributions,
    )
    .await;
    json_body(app.post_kochava(&install(1)).await, 200, "install").await;
    wait_until(Duration::from_secs(10), "the message dead", || async {
        messages(&app, dest, "dead").await.len() == 1
    })
    .await;
    let dead = &messages(&app, dest, "dead").await[0];
    assert_eq!(dead["attempts"], 1, "dead at the first 410, not retried");
    assert_eq!(dead["last_status"], 410);
    assert_eq!(receiver.count(), 1);
    assert!(messages(&app, dest, "pending").await.is_empty());

    // The CLI re-queues it; the receiver answers 410 again: dead again.
    let out = run_cli(
        app.db.url(),
        &[
            "destinations",
            "replay",
            &dest.to_string(),
            "--dead",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(replayed["requeued"], 1);
    wait_until(
        Duration::from_secs(10),
        "the second attempt, dead again",
        || async { receiver.count() == 2 && messages(&app, dest, "dead").await.len() == 1 },
    )
    .await;

    // Replay over HTTP: now the receiver takes it.
    let replay_url = app.url(&format!(
        "/v1/apps/{}/destinations/{dest}/replay",
        app.app_id
    ));
    let unbounded = app
        .client
        .post(&replay_url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(unbounded, 400, "bad_request", "replay without a filter").await;
    let resp = app
        .client
        .post(format!("{replay_url}?dead=true"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let body = json_body(resp, 200, "replay").await;
    assert_eq!(body["requeued"], 1);
    assert_eq!(body["enabled"], true);
    wait_until(
        Duration::from_secs(10),
        "delivered after the replay",
        || async { messages(&app, dest, "delivered").await.len() == 1 },
    )
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    let ids: BTreeSet<String> = received.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(ids.len(), 1, "replays keep the webhook-id: {ids:?}");

    // Wrong ids and filters are 4xx with a message.
    let other = app
        .client
        .get(app.url(&format!(
            "/v1/apps/{}/destinations/{}/messages",
            app.app_id,
            Uuid::now_v7()
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(other, 404, "not_found", "unknown destination").await;
    let bad = app
        .client
        .get(app.url(&format!(
            "/v1/apps/{}/destinations/{dest}/messages?status=lost",
            app.app_id
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(bad, 400, "bad_request", "unknown status").await;
    let unknown = run_cli(
        app.db.url(),
        &[
            "destinations",
            "replay",
            &Uuid::now_v7().to_string(),
            "--dead",
        ],
    );
    assert!(!unknown.status.success(), "an unknown destination fails");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no destination"));
    app.stop().await;
}

async fn a_private_address_is_refused_at_delivery_unless_allowed(backend: Backend) {
    let Some(app) = spawn(backend, quick(false)).await else {
        return;
    };
    let receiver = Receiver::start(&[], None).await;
    // An IP literal, and a name that resolves to loopback (as if its DNS changed
    // after the add-time check).
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let mut dests = Vec::new();
    for url in [receiver.url.as_str(), by_name.as_str()] {
        let (dest, _) = add_destination(
            app.store.as_ref(),
            app.app_id,
            url,
            DestinationWhat::Attributions,
        )
        .await;
        dests.push(dest);
    }
    json_body(app.post_kochava(&install(1)).await, 200, "install").await;
    for dest in dests {
        wait_until(Duration::from_secs(10), "the message refused", || async {
            messages(&app, dest, "dead").await.len() == 1
        })
        .await;
        let dead = &messages(&app, dest, "dead").await[0];
        let error = dead["last_error"].as_str().unwrap_or_default();
        assert!(error.starts_with("refused"), "{error}");
        assert_eq!(dead["last_status"], Value::Null);
    }
    assert_eq!(receiver.count(), 0, "nothing reached the private address");
    app.stop().await;

    // Allowed: the same destination gets it.
    let Some(app) = spawn(backend, quick(true)).await else {
        return;
    };
    add_destination(
        app.store.as_ref(),
        app.app_id,
        &receiver.url,
        DestinationWhat::Attributions,
    )
    .await;
    json_body(app.post_kochava(&install(2)).await, 200, "install").await;
    wait_until(
        Duration::from_secs(10),
        "delivered when allowed",
        || async { receiver.count() == 1 },
    )
    .await;
    app.stop().await;
}

/// Open the test database as the server does, to add a destination.
async fn open(db: &TestDb) -> std::sync::Arc<dyn Store> {
    let mut config = Config::defaults();
    config.database_url = db.url().to_owned();
    postback_gateway::open_store(&config)
        .await
        .expect("open the store")
}

/// Post installs from four loops until `stop`; returns how many were answered 200.
fn load(
    address: String,
    key: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let loops = (0..4).map(|lane| {
            let (client, address, key, stop) =
                (client.clone(), address.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                let mut ok = 0;
                for n in 0.. {
                    if *stop.borrow() {
                        break;
                    }
                    let sent = client
                        .post(format!("{address}/v1/postbacks/kochava"))
                        .header("x-api-key", &key)
                        .json(&install(lane * 1_000_000 + n))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(_) => {}
                        // The server was killed.
                        Err(_) => break,
                    }
                }
                ok
            })
        });
        let mut ok = 0;
        for l in loops.collect::<Vec<_>>() {
            ok += l.await.unwrap_or(0);
        }
        ok
    })
}

/// attribution id → the webhook-ids it was received with.
fn attributions_received(receiver: &Receiver) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_attribution: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in receiver.received() {
        let doc = r.json();
        if doc["type"] == "attribution.created" {
            by_attribution
                .entry(doc["attribution_id"].as_str().unwrap().to_owned())
                .or_default()
                .insert(r.webhook_id());
        }
    }
    by_attribution
}

async fn kill_9_under_load_loses_no_committed_attribution(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // Slow answers: deliveries are in flight when the process dies.
    let receiver = Receiver::start(&[], Some(Reply::Slow(100))).await;
    let (app_id, key) = create_app_cli(db.url(), "load", "enterprise");
    let store = open(&db).await;
    add_destination(
        store.as_ref(),
        app_id.parse().unwrap(),
        &receiver.url,
        DestinationWhat::Attributions,
    )
    .await;
    store.close().await;

    let server = ServerProcess::start(db.url(), &QUICK_ENV);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let posting = load(server.address.clone(), key, stop_rx);
    wait_until(Duration::from_secs(30), "deliveries under way", || async {
        receiver.count() >= 10
    })
    .await;
    server.kill9();
    let _ = stop_tx.send(true);
    let accepted = posting.await.unwrap();
    assert!(accepted > 0, "some installs were committed before the kill");

    let server = ServerProcess::start(db.url(), &QUICK_ENV);
    let committed: BTreeSet<String> = db
        .text_rows("select cast(id as text) from attributions")
        .await
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    assert!(
        committed.len() >= accepted,
        "every 200 is a committed attribution"
    );
    wait_until(
        Duration::from_secs(60),
        "every committed attribution received",
        || async {
            let received = attributions_received(&receiver);
            committed.iter().all(|id| received.contains_key(id))
        },
    )
    .await;
    for (attribution, ids) in attributions_received(&receiver) {
        assert_eq!(
            ids.len(),
            1,
            "{attribution} came with several webhook-ids: {ids:?}"
        );
    }
    let (status, _) = server.terminate();
    assert!(status.success());
}

async fn two_nodes_sharing_postgresql_deliver_each_message_once() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let receiver = Receiver::start(&[], None).await;
    let (app_id, key) = create_app_cli(db.url(), "fleet", "enterprise");
    let store = open(&db).await;
    add_destination(
        store.as_ref(),
        app_id.parse().unwrap(),
        &receiver.url,
        DestinationWhat::Attributions,
    )
    .await;
    store.close().await;
    let nodes = [
        ServerProcess::start(db.url(), &QUICK_ENV),
        ServerProcess::start(db.url(), &QUICK_ENV),
    ];
    let client = reqwest::Client::new();
    const N: usize = 40;
    for n in 0..N {
        let resp = client
            .post(format!("{}/v1/postbacks/kochava", nodes[n % 2].address))
            .header("x-api-key", &key)
            .json(&install(n))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "install {n}");
    }
    wait_until(
        Duration::from_secs(30),
        "every message delivered",
        || async {
            db.count("select count(*) from outbox where status = 'delivered'")
                .await
                == N as i64
        },
    )
    .await;
    let received = receiver.received();
    let ids: BTreeSet<String> = received.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(ids.len(), N, "every message");
    assert_eq!(received.len(), N, "each once");
    for node in nodes {
        let (status, _) = node.terminate();
        assert!(status.success());
    }
}

async fn a_hanging_destination_does_not_hold_up_another(backend: Backend) {
    // Attempts to the hanging receiver last far longer than this test.
    let forwarding = ForwardingConfig {
        attempt_timeout_ms: 60_000,
        ..quick(true)
    };
    let Some(app) = spawn(backend, forwarding).await else {
        return;
    };
    let hanging = Receiver::start(&[], Some(Reply::Hang)).await;
    let fast = Receiver::start(&[], None).await;
    for receiver in [&hanging, &fast] {
        add_destination(
            app.store.as_ref(),
            app.app_id,
            &receiver.url,
            DestinationWhat::Attributions,
        )
        .await;
    }
    const N: usize = 10;
    for n in 0..N {
        json_body(app.post_kochava(&install(n)).await, 200, "install").await;
    }
    wait_until(
        Duration::from_secs(10),
        "the fast receiver has every message",
        || async { fast.count() == N },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the hanging one its first attempts",
        || async { hanging.count() >= 4 },
    )
    .await;
    assert_eq!(
        hanging.count(),
        4,
        "max_in_flight attempts hang, the other messages wait their turn"
    );
    app.stop().await;
}

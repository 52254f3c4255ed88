//! Conformance checks of erasure on request and of clearing old raw data.

use super::*;
use crate::store::privacy::ErasureCounts;
use crate::store::{PruneReport, RetentionPolicy};

conformance!(
    erasure_finds_the_user_by_a_secondary_identifier_across_partners_and_partitions,
    erasure_without_an_attribution_goes_through_the_events,
    prune_clears_old_raw_data_and_keeps_new,
);

impl Probe {
    async fn count(&self, sql: &str) -> i64 {
        match self {
            Probe::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Probe::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn texts(&self, sql: &str) -> Vec<String> {
        match self {
            Probe::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Probe::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// A delivery log row (and, with `destination`, an outbox message) written behind
/// the store's back, as the batch writer and the lead's outbox would.
async fn log_row(probe: &Probe, app: AppId, event: Option<Uuid>, identifiers: &str) {
    let event = event.map_or("null".to_owned(), |e| format!("'{e}'"));
    probe
        .run_script(&format!(
            "insert into deliveries (app_id, id, received_at, partner, method, status, verdict, \
                 reason, event_id, request_id, segments, identifiers, payload) \
             values ('{app}', '{}', '2024-05-01T12:00:00.000000Z', 'kochava', 'POST', 200, \
                 'accepted', 'stored', {event}, 'req', null, '{identifiers}', '{{\"x\": 1}}')",
            Uuid::now_v7()
        ))
        .await;
}

async fn outbox_row(probe: &Probe, app: AppId, destination: Uuid, event: Uuid, status: &str) {
    probe
        .run_script(&format!(
            "insert into outbox (id, destination_id, app_id, type, event_id, payload, status, \
                 created_at, next_attempt_at) \
             values ('{}', '{destination}', '{app}', 'event.accepted', '{event}', '{{}}', \
                 '{status}', '2024-05-01T12:00:00.000000Z', '2024-05-01T12:00:00.000000Z')",
            Uuid::now_v7()
        ))
        .await;
}

async fn erasure_finds_the_user_by_a_secondary_identifier_across_partners_and_partitions(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let other = sample_app("other", Tier::Standard, t0());
    store.create_app(&other).await.expect("create app");
    let other_app = other.id;
    let april = Utc.with_ymd_and_hms(2024, 4, 20, 12, 0, 0).unwrap();
    store.prepare_months(april).await.expect("months");
    store.prepare_months(t0()).await.expect("months");
    let user = Identifiers {
        idfa: Some("AAAA-1111".into()),
        user_id: Some("user-7".into()),
        ..Identifiers::default()
    };
    let install = sample_event(SampleEvent {
        app,
        dedupe_key: "install-1".into(),
        ids: user.clone(),
        received_at: april,
        ..Default::default()
    });
    // Another partner, another month, only the secondary identifier.
    let purchase = sample_event(SampleEvent {
        app,
        partner: PartnerId::Branch,
        dedupe_key: "purchase-1".into(),
        kind: EventKind::Event,
        ids: Identifiers {
            user_id: Some("user-7".into()),
            ..Identifiers::default()
        },
        ..Default::default()
    });
    let stranger = sample_event(SampleEvent {
        app,
        dedupe_key: "install-2".into(),
        ids: idfa("BBBB-2222"),
        ..Default::default()
    });
    // The same identifier in another app is another app's user.
    let elsewhere = sample_event(SampleEvent {
        app: other_app,
        ids: user.clone(),
        ..Default::default()
    });
    let stored = record(store, vec![install.clone(), purchase, stranger, elsewhere]).await;
    let (install_id, purchase_id, stranger_id) = (
        recorded_id(stored[0]),
        recorded_id(stored[1]),
        recorded_id(stored[2]),
    );
    log_row(probe, app, Some(install_id), r#"{"idfa": "AAAA-1111"}"#).await;
    log_row(probe, app, None, r#"{"user_id": "user-7"}"#).await;
    log_row(probe, app, Some(stranger_id), r#"{"idfa": "BBBB-2222"}"#).await;
    let destination = Uuid::now_v7();
    probe
        .run_script(&format!(
            "insert into destinations (id, app_id, url, what, secret, enabled, created_at, \
                 updated_at) values ('{destination}', '{app}', 'https://example.com/hook', \
                 'all', 'whsec_test', true, '2024-05-01T12:00:00.000000Z', \
                 '2024-05-01T12:00:00.000000Z')"
        ))
        .await;
    outbox_row(probe, app, destination, purchase_id, "pending").await;
    outbox_row(probe, app, destination, stranger_id, "pending").await;
    let installs = "select cast(coalesce(sum(installs), 0) as bigint) from attribution_days";
    assert_eq!(probe.count(installs).await, 3);

    // Lower case: IDFAs are stored upper case, and found whatever case is asked for.
    let now = now_micros();
    let receipt = store
        .erase_user(app, IdentifierKind::Idfa, "aaaa-1111", now)
        .await
        .expect("erase");
    let expected = ErasureCounts {
        attributions: 1,
        events: 2,
        deliveries: 2,
        outbox: 1,
    };
    assert_eq!(receipt.counts, expected);
    assert_eq!(receipt.kind, IdentifierKind::Idfa);
    let left: Vec<Uuid> = probe.events(app).await.into_keys().collect();
    assert_eq!(left, vec![stranger_id], "only the stranger's event is left");
    assert_eq!(
        probe.events(other_app).await.len(),
        1,
        "other apps untouched"
    );
    assert_eq!(probe.attributions(app).await.len(), 1);
    for kind in [IdentifierKind::Idfa, IdentifierKind::UserId] {
        let value = if kind == IdentifierKind::Idfa {
            "AAAA-1111"
        } else {
            "user-7"
        };
        assert_eq!(store.lookup_user(app, kind, value).await.unwrap(), None);
        assert!(store
            .lookup_user(other_app, kind, value)
            .await
            .unwrap()
            .is_some());
    }
    let app_rows = |table: &str| format!("select count(*) from {table} where app_id = '{app}'");
    assert_eq!(probe.count(&app_rows("deliveries")).await, 1);
    assert_eq!(probe.count(&app_rows("outbox")).await, 1);
    assert_eq!(probe.count(&app_rows("user_identities")).await, 1);
    assert_eq!(probe.count(installs).await, 2, "the chart's rollup follows");

    // Idempotent: nothing left to find, a second receipt with zeros.
    let again = store
        .erase_user(app, IdentifierKind::Idfa, "AAAA-1111", now + secs(1))
        .await
        .expect("erase again");
    assert_eq!(again.counts, ErasureCounts::default());
    assert_eq!(
        again.value_hash, receipt.value_hash,
        "same value, same hash"
    );
    let listed = store.list_erasures(app, 10).await.expect("list");
    assert_eq!(listed, vec![again.clone(), receipt.clone()], "newest first");
    assert!(store.list_erasures(other_app, 10).await.unwrap().is_empty());

    // The receipt holds no identifier, in any case.
    let stored_text = probe
        .texts(&format!(
            "select kind || ' ' || value_hash || ' ' || cast(erased_at as text) \
             from erasures where app_id = '{app}'"
        ))
        .await
        .join(" ")
        .to_ascii_uppercase();
    for value in ["AAAA-1111", "USER-7"] {
        assert!(!stored_text.contains(value), "{stored_text}");
    }
    let salts = probe.count("select count(*) from erasure_salts").await;
    assert_eq!(salts, 1, "one salt per app, made at its first erasure");

    // Its dedupe keys went with it: a redelivery is a new event and a new user.
    let redelivered = record(store, vec![install]).await;
    assert!(matches!(redelivered[0], RecordOutcome::Recorded { .. }));
    assert_eq!(probe.attributions(app).await.len(), 2);
}

async fn erasure_without_an_attribution_goes_through_the_events(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let organic_ish = |key: &str, ids: Identifiers| {
        sample_event(SampleEvent {
            app,
            partner: PartnerId::Appsflyer,
            kind: EventKind::Event,
            dedupe_key: key.into(),
            ids,
            ..Default::default()
        })
    };
    let stored = record(
        store,
        vec![
            organic_ish(
                "e1",
                Identifiers {
                    google_aid: Some("abcd-ef".into()),
                    android_id: Some("droid-1".into()),
                    ..Identifiers::default()
                },
            ),
            organic_ish(
                "e2",
                Identifiers {
                    android_id: Some("droid-1".into()),
                    ..Identifiers::default()
                },
            ),
            organic_ish(
                "e3",
                Identifiers {
                    android_id: Some("droid-2".into()),
                    ..Identifiers::default()
                },
            ),
        ],
    )
    .await;
    assert!(
        probe.attributions(app).await.is_empty(),
        "events make no attribution"
    );
    let receipt = store
        .erase_user(app, IdentifierKind::GoogleAid, "ABCD-EF", now_micros())
        .await
        .expect("erase");
    assert_eq!(
        receipt.counts,
        ErasureCounts {
            events: 2,
            ..ErasureCounts::default()
        }
    );
    let left: Vec<Uuid> = probe.events(app).await.into_keys().collect();
    assert_eq!(left, vec![recorded_id(stored[2])]);
}

async fn prune_clears_old_raw_data_and_keeps_new(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let now = Utc.with_ymd_and_hms(2024, 5, 20, 12, 0, 0).unwrap();
    store.prepare_months(now).await.expect("months");
    let event = |key: &str, received_at| {
        sample_event(SampleEvent {
            app,
            dedupe_key: key.into(),
            ids: idfa(&format!("IDFA-{key}")),
            received_at,
            raw: json!({"ip": "203.0.113.7", "idfa": key}),
            ..Default::default()
        })
    };
    let old_at = now - chrono::Duration::days(31);
    let new_at = now - chrono::Duration::days(29);
    let stored = record(store, vec![event("old", old_at), event("new", new_at)]).await;
    let (old, new) = (recorded_id(stored[0]), recorded_id(stored[1]));
    let policy = RetentionPolicy {
        events_days: 90,
        dedupe_days: 45,
        raw_days: 30,
    };
    let expected = PruneReport {
        raw_cleared: 1,
        ..PruneReport::default()
    };
    assert_eq!(store.prune(now, policy, true).await.unwrap(), expected);
    assert_eq!(
        probe.raw_payload(old).await["idfa"],
        "old",
        "a dry run clears nothing"
    );
    assert_eq!(store.prune(now, policy, false).await.unwrap(), expected);
    assert_eq!(probe.raw_payload(old).await, json!({}));
    assert_eq!(probe.raw_payload(new).await["idfa"], "new");
    let ips = |id: Uuid| {
        format!("select count(*) from postback_events where id = '{id}' and ip is not null")
    };
    assert_eq!(probe.count(&ips(old)).await, 0, "IP cleared");
    assert_eq!(probe.count(&ips(new)).await, 1, "IP kept");
    // Ids and segments stay as long as the event.
    let kept = format!(
        "select count(*) from postback_events where id = '{old}' \
         and idfa is not null and source = 'network-a'"
    );
    assert_eq!(probe.count(&kept).await, 1);
    // Cheap to repeat: rows already cleared are not touched again.
    assert_eq!(
        store.prune(now, policy, false).await.unwrap(),
        PruneReport::default()
    );
}

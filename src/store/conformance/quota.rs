//! Conformance checks of the quota counts: request counts per window and the
//! install quota granted in the batch, exactly under concurrency.

use super::*;
use crate::store::batch::quota_window;

conformance!(
    install_quota_grants_new_installs_only_and_stores_none_over_it,
    concurrent_batches_share_an_install_quota_exactly,
    quota_usage_adds_up_per_app_and_window,
);

async fn quota_usage_adds_up_per_app_and_window(store: &dyn Store, _: &Probe) {
    let (a, b) = (
        create_sample_app(store).await,
        create_sample_app(store).await,
    );
    let hour = t0();
    let next = hour + chrono::Duration::hours(1);
    let usage = |app_id, window_start, requests| crate::store::QuotaUsage {
        app_id,
        window_start,
        requests,
        installs: 0,
    };
    store
        .record_batch(&[], &[], &[usage(a, hour, 3), usage(b, hour, 1)])
        .await
        .expect("first batch");
    store
        .record_batch(&[], &[], &[usage(a, hour, 2), usage(a, next, 7)])
        .await
        .expect("second batch");
    let mut now = store.quota_usage(hour).await.expect("usage");
    now.sort_by_key(|u| u.requests);
    assert_eq!(now, vec![usage(b, hour, 1), usage(a, hour, 5)]);
    assert_eq!(
        store.quota_usage(next).await.expect("usage"),
        vec![usage(a, next, 7)]
    );
    assert!(store
        .quota_usage(next + chrono::Duration::hours(1))
        .await
        .expect("usage")
        .is_empty());
}

fn quota_install(app: AppId, key: &str, quota: u32, at: DateTime<Utc>) -> NewEvent {
    sample_event(SampleEvent {
        app,
        dedupe_key: key.into(),
        ids: idfa(&format!("IDFA-{key}")),
        received_at: at,
        install_quota: Some(quota),
        ..Default::default()
    })
}

async fn install_quota_grants_new_installs_only_and_stores_none_over_it(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let at = t0();
    let first = record(store, vec![quota_install(app, "a", 3, at)]).await;
    let first_id = recorded_id(first[0]);
    let event = |key: &str| {
        sample_event(SampleEvent {
            app,
            dedupe_key: key.into(),
            kind: EventKind::Event,
            ids: idfa("IDFA-a"),
            received_at: at,
            install_quota: Some(3),
            ..Default::default()
        })
    };
    // A redelivery and an in-app event use nothing; of four new installs two fit.
    let batch = vec![
        quota_install(app, "a", 3, at),
        event("e1"),
        quota_install(app, "b", 3, at),
        quota_install(app, "c", 3, at),
        quota_install(app, "d", 3, at),
        quota_install(app, "d", 3, at),
        quota_install(app, "e", 3, at),
    ];
    let recorded = store
        .record_batch(&batch, &[], &[])
        .await
        .expect("record batch");
    let o = &recorded.outcomes;
    assert_eq!(
        o[0],
        RecordOutcome::Duplicate {
            first_event_id: first_id
        }
    );
    assert!(matches!(o[1], RecordOutcome::Recorded { .. }), "an event");
    assert!(matches!(o[2], RecordOutcome::Recorded { .. }), "b fits");
    assert!(matches!(o[3], RecordOutcome::Recorded { .. }), "c fits");
    assert_eq!(
        &o[4..],
        &[RecordOutcome::OverQuota; 3],
        "d (and its copy), e"
    );
    assert_eq!(
        recorded
            .installs
            .iter()
            .map(|u| u.installs)
            .collect::<Vec<_>>(),
        vec![3],
        "the window's count after the batch"
    );
    let stored = probe.events(app).await;
    assert_eq!(stored.len(), 4, "a, e1, b, c: nothing over the quota");
    assert!(!stored.values().any(|k| k == "d" || k == "e"));
    assert_eq!(probe.attributions(app).await.len(), 3, "a, b, c");

    // Still full: another new install is refused, an event still stored.
    let again = record(store, vec![quota_install(app, "f", 3, at), event("e2")]).await;
    assert_eq!(again[0], RecordOutcome::OverQuota);
    assert!(matches!(again[1], RecordOutcome::Recorded { .. }));
    // The next clock hour has its own quota.
    let later = record(
        store,
        vec![quota_install(app, "d", 3, at + chrono::Duration::hours(1))],
    )
    .await;
    assert!(
        matches!(later[0], RecordOutcome::Recorded { .. }),
        "{later:?}"
    );

    let connections = store.partner_connections(app).await.expect("connections");
    assert_eq!(connections[0].rate_limited, 4, "d, its copy, e, f");
    assert_eq!(connections[0].installs, 4);
    let usage = store.quota_usage(quota_window(at)).await.expect("usage");
    assert_eq!(usage.iter().map(|u| u.installs).sum::<i64>(), 3);
}

async fn concurrent_batches_share_an_install_quota_exactly(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let batch = |tag: &str| -> Vec<NewEvent> {
        (0..4)
            .map(|i| quota_install(app, &format!("{tag}{i}"), 5, t0()))
            .collect()
    };
    let (one, two, three) = (batch("x"), batch("y"), batch("z"));
    let (a, b, c) = tokio::join!(
        store.record_batch(&one, &[], &[]),
        store.record_batch(&two, &[], &[]),
        store.record_batch(&three, &[], &[]),
    );
    let recorded = [a, b, c]
        .into_iter()
        .flat_map(|r| r.expect("record batch").outcomes)
        .filter(|o| matches!(o, RecordOutcome::Recorded { .. }))
        .count();
    assert_eq!(recorded, 5, "12 installs, a quota of 5");
    assert_eq!(probe.events(app).await.len(), 5);
}

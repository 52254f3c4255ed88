//! Conformance checks of retention: months of events pruned whole, dedupe kept.

use super::*;
use crate::store::{PruneReport, RetentionPolicy};

conformance!(prune_removes_whole_months_past_retention_and_keeps_dedupe_inside_the_window,);

async fn prune_removes_whole_months_past_retention_and_keeps_dedupe_inside_the_window(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let at = |m: u32, d: u32| Utc.with_ymd_and_hms(2024, m, d, 12, 0, 0).unwrap();
    store.prepare_months(at(3, 1)).await.expect("months");
    store.prepare_months(at(5, 1)).await.expect("months");
    let event = |key: &str, received_at| {
        sample_event(SampleEvent {
            app,
            dedupe_key: key.into(),
            ids: idfa(&format!("IDFA-{key}")),
            received_at,
            ..Default::default()
        })
    };
    let batch = vec![
        event("march", at(3, 10)),
        event("april", at(4, 10)),
        event("may", at(5, 1)),
    ];
    let stored = record(store, batch.clone()).await;
    // On 20 May with 40 days kept, the cutoff is 10 April: March goes whole, April
    // (partly within retention) stays. Dedupe keys are kept 45 days (from 5 April).
    let now = at(5, 20);
    let policy = RetentionPolicy {
        events_days: 40,
        dedupe_days: 45,
        raw_days: 40,
    };
    let expected = PruneReport {
        months: vec!["2024-03".into()],
        events: 1,
        dedupe_keys: 1,
        raw_cleared: 0,
    };
    let dry = store.prune(now, policy, true).await.expect("dry run");
    assert_eq!(dry, expected, "a dry run reports");
    assert_eq!(probe.events(app).await.len(), 3, "and removes nothing");

    let done = store.prune(now, policy, false).await.expect("prune");
    assert_eq!(done, expected);
    let left: Vec<String> = probe.events(app).await.into_values().collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&"march".to_owned()));
    if let Probe::Postgres(pool) = probe {
        let partitions: Vec<String> = sqlx::query_scalar(
            "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid \
             where i.inhparent = 'postback_events'::regclass order by 1",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(!partitions.contains(&"postback_events_2024_03".to_owned()));
        assert!(partitions.contains(&"postback_events_2024_04".to_owned()));
    }

    // Redeliveries inside the kept window are still duplicates of the first event.
    let again = record(store, vec![batch[1].clone(), batch[2].clone()]).await;
    assert_eq!(
        again,
        vec![
            RecordOutcome::Duplicate {
                first_event_id: recorded_id(stored[1])
            },
            RecordOutcome::Duplicate {
                first_event_id: recorded_id(stored[2])
            },
        ]
    );
    assert_eq!(
        store.prune(now, policy, false).await.expect("again"),
        PruneReport::default(),
        "nothing left to prune"
    );
}

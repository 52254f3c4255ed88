//! Conformance checks of what migrations do to data written by earlier versions,
//! and of the rollups they maintain.

use super::*;

conformance!(
    identifier_case_migration_merges_users_split_by_case,
    attribution_days_follow_inserts_and_deletes,
);

/// Rows as an earlier version stored them (ids in the case each partner sent), then
/// the identifier-case migration run again: one user, the earliest attribution.
/// (Lookups in any case are checked through the API, on rows the parsers wrote.)
async fn identifier_case_migration_merges_users_split_by_case(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let at = |n: i64| t0() + secs(n);
    let event = |key: &str, partner, ids: Identifiers, n| {
        sample_event(SampleEvent {
            app,
            partner,
            dedupe_key: key.into(),
            ids,
            received_at: at(n),
            ..Default::default()
        })
    };
    let upper = "AAAA1111-2222-4333-8444-555566667777";
    let lower = upper.to_ascii_lowercase();
    let gaid = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    record(
        store,
        vec![
            event("k1", PartnerId::Kochava, idfa(upper), 10),
            event("t1", PartnerId::Tune, idfa(&lower), 20),
            event(
                "g1",
                PartnerId::Adjust,
                Identifiers {
                    google_aid: Some(gaid.to_ascii_uppercase()),
                    ..Identifiers::default()
                },
                30,
            ),
            event(
                "g2",
                PartnerId::Appsflyer,
                Identifiers {
                    google_aid: Some(gaid.into()),
                    ..Identifiers::default()
                },
                40,
            ),
        ],
    )
    .await;
    assert_eq!(
        probe.attributions(app).await.len(),
        4,
        "split as stored before"
    );

    probe
        .run_script(match probe {
            Probe::Postgres(_) => {
                include_str!("../../../migrations/postgres/0006_identifier_case.sql")
            }
            Probe::Sqlite(_) => include_str!("../../../migrations/sqlite/0006_identifier_case.sql"),
        })
        .await;

    let rows = probe.attributions(app).await;
    assert_eq!(rows.len(), 2, "one attribution per device: {rows:?}");
    assert_eq!(rows[0].partner, "kochava", "the earliest install wins");
    assert_eq!(rows[0].idfa.as_deref(), Some(upper));
    assert_eq!(rows[1].partner, "adjust");
    assert_eq!(rows[1].idfa, None);
}

/// The chart's rollup counts what `attributions` holds, whoever inserts or deletes.
async fn attribution_days_follow_inserts_and_deletes(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let day = t0().date_naive();
    let events: Vec<NewEvent> = (0..5)
        .map(|i| {
            sample_event(SampleEvent {
                app,
                dedupe_key: format!("d{i}"),
                ids: idfa(&format!("IDFA-{i}")),
                source: (i < 3).then(|| "net".to_owned()),
                received_at: t0() + secs(i),
                ..Default::default()
            })
        })
        .collect();
    record(store, events).await;
    let counts = |rows: Vec<DailySourceCount>| {
        rows.into_iter()
            .map(|r| (r.source, r.installs))
            .collect::<Vec<_>>()
    };
    let daily = store
        .daily_installs_by_source(app, day, 8)
        .await
        .expect("daily");
    assert_eq!(
        counts(daily),
        vec![
            (ChartSource::Source("net".into()), 3),
            (ChartSource::NoSource, 2)
        ]
    );

    let first = probe.attributions(app).await[0].event_id;
    probe
        .run_script(&format!(
            "delete from attributions where event_id = '{first}'"
        ))
        .await;
    let daily = store
        .daily_installs_by_source(app, day, 8)
        .await
        .expect("daily");
    assert_eq!(
        counts(daily),
        vec![
            (ChartSource::Source("net".into()), 2),
            (ChartSource::NoSource, 2)
        ],
        "a deleted attribution leaves the chart"
    );
}

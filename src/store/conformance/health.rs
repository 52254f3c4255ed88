//! Conformance of what stale detection reads: the newest accepted postback per
//! partner and the gap statistic, alike on both engines.

use super::*;
use crate::store::GapStats;

conformance!(
    newest_accepted_postback_per_partner_counts_events_and_survives_pruning,
    gap_percentiles_follow_the_window_and_the_rank,
);

async fn seed(store: &dyn Store, app: AppId, partner: PartnerId, at: &[i64], kind: EventKind) {
    let events = at
        .iter()
        .map(|&n| {
            sample_event(SampleEvent {
                app,
                partner,
                dedupe_key: format!("{partner}-{n}-{kind:?}"),
                kind,
                ids: idfa(&format!("AAAA1111-2222-4333-8444-{n:012}")),
                received_at: t0() + secs(n),
                ..Default::default()
            })
        })
        .collect();
    record(store, events).await;
}

async fn newest_accepted_postback_per_partner_counts_events_and_survives_pruning(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let other = create_sample_app(store).await;
    seed(
        store,
        app,
        PartnerId::Kochava,
        &[0, 60, 120],
        EventKind::Install,
    )
    .await;
    // An in-app event after the last install is an accepted postback too.
    seed(store, app, PartnerId::Kochava, &[300], EventKind::Event).await;
    seed(store, app, PartnerId::Tune, &[30], EventKind::Install).await;
    seed(store, other, PartnerId::Tune, &[90], EventKind::Install).await;

    let rows = store.last_accepted(Some(app)).await.unwrap();
    let got: Vec<(PartnerId, ConnectionStatus, Option<DateTime<Utc>>)> = rows
        .iter()
        .map(|r| (r.partner, r.status, r.last_accepted_at))
        .collect();
    assert_eq!(
        got,
        [
            (
                PartnerId::Kochava,
                ConnectionStatus::Connected,
                Some(t0() + secs(300))
            ),
            (
                PartnerId::Tune,
                ConnectionStatus::Connected,
                Some(t0() + secs(30))
            ),
        ]
    );
    let all = store.last_accepted(None).await.unwrap();
    assert!(all
        .iter()
        .any(|r| r.app_id == other && r.partner == PartnerId::Tune));
    assert!(all.iter().filter(|r| r.app_id == app).count() == 2);

    // Events pruned: the install time on partner_connections still counts.
    probe
        .run_script(&format!(
            "delete from postback_events where partner = 'tune' and app_id = '{}'",
            app.as_uuid()
        ))
        .await;
    let rows = store.last_accepted(Some(app)).await.unwrap();
    assert_eq!(rows[1].last_accepted_at, Some(t0() + secs(30)));
}

async fn gap_percentiles_follow_the_window_and_the_rank(store: &dyn Store, _probe: &Probe) {
    let app = create_sample_app(store).await;
    seed(
        store,
        app,
        PartnerId::Adjust,
        &[0, 60, 120, 180, 600, 660],
        EventKind::Install,
    )
    .await;
    let gaps = |since: i64, until: i64, p: u8| {
        store.accepted_gaps(
            app,
            PartnerId::Adjust,
            t0() + secs(since),
            t0() + secs(until),
            p,
        )
    };
    let close = |got: GapStats, samples: i64, gap: Option<f64>| {
        assert_eq!(got.samples, samples, "{got:?}");
        match (got.gap_seconds, gap) {
            (Some(g), Some(e)) => assert!((g - e).abs() < 0.01, "{got:?} against {e}"),
            (g, e) => assert_eq!(g, e),
        }
    };
    // Gaps 60, 60, 60, 420, 60: the 99th percentile of five is the longest.
    close(gaps(-3600, 3600, 99).await.unwrap(), 6, Some(420.0));
    close(gaps(-3600, 3600, 50).await.unwrap(), 6, Some(60.0));
    close(gaps(-3600, 3600, 100).await.unwrap(), 6, Some(420.0));
    // The window bounds are inclusive.
    close(gaps(120, 600, 99).await.unwrap(), 3, Some(420.0));
    close(gaps(0, 180, 99).await.unwrap(), 4, Some(60.0));
    close(gaps(600, 600, 99).await.unwrap(), 1, None);
    close(gaps(700, 800, 99).await.unwrap(), 0, None);
    let none = store
        .accepted_gaps(app, PartnerId::Branch, t0(), t0() + secs(3600), 99)
        .await
        .unwrap();
    close(none, 0, None);
}

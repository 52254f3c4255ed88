//! Conformance checks of the summaries and the status page chart, and of the
//! extreme times they are bounded by.

use super::reads::{install, record_installs, segments};
use super::*;

conformance!(
    the_extreme_storable_times_bound_summaries_and_pages_alike,
    summary_counts_by_each_dimension_within_bounds,
    daily_installs_by_source_counts_per_utc_day,
);

async fn summary_counts_by_each_dimension_within_bounds(store: &dyn Store, _: &Probe) {
    let app = create_sample_app(store).await;
    let at = |n: i64| t0() + secs(n);
    let seg =
        |source: Option<&str>, campaign: Option<&str>, adgroup: Option<&str>, ad: Option<&str>| {
            Segments {
                source: source.map(Into::into),
                campaign: campaign.map(Into::into),
                adgroup: adgroup.map(Into::into),
                ad: ad.map(Into::into),
            }
        };
    // (segments, seconds after t0)
    let rows = [
        (seg(Some("b"), Some("c1"), Some("g1"), Some("a1")), 0),
        (seg(Some("b"), Some("c1"), Some("g1"), Some("a1")), 10),
        (seg(Some("b"), Some("c2"), Some("g2"), None), 20),
        (seg(Some("a"), Some("c2"), Some("g2"), None), 30),
        (seg(Some("a"), Some("c1"), None, None), 40),
        (seg(Some("B"), None, None, None), 50),
        (seg(None, None, None, Some("a2")), 60),
        (seg(None, None, Some("g3"), Some("a2")), 70),
        (seg(Some("a"), Some("c3"), Some("g3"), Some("a3")), 80),
    ];
    let events: Vec<NewEvent> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (segments, offset))| {
            install(
                app,
                &format!("u{i}"),
                PartnerId::Kochava,
                segments,
                at(offset),
            )
        })
        .collect();
    record_installs(store, events).await;
    // Another app's installs are never counted.
    let other_app = create_sample_app(store).await;
    record_installs(
        store,
        vec![install(
            other_app,
            "x",
            PartnerId::Kochava,
            seg(Some("b"), Some("c1"), Some("g1"), Some("a1")),
            at(0),
        )],
    )
    .await;

    let row = |value: Option<&str>, installs: i64| SummaryRow {
        value: value.map(Into::into),
        installs,
    };
    // Most installs first; equal counts by value (bytes: "B" before "a"), absent last.
    // (dimension, since and until in seconds after t0, expected rows)
    type Case = (Dimension, Option<i64>, Option<i64>, Vec<SummaryRow>);
    let cases: Vec<Case> = vec![
        (
            Dimension::Source,
            None,
            None,
            vec![
                row(Some("a"), 3),
                row(Some("b"), 3),
                row(None, 2),
                row(Some("B"), 1),
            ],
        ),
        (
            Dimension::Campaign,
            None,
            None,
            vec![
                row(Some("c1"), 3),
                row(None, 3),
                row(Some("c2"), 2),
                row(Some("c3"), 1),
            ],
        ),
        (
            Dimension::Adgroup,
            None,
            None,
            vec![
                row(None, 3),
                row(Some("g1"), 2),
                row(Some("g2"), 2),
                row(Some("g3"), 2),
            ],
        ),
        (
            Dimension::Ad,
            None,
            None,
            vec![
                row(None, 4),
                row(Some("a1"), 2),
                row(Some("a2"), 2),
                row(Some("a3"), 1),
            ],
        ),
        // since is inclusive, until exclusive.
        (
            Dimension::Source,
            Some(10),
            None,
            vec![
                row(Some("a"), 3),
                row(Some("b"), 2),
                row(None, 2),
                row(Some("B"), 1),
            ],
        ),
        (
            Dimension::Source,
            Some(50),
            Some(90),
            vec![row(None, 2), row(Some("B"), 1), row(Some("a"), 1)],
        ),
        (Dimension::Source, None, Some(30), vec![row(Some("b"), 3)]),
        (
            Dimension::Campaign,
            Some(10),
            Some(50),
            vec![row(Some("c1"), 2), row(Some("c2"), 2)],
        ),
        (
            Dimension::Ad,
            Some(50),
            Some(80),
            vec![row(Some("a2"), 2), row(None, 1)],
        ),
        (Dimension::Ad, Some(81), None, vec![]),
        (Dimension::Ad, Some(40), Some(40), vec![]),
    ];
    for (by, since, until, expected) in cases {
        let (since, until) = (since.map(at), until.map(at));
        let page = store
            .summary(app, by, since, until, 100)
            .await
            .expect("summary");
        assert_eq!(
            page.rows, expected,
            "{by:?} since {since:?} until {until:?}"
        );
        assert_eq!(page.total, expected.iter().map(|r| r.installs).sum::<i64>());
        assert_eq!(page.other(), 0);
    }
    // The database keeps the top values; the rest is only counted.
    let all = store
        .summary(app, Dimension::Ad, None, None, 100)
        .await
        .expect("summary");
    for limit in 1..=all.rows.len() as u32 {
        let page = store
            .summary(app, Dimension::Ad, None, None, limit)
            .await
            .expect("summary");
        assert_eq!(page.rows[..], all.rows[..limit as usize], "limit {limit}");
        assert_eq!(page.total, all.total, "limit {limit}");
        let left_out: i64 = all.rows[limit as usize..].iter().map(|r| r.installs).sum();
        assert_eq!(page.other(), left_out, "limit {limit}");
    }
}

async fn daily_installs_by_source_counts_per_utc_day(store: &dyn Store, _: &Probe) {
    let app = create_sample_app(store).await;
    let day = |d: u32| Utc.with_ymd_and_hms(2024, 5, d, 0, 0, 0).unwrap();
    let last_micro = chrono::Duration::microseconds(1);
    let source = |s: Option<&str>| Segments {
        source: s.map(Into::into),
        campaign: Some("c".into()),
        adgroup: None,
        ad: None,
    };
    let rows = [
        (Some("net-b"), day(1) + secs(3600)), // before `since`: not counted
        (Some("net-b"), day(2)),
        (Some("net-b"), day(3) - last_micro),
        (Some("net-a"), day(2) + secs(60)),
        (None, day(2) + secs(120)),
        (Some("net-b"), day(3)),
        (Some("net-a"), day(4) + secs(5)),
        (Some("net-a"), day(4) + secs(6)),
    ];
    let events: Vec<NewEvent> = rows
        .iter()
        .enumerate()
        .map(|(i, &(s, at))| install(app, &format!("u{i}"), PartnerId::Kochava, source(s), at))
        .collect();
    record_installs(store, events).await;
    let other_app = create_sample_app(store).await;
    record_installs(
        store,
        vec![install(
            other_app,
            "x",
            PartnerId::Kochava,
            source(Some("net-a")),
            day(2),
        )],
    )
    .await;

    let may = |d: u32| chrono::NaiveDate::from_ymd_opt(2024, 5, d).unwrap();
    let count = |d: u32, s: ChartSource, installs: i64| DailySourceCount {
        day: may(d),
        source: s,
        installs,
    };
    let named = |s: &str| ChartSource::Source(s.to_owned());
    let daily = |since: u32, top: u32| async move {
        store
            .daily_installs_by_source(app, may(since), top)
            .await
            .expect("daily counts")
    };
    assert_eq!(
        daily(2, 8).await,
        vec![
            count(2, named("net-a"), 1),
            count(2, named("net-b"), 2),
            count(2, ChartSource::NoSource, 1),
            count(3, named("net-b"), 1),
            count(4, named("net-a"), 2),
        ]
    );
    assert_eq!(
        daily(3, 8).await,
        vec![count(3, named("net-b"), 1), count(4, named("net-a"), 2)]
    );
    assert!(daily(5, 8).await.is_empty());
    // From May 2 on: net-b 3, net-a 3 (ties by name), no source 1. The top one is
    // net-a; the rest is summed per day as Other.
    assert_eq!(
        daily(2, 1).await,
        vec![
            count(2, named("net-a"), 1),
            count(2, ChartSource::Other, 3),
            count(3, ChartSource::Other, 1),
            count(4, named("net-a"), 2),
        ]
    );
}

/// Year 1 and the last microsecond of 9999, the range the read API clamps times to,
/// compare like any other time on both engines (SQLite compares stored text).
async fn the_extreme_storable_times_bound_summaries_and_pages_alike(store: &dyn Store, _: &Probe) {
    let app = create_sample_app(store).await;
    record_installs(
        store,
        vec![
            install(
                app,
                "a",
                PartnerId::Kochava,
                segments("s", "c", "g", "a"),
                t0(),
            ),
            install(
                app,
                "b",
                PartnerId::Tune,
                segments("s", "c", "g", "a"),
                t0() + secs(1),
            ),
        ],
    )
    .await;
    let first = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
    let last = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
        + chrono::Duration::microseconds(999_999);
    let total = |since, until| async move {
        store
            .summary(app, Dimension::Source, since, until, 100)
            .await
            .expect("summary")
            .total
    };
    assert_eq!(total(Some(first), Some(last)).await, 2);
    assert_eq!(total(Some(first), None).await, 2);
    assert_eq!(total(None, Some(last)).await, 2);
    assert_eq!(total(Some(last), None).await, 0);
    assert_eq!(total(None, Some(first)).await, 0);
    let cursor = |attributed_at| UserCursor {
        attributed_at,
        id: Uuid::max(),
    };
    let page = |after| async move {
        store
            .list_users(app, &UserFilter::default(), Some(&after), 10)
            .await
            .expect("list")
            .len()
    };
    assert_eq!(
        page(cursor(last)).await,
        2,
        "everything is before the last time"
    );
    assert_eq!(page(cursor(first)).await, 0, "nothing is before the first");
}

//! Conformance checks of the read side: users, lookup, summaries, the chart.

use super::*;

conformance!(
    list_users_filters_on_each_dimension_and_partner_by_exact_match,
    list_users_pages_walk_every_row_once_newest_first,
    list_users_cursor_survives_a_deleted_row_and_skips_newer_rows,
    lookup_user_by_each_identifier_kind,
    lookup_user_follows_the_identifier_to_its_user_not_to_copies,
);

pub(super) fn segments(source: &str, campaign: &str, adgroup: &str, ad: &str) -> Segments {
    Segments {
        source: Some(source.into()),
        campaign: Some(campaign.into()),
        adgroup: Some(adgroup.into()),
        ad: Some(ad.into()),
    }
}

/// An install of a new user (identifiers derived from `key`) attributed at `at`.
pub(super) fn install(
    app: AppId,
    key: &str,
    partner: PartnerId,
    segments: Segments,
    at: DateTime<Utc>,
) -> NewEvent {
    let mut event = sample_event(SampleEvent {
        app,
        partner,
        dedupe_key: key.into(),
        ids: Identifiers {
            user_id: Some(format!("user-{key}")),
            // Stored in canonical case (upper), as the parsers hand it over.
            idfa: Some(format!("IDFA-{}", key.to_ascii_uppercase())),
            ..Identifiers::default()
        },
        received_at: at,
        ..Default::default()
    });
    event.postback.segments = segments;
    event
}

/// Records `events` (one batch) and returns their event ids in order.
pub(super) async fn record_installs(store: &dyn Store, events: Vec<NewEvent>) -> Vec<Uuid> {
    record(store, events)
        .await
        .into_iter()
        .map(recorded_id)
        .collect()
}

fn event_ids(records: &[AttributionRecord]) -> Vec<Uuid> {
    records.iter().map(|r| r.event_id).collect()
}

async fn users(store: &dyn Store, app: AppId, filter: &UserFilter) -> Vec<Uuid> {
    event_ids(
        &store
            .list_users(app, filter, None, 100)
            .await
            .expect("list users"),
    )
}

fn cursor_of(record: &AttributionRecord) -> UserCursor {
    UserCursor {
        attributed_at: record.attributed_at,
        id: record.id,
    }
}

/// Every page of `limit` rows from the start, until an empty page; the sizes too.
async fn walk_pages(
    store: &dyn Store,
    app: AppId,
    filter: &UserFilter,
    limit: u32,
) -> (Vec<AttributionRecord>, Vec<usize>) {
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    let mut cursor: Option<UserCursor> = None;
    loop {
        let page = store
            .list_users(app, filter, cursor.as_ref(), limit)
            .await
            .expect("list users page");
        sizes.push(page.len());
        let Some(last) = page.last() else {
            return (all, sizes);
        };
        assert!(sizes.len() <= 100, "pagination does not end");
        cursor = Some(cursor_of(last));
        all.extend(page);
    }
}

fn assert_newest_first(records: &[AttributionRecord]) {
    for pair in records.windows(2) {
        assert!(
            (pair[0].attributed_at, pair[0].id) > (pair[1].attributed_at, pair[1].id),
            "newest first by (attributed_at, id): {:?} then {:?}",
            (pair[0].attributed_at, pair[0].id),
            (pair[1].attributed_at, pair[1].id)
        );
    }
}

async fn list_users_filters_on_each_dimension_and_partner_by_exact_match(
    store: &dyn Store,
    _: &Probe,
) {
    use PartnerId::{Kochava, Tune};
    let app = create_sample_app(store).await;
    let at = |n: i64| t0() + secs(n);
    let ids = record_installs(
        store,
        vec![
            install(app, "r1", Kochava, segments("Net", "C1", "G1", "D1"), at(1)),
            install(app, "r2", Tune, segments("Net", "C1", "G1", "D2"), at(2)),
            // Same ad name under another campaign and adgroup.
            install(app, "r3", Kochava, segments("Net", "C2", "G2", "D1"), at(3)),
            // Same campaign, adgroup and ad names under another source.
            install(
                app,
                "r4",
                Kochava,
                segments("Other", "C1", "G1", "D1"),
                at(4),
            ),
            // Differs only in case, or extends each value: never matches exactly.
            install(
                app,
                "r5",
                Kochava,
                segments("net", "C1x", "G1 ", "D%"),
                at(5),
            ),
            install(app, "r6", Tune, Segments::default(), at(6)),
        ],
    )
    .await;
    let [r1, r2, r3, r4, r5, r6] = ids[..] else {
        panic!("six installs")
    };
    // Another app with the same segments: never listed.
    let other_app = create_sample_app(store).await;
    record_installs(
        store,
        vec![install(
            other_app,
            "r1",
            Kochava,
            segments("Net", "C1", "G1", "D1"),
            at(10),
        )],
    )
    .await;

    let filter =
        |source: Option<&str>, campaign: Option<&str>, adgroup: Option<&str>, ad: Option<&str>| {
            UserFilter {
                source: source.map(Into::into),
                campaign: campaign.map(Into::into),
                adgroup: adgroup.map(Into::into),
                ad: ad.map(Into::into),
                partner: None,
            }
        };
    let cases: Vec<(UserFilter, Vec<Uuid>)> = vec![
        (UserFilter::default(), vec![r6, r5, r4, r3, r2, r1]),
        (filter(Some("Net"), None, None, None), vec![r3, r2, r1]),
        (filter(Some("net"), None, None, None), vec![r5]),
        (filter(Some("Ne"), None, None, None), vec![]),
        (filter(Some("NET"), None, None, None), vec![]),
        (filter(None, Some("C1"), None, None), vec![r4, r2, r1]),
        (filter(None, Some("C"), None, None), vec![]),
        (filter(None, None, Some("G1"), None), vec![r4, r2, r1]),
        (filter(None, None, Some("G1 "), None), vec![r5]),
        (filter(None, None, None, Some("D1")), vec![r4, r3, r1]),
        (filter(None, None, None, Some("D%")), vec![r5]),
        (filter(None, None, None, Some("D_")), vec![]),
        (filter(None, None, None, Some("%")), vec![]),
        (filter(Some("Net"), Some("C1"), None, None), vec![r2, r1]),
        (
            filter(Some("Net"), Some("C1"), Some("G1"), Some("D1")),
            vec![r1],
        ),
        (
            filter(Some("Other"), Some("C1"), Some("G1"), Some("D1")),
            vec![r4],
        ),
        (
            filter(Some("Net"), Some("C2"), Some("G1"), Some("D1")),
            vec![],
        ),
        (
            UserFilter {
                partner: Some(Kochava),
                ..filter(Some("Net"), Some("C1"), Some("G1"), Some("D1"))
            },
            vec![r1],
        ),
        (
            UserFilter {
                partner: Some(Tune),
                ..filter(Some("Net"), Some("C1"), Some("G1"), Some("D1"))
            },
            vec![],
        ),
        (
            UserFilter {
                partner: Some(Tune),
                ..UserFilter::default()
            },
            vec![r6, r2],
        ),
        (
            UserFilter {
                partner: Some(PartnerId::Branch),
                ..UserFilter::default()
            },
            vec![],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(users(store, app, &filter).await, expected, "{filter:?}");
    }

    // The records carry every stored column.
    let listed = store
        .list_users(app, &filter(None, None, None, Some("D2")), None, 10)
        .await
        .expect("list users");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_id, r2);
    assert_eq!(listed[0].partner, Tune);
    assert_eq!(listed[0].segments, segments("Net", "C1", "G1", "D2"));
    assert_eq!(listed[0].ids.user_id.as_deref(), Some("user-r2"));
    assert_eq!(listed[0].ids.idfa.as_deref(), Some("IDFA-R2"));
    assert_eq!(listed[0].attributed_at, at(2));
    assert!(store
        .list_users(
            other_app,
            &filter(Some("Other"), None, None, None),
            None,
            10
        )
        .await
        .expect("list users")
        .is_empty());
}

async fn list_users_pages_walk_every_row_once_newest_first(store: &dyn Store, _: &Probe) {
    let app = create_sample_app(store).await;
    // 25 installs in one batch, in shuffled time order, several sharing one
    // attributed_at so that the id decides their order.
    let at = |i: i64| t0() + secs((i * 7) % 25 / 3);
    let events: Vec<NewEvent> = (0..25)
        .map(|i| {
            let source = if i % 2 == 0 { "even" } else { "odd" };
            install(
                app,
                &format!("u{i:02}"),
                PartnerId::Kochava,
                segments(source, "c", "g", "a"),
                at(i),
            )
        })
        .collect();
    let mut inserted = record_installs(store, events).await;
    inserted.sort();

    let everything = store
        .list_users(app, &UserFilter::default(), None, 1000)
        .await
        .expect("list users");
    assert_eq!(everything.len(), 25);
    assert_newest_first(&everything);

    let (walked, sizes) = walk_pages(store, app, &UserFilter::default(), 10).await;
    assert_eq!(sizes, vec![10, 10, 5, 0]);
    assert_eq!(walked, everything, "pages concatenate to the full listing");
    let mut seen = event_ids(&walked);
    seen.sort();
    assert_eq!(seen, inserted, "every row exactly once");

    // The same with a filter, and pages that end exactly at the last row.
    let even = UserFilter {
        source: Some("even".into()),
        ..UserFilter::default()
    };
    let (walked, sizes) = walk_pages(store, app, &even, 13).await;
    assert_eq!(sizes, vec![13, 0]);
    assert_eq!(
        walked,
        store.list_users(app, &even, None, 100).await.unwrap()
    );
    assert!(walked
        .iter()
        .all(|r| r.segments.source.as_deref() == Some("even")));
    let (walked_by_one, sizes) = walk_pages(store, app, &even, 1).await;
    assert_eq!(sizes.len(), 14);
    assert_eq!(walked_by_one, walked);

    // A limit of zero returns nothing.
    assert!(store
        .list_users(app, &UserFilter::default(), None, 0)
        .await
        .expect("list users")
        .is_empty());
}

async fn list_users_cursor_survives_a_deleted_row_and_skips_newer_rows(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let events: Vec<NewEvent> = (0..25)
        .map(|i| {
            install(
                app,
                &format!("u{i:02}"),
                PartnerId::Kochava,
                segments("s", "c", "g", "a"),
                t0() + secs(i * 10),
            )
        })
        .collect();
    record_installs(store, events).await;
    let all = store
        .list_users(app, &UserFilter::default(), None, 100)
        .await
        .expect("list users");
    assert_eq!(all.len(), 25);

    let first = store
        .list_users(app, &UserFilter::default(), None, 10)
        .await
        .expect("first page");
    assert_eq!(first, all[..10]);
    let cursor = cursor_of(&first[9]);

    // The row the cursor points at is deleted, and newer users arrive.
    probe.delete_attribution(first[9].id).await;
    let newer: Vec<NewEvent> = (0..3)
        .map(|i| {
            install(
                app,
                &format!("new{i}"),
                PartnerId::Kochava,
                segments("s", "c", "g", "a"),
                t0() + secs(1000 + i),
            )
        })
        .collect();
    let newer_ids = record_installs(store, newer).await;

    let second = store
        .list_users(app, &UserFilter::default(), Some(&cursor), 10)
        .await
        .expect("second page");
    assert_eq!(second, all[10..20], "continues right after the deleted row");
    let third = store
        .list_users(
            app,
            &UserFilter::default(),
            Some(&cursor_of(&second[9])),
            10,
        )
        .await
        .expect("third page");
    assert_eq!(third, all[20..]);
    let fourth = store
        .list_users(app, &UserFilter::default(), Some(&cursor_of(&third[4])), 10)
        .await
        .expect("fourth page");
    assert!(fourth.is_empty(), "{fourth:?}");
    for page in [&second, &third] {
        assert!(page.iter().all(|r| !newer_ids.contains(&r.event_id)));
    }

    // A fresh listing starts with the newer rows and no longer has the deleted one.
    let fresh = users(store, app, &UserFilter::default()).await;
    assert_eq!(fresh.len(), 27);
    assert_eq!(fresh[..3], [newer_ids[2], newer_ids[1], newer_ids[0]]);
    assert!(!fresh.contains(&first[9].event_id));
}

async fn lookup_user_by_each_identifier_kind(store: &dyn Store, _: &Probe) {
    let app = create_sample_app(store).await;
    let all_ids = |tag: &str| Identifiers {
        user_id: Some(format!("user-{tag}")),
        idfa: Some(format!("IDFA-{tag}")),
        idfv: Some(format!("IDFV-{tag}")),
        google_aid: Some(format!("gaid-{tag}")),
        android_id: Some(format!("android-{tag}")),
        partner_device_id: Some(format!("device-{tag}")),
    };
    let mut first = install(
        app,
        "one",
        PartnerId::Tune,
        segments("s1", "c1", "g1", "a1"),
        t0(),
    );
    first.postback.ids = all_ids("1");
    let mut second = install(
        app,
        "two",
        PartnerId::Kochava,
        segments("s2", "c2", "g2", "a2"),
        t0() + secs(1),
    );
    second.postback.ids = all_ids("2");
    let [one, two] = record_installs(store, vec![first, second]).await[..] else {
        panic!("two installs")
    };
    let other_app = create_sample_app(store).await;

    for kind in IdentifierKind::ALL {
        for (tag, event) in [("1", one), ("2", two)] {
            let value = all_ids(tag)
                .pairs()
                .find(|(column, _)| *column == kind.column())
                .and_then(|(_, value)| value.map(str::to_owned))
                .expect("every identifier set");
            let found = store
                .lookup_user(app, kind, &value)
                .await
                .expect("lookup")
                .unwrap_or_else(|| panic!("{kind:?} {value} found"));
            assert_eq!(found.event_id, event, "{kind:?} {value}");
            assert_eq!(found.ids, all_ids(tag));
            // Advertising ids match in any case (partners.md §1); every other
            // identifier exactly. A prefix, or another app, finds nothing.
            let ignores_case = matches!(
                kind,
                IdentifierKind::Idfa | IdentifierKind::Idfv | IdentifierKind::GoogleAid
            );
            for other_case in [value.to_uppercase(), value.to_lowercase()] {
                if other_case != value {
                    let found = store.lookup_user(app, kind, &other_case).await.unwrap();
                    assert_eq!(
                        found.map(|a| a.event_id),
                        ignores_case.then_some(event),
                        "{kind:?} {other_case}"
                    );
                }
            }
            let prefix = &value[..value.len() - 1];
            assert_eq!(store.lookup_user(app, kind, prefix).await.unwrap(), None);
            assert_eq!(
                store.lookup_user(other_app, kind, &value).await.unwrap(),
                None
            );
        }
        assert_eq!(
            store.lookup_user(app, kind, "nobody").await.unwrap(),
            None,
            "{kind:?} miss"
        );
    }
    let found = store
        .lookup_user(app, IdentifierKind::Idfv, "IDFV-1")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.partner, PartnerId::Tune);
    assert_eq!(found.segments, segments("s1", "c1", "g1", "a1"));
    assert_eq!(found.attributed_at, t0());
    // A value of one identifier is not found under another kind.
    assert_eq!(
        store
            .lookup_user(app, IdentifierKind::Idfa, "IDFV-1")
            .await
            .unwrap(),
        None
    );
}

async fn lookup_user_follows_the_identifier_to_its_user_not_to_copies(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let [install_id] = record_installs(
        store,
        vec![install(
            app,
            "u",
            PartnerId::Kochava,
            segments("s", "c", "g", "a"),
            t0() + secs(100),
        )],
    )
    .await[..] else {
        panic!("one install")
    };
    // Two in-app events of the same user, which attribute nothing themselves.
    let event = |key: &str| {
        sample_event(SampleEvent {
            app,
            dedupe_key: key.into(),
            kind: EventKind::Event,
            ids: idfa("IDFA-U"),
            ..Default::default()
        })
    };
    let [later, earlier] = record_installs(store, vec![event("e1"), event("e2")]).await[..] else {
        panic!("two events")
    };
    probe
        .copy_attribution(install_id, later, t0() + secs(200))
        .await;
    probe
        .copy_attribution(install_id, earlier, t0() + secs(50))
        .await;
    for kind in [IdentifierKind::UserId, IdentifierKind::Idfa] {
        let value = if kind == IdentifierKind::UserId {
            "user-u"
        } else {
            "IDFA-U"
        };
        let found = store
            .lookup_user(app, kind, value)
            .await
            .expect("lookup")
            .expect("found");
        // Rows copied behind the store's back share the identifier but own none
        // of it: the identifier belongs to the user the store attributed.
        assert_eq!(
            found.event_id, install_id,
            "{kind:?}: the user's attribution"
        );
        assert_eq!(found.attributed_at, t0() + secs(100));
    }
}

//! Conformance checks of the write path: dedupe, first touch, counters, quota.

use super::*;

conformance!(
    a_delivery_row_written_twice_keeps_the_first_and_fails_nothing,
    a_known_users_new_identifier_joins_that_user,
    record_batch_stores_an_accepted_event_under_its_id,
    record_batch_dedupes_against_an_earlier_batch,
    record_batch_dedupes_within_batch,
    same_dedupe_key_under_another_partner_or_app_is_a_new_event,
    first_touch_attribution_keeps_the_first_install_of_a_user,
    first_touch_attribution_applies_within_one_batch,
    events_never_create_attributions,
    counters_and_status_after_a_mixed_batch,
    app_with_only_organic_deltas_stays_not_connected,
    raw_payload_round_trips_as_json,
    fifty_event_batch_returns_fifty_outcomes_in_order,
    a_batch_larger_than_one_statement_dedupes_and_attributes_across_apps,
    empty_batch_records_nothing,
    concurrent_batches_attribute_a_new_user_once,
    concurrent_batches_with_the_same_keys_in_opposite_order_both_succeed,
);

async fn record_batch_stores_an_accepted_event_under_its_id(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let outcomes = record(
        store,
        vec![sample_event(SampleEvent {
            app,
            ..Default::default()
        })],
    )
    .await;
    let id = recorded_id(outcomes[0]);
    assert_eq!(id.get_version_num(), 7, "event ids are UUID v7");
    let stored = probe.events(app).await;
    assert_eq!(stored, HashMap::from([(id, "delivery-1".to_owned())]));
}

async fn record_batch_dedupes_against_an_earlier_batch(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let event = || {
        sample_event(SampleEvent {
            app,
            dedupe_key: "k".into(),
            ..Default::default()
        })
    };
    let first = recorded_id(record(store, vec![event()]).await[0]);
    let again = record(store, vec![event()]).await;
    assert_eq!(
        again,
        vec![RecordOutcome::Duplicate {
            first_event_id: first
        }]
    );
    assert_eq!(probe.events(app).await.len(), 1, "no second row");
}

async fn record_batch_dedupes_within_batch(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let copy = || {
        sample_event(SampleEvent {
            app,
            dedupe_key: "k".into(),
            ..Default::default()
        })
    };
    let other = sample_event(SampleEvent {
        app,
        dedupe_key: "a".into(),
        ..Default::default()
    });
    let outcomes = record(store, vec![copy(), other, copy(), copy()]).await;
    let first = recorded_id(outcomes[0]);
    recorded_id(outcomes[1]);
    assert_eq!(
        outcomes[2],
        RecordOutcome::Duplicate {
            first_event_id: first
        }
    );
    assert_eq!(
        outcomes[3],
        RecordOutcome::Duplicate {
            first_event_id: first
        }
    );
    assert_eq!(probe.events(app).await.len(), 2);
    let connections = store.partner_connections(app).await.expect("connections");
    assert_eq!((connections[0].installs, connections[0].duplicates), (2, 2));
}

async fn same_dedupe_key_under_another_partner_or_app_is_a_new_event(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let other_app = create_sample_app(store).await;
    let event = |app, partner| {
        sample_event(SampleEvent {
            app,
            partner,
            dedupe_key: "same".into(),
            ..Default::default()
        })
    };
    let outcomes = record(
        store,
        vec![
            event(app, PartnerId::Kochava),
            event(app, PartnerId::Tune),
            event(other_app, PartnerId::Kochava),
        ],
    )
    .await;
    let ids: Vec<Uuid> = outcomes.into_iter().map(recorded_id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    assert_eq!(probe.events(app).await.len(), 2);
    assert_eq!(probe.events(other_app).await.len(), 1);
}

async fn first_touch_attribution_keeps_the_first_install_of_a_user(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let first = sample_event(SampleEvent {
        app,
        dedupe_key: "first".into(),
        ids: Identifiers {
            user_id: Some("u1".into()),
            idfa: Some("IDFA-1".into()),
            ..Identifiers::default()
        },
        source: Some("first-network".into()),
        received_at: t0(),
        ..Default::default()
    });
    let first_id = recorded_id(record(store, vec![first]).await[0]);
    let expected_first = AttributionRow {
        event_id: first_id,
        partner: "kochava".into(),
        source: Some("first-network".into()),
        user_id: Some("u1".into()),
        idfa: Some("IDFA-1".into()),
        attributed_at: t0(),
    };
    assert_eq!(probe.attributions(app).await, vec![expected_first.clone()]);

    // Shares only the idfa (other user_id, another partner): same user, no change.
    let same_user = sample_event(SampleEvent {
        app,
        partner: PartnerId::Tune,
        dedupe_key: "second".into(),
        ids: Identifiers {
            user_id: Some("u2".into()),
            idfa: Some("IDFA-1".into()),
            google_aid: Some("GAID-2".into()),
            ..Identifiers::default()
        },
        source: Some("second-network".into()),
        received_at: t0() + secs(10),
        ..Default::default()
    });
    recorded_id(record(store, vec![same_user]).await[0]);
    assert_eq!(
        probe.attributions(app).await,
        vec![expected_first.clone()],
        "first touch wins"
    );

    // The idfa value appears in another column: identifiers match column to column.
    let new_user = sample_event(SampleEvent {
        app,
        dedupe_key: "third".into(),
        ids: Identifiers {
            user_id: Some("IDFA-1".into()),
            idfa: Some("IDFA-3".into()),
            ..Identifiers::default()
        },
        source: Some("third-network".into()),
        received_at: t0() + secs(20),
        ..Default::default()
    });
    let new_id = recorded_id(record(store, vec![new_user]).await[0]);
    let attributions = probe.attributions(app).await;
    assert_eq!(
        attributions.len(),
        2,
        "a new user gets an attribution: {attributions:?}"
    );
    assert_eq!(attributions[0], expected_first);
    assert_eq!(
        attributions[1],
        AttributionRow {
            event_id: new_id,
            partner: "kochava".into(),
            source: Some("third-network".into()),
            user_id: Some("IDFA-1".into()),
            idfa: Some("IDFA-3".into()),
            attributed_at: t0() + secs(20),
        }
    );

    // Attributions are per app: the same user in another app is new there.
    let other_app = create_sample_app(store).await;
    let elsewhere = sample_event(SampleEvent {
        app: other_app,
        dedupe_key: "first".into(),
        ids: idfa("IDFA-1"),
        ..Default::default()
    });
    recorded_id(record(store, vec![elsewhere]).await[0]);
    assert_eq!(probe.attributions(other_app).await.len(), 1);
}

async fn first_touch_attribution_applies_within_one_batch(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    // Dedupe keys sort the other way round, so insertion order differs from input order.
    let first = sample_event(SampleEvent {
        app,
        dedupe_key: "z".into(),
        ids: idfa("IDFA-1"),
        source: Some("first".into()),
        ..Default::default()
    });
    let second = sample_event(SampleEvent {
        app,
        dedupe_key: "a".into(),
        ids: idfa("IDFA-1"),
        source: Some("second".into()),
        received_at: t0() + secs(1),
        ..Default::default()
    });
    let outcomes = record(store, vec![first, second]).await;
    let first_id = recorded_id(outcomes[0]);
    recorded_id(outcomes[1]);
    let attributions = probe.attributions(app).await;
    assert_eq!(attributions.len(), 1, "{attributions:?}");
    assert_eq!(attributions[0].event_id, first_id);
    assert_eq!(attributions[0].source.as_deref(), Some("first"));
}

async fn events_never_create_attributions(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let event = sample_event(SampleEvent {
        app,
        dedupe_key: "purchase".into(),
        kind: EventKind::Event,
        ids: idfa("IDFA-9"),
        ..Default::default()
    });
    recorded_id(record(store, vec![event]).await[0]);
    assert!(
        probe.attributions(app).await.is_empty(),
        "an event is not an install"
    );

    // The event did not claim the user: its install still attributes.
    let install = sample_event(SampleEvent {
        app,
        dedupe_key: "install".into(),
        ids: idfa("IDFA-9"),
        ..Default::default()
    });
    let install_id = recorded_id(record(store, vec![install]).await[0]);
    let attributions = probe.attributions(app).await;
    assert_eq!(
        attributions.iter().map(|a| a.event_id).collect::<Vec<_>>(),
        vec![install_id]
    );
}

async fn counters_and_status_after_a_mixed_batch(store: &dyn Store, _: &Probe) {
    let app = create_sample_app(store).await;
    let event = |partner, key: &str, kind, received_at| {
        sample_event(SampleEvent {
            app,
            partner,
            dedupe_key: key.into(),
            kind,
            ids: idfa(key),
            received_at,
            ..Default::default()
        })
    };
    use EventKind::{Event, Install};
    use PartnerId::{Branch, Kochava, Tune};
    record(store, vec![event(Kochava, "k-early", Install, t0())]).await;

    let batch = vec![
        event(Kochava, "k-late", Install, t0() + secs(10)),
        event(Kochava, "k-mid", Install, t0() + secs(5)),
        event(Kochava, "k-event", Event, t0() + secs(6)),
        event(Kochava, "k-early", Install, t0() + secs(20)), // duplicate of the first batch
        event(Kochava, "k-late", Install, t0() + secs(30)),  // duplicate within the batch
        event(Tune, "t-event", Event, t0() + secs(7)),
    ];
    let counters = [
        CounterDelta {
            app_id: app,
            partner: Kochava,
            organic_ignored: 3,
            rejected: 1,
            rate_limited: 0,
        },
        CounterDelta {
            app_id: app,
            partner: Tune,
            organic_ignored: 2,
            rejected: 0,
            rate_limited: 0,
        },
        CounterDelta {
            app_id: app,
            partner: Branch,
            organic_ignored: 0,
            rejected: 4,
            rate_limited: 0,
        },
        CounterDelta {
            app_id: app,
            partner: Kochava,
            organic_ignored: 1,
            rejected: 0,
            rate_limited: 0,
        },
    ];
    let outcomes = store
        .record_batch(&batch, &counters, &[])
        .await
        .expect("record batch")
        .outcomes;
    assert_eq!(outcomes.len(), 6);

    let expected = vec![
        PartnerConnection {
            partner: Branch,
            status: ConnectionStatus::NotConnected,
            last_success_at: None,
            installs: 0,
            events: 0,
            organic_ignored: 0,
            duplicates: 0,
            rejected: 4,
            rate_limited: 0,
        },
        PartnerConnection {
            partner: Kochava,
            status: ConnectionStatus::Connected,
            last_success_at: Some(t0() + secs(10)),
            installs: 3,
            events: 1,
            organic_ignored: 4,
            duplicates: 2,
            rejected: 1,
            rate_limited: 0,
        },
        PartnerConnection {
            partner: Tune,
            status: ConnectionStatus::NotConnected,
            last_success_at: None,
            installs: 0,
            events: 1,
            organic_ignored: 2,
            duplicates: 0,
            rejected: 0,
            rate_limited: 0,
        },
    ];
    assert_eq!(
        store.partner_connections(app).await.expect("connections"),
        expected
    );

    // An older install does not move last_success_at back; duplicates do not connect.
    let late_batch = vec![
        event(Kochava, "k-older", Install, t0() + secs(1)),
        event(Tune, "t-event", Event, t0() + secs(40)),
    ];
    record(store, late_batch).await;
    let connections = store.partner_connections(app).await.expect("connections");
    assert_eq!(connections[1].last_success_at, Some(t0() + secs(10)));
    assert_eq!(connections[1].installs, 4);
    assert_eq!(connections[2].status, ConnectionStatus::NotConnected);
    assert_eq!(connections[2].duplicates, 1);

    // Other apps see none of it.
    let other_app = create_sample_app(store).await;
    assert!(store
        .partner_connections(other_app)
        .await
        .expect("connections")
        .is_empty());
}

async fn app_with_only_organic_deltas_stays_not_connected(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let delta = CounterDelta {
        app_id: app,
        partner: PartnerId::Tune,
        organic_ignored: 5,
        rejected: 0,
        rate_limited: 0,
    };
    let outcomes = store
        .record_batch(&[], &[delta], &[])
        .await
        .expect("record counters")
        .outcomes;
    assert!(outcomes.is_empty());
    store
        .record_batch(&[], &[delta], &[])
        .await
        .expect("record counters again");
    let connections = store.partner_connections(app).await.expect("connections");
    assert_eq!(
        connections,
        vec![PartnerConnection {
            partner: PartnerId::Tune,
            status: ConnectionStatus::NotConnected,
            last_success_at: None,
            installs: 0,
            events: 0,
            organic_ignored: 10,
            duplicates: 0,
            rejected: 0,
            rate_limited: 0,
        }]
    );
    assert!(probe.events(app).await.is_empty());
}

async fn raw_payload_round_trips_as_json(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let raw = json!({
        "click_id": "abc",
        "nested": {"list": [1, 2.5, "x", null, true], "empty": {}},
        "unicode": "caf\u{e9} \u{2713} \"quoted\" \\ back",
        "big": 9_007_199_254_740_993_u64,
    });
    let event = sample_event(SampleEvent {
        app,
        raw: raw.clone(),
        ..Default::default()
    });
    let id = recorded_id(record(store, vec![event]).await[0]);
    assert_eq!(probe.raw_payload(id).await, raw);
}

async fn fifty_event_batch_returns_fifty_outcomes_in_order(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    // Keys in descending order, every tenth a copy of the one before it.
    let keys: Vec<String> = (0..50)
        .map(|i| {
            if i % 10 == 9 {
                format!("key-{:02}", 50 - i + 1)
            } else {
                format!("key-{:02}", 50 - i)
            }
        })
        .collect();
    let events: Vec<NewEvent> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            sample_event(SampleEvent {
                app,
                dedupe_key: key.clone(),
                kind: if i % 2 == 0 {
                    EventKind::Install
                } else {
                    EventKind::Event
                },
                ids: idfa(key),
                received_at: t0() + secs(i as i64),
                ..Default::default()
            })
        })
        .collect();
    let outcomes = store
        .record_batch(&events, &[], &[])
        .await
        .expect("record batch")
        .outcomes;
    assert_eq!(outcomes.len(), 50);
    let stored = probe.events(app).await;
    assert_eq!(stored.len(), 45);
    for (i, (outcome, key)) in outcomes.iter().zip(&keys).enumerate() {
        if i % 10 == 9 {
            assert_eq!(
                *outcome,
                RecordOutcome::Duplicate {
                    first_event_id: outcomes[i - 1].event_id().expect("stored")
                },
                "#{i}"
            );
        } else {
            let id = recorded_id(*outcome);
            assert_eq!(
                stored.get(&id),
                Some(key),
                "outcome #{i} is the event of key {key}"
            );
        }
    }
    let connections = store.partner_connections(app).await.expect("connections");
    assert_eq!(
        (
            connections[0].installs,
            connections[0].events,
            connections[0].duplicates
        ),
        (25, 20, 5)
    );
}

/// SQLite writes a batch in multi-row statements of at most 64 rows: every step
/// must come out the same across statement boundaries, apps, and keys stored
/// before the batch.
async fn a_batch_larger_than_one_statement_dedupes_and_attributes_across_apps(
    store: &dyn Store,
    probe: &Probe,
) {
    let apps = [
        create_sample_app(store).await,
        create_sample_app(store).await,
    ];
    let install = keyed_install;
    // Ten keys (and users) of the first app stored before.
    let earlier: Vec<NewEvent> = (0..10)
        .map(|k| install(apps[0], &format!("k-{k:03}"), idfa(&format!("u-{k}")), k))
        .collect();
    let earlier = record(store, earlier).await;

    // 200 installs: 50 keys per app, each sent twice; then a known user's
    // install with an identifier not seen before.
    let mut events: Vec<NewEvent> = (0..200)
        .map(|i| {
            let k = i / 4;
            install(
                apps[i % 2],
                &format!("k-{k:03}"),
                idfa(&format!("u-{k}")),
                100 + i as i64,
            )
        })
        .collect();
    let joining = Identifiers {
        idfa: Some("u-3".into()),
        google_aid: Some("g-new".into()),
        ..Identifiers::default()
    };
    events.push(install(apps[0], "join", joining, 400));
    let outcomes = record(store, events).await;

    assert_eq!(outcomes.len(), 201);
    for (i, outcome) in outcomes.iter().take(200).enumerate() {
        let (app, k) = (i % 2, i / 4);
        let want = if app == 0 && k < 10 {
            RecordOutcome::Duplicate {
                first_event_id: recorded_id(earlier[k]),
            }
        } else if i % 4 >= 2 {
            RecordOutcome::Duplicate {
                first_event_id: recorded_id(outcomes[i - 2]),
            }
        } else {
            RecordOutcome::Recorded {
                event_id: recorded_id(*outcome),
            }
        };
        assert_eq!(*outcome, want, "#{i}");
    }
    recorded_id(outcomes[200]);

    assert_eq!(probe.events(apps[0]).await.len(), 51);
    assert_eq!(probe.events(apps[1]).await.len(), 50);
    assert_eq!(probe.attributions(apps[0]).await.len(), 50, "no user twice");
    assert_eq!(probe.attributions(apps[1]).await.len(), 50);
    let joined = store
        .lookup_user(apps[0], IdentifierKind::GoogleAid, "g-new")
        .await
        .expect("lookup")
        .expect("the new identifier joined the known user");
    assert_eq!(joined.event_id, recorded_id(earlier[3]));
    let counts = |c: &[PartnerConnection]| (c[0].installs, c[0].duplicates);
    let first = store.partner_connections(apps[0]).await.expect("counters");
    assert_eq!(counts(&first), (51, 60));
    let second = store.partner_connections(apps[1]).await.expect("counters");
    assert_eq!(counts(&second), (50, 50));
}

/// An install of `app` under dedupe key `key`, received `n` seconds after t0.
fn keyed_install(app: AppId, key: &str, ids: Identifiers, n: i64) -> NewEvent {
    sample_event(SampleEvent {
        app,
        dedupe_key: key.into(),
        ids,
        received_at: t0() + secs(n),
        ..Default::default()
    })
}

async fn empty_batch_records_nothing(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    assert!(store
        .record_batch(&[], &[], &[])
        .await
        .expect("empty batch")
        .outcomes
        .is_empty());
    assert!(probe.events(app).await.is_empty());
    assert!(store
        .partner_connections(app)
        .await
        .expect("connections")
        .is_empty());
}

async fn concurrent_batches_attribute_a_new_user_once(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let batch = |key: &str, partner| {
        vec![sample_event(SampleEvent {
            app,
            partner,
            dedupe_key: key.into(),
            ids: idfa("IDFA-shared"),
            ..Default::default()
        })]
    };
    let (one, two, three) = (
        batch("one", PartnerId::Kochava),
        batch("two", PartnerId::Tune),
        batch("three", PartnerId::Branch),
    );
    let (a, b, c) = tokio::join!(
        store.record_batch(&one, &[], &[]),
        store.record_batch(&two, &[], &[]),
        store.record_batch(&three, &[], &[]),
    );
    for outcome in [a, b, c] {
        recorded_id(outcome.expect("record batch").outcomes[0]);
    }
    assert_eq!(
        probe.attributions(app).await.len(),
        1,
        "one user, one attribution"
    );
}

async fn concurrent_batches_with_the_same_keys_in_opposite_order_both_succeed(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let event = |key: &str| {
        sample_event(SampleEvent {
            app,
            dedupe_key: key.into(),
            ..Default::default()
        })
    };
    for round in 0..5 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        let forward = vec![event(&x), event(&y)];
        let backward = vec![event(&y), event(&x)];
        let (a, b) = tokio::join!(
            store.record_batch(&forward, &[], &[]),
            store.record_batch(&backward, &[], &[])
        );
        let (a, b) = (
            a.expect("forward batch").outcomes,
            b.expect("backward batch").outcomes,
        );
        // Whichever committed first recorded both; the other sees both as duplicates.
        assert_eq!(a[0].event_id(), b[1].event_id(), "round {round}");
        assert_eq!(a[1].event_id(), b[0].event_id(), "round {round}");
    }
    assert_eq!(probe.events(app).await.len(), 10);
}

// ---------------------------------------------------------------------------
// Read side
// ---------------------------------------------------------------------------

/// A later install of a known user brings an identifier not seen before: it is no
/// new user, and neither is a third install known only by that new identifier.
async fn a_known_users_new_identifier_joins_that_user(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let install = |key: &str, ids: Identifiers, n: i64| keyed_install(app, key, ids, n);
    let first = record(store, vec![install("1", idfa("IDFA-K"), 0)]).await;
    let first = recorded_id(first[0]);
    let both = Identifiers {
        idfa: Some("IDFA-K".into()),
        user_id: Some("braze-k".into()),
        ..Identifiers::default()
    };
    record(store, vec![install("2", both, 1)]).await;
    let only_new = Identifiers {
        user_id: Some("braze-k".into()),
        ..Identifiers::default()
    };
    record(store, vec![install("3", only_new, 2)]).await;
    let rows = probe.attributions(app).await;
    assert_eq!(rows.len(), 1, "one user: {rows:?}");
    let found = store
        .lookup_user(app, IdentifierKind::UserId, "braze-k")
        .await
        .expect("lookup")
        .expect("found by its new identifier");
    assert_eq!(found.event_id, first);
}

/// A batch that seemed to fail may have committed (a connection gone silent at the
/// commit): its log rows, kept for the next batch, must not fail that batch.
async fn a_delivery_row_written_twice_keeps_the_first_and_fails_nothing(
    store: &dyn Store,
    _: &Probe,
) {
    use crate::store::deliveries::{Answer, Decided, DeliveryFilter, NewDelivery, Verdict};
    use crate::store::Batch;
    let app = create_sample_app(store).await;
    let row = NewDelivery {
        id: Uuid::now_v7(),
        app_id: app,
        partner: PartnerId::Kochava,
        method: "POST",
        received_at: t0(),
        request_id: "req-1".into(),
        decided: Decided::Already(Answer {
            status: 200,
            verdict: Verdict::Organic,
            reason: "organic: network_name is \"Organic\"".into(),
            event_id: None,
        }),
        segments: None,
        identifiers: None,
        payload: "{}".into(),
    };
    for attempt in 0..2 {
        store
            .record(Batch {
                deliveries: std::slice::from_ref(&row),
                ..Batch::default()
            })
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e:?}"));
    }
    let rows = store
        .list_deliveries(app, &DeliveryFilter::default(), None, 10)
        .await
        .expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].request_id, "req-1");
}

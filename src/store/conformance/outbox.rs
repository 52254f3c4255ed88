//! Conformance checks of the forwarding outbox: claims (leases, free slots, skip
//! locked), attempt results, listings, replay and backlog counts. Outbox rows are
//! inserted directly here; the batch transaction that writes them is checked with
//! the write path.

use super::*;
use crate::store::forwarding::*;

conformance!(
    claim_leases_due_messages_of_enabled_destinations_within_free_slots,
    concurrent_claims_never_lease_a_message_twice,
    attempt_results_update_the_message_and_its_destination,
    a_destination_failing_past_the_horizon_is_disabled,
    replay_requeues_dead_or_delivered_messages_with_the_same_id,
);

impl Probe {
    /// One pending outbox row of `dest`, created (and due) at `at`.
    async fn insert_outbox(&self, app: AppId, dest: Uuid, at: DateTime<Utc>) -> Uuid {
        const SQL: &str = "insert into outbox (id, destination_id, app_id, type, event_id, \
                 payload, status, attempts, created_at, next_attempt_at) \
             values ($1, $2, $3, 'event.accepted', $4, cast($5 as {json}), 'pending', 0, $6, $6)";
        let id = Uuid::now_v7();
        let payload = json!({"type": "event.accepted", "n": id.to_string()}).to_string();
        match self {
            Probe::Postgres(pool) => sqlx::query(&SQL.replace("{json}", "jsonb"))
                .bind(id)
                .bind(dest)
                .bind(app.as_uuid())
                .bind(Uuid::now_v7())
                .bind(payload)
                .bind(at)
                .execute(pool)
                .await
                .map(drop),
            Probe::Sqlite(pool) => sqlx::query(&SQL.replace("{json}", "text"))
                .bind(id.to_string())
                .bind(dest.to_string())
                .bind(app.to_string())
                .bind(Uuid::now_v7().to_string())
                .bind(payload)
                .bind(at.format(super::super::sqlite::TIME_FORMAT).to_string())
                .execute(pool)
                .await
                .map(drop),
        }
        .expect("insert outbox row");
        id
    }

    /// Disable a destination behind the store's back (the CLI's `disable`).
    async fn disable_destination(&self, dest: Uuid) {
        // `(1 = 0)` is false on PostgreSQL and 0 on SQLite.
        const SQL: &str = "update destinations set enabled = (1 = 0) where id = $1";
        match self {
            Probe::Postgres(pool) => sqlx::query(SQL).bind(dest).execute(pool).await.map(drop),
            Probe::Sqlite(pool) => sqlx::query(SQL)
                .bind(dest.to_string())
                .execute(pool)
                .await
                .map(drop),
        }
        .expect("disable destination");
    }
}

async fn create_destination(store: &dyn Store, app: AppId, url: &str) -> Uuid {
    let dest = NewDestination {
        id: Uuid::now_v7(),
        app_id: app,
        url: url.into(),
        what: DestinationWhat::All,
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        created_at: t0(),
    };
    store
        .create_destination(&dest)
        .await
        .expect("create destination");
    dest.id
}

fn claim(now: DateTime<Utc>, in_flight: &[(Uuid, u32)], max_in_flight: u32) -> Claim<'_> {
    Claim {
        now,
        lease_until: now + secs(15),
        in_flight,
        max_in_flight,
        limit: 100,
    }
}

fn ids(messages: &[ClaimedMessage]) -> std::collections::BTreeSet<Uuid> {
    messages.iter().map(|m| m.id).collect()
}

async fn claim_leases_due_messages_of_enabled_destinations_within_free_slots(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let a = create_destination(store, app, "https://a.example/hook").await;
    let b = create_destination(store, app, "https://b.example/hook").await;
    let off = create_destination(store, app, "https://off.example/hook").await;
    probe.disable_destination(off).await;
    let now = t0() + secs(60);
    let mut on_a = Vec::new();
    for i in 0..4 {
        on_a.push(probe.insert_outbox(app, a, t0() + secs(i)).await);
    }
    let on_b = probe.insert_outbox(app, b, t0()).await;
    probe.insert_outbox(app, off, t0()).await;
    let not_due = probe.insert_outbox(app, b, now + secs(1)).await;

    // One attempt of A in flight and two slots each: one more of A, one of B.
    let first = store
        .claim_due(claim(now, &[(a, 1)], 2))
        .await
        .expect("claim");
    assert_eq!(
        ids(&first),
        [on_a[0], on_b].into_iter().collect(),
        "the oldest due of A (one free slot) and B's due one; not the disabled one, not the future one"
    );
    let from_a = first.iter().find(|m| m.id == on_a[0]).unwrap();
    assert_eq!(from_a.url, "https://a.example/hook");
    assert_eq!(
        from_a.secret.expose(),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    );
    assert_eq!(from_a.attempts, 1, "the attempt is counted at the claim");
    assert_eq!(from_a.app_id, app);
    assert_eq!(from_a.created_at, t0());
    let payload: serde_json::Value = serde_json::from_str(&from_a.payload).expect("JSON payload");
    assert_eq!(payload["n"], on_a[0].to_string());

    // Leased messages are not due again until the lease ends.
    let second = store.claim_due(claim(now, &[], 2)).await.expect("claim");
    assert_eq!(ids(&second), [on_a[1], on_a[2]].into_iter().collect());
    let after_lease = store
        .claim_due(claim(now + secs(16), &[(a, 2)], 4))
        .await
        .expect("claim");
    assert_eq!(
        ids(&after_lease),
        [on_a[0], on_a[3], on_b, not_due].into_iter().collect(),
        "leases that ran out are due again (A: two free slots, oldest first)"
    );
    let again = after_lease.iter().find(|m| m.id == on_a[0]).unwrap();
    assert_eq!(again.attempts, 2, "each claim counts an attempt");
}

async fn concurrent_claims_never_lease_a_message_twice(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let mut all = std::collections::BTreeSet::new();
    let mut dests = Vec::new();
    for i in 0..3 {
        let d = create_destination(store, app, &format!("https://{i}.example/")).await;
        dests.push(d);
        for s in 0..20 {
            all.insert(probe.insert_outbox(app, d, t0() + secs(s)).await);
        }
    }
    let now = t0() + secs(60);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (x, y) = tokio::join!(
            store.claim_due(claim(now, &[], 3)),
            store.claim_due(claim(now, &[], 3))
        );
        for m in x.expect("claim").into_iter().chain(y.expect("claim")) {
            assert!(seen.insert(m.id), "message {} leased twice", m.id);
        }
    }
    assert_eq!(seen, all, "every message leased exactly once");
}

fn result(message: &ClaimedMessage, at: DateTime<Utc>, outcome: AttemptOutcome) -> AttemptResult {
    AttemptResult {
        id: message.id,
        app_id: message.app_id,
        destination_id: message.destination_id,
        attempt: message.attempts,
        at,
        status: match outcome {
            AttemptOutcome::Delivered => Some(204),
            AttemptOutcome::Retry { .. } => Some(503),
            AttemptOutcome::Dead => Some(410),
        },
        error: (outcome != AttemptOutcome::Delivered).then(|| "HTTP error".to_owned()),
        outcome,
        horizon: chrono::Duration::hours(72),
    }
}

async fn attempt_results_update_the_message_and_its_destination(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let dest = create_destination(store, app, "https://a.example/").await;
    for s in 0..3 {
        probe.insert_outbox(app, dest, t0() + secs(s)).await;
    }
    let now = t0() + secs(60);
    let claimed = store.claim_due(claim(now, &[], 3)).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    let retry_at = now + secs(30);
    let failed_at = now + secs(1);
    let retried = store
        .finish_attempt(&result(
            &claimed[0],
            failed_at,
            AttemptOutcome::Retry {
                next_attempt_at: retry_at,
            },
        ))
        .await
        .expect("retry");
    assert!(!retried, "one failure does not disable");
    store
        .finish_attempt(&result(&claimed[1], now + secs(2), AttemptOutcome::Dead))
        .await
        .expect("dead");
    let record = store.get_destination(dest).await.unwrap().unwrap();
    assert_eq!(record.failing_since, Some(failed_at), "the first failure");
    assert_eq!(record.last_success_at, None);
    assert_eq!((record.backlog, record.dead), (2, 1));

    let delivered_at = now + secs(3);
    store
        .finish_attempt(&result(
            &claimed[2],
            delivered_at,
            AttemptOutcome::Delivered,
        ))
        .await
        .expect("delivered");
    let record = store.get_destination(dest).await.unwrap().unwrap();
    assert_eq!(
        record.failing_since, None,
        "a success ends the failing streak"
    );
    assert_eq!(record.last_success_at, Some(delivered_at));
    assert!(record.enabled);

    let pending = store
        .list_messages(app, dest, Some(MessageStatus::Pending), 10)
        .await
        .expect("list");
    assert_eq!(pending.len(), 1);
    let m = &pending[0];
    assert_eq!(m.id, claimed[0].id);
    assert_eq!(
        (
            m.attempts,
            m.next_attempt_at,
            m.last_attempt_at,
            m.last_status
        ),
        (1, Some(retry_at), Some(failed_at), Some(503)),
        "a message being retried is pending with attempts > 0"
    );
    assert_eq!(m.kind, "event.accepted");
    let dead = store
        .list_messages(app, dest, Some(MessageStatus::Dead), 10)
        .await
        .expect("list");
    assert_eq!(
        dead.iter().map(|m| m.id).collect::<Vec<_>>(),
        [claimed[1].id]
    );
    assert_eq!(dead[0].next_attempt_at, None, "a dead message is not due");
    assert_eq!(dead[0].last_status, Some(410));
    let delivered = store
        .list_messages(app, dest, Some(MessageStatus::Delivered), 10)
        .await
        .expect("list");
    assert_eq!(delivered[0].delivered_at, Some(delivered_at));
    let all = store
        .list_messages(app, dest, None, 10)
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|m| m.id).collect::<Vec<_>>(),
        [claimed[2].id, claimed[1].id, claimed[0].id],
        "newest first"
    );
    assert_eq!(
        store.list_messages(app, dest, None, 2).await.unwrap().len(),
        2
    );
    let other_app = store
        .list_messages(AppId::new(), dest, None, 10)
        .await
        .expect("list");
    assert!(other_app.is_empty(), "another app sees none of them");

    // Not due before its retry time, due at it.
    assert!(store
        .claim_due(claim(retry_at - secs(1), &[], 3))
        .await
        .unwrap()
        .is_empty());
    let due = store.claim_due(claim(retry_at, &[], 3)).await.unwrap();
    assert_eq!(ids(&due), [claimed[0].id].into_iter().collect());
    assert_eq!(due[0].attempts, 2);
    // A late failure of the first attempt (its lease ran out, the message was
    // claimed again) does not overwrite the second claim's lease.
    store
        .finish_attempt(&result(&claimed[0], retry_at, AttemptOutcome::Dead))
        .await
        .expect("stale result");
    let still = store
        .list_messages(app, dest, Some(MessageStatus::Pending), 10)
        .await
        .unwrap();
    assert_eq!(still.len(), 1, "a stale failure is ignored");
    assert_eq!(still[0].attempts, 2);

    let backlogs = store.destination_backlogs().await.expect("backlogs");
    assert_eq!(
        backlogs,
        vec![DestinationBacklog {
            app_id: app,
            destination_id: dest,
            backlog: 1,
            dead: 1
        }]
    );
}

async fn a_destination_failing_past_the_horizon_is_disabled(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let dest = create_destination(store, app, "https://a.example/").await;
    for s in 0..2 {
        probe.insert_outbox(app, dest, t0() + secs(s)).await;
    }
    let now = t0() + secs(60);
    let claimed = store.claim_due(claim(now, &[], 2)).await.expect("claim");
    let retry = AttemptOutcome::Retry {
        next_attempt_at: now + secs(10),
    };
    let first = store
        .finish_attempt(&result(&claimed[0], now, retry))
        .await
        .expect("finish");
    assert!(!first);
    // Still failing 73 hours later: past the 72 h horizon.
    let later = now + chrono::Duration::hours(73);
    let disabled = store
        .finish_attempt(&result(&claimed[1], later, retry))
        .await
        .expect("finish");
    assert!(disabled, "the failure past the horizon disables");
    let record = store.get_destination(dest).await.unwrap().unwrap();
    assert!(!record.enabled);
    assert_eq!(record.disabled_reason.as_deref(), Some("failing"));
    assert_eq!(record.failing_since, Some(now));
    assert!(
        store
            .claim_due(claim(later + secs(60), &[], 2))
            .await
            .unwrap()
            .is_empty(),
        "a disabled destination's messages are not claimed"
    );
}

async fn replay_requeues_dead_or_delivered_messages_with_the_same_id(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let dest = create_destination(store, app, "https://a.example/").await;
    for s in 0..3 {
        probe.insert_outbox(app, dest, t0() + secs(s)).await;
    }
    let now = t0() + secs(60);
    let claimed = store.claim_due(claim(now, &[], 3)).await.expect("claim");
    let (early, dead, late) = (&claimed[0], &claimed[1], &claimed[2]);
    for (m, outcome) in [
        (early, AttemptOutcome::Delivered),
        (dead, AttemptOutcome::Dead),
        (late, AttemptOutcome::Delivered),
    ] {
        store
            .finish_attempt(&result(m, now, outcome))
            .await
            .expect("finish");
    }
    let replay_at = now + secs(100);
    let dead_only = ReplayFilter {
        dead_only: true,
        since: None,
    };
    let n = store
        .replay_messages(app, dest, dead_only, replay_at)
        .await
        .expect("replay");
    assert_eq!(n, 1, "only the dead one");
    let pending = store
        .list_messages(app, dest, Some(MessageStatus::Pending), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].id, dead.id,
        "the same message, so the same webhook-id"
    );
    assert_eq!(
        (
            pending[0].attempts,
            pending[0].next_attempt_at,
            pending[0].last_status
        ),
        (0, Some(replay_at), None)
    );
    let due = store.claim_due(claim(replay_at, &[], 3)).await.unwrap();
    assert_eq!(ids(&due), [dead.id].into_iter().collect());

    // Since the second message's creation: delivered ones too, the early one not.
    let since = ReplayFilter {
        dead_only: false,
        since: Some(t0() + secs(1)),
    };
    let n = store
        .replay_messages(app, dest, since, replay_at)
        .await
        .expect("replay");
    assert_eq!(
        n, 1,
        "the late delivered one (the dead one is pending already)"
    );
    let delivered = store
        .list_messages(app, dest, Some(MessageStatus::Delivered), 10)
        .await
        .unwrap();
    assert_eq!(
        delivered.iter().map(|m| m.id).collect::<Vec<_>>(),
        [early.id]
    );
    let other = store
        .replay_messages(AppId::new(), dest, since, replay_at)
        .await
        .expect("replay");
    assert_eq!(other, 0, "another app's replay touches nothing");
}

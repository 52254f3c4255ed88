//! Conformance checks of forwarding destinations (the `DestinationStore` trait).

use super::*;
use crate::store::forwarding::{DestinationWhat, DisabledReason, NewDestination};

conformance!(
    destinations_are_created_and_listed_oldest_first_per_app,
    disable_and_enable_change_the_state_and_the_reason,
    remove_deletes_the_destination_and_every_message_of_it,
    rotate_secret_replaces_the_stored_secret,
    unknown_destinations_are_reported_as_absent,
);

fn sample_destination(app: AppId, url: &str, created_at: DateTime<Utc>) -> NewDestination {
    NewDestination {
        id: Uuid::now_v7(),
        app_id: app,
        url: url.to_owned(),
        what: DestinationWhat::Attributions,
        secret: format!("whsec_{}", Uuid::now_v7().simple()),
        created_at,
    }
}

impl Probe {
    /// One outbox message of `dest` with `status`, written behind the store's back
    /// (the batch writer's job, not this trait's).
    async fn insert_message(&self, app: AppId, dest: Uuid, status: &str) {
        const SQL: &str = "insert into outbox (id, destination_id, app_id, type, event_id, \
                 payload, status, created_at, next_attempt_at) \
             values ($1, $2, $3, 'attribution.created', $4, '{}', $5, $6, $6)";
        let at = t0();
        match self {
            Probe::Postgres(pool) => sqlx::query(SQL)
                .bind(Uuid::now_v7())
                .bind(dest)
                .bind(app.as_uuid())
                .bind(Uuid::now_v7())
                .bind(status)
                .bind(at)
                .execute(pool)
                .await
                .map(drop),
            Probe::Sqlite(pool) => sqlx::query(SQL)
                .bind(Uuid::now_v7().to_string())
                .bind(dest.to_string())
                .bind(app.to_string())
                .bind(Uuid::now_v7().to_string())
                .bind(status)
                .bind(at.format(super::super::sqlite::TIME_FORMAT).to_string())
                .execute(pool)
                .await
                .map(drop),
        }
        .expect("insert outbox message");
    }

    /// Outbox messages of `dest`, whatever their status.
    async fn messages_of(&self, dest: Uuid) -> i64 {
        const SQL: &str = "select count(*) from outbox where destination_id = $1";
        match self {
            Probe::Postgres(pool) => sqlx::query_scalar(SQL).bind(dest).fetch_one(pool).await,
            Probe::Sqlite(pool) => {
                sqlx::query_scalar(SQL)
                    .bind(dest.to_string())
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("count outbox messages")
    }

    /// The stored secret of `dest` (no trait method reads it but the dispatcher's).
    async fn secret_of(&self, dest: Uuid) -> String {
        const SQL: &str = "select secret from destinations where id = $1";
        match self {
            Probe::Postgres(pool) => sqlx::query_scalar(SQL).bind(dest).fetch_one(pool).await,
            Probe::Sqlite(pool) => {
                sqlx::query_scalar(SQL)
                    .bind(dest.to_string())
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("read destination secret")
    }

    /// Mark `dest` as failing since `at`, as the dispatcher would.
    async fn set_failing_since(&self, dest: Uuid, at: DateTime<Utc>) {
        const SQL: &str = "update destinations set failing_since = $2 where id = $1";
        match self {
            Probe::Postgres(pool) => sqlx::query(SQL)
                .bind(dest)
                .bind(at)
                .execute(pool)
                .await
                .map(drop),
            Probe::Sqlite(pool) => sqlx::query(SQL)
                .bind(dest.to_string())
                .bind(at.format(super::super::sqlite::TIME_FORMAT).to_string())
                .execute(pool)
                .await
                .map(drop),
        }
        .expect("set failing_since");
    }
}

async fn destinations_are_created_and_listed_oldest_first_per_app(store: &dyn Store, _: &Probe) {
    let app = create_sample_app(store).await;
    let other = sample_app("other", Tier::Standard, t0());
    store.create_app(&other).await.expect("create other app");
    let newer = sample_destination(app, "https://b.example/hook", t0() + secs(5));
    let older = NewDestination {
        what: DestinationWhat::All,
        ..sample_destination(app, "https://a.example/hook", t0())
    };
    let elsewhere = sample_destination(other.id, "https://c.example/hook", t0());
    let created = store
        .create_destination(&newer)
        .await
        .expect("create newer");
    store
        .create_destination(&older)
        .await
        .expect("create older");
    store
        .create_destination(&elsewhere)
        .await
        .expect("create elsewhere");

    assert_eq!(created.id, newer.id);
    assert_eq!(created.url, "https://b.example/hook");
    assert!(created.enabled, "created enabled");
    assert_eq!(created.disabled_reason, None);
    assert_eq!(created.created_at, t0() + secs(5));
    assert_eq!(created.updated_at, created.created_at);
    assert_eq!(
        (created.last_success_at, created.failing_since),
        (None, None)
    );
    assert_eq!((created.backlog, created.dead), (0, 0));

    let listed = store.list_destinations(app).await.expect("list");
    assert_eq!(
        listed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![older.id, newer.id],
        "this app's only, oldest first"
    );
    assert_eq!(listed[0].what, DestinationWhat::All);
    assert_eq!(
        store.get_destination(newer.id).await.expect("get"),
        Some(created)
    );
}

async fn disable_and_enable_change_the_state_and_the_reason(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let dest = sample_destination(app, "https://a.example/hook", t0());
    store.create_destination(&dest).await.expect("create");
    probe.insert_message(app, dest.id, "pending").await;

    let disabled = store
        .disable_destination(dest.id, DisabledReason::Operator, t0() + secs(1))
        .await
        .expect("disable")
        .expect("found");
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason.as_deref(), Some("operator"));
    assert_eq!(disabled.updated_at, t0() + secs(1));
    assert_eq!(disabled.backlog, 1, "pending messages wait, they stay");

    // Disabled again, for failing: the newer reason is kept.
    let again = store
        .disable_destination(dest.id, DisabledReason::Failing, t0() + secs(2))
        .await
        .expect("disable again")
        .expect("found");
    assert_eq!(again.disabled_reason.as_deref(), Some("failing"));

    probe.set_failing_since(dest.id, t0()).await;
    let enabled = store
        .enable_destination(dest.id, t0() + secs(3))
        .await
        .expect("enable")
        .expect("found");
    assert!(enabled.enabled);
    assert_eq!(enabled.disabled_reason, None, "no reason while enabled");
    assert_eq!(enabled.failing_since, None, "a fresh start");
    assert_eq!(enabled.updated_at, t0() + secs(3));
    assert_eq!(enabled.backlog, 1, "its waiting message is still pending");
    assert_eq!(
        store.list_destinations(app).await.expect("list"),
        vec![enabled]
    );
}

async fn remove_deletes_the_destination_and_every_message_of_it(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let gone = sample_destination(app, "https://a.example/hook", t0());
    let kept = sample_destination(app, "https://b.example/hook", t0() + secs(1));
    store.create_destination(&gone).await.expect("create");
    store.create_destination(&kept).await.expect("create");
    for status in ["pending", "pending", "dead", "delivered"] {
        probe.insert_message(app, gone.id, status).await;
    }
    probe.insert_message(app, kept.id, "pending").await;

    let before = store
        .get_destination(gone.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!((before.backlog, before.dead), (2, 1), "counted by status");

    assert_eq!(
        store.remove_destination(gone.id).await.expect("remove"),
        Some(4),
        "every message of it, whatever its status"
    );
    assert_eq!(store.get_destination(gone.id).await.expect("get"), None);
    assert_eq!(probe.messages_of(gone.id).await, 0);
    assert_eq!(probe.messages_of(kept.id).await, 1, "others' messages stay");
    let listed = store.list_destinations(app).await.expect("list");
    assert_eq!(
        listed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![kept.id]
    );
    assert_eq!(listed[0].backlog, 1);
    assert_eq!(
        store
            .remove_destination(gone.id)
            .await
            .expect("remove again"),
        None
    );
}

async fn rotate_secret_replaces_the_stored_secret(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let dest = sample_destination(app, "https://a.example/hook", t0());
    store.create_destination(&dest).await.expect("create");
    assert_eq!(probe.secret_of(dest.id).await, dest.secret);

    assert!(store
        .rotate_destination_secret(dest.id, "whsec_bmV3IHNlY3JldA==", t0() + secs(9))
        .await
        .expect("rotate"));
    assert_eq!(probe.secret_of(dest.id).await, "whsec_bmV3IHNlY3JldA==");
    let after = store
        .get_destination(dest.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(after.updated_at, t0() + secs(9));
    assert!(after.enabled, "rotation changes nothing else");
}

async fn unknown_destinations_are_reported_as_absent(store: &dyn Store, _: &Probe) {
    let unknown = Uuid::now_v7();
    let at = t0();
    assert_eq!(store.get_destination(unknown).await.expect("get"), None);
    assert_eq!(
        store
            .disable_destination(unknown, DisabledReason::Operator, at)
            .await
            .expect("disable"),
        None
    );
    assert_eq!(
        store.enable_destination(unknown, at).await.expect("enable"),
        None
    );
    assert_eq!(
        store.remove_destination(unknown).await.expect("remove"),
        None
    );
    assert!(!store
        .rotate_destination_secret(unknown, "whsec_eA==", at)
        .await
        .expect("rotate"));
    let app = create_sample_app(store).await;
    assert!(store.list_destinations(app).await.expect("list").is_empty());
}

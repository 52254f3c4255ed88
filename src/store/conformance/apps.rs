//! Conformance checks of apps and API keys.

use super::*;

conformance!(
    a_key_is_unshown_until_marked_and_listings_show_grace_expiry,
    migrations_are_idempotent,
    ping_answers,
    apps_are_created_listed_and_fetched_with_tier_and_key_prefix,
    create_app_if_none_creates_once_then_returns_false,
    rotate_key_keeps_old_keys_until_the_grace_end,
    rotate_key_with_a_past_grace_end_retires_old_keys_at_once,
    unknown_app_is_not_found_for_rotate_key_and_set_tier,
    set_tier_changes_the_tier_seen_by_active_keys,
    concurrent_create_app_if_none_creates_one_app,
);

async fn migrations_are_idempotent(store: &dyn Store, _: &Probe) {
    let app = create_sample_app(store).await;
    store.migrate().await.expect("second migrate");
    store.migrate().await.expect("third migrate");
    let apps = store.list_apps().await.expect("list apps");
    assert_eq!(
        apps.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![app],
        "data survives re-migration"
    );
}

async fn ping_answers(store: &dyn Store, _: &Probe) {
    store.ping().await.expect("ping");
}

async fn apps_are_created_listed_and_fetched_with_tier_and_key_prefix(
    store: &dyn Store,
    _: &Probe,
) {
    let older = sample_app("first", Tier::Standard, t0());
    let newer = sample_app("second", Tier::Enterprise, t0() + secs(1));
    // Created newest first, listed oldest first.
    let newer_record = store.create_app(&newer).await.expect("create newer");
    let older_record = store.create_app(&older).await.expect("create older");
    let expected_older = AppRecord {
        id: older.id,
        name: "first".into(),
        tier: Tier::Standard,
        created_at: t0(),
        key_prefixes: vec![older.key_prefix.clone()],
        keys: vec![KeySummary {
            prefix: older.key_prefix.clone(),
            expires_at: None,
            shown: true,
        }],
    };
    assert_eq!(
        older_record, expected_older,
        "create_app returns the stored record"
    );
    assert_eq!(newer_record.tier, Tier::Enterprise);

    let listed = store.list_apps().await.expect("list apps");
    assert_eq!(listed, vec![expected_older.clone(), newer_record.clone()]);
    assert_eq!(
        store.get_app(older.id).await.expect("get app"),
        Some(expected_older)
    );
    assert_eq!(
        store.get_app(newer.id).await.expect("get app"),
        Some(newer_record)
    );
    assert_eq!(
        store.get_app(AppId::new()).await.expect("get unknown app"),
        None
    );
}

async fn create_app_if_none_creates_once_then_returns_false(store: &dyn Store, _: &Probe) {
    let first = sample_app("default", Tier::Standard, t0());
    let second = sample_app("default", Tier::Standard, t0());
    assert!(store.create_app_if_none(&first).await.expect("first start"));
    assert!(!store
        .create_app_if_none(&second)
        .await
        .expect("second start"));
    let apps = store.list_apps().await.expect("list apps");
    assert_eq!(apps.len(), 1, "only the first app exists: {apps:?}");
    assert_eq!(apps[0].id, first.id);
    assert_eq!(apps[0].key_prefixes, vec![first.key_prefix.clone()]);
    let keys = store.active_keys(now_micros()).await.expect("active keys");
    assert_eq!(keys.len(), 1);
    assert!(
        keys[0].hash.ct_eq(&first.key_hash),
        "the first app's key authenticates"
    );
}

async fn rotate_key_keeps_old_keys_until_the_grace_end(store: &dyn Store, _: &Probe) {
    let app = sample_app("demo", Tier::Enterprise, t0());
    store.create_app(&app).await.expect("create app");
    let now = now_micros();
    let grace_end = now + chrono::Duration::hours(24);
    let second = ApiKey::generate();
    store
        .rotate_key(
            app.id,
            second.hash(),
            &second.display_prefix(),
            now,
            grace_end,
        )
        .await
        .expect("rotate");

    let keys = store.active_keys(now).await.expect("active keys");
    assert_eq!(
        keys.len(),
        2,
        "old and new key both work during the grace period"
    );
    let old = keys
        .iter()
        .find(|k| k.hash.ct_eq(&app.key_hash))
        .expect("old key active");
    let new = keys
        .iter()
        .find(|k| k.hash.ct_eq(&second.hash()))
        .expect("new key active");
    assert_eq!(old.expires_at, Some(grace_end));
    assert_eq!(new.expires_at, None);
    assert!(keys
        .iter()
        .all(|k| k.app_id == app.id && k.tier == Tier::Enterprise));

    let listed = store
        .get_app(app.id)
        .await
        .expect("get app")
        .expect("app exists");
    assert_eq!(
        listed.key_prefixes,
        vec![second.display_prefix(), app.key_prefix.clone()],
        "newest first"
    );

    let just_before = store
        .active_keys(grace_end - chrono::Duration::microseconds(1))
        .await
        .unwrap();
    assert_eq!(just_before.len(), 2, "old key works until the grace end");
    let at_end = store.active_keys(grace_end).await.expect("active keys");
    assert_eq!(at_end.len(), 1, "old key is gone at the grace end");
    assert!(at_end[0].hash.ct_eq(&second.hash()));

    // A second rotation with a later grace end does not extend the first key's expiry.
    let third = ApiKey::generate();
    let later = now + secs(60);
    store
        .rotate_key(
            app.id,
            third.hash(),
            &third.display_prefix(),
            later,
            grace_end + secs(3600),
        )
        .await
        .expect("rotate again");
    let keys = store.active_keys(later).await.expect("active keys");
    let expiry_of = |hash: KeyHash| {
        keys.iter()
            .find(|k| k.hash.ct_eq(&hash))
            .map(|k| k.expires_at)
    };
    assert_eq!(
        expiry_of(app.key_hash),
        Some(Some(grace_end)),
        "earlier expiry is kept"
    );
    assert_eq!(expiry_of(second.hash()), Some(Some(grace_end + secs(3600))));
    assert_eq!(expiry_of(third.hash()), Some(None));
}

async fn rotate_key_with_a_past_grace_end_retires_old_keys_at_once(store: &dyn Store, _: &Probe) {
    let app = sample_app("demo", Tier::Standard, t0());
    store.create_app(&app).await.expect("create app");
    let now = now_micros();
    let new = ApiKey::generate();
    store
        .rotate_key(
            app.id,
            new.hash(),
            &new.display_prefix(),
            now,
            now - secs(1),
        )
        .await
        .expect("rotate");
    let keys = store.active_keys(now).await.expect("active keys");
    assert_eq!(keys.len(), 1);
    assert!(keys[0].hash.ct_eq(&new.hash()));
    let listed = store
        .get_app(app.id)
        .await
        .expect("get app")
        .expect("app exists");
    assert_eq!(
        listed.key_prefixes,
        vec![new.display_prefix()],
        "expired keys are not listed"
    );
}

async fn unknown_app_is_not_found_for_rotate_key_and_set_tier(store: &dyn Store, _: &Probe) {
    let key = ApiKey::generate();
    let now = now_micros();
    let rotated = store
        .rotate_key(AppId::new(), key.hash(), &key.display_prefix(), now, now)
        .await;
    assert!(
        matches!(rotated, Err(StoreError::NotFound)),
        "rotate_key: {rotated:?}"
    );
    let tiered = store.set_tier(AppId::new(), Tier::Enterprise).await;
    assert!(
        matches!(tiered, Err(StoreError::NotFound)),
        "set_tier: {tiered:?}"
    );
    assert!(
        store
            .active_keys(now)
            .await
            .expect("active keys")
            .is_empty(),
        "no key was inserted"
    );
}

async fn set_tier_changes_the_tier_seen_by_active_keys(store: &dyn Store, _: &Probe) {
    let app = create_sample_app(store).await;
    let tiers =
        |keys: Vec<crate::store::KeyRecord>| keys.into_iter().map(|k| k.tier).collect::<Vec<_>>();
    assert_eq!(
        tiers(store.active_keys(now_micros()).await.unwrap()),
        vec![Tier::Standard]
    );
    store
        .set_tier(app, Tier::Enterprise)
        .await
        .expect("set tier");
    assert_eq!(
        tiers(store.active_keys(now_micros()).await.unwrap()),
        vec![Tier::Enterprise]
    );
    let record = store
        .get_app(app)
        .await
        .expect("get app")
        .expect("app exists");
    assert_eq!(record.tier, Tier::Enterprise);
}

async fn concurrent_create_app_if_none_creates_one_app(store: &dyn Store, _: &Probe) {
    let apps: Vec<NewApp> = (0..4)
        .map(|_| sample_app("default", Tier::Standard, t0()))
        .collect();
    let (a, b, c, d) = tokio::join!(
        store.create_app_if_none(&apps[0]),
        store.create_app_if_none(&apps[1]),
        store.create_app_if_none(&apps[2]),
        store.create_app_if_none(&apps[3]),
    );
    let created = [a, b, c, d]
        .into_iter()
        .map(|r| r.expect("create_app_if_none"));
    assert_eq!(
        created.filter(|&was_created| was_created).count(),
        1,
        "exactly one start creates"
    );
    assert_eq!(store.list_apps().await.expect("list apps").len(), 1);
}

async fn a_key_is_unshown_until_marked_and_listings_show_grace_expiry(
    store: &dyn Store,
    _: &Probe,
) {
    let key = ApiKey::generate();
    let new = NewApp {
        key_shown: false,
        key_hash: key.hash(),
        key_prefix: key.display_prefix(),
        ..sample_app("first-start", Tier::Standard, t0())
    };
    assert!(store.create_app_if_none(&new).await.expect("create"));
    let shown = |app: Option<AppRecord>| -> Vec<bool> {
        app.expect("app").keys.iter().map(|k| k.shown).collect()
    };
    assert_eq!(shown(store.get_app(new.id).await.unwrap()), vec![false]);
    store.mark_key_shown(key.hash()).await.expect("mark shown");
    assert_eq!(shown(store.get_app(new.id).await.unwrap()), vec![true]);

    let now = now_micros();
    let grace_end = now + secs(3600);
    let rotated = ApiKey::generate();
    store
        .rotate_key(
            new.id,
            rotated.hash(),
            &rotated.display_prefix(),
            now,
            grace_end,
        )
        .await
        .expect("rotate");
    let keys = store.get_app(new.id).await.unwrap().expect("app").keys;
    assert_eq!(
        keys,
        vec![
            KeySummary {
                prefix: rotated.display_prefix(),
                expires_at: None,
                shown: true
            },
            KeySummary {
                prefix: key.display_prefix(),
                expires_at: Some(grace_end),
                shown: true
            },
        ],
        "newest first; the old key with the end of its grace period"
    );
}

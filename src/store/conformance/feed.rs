//! Conformance checks of the pull feed: commit order, a cursor that never skips or
//! repeats a row (a deleted newest row, a transaction that started first and
//! committed last), and the numbering migration 0013 gives existing rows.

use super::reads::{install, record_installs, segments};
use super::*;
use crate::store::feed::{FeedCursor, FeedEntry};

conformance!(
    feed_pages_every_attribution_once_in_commit_order,
    feed_cursor_survives_deleting_the_newest_attribution,
    feed_holds_back_a_transaction_that_started_first_until_it_commits,
    feed_migration_orders_existing_rows,
);

/// How long a check waits for committed rows to reach the feed. On PostgreSQL a
/// transaction of another test (the server is shared) can hold them back briefly.
const VISIBLE_WITHIN: Duration = Duration::from_secs(20);

/// Pages of `limit` from `after` until `want` entries were read (waiting for rows
/// held back), then one more page, which must be empty: the entries and the cursor
/// a consumer would store.
async fn read_feed(
    store: &dyn Store,
    app: AppId,
    mut after: FeedCursor,
    limit: u32,
    want: usize,
) -> (Vec<FeedEntry>, FeedCursor) {
    let deadline = tokio::time::Instant::now() + VISIBLE_WITHIN;
    let mut seen: Vec<FeedEntry> = Vec::new();
    while seen.len() < want {
        let page = store
            .attribution_feed(app, after, limit)
            .await
            .expect("read the feed");
        assert!(page.len() <= limit as usize, "a page holds at most limit");
        if let Some(last) = page.last() {
            after = last.cursor;
        } else {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {want} attributions reached the feed",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen.extend(page);
    }
    let rest = store
        .attribution_feed(app, after, limit)
        .await
        .expect("read past the end");
    assert_eq!(rest, [], "nothing after the last of {want} entries");
    (seen, after)
}

fn event_ids(entries: &[FeedEntry]) -> Vec<Uuid> {
    entries.iter().map(|e| e.attribution.event_id).collect()
}

fn assert_cursors_increase(entries: &[FeedEntry]) {
    for pair in entries.windows(2) {
        assert!(
            pair[0].cursor < pair[1].cursor,
            "positions increase: {:?} then {:?}",
            pair[0].cursor,
            pair[1].cursor
        );
    }
}

/// Batches in the order they commit, their installs received out of that order:
/// the feed follows the commits, not attributed_at, and keeps other apps out.
async fn feed_pages_every_attribution_once_in_commit_order(store: &dyn Store, _: &Probe) {
    let app = create_sample_app(store).await;
    let other = create_sample_app(store).await;
    let at = |n: i64| t0() + secs(n);
    let seg = || segments("net", "camp", "group", "ad");
    let mut committed = Vec::new();
    for (batch, received) in [(0, 300), (1, 100), (2, 200)] {
        let events = (0..3)
            .map(|i| {
                let key = format!("b{batch}-{i}");
                install(app, &key, PartnerId::Kochava, seg(), at(received + i))
            })
            .collect();
        committed.extend(record_installs(store, events).await);
        record_installs(
            store,
            vec![install(
                other,
                &format!("other-{batch}"),
                PartnerId::Tune,
                seg(),
                at(received),
            )],
        )
        .await;
    }

    let (entries, cursor) = read_feed(store, app, FeedCursor::START, 2, committed.len()).await;
    assert_eq!(
        event_ids(&entries),
        committed,
        "every attribution once, in commit order"
    );
    assert_cursors_increase(&entries);
    let first = &entries[0];
    assert_eq!(first.cursor.id, first.attribution.id);
    assert_eq!(first.attribution.partner, PartnerId::Kochava);
    assert_eq!(first.attribution.segments, seg());
    assert_eq!(first.attribution.ids.user_id.as_deref(), Some("user-b0-0"));
    assert_eq!(first.attribution.attributed_at, at(300));

    // A stored cursor resumes with what commits later, and only that.
    let later = record_installs(
        store,
        vec![install(app, "later", PartnerId::Adjust, seg(), at(1))],
    )
    .await;
    let (entries, _) = read_feed(store, app, cursor, 100, 1).await;
    assert_eq!(event_ids(&entries), later, "the stored cursor resumes");

    let (entries, _) = read_feed(store, other, FeedCursor::START, 100, 3).await;
    assert!(
        entries
            .iter()
            .all(|e| e.attribution.partner == PartnerId::Tune),
        "another app's feed holds only its own rows"
    );
}

/// The newest row deleted (erasure), then a new one: the new one gets a position
/// past the deleted one's, so a consumer that stopped on the deleted row sees it.
/// (A reused SQLite rowid would put it at the stored position and skip it.)
async fn feed_cursor_survives_deleting_the_newest_attribution(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let seg = || segments("net", "camp", "group", "ad");
    record_installs(
        store,
        vec![
            install(app, "a", PartnerId::Kochava, seg(), t0()),
            install(app, "b", PartnerId::Kochava, seg(), t0() + secs(1)),
        ],
    )
    .await;
    let (entries, cursor) = read_feed(store, app, FeedCursor::START, 10, 2).await;
    probe.delete_attribution(entries[1].attribution.id).await;
    let after_delete = store
        .attribution_feed(app, cursor, 10)
        .await
        .expect("read the feed");
    assert_eq!(after_delete, [], "a deletion adds nothing to the feed");

    let new = record_installs(
        store,
        vec![install(app, "c", PartnerId::Kochava, seg(), t0() + secs(2))],
    )
    .await;
    let (entries, _) = read_feed(store, app, cursor, 10, 1).await;
    assert_eq!(event_ids(&entries), new, "the row after the deleted one");
    assert!(entries[0].cursor > cursor);
}

/// The column list of a hand-made attribution (a transaction other than a batch).
const HAND_INSERT: &str = "insert into attributions (id, app_id, event_id, partner, \
     attributed_at) values ($1, $2, $3, 'tune', $4)";

/// A transaction that wrote its row first but commits after a later batch: the
/// feed shows neither until it commits, then both, the earlier first, to a
/// consumer resuming from the cursor it stored meanwhile. (SQLite has one writer at
/// a time, so no batch can commit in between: the held-back part is the check.)
async fn feed_holds_back_a_transaction_that_started_first_until_it_commits(
    store: &dyn Store,
    probe: &Probe,
) {
    let app = create_sample_app(store).await;
    let seg = || segments("net", "camp", "group", "ad");
    let first = record_installs(
        store,
        vec![install(app, "first", PartnerId::Kochava, seg(), t0())],
    )
    .await;
    let (_, cursor) = read_feed(store, app, FeedCursor::START, 10, 1).await;

    let hand_id = Uuid::now_v7();
    let hand_event = Uuid::now_v7();
    let mut later = Vec::new();
    match probe {
        Probe::Postgres(pool) => {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query(HAND_INSERT)
                .bind(hand_id)
                .bind(app.as_uuid())
                .bind(hand_event)
                .bind(t0() + secs(1))
                .execute(&mut *tx)
                .await
                .expect("insert by hand");
            // Committed, but behind a transaction that is still running.
            later = record_installs(
                store,
                vec![install(app, "later", PartnerId::Kochava, seg(), t0())],
            )
            .await;
            let page = store.attribution_feed(app, cursor, 10).await.expect("feed");
            assert_eq!(page, [], "held back while an older transaction runs");
            tx.commit().await.expect("commit");
        }
        Probe::Sqlite(pool) => {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query(HAND_INSERT)
                .bind(hand_id.to_string())
                .bind(app.to_string())
                .bind(hand_event.to_string())
                .bind(
                    (t0() + secs(1))
                        .format(super::super::sqlite::TIME_FORMAT)
                        .to_string(),
                )
                .execute(&mut *tx)
                .await
                .expect("insert by hand");
            let page = store.attribution_feed(app, cursor, 10).await.expect("feed");
            assert_eq!(page, [], "uncommitted rows are not in the feed");
            tx.commit().await.expect("commit");
        }
    }

    let mut want = vec![hand_event];
    want.extend(&later);
    let (entries, _) = read_feed(store, app, cursor, 10, want.len()).await;
    assert_eq!(
        event_ids(&entries),
        want,
        "after the stored cursor: the earlier transaction first"
    );
    assert!(
        !event_ids(&entries).contains(&first[0]),
        "nothing read twice"
    );
}

/// Rows written before migration 0013, then the migration: all in the feed, in
/// (attributed_at, id) order on SQLite and in id order (creation) on PostgreSQL,
/// where they share the migration's transaction; new rows follow them.
async fn feed_migration_orders_existing_rows(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let seg = || segments("net", "camp", "group", "ad");
    // Received out of creation order.
    let mut old = Vec::new();
    for (key, n) in [("x", 30), ("y", 10), ("z", 20)] {
        old.extend(
            record_installs(
                store,
                vec![install(app, key, PartnerId::Kochava, seg(), t0() + secs(n))],
            )
            .await,
        );
    }
    let (undo, redo) = match probe {
        Probe::Postgres(_) => (
            "drop index attributions_feed; alter table attributions drop column commit_tx;",
            include_str!("../../../migrations/postgres/0013_attribution_feed.sql"),
        ),
        Probe::Sqlite(_) => (
            "drop trigger attributions_feed_seq; drop index attributions_feed; \
             drop table attribution_feed_seq; alter table attributions drop column feed_seq;",
            include_str!("../../../migrations/sqlite/0013_attribution_feed.sql"),
        ),
    };
    probe.run_script(undo).await;
    probe.run_script(redo).await;

    let (entries, cursor) = read_feed(store, app, FeedCursor::START, 2, 3).await;
    let want = match probe {
        Probe::Postgres(_) => old.clone(),
        Probe::Sqlite(_) => vec![old[1], old[2], old[0]],
    };
    assert_eq!(event_ids(&entries), want, "existing rows, numbered");
    let new = record_installs(
        store,
        vec![install(app, "new", PartnerId::Kochava, seg(), t0())],
    )
    .await;
    let (entries, _) = read_feed(store, app, cursor, 10, 1).await;
    assert_eq!(
        event_ids(&entries),
        new,
        "new rows follow the migrated ones"
    );
}

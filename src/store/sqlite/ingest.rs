//! SQLite: the write path: one transaction per batch of deliveries, plus quota counts.
//!
//! Each step is a few multi-row statements (see `multi_row.rs`), never one
//! statement per postback. The write lock taken at BEGIN excludes every other
//! writer, so each step can simply ask and then write.

use std::collections::hash_map::Entry;
use std::collections::HashSet;
use std::sync::LazyLock;

use super::multi_row::{MultiRow, SqliteQuery};
use super::*;
use crate::store::forwarding::{message_document, ATTRIBUTION_CREATED, EVENT_ACCEPTED};

static INSERT_EVENTS: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "insert into postback_events (id, app_id, partner, kind, event_name, \
             source, campaign, adgroup, ad, \
             user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
             ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, raw_payload) \
         values ",
        22,
        " on conflict (app_id, partner, dedupe_key) do nothing returning id",
    )
});

/// The stored events of (app, partner, dedupe key) rows, through the unique index.
static STORED_EVENTS: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "with v (app_id, partner, dedupe_key) as (values ",
        3,
        ") select e.app_id, e.partner, e.dedupe_key, e.id \
         from v join postback_events e using (app_id, partner, dedupe_key)",
    )
});

/// Who owns (app, kind, value) identifiers, by primary key.
static OWNERS: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "with v (app_id, kind, value) as (values ",
        3,
        ") select u.app_id, u.kind, u.value, u.attribution_id \
         from v join user_identities u using (app_id, kind, value)",
    )
});

static INSERT_ATTRIBUTIONS: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "insert into attributions (id, app_id, event_id, partner, source, campaign, \
             adgroup, ad, user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
             attributed_at, feed_seq) \
         values ",
        16,
        "",
    )
});

static INSERT_IDENTITIES: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "insert or ignore into user_identities (app_id, kind, value, attribution_id) values ",
        4,
        "",
    )
});

static INSERT_OUTBOX: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "insert into outbox (id, destination_id, app_id, type, event_id, attribution_id, \
             payload, created_at, next_attempt_at) values ",
        9,
        "",
    )
});

// Two-argument max() is null when either side is; coalesce keeps the other.
static UPSERT_CONNECTIONS: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "insert into partner_connections as c (app_id, partner, status, last_success_at, \
             installs, events, organic_ignored, duplicates, rejected, rate_limited, updated_at) \
         values ",
        11,
        " on conflict (app_id, partner) do update set \
             status = case when excluded.status = 'connected' then 'connected' else c.status end, \
             last_success_at = coalesce(max(c.last_success_at, excluded.last_success_at), \
                 c.last_success_at, excluded.last_success_at), \
             installs = c.installs + excluded.installs, \
             events = c.events + excluded.events, \
             organic_ignored = c.organic_ignored + excluded.organic_ignored, \
             duplicates = c.duplicates + excluded.duplicates, \
             rejected = c.rejected + excluded.rejected, \
             rate_limited = c.rate_limited + excluded.rate_limited, \
             updated_at = excluded.updated_at",
    )
});

static ADD_QUOTA_REQUESTS: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "insert into quota_usage (app_id, window_start, requests) values ",
        3,
        " on conflict (app_id, window_start) do update \
         set requests = quota_usage.requests + excluded.requests",
    )
});

/// The body of `record_batch`, inside its transaction.
async fn record_in(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
    counters: &[CounterDelta],
) -> Result<RecordedBatch, sqlx::Error> {
    // 1. Events.
    let mut outcomes = insert_events(conn, events).await?;

    // 2. New installs of apps with a quota: granted from their hour's row; the
    //    surplus is removed again. Only quota apps get here: a statement per
    //    (app, hour) and per revoked event is rare enough.
    let demand = quota_demand(events, &outcomes);
    let mut installs = Vec::new();
    let mut granted = BTreeMap::new();
    for (&(app, window), (limit, positions)) in &demand {
        let row = sqlx::query(
            "insert into quota_usage as q (app_id, window_start, requests, installs, last_grant) \
             values ($1, $2, 0, min($3, $4), min($3, $4)) \
             on conflict (app_id, window_start) do update set \
                 installs = min($3, q.installs + excluded.installs), \
                 last_grant = min($3, q.installs + excluded.installs) - q.installs \
             returning installs, last_grant",
        )
        .bind(uuid_text(app.as_uuid()))
        .bind(time_text(window))
        .bind(i64::from(*limit))
        .bind(positions.len() as i64)
        .fetch_one(&mut *conn)
        .await?;
        granted.insert((app, window), row.try_get::<i64, _>("last_grant")?);
        installs.push(QuotaUsage {
            app_id: app,
            window_start: window,
            requests: 0,
            installs: row.try_get("installs")?,
        });
    }
    for (_, event_id) in apply_grants(&mut outcomes, &demand, &granted) {
        sqlx::query("delete from postback_events where id = $1")
            .bind(uuid_text(event_id))
            .execute(&mut *conn)
            .await?;
    }

    // 3. First-touch attributions.
    let recorded = recorded_installs(events, &outcomes);
    let attributed = attribute(conn, events, &first_touches(events, &recorded)).await?;

    // 4. The outbox: a message per accepted event and per new attribution, for each
    //    enabled destination of its app that wants it.
    enqueue_messages(conn, events, &outcomes, &attributed).await?;

    // 5. One counter row per (app, partner).
    let now = time_text(Utc::now());
    let tallies: Vec<_> = tally_batch(events, &outcomes, counters)
        .into_iter()
        .map(|((app, partner), tally)| (uuid_text(app.as_uuid()), partner, tally))
        .collect();
    UPSERT_CONNECTIONS
        .run(conn, &tallies, |query, (app, partner, tally)| {
            let status = if tally.connects() {
                "connected"
            } else {
                "not_connected"
            };
            query
                .bind(app.as_str())
                .bind(partner.as_str())
                .bind(status)
                .bind(tally.last_install_at.map(time_text))
                .bind(tally.installs)
                .bind(tally.events)
                .bind(tally.organic_ignored)
                .bind(tally.duplicates)
                .bind(tally.rejected)
                .bind(tally.rate_limited)
                .bind(now.as_str())
        })
        .await?;
    Ok(RecordedBatch { outcomes, installs })
}

/// Insert the batch's events: one row per distinct (app, partner, dedupe key),
/// in dedupe-key order as on PostgreSQL. A later copy in the batch is a
/// duplicate of the first without asking the database; a key stored before is
/// a duplicate of the stored event.
async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
) -> Result<Vec<RecordOutcome>, sqlx::Error> {
    // For each event, the position of the first copy of its key.
    let mut first_copy = vec![0; events.len()];
    let mut firsts: HashMap<(AppId, PartnerId, &str), usize> = HashMap::new();
    // (new event id, position) of each first copy.
    let mut rows: Vec<(String, usize)> = Vec::new();
    for i in insert_order(events) {
        let event = &events[i];
        match firsts.entry((event.app_id, event.partner, event.dedupe_key.as_str())) {
            Entry::Occupied(first) => first_copy[i] = *first.get(),
            Entry::Vacant(slot) => {
                slot.insert(i);
                first_copy[i] = i;
                rows.push((uuid_text(Uuid::now_v7()), i));
            }
        }
    }
    let inserted: HashSet<String> = INSERT_EVENTS
        .run(conn, &rows, |query, (id, i)| {
            bind_event(query, id, &events[*i])
        })
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;

    // (event id, recorded by this batch) per first copy.
    let mut ids: Vec<Option<(String, bool)>> = vec![None; events.len()];
    let mut stored_before = Vec::new();
    for (id, i) in rows {
        if inserted.contains(&id) {
            ids[i] = Some((id, true));
        } else {
            stored_before.push((uuid_text(events[i].app_id.as_uuid()), i));
        }
    }
    if !stored_before.is_empty() {
        let stored = STORED_EVENTS
            .run(conn, &stored_before, |query, (app, i)| {
                query
                    .bind(app.as_str())
                    .bind(events[*i].partner.as_str())
                    .bind(events[*i].dedupe_key.as_str())
            })
            .await?;
        let stored = by_three_columns(&stored)?;
        for (app, i) in stored_before {
            let key = (
                app,
                events[i].partner.as_str().to_owned(),
                events[i].dedupe_key.clone(),
            );
            // The conflict that kept the row out is this stored row.
            let id = stored.get(&key).ok_or(sqlx::Error::RowNotFound)?;
            ids[i] = Some((id.clone(), false));
        }
    }

    (0..events.len())
        .map(|i| {
            let (id, recorded) = ids[first_copy[i]]
                .as_ref()
                .expect("every first copy was inserted or found stored");
            let id = Uuid::parse_str(id).map_err(|_| decode_error("uuid", id))?;
            Ok(if *recorded && first_copy[i] == i {
                RecordOutcome::Recorded { event_id: id }
            } else {
                RecordOutcome::Duplicate { first_event_id: id }
            })
        })
        .collect()
}

/// Rows of (key, key, key, value) text columns as a map from the three keys.
fn by_three_columns(
    rows: &[SqliteRow],
) -> Result<HashMap<(String, String, String), String>, sqlx::Error> {
    rows.iter()
        .map(|row| {
            Ok((
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
                row.try_get(3)?,
            ))
        })
        .collect()
}

fn bind_event<'q>(query: SqliteQuery<'q>, id: &'q str, event: &'q NewEvent) -> SqliteQuery<'q> {
    let p = &event.postback;
    query
        .bind(id)
        .bind(uuid_text(event.app_id.as_uuid()))
        .bind(event.partner.as_str())
        .bind(p.kind.as_str())
        .bind(&p.event_name)
        .bind(&p.segments.source)
        .bind(&p.segments.campaign)
        .bind(&p.segments.adgroup)
        .bind(&p.segments.ad)
        .bind(&p.ids.user_id)
        .bind(&p.ids.idfa)
        .bind(&p.ids.idfv)
        .bind(&p.ids.google_aid)
        .bind(&p.ids.android_id)
        .bind(&p.ids.partner_device_id)
        .bind(&p.ip)
        .bind(&p.user_agent)
        .bind(&p.partner_event_id)
        .bind(p.event_time.map(time_text))
        .bind(time_text(event.received_at))
        .bind(event.dedupe_key.as_str())
        .bind(event.raw.to_string())
}

/// One identifier of a first-touch candidate: (app, kind, value, candidate).
type Claim<'e> = (String, &'static str, &'e str, usize);

/// Attribute the batch's first-touch candidates ((position, event id), in input
/// order, sharing no identifier with each other): each becomes a new attribution
/// unless one of its identifiers already belongs to a stored user, whose
/// identities its identifiers not seen before then join. Returns (position,
/// event id, attribution id) of the new attributions.
async fn attribute(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
    candidates: &[(usize, Uuid)],
) -> Result<Vec<(usize, Uuid, Uuid)>, sqlx::Error> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let claims: Vec<Claim> = candidates
        .iter()
        .enumerate()
        .flat_map(|(c, &(i, _))| {
            let app = uuid_text(events[i].app_id.as_uuid());
            events[i]
                .postback
                .ids
                .pairs()
                .filter_map(move |(kind, value)| value.map(|v| (app.clone(), kind, v, c)))
        })
        .collect();
    let owners = OWNERS
        .run(conn, &claims, |query, (app, kind, value, _)| {
            query.bind(app.as_str()).bind(*kind).bind(*value)
        })
        .await?;
    let owners = by_three_columns(&owners)?;

    // Each candidate's owner: the stored user of its first identifier (in
    // matching priority order) that has one, else a new attribution.
    let mut owner_of: Vec<Option<String>> = vec![None; candidates.len()];
    for (app, kind, value, c) in &claims {
        if owner_of[*c].is_none() {
            let key = (app.clone(), (*kind).to_owned(), (*value).to_owned());
            owner_of[*c] = owners.get(&key).cloned();
        }
    }
    let mut created = Vec::new();
    for (c, &(i, event_id)) in candidates.iter().enumerate() {
        if owner_of[c].is_none() {
            let id = Uuid::now_v7();
            owner_of[c] = Some(uuid_text(id));
            created.push((i, event_id, id));
        }
    }

    if !created.is_empty() {
        // Numbered here, in commit order, for the pull feed (migration 0021: the
        // trigger numbers only rows inserted without one).
        let last: i64 = sqlx::query_scalar(
            "update attribution_feed_seq set last = last + $1 where id = 1 returning last",
        )
        .bind(created.len() as i64)
        .fetch_one(&mut *conn)
        .await?;
        let first_seq = last - created.len() as i64 + 1;
        let rows: Vec<_> = created
            .iter()
            .zip(first_seq..)
            .map(|(&(i, event_id, id), seq)| (i, uuid_text(event_id), uuid_text(id), seq))
            .collect();
        INSERT_ATTRIBUTIONS
            .run(conn, &rows, |query, (i, event_id, id, seq)| {
                let event = &events[*i];
                let (s, ids) = (&event.postback.segments, &event.postback.ids);
                query
                    .bind(id.as_str())
                    .bind(uuid_text(event.app_id.as_uuid()))
                    .bind(event_id.as_str())
                    .bind(event.partner.as_str())
                    .bind(&s.source)
                    .bind(&s.campaign)
                    .bind(&s.adgroup)
                    .bind(&s.ad)
                    .bind(&ids.user_id)
                    .bind(&ids.idfa)
                    .bind(&ids.idfv)
                    .bind(&ids.google_aid)
                    .bind(&ids.android_id)
                    .bind(&ids.partner_device_id)
                    .bind(time_text(event.received_at))
                    .bind(*seq)
            })
            .await?;
    }

    // An identifier someone else already owns keeps its owner.
    INSERT_IDENTITIES
        .run(conn, &claims, |query, (app, kind, value, c)| {
            query
                .bind(app.as_str())
                .bind(*kind)
                .bind(*value)
                .bind(owner_of[*c].as_deref())
        })
        .await?;
    Ok(created)
}

/// Write the outbox messages of a batch's accepted events and new attributions
/// (positions in `events`, with the event and attribution ids).
async fn enqueue_messages(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
    outcomes: &[RecordOutcome],
    attributed: &[(usize, Uuid, Uuid)],
) -> Result<(), sqlx::Error> {
    let accepted: Vec<(usize, Uuid, Option<Uuid>)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            RecordOutcome::Recorded { event_id } => Some((i, *event_id, None)),
            _ => None,
        })
        .chain(attributed.iter().map(|&(i, e, a)| (i, e, Some(a))))
        .collect();
    if accepted.is_empty() {
        return Ok(());
    }
    // The enabled destinations of the batch's apps, in one statement: app → (id, what).
    let apps: BTreeSet<String> = accepted
        .iter()
        .map(|&(i, _, _)| uuid_text(events[i].app_id.as_uuid()))
        .collect();
    let mut destinations: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let rows = sqlx::query(
        "select app_id, id, what from destinations \
         where enabled = 1 and app_id in (select value from json_each($1))",
    )
    .bind(serde_json::to_string(&apps).expect("a list of strings serializes"))
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    for row in rows {
        destinations
            .entry(row.try_get("app_id")?)
            .or_default()
            .push((row.try_get("id")?, row.try_get("what")?));
    }

    let mut messages = Vec::new();
    for (i, event_id, attribution_id) in accepted {
        let Some(wanted_by) = destinations.get(&uuid_text(events[i].app_id.as_uuid())) else {
            continue;
        };
        let (ty, wants) = match attribution_id {
            Some(_) => (ATTRIBUTION_CREATED, "attributions"),
            None => (EVENT_ACCEPTED, "events"),
        };
        for (destination, what) in wanted_by {
            if what == wants || what == "all" {
                let document = message_document(ty, &events[i], event_id, attribution_id);
                messages.push((
                    destination.as_str(),
                    i,
                    ty,
                    event_id,
                    attribution_id,
                    document.to_string(),
                ));
            }
        }
    }
    INSERT_OUTBOX
        .run(
            conn,
            &messages,
            |query, (destination, i, ty, event_id, attribution_id, document)| {
                let at = time_text(events[*i].received_at);
                query
                    .bind(uuid_text(Uuid::now_v7()))
                    .bind(*destination)
                    .bind(uuid_text(events[*i].app_id.as_uuid()))
                    .bind(*ty)
                    .bind(uuid_text(*event_id))
                    .bind(attribution_id.map(uuid_text))
                    .bind(document.as_str())
                    .bind(at.clone())
                    .bind(at)
            },
        )
        .await?;
    Ok(())
}

#[async_trait]
impl IngestStore for SqliteStore {
    async fn record(&self, batch: Batch<'_>) -> Result<RecordedBatch, StoreError> {
        if batch.is_empty() {
            return Ok(RecordedBatch::default());
        }
        let Batch {
            events,
            counters,
            quota,
            ..
        } = batch;
        let mut tx = self.begin_write().await?;
        let outcomes = record_in(&mut tx, events, counters)
            .await
            .map_err(store_error)?;
        super::deliveries::insert(&mut tx, &batch, &outcomes.outcomes)
            .await
            .map_err(store_error)?;
        ADD_QUOTA_REQUESTS
            .run(&mut tx, quota, |query, q| {
                query
                    .bind(uuid_text(q.app_id.as_uuid()))
                    .bind(time_text(q.window_start))
                    .bind(q.requests)
            })
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(outcomes)
    }

    async fn quota_usage(
        &self,
        window_start: DateTime<Utc>,
    ) -> Result<Vec<QuotaUsage>, StoreError> {
        let rows = sqlx::query(
            "select app_id, requests, installs from quota_usage where window_start = $1",
        )
        .bind(time_text(window_start))
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(QuotaUsage {
                    app_id: app_id_col(row, "app_id")?,
                    window_start,
                    requests: row.try_get("requests")?,
                    installs: row.try_get("installs")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }
}

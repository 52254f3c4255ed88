//! SQLite: the write path: one transaction per batch of deliveries, plus quota counts.

use super::*;

/// The body of `record_batch`, inside its transaction. The write lock taken at
/// BEGIN excludes every other writer, so each step can simply ask and then write.
async fn record_in(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
    counters: &[CounterDelta],
) -> Result<RecordedBatch, sqlx::Error> {
    // 1. Events, in dedupe-key order (as on PostgreSQL); a key seen earlier in the
    //    batch is a duplicate of that copy without asking the database.
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; events.len()];
    let mut first_ids: HashMap<(AppId, PartnerId, &str), Uuid> = HashMap::new();
    for i in insert_order(events) {
        let event = &events[i];
        let key = (event.app_id, event.partner, event.dedupe_key.as_str());
        let outcome = match first_ids.get(&key) {
            Some(&first_event_id) => RecordOutcome::Duplicate { first_event_id },
            None => {
                let (event_id, outcome) = insert_event(conn, event).await?;
                first_ids.insert(key, event_id);
                outcome
            }
        };
        outcomes[i] = Some(outcome);
    }
    let mut outcomes: Vec<RecordOutcome> = outcomes
        .into_iter()
        .map(|outcome| outcome.expect("insert_order visits every event once"))
        .collect();

    // 2. New installs of apps with a quota: granted from their hour's row; the
    //    surplus is removed again.
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

    // 3. First-touch attributions, in input order: a candidate none of whose
    //    identifiers belongs to a user yet is a new user.
    let recorded = recorded_installs(events, &outcomes);
    let mut attributed = Vec::new();
    for (i, event_id) in first_touches(events, &recorded) {
        if let Some(id) = attribute(conn, &events[i], event_id).await? {
            attributed.push((i, event_id, id));
        }
    }

    // 4. The outbox: a message per accepted event and per new attribution, for each
    //    enabled destination of its app that wants it.
    enqueue_messages(conn, events, &outcomes, &attributed).await?;

    // 5. One upsert per (app, partner).
    let now = Utc::now();
    for ((app, partner), tally) in tally_batch(events, &outcomes, counters) {
        upsert_connection(conn, app, partner, &tally, now).await?;
    }
    Ok(RecordedBatch { outcomes, installs })
}

async fn insert_event(
    conn: &mut SqliteConnection,
    event: &NewEvent,
) -> Result<(Uuid, RecordOutcome), sqlx::Error> {
    let p = &event.postback;
    let app_id = uuid_text(event.app_id.as_uuid());
    let inserted: Option<String> = sqlx::query_scalar(
        "insert into postback_events (id, app_id, partner, kind, event_name, \
             source, campaign, adgroup, ad, \
             user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
             ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, raw_payload) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19, $20, $21, $22) \
         on conflict (app_id, partner, dedupe_key) do nothing \
         returning id",
    )
    .bind(uuid_text(Uuid::now_v7()))
    .bind(&app_id)
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
    .bind(&event.dedupe_key)
    .bind(event.raw.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let (id, recorded) = match inserted {
        Some(id) => (id, true),
        None => {
            let id = sqlx::query_scalar(
                "select id from postback_events \
                 where app_id = $1 and partner = $2 and dedupe_key = $3",
            )
            .bind(&app_id)
            .bind(event.partner.as_str())
            .bind(&event.dedupe_key)
            .fetch_one(conn)
            .await?;
            (id, false)
        }
    };
    let id = Uuid::parse_str(&id).map_err(|_| decode_error("uuid", &id))?;
    Ok((
        id,
        if recorded {
            RecordOutcome::Recorded { event_id: id }
        } else {
            RecordOutcome::Duplicate { first_event_id: id }
        },
    ))
}

/// Write the outbox messages of a batch's accepted events and new attributions
/// (positions in `events`, with the event and attribution ids).
async fn enqueue_messages(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
    outcomes: &[RecordOutcome],
    attributed: &[(usize, Uuid, Uuid)],
) -> Result<(), sqlx::Error> {
    use crate::store::forwarding::{message_document, ATTRIBUTION_CREATED, EVENT_ACCEPTED};
    // Each app's enabled destinations, read once per batch: `(id, what)`.
    let mut destinations: HashMap<AppId, Vec<(String, String)>> = HashMap::new();
    let mut messages = Vec::new();
    let accepted = outcomes.iter().enumerate().filter_map(|(i, o)| match o {
        RecordOutcome::Recorded { event_id } => Some((i, *event_id, None)),
        _ => None,
    });
    let created = attributed.iter().map(|&(i, e, a)| (i, e, Some(a)));
    for (i, event_id, attribution_id) in accepted.chain(created) {
        let app = events[i].app_id;
        if let std::collections::hash_map::Entry::Vacant(slot) = destinations.entry(app) {
            slot.insert(
                sqlx::query_as(
                    "select id, what from destinations where app_id = $1 and enabled = 1",
                )
                .bind(uuid_text(app.as_uuid()))
                .fetch_all(&mut *conn)
                .await?,
            );
        }
        let (ty, wants) = match attribution_id {
            Some(_) => (ATTRIBUTION_CREATED, "attributions"),
            None => (EVENT_ACCEPTED, "events"),
        };
        for (destination, what) in &destinations[&app] {
            if what == wants || what == "all" {
                let document = message_document(ty, &events[i], event_id, attribution_id);
                messages.push((
                    destination.clone(),
                    i,
                    ty,
                    event_id,
                    attribution_id,
                    document,
                ));
            }
        }
    }
    for (destination, i, ty, event_id, attribution_id, document) in messages {
        let at = time_text(events[i].received_at);
        sqlx::query(
            "insert into outbox (id, destination_id, app_id, type, event_id, attribution_id, \
                 payload, created_at, next_attempt_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(uuid_text(Uuid::now_v7()))
        .bind(destination)
        .bind(uuid_text(events[i].app_id.as_uuid()))
        .bind(ty)
        .bind(uuid_text(event_id))
        .bind(attribution_id.map(uuid_text))
        .bind(document.to_string())
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Make `event` (a recorded install) the user's attribution unless one of its
/// identifiers already belongs to a user; if one does, the identifiers not seen
/// before join that user. Returns the new attribution's id, if one was made.
async fn attribute(
    conn: &mut SqliteConnection,
    event: &NewEvent,
    event_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    let app = uuid_text(event.app_id.as_uuid());
    let ids: Vec<(&str, &str)> = event
        .postback
        .ids
        .pairs()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    // One probe for every identifier (each a primary-key lookup), one statement.
    let probe = ids
        .iter()
        .enumerate()
        .map(|(n, _)| format!("(kind = ${} and value = ${})", 2 * n + 2, 2 * n + 3))
        .collect::<Vec<_>>()
        .join(" or ");
    let sql = format!(
        "select attribution_id from user_identities where app_id = $1 and ({probe}) limit 1"
    );
    let owner: Option<String> = if ids.is_empty() {
        None
    } else {
        let mut query = sqlx::query_scalar(&sql).bind(&app);
        for &(kind, value) in &ids {
            query = query.bind(kind).bind(value);
        }
        query.fetch_optional(&mut *conn).await?
    };
    let mut created = None;
    let attribution_id = match owner {
        Some(known) => known,
        None => {
            let (s, i) = (&event.postback.segments, &event.postback.ids);
            let new_id = Uuid::now_v7();
            let id = uuid_text(new_id);
            sqlx::query(
                "insert into attributions (id, app_id, event_id, partner, source, campaign, \
                     adgroup, ad, user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
                     attributed_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(&id)
            .bind(&app)
            .bind(uuid_text(event_id))
            .bind(event.partner.as_str())
            .bind(&s.source)
            .bind(&s.campaign)
            .bind(&s.adgroup)
            .bind(&s.ad)
            .bind(&i.user_id)
            .bind(&i.idfa)
            .bind(&i.idfv)
            .bind(&i.google_aid)
            .bind(&i.android_id)
            .bind(&i.partner_device_id)
            .bind(time_text(event.received_at))
            .execute(&mut *conn)
            .await?;
            created = Some(new_id);
            id
        }
    };
    let rows = (0..ids.len())
        .map(|n| format!("($1, ${}, ${}, $2)", 2 * n + 3, 2 * n + 4))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "insert or ignore into user_identities (app_id, kind, value, attribution_id) values {rows}"
    );
    if !ids.is_empty() {
        let mut query = sqlx::query(&sql).bind(&app).bind(&attribution_id);
        for (kind, value) in ids {
            query = query.bind(kind).bind(value);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(created)
}

async fn upsert_connection(
    conn: &mut SqliteConnection,
    app: AppId,
    partner: PartnerId,
    tally: &ConnectionTally,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let status = if tally.connects() {
        "connected"
    } else {
        "not_connected"
    };
    // Two-argument max() is null when either side is; coalesce keeps the other.
    sqlx::query(
        "insert into partner_connections as c (app_id, partner, status, last_success_at, \
             installs, events, organic_ignored, duplicates, rejected, rate_limited, updated_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $11, $10) \
         on conflict (app_id, partner) do update set \
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
    .bind(uuid_text(app.as_uuid()))
    .bind(partner.as_str())
    .bind(status)
    .bind(tally.last_install_at.map(time_text))
    .bind(tally.installs)
    .bind(tally.events)
    .bind(tally.organic_ignored)
    .bind(tally.duplicates)
    .bind(tally.rejected)
    .bind(time_text(now))
    .bind(tally.rate_limited)
    .execute(conn)
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
        for q in quota {
            sqlx::query(
                "insert into quota_usage (app_id, window_start, requests) values ($1, $2, $3) \
                 on conflict (app_id, window_start) do update \
                 set requests = quota_usage.requests + excluded.requests",
            )
            .bind(uuid_text(q.app_id.as_uuid()))
            .bind(time_text(q.window_start))
            .bind(q.requests)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
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

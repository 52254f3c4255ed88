//! SQLite: the write path: one transaction per batch of deliveries, plus quota counts.

use super::*;

/// The body of `record_batch`, inside its transaction.
async fn record_in(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
    counters: &[CounterDelta],
) -> Result<Vec<RecordOutcome>, sqlx::Error> {
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
                let outcome = insert_event(conn, event).await?;
                first_ids.insert(key, outcome.event_id());
                outcome
            }
        };
        outcomes[i] = Some(outcome);
    }
    let outcomes: Vec<RecordOutcome> = outcomes
        .into_iter()
        .map(|outcome| outcome.expect("insert_order visits every event once"))
        .collect();

    // 2. First-touch attributions, in input order. The write lock taken at BEGIN
    //    already excludes concurrent batches.
    for (event, outcome) in events.iter().zip(&outcomes) {
        if let RecordOutcome::Recorded { event_id } = *outcome {
            if event.postback.kind == EventKind::Install && !user_known(conn, event).await? {
                insert_attribution(conn, event, event_id).await?;
            }
        }
    }

    // 3. One upsert per (app, partner).
    let now = Utc::now();
    for ((app, partner), tally) in tally_batch(events, &outcomes, counters) {
        upsert_connection(conn, app, partner, &tally, now).await?;
    }
    Ok(outcomes)
}

async fn insert_event(
    conn: &mut SqliteConnection,
    event: &NewEvent,
) -> Result<RecordOutcome, sqlx::Error> {
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
    Ok(if recorded {
        RecordOutcome::Recorded { event_id: id }
    } else {
        RecordOutcome::Duplicate { first_event_id: id }
    })
}

/// Whether an attribution of the event's app shares any identifier with it
/// (same column, exact match; absent identifiers match nothing).
async fn user_known(conn: &mut SqliteConnection, event: &NewEvent) -> Result<bool, sqlx::Error> {
    let ids = &event.postback.ids;
    // One EXISTS per column, so each probe uses its own index; a single OR across
    // the columns makes SQLite scan every attribution of the app.
    sqlx::query_scalar(
        "select exists (select 1 from attributions where app_id = $1 and user_id = $2) \
             or exists (select 1 from attributions where app_id = $1 and idfa = $3) \
             or exists (select 1 from attributions where app_id = $1 and idfv = $4) \
             or exists (select 1 from attributions where app_id = $1 and google_aid = $5) \
             or exists (select 1 from attributions where app_id = $1 and android_id = $6) \
             or exists (select 1 from attributions where app_id = $1 and partner_device_id = $7)",
    )
    .bind(uuid_text(event.app_id.as_uuid()))
    .bind(&ids.user_id)
    .bind(&ids.idfa)
    .bind(&ids.idfv)
    .bind(&ids.google_aid)
    .bind(&ids.android_id)
    .bind(&ids.partner_device_id)
    .fetch_one(conn)
    .await
}

async fn insert_attribution(
    conn: &mut SqliteConnection,
    event: &NewEvent,
    event_id: Uuid,
) -> Result<(), sqlx::Error> {
    let (s, ids) = (&event.postback.segments, &event.postback.ids);
    sqlx::query(
        "insert into attributions (id, app_id, event_id, partner, source, campaign, adgroup, ad, \
             user_id, idfa, idfv, google_aid, android_id, partner_device_id, attributed_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(uuid_text(Uuid::now_v7()))
    .bind(uuid_text(event.app_id.as_uuid()))
    .bind(uuid_text(event_id))
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
    .execute(conn)
    .await?;
    Ok(())
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
             installs, events, organic_ignored, duplicates, rejected, updated_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         on conflict (app_id, partner) do update set \
             status = case when excluded.status = 'connected' then 'connected' else c.status end, \
             last_success_at = coalesce(max(c.last_success_at, excluded.last_success_at), \
                 c.last_success_at, excluded.last_success_at), \
             installs = c.installs + excluded.installs, \
             events = c.events + excluded.events, \
             organic_ignored = c.organic_ignored + excluded.organic_ignored, \
             duplicates = c.duplicates + excluded.duplicates, \
             rejected = c.rejected + excluded.rejected, \
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
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl IngestStore for SqliteStore {
    async fn record_batch(
        &self,
        events: &[NewEvent],
        counters: &[CounterDelta],
        quota: &[QuotaUsage],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        if events.is_empty() && counters.is_empty() && quota.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let outcomes = record_in(&mut tx, events, counters)
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
        let rows = sqlx::query("select app_id, requests from quota_usage where window_start = $1")
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
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }
}

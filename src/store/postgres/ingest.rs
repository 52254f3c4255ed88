//! PostgreSQL: the write path: one transaction per batch of deliveries, plus quota counts.

use super::*;

/// First key of the two-int advisory locks this store takes (the second is per app),
/// so they cannot collide with other users of advisory locks on the same server.
const ATTRIBUTION_LOCK_SPACE: i32 = 0x5042_4741; // "PBGA"

/// The body of `record_batch`, inside its transaction.
async fn record_in(
    conn: &mut PgConnection,
    events: &[NewEvent],
    counters: &[CounterDelta],
) -> Result<Vec<RecordOutcome>, sqlx::Error> {
    // A handful of set-based statements per batch, whatever its size: the round
    // trips, not the rows, are what a batch costs.
    let outcomes = insert_events(conn, events).await?;

    // First-touch attributions. The per-app lock keeps two concurrent batches (two
    // server processes) from both creating an attribution for the same new user.
    let installs: Vec<(usize, Uuid)> = recorded_installs(events, &outcomes);
    // Lock keys sorted and deduplicated, taken in that order by one statement.
    let locks: BTreeSet<i32> = installs
        .iter()
        .map(|&(i, _)| app_lock_key(events[i].app_id))
        .collect();
    if !locks.is_empty() {
        sqlx::query(
            "select count(pg_advisory_xact_lock($1, k)) \
             from (select k from unnest($2::int4[]) with ordinality as t(k, n) order by n) ordered",
        )
        .bind(ATTRIBUTION_LOCK_SPACE)
        .bind(locks.into_iter().collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    let known = known_users(conn, events, &installs).await?;
    let new = first_touches(events, &installs, &known);
    insert_attributions(conn, events, &new).await?;

    upsert_connections(conn, tally_batch(events, &outcomes, counters), Utc::now()).await?;
    Ok(outcomes)
}

fn app_lock_key(app: AppId) -> i32 {
    let (hi, lo) = app.as_uuid().as_u64_pair();
    let folded = hi ^ lo;
    (folded ^ (folded >> 32)) as i32
}

/// Insert the batch's events with one multi-row statement; copies of a dedupe key
/// inside the batch, and keys stored earlier, come back as duplicates.
async fn insert_events(
    conn: &mut PgConnection,
    events: &[NewEvent],
) -> Result<Vec<RecordOutcome>, sqlx::Error> {
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; events.len()];
    // The first copy of each key (in key order, so concurrent batches lock keys in
    // one global order); later copies point at it.
    let mut first_of: HashMap<(AppId, PartnerId, &str), usize> = HashMap::new();
    let mut unique: Vec<usize> = Vec::new();
    let mut copies: Vec<(usize, usize)> = Vec::new();
    for i in insert_order(events) {
        let e = &events[i];
        match first_of.entry((e.app_id, e.partner, e.dedupe_key.as_str())) {
            std::collections::hash_map::Entry::Occupied(first) => copies.push((i, *first.get())),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(i);
                unique.push(i);
            }
        }
    }
    let ids: Vec<Uuid> = unique.iter().map(|_| Uuid::now_v7()).collect();
    let col = |f: fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
        unique.iter().map(|&i| f(&events[i])).collect()
    };
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "insert into postback_events (id, app_id, partner, kind, event_name, \
             source, campaign, adgroup, ad, \
             user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
             ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, raw_payload) \
         select id, app_id, partner, kind, event_name, source, campaign, adgroup, ad, \
             user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
             ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, raw::jsonb \
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], \
             $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], \
             $16::text[], $17::text[], $18::text[], $19::timestamptz[], $20::timestamptz[], \
             $21::text[], $22::text[]) \
           as t(id, app_id, partner, kind, event_name, source, campaign, adgroup, ad, \
             user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
             ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, raw) \
         on conflict (app_id, partner, dedupe_key) do nothing \
         returning id",
    )
    .bind(&ids)
    .bind(
        unique
            .iter()
            .map(|&i| events[i].app_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        unique
            .iter()
            .map(|&i| events[i].partner.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        unique
            .iter()
            .map(|&i| events[i].postback.kind.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(col(|e| e.postback.event_name.as_deref()))
    .bind(col(|e| e.postback.segments.source.as_deref()))
    .bind(col(|e| e.postback.segments.campaign.as_deref()))
    .bind(col(|e| e.postback.segments.adgroup.as_deref()))
    .bind(col(|e| e.postback.segments.ad.as_deref()))
    .bind(col(|e| e.postback.ids.user_id.as_deref()))
    .bind(col(|e| e.postback.ids.idfa.as_deref()))
    .bind(col(|e| e.postback.ids.idfv.as_deref()))
    .bind(col(|e| e.postback.ids.google_aid.as_deref()))
    .bind(col(|e| e.postback.ids.android_id.as_deref()))
    .bind(col(|e| e.postback.ids.partner_device_id.as_deref()))
    .bind(col(|e| e.postback.ip.as_deref()))
    .bind(col(|e| e.postback.user_agent.as_deref()))
    .bind(col(|e| e.postback.partner_event_id.as_deref()))
    .bind(
        unique
            .iter()
            .map(|&i| events[i].postback.event_time)
            .collect::<Vec<_>>(),
    )
    .bind(
        unique
            .iter()
            .map(|&i| events[i].received_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        unique
            .iter()
            .map(|&i| events[i].dedupe_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        unique
            .iter()
            .map(|&i| events[i].raw.to_string())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;

    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    let mut stored_before: Vec<usize> = Vec::new();
    for (&i, id) in unique.iter().zip(&ids) {
        if inserted.contains(id) {
            outcomes[i] = Some(RecordOutcome::Recorded { event_id: *id });
        } else {
            stored_before.push(i);
        }
    }
    if !stored_before.is_empty() {
        let rows = sqlx::query(
            "select t.ord, e.id from unnest($1::int4[], $2::uuid[], $3::text[], $4::text[]) \
               as t(ord, app_id, partner, dedupe_key) \
             join postback_events e on e.app_id = t.app_id and e.partner = t.partner \
               and e.dedupe_key = t.dedupe_key",
        )
        .bind(stored_before.iter().map(|&i| i as i32).collect::<Vec<_>>())
        .bind(
            stored_before
                .iter()
                .map(|&i| events[i].app_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(
            stored_before
                .iter()
                .map(|&i| events[i].partner.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            stored_before
                .iter()
                .map(|&i| events[i].dedupe_key.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let ord: i32 = row.try_get(0)?;
            let first_event_id: Uuid = row.try_get(1)?;
            outcomes[ord as usize] = Some(RecordOutcome::Duplicate { first_event_id });
        }
    }
    for (copy, first) in copies {
        let first_event_id = outcomes[first]
            .ok_or_else(|| sqlx::Error::Protocol("dedupe key vanished within the batch".into()))?
            .event_id();
        outcomes[copy] = Some(RecordOutcome::Duplicate { first_event_id });
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| sqlx::Error::Protocol("a conflicting event was not found".into())))
        .collect()
}

/// Which of the batch's recorded installs (by position in `installs`) share an
/// identifier with an attribution already stored. One statement: an indexed probe
/// per identifier column, each written so its partial index applies.
async fn known_users(
    conn: &mut PgConnection,
    events: &[NewEvent],
    installs: &[(usize, Uuid)],
) -> Result<std::collections::HashSet<usize>, sqlx::Error> {
    if installs.is_empty() {
        return Ok(Default::default());
    }
    let id = |f: fn(&Identifiers) -> &Option<String>| -> Vec<Option<String>> {
        installs
            .iter()
            .map(|&(i, _)| f(&events[i].postback.ids).clone())
            .collect()
    };
    let probes = IdentifierKind::ALL
        .iter()
        .map(|k| {
            let c = k.column();
            format!(
                "exists (select 1 from attributions a where a.app_id = t.app_id \
                 and a.{c} = t.{c} and a.{c} is not null)"
            )
        })
        .collect::<Vec<_>>()
        .join(" or ");
    let sql = format!(
        "select t.ord from unnest($1::int4[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[]) \
           as t(ord, app_id, user_id, idfa, idfv, google_aid, android_id, partner_device_id) \
         where {probes}"
    );
    let known: Vec<i32> = sqlx::query_scalar(&sql)
        .bind((0..installs.len() as i32).collect::<Vec<_>>())
        .bind(
            installs
                .iter()
                .map(|&(i, _)| events[i].app_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(id(|ids| &ids.user_id))
        .bind(id(|ids| &ids.idfa))
        .bind(id(|ids| &ids.idfv))
        .bind(id(|ids| &ids.google_aid))
        .bind(id(|ids| &ids.android_id))
        .bind(id(|ids| &ids.partner_device_id))
        .fetch_all(&mut *conn)
        .await?;
    Ok(known.into_iter().map(|k| k as usize).collect())
}

async fn insert_attributions(
    conn: &mut PgConnection,
    events: &[NewEvent],
    new: &[(usize, Uuid)],
) -> Result<(), sqlx::Error> {
    if new.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
        new.iter().map(|&(i, _)| f(&events[i])).collect()
    };
    sqlx::query(
        "insert into attributions (id, app_id, event_id, partner, source, campaign, adgroup, ad, \
             user_id, idfa, idfv, google_aid, android_id, partner_device_id, attributed_at) \
         select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
             $12::text[], $13::text[], $14::text[], $15::timestamptz[])",
    )
    .bind(new.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(
        new.iter()
            .map(|&(i, _)| events[i].app_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        new.iter()
            .map(|&(_, event_id)| event_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        new.iter()
            .map(|&(i, _)| events[i].partner.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(col(|e| e.postback.segments.source.as_deref()))
    .bind(col(|e| e.postback.segments.campaign.as_deref()))
    .bind(col(|e| e.postback.segments.adgroup.as_deref()))
    .bind(col(|e| e.postback.segments.ad.as_deref()))
    .bind(col(|e| e.postback.ids.user_id.as_deref()))
    .bind(col(|e| e.postback.ids.idfa.as_deref()))
    .bind(col(|e| e.postback.ids.idfv.as_deref()))
    .bind(col(|e| e.postback.ids.google_aid.as_deref()))
    .bind(col(|e| e.postback.ids.android_id.as_deref()))
    .bind(col(|e| e.postback.ids.partner_device_id.as_deref()))
    .bind(
        new.iter()
            .map(|&(i, _)| events[i].received_at)
            .collect::<Vec<_>>(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn add_quota_usage(conn: &mut PgConnection, quota: &[QuotaUsage]) -> Result<(), sqlx::Error> {
    if quota.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into quota_usage as q (app_id, window_start, requests) \
         select * from unnest($1::uuid[], $2::timestamptz[], $3::int8[]) \
         on conflict (app_id, window_start) do update set requests = q.requests + excluded.requests",
    )
    .bind(quota.iter().map(|q| q.app_id.as_uuid()).collect::<Vec<_>>())
    .bind(quota.iter().map(|q| q.window_start).collect::<Vec<_>>())
    .bind(quota.iter().map(|q| q.requests).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// All of the batch's counter changes in one statement, rows in key order (so
/// concurrent batches lock them in one global order).
async fn upsert_connections(
    conn: &mut PgConnection,
    tallies: std::collections::BTreeMap<(AppId, PartnerId), ConnectionTally>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if tallies.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = tallies.iter().collect();
    let num = |f: fn(&ConnectionTally) -> i64| rows.iter().map(|(_, t)| f(t)).collect::<Vec<i64>>();
    sqlx::query(
        "insert into partner_connections as c (app_id, partner, status, last_success_at, \
             installs, events, organic_ignored, duplicates, rejected, updated_at) \
         select app_id, partner, status, last_success_at, installs, events, organic_ignored, \
             duplicates, rejected, $10 \
         from unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[], \
             $6::int8[], $7::int8[], $8::int8[], $9::int8[]) with ordinality \
           as t(app_id, partner, status, last_success_at, installs, events, organic_ignored, \
             duplicates, rejected, n) \
         order by n \
         on conflict (app_id, partner) do update set \
             status = case when excluded.status = 'connected' then 'connected' else c.status end, \
             last_success_at = greatest(c.last_success_at, excluded.last_success_at), \
             installs = c.installs + excluded.installs, \
             events = c.events + excluded.events, \
             organic_ignored = c.organic_ignored + excluded.organic_ignored, \
             duplicates = c.duplicates + excluded.duplicates, \
             rejected = c.rejected + excluded.rejected, \
             updated_at = excluded.updated_at",
    )
    .bind(
        rows.iter()
            .map(|((app, _), _)| app.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|((_, partner), _)| partner.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, t)| {
                if t.connects() {
                    "connected"
                } else {
                    "not_connected"
                }
            })
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, t)| t.last_install_at)
            .collect::<Vec<_>>(),
    )
    .bind(num(|t| t.installs))
    .bind(num(|t| t.events))
    .bind(num(|t| t.organic_ignored))
    .bind(num(|t| t.duplicates))
    .bind(num(|t| t.rejected))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl IngestStore for PgStore {
    async fn record_batch(
        &self,
        events: &[NewEvent],
        counters: &[CounterDelta],
        quota: &[QuotaUsage],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        if events.is_empty() && counters.is_empty() && quota.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let outcomes = record_in(&mut tx, events, counters)
            .await
            .map_err(store_error)?;
        add_quota_usage(&mut tx, quota).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(outcomes)
    }

    async fn quota_usage(
        &self,
        window_start: DateTime<Utc>,
    ) -> Result<Vec<QuotaUsage>, StoreError> {
        let rows = sqlx::query("select app_id, requests from quota_usage where window_start = $1")
            .bind(window_start)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(QuotaUsage {
                    app_id: AppId::from_uuid(row.try_get("app_id")?),
                    window_start,
                    requests: row.try_get("requests")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }
}

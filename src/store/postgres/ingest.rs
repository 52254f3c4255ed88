//! PostgreSQL: the write path: one transaction per batch of deliveries, plus quota counts.

use super::*;

/// How many counter rows each (app, partner) may be split into: batches in flight at
/// once in one process take distinct shards, processes start at random offsets.
const COUNTER_SHARDS: u16 = 64;

/// Hands each batch in flight a counter shard no other batch of this process holds,
/// so that concurrent batches never wait on each other's counter rows (which stay
/// locked until commit): they commit, and flush the WAL, together.
pub(super) struct CounterShards {
    /// Added to every slot: other processes on the same database most likely use
    /// other shards.
    offset: u16,
    free: std::sync::Mutex<Vec<u16>>,
}

impl CounterShards {
    pub(super) fn new() -> Self {
        Self {
            offset: rand::random::<u16>() % COUNTER_SHARDS,
            free: std::sync::Mutex::new((0..COUNTER_SHARDS).rev().collect()),
        }
    }

    /// A shard for one batch, returned when the guard drops. Should every slot be
    /// taken, the batch shares one (correct, only slower).
    fn take(&self) -> ShardGuard<'_> {
        let slot = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        ShardGuard { shards: self, slot }
    }
}

struct ShardGuard<'a> {
    shards: &'a CounterShards,
    slot: Option<u16>,
}

impl ShardGuard<'_> {
    fn shard(&self) -> i16 {
        ((self.slot.unwrap_or(0) + self.shards.offset) % COUNTER_SHARDS) as i16
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut free = self.shards.free.lock().unwrap_or_else(|e| e.into_inner());
            free.push(slot);
        }
    }
}

/// The body of `record_batch`, inside its transaction: a fixed handful of
/// set-based statements whatever the batch's size, and no lock wider than the rows
/// a batch writes, so batches of one busy app (from any process) run side by side.
async fn record_in(
    conn: &mut PgConnection,
    batch: &Batch<'_>,
    shard: i16,
) -> Result<RecordedBatch, sqlx::Error> {
    let Batch {
        events,
        counters,
        quota: requests,
        ..
    } = *batch;
    // Every batch locks rows in the same order of tables (events, quota, user
    // identities, attributions, counters) and, within one statement, in key order,
    // so that concurrent batches wait on each other but never deadlock.

    // 1. The events; the dedupe constraint decides duplicates.
    let mut outcomes = insert_events(conn, events).await?;

    // 2. The hour's counts: requests counted in memory, and new installs of apps
    //    with a quota, granted exactly (each row stays locked until this batch
    //    commits); installs over the quota are removed again.
    let demand = quota_demand(events, &outcomes);
    let (granted, installs) = count_quota(conn, &demand, requests).await?;
    let revoked = apply_grants(&mut outcomes, &demand, &granted);
    if !revoked.is_empty() {
        // Their keys go too (a retry after the hour is a new delivery), and the
        // outbox messages written for them: they were never accepted.
        sqlx::query(
            "with gone as (delete from postback_events p \
                 using unnest($1::uuid[], $2::uuid[]) as t(app_id, id) \
                 where p.app_id = t.app_id and p.id = t.id \
                 returning p.app_id, p.id, p.partner, p.dedupe_key), \
             unsent as (delete from outbox o using gone g \
                 where o.app_id = g.app_id and o.event_id = g.id) \
             delete from dedupe_keys d using gone g where d.app_id = g.app_id \
                 and d.partner = g.partner and d.dedupe_key = g.dedupe_key",
        )
        .bind(revoked.iter().map(|(a, _)| a.as_uuid()).collect::<Vec<_>>())
        .bind(revoked.iter().map(|&(_, id)| id).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }

    // 3. The delivery log, now that every answer is known.
    super::deliveries::insert(conn, batch, &outcomes).await?;

    // 4. First touch, attributions and counters in one statement.
    let installs_recorded = recorded_installs(events, &outcomes);
    let candidates = first_touches(events, &installs_recorded);
    let tallies = tally_batch(events, &outcomes, counters);
    let lost = attribute_and_count(conn, events, &candidates, &tallies, shard).await?;
    // 5. Rare: a known user's install with an identifier not seen before claimed
    //    that identifier; it belongs to the user's existing attribution.
    if !lost.is_empty() {
        repoint_identities(conn, events, &lost).await?;
    }
    Ok(RecordedBatch { outcomes, installs })
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
    // The dedupe key is claimed first (its own table: postback_events is
    // partitioned by month, and a retry may come in another month); the events
    // whose key was new are inserted by the same statement.
    let inserted: Vec<Uuid> = sqlx::query_scalar(&format!(
        "with t as (select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
             $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], \
             $16::text[], $17::text[], $18::text[], $19::timestamptz[], $20::timestamptz[], \
             $21::text[], $22::text[]) \
           as t(id, app_id, partner, kind, event_name, source, campaign, adgroup, ad, \
             user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
             ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, raw)), \
         claimed as ( \
             insert into dedupe_keys (app_id, partner, dedupe_key, event_id, received_at) \
             select app_id, partner, dedupe_key, id, received_at from t \
             order by app_id, partner, dedupe_key \
             on conflict do nothing \
             returning event_id), \
         ev as ( \
             insert into postback_events (id, app_id, partner, kind, event_name, \
                 source, campaign, adgroup, ad, \
                 user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
                 ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, \
                 raw_payload) \
             select id, app_id, partner, kind, event_name, source, campaign, adgroup, ad, \
                 user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
                 ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, \
                 raw::jsonb \
             from t where id in (select event_id from claimed) \
             returning id, app_id, partner, kind, event_name, source, campaign, adgroup, ad, \
                 user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
                 event_time, received_at), \
         forwarded as ({}) \
         select id from ev",
        outbox_insert(
            "event.accepted",
            "select id as event_id, null::uuid as attribution_id, null::timestamptz \
                 as attributed_at, * from ev",
        ),
    ))
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
        // A lateral probe per key: its plan is an index lookup whatever the
        // table's size or statistics, so a cached generic plan stays good.
        let rows = sqlx::query(
            "select t.ord, e.id from unnest($1::int4[], $2::uuid[], $3::text[], $4::text[]) \
               as t(ord, app_id, partner, dedupe_key) \
             cross join lateral (select event_id as id from dedupe_keys d \
               where d.app_id = t.app_id and d.partner = t.partner \
               and d.dedupe_key = t.dedupe_key) e",
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
            .and_then(|o| o.event_id())
            .ok_or_else(|| sqlx::Error::Protocol("dedupe key vanished within the batch".into()))?;
        outcomes[copy] = Some(RecordOutcome::Duplicate { first_event_id });
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| sqlx::Error::Protocol("a conflicting event was not found".into())))
        .collect()
}

/// One statement for every `quota_usage` row the batch touches: add the requests
/// counted in memory, and each window's install demand capped at the quota. Returns
/// what each window with demand was granted, and its install count afterwards.
async fn count_quota(
    conn: &mut PgConnection,
    demand: &QuotaDemand,
    requests: &[QuotaUsage],
) -> Result<(BTreeMap<(AppId, DateTime<Utc>), i64>, Vec<QuotaUsage>), sqlx::Error> {
    let mut rows: BTreeMap<(AppId, DateTime<Utc>), (i64, i64)> = BTreeMap::new();
    for (window, (_, positions)) in demand {
        rows.entry(*window).or_default().1 += positions.len() as i64;
    }
    for r in requests {
        rows.entry((r.app_id, r.window_start)).or_default().0 += r.requests;
    }
    if rows.is_empty() {
        return Ok(Default::default());
    }
    // Every standard app has the same quota; should a batch mix two (a changed
    // configuration), the smaller one applies to all of it.
    let limit = demand
        .values()
        .map(|(limit, _)| i64::from(*limit))
        .min()
        .unwrap_or(i64::MAX);
    // `excluded.installs` is the demand capped at the quota, which caps the sum the
    // same way; the old count is still at hand in SET, so the grant is written
    // beside it and read back.
    let returned = sqlx::query(
        "insert into quota_usage as q (app_id, window_start, requests, installs, last_grant) \
         select app_id, w, requests, least($5, demand), least($5, demand) \
         from unnest($1::uuid[], $2::timestamptz[], $3::int8[], $4::int8[]) \
           as t(app_id, w, requests, demand) \
         order by app_id, w \
         on conflict (app_id, window_start) do update set \
             requests = q.requests + excluded.requests, \
             installs = least($5, q.installs + excluded.installs), \
             last_grant = least($5, q.installs + excluded.installs) - q.installs \
         returning app_id, window_start, installs, last_grant",
    )
    .bind(rows.keys().map(|(a, _)| a.as_uuid()).collect::<Vec<_>>())
    .bind(rows.keys().map(|(_, w)| *w).collect::<Vec<_>>())
    .bind(rows.values().map(|(r, _)| *r).collect::<Vec<_>>())
    .bind(rows.values().map(|(_, d)| *d).collect::<Vec<_>>())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut granted = BTreeMap::new();
    let mut usage = Vec::new();
    for row in returned {
        let window = (app_id_col(&row, "app_id")?, row.try_get("window_start")?);
        if demand.contains_key(&window) {
            granted.insert(window, row.try_get::<i64, _>("last_grant")?);
            usage.push(QuotaUsage {
                app_id: window.0,
                window_start: window.1,
                requests: 0,
                installs: row.try_get("installs")?,
            });
        }
    }
    Ok((granted, usage))
}

/// An `insert into outbox` of one message per row of `rows` and enabled destination
/// of its app that wants `ty` (see `forwarding::message_document`, which SQLite uses:
/// the same document). `rows` is a select with the columns app_id, partner, event_id,
/// attribution_id, kind, event_name, the segments, the identifiers, event_time,
/// attributed_at and received_at. With no destination it inserts nothing, at the cost
/// of an empty join.
fn outbox_insert(ty: &str, rows: &str) -> String {
    let wants = match ty {
        "attribution.created" => "('attributions', 'all')",
        _ => "('events', 'all')",
    };
    let time = |col: &str| {
        format!("to_char(m.{col} at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    };
    let identifiers = IDENTIFIER_COLUMNS
        .iter()
        .map(|c| format!("'{c}', m.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "insert into outbox (id, destination_id, app_id, type, event_id, attribution_id, \
             payload, created_at, next_attempt_at) \
         select gen_random_uuid(), d.id, m.app_id, '{ty}', m.event_id, m.attribution_id, \
             jsonb_build_object('type', '{ty}', 'app_id', m.app_id, 'partner', m.partner, \
                 'event_id', m.event_id, 'attribution_id', m.attribution_id, 'kind', m.kind, \
                 'event_name', m.event_name, 'source', m.source, 'campaign', m.campaign, \
                 'adgroup', m.adgroup, 'ad', m.ad, \
                 'identifiers', jsonb_strip_nulls(jsonb_build_object({identifiers})), \
                 'event_time', {event_time}, 'attributed_at', {attributed_at}, \
                 'received_at', {received_at}), \
             m.received_at, m.received_at \
         from ({rows}) m join destinations d on d.app_id = m.app_id \
         where d.enabled and d.what in {wants}",
        event_time = time("event_time"),
        attributed_at = time("attributed_at"),
        received_at = time("received_at"),
    )
}

/// A batch worth running again as it is: chosen as a deadlock victim, or it wrote an
/// outbox message for a destination removed between its read and its commit (the
/// next run no longer sees it). Reading destinations `for key share` instead would
/// make every batch of an app write-lock the same destination rows.
fn is_retryable(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    match db.code().as_deref() {
        Some("40P01") => true,
        Some("23503") => db.constraint() == Some("outbox_app_id_destination_id_fkey"),
        _ => false,
    }
}

/// The identifier columns, in `Identifiers::pairs` order.
const IDENTIFIER_COLUMNS: [&str; 6] = [
    "user_id",
    "idfa",
    "idfv",
    "google_aid",
    "android_id",
    "partner_device_id",
];

/// One statement: claim every identifier of each candidate in `user_identities`,
/// insert the attributions of the candidates that claimed all of theirs (a new
/// user), and add the batch's tallies to `partner_connections`. Returns the
/// candidates (as positions in `events`, with their would-be attribution id) that
/// claimed some identifiers but not all: known users with a new identifier.
async fn attribute_and_count(
    conn: &mut PgConnection,
    events: &[NewEvent],
    candidates: &[(usize, Uuid)],
    tallies: &BTreeMap<(AppId, PartnerId), ConnectionTally>,
    shard: i16,
) -> Result<Vec<(usize, Uuid)>, sqlx::Error> {
    if candidates.is_empty() && tallies.is_empty() {
        return Ok(Vec::new());
    }
    let attribution_ids: Vec<Uuid> = candidates.iter().map(|_| Uuid::now_v7()).collect();
    let col = |f: fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
        candidates.iter().map(|&(i, _)| f(&events[i])).collect()
    };
    let identifiers = IDENTIFIER_COLUMNS
        .iter()
        .map(|c| format!("('{c}', c.{c})"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "with cand as ( \
             select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                 $12::text[], $13::text[], $14::text[], $15::timestamptz[], $27::timestamptz[]) \
             as t(id, app_id, event_id, partner, source, campaign, adgroup, ad, user_id, idfa, \
                 idfv, google_aid, android_id, partner_device_id, attributed_at, event_time)), \
         wanted as ( \
             select c.id, c.app_id, i.kind, i.value from cand c \
             cross join lateral (values {identifiers}) as i(kind, value) \
             where i.value is not null), \
         claimed as ( \
             insert into user_identities (app_id, kind, value, attribution_id) \
             select app_id, kind, value, id from wanted order by app_id, kind, value \
             on conflict do nothing \
             returning attribution_id), \
         tally as ( \
             select w.id, w.wanted, coalesce(c.claimed, 0) as claimed \
             from (select id, count(*) as wanted from wanted group by id) w \
             left join (select attribution_id, count(*) as claimed from claimed \
                 group by attribution_id) c on c.attribution_id = w.id), \
         attributed as ( \
             insert into attributions (id, app_id, event_id, partner, source, campaign, adgroup, \
                 ad, user_id, idfa, idfv, google_aid, android_id, partner_device_id, attributed_at) \
             select c.id, c.app_id, c.event_id, c.partner, c.source, c.campaign, c.adgroup, \
                 c.ad, c.user_id, c.idfa, c.idfv, c.google_aid, c.android_id, \
                 c.partner_device_id, c.attributed_at \
             from cand c join tally t on t.id = c.id and t.claimed = t.wanted \
             returning id), \
         forwarded as ({forwarded}), \
         counted as ( \
             insert into partner_connection_shards as pc (app_id, partner, shard, status, \
                 last_success_at, installs, events, organic_ignored, duplicates, rejected, \
                 rate_limited, updated_at) \
             select app_id, partner, $28, status, last_success_at, installs, events, \
                 organic_ignored, duplicates, rejected, rate_limited, $26 \
             from unnest($16::uuid[], $17::text[], $18::text[], $19::timestamptz[], $20::int8[], \
                 $21::int8[], $22::int8[], $23::int8[], $24::int8[], $25::int8[]) with ordinality \
               as u(app_id, partner, status, last_success_at, installs, events, organic_ignored, \
                 duplicates, rejected, rate_limited, n) \
             order by n \
             on conflict (app_id, partner, shard) do update set \
                 status = case when excluded.status = 'connected' then 'connected' else pc.status end, \
                 last_success_at = greatest(pc.last_success_at, excluded.last_success_at), \
                 installs = pc.installs + excluded.installs, \
                 events = pc.events + excluded.events, \
                 organic_ignored = pc.organic_ignored + excluded.organic_ignored, \
                 duplicates = pc.duplicates + excluded.duplicates, \
                 rejected = pc.rejected + excluded.rejected, \
                 rate_limited = pc.rate_limited + excluded.rate_limited, \
                 updated_at = excluded.updated_at \
             returning 1) \
         select t.id from tally t where t.claimed > 0 and t.claimed < t.wanted",
        forwarded = outbox_insert(
            "attribution.created",
            "select c.id as attribution_id, 'install' as kind, null::text as event_name, \
                 c.attributed_at as received_at, c.* \
             from cand c join attributed a on a.id = c.id",
        ),
    );
    let rows: Vec<_> = tallies.iter().collect();
    let num = |f: fn(&ConnectionTally) -> i64| rows.iter().map(|(_, t)| f(t)).collect::<Vec<i64>>();
    let lost: Vec<Uuid> = sqlx::query_scalar(&sql)
        .bind(&attribution_ids)
        .bind(
            candidates
                .iter()
                .map(|&(i, _)| events[i].app_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(candidates.iter().map(|&(_, e)| e).collect::<Vec<_>>())
        .bind(
            candidates
                .iter()
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
            candidates
                .iter()
                .map(|&(i, _)| events[i].received_at)
                .collect::<Vec<_>>(),
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
        .bind(num(|t| t.rate_limited))
        .bind(Utc::now())
        .bind(
            candidates
                .iter()
                .map(|&(i, _)| events[i].postback.event_time)
                .collect::<Vec<_>>(),
        )
        .bind(shard)
        .fetch_all(&mut *conn)
        .await?;
    let by_id: HashMap<Uuid, usize> = attribution_ids
        .iter()
        .zip(candidates)
        .map(|(id, &(i, _))| (*id, i))
        .collect();
    Ok(lost
        .into_iter()
        .filter_map(|id| by_id.get(&id).map(|&i| (i, id)))
        .collect())
}

/// Point the identifiers a lost candidate claimed at the attribution of the user it
/// turned out to be (found through one of its other identifiers).
async fn repoint_identities(
    conn: &mut PgConnection,
    events: &[NewEvent],
    lost: &[(usize, Uuid)],
) -> Result<(), sqlx::Error> {
    let mut ids = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &(i, lost_id) in lost {
        for (kind, value) in events[i].postback.ids.pairs() {
            if let Some(value) = value {
                ids.0.push(lost_id);
                ids.1.push(events[i].app_id.as_uuid());
                ids.2.push(kind);
                ids.3.push(value);
            }
        }
    }
    sqlx::query(
        "with mine as ( \
             select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[]) \
             as t(lost, app_id, kind, value)), \
         owner as ( \
             select distinct on (m.lost) m.lost, m.app_id, u.attribution_id as owner \
             from mine m \
             join user_identities u on u.app_id = m.app_id and u.kind = m.kind \
                 and u.value = m.value and u.attribution_id <> m.lost \
             order by m.lost) \
         update user_identities u set attribution_id = o.owner \
         from owner o where u.app_id = o.app_id and u.attribution_id = o.lost",
    )
    .bind(&ids.0)
    .bind(&ids.1)
    .bind(&ids.2)
    .bind(&ids.3)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl IngestStore for PgStore {
    async fn record(&self, batch: Batch<'_>) -> Result<RecordedBatch, StoreError> {
        if batch.is_empty() {
            return Ok(RecordedBatch::default());
        }

        // Batches lock rows in one order and should never deadlock; should one
        // still be chosen as a deadlock victim, it is run again rather than failed
        // (see `is_retryable`).
        let mut attempt = 0;
        let shard = self.shards.take();
        loop {
            let mut conn = self.writes.acquire().await.map_err(store_error)?;
            let transaction = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let recorded = record_in(&mut tx, &batch, shard.shard()).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(recorded)
            };
            match tokio::time::timeout(self.transaction_timeout, transaction).await {
                Ok(Ok(recorded)) => return Ok(recorded),
                Ok(Err(e)) if attempt < 2 && is_retryable(&e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, "batch running again");
                }
                Ok(Err(e)) => return Err(store_error(e)),
                Err(_) => {
                    // The server stopped answering without closing the connection.
                    // Drop the connection rather than return it to the pool (where
                    // its release check would hang in turn); the next batch opens a
                    // new one, to wherever the address now leads. Like a connection
                    // lost during COMMIT, the batch may or may not have committed:
                    // its postbacks get 503, and a partner's retry is then answered
                    // as a duplicate of the first.
                    drop(conn.detach());
                    return Err(StoreError::Unavailable(sqlx::Error::Io(
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "no answer to the batch transaction within {:?}",
                                self.transaction_timeout
                            ),
                        ),
                    )));
                }
            }
        }
    }

    async fn quota_usage(
        &self,
        window_start: DateTime<Utc>,
    ) -> Result<Vec<QuotaUsage>, StoreError> {
        let rows = sqlx::query(
            "select app_id, requests, installs from quota_usage where window_start = $1",
        )
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
                    installs: row.try_get("installs")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }
}

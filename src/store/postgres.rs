//! PostgreSQL store: a `PgPool` and runtime queries over `migrations/postgres`.
//! UUIDs are `uuid`, times `timestamptz`, the raw payload `jsonb`.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, Postgres,
};
use sqlx::query::Query;
use sqlx::Row;
use uuid::Uuid;

use super::{
    first_touches, insert_order, is_connection_failure, recorded_installs, tally_batch, AppRecord,
    AttributionRecord, Backend, ConnectionTally, CounterDelta, DailySourceCount, Dimension,
    IdentifierKind, KeyRecord, NewApp, PartnerConnection, PoolConfig, QuotaUsage, RecordOutcome,
    Store, StoreError, SummaryRow, UserCursor, UserFilter,
};
use crate::domain::{AppId, ConnectionStatus, Identifiers, KeyHash, NewEvent, Segments, Tier};
use crate::partners::PartnerId;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// First key of the two-int advisory locks this store takes (the second is per app),
/// so they cannot collide with other users of advisory locks on the same server.
const ATTRIBUTION_LOCK_SPACE: i32 = 0x5042_4741; // "PBGA"

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, pool: &PoolConfig) -> Result<Self, StoreError> {
        // Plan every statement with its actual parameters. A generic plan that a
        // connection caches while the tables are small (sequential scans) stays in
        // use as they grow, and the batch statements slowed down 4x within a minute
        // of load on a fresh database; planning costs far less than that.
        let options = PgConnectOptions::from_str(url)
            .map_err(store_error)?
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections.max(1))
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(store_error)?;
        Ok(Self { pool })
    }
}

/// The one place sqlx errors become store errors: connection-level failures are
/// `Unavailable` (503, retried), everything else `Other`.
fn store_error(e: sqlx::Error) -> StoreError {
    let unavailable = is_connection_failure(&e)
        || match &e {
            sqlx::Error::Database(db) => {
                db.code().is_some_and(|code| is_unavailable_sqlstate(&code))
            }
            _ => false,
        };
    if unavailable {
        StoreError::Unavailable(e)
    } else {
        StoreError::Other(e)
    }
}

/// SQLSTATEs of a server that is unreachable, shutting down, full or read-only.
fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "53300" // too_many_connections
                | "53100" // disk_full
                | "25006" // read_only_sql_transaction (standby, or a failover in progress)
        )
}

fn decode_error(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unexpected {what} {value:?} in the database").into())
}

fn tier_col(row: &PgRow, col: &str) -> Result<Tier, sqlx::Error> {
    let tier: String = row.try_get(col)?;
    tier.parse().map_err(|_| decode_error("tier", &tier))
}

fn partner_col(row: &PgRow, col: &str) -> Result<PartnerId, sqlx::Error> {
    let partner: String = row.try_get(col)?;
    partner
        .parse()
        .map_err(|_| decode_error("partner", &partner))
}

fn app_id_col(row: &PgRow, col: &str) -> Result<AppId, sqlx::Error> {
    row.try_get::<Uuid, _>(col).map(AppId::from_uuid)
}

async fn insert_app(conn: &mut PgConnection, app: &NewApp) -> Result<(), sqlx::Error> {
    sqlx::query("insert into apps (id, name, tier, created_at) values ($1, $2, $3, $4)")
        .bind(app.id.as_uuid())
        .bind(&app.name)
        .bind(app.tier.as_str())
        .bind(app.created_at)
        .execute(&mut *conn)
        .await?;
    insert_key(conn, app.id, &app.key_hash, &app.key_prefix, app.created_at).await
}

async fn insert_key(
    conn: &mut PgConnection,
    app: AppId,
    hash: &KeyHash,
    prefix: &str,
    created_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into api_keys (id, app_id, key_hash, prefix, created_at, expires_at) \
         values ($1, $2, $3, $4, $5, null)",
    )
    .bind(Uuid::now_v7())
    .bind(app.as_uuid())
    .bind(hash.to_hex())
    .bind(prefix)
    .bind(created_at)
    .execute(conn)
    .await?;
    Ok(())
}

fn new_app_record(app: &NewApp) -> AppRecord {
    AppRecord {
        id: app.id,
        name: app.name.clone(),
        tier: app.tier,
        created_at: app.created_at,
        key_prefixes: vec![app.key_prefix.clone()],
    }
}

impl PgStore {
    /// Apps (all, or the one `only`), each with the prefixes of its keys active now.
    async fn apps(&self, only: Option<AppId>) -> Result<Vec<AppRecord>, sqlx::Error> {
        let only = only.map(|id| id.as_uuid());
        let rows = sqlx::query(
            "select id, name, tier, created_at from apps \
             where $1::uuid is null or id = $1 order by created_at, id",
        )
        .bind(only)
        .fetch_all(&self.pool)
        .await?;
        let keys = sqlx::query(
            "select app_id, prefix from api_keys \
             where ($1::uuid is null or app_id = $1) and (expires_at is null or expires_at > $2) \
             order by created_at desc, id desc",
        )
        .bind(only)
        .bind(Utc::now())
        .fetch_all(&self.pool)
        .await?;
        let mut prefixes: HashMap<AppId, Vec<String>> = HashMap::new();
        for key in &keys {
            prefixes
                .entry(app_id_col(key, "app_id")?)
                .or_default()
                .push(key.try_get("prefix")?);
        }
        rows.iter()
            .map(|row| {
                let id = app_id_col(row, "id")?;
                Ok(AppRecord {
                    id,
                    name: row.try_get("name")?,
                    tier: tier_col(row, "tier")?,
                    created_at: row.try_get("created_at")?,
                    key_prefixes: prefixes.remove(&id).unwrap_or_default(),
                })
            })
            .collect()
    }
}

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

// ---------------------------------------------------------------------------
// Read side. Every query text is assembled from fixed column names only (the
// filter, dimension and identifier enums); values are always bound. The builders
// and binders are public so that `examples/bench_queries.rs` can EXPLAIN the exact
// text this store runs.
// ---------------------------------------------------------------------------

/// The columns [`attribution_record`] decodes, in table order.
const ATTRIBUTION_COLUMNS: &str = "id, event_id, partner, source, campaign, adgroup, ad, \
     user_id, idfa, idfv, google_aid, android_id, partner_device_id, attributed_at";

/// The filters that are set, as (column, value), in a fixed column order.
fn user_filters(filter: &UserFilter) -> impl Iterator<Item = (&'static str, &str)> {
    [
        ("source", filter.source.as_deref()),
        ("campaign", filter.campaign.as_deref()),
        ("adgroup", filter.adgroup.as_deref()),
        ("ad", filter.ad.as_deref()),
        ("partner", filter.partner.map(PartnerId::as_str)),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.map(|value| (column, value)))
}

/// The text of `list_users` for the filters set in `filter`. Binds, in order: the app,
/// each set filter (source, campaign, adgroup, ad, partner), the cursor's
/// attributed_at and id when `with_cursor`, the limit; see [`bind_list_users`].
///
/// The keyset condition is a row comparison, which PostgreSQL turns into one index
/// bound on (…, attributed_at, id) indexes; an `a < x or (a = x and id < y)` would not.
#[doc(hidden)]
pub fn list_users_sql(filter: &UserFilter, with_cursor: bool) -> String {
    let mut sql = format!("select {ATTRIBUTION_COLUMNS} from attributions where app_id = $1");
    let mut n = 1;
    for (column, _) in user_filters(filter) {
        n += 1;
        let _ = write!(sql, " and {column} = ${n}");
    }
    if with_cursor {
        let _ = write!(sql, " and (attributed_at, id) < (${}, ${})", n + 1, n + 2);
        n += 2;
    }
    let _ = write!(
        sql,
        " order by attributed_at desc, id desc limit ${}",
        n + 1
    );
    sql
}

/// Binds the values of a [`list_users_sql`] text, in its order.
#[doc(hidden)]
pub fn bind_list_users<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    app: AppId,
    filter: &'q UserFilter,
    after: Option<&UserCursor>,
    limit: u32,
) -> Query<'q, Postgres, PgArguments> {
    query = query.bind(app.as_uuid());
    for (_, value) in user_filters(filter) {
        query = query.bind(value);
    }
    if let Some(cursor) = after {
        query = query.bind(cursor.attributed_at).bind(cursor.id);
    }
    query.bind(i64::from(limit))
}

/// The text of `summary`. Binds, in order: the app, `since` when `with_since`,
/// `until` when `with_until`; see [`bind_summary`]. Absent bounds leave their
/// condition out rather than binding a null, so a reused (generic) plan still
/// has a range to put on an index.
///
/// Values sort by their bytes (collation "C") on every server, as on SQLite.
#[doc(hidden)]
pub fn summary_sql(by: Dimension, with_since: bool, with_until: bool) -> String {
    let column = by.column();
    let mut sql = format!(
        "select {column} as value, count(*) as installs from attributions where app_id = $1"
    );
    let mut n = 1;
    if with_since {
        n += 1;
        let _ = write!(sql, " and attributed_at >= ${n}");
    }
    if with_until {
        n += 1;
        let _ = write!(sql, " and attributed_at < ${n}");
    }
    let _ = write!(
        sql,
        " group by {column} order by installs desc, {column} collate \"C\" nulls last"
    );
    sql
}

/// Binds the values of a [`summary_sql`] text, in its order.
#[doc(hidden)]
pub fn bind_summary<'q>(
    query: Query<'q, Postgres, PgArguments>,
    app: AppId,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Query<'q, Postgres, PgArguments> {
    let mut query = query.bind(app.as_uuid());
    for bound in [since, until].into_iter().flatten() {
        query = query.bind(bound);
    }
    query
}

/// A row selected with [`ATTRIBUTION_COLUMNS`].
fn attribution_record(row: &PgRow) -> Result<AttributionRecord, sqlx::Error> {
    Ok(AttributionRecord {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        partner: partner_col(row, "partner")?,
        segments: Segments {
            source: row.try_get("source")?,
            campaign: row.try_get("campaign")?,
            adgroup: row.try_get("adgroup")?,
            ad: row.try_get("ad")?,
        },
        ids: Identifiers {
            user_id: row.try_get("user_id")?,
            idfa: row.try_get("idfa")?,
            idfv: row.try_get("idfv")?,
            google_aid: row.try_get("google_aid")?,
            android_id: row.try_get("android_id")?,
            partner_device_id: row.try_get("partner_device_id")?,
        },
        attributed_at: row.try_get("attributed_at")?,
    })
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn create_app(&self, app: &NewApp) -> Result<AppRecord, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        insert_app(&mut tx, app).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(new_app_record(app))
    }

    async fn create_app_if_none(&self, app: &NewApp) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // Blocks other inserts into apps (and other starting servers) until commit,
        // but not readers or the foreign-key checks of recorded events.
        sqlx::query("lock table apps in share row exclusive mode")
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let any: bool = sqlx::query_scalar("select exists (select 1 from apps)")
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        if any {
            tx.rollback().await.map_err(store_error)?;
            return Ok(false);
        }
        insert_app(&mut tx, app).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.apps(None).await.map_err(store_error)
    }

    async fn get_app(&self, id: AppId) -> Result<Option<AppRecord>, StoreError> {
        Ok(self
            .apps(Some(id))
            .await
            .map_err(store_error)?
            .into_iter()
            .next())
    }

    async fn rotate_key(
        &self,
        app: AppId,
        new_hash: KeyHash,
        new_prefix: &str,
        now: DateTime<Utc>,
        old_keys_expire_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // Serialises rotations of one app; "no key update" does not block the
        // foreign-key checks of events being recorded meanwhile.
        let exists = sqlx::query("select id from apps where id = $1 for no key update")
            .bind(app.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "update api_keys set expires_at = least(expires_at, $3) \
             where app_id = $1 and (expires_at is null or expires_at > $2)",
        )
        .bind(app.as_uuid())
        .bind(now)
        .bind(old_keys_expire_at)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        insert_key(&mut tx, app, &new_hash, new_prefix, now)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(())
    }

    async fn set_tier(&self, app: AppId, tier: Tier) -> Result<(), StoreError> {
        let done = sqlx::query("update apps set tier = $2 where id = $1")
            .bind(app.as_uuid())
            .bind(tier.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn active_keys(&self, now: DateTime<Utc>) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(
            "select k.key_hash, k.app_id, a.tier, k.expires_at \
             from api_keys k join apps a on a.id = k.app_id \
             where k.expires_at is null or k.expires_at > $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let hash: String = row.try_get("key_hash")?;
                Ok(KeyRecord {
                    hash: KeyHash::from_hex(&hash).ok_or_else(|| decode_error("key hash", "…"))?,
                    app_id: app_id_col(row, "app_id")?,
                    tier: tier_col(row, "tier")?,
                    expires_at: row.try_get("expires_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

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

    async fn partner_connections(&self, app: AppId) -> Result<Vec<PartnerConnection>, StoreError> {
        let rows = sqlx::query(
            "select partner, status, last_success_at, installs, events, organic_ignored, \
                 duplicates, rejected \
             from partner_connections where app_id = $1 order by partner",
        )
        .bind(app.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                Ok(PartnerConnection {
                    partner: partner_col(row, "partner")?,
                    status: match status.as_str() {
                        "connected" => ConnectionStatus::Connected,
                        "not_connected" => ConnectionStatus::NotConnected,
                        other => return Err(decode_error("status", other)),
                    },
                    last_success_at: row.try_get("last_success_at")?,
                    installs: row.try_get("installs")?,
                    events: row.try_get("events")?,
                    organic_ignored: row.try_get("organic_ignored")?,
                    duplicates: row.try_get("duplicates")?,
                    rejected: row.try_get("rejected")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    async fn list_users(
        &self,
        app: AppId,
        filter: &UserFilter,
        after: Option<&UserCursor>,
        limit: u32,
    ) -> Result<Vec<AttributionRecord>, StoreError> {
        let sql = list_users_sql(filter, after.is_some());
        let rows = bind_list_users(sqlx::query(&sql), app, filter, after, limit)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(attribution_record)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    async fn lookup_user(
        &self,
        app: AppId,
        kind: IdentifierKind,
        value: &str,
    ) -> Result<Option<AttributionRecord>, StoreError> {
        // One attribution per user is the rule; should several rows share the
        // identifier anyway, the first touch is the answer.
        let sql = format!(
            "select {ATTRIBUTION_COLUMNS} from attributions \
             where app_id = $1 and {} = $2 \
             order by attributed_at, id limit 1",
            kind.column()
        );
        let row = sqlx::query(&sql)
            .bind(app.as_uuid())
            .bind(value)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref()
            .map(attribution_record)
            .transpose()
            .map_err(store_error)
    }

    async fn summary(
        &self,
        app: AppId,
        by: Dimension,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<SummaryRow>, StoreError> {
        let sql = summary_sql(by, since.is_some(), until.is_some());
        let rows = bind_summary(sqlx::query(&sql), app, since, until)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(SummaryRow {
                    value: row.try_get("value")?,
                    installs: row.try_get("installs")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    async fn daily_installs_by_source(
        &self,
        app: AppId,
        since: DateTime<Utc>,
    ) -> Result<Vec<DailySourceCount>, StoreError> {
        let rows = sqlx::query(
            "select (attributed_at at time zone 'UTC')::date as day, source, \
                 count(*) as installs \
             from attributions where app_id = $1 and attributed_at >= $2 \
             group by 1, 2 order by 1, source collate \"C\" nulls last",
        )
        .bind(app.as_uuid())
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(DailySourceCount {
                    day: row.try_get("day")?,
                    source: row.try_get("source")?,
                    installs: row.try_get("installs")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_availability_sqlstates_mean_unavailable() {
        for code in [
            "08000", "08006", "08P01", "57P01", "57P02", "57P03", "53300", "53100", "25006",
        ] {
            assert!(is_unavailable_sqlstate(code), "{code}");
        }
        for code in ["23505", "40001", "40P01", "42P01", "22P02", "57014"] {
            assert!(!is_unavailable_sqlstate(code), "{code}");
        }
        assert!(matches!(
            store_error(sqlx::Error::PoolClosed),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            store_error(sqlx::Error::RowNotFound),
            StoreError::Other(_)
        ));
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        let pool = PoolConfig {
            max_connections: 1,
            acquire_timeout: std::time::Duration::from_secs(2),
        };
        // Port 1 on loopback: nothing listens there.
        let result = PgStore::connect("postgres://postgres@127.0.0.1:1/postgres", &pool).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{:?}",
            result.err()
        );
    }
}

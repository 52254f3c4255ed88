//! SQLite store: one writer connection (SQLite allows one writer at a time) and a small
//! read pool over one WAL file. UUIDs are lowercase hyphenated text, times fixed-width
//! UTC text (see [`TIME_FORMAT`]), the raw payload JSON text.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::Row;
use uuid::Uuid;

use super::{
    insert_order, is_connection_failure, tally_batch, AppRecord, AttributionRecord, Backend,
    ConnectionTally, CounterDelta, DailySourceCount, Dimension, IdentifierKind, KeyRecord, NewApp,
    PartnerConnection, PoolConfig, QuotaUsage, RecordOutcome, Store, StoreError, SummaryRow,
    UserCursor, UserFilter,
};
use crate::domain::{
    AppId, ConnectionStatus, EventKind, Identifiers, KeyHash, NewEvent, Segments, Tier,
};
use crate::partners::PartnerId;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How every time is stored: always 6 fractional digits and `Z`, so the text sorts
/// like the time it encodes (sqlx's own chrono encoding varies the digits).
pub(crate) const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// How long a statement waits for another process's write lock (a CLI command
/// beside the server) before failing with BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    /// Exactly one connection: every write goes through it, so this process never
    /// competes with itself for SQLite's single write lock.
    writer: SqlitePool,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Open (creating the file and its folder if missing) `sqlite://path` or `sqlite:path`.
    pub async fn open(url: &str, pool: &PoolConfig) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(store_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL syncs the WAL on every commit: an acknowledged postback survives
            // a power loss, not only a crash of this process.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = is_in_memory(url);
        if !in_memory {
            if let Some(folder) = options.get_filename().parent() {
                if !folder.as_os_str().is_empty() {
                    std::fs::create_dir_all(folder).map_err(|e| store_error(sqlx::Error::Io(e)))?;
                }
            }
        }
        // Kept open for the life of the store: reopening costs the pragmas, and an
        // in-memory database would vanish with its last connection.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(store_error)?;
        // An in-memory database lives in the writer's connection; readers would only
        // contend with it for shared-cache locks.
        let readers = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(pool.max_connections.max(1))
                .acquire_timeout(pool.acquire_timeout)
                .connect_with(options.create_if_missing(false))
                .await
                .map_err(store_error)?
        };
        Ok(Self { writer, readers })
    }

    /// A write transaction that takes the write lock at BEGIN, so it waits for another
    /// process's writer (busy timeout) instead of failing when it first writes.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.writer
            .begin_with("begin immediate")
            .await
            .map_err(store_error)
    }
}

/// `sqlite::memory:` or `mode=memory`, read the way sqlx reads the URL.
fn is_in_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|param| param == "mode=memory")
}

/// The one place sqlx errors become store errors: connection-level failures are
/// `Unavailable` (503, retried), everything else `Other`.
fn store_error(e: sqlx::Error) -> StoreError {
    let unavailable = is_connection_failure(&e)
        || match &e {
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(is_unavailable_code),
            _ => false,
        };
    if unavailable {
        StoreError::Unavailable(e)
    } else {
        StoreError::Other(e)
    }
}

/// Result codes of a file that is locked, read-only, failing, full or gone.
/// sqlx reports extended codes; their low byte is the primary code.
fn is_unavailable_code(code: i32) -> bool {
    matches!(
        code & 0xff,
        5 // SQLITE_BUSY
            | 6 // SQLITE_LOCKED
            | 8 // SQLITE_READONLY
            | 10 // SQLITE_IOERR
            | 13 // SQLITE_FULL
            | 14 // SQLITE_CANTOPEN
    )
}

fn time_text(t: DateTime<Utc>) -> String {
    t.format(TIME_FORMAT).to_string()
}

fn decode_error(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unexpected {what} {value:?} in the database").into())
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| decode_error("time", text))
}

fn time_col(row: &SqliteRow, col: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    parse_time(&row.try_get::<String, _>(col)?)
}

fn opt_time_col(row: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    row.try_get::<Option<String>, _>(col)?
        .as_deref()
        .map(parse_time)
        .transpose()
}

fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn uuid_col(row: &SqliteRow, col: &str) -> Result<Uuid, sqlx::Error> {
    let text: String = row.try_get(col)?;
    Uuid::parse_str(&text).map_err(|_| decode_error("uuid", &text))
}

fn app_id_col(row: &SqliteRow, col: &str) -> Result<AppId, sqlx::Error> {
    uuid_col(row, col).map(AppId::from_uuid)
}

fn tier_col(row: &SqliteRow, col: &str) -> Result<Tier, sqlx::Error> {
    let tier: String = row.try_get(col)?;
    tier.parse().map_err(|_| decode_error("tier", &tier))
}

fn partner_col(row: &SqliteRow, col: &str) -> Result<PartnerId, sqlx::Error> {
    let partner: String = row.try_get(col)?;
    partner
        .parse()
        .map_err(|_| decode_error("partner", &partner))
}

async fn insert_app(conn: &mut SqliteConnection, app: &NewApp) -> Result<(), sqlx::Error> {
    sqlx::query("insert into apps (id, name, tier, created_at) values ($1, $2, $3, $4)")
        .bind(uuid_text(app.id.as_uuid()))
        .bind(&app.name)
        .bind(app.tier.as_str())
        .bind(time_text(app.created_at))
        .execute(&mut *conn)
        .await?;
    insert_key(conn, app.id, &app.key_hash, &app.key_prefix, app.created_at).await
}

async fn insert_key(
    conn: &mut SqliteConnection,
    app: AppId,
    hash: &KeyHash,
    prefix: &str,
    created_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into api_keys (id, app_id, key_hash, prefix, created_at, expires_at) \
         values ($1, $2, $3, $4, $5, null)",
    )
    .bind(uuid_text(Uuid::now_v7()))
    .bind(uuid_text(app.as_uuid()))
    .bind(hash.to_hex())
    .bind(prefix)
    .bind(time_text(created_at))
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

impl SqliteStore {
    /// Apps (all, or the one `only`), each with the prefixes of its keys active now.
    async fn apps(&self, only: Option<AppId>) -> Result<Vec<AppRecord>, sqlx::Error> {
        let only = only.map(|id| uuid_text(id.as_uuid()));
        let rows = sqlx::query(
            "select id, name, tier, created_at from apps \
             where $1 is null or id = $1 order by created_at, id",
        )
        .bind(&only)
        .fetch_all(&self.readers)
        .await?;
        let keys = sqlx::query(
            "select app_id, prefix from api_keys \
             where ($1 is null or app_id = $1) and (expires_at is null or expires_at > $2) \
             order by created_at desc, id desc",
        )
        .bind(&only)
        .bind(time_text(Utc::now()))
        .fetch_all(&self.readers)
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
                    created_at: time_col(row, "created_at")?,
                    key_prefixes: prefixes.remove(&id).unwrap_or_default(),
                })
            })
            .collect()
    }
}

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

// ---------------------------------------------------------------------------
// Read side: query texts from fixed column names only, values always bound.
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

/// A row selected with [`ATTRIBUTION_COLUMNS`].
fn attribution_record(row: &SqliteRow) -> Result<AttributionRecord, sqlx::Error> {
    Ok(AttributionRecord {
        id: uuid_col(row, "id")?,
        event_id: uuid_col(row, "event_id")?,
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
        attributed_at: time_col(row, "attributed_at")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1")
            .execute(&self.readers)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    async fn create_app(&self, app: &NewApp) -> Result<AppRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        insert_app(&mut tx, app).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(new_app_record(app))
    }

    async fn create_app_if_none(&self, app: &NewApp) -> Result<bool, StoreError> {
        // The write lock taken at BEGIN makes check-then-insert atomic, also
        // against another process on the same file.
        let mut tx = self.begin_write().await?;
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
        let mut tx = self.begin_write().await?;
        let app_text = uuid_text(app.as_uuid());
        let exists: bool = sqlx::query_scalar("select exists (select 1 from apps where id = $1)")
            .bind(&app_text)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        if !exists {
            return Err(StoreError::NotFound);
        }
        let (now_text, expire_text) = (time_text(now), time_text(old_keys_expire_at));
        sqlx::query(
            "update api_keys set expires_at = coalesce(min(expires_at, $3), $3) \
             where app_id = $1 and (expires_at is null or expires_at > $2)",
        )
        .bind(&app_text)
        .bind(&now_text)
        .bind(&expire_text)
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
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("update apps set tier = $2 where id = $1")
            .bind(uuid_text(app.as_uuid()))
            .bind(tier.as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(store_error)?;
        Ok(())
    }

    async fn active_keys(&self, now: DateTime<Utc>) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(
            "select k.key_hash, k.app_id, a.tier, k.expires_at \
             from api_keys k join apps a on a.id = k.app_id \
             where k.expires_at is null or k.expires_at > $1",
        )
        .bind(time_text(now))
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let hash: String = row.try_get("key_hash")?;
                Ok(KeyRecord {
                    hash: KeyHash::from_hex(&hash).ok_or_else(|| decode_error("key hash", "…"))?,
                    app_id: app_id_col(row, "app_id")?,
                    tier: tier_col(row, "tier")?,
                    expires_at: opt_time_col(row, "expires_at")?,
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

    async fn partner_connections(&self, app: AppId) -> Result<Vec<PartnerConnection>, StoreError> {
        let rows = sqlx::query(
            "select partner, status, last_success_at, installs, events, organic_ignored, \
                 duplicates, rejected \
             from partner_connections where app_id = $1 order by partner",
        )
        .bind(uuid_text(app.as_uuid()))
        .fetch_all(&self.readers)
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
                    last_success_at: opt_time_col(row, "last_success_at")?,
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
        // Same text and bind order as on PostgreSQL (see postgres::list_users_sql);
        // SQLite compares row values since 3.15 and uses them as an index range.
        let mut sql = format!("select {ATTRIBUTION_COLUMNS} from attributions where app_id = $1");
        let mut n = 1;
        for (column, _) in user_filters(filter) {
            n += 1;
            let _ = write!(sql, " and {column} = ${n}");
        }
        if after.is_some() {
            let _ = write!(sql, " and (attributed_at, id) < (${}, ${})", n + 1, n + 2);
            n += 2;
        }
        let _ = write!(
            sql,
            " order by attributed_at desc, id desc limit ${}",
            n + 1
        );
        let mut query = sqlx::query(&sql).bind(uuid_text(app.as_uuid()));
        for (_, value) in user_filters(filter) {
            query = query.bind(value);
        }
        if let Some(cursor) = after {
            query = query
                .bind(time_text(cursor.attributed_at))
                .bind(uuid_text(cursor.id));
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
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
            .bind(uuid_text(app.as_uuid()))
            .bind(value)
            .fetch_optional(&self.readers)
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
        let column = by.column();
        let mut sql = format!(
            "select {column} as value, count(*) as installs from attributions where app_id = $1"
        );
        let mut n = 1;
        if since.is_some() {
            n += 1;
            let _ = write!(sql, " and attributed_at >= ${n}");
        }
        if until.is_some() {
            n += 1;
            let _ = write!(sql, " and attributed_at < ${n}");
        }
        // Text compares by its bytes (BINARY), as the "C" collation on PostgreSQL.
        let _ = write!(
            sql,
            " group by {column} order by installs desc, {column} nulls last"
        );
        let mut query = sqlx::query(&sql).bind(uuid_text(app.as_uuid()));
        for bound in [since, until].into_iter().flatten() {
            query = query.bind(time_text(bound));
        }
        let rows = query.fetch_all(&self.readers).await.map_err(store_error)?;
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
        // The stored text starts with the UTC date.
        let rows = sqlx::query(
            "select substr(attributed_at, 1, 10) as day, source, count(*) as installs \
             from attributions where app_id = $1 and attributed_at >= $2 \
             group by 1, 2 order by 1, source nulls last",
        )
        .bind(uuid_text(app.as_uuid()))
        .bind(time_text(since))
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let day: String = row.try_get("day")?;
                Ok(DailySourceCount {
                    day: NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                        .map_err(|_| decode_error("day", &day))?,
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
    use chrono::TimeZone;

    use super::*;

    async fn pragma(pool: &SqlitePool, name: &str) -> String {
        let row = sqlx::query(&format!("pragma {name}"))
            .fetch_one(pool)
            .await
            .expect("pragma");
        row.try_get::<String, _>(0)
            .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
            .expect("pragma value")
    }

    #[tokio::test]
    async fn open_creates_file_and_folder_in_durable_wal_mode() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a").join("b").join("postbacks.db");
        // The short `sqlite:path` form is accepted as well as `sqlite://path`.
        let store = SqliteStore::open(
            &format!("sqlite:{}", path.display()),
            &PoolConfig::default(),
        )
        .await
        .expect("open");
        assert!(path.is_file(), "database file created with its folders");
        for pool in [&store.writer, &store.readers] {
            assert_eq!(pragma(pool, "journal_mode").await, "wal");
            assert_eq!(pragma(pool, "synchronous").await, "2", "FULL");
            assert_eq!(pragma(pool, "foreign_keys").await, "1");
            assert_eq!(pragma(pool, "busy_timeout").await, "5000");
        }
        assert_eq!(
            store.writer.options().get_max_connections(),
            1,
            "one writer"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn in_memory_database_works_through_the_writer() {
        let store = SqliteStore::open("sqlite::memory:", &PoolConfig::default())
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        assert!(store.list_apps().await.expect("list").is_empty());
        store.close().await;
    }

    #[test]
    fn times_are_fixed_width_and_sort_as_text() {
        let whole = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let times = [
            whole,
            whole + chrono::Duration::microseconds(1),
            whole + chrono::Duration::milliseconds(120),
            whole + chrono::Duration::seconds(1),
        ];
        let texts: Vec<String> = times.iter().copied().map(time_text).collect();
        assert_eq!(texts[0], "2024-05-01T12:00:00.000000Z");
        assert_eq!(texts[2], "2024-05-01T12:00:00.120000Z");
        assert!(texts.iter().all(|t| t.len() == texts[0].len()));
        assert!(
            texts.windows(2).all(|w| w[0] < w[1]),
            "text order is time order"
        );
        for (text, time) in texts.iter().zip(times) {
            assert_eq!(parse_time(text).expect("parse"), time);
        }
    }

    #[test]
    fn busy_locked_and_io_codes_mean_unavailable_by_their_primary_code() {
        for code in [
            5, 517, /* BUSY_SNAPSHOT */
            6, 8, 1032, /* READONLY_DBMOVED */
            10, 13, 14,
        ] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in [
            1, 19,   /* CONSTRAINT */
            2067, /* CONSTRAINT_UNIQUE */
            787,
        ] {
            assert!(!is_unavailable_code(code), "{code}");
        }
        assert!(matches!(
            store_error(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            store_error(sqlx::Error::RowNotFound),
            StoreError::Other(_)
        ));
    }

    #[test]
    fn in_memory_urls_are_recognised() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://:memory:"));
        assert!(is_in_memory("sqlite://db?mode=memory"));
        assert!(!is_in_memory("sqlite://data/postbacks.db"));
        assert!(!is_in_memory("sqlite:data/postbacks.db?mode=rwc"));
    }
}

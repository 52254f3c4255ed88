//! Storage: one object-safe [`Store`] trait of business operations, implemented once
//! per backend. All SQL lives below this module; nothing above it knows a dialect.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use crate::domain::IdentifierKind;
use crate::domain::PartnerId;
use crate::domain::{AppId, ConnectionStatus, KeyHash, NewEvent, Tier};

mod batch;
pub mod deliveries;
pub mod feed;
pub mod forwarding;
pub mod postgres;
pub mod privacy;
pub mod sqlite;

/// The store traits, for calling store operations on an `Arc<dyn Store>`.
pub mod prelude {
    pub use super::feed::FeedStore;
    pub use super::forwarding::{DestinationStore, OutboxStore};
    pub use super::privacy::PrivacyStore;
    pub use super::{
        AppStore, DeliveryStore, DryRunStore, HealthStore, IngestStore, MaintenanceStore,
        ReadStore, Store,
    };
}

#[cfg(test)]
mod conformance;

/// Which engine a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot write right now: answered 503, retried.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("not found")]
    NotFound,
    #[error("database error")]
    Other(#[source] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The SQLite file's folder is missing and cannot be created.
    #[error("cannot create the folder {}", path.display())]
    Folder {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A new app with its first key (only the key's hash and display prefix).
#[derive(Debug, Clone)]
pub struct NewApp {
    pub id: AppId,
    pub name: String,
    pub tier: Tier,
    pub key_hash: KeyHash,
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    /// False for a key not printed yet (the first start prints it right after).
    pub key_shown: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppRecord {
    pub id: AppId,
    pub name: String,
    pub tier: Tier,
    pub created_at: DateTime<Utc>,
    /// Display prefixes of the keys that still work, newest first.
    pub key_prefixes: Vec<String>,
    /// The same keys with their expiry (set during a rotation's grace period).
    pub keys: Vec<KeySummary>,
}

/// A working key as listings show it: never the key, only its display prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySummary {
    pub prefix: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// False when the key was created but never shown to anyone (see `NewApp`).
    pub shown: bool,
}

/// A key that currently authenticates, as cached in memory by the server.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub hash: KeyHash,
    pub app_id: AppId,
    pub tier: Tier,
    /// Set on a rotated-out key: it stops working at this time.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The result of recording one delivery, in the order of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    Recorded {
        event_id: Uuid,
    },
    Duplicate {
        first_event_id: Uuid,
    },
    /// A new install over its app's hourly install quota: not stored (429).
    OverQuota,
}

/// Everything one writer batch commits together.
#[derive(Debug, Clone, Copy, Default)]
pub struct Batch<'a> {
    pub events: &'a [NewEvent],
    pub counters: &'a [CounterDelta],
    pub quota: &'a [QuotaUsage],
    pub deliveries: &'a [deliveries::NewDelivery],
    pub unauthenticated: &'a [deliveries::UnauthenticatedDelivery],
}

impl Batch<'_> {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.counters.is_empty()
            && self.quota.is_empty()
            && self.deliveries.is_empty()
            && self.unauthenticated.is_empty()
    }
}

/// What a batch did: an outcome per delivery, in the order of the batch, and the
/// install counts of the quota windows it touched (apps with a quota only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedBatch {
    pub outcomes: Vec<RecordOutcome>,
    pub installs: Vec<QuotaUsage>,
}

/// Counter increments for verdicts that store no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterDelta {
    pub app_id: AppId,
    pub partner: PartnerId,
    pub organic_ignored: i64,
    pub rejected: i64,
    /// Answered 429 before reaching the writer (the request limit).
    pub rate_limited: i64,
}

/// Postback requests and stored attributed installs of one app in one quota
/// window (a clock hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub app_id: AppId,
    pub window_start: DateTime<Utc>,
    pub requests: i64,
    pub installs: i64,
}

/// One row of `partner_connections`.
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerConnection {
    pub partner: PartnerId,
    pub status: ConnectionStatus,
    pub last_success_at: Option<DateTime<Utc>>,
    pub installs: i64,
    pub events: i64,
    pub organic_ignored: i64,
    pub duplicates: i64,
    pub rejected: i64,
    pub rate_limited: i64,
}

/// Apps and their API keys (`store/<backend>/apps.rs`).
#[async_trait]
pub trait AppStore: Send + Sync + 'static {
    async fn create_app(&self, app: &NewApp) -> Result<AppRecord, StoreError>;

    /// Create `app` only when no app exists yet, atomically; true when it was created.
    async fn create_app_if_none(&self, app: &NewApp) -> Result<bool, StoreError>;

    /// All apps, oldest first.
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError>;

    async fn get_app(&self, id: AppId) -> Result<Option<AppRecord>, StoreError>;

    /// Add a new key; keys that work now keep working until `old_keys_expire_at`
    /// (or their own earlier expiry). `NotFound` for an unknown app.
    async fn rotate_key(
        &self,
        app: AppId,
        new_hash: KeyHash,
        new_prefix: &str,
        now: DateTime<Utc>,
        old_keys_expire_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Record that the key with this hash was shown to its owner.
    async fn mark_key_shown(&self, hash: KeyHash) -> Result<(), StoreError>;

    /// `NotFound` for an unknown app.
    async fn set_tier(&self, app: AppId, tier: Tier) -> Result<(), StoreError>;

    /// A signal each time keys or tiers may have changed in another process (a CLI
    /// command, another node), and after a lost connection to that news came back;
    /// `None` where nothing can tell (SQLite: one node, periodic reloads only).
    fn key_changes(&self) -> Option<tokio::sync::mpsc::Receiver<()>>;

    /// Keys that authenticate at `now` (no expiry, or expiry after `now`).
    async fn active_keys(&self, now: DateTime<Utc>) -> Result<Vec<KeyRecord>, StoreError>;
}

/// The write path: batches of deliveries and quota counts (`store/<backend>/ingest.rs`).
#[async_trait]
pub trait IngestStore: Send + Sync + 'static {
    /// In ONE transaction: insert each event unless its (app, partner, dedupe_key) was
    /// seen (also earlier in the same batch); grant new installs of apps with an
    /// `install_quota` from their hour's count, exactly across processes, and store
    /// none over it (`OverQuota`); create first-touch attributions for new users'
    /// installs; and update `partner_connections` (counters, status,
    /// last_success_at) including `counters`. Outcomes are in the order of `events`.
    /// In the same transaction, `quota` requests are added to `quota_usage`.
    /// With the batch, in the same transaction: the delivery log's rows (those of
    /// events get their answer from the event's outcome) and the unauthenticated log.
    async fn record(&self, batch: Batch<'_>) -> Result<RecordedBatch, StoreError>;

    /// [`IngestStore::record`] without delivery log rows.
    async fn record_batch(
        &self,
        events: &[NewEvent],
        counters: &[CounterDelta],
        quota: &[QuotaUsage],
    ) -> Result<RecordedBatch, StoreError> {
        self.record(Batch {
            events,
            counters,
            quota,
            ..Batch::default()
        })
        .await
    }

    /// Requests counted per app in the quota window starting at `window_start`.
    async fn quota_usage(&self, window_start: DateTime<Utc>)
        -> Result<Vec<QuotaUsage>, StoreError>;
}

/// The read API and the status page (`store/<backend>/reads.rs`).
#[async_trait]
pub trait ReadStore: Send + Sync + 'static {
    /// The `partner_connections` rows of one app (partners never heard from are absent).
    async fn partner_connections(&self, app: AppId) -> Result<Vec<PartnerConnection>, StoreError>;

    /// Attributions of `app` matching every given filter (exact match), newest first
    /// by (attributed_at, id); only rows strictly after `after` in that order.
    async fn list_users(
        &self,
        app: AppId,
        filter: &UserFilter,
        after: Option<&UserCursor>,
        limit: u32,
    ) -> Result<Vec<AttributionRecord>, StoreError>;

    /// The attribution of the user with this identifier, if any.
    async fn lookup_user(
        &self,
        app: AppId,
        kind: IdentifierKind,
        value: &str,
    ) -> Result<Option<AttributionRecord>, StoreError>;

    /// Attributions counted per value of one dimension (absent values as `None`),
    /// attributed_at in [since, until), most installs first then by value: the
    /// first `limit` values, and the total over all of them.
    async fn summary(
        &self,
        app: AppId,
        by: Dimension,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<SummaryPage, StoreError>;

    /// Attributions per UTC day and source from the day `since` on, for the status
    /// page chart: the `top_sources` sources with the most installs over the whole
    /// range by name, every other source summed as [`ChartSource::Other`]. Sorted by
    /// day, then source. Served from the `attribution_days` rollup.
    async fn daily_installs_by_source(
        &self,
        app: AppId,
        since: chrono::NaiveDate,
        top_sources: u32,
    ) -> Result<Vec<DailySourceCount>, StoreError>;
}

/// The delivery log (`store/<backend>/deliveries.rs`); its rows are written with
/// the batch by [`IngestStore::record`].
#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    /// The app's deliveries matching `filter`, newest first, strictly after `after`.
    async fn list_deliveries(
        &self,
        app: AppId,
        filter: &deliveries::DeliveryFilter,
        after: Option<deliveries::DeliveryCursor>,
        limit: u32,
    ) -> Result<Vec<deliveries::DeliveryRecord>, StoreError>;

    /// The app's delivery answered with this request id.
    async fn get_delivery(
        &self,
        app: AppId,
        request_id: &str,
    ) -> Result<Option<deliveries::DeliveryRecord>, StoreError>;

    /// The newest requests that no app's key authenticated.
    async fn list_unauthenticated(
        &self,
        limit: u32,
    ) -> Result<Vec<deliveries::UnauthenticatedDelivery>, StoreError>;

    /// Keep the newest `keep_per_partner` of each (app, partner) and nothing older
    /// than `keep_days` (whichever removes more), and the newest
    /// `keep_unauthenticated` unauthenticated ones; returns the rows removed.
    async fn prune_deliveries(
        &self,
        now: DateTime<Utc>,
        keep_per_partner: u32,
        keep_days: u32,
        keep_unauthenticated: u32,
    ) -> Result<u64, StoreError>;
}

/// The dry run's one question to the database (`store/<backend>/dry_run.rs`): read
/// only, it never writes.
#[async_trait]
pub trait DryRunStore: Send + Sync + 'static {
    /// The event a delivery with this dedupe key was stored as, while its dedupe key
    /// is kept: the `first_event_id` the real endpoint would answer `duplicate` with.
    async fn find_duplicate(
        &self,
        app: AppId,
        partner: PartnerId,
        dedupe_key: &str,
    ) -> Result<Option<Uuid>, StoreError>;
}

/// A `partner_connections` row with the newest postback accepted from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastAccepted {
    pub app_id: AppId,
    pub partner: PartnerId,
    pub status: ConnectionStatus,
    /// received_at of the newest stored postback (install or in-app event), and
    /// never older than `last_success_at` (events may have been pruned).
    pub last_accepted_at: Option<DateTime<Utc>>,
}

/// The gaps between consecutive accepted postbacks of one (app, partner) in a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GapStats {
    /// Accepted postbacks in the window (at most the sample cap).
    pub samples: i64,
    /// The asked-for percentile of the gaps between them (nearest rank), in
    /// seconds; `None` with fewer than two samples.
    pub gap_seconds: Option<f64>,
}

/// Most recent accepted postbacks the gap statistic reads per (app, partner): a
/// bound on the work of one read, whatever a partner's volume.
pub const MAX_GAP_SAMPLES: i64 = 100_000;

/// What stale detection reads (`store/<backend>/health.rs`): stored times only, so
/// every node of a fleet reaches the same answer.
#[async_trait]
pub trait HealthStore: Send + Sync + 'static {
    /// Every `partner_connections` row of `app` (of every app when `None`) with the
    /// time of its newest accepted postback.
    async fn last_accepted(&self, app: Option<AppId>) -> Result<Vec<LastAccepted>, StoreError>;

    /// The gaps between the accepted postbacks of (`app`, `partner`) received in
    /// [`since`, `until`] (the newest [`MAX_GAP_SAMPLES`] of them): how many there
    /// were and the `percentile` (1–100, nearest rank) of their gaps.
    async fn accepted_gaps(
        &self,
        app: AppId,
        partner: PartnerId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        percentile: u8,
    ) -> Result<GapStats, StoreError>;
}

/// The text of `accepted_gaps`, the same on both engines but for the seconds between
/// two `received_at` values (`{diff}`, over columns `received_at` and `prev`). Binds:
/// app, partner, since, until, sample cap, 100 − percentile. The gap of rank
/// `n·(100−p)/100 + 1` from the longest is the nearest-rank p-th percentile.
pub(crate) fn accepted_gaps_sql(diff: &str) -> String {
    format!(
        "with recent as ( \
             select received_at from postback_events \
             where app_id = $1 and partner = $2 and received_at >= $3 and received_at <= $4 \
             order by received_at desc limit $5), \
         gaps as ( \
             select {diff} as gap from ( \
                 select received_at, lag(received_at) over (order by received_at) as prev \
                 from recent) t \
             where prev is not null), \
         ranked as ( \
             select gap, row_number() over (order by gap desc) as rn, count(*) over () as n \
             from gaps) \
         select (select count(*) from recent) as samples, \
             (select gap from ranked where rn = (n * $6) / 100 + 1) as gap"
    )
}

/// How long stored deliveries are kept (`[retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Events are kept at least this long; a month goes once all of it is older.
    pub events_days: u32,
    /// Dedupe keys are kept at least this long (well past every partner's retry
    /// window); a retry older than that is stored as a new delivery.
    pub dedupe_days: u32,
    /// Events received longer ago than this lose their raw payload (to `{}`), IP
    /// address and user agent (`privacy.raw_days`); ids and segments stay.
    pub raw_days: u32,
}

/// What a prune removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Months of events removed, as `YYYY-MM`.
    pub months: Vec<String>,
    pub events: u64,
    pub dedupe_keys: u64,
    /// Kept events whose raw payload, IP address and user agent were cleared.
    pub raw_cleared: u64,
}

/// Retention: tables that stay bounded (`store/<backend>/maintenance.rs`).
#[async_trait]
pub trait MaintenanceStore: Send + Sync + 'static {
    /// Make sure the months around `now` can take events (PostgreSQL creates the
    /// monthly partitions of `postback_events` from the month before to three months
    /// ahead; SQLite has none to make).
    async fn prepare_months(&self, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Remove what `policy` no longer keeps at `now`: whole months of events (a
    /// dropped partition on PostgreSQL), dedupe keys by age; then clear the personal
    /// fields of the kept events older than `raw_days`, in chunks of their own
    /// transactions, touching only rows not cleared yet. `dry_run` only reports.
    async fn prune(
        &self,
        now: DateTime<Utc>,
        policy: RetentionPolicy,
        dry_run: bool,
    ) -> Result<PruneReport, StoreError>;
}

/// The first month (its first day) that `policy` keeps entirely at `now`: every
/// month that ends on or before `now - events_days` can go.
pub(crate) fn first_kept_month(now: DateTime<Utc>, events_days: u32) -> chrono::NaiveDate {
    use chrono::Datelike;
    let cutoff = (now - chrono::Duration::days(i64::from(events_days))).date_naive();
    // The month holding the cutoff still has kept days in it.
    chrono::NaiveDate::from_ymd_opt(cutoff.year(), cutoff.month(), 1).unwrap_or(cutoff)
}

/// A whole backend: every concern's operations plus its lifecycle. Held as
/// `Arc<dyn Store>`; bring the concern traits into scope with `use crate::store::prelude::*`.
#[async_trait]
pub trait Store:
    AppStore
    + IngestStore
    + ReadStore
    + MaintenanceStore
    + DeliveryStore
    + DryRunStore
    + HealthStore
    + forwarding::DestinationStore
    + feed::FeedStore
    + privacy::PrivacyStore
    + forwarding::OutboxStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;

    /// Apply pending migrations of this backend's folder.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Close the pool, waiting for checked-out connections to return.
    async fn close(&self);
}

/// Filters of `GET /v1/apps/{app_id}/users`; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub source: Option<String>,
    pub campaign: Option<String>,
    pub adgroup: Option<String>,
    pub ad: Option<String>,
    pub partner: Option<PartnerId>,
}

/// Keyset position of the last row of a page: pages stay stable under inserts and
/// deletions because the cursor holds values, not offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCursor {
    pub attributed_at: DateTime<Utc>,
    pub id: Uuid,
}

/// One row of `attributions`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributionRecord {
    pub id: Uuid,
    pub event_id: Uuid,
    pub partner: PartnerId,
    pub segments: crate::domain::Segments,
    pub ids: crate::domain::Identifiers,
    pub attributed_at: DateTime<Utc>,
}

/// The four attribution dimensions a summary can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Source,
    Campaign,
    Adgroup,
    Ad,
}

impl Dimension {
    /// The column name, also the `by=` value.
    pub fn column(self) -> &'static str {
        match self {
            Dimension::Source => "source",
            Dimension::Campaign => "campaign",
            Dimension::Adgroup => "adgroup",
            Dimension::Ad => "ad",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Dimension::Source,
            Dimension::Campaign,
            Dimension::Adgroup,
            Dimension::Ad,
        ]
        .into_iter()
        .find(|d| d.column() == s)
    }
}

/// The top values of a summary and the total over every value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryPage {
    pub rows: Vec<SummaryRow>,
    pub total: i64,
}

impl SummaryPage {
    /// Installs of the values left out by the limit.
    pub fn other(&self) -> i64 {
        self.total - self.rows.iter().map(|r| r.installs).sum::<i64>()
    }
}

/// The text of `summary`, the same on both engines but for `collate`. Binds, in
/// order: the app, `since` when `with_since`, `until` when `with_until`, the limit.
/// Absent bounds leave their condition out rather than binding a null, so a
/// reused (generic) plan still has a range to put on an index. The database keeps
/// the top values; the window sum counts every group before the limit applies.
pub(crate) fn summary_sql(
    by: Dimension,
    with_since: bool,
    with_until: bool,
    collate_c: bool,
) -> String {
    use std::fmt::Write as _;
    let column = by.column();
    let collate = if collate_c { " collate \"C\"" } else { "" };
    let mut sql = format!(
        "select value, installs, cast(sum(installs) over () as bigint) as total from ( \
         select {column} as value, count(*) as installs from attributions where app_id = $1"
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
        " group by {column}) g order by installs desc, value{collate} nulls last limit ${}",
        n + 1
    );
    sql
}

/// Rows of a [`summary_sql`] text: the page and its total (0 when there are none).
pub(crate) fn summary_page<R: sqlx::Row>(rows: &[R]) -> Result<SummaryPage, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut page = SummaryPage::default();
    for row in rows {
        page.total = row.try_get("total")?;
        page.rows.push(SummaryRow {
            value: row.try_get("value")?,
            installs: row.try_get("installs")?,
        });
    }
    Ok(page)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    pub value: Option<String>,
    pub installs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailySourceCount {
    pub day: chrono::NaiveDate,
    pub source: ChartSource,
    pub installs: i64,
}

/// A series of the chart; variants sort in the order the legend shows them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChartSource {
    Source(String),
    /// Attributions without a source.
    NoSource,
    /// Every source outside the top ones, summed.
    Other,
}

impl ChartSource {
    /// From the rollup's columns: `source` ('' for none) and whether it is a top one.
    pub(crate) fn from_rollup(source: Option<String>, top: bool) -> Self {
        match source {
            Some(s) if top && !s.is_empty() => ChartSource::Source(s),
            Some(_) if top => ChartSource::NoSource,
            _ => ChartSource::Other,
        }
    }
}

/// The text of the chart query, the same on both engines but for `collate`.
pub(crate) fn daily_by_source_sql(collate_c: bool) -> String {
    let collate = if collate_c { " collate \"C\"" } else { "" };
    format!(
        "with days as ( \
             select day, source, sum(installs) as installs from attribution_days \
             where app_id = $1 and day >= $2 group by day, source having sum(installs) > 0), \
         top as ( \
             select source from days group by source \
             order by sum(installs) desc, source{collate} limit $3) \
         select day, case when source in (select source from top) then source end as source, \
             source in (select source from top) as top, cast(sum(installs) as bigint) as installs \
         from days group by 1, 2, 3"
    )
}

/// Connection pool settings shared by both backends.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_connections: u32,
    /// How long a query waits for a connection before the store reports `Unavailable`.
    pub acquire_timeout: std::time::Duration,
    /// PostgreSQL: how long one batch transaction may run before it is abandoned
    /// (`Unavailable`) and its connection closed. A server that stops answering
    /// without closing the connection (its host gone, or an old primary cut off from
    /// its synchronous standby) would otherwise hold the writer until the kernel
    /// gives the connection up, many minutes later.
    pub transaction_timeout: std::time::Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: std::time::Duration::from_secs(3),
            transaction_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// sqlx errors that mean "no usable connection", whatever the engine; each backend
/// adds its own database error codes on top.
pub(crate) fn is_connection_failure(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    )
}

impl RecordOutcome {
    /// The id of the event this delivery is stored as (its own or the first copy's);
    /// none when it was not stored.
    pub fn event_id(&self) -> Option<Uuid> {
        match *self {
            RecordOutcome::Recorded { event_id } => Some(event_id),
            RecordOutcome::Duplicate { first_event_id } => Some(first_event_id),
            RecordOutcome::OverQuota => None,
        }
    }
}

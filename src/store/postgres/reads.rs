//! PostgreSQL: the read API and the status page.

use super::*;

// ---------------------------------------------------------------------------
// Read side. Every query text is assembled from fixed column names only (the
// filter, dimension and identifier enums); values are always bound. The builders
// and binders are public so that `examples/bench_queries.rs` can EXPLAIN the exact
// text this store runs.
// ---------------------------------------------------------------------------

/// The columns [`attribution_record`] decodes, in table order.
pub(super) const ATTRIBUTION_COLUMNS: &str =
    "id, event_id, partner, source, campaign, adgroup, ad, \
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

/// The text `summary` runs (see [`crate::store::summary_sql`]); values sort by their
/// bytes (collation "C") on every server, as on SQLite.
#[doc(hidden)]
pub fn summary_sql(by: Dimension, with_since: bool, with_until: bool) -> String {
    crate::store::summary_sql(by, with_since, with_until, true)
}

/// Binds the values of a [`summary_sql`] text, in its order.
#[doc(hidden)]
pub fn bind_summary<'q>(
    query: Query<'q, Postgres, PgArguments>,
    app: AppId,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: u32,
) -> Query<'q, Postgres, PgArguments> {
    let mut query = query.bind(app.as_uuid());
    for bound in [since, until].into_iter().flatten() {
        query = query.bind(bound);
    }
    query.bind(i64::from(limit))
}

/// A row selected with [`ATTRIBUTION_COLUMNS`].
pub(super) fn attribution_record(row: &PgRow) -> Result<AttributionRecord, sqlx::Error> {
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
impl ReadStore for PgStore {
    async fn partner_connections(&self, app: AppId) -> Result<Vec<PartnerConnection>, StoreError> {
        let rows = sqlx::query(
            "select partner, status, last_success_at, installs, events, organic_ignored, \
                 duplicates, rejected, rate_limited \
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
                    rate_limited: row.try_get("rate_limited")?,
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
        // An identifier belongs to one user (`user_identities`), and the user to
        // the attribution of its first touch.
        let sql = format!(
            "select {ATTRIBUTION_COLUMNS} from attributions \
             where app_id = $1 and id = (select attribution_id from user_identities \
                 where app_id = $1 and kind = '{}' and value = $2)",
            kind.column()
        );
        let row = sqlx::query(&sql)
            .bind(app.as_uuid())
            .bind(kind.canonical(value).as_ref())
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
        limit: u32,
    ) -> Result<SummaryPage, StoreError> {
        let sql = summary_sql(by, since.is_some(), until.is_some());
        let rows = bind_summary(sqlx::query(&sql), app, since, until, limit)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        summary_page(&rows).map_err(store_error)
    }

    async fn daily_installs_by_source(
        &self,
        app: AppId,
        since: chrono::NaiveDate,
        top_sources: u32,
    ) -> Result<Vec<DailySourceCount>, StoreError> {
        let rows = sqlx::query(&crate::store::daily_by_source_sql(true))
            .bind(app.as_uuid())
            .bind(since)
            .bind(i64::from(top_sources))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut counts = rows
            .iter()
            .map(|row| {
                Ok(DailySourceCount {
                    day: row.try_get("day")?,
                    source: ChartSource::from_rollup(row.try_get("source")?, row.try_get("top")?),
                    installs: row.try_get("installs")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(store_error)?;
        counts.sort_by(|a, b| (a.day, &a.source).cmp(&(b.day, &b.source)));
        Ok(counts)
    }
}

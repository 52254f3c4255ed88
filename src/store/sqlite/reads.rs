//! SQLite: the read API and the status page.

use super::*;

// ---------------------------------------------------------------------------
// Read side: query texts from fixed column names only, values always bound.
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

/// A row selected with [`ATTRIBUTION_COLUMNS`].
pub(super) fn attribution_record(row: &SqliteRow) -> Result<AttributionRecord, sqlx::Error> {
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
impl ReadStore for SqliteStore {
    async fn partner_connections(&self, app: AppId) -> Result<Vec<PartnerConnection>, StoreError> {
        let rows = sqlx::query(
            "select partner, status, last_success_at, installs, events, organic_ignored, \
                 duplicates, rejected, rate_limited \
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
        // An identifier belongs to one user (`user_identities`), and the user to
        // the attribution of its first touch.
        let sql = format!(
            "select {ATTRIBUTION_COLUMNS} from attributions \
             where app_id = $1 and id = (select attribution_id from user_identities \
                 where app_id = $1 and kind = '{}' and value = $2)",
            kind.column()
        );
        let row = sqlx::query(&sql)
            .bind(uuid_text(app.as_uuid()))
            .bind(kind.canonical(value).as_ref())
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
        limit: u32,
    ) -> Result<SummaryPage, StoreError> {
        // Text compares by its bytes (BINARY), as the "C" collation on PostgreSQL.
        let sql = summary_sql(by, since.is_some(), until.is_some(), false);
        let mut query = sqlx::query(&sql).bind(uuid_text(app.as_uuid()));
        for bound in [since, until].into_iter().flatten() {
            query = query.bind(time_text(bound));
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(store_error)?;
        summary_page(&rows).map_err(store_error)
    }

    async fn daily_installs_by_source(
        &self,
        app: AppId,
        since: NaiveDate,
        top_sources: u32,
    ) -> Result<Vec<DailySourceCount>, StoreError> {
        let rows = sqlx::query(&crate::store::daily_by_source_sql(false))
            .bind(uuid_text(app.as_uuid()))
            .bind(since.format("%Y-%m-%d").to_string())
            .bind(i64::from(top_sources))
            .fetch_all(&self.readers)
            .await
            .map_err(store_error)?;
        let mut counts = rows
            .iter()
            .map(|row| {
                let day: String = row.try_get("day")?;
                Ok(DailySourceCount {
                    day: NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                        .map_err(|_| decode_error("day", &day))?,
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

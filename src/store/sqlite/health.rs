//! SQLite: what stale detection reads (migration 0020's index serves both).

use super::*;

#[async_trait]
impl HealthStore for SqliteStore {
    async fn last_accepted(&self, app: Option<AppId>) -> Result<Vec<LastAccepted>, StoreError> {
        // Times are fixed-width text, so the larger text is the later time. SQLite's
        // two-argument max() is null when either is, hence the coalesces.
        let rows = sqlx::query(
            "select app_id, partner, status, \
                 max(coalesce(last_success_at, newest), coalesce(newest, last_success_at)) \
                     as last_accepted_at \
             from (select pc.app_id, pc.partner, pc.status, pc.last_success_at, \
                       (select max(e.received_at) from postback_events e \
                        where e.app_id = pc.app_id and e.partner = pc.partner) as newest \
                   from partner_connections pc \
                   where $1 is null or pc.app_id = $1) \
             order by app_id, partner",
        )
        .bind(app.map(|a| uuid_text(a.as_uuid())))
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                Ok(LastAccepted {
                    app_id: app_id_col(row, "app_id")?,
                    partner: partner_col(row, "partner")?,
                    status: match status.as_str() {
                        "connected" => ConnectionStatus::Connected,
                        "not_connected" => ConnectionStatus::NotConnected,
                        other => return Err(decode_error("status", other)),
                    },
                    last_accepted_at: opt_time_col(row, "last_accepted_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    async fn accepted_gaps(
        &self,
        app: AppId,
        partner: PartnerId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        percentile: u8,
    ) -> Result<GapStats, StoreError> {
        let sql = accepted_gaps_sql("(julianday(received_at) - julianday(prev)) * 86400.0");
        let row = sqlx::query(&sql)
            .bind(uuid_text(app.as_uuid()))
            .bind(partner.as_str())
            .bind(time_text(since))
            .bind(time_text(until))
            .bind(MAX_GAP_SAMPLES)
            .bind(100 - i64::from(percentile.clamp(1, 100)))
            .fetch_one(&self.readers)
            .await
            .map_err(store_error)?;
        Ok(GapStats {
            samples: row.try_get("samples").map_err(store_error)?,
            gap_seconds: row.try_get("gap").map_err(store_error)?,
        })
    }
}

//! PostgreSQL: what stale detection reads (migration 0020's index serves both).

use super::*;

#[async_trait]
impl HealthStore for PgStore {
    async fn last_accepted(&self, app: Option<AppId>) -> Result<Vec<LastAccepted>, StoreError> {
        // One index probe per (app, partner) and monthly partition for the newest event.
        let rows = sqlx::query(
            "select pc.app_id, pc.partner, pc.status, greatest(pc.last_success_at, \
                 (select max(e.received_at) from postback_events e \
                  where e.app_id = pc.app_id and e.partner = pc.partner)) as last_accepted_at \
             from partner_connections pc \
             where $1::uuid is null or pc.app_id = $1 \
             order by pc.app_id, pc.partner",
        )
        .bind(app.map(|a| a.as_uuid()))
        .fetch_all(&self.pool)
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
                    last_accepted_at: row.try_get("last_accepted_at")?,
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
        let sql =
            accepted_gaps_sql("cast(extract(epoch from received_at - prev) as double precision)");
        let row = sqlx::query(&sql)
            .bind(app.as_uuid())
            .bind(partner.as_str())
            .bind(since)
            .bind(until)
            .bind(MAX_GAP_SAMPLES)
            .bind(100 - i64::from(percentile.clamp(1, 100)))
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(GapStats {
            samples: row.try_get("samples").map_err(store_error)?,
            gap_seconds: row.try_get("gap").map_err(store_error)?,
        })
    }
}

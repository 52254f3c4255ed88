//! SQLite: retention. One file on one node: old events are deleted by month, the
//! same months PostgreSQL drops, and their dedupe keys with them (the unique key
//! lives on the event rows here).

use super::*;

#[async_trait]
impl MaintenanceStore for SqliteStore {
    async fn prepare_months(&self, _now: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn prune(
        &self,
        now: DateTime<Utc>,
        policy: RetentionPolicy,
        dry_run: bool,
    ) -> Result<PruneReport, StoreError> {
        let keep_from = first_kept_month(now, policy.events_days);
        let cutoff = time_text(keep_from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
        let months: Vec<String> = sqlx::query_scalar(
            "select distinct substr(received_at, 1, 7) from postback_events \
             where received_at < $1 order by 1",
        )
        .bind(&cutoff)
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        let events = if dry_run {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from postback_events where received_at < $1",
            )
            .bind(&cutoff)
            .fetch_one(&self.readers)
            .await
            .map_err(store_error)? as u64
        } else {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query("delete from postback_events where received_at < $1")
                .bind(&cutoff)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            done.rows_affected()
        };
        Ok(PruneReport {
            months,
            events,
            dedupe_keys: events,
        })
    }
}

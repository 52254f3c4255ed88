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
        let raw_cleared = self
            .clear_raw(now, policy.raw_days, &cutoff, dry_run)
            .await?;
        Ok(PruneReport {
            months,
            events,
            dedupe_keys: events,
            raw_cleared,
        })
    }
}

/// Rows cleared per transaction: the one writer is never held long by a backlog.
const RAW_CHUNK: i64 = 2_000;

/// Rows not cleared yet: the predicate of the partial index `postback_events_raw_kept`.
const RAW_KEPT: &str = "(raw_payload <> '{}' or ip is not null or user_agent is not null)";

impl SqliteStore {
    /// See the PostgreSQL store's `clear_raw`.
    async fn clear_raw(
        &self,
        now: DateTime<Utc>,
        raw_days: u32,
        kept_from: &str,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        let cutoff = time_text(now - chrono::Duration::days(i64::from(raw_days)));
        if dry_run {
            let n: i64 = sqlx::query_scalar(&format!(
                "select count(*) from postback_events \
                 where received_at < $1 and received_at >= $2 and {RAW_KEPT}"
            ))
            .bind(&cutoff)
            .bind(kept_from)
            .fetch_one(&self.readers)
            .await
            .map_err(store_error)?;
            return Ok(n as u64);
        }
        let sql = format!(
            "update postback_events set raw_payload = '{{}}', ip = null, user_agent = null \
             where rowid in (select rowid from postback_events \
                             where received_at < $1 and {RAW_KEPT} limit $2)"
        );
        let mut cleared = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let n = sqlx::query(&sql)
                .bind(&cutoff)
                .bind(RAW_CHUNK)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
            tx.commit().await.map_err(store_error)?;
            cleared += n;
            if n < RAW_CHUNK as u64 {
                return Ok(cleared);
            }
        }
    }
}

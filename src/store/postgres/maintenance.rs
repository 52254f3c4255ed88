//! PostgreSQL: retention. `postback_events` is partitioned by month of
//! received_at, so a month past retention is one `drop table`; dedupe keys live in
//! their own table and go by age.

use chrono::{Datelike, Months, NaiveDate};

use super::*;

/// `postback_events_YYYY_MM`: the partition of the month starting on `month`.
fn partition_name(month: NaiveDate) -> String {
    format!("postback_events_{:04}_{:02}", month.year(), month.month())
}

/// The month a partition holds, from its name; `None` for other tables (the
/// default partition).
fn partition_month(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix("postback_events_")?;
    let (year, month) = rest.split_once('_')?;
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
}

fn month_start(t: DateTime<Utc>) -> NaiveDate {
    let d = t.date_naive();
    NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or(d)
}

fn utc_midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

#[async_trait]
impl MaintenanceStore for PgStore {
    async fn prepare_months(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let first = month_start(now) - Months::new(1);
        for i in 0..5 {
            let month = first + Months::new(i);
            // Names and bounds are made here from dates, never from input.
            let sql = format!(
                "create table if not exists {} partition of postback_events \
                 for values from ('{}') to ('{}')",
                partition_name(month),
                utc_midnight(month).to_rfc3339(),
                utc_midnight(month + Months::new(1)).to_rfc3339(),
            );
            match sqlx::query(&sql).execute(&self.pool).await {
                Ok(_) => {}
                // Another node created it between our check and our create.
                Err(sqlx::Error::Database(db))
                    if matches!(db.code().as_deref(), Some("42P07" | "23505")) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        Ok(())
    }

    async fn prune(
        &self,
        now: DateTime<Utc>,
        policy: RetentionPolicy,
        dry_run: bool,
    ) -> Result<PruneReport, StoreError> {
        let keep_from = first_kept_month(now, policy.events_days);
        let partitions: Vec<String> = sqlx::query_scalar(
            "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid \
             where i.inhparent = 'postback_events'::regclass order by 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut report = PruneReport::default();
        for name in partitions {
            let Some(month) = partition_month(&name) else {
                continue;
            };
            if month >= keep_from {
                continue;
            }
            let rows: i64 = sqlx::query_scalar(&format!("select count(*) from {name}"))
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
            if !dry_run {
                sqlx::query(&format!("drop table if exists {name}"))
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
            }
            // Empty months (made ahead of time) go without a mention.
            if rows > 0 {
                report
                    .months
                    .push(format!("{:04}-{:02}", month.year(), month.month()));
                report.events += rows as u64;
            }
        }
        let key_cutoff = now - chrono::Duration::days(i64::from(policy.dedupe_days));
        let keys = if dry_run {
            sqlx::query_scalar::<_, i64>("select count(*) from dedupe_keys where received_at < $1")
                .bind(key_cutoff)
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)? as u64
        } else {
            sqlx::query("delete from dedupe_keys where received_at < $1")
                .bind(key_cutoff)
                .execute(&self.pool)
                .await
                .map_err(store_error)?
                .rows_affected()
        };
        report.dedupe_keys = keys;
        report.raw_cleared = self
            .clear_raw(now, policy.raw_days, utc_midnight(keep_from), dry_run)
            .await?;
        Ok(report)
    }
}

/// Rows cleared per statement: each chunk commits on its own, so a large backlog
/// (the first prune after an upgrade) never holds one long transaction.
const RAW_CHUNK: i64 = 5_000;

/// Rows not cleared yet; the same predicate as the partial index
/// `postback_events_raw_kept` (migration 0014), so the planner can use it.
const RAW_KEPT: &str = "(raw_payload <> '{}'::jsonb or ip is not null or user_agent is not null)";

impl PgStore {
    /// Clear the raw payload, IP address and user agent of events received before
    /// `now - raw_days` (and, in a dry run, not in a month the prune drops anyway).
    async fn clear_raw(
        &self,
        now: DateTime<Utc>,
        raw_days: u32,
        kept_from: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        let cutoff = now - chrono::Duration::days(i64::from(raw_days));
        if dry_run {
            let n: i64 = sqlx::query_scalar(&format!(
                "select count(*) from postback_events \
                 where received_at < $1 and received_at >= $2 and {RAW_KEPT}"
            ))
            .bind(cutoff)
            .bind(kept_from)
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
            return Ok(n as u64);
        }
        // Each chunk ends at the received_at of the RAW_CHUNK-th row left (an
        // index scan of the partial index); the last one at the cutoff. Statements on
        // one table, no self-join: every app's rows alike, as a fleet-wide job.
        let next_bound = format!(
            "select received_at from postback_events where received_at < $1 and {RAW_KEPT} \
             order by received_at offset $2 limit 1"
        );
        let clear = format!(
            "update postback_events set raw_payload = '{{}}'::jsonb, ip = null, \
                 user_agent = null \
             where received_at <= $1 and received_at < $2 and {RAW_KEPT}"
        );
        let mut cleared = 0;
        loop {
            let bound: Option<DateTime<Utc>> = sqlx::query_scalar(&next_bound)
                .bind(cutoff)
                .bind(RAW_CHUNK)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
            cleared += sqlx::query(&clear)
                .bind(bound.unwrap_or(cutoff))
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(store_error)?
                .rows_affected();
            if bound.is_none() {
                return Ok(cleared);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_and_other_tables_are_not_months() {
        let may = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        assert_eq!(partition_name(may), "postback_events_2024_05");
        assert_eq!(partition_month("postback_events_2024_05"), Some(may));
        assert_eq!(partition_month("postback_events_default"), None);
    }
}

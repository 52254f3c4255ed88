//! SQLite: the forwarding outbox (see `store::forwarding::OutboxStore`). One
//! process dispatches on SQLite, so a claim is a transaction on the one writer
//! connection: no other claim can interleave.

use super::*;
use crate::store::forwarding::*;

const MESSAGE_COLUMNS: &str = "id, destination_id, type, event_id, attribution_id, status, \
     attempts, created_at, next_attempt_at, last_attempt_at, last_status, last_error, \
     delivered_at";

fn message_row(row: &SqliteRow) -> Result<MessageRecord, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let status =
        MessageStatus::parse(&status).ok_or_else(|| decode_error("message status", &status))?;
    let attribution_id = row
        .try_get::<Option<String>, _>("attribution_id")?
        .map(|id| Uuid::parse_str(&id).map_err(|_| decode_error("uuid", &id)))
        .transpose()?;
    Ok(MessageRecord {
        id: uuid_col(row, "id")?,
        destination_id: uuid_col(row, "destination_id")?,
        kind: row.try_get("type")?,
        event_id: uuid_col(row, "event_id")?,
        attribution_id,
        status,
        attempts: row.try_get::<i64, _>("attempts")? as i32,
        created_at: time_col(row, "created_at")?,
        // Only a pending message is due again; a finished one keeps its last lease.
        next_attempt_at: if status == MessageStatus::Pending {
            opt_time_col(row, "next_attempt_at")?
        } else {
            None
        },
        last_attempt_at: opt_time_col(row, "last_attempt_at")?,
        last_status: row
            .try_get::<Option<i64>, _>("last_status")?
            .map(|s| s as i32),
        last_error: row.try_get("last_error")?,
        delivered_at: opt_time_col(row, "delivered_at")?,
    })
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn claim_due(&self, claim: Claim<'_>) -> Result<Vec<ClaimedMessage>, StoreError> {
        // Ask a reader which destinations have due messages, and take the write
        // lock only when one of them has a free slot: an idle dispatcher, or one
        // whose destinations are all busy (a hanging receiver), never competes
        // with the batch writer.
        let now = time_text(claim.now);
        let destinations = sqlx::query(
            "select d.id, d.app_id, d.url, d.secret from destinations d \
             where d.enabled = 1 and exists (select 1 from outbox o \
                 where o.destination_id = d.id and o.status = 'pending' \
                   and o.next_attempt_at <= $1) \
             order by d.id",
        )
        .bind(&now)
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        let free = |row: &SqliteRow| -> Result<(Uuid, u32), StoreError> {
            let id = uuid_col(row, "id").map_err(store_error)?;
            let busy = claim
                .in_flight
                .iter()
                .find(|(d, _)| *d == id)
                .map_or(0, |&(_, n)| n);
            Ok((id, claim.max_in_flight.saturating_sub(busy)))
        };
        let mut open = Vec::new();
        for row in &destinations {
            let (id, slots) = free(row)?;
            if slots > 0 {
                open.push((row, id, slots));
            }
        }
        if open.is_empty() {
            return Ok(Vec::new());
        }
        // The claims below check status and due time again, under the write lock.
        let mut tx = self.begin_write().await?;
        let lease = time_text(claim.lease_until);
        let mut claimed = Vec::new();
        for (dest, id, slots) in open {
            let remaining = claim.limit as usize - claimed.len().min(claim.limit as usize);
            if remaining == 0 {
                break;
            }
            let slots = (slots as usize).min(remaining);
            let rows = sqlx::query(
                "update outbox set next_attempt_at = $1, attempts = attempts + 1 \
                 where id in (select id from outbox \
                     where destination_id = $2 and status = 'pending' and next_attempt_at <= $3 \
                       and (select enabled from destinations where id = $2) = 1 \
                     order by next_attempt_at limit $4) \
                 returning id, app_id, payload, attempts, created_at",
            )
            .bind(&lease)
            .bind(uuid_text(id))
            .bind(&now)
            .bind(slots as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
            for row in &rows {
                let message = (|| {
                    Ok::<_, sqlx::Error>(ClaimedMessage {
                        id: uuid_col(row, "id")?,
                        app_id: app_id_col(row, "app_id")?,
                        destination_id: id,
                        url: dest.try_get("url")?,
                        secret: crate::config::Secret::new(dest.try_get::<String, _>("secret")?),
                        payload: row.try_get("payload")?,
                        attempts: row.try_get::<i64, _>("attempts")? as i32,
                        created_at: time_col(row, "created_at")?,
                    })
                })()
                .map_err(store_error)?;
                claimed.push(message);
            }
        }
        tx.commit().await.map_err(store_error)?;
        Ok(claimed)
    }

    async fn finish_attempts(&self, results: &[AttemptResult]) -> Result<Vec<bool>, StoreError> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let mut disabled = Vec::with_capacity(results.len());
        for result in results {
            disabled.push(finish_one(&mut tx, result).await?);
        }
        tx.commit().await.map_err(store_error)?;
        Ok(disabled)
    }

    async fn list_messages(
        &self,
        app: AppId,
        destination: Uuid,
        status: Option<MessageStatus>,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let sql = format!(
            "select {MESSAGE_COLUMNS} from outbox \
             where app_id = $1 and destination_id = $2 and ($3 is null or status = $3) \
             order by created_at desc, id desc limit $4"
        );
        let rows = sqlx::query(&sql)
            .bind(uuid_text(app.as_uuid()))
            .bind(uuid_text(destination))
            .bind(status.map(MessageStatus::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(message_row)
            .collect::<Result<_, _>>()
            .map_err(store_error)
    }

    async fn replay_messages(
        &self,
        app: AppId,
        destination: Uuid,
        filter: ReplayFilter,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "update outbox set status = 'pending', attempts = 0, next_attempt_at = $3, \
                 last_attempt_at = null, last_status = null, last_error = null, \
                 delivered_at = null \
             where app_id = $1 and destination_id = $2 \
               and (status = 'dead' or (not $4 and status = 'delivered')) \
               and ($5 is null or created_at >= $5)",
        )
        .bind(uuid_text(app.as_uuid()))
        .bind(uuid_text(destination))
        .bind(time_text(now))
        .bind(filter.dead_only)
        .bind(filter.since.map(time_text))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(done.rows_affected())
    }

    async fn destination_backlogs(&self) -> Result<Vec<DestinationBacklog>, StoreError> {
        let rows = sqlx::query(
            "select d.app_id, d.id, \
               (select count(*) from outbox o where o.destination_id = d.id \
                  and o.status = 'pending') as backlog, \
               (select count(*) from outbox o where o.destination_id = d.id \
                  and o.status = 'dead') as dead \
             from destinations d order by d.app_id, d.id",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(DestinationBacklog {
                    app_id: app_id_col(row, "app_id")?,
                    destination_id: uuid_col(row, "id")?,
                    backlog: row.try_get("backlog")?,
                    dead: row.try_get("dead")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }
}

/// One attempt's result on its message and destination; true when it disabled it.
async fn finish_one(tx: &mut SqliteConnection, result: &AttemptResult) -> Result<bool, StoreError> {
    let (status, next) = match result.outcome {
        AttemptOutcome::Delivered => ("delivered", None),
        AttemptOutcome::Retry { next_attempt_at } => ("pending", Some(next_attempt_at)),
        AttemptOutcome::Dead => ("dead", None),
    };
    let delivered = result.outcome == AttemptOutcome::Delivered;
    let at = time_text(result.at);
    sqlx::query(
        "update outbox set status = $2, next_attempt_at = coalesce($3, next_attempt_at), \
             last_attempt_at = $4, last_status = $5, last_error = $6, \
             delivered_at = case when $7 then $4 else delivered_at end \
         where id = $1 and status = 'pending' and (attempts = $8 or $7)",
    )
    .bind(uuid_text(result.id))
    .bind(status)
    .bind(next.map(time_text))
    .bind(&at)
    .bind(result.status.map(i64::from))
    .bind(result.error.as_deref())
    .bind(delivered)
    .bind(i64::from(result.attempt))
    .execute(&mut *tx)
    .await
    .map_err(store_error)?;
    let dest = uuid_text(result.destination_id);
    let disabled = if delivered {
        sqlx::query(
            "update destinations set last_success_at = $2, failing_since = null where id = $1",
        )
        .bind(&dest)
        .bind(&at)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        false
    } else {
        sqlx::query(
            "update destinations set failing_since = coalesce(failing_since, $2) where id = $1",
        )
        .bind(&dest)
        .bind(&at)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        sqlx::query(
            "update destinations set enabled = 0, disabled_reason = 'failing', \
                 updated_at = $2 \
             where id = $1 and enabled = 1 and failing_since < $3",
        )
        .bind(&dest)
        .bind(&at)
        .bind(time_text(result.at - result.horizon))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected()
            == 1
    };
    Ok(disabled)
}

//! PostgreSQL: the forwarding outbox (see `store::forwarding::OutboxStore`).

use super::*;
use crate::store::forwarding::*;

/// Leases due messages in one statement. Each enabled destination takes at most
/// its free slots (`max_in_flight` less what this process has in flight), so one
/// destination's backlog cannot crowd out the others; `skip locked` leaves rows
/// another node is claiming to that node.
const CLAIM_SQL: &str = "with picked as ( \
       select o.app_id, o.id \
       from destinations d \
       cross join lateral ( \
         select o.app_id, o.id from outbox o \
         where o.app_id = d.app_id and o.destination_id = d.id \
           and o.status = 'pending' and o.next_attempt_at <= $1 \
         order by o.next_attempt_at \
         limit greatest($3 - coalesce( \
           (select b.used from unnest($4::uuid[], $5::int4[]) as b (dest, used) \
            where b.dest = d.id), 0), 0) \
         for update of o skip locked \
       ) o \
       where d.enabled \
       limit $6 \
     ) \
     update outbox o set next_attempt_at = $2, attempts = o.attempts + 1 \
     from picked p, destinations d \
     where o.app_id = p.app_id and o.id = p.id \
       and d.app_id = o.app_id and d.id = o.destination_id \
     returning o.id, o.app_id, o.destination_id, d.url, d.secret, \
       cast(o.payload as text) as payload, o.attempts, o.created_at";

const MESSAGE_COLUMNS: &str = "id, destination_id, type, event_id, attribution_id, status, \
     attempts, created_at, next_attempt_at, last_attempt_at, last_status, last_error, \
     delivered_at";

fn message_row(row: &PgRow) -> Result<MessageRecord, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let status =
        MessageStatus::parse(&status).ok_or_else(|| decode_error("message status", &status))?;
    Ok(MessageRecord {
        id: row.try_get("id")?,
        destination_id: row.try_get("destination_id")?,
        kind: row.try_get("type")?,
        event_id: row.try_get("event_id")?,
        attribution_id: row.try_get("attribution_id")?,
        status,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        // Only a pending message is due again; a finished one keeps its last lease.
        next_attempt_at: if status == MessageStatus::Pending {
            row.try_get("next_attempt_at")?
        } else {
            None
        },
        last_attempt_at: row.try_get("last_attempt_at")?,
        last_status: row.try_get::<Option<i16>, _>("last_status")?.map(i32::from),
        last_error: row.try_get("last_error")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn claim_due(&self, claim: Claim<'_>) -> Result<Vec<ClaimedMessage>, StoreError> {
        let (busy, used): (Vec<Uuid>, Vec<i32>) = claim
            .in_flight
            .iter()
            .map(|&(dest, n)| (dest, i32::try_from(n).unwrap_or(i32::MAX)))
            .unzip();
        let rows = sqlx::query(CLAIM_SQL)
            .bind(claim.now)
            .bind(claim.lease_until)
            .bind(i64::from(claim.max_in_flight))
            .bind(busy)
            .bind(used)
            .bind(i64::from(claim.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedMessage {
                    id: row.try_get("id")?,
                    app_id: app_id_col(row, "app_id")?,
                    destination_id: row.try_get("destination_id")?,
                    url: row.try_get("url")?,
                    secret: crate::config::Secret::new(row.try_get::<String, _>("secret")?),
                    payload: row.try_get("payload")?,
                    attempts: row.try_get("attempts")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    async fn finish_attempts(&self, results: &[AttemptResult]) -> Result<Vec<bool>, StoreError> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(store_error)?;
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
             where app_id = $1 and destination_id = $2 and ($3::text is null or status = $3) \
             order by created_at desc, id desc limit $4"
        );
        let rows = sqlx::query(&sql)
            .bind(app.as_uuid())
            .bind(destination)
            .bind(status.map(MessageStatus::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
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
        let done = sqlx::query(
            "update outbox set status = 'pending', attempts = 0, next_attempt_at = $3, \
                 last_attempt_at = null, last_status = null, last_error = null, \
                 delivered_at = null \
             where app_id = $1 and destination_id = $2 \
               and (status = 'dead' or (not $4 and status = 'delivered')) \
               and ($5::timestamptz is null or created_at >= $5)",
        )
        .bind(app.as_uuid())
        .bind(destination)
        .bind(now)
        .bind(filter.dead_only)
        .bind(filter.since)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected())
    }

    async fn destination_backlogs(&self) -> Result<Vec<DestinationBacklog>, StoreError> {
        // Two single-table reads merged here: every destination, zeros included,
        // without a join across apps.
        let destinations: Vec<(Uuid, Uuid)> =
            sqlx::query_as("select app_id, id from destinations order by app_id, id")
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
        let counts: Vec<(Uuid, Uuid, String, i64)> = sqlx::query_as(
            "select app_id, destination_id, status, count(*) from outbox \
             where status in ('pending', 'dead') group by app_id, destination_id, status",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut by_destination: HashMap<(Uuid, Uuid), (i64, i64)> = HashMap::new();
        for (app, dest, status, n) in counts {
            let entry = by_destination.entry((app, dest)).or_default();
            if status == "pending" {
                entry.0 = n;
            } else {
                entry.1 = n;
            }
        }
        Ok(destinations
            .into_iter()
            .map(|(app, dest)| {
                let (backlog, dead) = by_destination
                    .get(&(app, dest))
                    .copied()
                    .unwrap_or_default();
                DestinationBacklog {
                    app_id: AppId::from_uuid(app),
                    destination_id: dest,
                    backlog,
                    dead,
                }
            })
            .collect())
    }
}

/// One attempt's result on its message and destination; true when it disabled it.
async fn finish_one(tx: &mut PgConnection, result: &AttemptResult) -> Result<bool, StoreError> {
    let (status, next) = match result.outcome {
        AttemptOutcome::Delivered => ("delivered", None),
        AttemptOutcome::Retry { next_attempt_at } => ("pending", Some(next_attempt_at)),
        AttemptOutcome::Dead => ("dead", None),
    };
    let delivered = result.outcome == AttemptOutcome::Delivered;
    sqlx::query(
        "update outbox set status = $3, next_attempt_at = coalesce($4, next_attempt_at), \
             last_attempt_at = $5, last_status = $6, last_error = $7, \
             delivered_at = case when $8 then $5 else delivered_at end \
         where app_id = $1 and id = $2 and status = 'pending' and (attempts = $9 or $8)",
    )
    .bind(result.app_id.as_uuid())
    .bind(result.id)
    .bind(status)
    .bind(next)
    .bind(result.at)
    .bind(result.status.map(|s| s as i16))
    .bind(result.error.as_deref())
    .bind(delivered)
    .bind(result.attempt)
    .execute(&mut *tx)
    .await
    .map_err(store_error)?;
    let disabled = if delivered {
        sqlx::query(
            "update destinations set last_success_at = $3, failing_since = null \
             where app_id = $1 and id = $2",
        )
        .bind(result.app_id.as_uuid())
        .bind(result.destination_id)
        .bind(result.at)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        false
    } else {
        sqlx::query(
            "update destinations set failing_since = coalesce(failing_since, $3) \
             where app_id = $1 and id = $2",
        )
        .bind(result.app_id.as_uuid())
        .bind(result.destination_id)
        .bind(result.at)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        sqlx::query(
            "update destinations set enabled = false, disabled_reason = 'failing', \
                 updated_at = $3 \
             where app_id = $1 and id = $2 and enabled and failing_since < $4",
        )
        .bind(result.app_id.as_uuid())
        .bind(result.destination_id)
        .bind(result.at)
        .bind(result.at - result.horizon)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected()
            == 1
    };
    Ok(disabled)
}

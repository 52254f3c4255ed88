//! SQLite: the delivery log (see `store/postgres/deliveries.rs`).

use std::sync::LazyLock;

use super::multi_row::MultiRow;
use super::*;
use crate::store::deliveries::{
    method_name, resolve, Answer, DeliveryCursor, DeliveryFilter, DeliveryRecord,
    UnauthenticatedDelivery, Verdict,
};

static INSERT_DELIVERIES: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "insert or ignore into deliveries (app_id, id, received_at, partner, method, status, \
             verdict, reason, event_id, request_id, segments, identifiers, payload) values ",
        13,
        "",
    )
});

static INSERT_UNAUTHENTICATED: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "insert or ignore into unauthenticated_deliveries (id, received_at, partner, method, \
             status, reason, key_prefix, request_id) values ",
        8,
        "",
    )
});

/// The batch's log rows, in its transaction.
pub(super) async fn insert(
    conn: &mut SqliteConnection,
    batch: &Batch<'_>,
    outcomes: &[RecordOutcome],
) -> Result<(), sqlx::Error> {
    let rows = resolve(batch.deliveries, batch.events, outcomes);
    INSERT_DELIVERIES
        .run(conn, &rows, |query, (d, a)| {
            query
                .bind(uuid_text(d.app_id.as_uuid()))
                .bind(uuid_text(d.id))
                .bind(time_text(d.received_at))
                .bind(d.partner.as_str())
                .bind(d.method)
                .bind(i64::from(a.status))
                .bind(a.verdict.as_str())
                .bind(a.reason.as_str())
                .bind(a.event_id.map(uuid_text))
                .bind(d.request_id.as_str())
                .bind(d.segments.as_deref())
                .bind(d.identifiers.as_deref())
                .bind(d.payload.as_str())
        })
        .await?;
    INSERT_UNAUTHENTICATED
        .run(conn, batch.unauthenticated, |query, u| {
            query
                .bind(uuid_text(u.id))
                .bind(time_text(u.received_at))
                .bind(u.partner.as_str())
                .bind(u.method)
                .bind(i64::from(u.status))
                .bind(u.reason.as_str())
                .bind(u.key_prefix.as_deref())
                .bind(u.request_id.as_str())
        })
        .await?;
    Ok(())
}

const COLUMNS: &str = "id, received_at, partner, method, status, verdict, reason, event_id, \
     request_id, segments, identifiers, payload";

fn json_col(row: &SqliteRow, col: &str) -> Result<Option<serde_json::Value>, sqlx::Error> {
    row.try_get::<Option<String>, _>(col)?
        .map(|text| {
            Ok(serde_json::from_str(&text)
                .unwrap_or_else(|_| serde_json::json!({ "unparsed": text })))
        })
        .transpose()
}

fn record(row: &SqliteRow) -> Result<DeliveryRecord, sqlx::Error> {
    let verdict: String = row.try_get("verdict")?;
    let event_id: Option<String> = row.try_get("event_id")?;
    Ok(DeliveryRecord {
        id: uuid_col(row, "id")?,
        received_at: time_col(row, "received_at")?,
        partner: partner_col(row, "partner")?,
        method: row.try_get("method")?,
        answer: Answer {
            status: row.try_get::<i64, _>("status")? as u16,
            verdict: Verdict::parse(&verdict).ok_or_else(|| decode_error("verdict", &verdict))?,
            reason: row.try_get("reason")?,
            event_id: event_id
                .map(|id| Uuid::parse_str(&id).map_err(|_| decode_error("uuid", &id)))
                .transpose()?,
        },
        request_id: row.try_get("request_id")?,
        segments: json_col(row, "segments")?,
        identifiers: json_col(row, "identifiers")?,
        payload: json_col(row, "payload")?.unwrap_or_default(),
    })
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn list_deliveries(
        &self,
        app: AppId,
        filter: &DeliveryFilter,
        after: Option<DeliveryCursor>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from deliveries where app_id = $1 \
             and ($2 is null or partner = $2) and ($3 is null or verdict = $3) \
             and ($4 is null or status = $4) and ($5 is null or received_at >= $5) \
             and ($6 is null or (received_at, id) < ($6, $7)) \
             order by received_at desc, id desc limit $8"
        ))
        .bind(uuid_text(app.as_uuid()))
        .bind(filter.partner.map(PartnerId::as_str))
        .bind(filter.verdict.map(Verdict::as_str))
        .bind(filter.status.map(i64::from))
        .bind(filter.since.map(time_text))
        .bind(after.map(|c| time_text(c.received_at)))
        .bind(after.map(|c| uuid_text(c.id)))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(record)
            .collect::<Result<_, _>>()
            .map_err(store_error)
    }

    async fn get_delivery(
        &self,
        app: AppId,
        request_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "select {COLUMNS} from deliveries where app_id = $1 and request_id = $2 \
             order by received_at desc limit 1"
        ))
        .bind(uuid_text(app.as_uuid()))
        .bind(request_id)
        .fetch_optional(&self.readers)
        .await
        .map_err(store_error)?;
        row.as_ref().map(record).transpose().map_err(store_error)
    }

    async fn list_unauthenticated(
        &self,
        limit: u32,
    ) -> Result<Vec<UnauthenticatedDelivery>, StoreError> {
        let rows = sqlx::query(
            "select id, received_at, partner, method, status, reason, key_prefix, request_id \
             from unauthenticated_deliveries order by received_at desc, id desc limit $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(UnauthenticatedDelivery {
                    id: uuid_col(row, "id")?,
                    received_at: time_col(row, "received_at")?,
                    partner: partner_col(row, "partner")?,
                    method: method_name(&row.try_get::<String, _>("method")?),
                    status: row.try_get::<i64, _>("status")? as u16,
                    reason: row.try_get("reason")?,
                    key_prefix: row.try_get("key_prefix")?,
                    request_id: row.try_get("request_id")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    async fn prune_deliveries(
        &self,
        now: DateTime<Utc>,
        keep_per_partner: u32,
        keep_days: u32,
        keep_unauthenticated: u32,
    ) -> Result<u64, StoreError> {
        let cutoff = time_text(now - chrono::Duration::days(i64::from(keep_days)));
        let mut tx = self.begin_write().await?;
        let mut removed = sqlx::query("delete from deliveries where received_at < $1")
            .bind(&cutoff)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        removed += sqlx::query(
            "delete from deliveries where (app_id, partner, received_at, id) in ( \
                 select app_id, partner, received_at, id from ( \
                     select app_id, partner, received_at, id, row_number() over ( \
                         partition by app_id, partner order by received_at desc, id desc) as n \
                     from deliveries) where n > $1)",
        )
        .bind(i64::from(keep_per_partner))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        removed += sqlx::query(
            "delete from unauthenticated_deliveries where id in ( \
                 select id from unauthenticated_deliveries \
                 order by received_at desc, id desc limit -1 offset $1)",
        )
        .bind(i64::from(keep_unauthenticated))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        tx.commit().await.map_err(store_error)?;
        Ok(removed)
    }
}

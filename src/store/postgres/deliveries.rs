//! PostgreSQL: the delivery log. Rows are written with the writer's batch (one
//! multi-row statement per log), read newest first, and pruned to
//! `deliveries.keep_per_partner` per (app, partner) and `deliveries.keep_days`.

use super::*;
use crate::store::deliveries::{
    method_name, resolve, Answer, DeliveryCursor, DeliveryFilter, DeliveryRecord, NewDelivery,
    UnauthenticatedDelivery, Verdict,
};

/// The batch's log rows, in its transaction. A row kept from a batch that seemed to
/// fail may be in the table already (the commit landed before the connection went
/// silent): the first copy stays.
pub(super) async fn insert(
    conn: &mut PgConnection,
    batch: &Batch<'_>,
    outcomes: &[RecordOutcome],
) -> Result<(), sqlx::Error> {
    let rows = resolve(batch.deliveries, batch.events, outcomes);
    if !rows.is_empty() {
        let text = |f: fn(&NewDelivery, &Answer) -> Option<String>| -> Vec<Option<String>> {
            rows.iter().map(|(d, a)| f(d, a)).collect()
        };
        sqlx::query(
            "insert into deliveries (app_id, id, received_at, partner, method, status, verdict, \
                 reason, event_id, request_id, segments, identifiers, payload) \
             select app_id, id, received_at, partner, method, status, verdict, reason, event_id, \
                 request_id, segments::jsonb, identifiers::jsonb, payload::jsonb \
             from unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], \
                 $6::int2[], $7::text[], $8::text[], $9::uuid[], $10::text[], $11::text[], \
                 $12::text[], $13::text[]) \
               as t(app_id, id, received_at, partner, method, status, verdict, reason, \
                 event_id, request_id, segments, identifiers, payload) \
             on conflict do nothing",
        )
        .bind(
            rows.iter()
                .map(|(d, _)| d.app_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(d, _)| d.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|(d, _)| d.received_at).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|(d, _)| d.partner.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(d, _)| d.method).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|(_, a)| a.status as i16)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, a)| a.verdict.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(text(|_, a| Some(a.reason.clone())))
        .bind(rows.iter().map(|(_, a)| a.event_id).collect::<Vec<_>>())
        .bind(text(|d, _| Some(d.request_id.clone())))
        .bind(text(|d, _| d.segments.clone()))
        .bind(text(|d, _| d.identifiers.clone()))
        .bind(text(|d, _| Some(d.payload.clone())))
        .execute(&mut *conn)
        .await?;
    }
    let unauth = batch.unauthenticated;
    if !unauth.is_empty() {
        sqlx::query(
            "insert into unauthenticated_deliveries (id, received_at, partner, method, status, \
                 reason, key_prefix, request_id) \
             select * from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], \
                 $5::int2[], $6::text[], $7::text[], $8::text[]) \
             on conflict do nothing",
        )
        .bind(unauth.iter().map(|u| u.id).collect::<Vec<_>>())
        .bind(unauth.iter().map(|u| u.received_at).collect::<Vec<_>>())
        .bind(
            unauth
                .iter()
                .map(|u| u.partner.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(unauth.iter().map(|u| u.method).collect::<Vec<_>>())
        .bind(unauth.iter().map(|u| u.status as i16).collect::<Vec<_>>())
        .bind(unauth.iter().map(|u| u.reason.as_str()).collect::<Vec<_>>())
        .bind(
            unauth
                .iter()
                .map(|u| u.key_prefix.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            unauth
                .iter()
                .map(|u| u.request_id.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The JSON columns come back as text and are parsed here: a payload that jsonb
/// keeps exactly (a number beyond what a double holds) must not fail the listing.
const COLUMNS: &str = "id, received_at, partner, method, status, verdict, reason, event_id, \
     request_id, segments::text as segments, identifiers::text as identifiers, \
     payload::text as payload";

fn json_col(row: &PgRow, col: &str) -> Result<Option<serde_json::Value>, sqlx::Error> {
    Ok(row.try_get::<Option<String>, _>(col)?.map(|text| {
        serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "unparsed": text }))
    }))
}

fn record(row: &PgRow) -> Result<DeliveryRecord, sqlx::Error> {
    let verdict: String = row.try_get("verdict")?;
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        received_at: row.try_get("received_at")?,
        partner: partner_col(row, "partner")?,
        method: row.try_get("method")?,
        answer: Answer {
            status: row.try_get::<i16, _>("status")? as u16,
            verdict: Verdict::parse(&verdict).ok_or_else(|| decode_error("verdict", &verdict))?,
            reason: row.try_get("reason")?,
            event_id: row.try_get("event_id")?,
        },
        request_id: row.try_get("request_id")?,
        segments: json_col(row, "segments")?,
        identifiers: json_col(row, "identifiers")?,
        payload: json_col(row, "payload")?.unwrap_or_default(),
    })
}

#[async_trait]
impl DeliveryStore for PgStore {
    async fn list_deliveries(
        &self,
        app: AppId,
        filter: &DeliveryFilter,
        after: Option<DeliveryCursor>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        // Absent filters bind nulls: a small table per app (bounded by pruning).
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from deliveries where app_id = $1 \
             and ($2::text is null or partner = $2) and ($3::text is null or verdict = $3) \
             and ($4::int2 is null or status = $4) \
             and ($5::timestamptz is null or received_at >= $5) \
             and ($6::timestamptz is null or (received_at, id) < ($6, $7)) \
             order by received_at desc, id desc limit $8"
        ))
        .bind(app.as_uuid())
        .bind(filter.partner.map(PartnerId::as_str))
        .bind(filter.verdict.map(Verdict::as_str))
        .bind(filter.status.map(|s| s as i16))
        .bind(filter.since)
        .bind(after.map(|c| c.received_at))
        .bind(after.map(|c| c.id).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        .bind(app.as_uuid())
        .bind(request_id)
        .fetch_optional(&self.pool)
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
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(UnauthenticatedDelivery {
                    id: row.try_get("id")?,
                    received_at: row.try_get("received_at")?,
                    partner: partner_col(row, "partner")?,
                    method: method_name(&row.try_get::<String, _>("method")?),
                    status: row.try_get::<i16, _>("status")? as u16,
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
        let cutoff = now - chrono::Duration::days(i64::from(keep_days));
        let by_age = sqlx::query("delete from deliveries where received_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(store_error)?
            .rows_affected();
        // Past the newest `keep_per_partner` of each (app, partner) heard from.
        let by_count = sqlx::query(
            // Materialized: inlined, the edge (a lateral probe per app and partner)
            // was planned as the inner side of a join and ran again for every row to
            // delete (68 s for 24,000 rows under the write-path bench).
            "with edge as materialized ( \
                 select pc.app_id, pc.partner, e.received_at, e.id from partner_connections pc \
                 cross join lateral (select received_at, id from deliveries d \
                     where d.app_id = pc.app_id and d.partner = pc.partner \
                     order by received_at desc, id desc offset $1 limit 1) e) \
             delete from deliveries d using edge \
             where d.app_id = edge.app_id and d.partner = edge.partner \
               and (d.received_at, d.id) <= (edge.received_at, edge.id)",
        )
        .bind(i64::from(keep_per_partner))
        .execute(&self.pool)
        .await
        .map_err(store_error)?
        .rows_affected();
        let unauth = sqlx::query(
            "delete from unauthenticated_deliveries where id in ( \
                 select id from unauthenticated_deliveries \
                 order by received_at desc, id desc offset $1)",
        )
        .bind(i64::from(keep_unauthenticated))
        .execute(&self.pool)
        .await
        .map_err(store_error)?
        .rows_affected();
        Ok(by_age + by_count + unauth)
    }
}

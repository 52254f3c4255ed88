//! PostgreSQL: erasure on request. Deleting from `postback_events` (the
//! partitioned parent) reaches every monthly partition; `attribution_days` follows
//! the attribution's delete through its trigger.

use crate::store::privacy::{
    kind_from_column, new_salt, value_hash, ErasureCounts, ErasureReceipt, PrivacyStore, UserIds,
};

use super::*;

/// `(user_id = any($2) or idfa = any($3) …)` over `column(kind)`, binds from `$2`.
fn any_identifier(column: impl Fn(&str) -> String) -> String {
    let terms: Vec<String> = IdentifierKind::ALL
        .iter()
        .enumerate()
        .map(|(i, kind)| format!("{} = any(${})", column(kind.column()), i + 2))
        .collect();
    format!("({})", terms.join(" or "))
}

fn bind_ids<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    ids: &'q UserIds,
) -> Query<'q, Postgres, PgArguments> {
    for (_, values) in ids.by_kind() {
        query = query.bind(values);
    }
    query
}

#[async_trait]
impl PrivacyStore for PgStore {
    async fn erase_user(
        &self,
        app: AppId,
        kind: IdentifierKind,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<ErasureReceipt, StoreError> {
        let value = kind.canonical(value).into_owned();
        let app_uuid = app.as_uuid();
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let attribution: Option<Uuid> = sqlx::query_scalar(
            "select attribution_id from user_identities \
             where app_id = $1 and kind = $2 and value = $3 for update",
        )
        .bind(app_uuid)
        .bind(kind.column())
        .bind(&value)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;

        // The user's identifiers: its attribution's, or else those of the events
        // that carry the given one.
        let mut ids = UserIds::default();
        ids.add(kind, &value);
        let found: Vec<(String, String)> = match attribution {
            Some(id) => sqlx::query_as(
                "select kind, value from user_identities where app_id = $1 and attribution_id = $2",
            )
            .bind(app_uuid)
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?,
            None => sqlx::query_as(&format!(
                "select i.kind, i.value from postback_events e \
                 cross join lateral (values ('user_id', e.user_id), ('idfa', e.idfa), \
                     ('idfv', e.idfv), ('google_aid', e.google_aid), \
                     ('android_id', e.android_id), \
                     ('partner_device_id', e.partner_device_id)) as i(kind, value) \
                 where e.app_id = $1 and e.{} = $2 and i.value is not null",
                kind.column()
            ))
            .bind(app_uuid)
            .bind(&value)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?,
        };
        for (column, v) in &found {
            if let Some(k) = kind_from_column(column) {
                ids.add(k, v);
            }
        }

        let mut counts = ErasureCounts::default();
        let sql = format!(
            "delete from postback_events where app_id = $1 and {} \
             returning id, partner, dedupe_key",
            any_identifier(|c| c.to_owned())
        );
        let mut query = sqlx::query_as::<_, (Uuid, String, String)>(&sql).bind(app_uuid);
        for (_, values) in ids.by_kind() {
            query = query.bind(values);
        }
        let events = query.fetch_all(&mut *tx).await.map_err(store_error)?;
        counts.events = events.len() as u64;
        let event_ids: Vec<Uuid> = events.iter().map(|e| e.0).collect();
        let partners: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
        let keys: Vec<&str> = events.iter().map(|e| e.2.as_str()).collect();
        // Their dedupe keys go too: a redelivery is then stored as a new event.
        sqlx::query(
            "delete from dedupe_keys d using unnest($2::text[], $3::text[]) as k(partner, key) \
             where d.app_id = $1 and d.partner = k.partner and d.dedupe_key = k.key",
        )
        .bind(app_uuid)
        .bind(&partners)
        .bind(&keys)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;

        counts.deliveries = bind_ids(
            sqlx::query(&format!(
                "delete from deliveries where app_id = $1 and (event_id = any($8) or {})",
                any_identifier(|c| format!("identifiers ->> '{c}'"))
            ))
            .bind(app_uuid),
            &ids,
        )
        .bind(&event_ids)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();

        counts.outbox = sqlx::query(
            "delete from outbox where app_id = $1 and (event_id = any($2) or attribution_id = $3)",
        )
        .bind(app_uuid)
        .bind(&event_ids)
        .bind(attribution)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();

        if let Some(id) = attribution {
            sqlx::query("delete from user_identities where app_id = $1 and attribution_id = $2")
                .bind(app_uuid)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            counts.attributions =
                sqlx::query("delete from attributions where app_id = $1 and id = $2")
                    .bind(app_uuid)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?
                    .rows_affected();
        }

        sqlx::query(
            "insert into erasure_salts (app_id, salt, created_at) values ($1, $2, $3) \
             on conflict do nothing",
        )
        .bind(app_uuid)
        .bind(new_salt())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let salt: String = sqlx::query_scalar("select salt from erasure_salts where app_id = $1")
            .bind(app_uuid)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        let receipt = ErasureReceipt {
            id: Uuid::now_v7(),
            app_id: app,
            erased_at: now,
            kind,
            value_hash: value_hash(&salt, kind, &value),
            counts,
        };
        sqlx::query(
            "insert into erasures (app_id, id, erased_at, kind, value_hash, attributions, \
                 events, deliveries, outbox) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(app_uuid)
        .bind(receipt.id)
        .bind(now)
        .bind(kind.column())
        .bind(&receipt.value_hash)
        .bind(counts.attributions as i64)
        .bind(counts.events as i64)
        .bind(counts.deliveries as i64)
        .bind(counts.outbox as i64)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(receipt)
    }

    async fn list_erasures(
        &self,
        app: AppId,
        limit: u32,
    ) -> Result<Vec<ErasureReceipt>, StoreError> {
        let rows = sqlx::query(
            "select id, erased_at, kind, value_hash, attributions, events, deliveries, outbox \
             from erasures where app_id = $1 order by erased_at desc, id desc limit $2",
        )
        .bind(app.as_uuid())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let column: String = row.try_get("kind")?;
                let count = |name: &str| row.try_get::<i64, _>(name).map(|n| n as u64);
                Ok(ErasureReceipt {
                    id: row.try_get("id")?,
                    app_id: app,
                    erased_at: row.try_get("erased_at")?,
                    kind: kind_from_column(&column).ok_or_else(|| {
                        sqlx::Error::Decode(format!("unexpected kind {column:?}").into())
                    })?,
                    value_hash: row.try_get("value_hash")?,
                    counts: ErasureCounts {
                        attributions: count("attributions")?,
                        events: count("events")?,
                        deliveries: count("deliveries")?,
                        outbox: count("outbox")?,
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }
}

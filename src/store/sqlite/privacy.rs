//! SQLite: erasure on request. Dedupe keys live on the event rows here, so they go
//! with them; `attribution_days` follows the attribution's delete through its trigger.

use crate::store::privacy::{
    kind_from_column, new_salt, value_hash, ErasureCounts, ErasureReceipt, PrivacyStore, UserIds,
};

use super::*;

/// `(user_id in (select value from json_each($2)) or …)`, binds from `$2`.
fn any_identifier(column: impl Fn(&str) -> String) -> String {
    let terms: Vec<String> = IdentifierKind::ALL
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            format!(
                "{} in (select value from json_each(${}))",
                column(kind.column()),
                i + 2
            )
        })
        .collect();
    format!("({})", terms.join(" or "))
}

/// Each kind's values as a JSON array (text), in `$2…$7` order.
fn id_arrays(ids: &UserIds) -> Vec<String> {
    ids.by_kind()
        .map(|(_, values)| serde_json::to_string(values).unwrap_or_else(|_| "[]".into()))
        .collect()
}

#[async_trait]
impl PrivacyStore for SqliteStore {
    async fn erase_user(
        &self,
        app: AppId,
        kind: IdentifierKind,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<ErasureReceipt, StoreError> {
        let value = kind.canonical(value).into_owned();
        let app_text = app.to_string();
        let mut tx = self.begin_write().await?;
        let attribution: Option<String> = sqlx::query_scalar(
            "select attribution_id from user_identities \
             where app_id = $1 and kind = $2 and value = $3",
        )
        .bind(&app_text)
        .bind(kind.column())
        .bind(&value)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;

        let mut ids = UserIds::default();
        ids.add(kind, &value);
        let found: Vec<(String, String)> = match &attribution {
            Some(id) => sqlx::query_as(
                "select kind, value from user_identities where app_id = $1 and attribution_id = $2",
            )
            .bind(&app_text)
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?,
            None => {
                let select = |c: &str| {
                    format!(
                        "select '{c}', {c} from postback_events \
                         where app_id = $1 and {} = $2 and {c} is not null",
                        kind.column()
                    )
                };
                let sql = IdentifierKind::ALL
                    .iter()
                    .map(|k| select(k.column()))
                    .collect::<Vec<_>>()
                    .join(" union all ");
                sqlx::query_as(&sql)
                    .bind(&app_text)
                    .bind(&value)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(store_error)?
            }
        };
        for (column, v) in &found {
            if let Some(k) = kind_from_column(column) {
                ids.add(k, v);
            }
        }
        let arrays = id_arrays(&ids);

        let mut counts = ErasureCounts::default();
        let sql = format!(
            "delete from postback_events where app_id = $1 and {} returning id",
            any_identifier(|c| c.to_owned())
        );
        let mut query = sqlx::query_scalar(&sql).bind(&app_text);
        for array in &arrays {
            query = query.bind(array);
        }
        let event_ids: Vec<String> = query.fetch_all(&mut *tx).await.map_err(store_error)?;
        counts.events = event_ids.len() as u64;
        let event_ids = serde_json::to_string(&event_ids).unwrap_or_else(|_| "[]".into());

        let sql = format!(
            "delete from deliveries where app_id = $1 \
             and (event_id in (select value from json_each($8)) or {})",
            any_identifier(|c| format!("json_extract(identifiers, '$.{c}')"))
        );
        let mut query = sqlx::query(&sql).bind(&app_text);
        for array in &arrays {
            query = query.bind(array);
        }
        counts.deliveries = query
            .bind(&event_ids)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();

        counts.outbox = sqlx::query(
            "delete from outbox where app_id = $1 \
             and (event_id in (select value from json_each($2)) or attribution_id = $3)",
        )
        .bind(&app_text)
        .bind(&event_ids)
        .bind(&attribution)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();

        if let Some(id) = &attribution {
            sqlx::query("delete from user_identities where app_id = $1 and attribution_id = $2")
                .bind(&app_text)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            counts.attributions =
                sqlx::query("delete from attributions where app_id = $1 and id = $2")
                    .bind(&app_text)
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
        .bind(&app_text)
        .bind(new_salt())
        .bind(time_text(now))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let salt: String = sqlx::query_scalar("select salt from erasure_salts where app_id = $1")
            .bind(&app_text)
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
        .bind(&app_text)
        .bind(receipt.id.to_string())
        .bind(time_text(now))
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
        .bind(app.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let column: String = row.try_get("kind")?;
                let id: String = row.try_get("id")?;
                let count = |name: &str| row.try_get::<i64, _>(name).map(|n| n as u64);
                Ok(ErasureReceipt {
                    id: Uuid::parse_str(&id).map_err(|_| decode_error("uuid", &id))?,
                    app_id: app,
                    erased_at: time_col(row, "erased_at")?,
                    kind: kind_from_column(&column).ok_or_else(|| decode_error("kind", &column))?,
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

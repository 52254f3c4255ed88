//! PostgreSQL: forwarding destinations (see `store::forwarding`).

use super::*;
use crate::store::forwarding::*;

/// The columns of a `DestinationRecord`, with its backlog and dead counts.
const DESTINATION_COLUMNS: &str = "d.id, d.app_id, d.url, d.what, d.enabled, d.disabled_reason, \
     d.created_at, d.updated_at, d.last_success_at, d.failing_since, \
     (select count(*) from outbox o where o.app_id = d.app_id and o.destination_id = d.id and o.status = 'pending') \
       as backlog, \
     (select count(*) from outbox o where o.app_id = d.app_id and o.destination_id = d.id and o.status = 'dead') as dead";

fn destination_row(row: &PgRow) -> Result<DestinationRecord, sqlx::Error> {
    let what: String = row.try_get("what")?;
    Ok(DestinationRecord {
        id: row.try_get("id")?,
        app_id: app_id_col(row, "app_id")?,
        url: row.try_get("url")?,
        what: DestinationWhat::parse(&what)
            .ok_or_else(|| decode_error("destination what", &what))?,
        enabled: row.try_get("enabled")?,
        disabled_reason: row.try_get("disabled_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_success_at: row.try_get("last_success_at")?,
        failing_since: row.try_get("failing_since")?,
        backlog: row.try_get("backlog")?,
        dead: row.try_get("dead")?,
    })
}

#[async_trait]
impl DestinationStore for PgStore {
    async fn create_destination(
        &self,
        dest: &NewDestination,
    ) -> Result<DestinationRecord, StoreError> {
        sqlx::query(
            "insert into destinations (id, app_id, url, what, secret, enabled, created_at, \
                 updated_at) values ($1, $2, $3, $4, $5, true, $6, $6)",
        )
        .bind(dest.id)
        .bind(dest.app_id.as_uuid())
        .bind(&dest.url)
        .bind(dest.what.as_str())
        .bind(&dest.secret)
        .bind(dest.created_at)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        self.get_destination(dest.id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn list_destinations(&self, app: AppId) -> Result<Vec<DestinationRecord>, StoreError> {
        let sql = format!(
            "select {DESTINATION_COLUMNS} from destinations d where d.app_id = $1 \
             order by d.created_at, d.id"
        );
        let rows = sqlx::query(&sql)
            .bind(app.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(destination_row)
            .collect::<Result<_, _>>()
            .map_err(store_error)
    }

    async fn get_destination(&self, id: Uuid) -> Result<Option<DestinationRecord>, StoreError> {
        let sql = format!("select {DESTINATION_COLUMNS} from destinations d where d.id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref()
            .map(destination_row)
            .transpose()
            .map_err(store_error)
    }

    async fn disable_destination(
        &self,
        id: Uuid,
        reason: DisabledReason,
        at: DateTime<Utc>,
    ) -> Result<Option<DestinationRecord>, StoreError> {
        let updated = sqlx::query(
            "update destinations set enabled = false, disabled_reason = $2, updated_at = $3 \
             where id = $1",
        )
        .bind(id)
        .bind(reason.as_str())
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        self.get_destination(id).await
    }

    async fn enable_destination(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<DestinationRecord>, StoreError> {
        let updated = sqlx::query(
            "update destinations set enabled = true, disabled_reason = null, \
                 failing_since = null, updated_at = $2 \
             where id = $1",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        self.get_destination(id).await
    }

    async fn remove_destination(&self, id: Uuid) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // Locked first: a batch adding rows for it waits, and they go with it.
        let app: Option<Uuid> =
            sqlx::query_scalar("select app_id from destinations where id = $1 for update")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
        let Some(app) = app else {
            return Ok(None);
        };
        // The foreign key cascades too; deleting here counts what goes.
        let messages = sqlx::query("delete from outbox where app_id = $1 and destination_id = $2")
            .bind(app)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        sqlx::query("delete from destinations where app_id = $1 and id = $2")
            .bind(app)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(Some(messages))
    }

    async fn rotate_destination_secret(
        &self,
        id: Uuid,
        secret: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated =
            sqlx::query("update destinations set secret = $2, updated_at = $3 where id = $1")
                .bind(id)
                .bind(secret)
                .bind(at)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(updated.rows_affected() > 0)
    }
}

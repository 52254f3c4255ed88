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
}

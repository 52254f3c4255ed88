//! PostgreSQL: the dry run's read-only duplicate check.

use super::*;

#[async_trait]
impl DryRunStore for PgStore {
    async fn find_duplicate(
        &self,
        app: AppId,
        partner: PartnerId,
        dedupe_key: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        // The same table and key the write path's conflict check uses.
        sqlx::query_scalar(
            "select event_id from dedupe_keys \
             where app_id = $1 and partner = $2 and dedupe_key = $3",
        )
        .bind(app.as_uuid())
        .bind(partner.as_str())
        .bind(dedupe_key)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)
    }
}

//! SQLite: the dry run's read-only duplicate check.

use super::*;

#[async_trait]
impl DryRunStore for SqliteStore {
    async fn find_duplicate(
        &self,
        app: AppId,
        partner: PartnerId,
        dedupe_key: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        // The same unique key the write path's conflict check uses.
        let id: Option<String> = sqlx::query_scalar(
            "select id from postback_events \
             where app_id = $1 and partner = $2 and dedupe_key = $3",
        )
        .bind(uuid_text(app.as_uuid()))
        .bind(partner.as_str())
        .bind(dedupe_key)
        .fetch_optional(&self.readers)
        .await
        .map_err(store_error)?;
        id.map(|id| Uuid::parse_str(&id).map_err(|_| store_error(decode_error("uuid", &id))))
            .transpose()
    }
}

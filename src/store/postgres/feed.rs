//! PostgreSQL: the pull feed, in the order the rows' transactions ran.

use super::reads::{attribution_record, ATTRIBUTION_COLUMNS};
use super::*;
use crate::store::feed::{FeedCursor, FeedEntry, FeedStore};

/// Binds: the app, the cursor's transaction id (as text) and row id, the limit.
///
/// `commit_tx` below the snapshot's xmin: every transaction with a smaller id has
/// ended, so the rows this returns are all the rows there will ever be up to its
/// last position; rows of transactions still running wait for a later page. The
/// row comparison is one range of the `(app_id, commit_tx, id)` index.
const FEED_SQL: &str = "select cast(commit_tx as text) as feed_tx, {columns} from attributions \
     where app_id = $1 and (commit_tx, id) > (cast(cast($2 as text) as xid8), $3) \
         and commit_tx < pg_snapshot_xmin(pg_current_snapshot()) \
     order by commit_tx, id limit $4";

#[async_trait]
impl FeedStore for PgStore {
    async fn attribution_feed(
        &self,
        app: AppId,
        after: FeedCursor,
        limit: u32,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let sql = FEED_SQL.replace("{columns}", ATTRIBUTION_COLUMNS);
        let rows = sqlx::query(&sql)
            .bind(app.as_uuid())
            .bind(after.position.to_string())
            .bind(after.id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let tx: String = row.try_get("feed_tx")?;
                let attribution = attribution_record(row)?;
                Ok(FeedEntry {
                    cursor: FeedCursor {
                        position: tx.parse().map_err(|_| decode_error("commit_tx", &tx))?,
                        id: attribution.id,
                    },
                    attribution,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }
}

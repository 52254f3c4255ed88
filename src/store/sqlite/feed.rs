//! SQLite: the pull feed, in the order of `feed_seq` (one writer: write order is
//! commit order, and a reader's snapshot holds every row up to the newest it sees).

use super::reads::{attribution_record, ATTRIBUTION_COLUMNS};
use super::*;
use crate::store::feed::{FeedCursor, FeedEntry, FeedStore};

#[async_trait]
impl FeedStore for SqliteStore {
    async fn attribution_feed(
        &self,
        app: AppId,
        after: FeedCursor,
        limit: u32,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        // feed_seq is unique, so the cursor's row id adds nothing here. A position
        // past i64 was never handed out: nothing follows it yet.
        let Ok(after_seq) = i64::try_from(after.position) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "select feed_seq, {ATTRIBUTION_COLUMNS} from attributions \
             where app_id = $1 and feed_seq > $2 order by feed_seq limit $3"
        );
        let rows = sqlx::query(&sql)
            .bind(uuid_text(app.as_uuid()))
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get("feed_seq")?;
                let attribution = attribution_record(row)?;
                Ok(FeedEntry {
                    cursor: FeedCursor {
                        position: u64::try_from(seq)
                            .map_err(|_| decode_error("feed_seq", &seq.to_string()))?,
                        id: attribution.id,
                    },
                    attribution,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }
}

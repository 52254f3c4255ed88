//! The pull feed's storage: an app's attributions in commit order, after a cursor
//! that stays valid for good (`GET /v1/apps/{id}/attributions/feed`). Columns:
//! `attributions.commit_tx` (PostgreSQL), `attributions.feed_seq` (SQLite),
//! migration 0013.

use async_trait::async_trait;
use uuid::Uuid;

use super::{AttributionRecord, StoreError};
use crate::domain::AppId;

/// A position in an app's feed: the last row a consumer has seen. PostgreSQL:
/// (id of the transaction that wrote the row, row id); SQLite: (the row's
/// `feed_seq`, row id), where the sequence alone orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct FeedCursor {
    pub position: u64,
    pub id: Uuid,
}

impl FeedCursor {
    /// Before every row.
    pub const START: FeedCursor = FeedCursor {
        position: 0,
        id: Uuid::nil(),
    };
}

/// One attribution of the feed with its own position.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEntry {
    pub cursor: FeedCursor,
    pub attribution: AttributionRecord,
}

/// The feed (`store/<backend>/feed.rs`).
#[async_trait]
pub trait FeedStore: Send + Sync + 'static {
    /// Up to `limit` attributions of `app` after `after`, in commit order. Stable:
    /// a row never appears behind a position this returned, so a consumer that
    /// resumes from the last entry's cursor sees every row exactly once. Rows of
    /// transactions still running may be held back until they end (PostgreSQL).
    async fn attribution_feed(
        &self,
        app: AppId,
        after: FeedCursor,
        limit: u32,
    ) -> Result<Vec<FeedEntry>, StoreError>;
}

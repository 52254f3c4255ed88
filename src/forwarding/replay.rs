//! Re-queueing a destination's messages (`destinations replay`, and
//! `POST /v1/apps/{id}/destinations/{dest}/replay`): they become pending and due
//! now, with their attempts reset and their `webhook-id` unchanged, so a receiver
//! that already has one recognises the copy.

use chrono::Utc;
use uuid::Uuid;

use crate::domain::AppId;
use crate::store::forwarding::ReplayFilter;
use crate::store::prelude::*;
use crate::store::StoreError;

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub app_id: AppId,
    pub destination_id: Uuid,
    pub requeued: u64,
    /// False when the destination is disabled: nothing is sent until it is enabled.
    pub enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Neither dead-only nor a start time: re-sending everything ever delivered is
    /// rarely meant, so it has to be asked for with a `since`.
    #[error("say which messages to re-queue: the dead ones, those since a time, or both")]
    Unbounded,
    #[error("no destination {0}")]
    UnknownDestination(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Re-queue what `filter` selects of `destination`'s messages; with `app`, the
/// destination must be that app's.
pub async fn replay(
    store: &dyn Store,
    app: Option<AppId>,
    destination: Uuid,
    filter: ReplayFilter,
) -> Result<Replayed, ReplayError> {
    if !filter.dead_only && filter.since.is_none() {
        return Err(ReplayError::Unbounded);
    }
    let record = store
        .get_destination(destination)
        .await?
        .filter(|d| app.is_none_or(|app| d.app_id == app))
        .ok_or(ReplayError::UnknownDestination(destination))?;
    let requeued = store
        .replay_messages(record.app_id, destination, filter, Utc::now())
        .await?;
    Ok(Replayed {
        app_id: record.app_id,
        destination_id: destination,
        requeued,
        enabled: record.enabled,
    })
}

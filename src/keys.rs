//! The in-memory table of API keys, so authenticating a postback reads no database.
//! It is reloaded every `keys.refresh_ms`, and when an unknown key arrives: a key just
//! created by the CLI works at once. Reloads are single-flight and one reload serves
//! every miss that arrived before it started, so a flood of random keys costs at most
//! one reload at a time, not one query per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::domain::{ApiKey, AppId, KeyHash, Tier};
use crate::store::{KeyRecord, Store, StoreError};

/// Who a valid key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub app_id: AppId,
    pub tier: Tier,
}

pub struct KeyCache {
    store: Arc<dyn Store>,
    keys: RwLock<HashMap<KeyHash, KeyRecord>>,
    /// Serialises reloads and remembers when the last successful one started.
    last_reload: Mutex<Option<Instant>>,
}

impl KeyCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            keys: RwLock::new(HashMap::new()),
            last_reload: Mutex::new(None),
        }
    }

    /// `Ok(None)` for a missing, unknown or expired key. `Err` only when the key is
    /// not cached and the database cannot be asked.
    pub async fn authenticate(
        &self,
        key: &ApiKey,
        now: DateTime<Utc>,
    ) -> Result<Option<Caller>, StoreError> {
        let hash = key.hash();
        if let Some(caller) = self.lookup(&hash, now) {
            return Ok(Some(caller));
        }
        self.reload_unless_started_after(Instant::now()).await?;
        Ok(self.lookup(&hash, now))
    }

    fn lookup(&self, hash: &KeyHash, now: DateTime<Utc>) -> Option<Caller> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let record = keys.get(hash)?;
        // The map hit is by hash; confirm in constant time all the same.
        let valid = record.hash.ct_eq(hash) && record.expires_at.is_none_or(|t| t > now);
        valid.then_some(Caller {
            app_id: record.app_id,
            tier: record.tier,
        })
    }

    /// Reload unless a reload that started after `instant` has already completed.
    async fn reload_unless_started_after(&self, instant: Instant) -> Result<(), StoreError> {
        let mut last = self.last_reload.lock().await;
        if last.is_some_and(|started| started > instant) {
            return Ok(());
        }
        self.reload_locked(&mut last).await
    }

    /// Reload from the database unless the last reload started less than `min_age` ago.
    pub async fn reload_if_older_than(&self, min_age: Duration) -> Result<(), StoreError> {
        let mut last = self.last_reload.lock().await;
        if last.is_some_and(|started| started.elapsed() < min_age) {
            return Ok(());
        }
        self.reload_locked(&mut last).await
    }

    async fn reload_locked(&self, last: &mut Option<Instant>) -> Result<(), StoreError> {
        let started = Instant::now();
        let records = self.store.active_keys(Utc::now()).await?;
        let table: HashMap<KeyHash, KeyRecord> = records.into_iter().map(|r| (r.hash, r)).collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = table;
        *last = Some(started);
        Ok(())
    }

    /// Reload every `every` until the token is cancelled; failures keep the old table.
    pub async fn refresh_loop(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.reload_if_older_than(every / 2).await {
                        tracing::warn!(error = %e, "could not reload API keys; keeping the previous table");
                    }
                }
            }
        }
    }
}

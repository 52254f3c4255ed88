//! The in-memory table of API keys, so authenticating a postback reads no database.
//! It is reloaded every `keys.refresh_ms`, and when an unknown key arrives: a key just
//! created by the CLI works at once. Unknown keys cannot make it reload at will: at
//! most one reload per `keys.miss_reload_interval_ms` is triggered by them (the
//! periodic reload covers the rest), a key found unknown is remembered as such for
//! `keys.miss_memory_ms`, and reloads are single-flight.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::KeysConfig;
use crate::domain::{ApiKey, AppId, KeyHash, Tier};
use crate::store::{KeyRecord, Store, StoreError};
use crate::telemetry;

/// Who a valid key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub app_id: AppId,
    pub tier: Tier,
}

/// How unknown keys are handled.
#[derive(Debug, Clone, Copy)]
pub struct MissPolicy {
    /// At most one reload per this interval is triggered by unknown keys.
    pub reload_interval: Duration,
    /// A key found unknown is not looked up again (no reload) for this long.
    pub memory: Duration,
}

impl MissPolicy {
    pub fn from_config(keys: &KeysConfig) -> Self {
        Self {
            reload_interval: Duration::from_millis(keys.miss_reload_interval_ms),
            memory: Duration::from_millis(keys.miss_memory_ms),
        }
    }
}

/// Unknown keys remembered at most; past that the memory starts over.
const MAX_REMEMBERED_MISSES: usize = 10_000;

pub struct KeyCache {
    store: Arc<dyn Store>,
    keys: RwLock<HashMap<KeyHash, KeyRecord>>,
    /// Serialises reloads and remembers when the last successful one started.
    last_reload: Mutex<Option<Instant>>,
    policy: MissPolicy,
    /// When an unknown key last claimed a reload.
    last_miss_reload: std::sync::Mutex<Option<Instant>>,
    /// Hashes of keys recently found unknown, with when.
    misses: std::sync::Mutex<HashMap<KeyHash, Instant>>,
}

impl KeyCache {
    pub fn new(store: Arc<dyn Store>, policy: MissPolicy) -> Self {
        Self {
            store,
            keys: RwLock::new(HashMap::new()),
            last_reload: Mutex::new(None),
            policy,
            last_miss_reload: std::sync::Mutex::new(None),
            misses: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// `Ok(None)` for a missing, unknown or expired key. `Err` only when the key is
    /// not cached, may reload, and the database cannot be asked.
    pub async fn authenticate(
        &self,
        key: &ApiKey,
        now: DateTime<Utc>,
    ) -> Result<Option<Caller>, StoreError> {
        let hash = key.hash();
        if let Some(caller) = self.lookup(&hash, now) {
            return Ok(Some(caller));
        }
        let arrived = Instant::now();
        if self.recently_missed(&hash, arrived) {
            self.remember_miss(hash, arrived);
            return Ok(None);
        }
        // Misses take turns with reloads: one that arrives while a reload runs waits
        // for it (the key may be in it) instead of being refused or reloading again.
        let mut last = self.last_reload.lock().await;
        let reloaded_since = last.is_some_and(|started| started > arrived);
        if !reloaded_since && self.claim_miss_reload(Instant::now()) {
            self.reload_locked(&mut last, "unknown_key").await?;
        }
        drop(last);
        let found = self.lookup(&hash, now);
        if found.is_none() {
            self.remember_miss(hash, arrived);
        }
        Ok(found)
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

    fn recently_missed(&self, hash: &KeyHash, at: Instant) -> bool {
        let misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        misses
            .get(hash)
            .is_some_and(|&seen| at < seen + self.policy.memory)
    }

    fn remember_miss(&self, hash: KeyHash, at: Instant) {
        let mut misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        if misses.len() >= MAX_REMEMBERED_MISSES {
            let memory = self.policy.memory;
            misses.retain(|_, &mut seen| at < seen + memory);
            if misses.len() >= MAX_REMEMBERED_MISSES {
                misses.clear();
            }
        }
        misses.insert(hash, at);
    }

    /// Whether an unknown key arriving `at` may reload the table: true for at most
    /// one caller per `reload_interval`.
    fn claim_miss_reload(&self, at: Instant) -> bool {
        let mut last = self
            .last_miss_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|claimed| at < claimed + self.policy.reload_interval) {
            return false;
        }
        *last = Some(at);
        true
    }

    /// Reload from the database unless the last reload started less than `min_age` ago.
    pub async fn reload_if_older_than(&self, min_age: Duration) -> Result<(), StoreError> {
        let mut last = self.last_reload.lock().await;
        if last.is_some_and(|started| started.elapsed() < min_age) {
            return Ok(());
        }
        self.reload_locked(&mut last, "periodic").await
    }

    async fn reload_locked(
        &self,
        last: &mut Option<Instant>,
        trigger: &'static str,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        telemetry::keys_reloaded(trigger);
        let records = self.store.active_keys(Utc::now()).await?;
        let table: HashMap<KeyHash, KeyRecord> = records.into_iter().map(|r| (r.hash, r)).collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = table;
        *last = Some(started);
        Ok(())
    }

    /// Reload every `every`, and at once when the store signals a change (a key
    /// rotated or a tier changed by the CLI or another node: PostgreSQL's
    /// LISTEN/NOTIFY), until the token is cancelled; failures keep the old table.
    pub async fn refresh_loop(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = self.store.key_changes();
        loop {
            let changed = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.reload_if_older_than(every / 2).await,
                signal = changed => {
                    if signal.is_none() {
                        changes = None; // the listener gave up; periodic reloads go on
                        continue;
                    }
                    let mut last = self.last_reload.lock().await;
                    self.reload_locked(&mut last, "notify").await
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not reload API keys; keeping the previous table");
            }
        }
    }
}

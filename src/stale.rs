//! Stale detection: a connected partner becomes `stale` when nothing was accepted from
//! it for much longer than its usual gap, learned from its own recent history.
//!
//! The rule (`[stale]`): stale when `now − last accepted > max(factor × usual gap,
//! floor)`, where the usual gap is the `gap_percentile`-th percentile (nearest rank)
//! of the gaps between its consecutive accepted postbacks (installs and in-app events
//! alike) received in the last `history_days`; with fewer than `min_samples` of them
//! the floor alone applies. `stale_since` is when that allowance ran out.
//!
//! Everything is computed when read, from stored times; nothing is a flag that a
//! timer flips, so every node of a fleet answers alike and the next accepted postback
//! makes the partner `connected` again at once. The learned gap of a partner is
//! reused for `gap_cache_seconds` (it moves slowly); the newest accepted postback is
//! read every time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};

use crate::domain::{AppId, ConnectionStatus, PartnerId};
use crate::store::{GapStats, LastAccepted, Store, StoreError};

/// The rule's knobs, from `[stale]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StaleRule {
    pub floor: Duration,
    pub factor: f64,
    pub history: Duration,
    pub percentile: u8,
    pub min_samples: i64,
}

impl Default for StaleRule {
    fn default() -> Self {
        Self {
            floor: Duration::minutes(60),
            factor: 3.0,
            history: Duration::days(7),
            percentile: 99,
            min_samples: 10,
        }
    }
}

/// A partner's status as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    NotConnected,
    Connected,
    Stale,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::NotConnected => "not_connected",
            Health::Connected => "connected",
            Health::Stale => "stale",
        }
    }
}

/// What the status page, the partners API and `/metrics` say about one partner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartnerHealth {
    pub health: Health,
    pub last_accepted_at: Option<DateTime<Utc>>,
    /// The learned usual gap; `None` with too little history.
    pub expected_gap: Option<Duration>,
    /// How long the partner may stay quiet: max(factor × usual gap, floor).
    pub stale_after: Duration,
    /// When the allowance ran out, while stale.
    pub stale_since: Option<DateTime<Utc>>,
}

/// Apply the rule to one partner.
pub fn judge(
    rule: &StaleRule,
    status: ConnectionStatus,
    last_accepted_at: Option<DateTime<Utc>>,
    gaps: Option<GapStats>,
    now: DateTime<Utc>,
) -> PartnerHealth {
    let expected_gap = gaps
        .filter(|g| g.samples >= rule.min_samples)
        .and_then(|g| g.gap_seconds)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::milliseconds((s * 1000.0).round() as i64));
    let stale_after = expected_gap
        .map(|g| Duration::milliseconds((g.num_milliseconds() as f64 * rule.factor) as i64))
        .map_or(rule.floor, |allowed| allowed.max(rule.floor));
    let connected = status == ConnectionStatus::Connected;
    let ran_out = last_accepted_at.map(|t| t + stale_after);
    let stale = connected && ran_out.is_some_and(|t| now > t);
    PartnerHealth {
        health: match (connected, stale) {
            (false, _) => Health::NotConnected,
            (true, false) => Health::Connected,
            (true, true) => Health::Stale,
        },
        last_accepted_at,
        expected_gap,
        stale_after,
        stale_since: if stale { ran_out } else { None },
    }
}

/// Reads and judges partners; holds the learned gaps for `cache_for`.
pub struct HealthView {
    rule: StaleRule,
    cache_for: StdDuration,
    gaps: Mutex<HashMap<(AppId, PartnerId), (Instant, GapStats)>>,
}

impl HealthView {
    pub fn new(rule: StaleRule, cache_for: StdDuration) -> Self {
        Self {
            rule,
            cache_for,
            gaps: Mutex::new(HashMap::new()),
        }
    }

    pub fn rule(&self) -> &StaleRule {
        &self.rule
    }

    /// The partners of `app` that were ever heard from (absent: not connected).
    pub async fn app(
        &self,
        store: &dyn Store,
        app: AppId,
        now: DateTime<Utc>,
    ) -> Result<HashMap<PartnerId, PartnerHealth>, StoreError> {
        let rows = store.last_accepted(Some(app)).await?;
        let mut out = HashMap::new();
        for row in rows {
            let health = self.judge_row(store, &row, now).await?;
            out.insert(row.partner, health);
        }
        Ok(out)
    }

    /// Every app's partners that were ever heard from, for `/metrics`.
    pub async fn all(
        &self,
        store: &dyn Store,
        now: DateTime<Utc>,
    ) -> Result<Vec<(AppId, PartnerId, PartnerHealth)>, StoreError> {
        let rows = store.last_accepted(None).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let health = self.judge_row(store, &row, now).await?;
            out.push((row.app_id, row.partner, health));
        }
        Ok(out)
    }

    async fn judge_row(
        &self,
        store: &dyn Store,
        row: &LastAccepted,
        now: DateTime<Utc>,
    ) -> Result<PartnerHealth, StoreError> {
        // A partner never connected needs no history.
        let gaps = if row.status == ConnectionStatus::Connected {
            Some(self.gaps(store, row.app_id, row.partner, now).await?)
        } else {
            None
        };
        Ok(judge(
            &self.rule,
            row.status,
            row.last_accepted_at,
            gaps,
            now,
        ))
    }

    async fn gaps(
        &self,
        store: &dyn Store,
        app: AppId,
        partner: PartnerId,
        now: DateTime<Utc>,
    ) -> Result<GapStats, StoreError> {
        let key = (app, partner);
        let cached = self
            .gaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|(at, _)| at.elapsed() < self.cache_for)
            .map(|(_, g)| *g);
        if let Some(g) = cached {
            return Ok(g);
        }
        let g = store
            .accepted_gaps(
                app,
                partner,
                now - self.rule.history,
                now,
                self.rule.percentile,
            )
            .await?;
        if !self.cache_for.is_zero() {
            let mut gaps = self.gaps.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded by the (app, partner) pairs there are; drop the expired first.
            gaps.retain(|_, (at, _)| at.elapsed() < self.cache_for);
            gaps.insert(key, (Instant::now(), g));
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + Duration::minutes(minutes)
    }

    fn gaps(samples: i64, minutes: f64) -> Option<GapStats> {
        Some(GapStats {
            samples,
            gap_seconds: Some(minutes * 60.0),
        })
    }

    #[test]
    fn too_little_history_leaves_the_floor_alone() {
        let rule = StaleRule::default();
        let last = Some(at(0));
        let h = judge(
            &rule,
            ConnectionStatus::Connected,
            last,
            gaps(9, 1.0),
            at(60),
        );
        assert_eq!(
            h.health,
            Health::Connected,
            "exactly the floor is not past it"
        );
        assert_eq!(h.expected_gap, None);
        assert_eq!(h.stale_after, Duration::minutes(60));
        let h = judge(
            &rule,
            ConnectionStatus::Connected,
            last,
            gaps(9, 1.0),
            at(61),
        );
        assert_eq!(h.health, Health::Stale);
        assert_eq!(h.stale_since, Some(at(60)));
        let h = judge(&rule, ConnectionStatus::Connected, last, None, at(61));
        assert_eq!(h.health, Health::Stale);
    }

    #[test]
    fn a_learned_gap_longer_than_the_floor_stretches_the_allowance() {
        let rule = StaleRule::default();
        let last = Some(at(0));
        // A partner that sends every two hours may be quiet for six.
        let h = judge(
            &rule,
            ConnectionStatus::Connected,
            last,
            gaps(40, 120.0),
            at(359),
        );
        assert_eq!(h.health, Health::Connected);
        assert_eq!(h.expected_gap, Some(Duration::minutes(120)));
        assert_eq!(h.stale_after, Duration::minutes(360));
        let h = judge(
            &rule,
            ConnectionStatus::Connected,
            last,
            gaps(40, 120.0),
            at(361),
        );
        assert_eq!((h.health, h.stale_since), (Health::Stale, Some(at(360))));
        // A busy partner: its short gap never goes below the floor.
        let h = judge(
            &rule,
            ConnectionStatus::Connected,
            last,
            gaps(5000, 0.5),
            at(59),
        );
        assert_eq!(h.health, Health::Connected);
        assert_eq!(h.stale_after, Duration::minutes(60));
    }

    #[test]
    fn only_connected_partners_go_stale() {
        let rule = StaleRule::default();
        let h = judge(
            &rule,
            ConnectionStatus::NotConnected,
            Some(at(0)),
            None,
            at(600),
        );
        assert_eq!((h.health, h.stale_since), (Health::NotConnected, None));
        let h = judge(&rule, ConnectionStatus::NotConnected, None, None, at(600));
        assert_eq!(h.health, Health::NotConnected);
    }
}

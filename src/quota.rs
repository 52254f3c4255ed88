//! The hourly postback quota of `standard` apps, counted in memory per clock hour.
//! Counts not yet written are kept as pending; the writer takes them into its next
//! batch, and a starting server reloads the current hour's counts.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::domain::{AppId, Tier};
use crate::store::QuotaUsage;

/// What the `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds when the current window ends.
    pub reset: i64,
}

impl RateInfo {
    /// Seconds until the window resets, at least 1.
    pub fn retry_after(&self, now: DateTime<Utc>) -> u64 {
        (self.reset - now.timestamp()).max(1) as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaDecision {
    Unlimited,
    Allowed(RateInfo),
    Exceeded(RateInfo),
}

pub struct Quota {
    standard_per_hour: u32,
    inner: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// app → (hour number since the epoch, requests counted in it)
    windows: HashMap<AppId, (i64, u32)>,
    /// (app, hour) → requests counted but not yet persisted
    pending: HashMap<(AppId, i64), i64>,
}

fn window_start(hour: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(hour * 3600, 0).unwrap_or_default()
}

/// The start of the clock hour (UTC) that `now` falls in.
pub fn current_window(now: DateTime<Utc>) -> DateTime<Utc> {
    window_start(now.timestamp().div_euclid(3600))
}

impl Quota {
    pub fn new(standard_per_hour: u32) -> Self {
        Self {
            standard_per_hour,
            inner: Mutex::new(Counts::default()),
        }
    }

    /// Start from the counts already stored for the current hour.
    pub fn seed(&self, usage: &[QuotaUsage]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for u in usage {
            let hour = u.window_start.timestamp().div_euclid(3600);
            let count = u32::try_from(u.requests.max(0)).unwrap_or(u32::MAX);
            inner.windows.insert(u.app_id, (hour, count));
        }
    }

    /// Counts not yet persisted; they are forgotten here (see [`Quota::restore`]).
    pub fn take_pending(&self) -> Vec<QuotaUsage> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .pending
            .drain()
            .map(|((app_id, hour), requests)| QuotaUsage {
                app_id,
                window_start: window_start(hour),
                requests,
            })
            .collect()
    }

    /// Put back counts whose batch failed, to go with a later one.
    pub fn restore(&self, usage: Vec<QuotaUsage>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for u in usage {
            let hour = u.window_start.timestamp().div_euclid(3600);
            *inner.pending.entry((u.app_id, hour)).or_default() += u.requests;
        }
    }

    /// Count one request of `app` at `now` and say whether it may proceed.
    pub fn check(&self, app: AppId, tier: Tier, now: DateTime<Utc>) -> QuotaDecision {
        if tier == Tier::Enterprise {
            return QuotaDecision::Unlimited;
        }
        let hour = now.timestamp().div_euclid(3600);
        let reset = (hour + 1) * 3600;
        let limit = self.standard_per_hour;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = inner.windows.entry(app).or_insert((hour, 0));
        if entry.0 != hour {
            *entry = (hour, 0);
        }
        if entry.1 >= limit {
            return QuotaDecision::Exceeded(RateInfo {
                limit,
                remaining: 0,
                reset,
            });
        }
        entry.1 += 1;
        let remaining = limit - entry.1;
        *inner.pending.entry((app, hour)).or_default() += 1;
        QuotaDecision::Allowed(RateInfo {
            limit,
            remaining,
            reset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn standard_app_gets_limit_requests_per_clock_hour_then_a_new_window() {
        let q = Quota::new(3);
        let app = AppId::new();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 59, 0).unwrap();
        for remaining in [2, 1, 0] {
            match q.check(app, Tier::Standard, t) {
                QuotaDecision::Allowed(r) => assert_eq!(r.remaining, remaining),
                other => panic!("expected allowed, got {other:?}"),
            }
        }
        let QuotaDecision::Exceeded(info) = q.check(app, Tier::Standard, t) else {
            panic!("4th request must exceed");
        };
        assert_eq!(
            info.reset,
            Utc.with_ymd_and_hms(2026, 1, 1, 11, 0, 0)
                .unwrap()
                .timestamp()
        );
        assert_eq!(info.retry_after(t), 60);
        let next_hour = t + chrono::Duration::minutes(1);
        assert!(matches!(
            q.check(app, Tier::Standard, next_hour),
            QuotaDecision::Allowed(_)
        ));
    }

    #[test]
    fn counts_are_pending_until_taken_restorable_and_seeded_on_start() {
        let q = Quota::new(5);
        let app = AppId::new();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 10, 30, 0).unwrap();
        q.check(app, Tier::Standard, now);
        q.check(app, Tier::Standard, now);
        let pending = q.take_pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].requests, 2);
        assert_eq!(pending[0].window_start, current_window(now));
        assert!(q.take_pending().is_empty(), "taken once");
        q.restore(pending.clone());
        assert_eq!(q.take_pending(), pending, "a failed batch gives them back");

        let restarted = Quota::new(5);
        restarted.seed(&[QuotaUsage {
            app_id: app,
            window_start: current_window(now),
            requests: 4,
        }]);
        assert!(
            matches!(restarted.check(app, Tier::Standard, now), QuotaDecision::Allowed(r) if r.remaining == 0)
        );
        assert!(matches!(
            restarted.check(app, Tier::Standard, now),
            QuotaDecision::Exceeded(_)
        ));
    }

    #[test]
    fn enterprise_is_unlimited_and_apps_are_counted_apart() {
        let q = Quota::new(1);
        let now = Utc::now();
        let (a, b) = (AppId::new(), AppId::new());
        for _ in 0..10 {
            assert_eq!(q.check(a, Tier::Enterprise, now), QuotaDecision::Unlimited);
        }
        assert!(matches!(
            q.check(a, Tier::Standard, now),
            QuotaDecision::Allowed(_)
        ));
        assert!(matches!(
            q.check(b, Tier::Standard, now),
            QuotaDecision::Allowed(_)
        ));
        assert!(matches!(
            q.check(a, Tier::Standard, now),
            QuotaDecision::Exceeded(_)
        ));
    }
}

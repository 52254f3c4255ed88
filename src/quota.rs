//! The hourly postback quota of `standard` apps, counted in memory per clock hour.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::domain::{AppId, Tier};

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
    /// app → (hour number since the epoch, requests counted in it)
    windows: Mutex<HashMap<AppId, (i64, u32)>>,
}

impl Quota {
    pub fn new(standard_per_hour: u32) -> Self {
        Self {
            standard_per_hour,
            windows: Mutex::new(HashMap::new()),
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
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let entry = windows.entry(app).or_insert((hour, 0));
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
        QuotaDecision::Allowed(RateInfo {
            limit,
            remaining: limit - entry.1,
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

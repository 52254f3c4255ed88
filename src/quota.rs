//! The two hourly limits of `standard` apps (SPEC §2), per clock hour (UTC):
//! - the install quota (`quota.standard_per_hour`, 100): attributed installs stored.
//!   The database decides it, in the batch that would store them (exact across
//!   processes); this module only remembers the last counts it saw, for the
//!   `X-RateLimit-*` headers of answers that store no install;
//! - the request limit (`quota.standard_requests_per_hour`, 10,000): every
//!   authenticated postback request, counted here in memory per process, to protect
//!   the server. Counts not yet written are pending; the writer takes them into its
//!   next batch, and a starting server reloads the current hour's counts.

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
    installs_per_hour: u32,
    requests_per_hour: u32,
    inner: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// app → (hour number since the epoch, requests counted in it)
    requests: HashMap<AppId, (i64, u32)>,
    /// app → (hour number, attributed installs stored, as last reported)
    installs: HashMap<AppId, (i64, u32)>,
    /// (app, hour) → requests counted but not yet persisted
    pending: HashMap<(AppId, i64), i64>,
    /// app → the last hour a 429 of it was logged
    warned: HashMap<AppId, i64>,
}

fn window_start(hour: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(hour * 3600, 0).unwrap_or_default()
}

fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600)
}

/// The start of the clock hour (UTC) that `now` falls in.
pub fn current_window(now: DateTime<Utc>) -> DateTime<Utc> {
    window_start(hour_of(now))
}

fn saturating_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl Quota {
    pub fn new(installs_per_hour: u32, requests_per_hour: u32) -> Self {
        Self {
            installs_per_hour,
            requests_per_hour,
            inner: Mutex::new(Counts::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The install quota of an app of this tier; `None` for no limit.
    pub fn install_limit(&self, tier: Tier) -> Option<u32> {
        (tier == Tier::Standard).then_some(self.installs_per_hour)
    }

    /// Start from the counts already stored for the current hour.
    pub fn seed(&self, usage: &[QuotaUsage]) {
        let mut inner = self.lock();
        for u in usage {
            let hour = hour_of(u.window_start);
            inner
                .requests
                .insert(u.app_id, (hour, saturating_u32(u.requests)));
            inner
                .installs
                .insert(u.app_id, (hour, saturating_u32(u.installs)));
        }
    }

    /// Install counts a committed batch reported; the newest hour and, within an
    /// hour, the highest count wins (batches of other processes add to it too).
    pub fn note_installs(&self, usage: &[QuotaUsage]) {
        let mut inner = self.lock();
        for u in usage {
            let seen = (hour_of(u.window_start), saturating_u32(u.installs));
            let entry = inner.installs.entry(u.app_id).or_insert(seen);
            *entry = (*entry).max(seen);
        }
    }

    /// The install quota's state for the headers, from the last counts seen.
    pub fn install_info(&self, app: AppId, tier: Tier, now: DateTime<Utc>) -> Option<RateInfo> {
        let limit = self.install_limit(tier)?;
        let hour = hour_of(now);
        let used = match self.lock().installs.get(&app) {
            Some(&(h, used)) if h == hour => used,
            _ => 0,
        };
        Some(RateInfo {
            limit,
            remaining: limit.saturating_sub(used),
            reset: (hour + 1) * 3600,
        })
    }

    /// True for the first 429 of `app` in the hour of `now` (to log it once).
    pub fn first_rejection_this_hour(&self, app: AppId, now: DateTime<Utc>) -> bool {
        let hour = hour_of(now);
        self.lock().warned.insert(app, hour) != Some(hour)
    }

    /// Counts not yet persisted; they are forgotten here (see [`Quota::restore`]).
    pub fn take_pending(&self) -> Vec<QuotaUsage> {
        self.lock()
            .pending
            .drain()
            .map(|((app_id, hour), requests)| QuotaUsage {
                app_id,
                window_start: window_start(hour),
                requests,
                installs: 0,
            })
            .collect()
    }

    /// Put back counts whose batch failed, to go with a later one.
    pub fn restore(&self, usage: Vec<QuotaUsage>) {
        let mut inner = self.lock();
        for u in usage {
            *inner
                .pending
                .entry((u.app_id, hour_of(u.window_start)))
                .or_default() += u.requests;
        }
    }

    /// Count one request of `app` at `now` against the request limit and say
    /// whether it may proceed.
    pub fn check_request(&self, app: AppId, tier: Tier, now: DateTime<Utc>) -> QuotaDecision {
        if tier == Tier::Enterprise {
            return QuotaDecision::Unlimited;
        }
        let hour = hour_of(now);
        let reset = (hour + 1) * 3600;
        let limit = self.requests_per_hour;
        let mut inner = self.lock();
        let entry = inner.requests.entry(app).or_insert((hour, 0));
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
        let q = Quota::new(100, 3);
        let app = AppId::new();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 59, 0).unwrap();
        for remaining in [2, 1, 0] {
            match q.check_request(app, Tier::Standard, t) {
                QuotaDecision::Allowed(r) => assert_eq!(r.remaining, remaining),
                other => panic!("expected allowed, got {other:?}"),
            }
        }
        let QuotaDecision::Exceeded(info) = q.check_request(app, Tier::Standard, t) else {
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
            q.check_request(app, Tier::Standard, next_hour),
            QuotaDecision::Allowed(_)
        ));
    }

    #[test]
    fn counts_are_pending_until_taken_restorable_and_seeded_on_start() {
        let q = Quota::new(100, 5);
        let app = AppId::new();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 10, 30, 0).unwrap();
        q.check_request(app, Tier::Standard, now);
        q.check_request(app, Tier::Standard, now);
        let pending = q.take_pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].requests, 2);
        assert_eq!(pending[0].window_start, current_window(now));
        assert!(q.take_pending().is_empty(), "taken once");
        q.restore(pending.clone());
        assert_eq!(q.take_pending(), pending, "a failed batch gives them back");

        let restarted = Quota::new(100, 5);
        restarted.seed(&[QuotaUsage {
            app_id: app,
            window_start: current_window(now),
            requests: 4,
            installs: 60,
        }]);
        assert!(
            matches!(restarted.check_request(app, Tier::Standard, now), QuotaDecision::Allowed(r) if r.remaining == 0)
        );
        assert!(matches!(
            restarted.check_request(app, Tier::Standard, now),
            QuotaDecision::Exceeded(_)
        ));
        assert_eq!(
            restarted
                .install_info(app, Tier::Standard, now)
                .map(|r| r.remaining),
            Some(40),
            "the install count is seeded too"
        );
    }

    #[test]
    fn enterprise_is_unlimited_and_apps_are_counted_apart() {
        let q = Quota::new(100, 1);
        let now = Utc::now();
        let (a, b) = (AppId::new(), AppId::new());
        for _ in 0..10 {
            assert_eq!(
                q.check_request(a, Tier::Enterprise, now),
                QuotaDecision::Unlimited
            );
        }
        assert_eq!(q.install_info(a, Tier::Enterprise, now), None);
        assert_eq!(q.install_limit(Tier::Enterprise), None);
        assert!(matches!(
            q.check_request(a, Tier::Standard, now),
            QuotaDecision::Allowed(_)
        ));
        assert!(matches!(
            q.check_request(b, Tier::Standard, now),
            QuotaDecision::Allowed(_)
        ));
        assert!(matches!(
            q.check_request(a, Tier::Standard, now),
            QuotaDecision::Exceeded(_)
        ));
    }

    #[test]
    fn install_counts_follow_the_newest_report_of_the_hour() {
        let q = Quota::new(100, 10_000);
        let app = AppId::new();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 10, 30, 0).unwrap();
        let report = |installs| QuotaUsage {
            app_id: app,
            window_start: current_window(now),
            requests: 0,
            installs,
        };
        q.note_installs(&[report(30)]);
        q.note_installs(&[report(20)]);
        let info = q.install_info(app, Tier::Standard, now).unwrap();
        assert_eq!(
            (info.limit, info.remaining),
            (100, 70),
            "a late report does not lower it"
        );
        let next_hour = now + chrono::Duration::hours(1);
        assert_eq!(
            q.install_info(app, Tier::Standard, next_hour)
                .map(|r| r.remaining),
            Some(100)
        );
    }
}

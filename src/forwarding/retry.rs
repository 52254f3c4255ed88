//! When a failed attempt is tried again: exponential backoff with equal jitter
//! from `forwarding.retry_initial_ms`, capped at `forwarding.retry_max_ms`, and
//! never sooner than the receiver's `Retry-After` (429 and 503).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;

/// How an attempt ended, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt (5xx, 408, 429, timeouts, connection errors).
    Retry,
    /// Never worth another attempt (other 4xx, a redirect, a refused address).
    Dead,
}

/// What an HTTP status means for the message: 2xx delivered; 5xx, 408 and 429
/// retried; anything else (other 4xx, and 3xx since redirects are not followed) dead.
pub fn verdict_for_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Dead,
    }
}

/// The delay before the attempt after `attempts` failed ones: the step
/// `initial · 2^(attempts−1)` capped at `max`, of which a random half is added
/// to the other half (equal jitter: retries of many messages spread out, and none
/// comes sooner than half its step).
pub fn backoff(attempts: i32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let step = initial.saturating_mul(1u32 << exponent).min(max);
    let half = step / 2;
    let jitter_ms = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}

/// `Retry-After` as seconds or an HTTP date, as a delay from `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_delivered_retry_or_dead() {
        for (status, verdict) in [
            (200, Verdict::Delivered),
            (204, Verdict::Delivered),
            (301, Verdict::Dead),
            (400, Verdict::Dead),
            (404, Verdict::Dead),
            (408, Verdict::Retry),
            (410, Verdict::Dead),
            (429, Verdict::Retry),
            (500, Verdict::Retry),
            (503, Verdict::Retry),
        ] {
            assert_eq!(verdict_for_status(status), verdict, "{status}");
        }
    }

    #[test]
    fn backoff_doubles_within_its_jitter_and_stops_at_the_cap() {
        let initial = Duration::from_millis(1000);
        let max = Duration::from_millis(600_000);
        for attempts in 1..=40 {
            let step = (initial * 2u32.pow((attempts - 1).min(20) as u32)).min(max);
            let delay = backoff(attempts, initial, max);
            assert!(
                delay >= step / 2 && delay <= step,
                "attempt {attempts}: {delay:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

//! Admin credentials: `Authorization: Bearer $ADMIN_TOKEN` for the JSON API, HTTP
//! Basic with the token as password for the page. Compared in constant time; with no
//! token configured the routes are disabled (403), never open. Failed logins are
//! throttled per client address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::error::AppError;
use super::AppState;

const DISABLED: &str = "admin routes are disabled: set ADMIN_TOKEN to enable them";

/// Compare two secrets in constant time, whatever their lengths.
fn same_secret(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// Failed admin logins per client address: past the limit within a minute, every
/// login from that address (right or wrong) gets 429 until the minute is over.
pub struct LoginThrottle {
    limit: u32,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// The throttle's window.
const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past that the stalest is forgotten.
const MAX_TRACKED: usize = 10_000;

impl LoginThrottle {
    /// At most `limit` failed logins per client address and minute.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// IPv4 addresses one by one; IPv6 by /64, which one client usually holds whole.
    fn key(peer: IpAddr) -> IpAddr {
        match peer {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
            v4 => v4,
        }
    }

    /// `Err(seconds to wait)` while `peer` is over the limit.
    fn check(&self, peer: IpAddr, now: Instant) -> Result<(), u64> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&Self::key(peer)) {
            Some(f) if f.count >= self.limit && now < f.since + LOGIN_WINDOW => {
                Err((f.since + LOGIN_WINDOW - now).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    fn failed(&self, peer: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let key = Self::key(peer);
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&key) {
            failures.retain(|_, f| now < f.since + LOGIN_WINDOW);
            if failures.len() >= MAX_TRACKED {
                let stalest = failures
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(k, _)| *k);
                if let Some(stalest) = stalest {
                    failures.remove(&stalest);
                }
            }
        }
        let entry = failures.entry(key).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now >= entry.since + LOGIN_WINDOW {
            *entry = Failures {
                since: now,
                count: 0,
            };
        }
        entry.count += 1;
    }

    fn succeeded(&self, peer: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&Self::key(peer));
    }
}

/// The client's address, as the accept loop recorded it.
fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// A login attempt: refused while its address is throttled, counted when wrong.
/// `presented` is `None` when no credentials came at all (a browser's first request).
fn attempt(
    state: &AppState,
    parts: &Parts,
    presented: Option<bool>,
    wrong: AppError,
) -> Result<(), AppError> {
    let peer = peer(parts);
    let now = Instant::now();
    if presented.is_none() {
        // No credentials: not a login, so not refused for earlier failures either.
        return Err(wrong);
    }
    if let Some(peer) = peer {
        state
            .login_throttle
            .check(peer, now)
            .map_err(|retry_after| AppError::LoginThrottled { retry_after })?;
    }
    match (presented, peer) {
        (Some(true), Some(peer)) => {
            state.login_throttle.succeeded(peer);
            Ok(())
        }
        (Some(true), None) => Ok(()),
        (Some(false), Some(peer)) => {
            state.login_throttle.failed(peer, now);
            Err(wrong)
        }
        (Some(false), None) | (None, _) => Err(wrong),
    }
}

/// Proof that the request carried the admin bearer token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let expected = state.admin_token.expose();
        if expected.is_empty() {
            return Err(AppError::Forbidden(DISABLED));
        }
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let (presented, wrong) = match given {
            Some(token) => (
                Some(same_secret(token, expected)),
                AppError::AdminUnauthorized("invalid admin token"),
            ),
            None => (
                None,
                AppError::AdminUnauthorized(
                    "missing admin token: send Authorization: Bearer <ADMIN_TOKEN>",
                ),
            ),
        };
        attempt(state, parts, presented, wrong).map(|()| Admin)
    }
}

/// Proof that a browser logged in with HTTP Basic (any user, ADMIN_TOKEN as password).
pub struct PageLogin;

/// A 401 that makes browsers show their login prompt.
pub struct LoginRequired(AppError);

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        if response.status() == axum::http::StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"postback-gateway\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

impl FromRequestParts<AppState> for PageLogin {
    type Rejection = LoginRequired;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, LoginRequired> {
        let expected = state.admin_token.expose();
        if expected.is_empty() {
            return Err(LoginRequired(AppError::Forbidden(DISABLED)));
        }
        let authorization = parts.headers.get(header::AUTHORIZATION);
        let password = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .and_then(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()
            })
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, p)| p.to_owned()));
        let presented = match password {
            Some(p) => Some(same_secret(&p, expected)),
            // Credentials of another kind, or unreadable ones, are a wrong login too.
            None => authorization.map(|_| false),
        };
        let wrong = AppError::AdminUnauthorized(
            "log in with any user name and ADMIN_TOKEN as the password",
        );
        attempt(state, parts, presented, wrong)
            .map(|()| PageLogin)
            .map_err(LoginRequired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_are_throttled_per_address_for_a_minute() {
        let throttle = LoginThrottle::new(3);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.check(a, t0), Ok(()));
            throttle.failed(a, t0);
        }
        assert_eq!(throttle.check(a, t0), Err(60));
        assert_eq!(throttle.check(b, t0), Ok(()), "another address");
        let later = t0 + Duration::from_secs(45);
        assert_eq!(throttle.check(a, later), Err(15));
        assert_eq!(throttle.check(a, t0 + LOGIN_WINDOW), Ok(()), "a minute on");
        throttle.failed(a, t0 + LOGIN_WINDOW);
        assert_eq!(throttle.check(a, t0 + LOGIN_WINDOW), Ok(()), "a new window");
        // One IPv6 client holds a whole /64.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        for _ in 0..3 {
            throttle.failed(v6a, t0);
        }
        assert!(throttle.check(v6b, t0).is_err());
        throttle.succeeded(v6b);
        assert_eq!(throttle.check(v6a, t0), Ok(()), "a success clears it");
    }

    #[test]
    fn the_table_of_failures_stays_bounded() {
        let throttle = LoginThrottle::new(1);
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            throttle.failed(IpAddr::V4(i.into()), now);
        }
        assert_eq!(throttle.failures.lock().unwrap().len(), MAX_TRACKED);
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(same_secret("token", "token"));
        assert!(!same_secret("token", "token2"));
        assert!(!same_secret("", "token"));
    }
}

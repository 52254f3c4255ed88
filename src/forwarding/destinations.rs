//! Destination management, shared by the CLI and the admin API: checking a URL
//! (http(s) only, and the SSRF rule), the signing secret, and the use cases.
//!
//! What the operations mean:
//! - `disable`: batches that read the destination from then on write it no outbox
//!   rows; its pending messages wait, and `enable` sends them.
//! - `remove`: deletes the destination and every message of it (pending, dead,
//!   delivered): nothing is sent to it any more and nothing of it can be replayed.
//! - `rotate-secret`: every attempt from then on (retries and replays included) is
//!   signed with the new secret only.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use url::{Host, Url};
use utoipa::ToSchema;
use uuid::Uuid;

use super::ssrf::is_forbidden_ip;
use crate::config::Secret;
use crate::domain::AppId;
use crate::store::forwarding::{
    DestinationRecord, DestinationWhat, DisabledReason, NewDestination,
};
use crate::store::{Store, StoreError};

/// Longest destination URL accepted, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// Random bytes of a signing secret (Standard Webhooks: 24 to 64).
const SECRET_BYTES: usize = 32;
/// How long the add-time check waits for DNS.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// The setting that turns the SSRF rule off, as named in errors and docs.
pub const ALLOW_PRIVATE_SETTING: &str =
    "forwarding.allow_private_targets (PBG_FORWARDING__ALLOW_PRIVATE_TARGETS=true)";

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("no app with id {0}")]
    UnknownApp(AppId),
    #[error("no destination with id {0}")]
    UnknownDestination(Uuid),
    #[error("invalid destination URL: {0}")]
    InvalidUrl(String),
    /// The SSRF rule: says which host, why, and the setting that allows it.
    #[error(
        "destination URL refused: {0}. Loopback, link-local and private addresses are \
         refused (SSRF) unless {ALLOW_PRIVATE_SETTING} is set"
    )]
    PrivateTarget(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A destination just created, with its secret: shown this once.
pub struct CreatedDestination {
    pub record: DestinationRecord,
    pub secret: Secret,
}

/// A new Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> Secret {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    Secret::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The URL as it will be stored (normalised by the WHATWG rules: lowercase scheme
/// and host, IPv4 in dotted form), or what is wrong with it. Does not look at
/// where it points: see [`check_target`].
pub fn parse_url(raw: &str) -> Result<Url, DestinationError> {
    let invalid = |why: &str| DestinationError::InvalidUrl(why.to_owned());
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(invalid(&format!("longer than {MAX_URL_CHARS} characters")));
    }
    // The URL parser would drop them silently; the API's schema does not allow them.
    if raw.trim() != raw {
        return Err(invalid("it starts or ends with white space"));
    }
    let url =
        Url::parse(raw).map_err(|e| invalid(&format!("not an absolute http(s) URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(&format!(
            "the scheme must be http or https, not {}",
            url.scheme()
        )));
    }
    match url.host() {
        None => return Err(invalid("it has no host")),
        Some(Host::Domain("")) => return Err(invalid("it has no host")),
        Some(_) => {}
    }
    // The URL is shown by every listing: a password in it would leak there.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "it must not carry a user name or password (the URL is shown in listings; \
             receivers authenticate messages by their signature)",
        ));
    }
    Ok(url)
}

/// The SSRF rule at add time: an IP literal, `localhost` (and `*.localhost`), or a
/// name that resolves now to a loopback, link-local or private address is refused
/// unless `allow_private`. A name that does not resolve (yet) is accepted: the
/// dispatcher checks the addresses again at each delivery, after resolution.
pub async fn check_target(url: &Url, allow_private: bool) -> Result<(), DestinationError> {
    if allow_private {
        return Ok(());
    }
    let refuse = |why: String| Err(DestinationError::PrivateTarget(why));
    let name = match url.host() {
        Some(Host::Ipv4(ip)) if is_forbidden_ip(IpAddr::V4(ip)) => {
            return refuse(format!("{ip} is not a public address"));
        }
        Some(Host::Ipv6(ip)) if is_forbidden_ip(IpAddr::V6(ip)) => {
            return refuse(format!("[{ip}] is not a public address"));
        }
        Some(Host::Domain(name)) => name,
        _ => return Ok(()),
    };
    let bare = name.trim_end_matches('.');
    if bare == "localhost" || bare.ends_with(".localhost") {
        return refuse(format!("{name} is this machine"));
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)));
    if let Ok(Ok(addrs)) = resolved.await {
        for addr in addrs {
            if is_forbidden_ip(addr.ip()) {
                return refuse(format!("{name} resolves to {}", addr.ip()));
            }
        }
    }
    Ok(())
}

/// Add a destination to `app`: check the URL, generate its secret, store it enabled.
pub async fn add_destination(
    store: &dyn Store,
    app: AppId,
    url: &str,
    what: DestinationWhat,
    allow_private: bool,
) -> Result<CreatedDestination, DestinationError> {
    if store.get_app(app).await?.is_none() {
        return Err(DestinationError::UnknownApp(app));
    }
    let url = parse_url(url)?;
    check_target(&url, allow_private).await?;
    let secret = generate_secret();
    let record = store
        .create_destination(&NewDestination {
            id: Uuid::now_v7(),
            app_id: app,
            url: url.as_str().to_owned(),
            what,
            secret: secret.expose().to_owned(),
            created_at: now(),
        })
        .await?;
    // The host only: a webhook URL's path or query is often a capability of its own.
    tracing::info!(destination_id = %record.id, app_id = %app, host = url.host_str().unwrap_or(""),
        what = what.as_str(), "destination added");
    Ok(CreatedDestination { record, secret })
}

pub async fn disable(store: &dyn Store, id: Uuid) -> Result<DestinationRecord, DestinationError> {
    let record = store
        .disable_destination(id, DisabledReason::Operator, now())
        .await?
        .ok_or(DestinationError::UnknownDestination(id))?;
    tracing::info!(destination_id = %id, "destination disabled");
    Ok(record)
}

pub async fn enable(store: &dyn Store, id: Uuid) -> Result<DestinationRecord, DestinationError> {
    let record = store
        .enable_destination(id, now())
        .await?
        .ok_or(DestinationError::UnknownDestination(id))?;
    tracing::info!(destination_id = %id, "destination enabled");
    Ok(record)
}

/// Delete a destination and its messages; how many messages went with it.
pub async fn remove(store: &dyn Store, id: Uuid) -> Result<u64, DestinationError> {
    let messages = store
        .remove_destination(id)
        .await?
        .ok_or(DestinationError::UnknownDestination(id))?;
    tracing::info!(destination_id = %id, messages, "destination removed");
    Ok(messages)
}

/// Give a destination a new secret; the old one stops signing at once.
pub async fn rotate_secret(store: &dyn Store, id: Uuid) -> Result<Secret, DestinationError> {
    let secret = generate_secret();
    if !store
        .rotate_destination_secret(id, secret.expose(), now())
        .await?
    {
        return Err(DestinationError::UnknownDestination(id));
    }
    tracing::info!(destination_id = %id, "destination secret rotated");
    Ok(secret)
}

/// `Utc::now()` at the precision both backends store.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A destination as the API and `destinations list --json` show it: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationView {
    #[schema(value_type = String, format = Uuid)]
    pub destination_id: Uuid,
    pub url: String,
    /// `attributions`, `events` or `all`.
    #[schema(example = "attributions")]
    pub what: &'static str,
    pub enabled: bool,
    /// `operator` (disabled by `destinations disable`) or `failing` (disabled
    /// automatically); null while enabled.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// The first failure since the last success; null while healthy.
    pub failing_since: Option<DateTime<Utc>>,
    /// Messages not delivered yet (due, or waiting for a retry).
    pub backlog: i64,
    /// Messages given up on (replay re-queues them).
    pub dead: i64,
}

impl From<&DestinationRecord> for DestinationView {
    fn from(d: &DestinationRecord) -> Self {
        Self {
            destination_id: d.id,
            url: d.url.clone(),
            what: d.what.as_str(),
            enabled: d.enabled,
            disabled_reason: d.disabled_reason.clone(),
            created_at: d.created_at,
            last_success_at: d.last_success_at,
            failing_since: d.failing_since,
            backlog: d.backlog,
            dead: d.dead,
        }
    }
}

/// What `add --json` and `POST …/destinations` answer: the secret, this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedView {
    #[schema(value_type = String, format = Uuid)]
    pub destination_id: Uuid,
    pub url: String,
    #[schema(example = "attributions")]
    pub what: &'static str,
    /// The Standard Webhooks signing secret (`whsec_` + base64), shown only here.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

impl From<&CreatedDestination> for CreatedView {
    fn from(c: &CreatedDestination) -> Self {
        Self {
            destination_id: c.record.id,
            url: c.record.url.clone(),
            what: c.record.what.as_str(),
            secret: c.secret.expose().to_owned(),
        }
    }
}

/// The text `destinations add` prints.
pub fn describe_created(c: &CreatedDestination) -> String {
    format!(
        "destination added: {}\n  app:    {}\n  url:    {}\n  what:   {}\n  secret: {}\n  \
         (shown once: give it to the receiver, which verifies each message's \
         webhook-signature with it)\n",
        c.record.id,
        c.record.app_id,
        c.record.url,
        c.record.what.as_str(),
        c.secret.expose()
    )
}

/// `destinations list` as a table whose columns line up.
pub fn describe_list(destinations: &[DestinationRecord]) -> String {
    use std::fmt::Write;
    let time = |t: Option<DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
    };
    let header = [
        "DESTINATION ID",
        "WHAT",
        "STATE",
        "BACKLOG",
        "DEAD",
        "LAST SUCCESS (UTC)",
        "FAILING SINCE (UTC)",
        "CREATED (UTC)",
        "URL",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 9]> = destinations
        .iter()
        .map(|d| {
            let state = match (&d.enabled, &d.disabled_reason) {
                (true, _) => "enabled".to_owned(),
                (false, Some(reason)) => format!("disabled ({reason})"),
                (false, None) => "disabled".to_owned(),
            };
            [
                d.id.to_string(),
                d.what.as_str().to_owned(),
                state,
                d.backlog.to_string(),
                d.dead.to_string(),
                time(d.last_success_at),
                time(d.failing_since),
                time(Some(d.created_at)),
                d.url.clone(),
            ]
        })
        .collect();
    let mut widths = [0usize; 9];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        let _ = writeln!(out, "{line}");
    }
    if destinations.is_empty() {
        out.push_str("(no destinations)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_standard_webhooks_secrets() {
        let secret = generate_secret();
        let key = secret
            .expose()
            .strip_prefix("whsec_")
            .expect("whsec_ prefix");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key)
            .expect("base64");
        assert_eq!(bytes.len(), SECRET_BYTES);
        assert_ne!(generate_secret().expose(), secret.expose(), "random");
        assert!(!format!("{secret:?}").contains(key), "Debug hides it");
    }

    #[test]
    fn urls_must_be_absolute_http_without_credentials() {
        assert_eq!(
            parse_url("HTTPS://Hooks.Example.COM/a?b=1")
                .unwrap()
                .as_str(),
            "https://hooks.example.com/a?b=1"
        );
        for (bad, why) in [
            ("ftp://example.com/x", "scheme must be http or https"),
            ("hooks.example.com/x", "not an absolute"),
            ("", "not an absolute"),
            ("https://user:pw@example.com/", "user name or password"),
            ("http://", "not an absolute"),
        ] {
            let err = parse_url(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(parse_url(&long).unwrap_err().to_string().contains("longer"));
    }

    #[tokio::test]
    async fn literals_and_localhost_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest",
            "http://[::1]/x",
            "http://[::ffff:192.168.0.1]/x",
            "http://2130706433/x",
            "http://localhost/x",
            "http://LOCALHOST./x",
            "http://api.localhost/x",
        ] {
            let parsed = parse_url(url).unwrap();
            let err = check_target(&parsed, false).await.unwrap_err().to_string();
            assert!(
                err.contains("forwarding.allow_private_targets"),
                "{url}: {err}"
            );
            check_target(&parsed, true).await.expect("allowed");
        }
        check_target(&parse_url("https://8.8.8.8/hook").unwrap(), false)
            .await
            .expect("a public address");
    }
}

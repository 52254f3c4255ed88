//! App management use cases shared by the CLI, the server's first start and tests:
//! creating apps with their key, rotating keys, changing tiers, endpoint URLs.

use chrono::{Duration, Utc};

use crate::domain::PartnerId;
use crate::domain::{ApiKey, AppId, Tier};
use crate::store::{AppRecord, NewApp, Store, StoreError};

/// Name of the app created on the first start of an empty database.
pub const DEFAULT_APP_NAME: &str = "default";
const MAX_NAME_CHARS: usize = 100;

/// A new app and its key, which is shown this once and stored only as a hash.
pub struct CreatedApp {
    pub app: AppRecord,
    pub api_key: ApiKey,
}

#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("app name must be 1 to {MAX_NAME_CHARS} characters")]
    InvalidName,
    #[error("grace period must be between 0 and 8760 hours")]
    InvalidGrace,
    #[error("no app with id {0}")]
    UnknownApp(AppId),
    #[error(transparent)]
    Store(StoreError),
}

fn store_err(app: AppId) -> impl Fn(StoreError) -> AppsError {
    move |e| match e {
        StoreError::NotFound => AppsError::UnknownApp(app),
        other => AppsError::Store(other),
    }
}

fn new_app(name: &str, tier: Tier, key_shown: bool) -> Result<(NewApp, ApiKey), AppsError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AppsError::InvalidName);
    }
    let key = ApiKey::generate();
    let app = NewApp {
        id: AppId::new(),
        name: name.to_owned(),
        tier,
        key_hash: key.hash(),
        key_prefix: key.display_prefix(),
        created_at: Utc::now(),
        key_shown,
    };
    Ok((app, key))
}

pub async fn create_app(
    store: &dyn Store,
    name: &str,
    tier: Tier,
) -> Result<CreatedApp, AppsError> {
    // Printed by the caller right away; nothing else can fail in between.
    let (new, api_key) = new_app(name, tier, true)?;
    let app = store.create_app(&new).await.map_err(AppsError::Store)?;
    Ok(CreatedApp { app, api_key })
}

/// On an empty database, create the `default` app (tier standard). `None` when any
/// app exists already. Its key counts as never shown until [`mark_shown`]: a start
/// that fails before printing it leaves a trace that the next start reports.
pub async fn create_default_app(store: &dyn Store) -> Result<Option<CreatedApp>, AppsError> {
    let (new, api_key) = new_app(DEFAULT_APP_NAME, Tier::Standard, false)?;
    if !store
        .create_app_if_none(&new)
        .await
        .map_err(AppsError::Store)?
    {
        return Ok(None);
    }
    let app = store
        .get_app(new.id)
        .await
        .map_err(AppsError::Store)?
        .ok_or(AppsError::UnknownApp(new.id))?;
    Ok(Some(CreatedApp { app, api_key }))
}

/// Record that a created app's key was printed.
pub async fn mark_shown(store: &dyn Store, created: &CreatedApp) -> Result<(), AppsError> {
    store
        .mark_key_shown(created.api_key.hash())
        .await
        .map_err(AppsError::Store)
}

/// Apps with a working key that nobody has seen: created by a start that stopped
/// before printing it. Their owner needs a new key.
pub async fn keys_never_shown(store: &dyn Store) -> Result<Vec<AppRecord>, AppsError> {
    let apps = store.list_apps().await.map_err(AppsError::Store)?;
    Ok(apps
        .into_iter()
        .filter(|a| a.keys.iter().any(|k| !k.shown))
        .collect())
}

/// What a start says about an app whose key was never shown.
pub fn describe_key_never_shown(app: &AppRecord) -> String {
    format!(
        "app {:?} ({}) has an API key that was never shown: an earlier start stopped before \
         printing it. Get a new key with `postback-gateway apps rotate-key {} --grace-hours 0`.",
        app.name, app.id, app.id
    )
}

/// Issue a new key; the app's current keys keep working for `grace_hours`.
pub async fn rotate_key(
    store: &dyn Store,
    app: AppId,
    grace_hours: u32,
) -> Result<ApiKey, AppsError> {
    if grace_hours > 8760 {
        return Err(AppsError::InvalidGrace);
    }
    let key = ApiKey::generate();
    let now = Utc::now();
    store
        .rotate_key(
            app,
            key.hash(),
            &key.display_prefix(),
            now,
            now + Duration::hours(grace_hours.into()),
        )
        .await
        .map_err(store_err(app))?;
    Ok(key)
}

pub async fn set_tier(store: &dyn Store, app: AppId, tier: Tier) -> Result<(), AppsError> {
    store.set_tier(app, tier).await.map_err(store_err(app))
}

/// Where one partner should send its postbacks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Endpoint {
    pub partner: PartnerId,
    pub method: &'static str,
    /// The endpoint itself, without credentials.
    pub endpoint_url: String,
    /// For GET partners: the full URL with the partner's macros, ready to paste.
    pub postback_url_template: Option<String>,
}

/// The endpoint of every partner. With `key`, URLs carry `api_key=` so they can be
/// pasted as they are; without it the key shows as `YOUR_API_KEY`.
pub fn endpoints(base_url: &str, key: Option<&ApiKey>) -> Vec<Endpoint> {
    let key = key.map_or("YOUR_API_KEY", ApiKey::expose);
    PartnerId::ALL
        .into_iter()
        .map(|partner| {
            let endpoint_url = format!("{base_url}/v1/postbacks/{partner}");
            Endpoint {
                partner,
                method: partner.allowed_methods(),
                postback_url_template: partner
                    .query_template()
                    .map(|t| format!("{endpoint_url}?api_key={key}&{t}")),
                endpoint_url,
            }
        })
        .collect()
}

/// Where printed endpoint URLs point, and what to say about it.
pub struct Printout {
    /// Base of every URL, without a trailing slash.
    pub base_url: String,
    /// Set when the URLs may not be what partners can reach.
    pub note: Option<String>,
    /// The hourly quota of attributed installs of a standard app.
    pub standard_quota: u32,
}

impl Printout {
    /// From the configuration and the address the server listens on (or would).
    /// Without PUBLIC_BASE_URL, a loopback address only works on this machine and
    /// an unspecified one (0.0.0.0) is no address at all: say so next to the URLs.
    pub fn new(config: &crate::config::Config, listen: std::net::SocketAddr) -> Self {
        let explicit = !config.public_base_url.trim().is_empty();
        let (base_url, note) = if explicit {
            (config.public_base_url(listen), None)
        } else if listen.ip().is_unspecified() {
            (
                format!(
                    "{}://YOUR_HOST:{}",
                    if config.tls.enabled() {
                        "https"
                    } else {
                        "http"
                    },
                    listen.port()
                ),
                Some(format!(
                    "the server listens on {listen}, on every interface: replace YOUR_HOST \
                     with the name partners reach it by, or set PUBLIC_BASE_URL"
                )),
            )
        } else if listen.ip().is_loopback() {
            (
                config.public_base_url(listen),
                Some(format!(
                    "{listen} is reachable from this machine only (and is LISTEN_ADDR, not \
                     necessarily where a server runs now): set PUBLIC_BASE_URL to the address \
                     partners reach"
                )),
            )
        } else {
            (config.public_base_url(listen), None)
        };
        Self {
            base_url,
            note,
            standard_quota: config.quota.standard_per_hour,
        }
    }

    fn quota_line(&self, tier: Tier) -> String {
        match tier {
            Tier::Standard => format!(
                "at most {} attributed installs per clock hour (UTC); more get 429 \
                 (enterprise tier: unlimited)",
                self.standard_quota
            ),
            Tier::Enterprise => "unlimited".to_owned(),
        }
    }
}

/// The human-readable block printed when an app is created.
pub fn describe_new_app(created: &CreatedApp, printout: &Printout) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "app created: {} (tier {})",
        created.app.name, created.app.tier
    );
    let _ = writeln!(out, "  app id:  {}", created.app.id);
    let _ = writeln!(out, "  API key: {}", created.api_key.expose());
    let _ = writeln!(out, "  (shown once; only its hash is stored)");
    let _ = writeln!(out, "  quota:   {}", printout.quota_line(created.app.tier));
    out.push_str(&describe_endpoints(&created.api_key, printout));
    out
}

/// The block printed after a key rotation: the new key and the URLs that carry it.
pub fn describe_rotated_key(
    app: AppId,
    key: &ApiKey,
    grace_hours: u32,
    printout: &Printout,
) -> String {
    let mut out = format!(
        "new API key for {app}: {}\n  (shown once; the previous key keeps working for \
         {grace_hours} h)\n",
        key.expose()
    );
    out.push_str(&describe_endpoints(key, printout));
    out
}

fn describe_endpoints(key: &ApiKey, printout: &Printout) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "endpoints:");
    if let Some(note) = &printout.note {
        let _ = writeln!(out, "  note: {note}");
    }
    for e in endpoints(&printout.base_url, Some(key)) {
        let name = e.partner.display_name();
        match &e.postback_url_template {
            Some(url) => {
                let _ = writeln!(out, "  {name:<10} {:<10} {url}", e.method);
            }
            None => {
                let _ = writeln!(
                    out,
                    "  {name:<10} {:<10} {}?api_key={}   (or header X-Api-Key)",
                    e.method,
                    e.endpoint_url,
                    key.expose()
                );
            }
        }
    }
    out
}

/// `apps list` as a table whose columns line up whatever the names' widths; a key
/// in its rotation grace period shows when it stops working.
pub fn describe_app_list(apps: &[AppRecord]) -> String {
    use std::fmt::Write;
    let keys = |a: &AppRecord| -> String {
        if a.keys.is_empty() {
            return "(no working key)".to_owned();
        }
        a.keys
            .iter()
            .map(|k| {
                let mut text = format!("{}…", k.prefix);
                if let Some(at) = k.expires_at {
                    let _ = write!(text, " (expires {})", at.format("%Y-%m-%d %H:%M UTC"));
                }
                if !k.shown {
                    text.push_str(" (never shown)");
                }
                text
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows: Vec<[String; 4]> = apps
        .iter()
        .map(|a| {
            [
                a.id.to_string(),
                a.name.clone(),
                a.tier.to_string(),
                keys(a),
            ]
        })
        .collect();
    let header = ["APP ID", "NAME", "TIER", "KEYS"].map(str::to_owned);
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    out
}

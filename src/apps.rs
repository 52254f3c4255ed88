//! App management use cases shared by the CLI, the server's first start and tests:
//! creating apps with their key, rotating keys, changing tiers, endpoint URLs.

use chrono::{Duration, Utc};

use crate::domain::{ApiKey, AppId, Tier};
use crate::partners::PartnerId;
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

fn new_app(name: &str, tier: Tier) -> Result<(NewApp, ApiKey), AppsError> {
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
    };
    Ok((app, key))
}

pub async fn create_app(
    store: &dyn Store,
    name: &str,
    tier: Tier,
) -> Result<CreatedApp, AppsError> {
    let (new, api_key) = new_app(name, tier)?;
    let app = store.create_app(&new).await.map_err(AppsError::Store)?;
    Ok(CreatedApp { app, api_key })
}

/// On an empty database, create the `default` app (tier standard). `None` when any
/// app exists already.
pub async fn create_default_app(store: &dyn Store) -> Result<Option<CreatedApp>, AppsError> {
    let (new, api_key) = new_app(DEFAULT_APP_NAME, Tier::Standard)?;
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

/// The human-readable block printed when an app is created.
pub fn describe_new_app(created: &CreatedApp, base_url: &str) -> String {
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
    let _ = writeln!(out, "endpoints:");
    for e in endpoints(base_url, Some(&created.api_key)) {
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
                    created.api_key.expose()
                );
            }
        }
    }
    out
}

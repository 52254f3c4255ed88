//! Typed configuration: the embedded `config/default.toml`, then environment
//! variables, then command-line flags. Validated on load; errors name the bad key.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::store::PoolConfig;

/// The defaults, compiled in so the binary runs from any working directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Where the embedded SQLite database lives when no `DATABASE_URL` is set.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://data/postbacks.db";

/// Shortest admin token accepted: a short one falls to guessing.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Environment variables read under their own (unprefixed) names.
const PLAIN_ENV: [&str; 5] = [
    "DATABASE_URL",
    "LISTEN_ADDR",
    "ADMIN_TOKEN",
    "PUBLIC_BASE_URL",
    "METRICS_LISTEN_ADDR",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen_addr: SocketAddr,
    /// Database URL; empty selects the embedded SQLite file.
    pub database_url: String,
    /// Admin bearer token; empty disables the admin routes.
    pub admin_token: Secret,
    /// Base URL used when printing endpoint URLs; empty means `http://<listen_addr>`.
    pub public_base_url: String,
    /// Optional separate listener for `/metrics`.
    pub metrics_listen_addr: String,
    pub http: HttpConfig,
    pub quota: QuotaConfig,
    pub database: DatabaseConfig,
    pub writer: WriterConfig,
    pub keys: KeysConfig,
    pub retention: RetentionConfig,
    pub deliveries: DeliveriesConfig,
    pub stale: StaleConfig,
    pub forwarding: ForwardingConfig,
    pub tls: TlsConfig,
    pub privacy: PrivacyConfig,
}

/// Forwarding to destinations (signed webhooks from the outbox).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardingConfig {
    /// Allow destination URLs on loopback, link-local and private addresses (SSRF guard off).
    pub allow_private_targets: bool,
    /// The longest one delivery attempt may take, in milliseconds.
    pub attempt_timeout_ms: u64,
    /// The first retry's delay, in milliseconds; it doubles per attempt (with jitter).
    pub retry_initial_ms: u64,
    /// The longest delay between two attempts, in milliseconds.
    pub retry_max_ms: u64,
    /// A message not delivered within this many hours is dead; a destination failing
    /// continuously for longer is disabled.
    pub horizon_hours: u32,
    /// Attempts in flight at once per destination, per process.
    pub max_in_flight: u32,
}

/// HTTPS on the main listener (rustls); both empty means plain HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: String,
    /// PEM private key.
    pub key_path: String,
}

impl TlsConfig {
    /// Both files are set: `serve` speaks HTTPS.
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty() && !self.key_path.is_empty()
    }
}

/// `tls.*` also read from these plain names (a newcomer's first guess), below
/// `PBG_TLS__CERT_PATH` / `PBG_TLS__KEY_PATH`.
const PLAIN_TLS_ENV: [&str; 2] = ["TLS_CERT_PATH", "TLS_KEY_PATH"];

/// How long personal fields of stored events are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Days after which an event's raw payload, IP address and user agent are cleared.
    pub raw_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesConfig {
    /// Delivery log rows kept per (app, partner), newest first.
    pub keep_per_partner: u32,
    /// Delivery log rows older than this many days go (whichever removes more).
    pub keep_days: u32,
    /// Largest payload kept in a row; longer ones are cut and marked `truncated`.
    pub payload_max_bytes: usize,
    /// Rows of the unauthenticated log kept.
    pub keep_unauthenticated: u32,
    /// Seconds between prunes of the delivery log.
    pub prune_every_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Whole-request deadline in milliseconds.
    pub request_timeout_ms: u64,
    /// Drain time on shutdown in milliseconds.
    pub shutdown_timeout_ms: u64,
    /// A client must send its request head within this many milliseconds.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this many milliseconds is closed.
    pub idle_timeout_ms: u64,
    /// Most connections open at once; further ones are closed at accept.
    pub max_connections: usize,
    /// Failed admin logins per client address and minute before that address is
    /// refused (429) for the rest of the minute.
    pub failed_logins_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Attributed installs a `standard` app may store per clock hour (UTC).
    pub standard_per_hour: u32,
    /// Authenticated postback requests a `standard` app may make per clock hour,
    /// counted per process: protects the server, not a product limit.
    pub standard_requests_per_hour: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection pool size.
    pub max_connections: u32,
    /// Wait for a pooled connection, in milliseconds.
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Batches written concurrently.
    pub writers: usize,
    /// Most postbacks per commit.
    pub max_batch: usize,
    /// Extra wait for a batch to fill, in milliseconds.
    pub max_wait_ms: u64,
    /// Bounded queue in front of the writer.
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Reload interval of the in-memory key table, in milliseconds.
    pub refresh_ms: u64,
    /// Unknown keys trigger at most one reload per this many milliseconds.
    pub miss_reload_interval_ms: u64,
    /// A key found unknown triggers no reload again for this many milliseconds.
    pub miss_memory_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a stored event is kept at least; whole months go once older.
    pub events_days: u32,
    /// Days a dedupe key is kept at least: a retry older than that is a new delivery.
    pub dedupe_days: u32,
    /// Hours between in-process prunes; 0 leaves pruning to `postback-gateway prune`.
    pub prune_every_hours: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaleConfig {
    /// The least quiet time, in minutes, before a connected partner is stale.
    pub floor_minutes: u32,
    /// Stale after this many times the partner's usual gap (when longer than the floor).
    pub factor: f64,
    /// Days of accepted postbacks the usual gap is learned from.
    pub history_days: u32,
    /// Which percentile of the gaps is the usual gap (1–100).
    pub gap_percentile: u8,
    /// Fewer accepted postbacks than this in the history: the floor alone applies.
    pub min_samples: u32,
    /// How long a learned gap is reused before it is read again, in seconds.
    pub gap_cache_seconds: u64,
}

impl StaleConfig {
    pub fn rule(&self) -> crate::stale::StaleRule {
        crate::stale::StaleRule {
            floor: chrono::Duration::minutes(i64::from(self.floor_minutes)),
            factor: self.factor,
            history: chrono::Duration::days(i64::from(self.history_days)),
            percentile: self.gap_percentile,
            min_samples: i64::from(self.min_samples),
        }
    }
}

/// A string that never prints its value.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(<redacted>)"
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Which database a URL selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    Postgres(String),
    Sqlite(String),
}

impl DatabaseKind {
    /// What error messages may show of the database: a PostgreSQL URL without its
    /// password, or a SQLite URL (a path, no secret).
    pub fn redacted(&self) -> String {
        match self {
            DatabaseKind::Postgres(url) => redact_password(url),
            DatabaseKind::Sqlite(url) => url.clone(),
        }
    }
}

/// `scheme://user:secret@host…` → `scheme://user:***@host…`; also a `password=`
/// query parameter. Anything else is returned as it is.
fn redact_password(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| authority_start + i);
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = &out[authority_start..authority_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(authority_start + colon + 1..authority_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

impl Config {
    /// Defaults, then the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_figment(
            Figment::from(Toml::string(DEFAULT_TOML))
                .merge(Env::raw().only(&PLAIN_ENV))
                .merge(
                    Env::raw()
                        .only(&PLAIN_TLS_ENV)
                        .map(|key| key.as_str().replacen("TLS_", "TLS.", 1).into()),
                )
                .merge(Env::prefixed("PBG_").split("__")),
        )
    }

    /// Defaults only: the base for tests and tools that set fields directly.
    pub fn defaults() -> Self {
        Self::from_figment(Figment::from(Toml::string(DEFAULT_TOML)))
            .expect("embedded default.toml is valid")
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        self.database_kind()?;
        if self.http.max_body_bytes == 0 {
            return invalid("http.max_body_bytes", "must be at least 1");
        }
        if self.http.request_timeout_ms == 0 {
            return invalid("http.request_timeout_ms", "must be at least 1");
        }
        if self.http.idle_timeout_ms == 0 {
            return invalid("http.idle_timeout_ms", "must be at least 1");
        }
        if !(1..=1_000_000).contains(&self.http.max_connections) {
            return invalid("http.max_connections", "must be between 1 and 1000000");
        }
        if self.http.failed_logins_per_minute == 0 {
            return invalid("http.failed_logins_per_minute", "must be at least 1");
        }
        if self.writer.writers == 0 || self.writer.writers > 64 {
            return invalid("writer.writers", "must be between 1 and 64");
        }
        if self.writer.max_batch == 0 {
            return invalid("writer.max_batch", "must be at least 1");
        }
        if self.writer.queue_capacity == 0 {
            return invalid("writer.queue_capacity", "must be at least 1");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self.retention.dedupe_days < 2 {
            return invalid(
                "retention.dedupe_days",
                "must be at least 2 (partners retry for up to 24 hours)",
            );
        }
        if self.retention.events_days < self.retention.dedupe_days {
            return invalid(
                "retention.events_days",
                "must be at least retention.dedupe_days",
            );
        }
        if self.stale.floor_minutes == 0 {
            return invalid("stale.floor_minutes", "must be at least 1");
        }
        if !(self.stale.factor.is_finite() && self.stale.factor >= 1.0) {
            return invalid("stale.factor", "must be a number of at least 1");
        }
        if !(1..=90).contains(&self.stale.history_days) {
            return invalid("stale.history_days", "must be between 1 and 90");
        }
        if !(1..=100).contains(&self.stale.gap_percentile) {
            return invalid("stale.gap_percentile", "must be between 1 and 100");
        }
        if self.stale.min_samples < 2 {
            return invalid("stale.min_samples", "must be at least 2 (one gap)");
        }
        let token = self.admin_token.expose();
        if !token.is_empty() && token.chars().count() < MIN_ADMIN_TOKEN_CHARS {
            return invalid(
                "admin_token",
                "must be at least 16 characters (or empty, which disables the admin routes)",
            );
        }
        if self.tls.cert_path.is_empty() != self.tls.key_path.is_empty() {
            let missing = if self.tls.cert_path.is_empty() {
                "tls.cert_path"
            } else {
                "tls.key_path"
            };
            return invalid(
                missing,
                "must be set too: HTTPS needs both tls.cert_path and tls.key_path (or neither)",
            );
        }
        let url = &self.public_base_url;
        if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
            return invalid("public_base_url", "must start with http:// or https://");
        }
        if !self.metrics_listen_addr.is_empty()
            && self.metrics_listen_addr.parse::<SocketAddr>().is_err()
        {
            return invalid(
                "metrics_listen_addr",
                "must be an address like 127.0.0.1:9090",
            );
        }
        Ok(())
    }

    pub fn database_kind(&self) -> Result<DatabaseKind, ConfigError> {
        let url = self.database_url.trim();
        if url.is_empty() {
            return Ok(DatabaseKind::Sqlite(DEFAULT_SQLITE_URL.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseKind::Postgres(url.to_owned()))
        } else if url.starts_with("sqlite:") {
            Ok(DatabaseKind::Sqlite(url.to_owned()))
        } else {
            Err(ConfigError::Invalid {
                key: "database_url",
                message: "must start with postgres://, postgresql:// or sqlite:".to_owned(),
            })
        }
    }

    /// The base of every printed endpoint URL, without a trailing slash.
    pub fn public_base_url(&self, bound: SocketAddr) -> String {
        if self.public_base_url.is_empty() {
            let scheme = if self.tls.enabled() { "https" } else { "http" };
            format!("{scheme}://{bound}")
        } else {
            self.public_base_url.trim_end_matches('/').to_owned()
        }
    }

    /// What `prune` removes and clears: `retention.*` and `privacy.raw_days`.
    pub fn retention_policy(&self) -> crate::store::RetentionPolicy {
        crate::store::RetentionPolicy {
            events_days: self.retention.events_days,
            dedupe_days: self.retention.dedupe_days,
            raw_days: self.privacy.raw_days,
        }
    }

    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            max_connections: self.database.max_connections,
            acquire_timeout: Duration::from_millis(self.database.acquire_timeout_ms),
            // Past the request deadline nobody waits for the batch's answer.
            transaction_timeout: Duration::from_millis(self.http.request_timeout_ms),
        }
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listen_addr.parse().ok()
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's signature, not ours
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn database_urls_are_shown_without_their_password() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/pbg",
                "postgres://app:***@db:5432/pbg",
            ),
            (
                "postgres://app:p%40ss@db/pbg?sslmode=require",
                "postgres://app:***@db/pbg?sslmode=require",
            ),
            (
                "postgres://app@db/pbg?password=s3cret&x=1",
                "postgres://app@db/pbg?password=***&x=1",
            ),
            ("postgresql://db/pbg", "postgresql://db/pbg"),
            (
                "postgres://a:b@h1:5432,h2:5432/pbg",
                "postgres://a:***@h1:5432,h2:5432/pbg",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(
                DatabaseKind::Postgres(url.into()).redacted(),
                shown,
                "{url}"
            );
        }
    }

    #[test]
    fn defaults_select_embedded_sqlite_on_localhost_8080() {
        let c = Config::defaults();
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.database_kind().unwrap(),
            DatabaseKind::Sqlite(DEFAULT_SQLITE_URL.into())
        );
        assert_eq!(c.quota.standard_per_hour, 100);
        assert_eq!(
            c.public_base_url("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn environment_overrides_plain_and_prefixed_keys() {
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://u@h/db");
            jail.set_env("LISTEN_ADDR", "0.0.0.0:9000");
            jail.set_env("ADMIN_TOKEN", "s3cret-s3cret-s3cret");
            jail.set_env("PBG_QUOTA__STANDARD_PER_HOUR", "7");
            let c = Config::load().expect("loads");
            assert_eq!(
                c.database_kind().unwrap(),
                DatabaseKind::Postgres("postgres://u@h/db".into())
            );
            assert_eq!(c.listen_addr.port(), 9000);
            assert_eq!(c.admin_token.expose(), "s3cret-s3cret-s3cret");
            assert!(!format!("{c:?}").contains("s3cret"));
            assert_eq!(c.quota.standard_per_hour, 7);
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "mysql://x");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("database_url"), "{err}");
            jail.set_env("DATABASE_URL", "");
            jail.set_env("LISTEN_ADDR", "not-an-addr");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.to_lowercase().contains("listen_addr"), "{err}");
            jail.set_env("LISTEN_ADDR", "127.0.0.1:8080");
            jail.set_env("ADMIN_TOKEN", "fifteen-chars-x");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("admin_token") && err.contains("16"), "{err}");
            assert!(!err.contains("fifteen"), "the token is not echoed: {err}");
            jail.set_env("ADMIN_TOKEN", "sixteen-chars-xy");
            assert!(Config::load().is_ok());
            Ok(())
        });
    }

    #[test]
    fn tls_files_come_from_plain_or_prefixed_names_and_make_urls_https() {
        Jail::expect_with(|jail| {
            jail.set_env("TLS_CERT_PATH", "/etc/pbg/cert.pem");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("tls.key_path"), "one file alone: {err}");
            jail.set_env("PBG_TLS__KEY_PATH", "/etc/pbg/key.pem");
            let c = Config::load().expect("loads");
            assert_eq!(c.tls.cert_path, "/etc/pbg/cert.pem");
            assert_eq!(c.tls.key_path, "/etc/pbg/key.pem");
            assert!(c.tls.enabled());
            let bound = "127.0.0.1:8443".parse().unwrap();
            assert_eq!(c.public_base_url(bound), "https://127.0.0.1:8443");
            jail.set_env("PBG_TLS__CERT_PATH", "/other.pem");
            assert_eq!(Config::load().unwrap().tls.cert_path, "/other.pem");
            jail.set_env("PUBLIC_BASE_URL", "https://pb.example.com/");
            let c = Config::load().unwrap();
            assert_eq!(c.public_base_url(bound), "https://pb.example.com");
            Ok(())
        });
    }
}

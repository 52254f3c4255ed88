//! postback-gateway: receives mobile attribution postbacks, keeps the attributed
//! installs, and shows per partner whether the integration is connected.
//!
//! A postback travels `http/postbacks.rs` → `ingest.rs` → `partners/<partner>.rs` →
//! `writer.rs` → `store/<backend>.rs`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod apps;
pub mod check_url;
pub mod cli;
pub mod config;
pub mod domain;
pub mod dry_run;
pub mod forwarding;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod partners;
pub mod quota;
pub mod retention;
pub mod stale;
pub mod store;
pub mod telemetry;
pub mod users_cli;
pub mod writer;

use apps::CreatedApp;
use config::{Config, DatabaseKind};
use store::{postgres::PgStore, sqlite::SqliteStore, Store, StoreError};

/// Why a command could not run. Each variant names what it was doing and keeps its
/// cause as `source()`, so that [`error_chain`] can print every step down to the
/// OS error; messages never hold a password (database URLs are shown redacted).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Opening or migrating the database failed.
    #[error("cannot open the database {target}")]
    Open {
        /// The database URL without its password, or the SQLite file's path.
        target: String,
        #[source]
        source: StoreError,
    },
    #[error("database")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Apps(#[from] apps::AppsError),
    #[error(transparent)]
    Replay(#[from] forwarding::replay::ReplayError),
    #[error(transparent)]
    Destinations(#[from] forwarding::destinations::DestinationError),
    #[error("server")]
    Serve(#[from] std::io::Error),
    /// `users erase` was given an empty identifier.
    #[error("the identifier is empty")]
    EmptyIdentifier,
    /// `check-url` found problems; they are printed already.
    #[error("the URL has problems (listed above)")]
    UrlCheckFailed,
    /// The TLS certificate or key cannot be used (the message names the file).
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// `error` and its causes, outermost first, joined with ": ". A cause whose text
/// its parent already printed (some errors repeat their source) is not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

/// Open the configured database and apply pending migrations.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    let kind = config.database_kind()?;
    let target = kind.redacted();
    let opened: Result<Arc<dyn Store>, StoreError> = async {
        let store: Arc<dyn Store> = match &kind {
            DatabaseKind::Postgres(url) => Arc::new(PgStore::connect(url, &config.pool()).await?),
            DatabaseKind::Sqlite(url) => Arc::new(SqliteStore::open(url, &config.pool()).await?),
        };
        store.migrate().await?;
        store.prepare_months(chrono::Utc::now()).await?;
        Ok(store)
    }
    .await;
    opened.map_err(|source| StartError::Open { target, source })
}

/// A built server: database open and migrated, sockets bound, not yet serving.
pub struct App {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    router: axum::Router,
    metrics_router: axum::Router,
    store: Arc<dyn Store>,
    writer_task: JoinHandle<()>,
    /// Drains the outbox; stopped with the background tasks, before the pool closes.
    dispatcher_task: JoinHandle<()>,
    background: CancellationToken,
    shutdown_timeout: Duration,
    serve_options: http::serve::ServeOptions,
    /// HTTPS on the main listener (the metrics listener stays plain).
    tls: Option<tokio_rustls::TlsAcceptor>,
    printout: apps::Printout,
    /// The `default` app, when this start created it on an empty database.
    pub created_default_app: Option<CreatedApp>,
    /// Apps whose key an earlier start created but never printed.
    pub keys_never_shown: Vec<store::AppRecord>,
}

impl App {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let store = open_store(&config).await?;
        Self::build_with_store(config, store).await
    }

    /// Build around an already opened and migrated store (tests share theirs).
    pub async fn build_with_store(
        config: Config,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartError> {
        // A wrong certificate stops the start before anything is created.
        let tls = match config.tls.enabled() {
            true => Some(http::tls::Tls::load(
                &config.tls.cert_path,
                &config.tls.key_path,
            )?),
            false => None,
        };
        // Bind first: a start that cannot listen must not create the default app,
        // whose key would then be shown to nobody.
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let listener = bind(config.listen_addr).await?;
        let metrics_listener = match config.metrics_addr() {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let address = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen_addr,
            source,
        })?;
        let keys_never_shown = apps::keys_never_shown(store.as_ref()).await?;
        let created_default_app = apps::create_default_app(store.as_ref()).await?;

        // The recorder first: what happens from here on (the first key reload) is
        // counted. Every counter the alert rules and the dashboard read exists from
        // the start.
        let prometheus = telemetry::prometheus();
        telemetry::register();
        telemetry::ready(true);
        let background = CancellationToken::new();
        let tls = tls.map(|tls| {
            tls.clone().reload_on_sighup(background.clone());
            tls.acceptor()
        });
        if config.retention.prune_every_hours > 0 {
            tokio::spawn(retention::prune_loop(
                store.clone(),
                config.retention_policy(),
                Duration::from_secs(u64::from(config.retention.prune_every_hours) * 3600),
                background.clone(),
            ));
        }
        let keys = Arc::new(keys::KeyCache::new(
            store.clone(),
            keys::MissPolicy::from_config(&config.keys),
        ));
        keys.reload_if_older_than(Duration::ZERO).await?;
        tokio::spawn(keys.clone().refresh_loop(
            Duration::from_millis(config.keys.refresh_ms.max(100)),
            background.clone(),
        ));
        let quota = Arc::new(quota::Quota::new(
            config.quota.standard_per_hour,
            config.quota.standard_requests_per_hour,
        ));
        quota.seed(
            &store
                .quota_usage(quota::current_window(chrono::Utc::now()))
                .await?,
        );
        let (writer, writer_task) = writer::Writer::spawn(
            store.clone(),
            quota.clone(),
            writer::WriterConfig {
                writers: config.writer.writers,
                max_batch: config.writer.max_batch,
                max_wait: Duration::from_millis(config.writer.max_wait_ms),
                queue_capacity: config.writer.queue_capacity,
            },
        );
        let request_timeout = Duration::from_millis(config.http.request_timeout_ms);
        // Leave the commit wait a margin inside the request deadline so a slow
        // database yields our 503, not the timeout layer's.
        let commit_timeout = request_timeout.mul_f64(0.9);
        let dry_run = dry_run::DryRunner::new(keys.clone(), quota.clone(), store.clone());
        let writer_queue = writer.clone();
        let ingestor = ingest::Ingestor::new(
            keys,
            quota,
            writer,
            commit_timeout,
            config.deliveries.payload_max_bytes,
        );
        tokio::spawn(retention::prune_deliveries_loop(
            store.clone(),
            config.deliveries.clone(),
            background.clone(),
        ));
        let dispatcher_task = tokio::spawn(forwarding::dispatcher::run(
            store.clone(),
            config.forwarding.clone(),
            background.clone(),
            Duration::from_millis(config.http.shutdown_timeout_ms),
        ));
        let state = http::AppState {
            ingestor: Arc::new(ingestor),
            dry_run: Arc::new(dry_run),
            writer_queue,
            health: Arc::new(stale::HealthView::new(
                config.stale.rule(),
                Duration::from_secs(config.stale.gap_cache_seconds),
            )),
            store: store.clone(),
            prometheus,
            max_body_bytes: config.http.max_body_bytes,
            admin_token: config.admin_token.clone(),
            allow_private_targets: config.forwarding.allow_private_targets,
            base_url: config.public_base_url(address),
            login_throttle: Arc::new(http::LoginThrottle::new(
                config.http.failed_logins_per_minute,
            )),
        };
        let router = http::router(
            state.clone(),
            http::RouterOptions {
                request_timeout,
                metrics_on_main: metrics_listener.is_none(),
            },
        );
        let metrics_router = http::metrics_router(state);
        Ok(Self {
            listener,
            metrics_listener,
            router,
            metrics_router,
            store,
            writer_task,
            dispatcher_task,
            background,
            shutdown_timeout: Duration::from_millis(config.http.shutdown_timeout_ms),
            serve_options: http::serve::ServeOptions::from_config(&config),
            tls,
            printout: apps::Printout::new(&config, address),
            created_default_app,
            keys_never_shown,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Base of every endpoint URL (PUBLIC_BASE_URL, or http(s)://<bound address>).
    pub fn base_url(&self) -> &str {
        &self.printout.base_url
    }

    /// How endpoint URLs are printed for this server.
    pub fn printout(&self) -> &apps::Printout {
        &self.printout
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Serve until `shutdown` completes; then stop accepting, let in-flight requests
    /// finish (up to the drain timeout), commit what the writer holds, close the pool.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let App {
            listener,
            metrics_listener,
            router,
            metrics_router,
            store,
            writer_task,
            dispatcher_task,
            background,
            shutdown_timeout,
            serve_options,
            tls,
            ..
        } = self;
        let stop = CancellationToken::new();
        let options = || serve_options.clone();
        let main = tokio::spawn(http::serve::serve(
            listener,
            router,
            http::serve::ServeOptions { tls, ..options() },
            stop.clone().cancelled_owned(),
        ));
        // Every router holds the writer handle: each must be gone before the writer
        // can finish, so an unused metrics router is dropped here.
        let metrics_server = metrics_listener.map(|listener| {
            tokio::spawn(http::serve::serve(
                listener,
                metrics_router,
                options(),
                stop.clone().cancelled_owned(),
            ))
        });
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        stop.cancel();
        let served = main.await;
        background.cancel();
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        // Every handler (and so every writer handle) is gone: the writer commits
        // what is queued and ends.
        if tokio::time::timeout(shutdown_timeout, writer_task)
            .await
            .is_err()
        {
            tracing::error!("writer did not finish within the drain timeout");
        }
        // The dispatcher bounds its own drain by the same timeout.
        let _ = dispatcher_task.await;
        store.close().await;
        tracing::info!("shutdown complete");
        served.map_err(std::io::Error::other)
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled, so a signal sent right after startup is not missed.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

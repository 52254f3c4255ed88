//! The test harness: a fresh database per test (PostgreSQL: a uniquely named database
//! created and dropped here; SQLite: a temp file), the real server on 127.0.0.1:0,
//! and helpers named after routes.

use std::sync::Arc;
use std::time::Duration;

use postback_gateway::apps;
use postback_gateway::config::{Config, Secret};
use postback_gateway::domain::{AppId, Tier};
use postback_gateway::store::Store;
use postback_gateway::App;
use serde_json::Value;
use sqlx::Row;
use tokio::sync::oneshot;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const ADMIN_TOKEN: &str = "test-admin-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run a test body once per backend; the test's name then ends in `sqlite` or `postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}

/// Knobs a test may turn; everything else is the shipped default.
pub struct TestConfig {
    pub standard_per_hour: u32,
    pub requests_per_hour: u32,
    pub key_refresh_ms: u64,
    pub admin_token: Option<&'static str>,
    pub http_idle_timeout_ms: u64,
    pub http_header_read_timeout_ms: u64,
    pub http_max_connections: usize,
    pub failed_logins_per_minute: u32,
    pub key_miss_reload_interval_ms: u64,
    pub forwarding: postback_gateway::config::ForwardingConfig,
}

impl Default for TestConfig {
    fn default() -> Self {
        let shipped = Config::defaults();
        Self {
            standard_per_hour: 100,
            requests_per_hour: 10_000,
            key_refresh_ms: 100,
            admin_token: Some(ADMIN_TOKEN),
            http_idle_timeout_ms: shipped.http.idle_timeout_ms,
            http_header_read_timeout_ms: shipped.http.header_read_timeout_ms,
            http_max_connections: shipped.http.max_connections,
            failed_logins_per_minute: shipped.http.failed_logins_per_minute,
            key_miss_reload_interval_ms: shipped.keys.miss_reload_interval_ms,
            forwarding: shipped.forwarding.clone(),
        }
    }
}

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| PG_ADMIN_URL.to_owned())
}

/// A database for one test, removed when dropped (also after a failed assertion).
pub enum TestDb {
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        name: String,
    },
}

impl TestDb {
    /// `None` (with a loud message) when PostgreSQL is unreachable outside CI; in CI
    /// (`CI=true`) an unreachable PostgreSQL fails the test.
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}",
                    dir.path().join("data/postbacks.db").display()
                );
                Some(TestDb::Sqlite { url, _dir: dir })
            }
            Backend::Postgres => {
                let admin = admin_url();
                let mut conn = match pg_connect(&admin).await {
                    Ok(c) => c,
                    Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                        panic!("PostgreSQL unreachable at {admin} in CI: {e}")
                    }
                    Err(e) => {
                        eprintln!("\n!!! SKIPPING PostgreSQL test: cannot reach {admin}: {e}\n");
                        return None;
                    }
                };
                let name = format!("pbg_api_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("create database {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let url = replace_db_name(&admin, &name);
                Some(TestDb::Postgres { url, name })
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{name}")
}

/// Connect to PostgreSQL, giving up after a few seconds instead of hanging.
pub async fn pg_connect(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { name, .. } = self {
            let name = name.clone();
            // Drop runs outside any runtime we may block; use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    if let Ok(mut conn) = pg_connect(&admin_url()).await {
                        let _ =
                            sqlx::query(&format!("drop database if exists {name} with (force)"))
                                .execute(&mut conn)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A running server with its own database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    /// The `default` app created on first start (tier standard) and its key.
    pub app_id: AppId,
    pub api_key: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    config: Config,
    pub db: TestDb,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, TestConfig::default()).await
    }

    pub async fn spawn_with(backend: Backend, tc: TestConfig) -> Option<Self> {
        // `TEST_LOG=warn cargo nextest run … --no-capture` shows the server's logs.
        if std::env::var_os("TEST_LOG").is_some() {
            std::env::set_var("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_default());
            postback_gateway::telemetry::init_logging();
        }
        let db = TestDb::create(backend).await?;
        let mut config = Config::defaults();
        config.listen_addr = "127.0.0.1:0".parse().unwrap();
        config.database_url = db.url().to_owned();
        config.quota.standard_per_hour = tc.standard_per_hour;
        config.quota.standard_requests_per_hour = tc.requests_per_hour;
        config.keys.refresh_ms = tc.key_refresh_ms;
        config.admin_token = Secret::new(tc.admin_token.unwrap_or(""));
        config.http.idle_timeout_ms = tc.http_idle_timeout_ms;
        config.http.header_read_timeout_ms = tc.http_header_read_timeout_ms;
        config.http.max_connections = tc.http_max_connections;
        config.http.failed_logins_per_minute = tc.failed_logins_per_minute;
        config.keys.miss_reload_interval_ms = tc.key_miss_reload_interval_ms;
        config.forwarding = tc.forwarding;
        let app = App::build(config.clone()).await.expect("server builds");
        let created = app
            .created_default_app
            .as_ref()
            .expect("first start creates the default app");
        let app_id = created.app.id;
        let api_key = created.api_key.expose().to_owned();
        let (address, store, tx, server) = Self::serve(app);
        Some(Self {
            address,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            store,
            app_id,
            api_key,
            shutdown: Some(tx),
            server: Some(server),
            config,
            db,
        })
    }

    #[allow(clippy::type_complexity)]
    fn serve(
        app: App,
    ) -> (
        String,
        Arc<dyn Store>,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let address = format!("http://{}", app.address());
        let store = app.store();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        (address, store, tx, server)
    }

    /// Stop the server gracefully and start a new one on the same database.
    pub async fn restart(mut self) -> Self {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server exits cleanly");
        }
        let app = App::build(self.config.clone())
            .await
            .expect("server rebuilds");
        assert!(
            app.created_default_app.is_none(),
            "a restart creates no app"
        );
        let (address, store, tx, server) = Self::serve(app);
        self.address = address;
        self.store = store;
        self.shutdown = Some(tx);
        self.server = Some(server);
        self
    }

    /// Stop the server gracefully and wait for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server exits cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A second app with its own key.
    pub async fn create_app(&self, name: &str, tier: Tier) -> (AppId, String) {
        let created = apps::create_app(self.store.as_ref(), name, tier)
            .await
            .expect("create app");
        (created.app.id, created.api_key.expose().to_owned())
    }

    pub async fn post_json(
        &self,
        partner: &str,
        key: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(&format!("/v1/postbacks/{partner}")))
            .json(body);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        req.send().await.expect("request sent")
    }

    pub async fn post_kochava(&self, body: &Value) -> reqwest::Response {
        self.post_json("kochava", Some(&self.api_key), body).await
    }

    /// GET `/v1/postbacks/{partner}?{query}&api_key=…` with the query as sent on the wire.
    pub async fn get_postback(
        &self,
        partner: &str,
        key: Option<&str>,
        query: &str,
    ) -> reqwest::Response {
        let mut url = self.url(&format!("/v1/postbacks/{partner}?{query}"));
        if let Some(k) = key {
            url.push_str(&format!("&api_key={k}"));
        }
        self.client.get(url).send().await.expect("request sent")
    }

    pub async fn get_tune(&self, query: &str) -> reqwest::Response {
        self.get_postback("tune", Some(&self.api_key.clone()), query)
            .await
    }

    /// Run a counting query (same SQL on both engines) against the test database.
    pub async fn count(&self, sql: &str) -> i64 {
        self.db.count(sql).await
    }

    /// One text column of the first row (`None` if no row or NULL).
    pub async fn text(&self, sql: &str) -> Option<String> {
        self.db.text(sql).await
    }
}

impl TestDb {
    /// Run a counting query (same SQL on both engines) against this database.
    pub async fn count(&self, sql: &str) -> i64 {
        match self {
            TestDb::Postgres { url, .. } => {
                let mut conn = pg_connect(url).await.expect("connect");
                sqlx::query(sql)
                    .fetch_one(&mut conn)
                    .await
                    .expect(sql)
                    .get::<i64, _>(0)
            }
            TestDb::Sqlite { url, .. } => {
                use sqlx::Connection;
                let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect");
                sqlx::query(sql)
                    .fetch_one(&mut conn)
                    .await
                    .expect(sql)
                    .get::<i64, _>(0)
            }
        }
    }

    /// One text column of the first row (`None` if no row or NULL).
    pub async fn text(&self, sql: &str) -> Option<String> {
        self.text_rows(sql)
            .await
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
    }

    /// Every row of a query whose columns are all text (cast them: `cast(id as text)`).
    pub async fn text_rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        fn decode<R: Row>(rows: Vec<R>) -> Vec<Vec<Option<String>>>
        where
            for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            usize: sqlx::ColumnIndex<R>,
        {
            rows.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.get::<Option<String>, _>(i))
                        .collect()
                })
                .collect()
        }
        match self {
            TestDb::Postgres { url, .. } => {
                let mut conn = pg_connect(url).await.expect("connect");
                decode(sqlx::query(sql).fetch_all(&mut conn).await.expect(sql))
            }
            TestDb::Sqlite { url, .. } => {
                use sqlx::Connection;
                let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect");
                decode(sqlx::query(sql).fetch_all(&mut conn).await.expect(sql))
            }
        }
    }
}

/// Assert the response status, that it carries `X-Request-Id` and a JSON body; return the body.
pub async fn json_body(resp: reqwest::Response, status: u16, case: &str) -> Value {
    let got = resp.status().as_u16();
    assert!(
        resp.headers().contains_key("x-request-id"),
        "{case}: no X-Request-Id"
    );
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "{case}: status (body: {text})");
    assert!(
        ct.starts_with("application/json"),
        "{case}: content-type {ct}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{case}: body is not JSON ({e}): {text}"))
}

/// Assert an error body `{"error":{"code":…,"message":…}}` with this code.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str, case: &str) -> Value {
    let body = json_body(resp, status, case).await;
    assert_eq!(body["error"]["code"], code, "{case}: error code in {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{case}: error message in {body}"
    );
    body
}

/// Poll `check` until it returns true or the deadline passes.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real binary, as built by cargo for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_postback-gateway");

/// Run a CLI command to completion against `database_url`.
pub fn run_cli(database_url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the binary")
}

/// `serve` as a child process, with everything it prints collected.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub address: String,
    output: Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Start `serve --listen 127.0.0.1:0` and wait (with a deadline) until it logs its address.
    pub fn start(database_url: &str, envs: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn server");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
        let mut readers = Vec::new();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let output = output.clone();
            let addr_tx = addr_tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Some(rest) = line.split("address=").nth(1) {
                        if line.contains("listening") {
                            let _ = addr_tx
                                .send(rest.split_whitespace().next().unwrap_or("").to_owned());
                        }
                    }
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            }));
        }
        // Only the readers hold senders now: a process that dies before reporting its
        // address ends the wait at once.
        drop(addr_tx);
        let address = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => format!("http://{a}"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not report its address; output:\n{}",
                    output.lock().unwrap()
                );
            }
        };
        Self {
            child,
            address,
            output,
            readers,
        }
    }

    /// Send SIGTERM and wait for the exit; returns the exit status and all output.
    pub fn terminate(self) -> (std::process::ExitStatus, String) {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (`TERM`, `KILL`, …) without waiting.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Wait (polling, with a deadline) for the process to exit; the status and all output.
    /// Past the deadline the process is killed and the test fails.
    pub fn wait_exit(mut self, deadline: Duration) -> (std::process::ExitStatus, String) {
        let end = std::time::Instant::now() + deadline;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "server did not exit within {deadline:?}; output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status, self.output())
    }

    /// `kill -9`: no shutdown code runs. Returns once the process is gone.
    pub fn kill9(self) -> String {
        self.signal("KILL");
        let (status, out) = self.wait_exit(Duration::from_secs(10));
        assert!(!status.success(), "SIGKILL ends the process: {status}");
        out
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Resident set size in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }
}

/// `apps create --name NAME --tier TIER --json` through the CLI: (app id, API key).
pub fn create_app_cli(database_url: &str, name: &str, tier: &str) -> (String, String) {
    let out = run_cli(
        database_url,
        &["apps", "create", "--name", name, "--tier", tier, "--json"],
    );
    assert!(
        out.status.success(),
        "apps create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("apps create --json");
    (
        created["app_id"].as_str().expect("app_id").to_owned(),
        created["api_key"].as_str().expect("api_key").to_owned(),
    )
}

/// A TCP proxy the test controls, between the server and PostgreSQL: `cut` closes
/// every proxied connection and refuses (or stalls) new ones until `restore`.
pub struct TcpProxy {
    pub port: u16,
    state: Arc<tokio::sync::watch::Sender<ProxyState>>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyState {
    Forward,
    /// New connections are accepted and closed at once.
    Refuse,
    /// New connections are accepted and never answered (a silent network).
    Stall,
}

impl TcpProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let (state, _) = tokio::sync::watch::channel(ProxyState::Forward);
        let state = Arc::new(state);
        let accept = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let mut changes = state.subscribe();
                    let now = *changes.borrow_and_update();
                    tokio::spawn(async move {
                        match now {
                            ProxyState::Refuse => drop(client),
                            // Held open, unanswered, until the next cut or restore.
                            ProxyState::Stall => {
                                let _ = changes.changed().await;
                            }
                            ProxyState::Forward => {
                                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await
                                else {
                                    return;
                                };
                                // Any state change ends the connection: a cut must
                                // close it, and a restore happens only after a cut.
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                    _ = changes.changed() => {}
                                }
                            }
                        }
                    });
                }
            }
        });
        Self {
            port,
            state,
            accept,
        }
    }

    /// Close every proxied connection; new ones are handled as `mode` says.
    pub fn cut(&self, mode: ProxyState) {
        assert_ne!(mode, ProxyState::Forward);
        self.state.send_replace(mode);
    }

    /// Forward new connections again.
    pub fn restore(&self) {
        self.state.send_replace(ProxyState::Forward);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.send_replace(ProxyState::Refuse);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! When the database cannot take writes, postbacks get 503 with `Retry-After`, and
//! ingestion recovers on its own once it can.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Connection;

use crate::both_backends;
use crate::helpers::{
    admin_url, assert_error, create_app_cli, pg_connect, wait_until, Backend, ProxyState,
    ServerProcess, TcpProxy, TestApp, TestDb,
};

both_backends!(database_that_cannot_write_gives_503_then_recovers);

async fn database_that_cannot_write_gives_503_then_recovers(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let install = |n: u32| json!({"network_name":"Liftoff","idfa":format!("00000000-0000-4000-8000-{n:012}")});

    // Take writes away: SQLite by holding the write lock, PostgreSQL by making the
    // database read-only and dropping the server's connections.
    let mut sqlite_lock = None;
    match &app.db {
        TestDb::Sqlite { url, .. } => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query("begin exclusive")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlite_lock = Some(conn);
        }
        TestDb::Postgres { name, .. } => set_pg_read_only(name, true).await,
    }
    let resp = app.post_kochava(&install(1)).await;
    assert!(
        resp.headers().contains_key("retry-after"),
        "503 carries Retry-After"
    );
    assert_error(resp, 503, "unavailable", "write refused").await;

    match &app.db {
        TestDb::Sqlite { .. } => {
            let mut conn = sqlite_lock.take().unwrap();
            sqlx::query("rollback").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        TestDb::Postgres { name, .. } => set_pg_read_only(name, false).await,
    }
    let (client, url, key) = (
        app.client.clone(),
        app.url("/v1/postbacks/kochava"),
        app.api_key.clone(),
    );
    wait_until(
        std::time::Duration::from_secs(10),
        "ingestion recovers",
        || {
            let (client, url, key) = (client.clone(), url.clone(), key.clone());
            async move {
                let resp = client
                    .post(url)
                    .header("x-api-key", key)
                    .json(&install(2))
                    .send()
                    .await
                    .unwrap();
                resp.status() == 200
            }
        },
    )
    .await;
    assert_eq!(
        app.count("select count(*) from postback_events").await,
        1,
        "only the acknowledged postback is stored"
    );
    app.stop().await;
}

async fn set_pg_read_only(database: &str, read_only: bool) {
    let mut admin = pg_connect(&admin_url()).await.unwrap();
    let setting = if read_only { "on" } else { "off" };
    sqlx::query(&format!(
        "alter database {database} set default_transaction_read_only = {setting}"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(&format!(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = '{database}' and pid <> pg_backend_pid()"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
}

// SQLite, read-only file: not tested. The server opens its single writer connection
// at start and keeps it for its whole life, so a `chmod 0444` of the file (or its
// folder) afterwards does not affect it; and the tests run as root here, for whom
// file modes do not restrict writes at all. A read-only database cannot be produced
// deterministically for a running server, so only the locked-database case above
// covers SQLite.

/// PostgreSQL goes away under load and comes back, behind a TCP proxy the test
/// controls: first refusing new connections, then silently stalling them. Each time
/// every postback gets its answer within the request timeout (200 or 503 with
/// `Retry-After`, never 500, never a hang), postbacks sent during the outage get 503,
/// `/readyz` turns 503, and both recover within 5 s of the restore without a restart.
/// Nothing acknowledged is missing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_under_load_answers_503_fast_and_recovers_without_restart() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let (_, key) = create_app_cli(db.url(), "outage", "enterprise");
    let upstream = pg_socket_addr(db.url());
    let proxy = TcpProxy::start(upstream).await;
    let proxied_url = db
        .url()
        .replace(&upstream.to_string(), &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(proxied_url, db.url(), "the server talks to the proxy");
    let request_timeout = Duration::from_millis(4000);
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::start(
            &proxied_url,
            &[
                ("PBG_HTTP__REQUEST_TIMEOUT_MS", "4000"),
                ("PBG_DATABASE__ACQUIRE_TIMEOUT_MS", "1000"),
            ],
        )
    })
    .await
    .unwrap();

    let load = Load::start(&server.address, &key, 8);
    load.wait_for(
        Duration::from_secs(20),
        "postbacks accepted before the outage",
        |r| r.status == 200,
        50,
    )
    .await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let readyz = format!("{}/readyz", server.address);
    let mut timings = Vec::new();
    for mode in [ProxyState::Refuse, ProxyState::Stall] {
        let cut_at = Instant::now();
        proxy.cut(mode);
        let first_503 = load
            .wait_for(
                request_timeout * 2,
                "postbacks get 503 during the outage",
                |r| r.sent >= cut_at && r.status == 503,
                1,
            )
            .await;
        wait_until(request_timeout * 2, "/readyz turns 503", || {
            let (client, readyz) = (client.clone(), readyz.clone());
            async move { client.get(readyz).send().await.unwrap().status() == 503 }
        })
        .await;
        let readyz_503 = cut_at.elapsed();
        // Stay down while the load keeps coming.
        load.wait_for(
            request_timeout * 3,
            "more 503s under load",
            |r| r.sent >= cut_at && r.status == 503,
            20,
        )
        .await;

        let restored_at = Instant::now();
        proxy.restore();
        let first_200 = load
            .wait_for(
                Duration::from_secs(5),
                "postbacks recover within 5 s",
                |r| r.sent >= restored_at && r.status == 200,
                1,
            )
            .await;
        wait_until(
            Duration::from_secs(5),
            "/readyz recovers within 5 s",
            || {
                let (client, readyz) = (client.clone(), readyz.clone());
                async move { client.get(readyz).send().await.unwrap().status() == 200 }
            },
        )
        .await;
        let readyz_200 = restored_at.elapsed();
        assert!(
            readyz_200 <= Duration::from_secs(5),
            "/readyz recovered after {readyz_200:?}"
        );
        timings.push(format!(
            "{mode:?}: first postback 503 after {:?}, /readyz 503 after {readyz_503:?}; \
             restored: first postback 200 after {:?}, /readyz 200 after {readyz_200:?}",
            first_503 - cut_at,
            first_200 - restored_at,
        ));
        // Steady again before the next outage.
        let steady = Instant::now();
        load.wait_for(
            Duration::from_secs(5),
            "postbacks flow again",
            |r| r.sent >= steady && r.status == 200,
            20,
        )
        .await;
    }
    let results = load.stop().await;

    // Every answer was a 200 or a 503 with Retry-After, within the request timeout.
    let margin = Duration::from_millis(1500);
    let mut statuses = std::collections::BTreeMap::new();
    for r in &results {
        *statuses.entry(r.status).or_insert(0) += 1;
        assert!(
            r.status == 200 || (r.status == 503 && r.retry_after && r.code == "unavailable"),
            "answer during an outage: {} {} (Retry-After: {})",
            r.status,
            r.code,
            r.retry_after
        );
        assert!(
            r.elapsed <= request_timeout + margin,
            "a postback took {:?} (request timeout {request_timeout:?})",
            r.elapsed
        );
    }
    let slowest = results.iter().map(|r| r.elapsed).max().unwrap_or_default();

    // Nothing acknowledged is missing; nothing is stored twice.
    let stored: std::collections::HashMap<String, String> = db
        .text_rows("select idfa, cast(id as text) from postback_events")
        .await
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(
        db.count("select count(*) from postback_events").await as usize,
        stored.len(),
        "one row per idfa"
    );
    let mut acknowledged = 0;
    for r in results.iter().filter(|r| r.status == 200) {
        acknowledged += 1;
        assert_eq!(
            stored.get(&r.idfa),
            r.event_id.as_ref(),
            "acknowledged {} is stored under its event id",
            r.idfa
        );
    }
    let (status, logs) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit 0 after the outages:\n{logs}");
    println!(
        "outage[Postgres]: requests={} statuses={statuses:?} acknowledged={acknowledged} \
         slowest={slowest:?}\n  {}",
        results.len(),
        timings.join("\n  ")
    );
}

/// host:port of a `postgres://user@host:port/db` URL.
pub fn pg_socket_addr(url: &str) -> std::net::SocketAddr {
    let rest = url.split_once('@').map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap();
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    hostport
        .parse()
        .expect("numeric host:port in the test database URL")
}

/// One answered (or failed) postback of the background load.
#[derive(Debug, Clone)]
struct LoadResult {
    idfa: String,
    sent: Instant,
    elapsed: Duration,
    status: u16,
    code: String,
    retry_after: bool,
    event_id: Option<String>,
}

/// Workers sending distinct Kochava installs without pause until stopped.
struct Load {
    results: Arc<Mutex<Vec<LoadResult>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(base: &str, key: &str, workers: usize) -> Self {
        let results = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|w| {
                let (results, stop) = (results.clone(), stop.clone());
                let (base, key) = (base.to_owned(), key.to_owned());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .unwrap();
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let idfa = format!("E0000000-0000-4000-8000-{w:04}{n:08}");
                        let sent = Instant::now();
                        let resp = client
                            .post(format!("{base}/v1/postbacks/kochava"))
                            .header("x-api-key", &key)
                            .json(&json!({"network_name": "Liftoff", "idfa": idfa}))
                            .send()
                            .await
                            .expect("the server answers every postback (no hang, no reset)");
                        let status = resp.status().as_u16();
                        let retry_after = resp.headers().contains_key("retry-after");
                        let body: Value = resp.json().await.expect("JSON body");
                        results.lock().unwrap().push(LoadResult {
                            idfa,
                            sent,
                            elapsed: sent.elapsed(),
                            status,
                            code: body["error"]["code"].as_str().unwrap_or("").to_owned(),
                            retry_after,
                            event_id: body["event_id"].as_str().map(str::to_owned),
                        });
                    }
                })
            })
            .collect();
        Self {
            results,
            stop,
            workers,
        }
    }

    /// Wait until `count` results match `pred`; returns when the last of them arrived.
    async fn wait_for(
        &self,
        deadline: Duration,
        what: &str,
        pred: impl Fn(&LoadResult) -> bool + Copy,
        count: usize,
    ) -> Instant {
        let found = Arc::new(Mutex::new(None));
        wait_until(deadline, what, || {
            let (results, found) = (self.results.clone(), found.clone());
            async move {
                let results = results.lock().unwrap();
                let matching: Vec<Instant> = results
                    .iter()
                    .filter(|r| pred(r))
                    .map(|r| r.sent + r.elapsed)
                    .collect();
                if matching.len() >= count {
                    *found.lock().unwrap() = matching.into_iter().max();
                    true
                } else {
                    false
                }
            }
        })
        .await;
        let at = found.lock().unwrap().expect("found");
        at
    }

    async fn stop(self) -> Vec<LoadResult> {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("load workers stop")
                .expect("load worker");
        }
        let results = self.results.lock().unwrap().clone();
        results
    }
}

//! When the database cannot take writes, postbacks get 503 with `Retry-After`, and
//! ingestion recovers on its own once it can.

use serde_json::json;
use sqlx::Connection;

use crate::both_backends;
use crate::helpers::{admin_url, assert_error, pg_connect, wait_until, Backend, TestApp, TestDb};

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

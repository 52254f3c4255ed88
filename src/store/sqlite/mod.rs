//! SQLite store: one writer connection (SQLite allows one writer at a time) and a small
//! read pool over one WAL file. UUIDs are lowercase hyphenated text, times fixed-width
//! UTC text (see [`TIME_FORMAT`]), the raw payload JSON text.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::Row;
use uuid::Uuid;

use super::batch::*;
use super::*;
use crate::domain::PartnerId;
use crate::domain::{AppId, ConnectionStatus, Identifiers, KeyHash, NewEvent, Segments, Tier};

mod apps;
mod deliveries;
mod destinations;
mod dry_run;
mod feed;
mod health;
mod ingest;
mod maintenance;
mod multi_row;
mod outbox;
mod privacy;
mod reads;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How every time is stored: always 6 fractional digits and `Z`, so the text sorts
/// like the time it encodes (sqlx's own chrono encoding varies the digits).
pub(crate) const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// How long a statement waits for another process's write lock (a CLI command
/// beside the server) before failing with BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's page cache, in KiB (negative: a size, not a page count). A
/// batch touches every index of several tables at each of its apps' places;
/// SQLite's default 2 MiB kept re-reading those pages from the OS.
const WRITER_CACHE_SIZE: &str = "-65536";

pub struct SqliteStore {
    /// Exactly one connection: every write goes through it, so this process never
    /// competes with itself for SQLite's single write lock.
    writer: SqlitePool,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Open (creating the file and its folder if missing) `sqlite://path` or `sqlite:path`.
    pub async fn open(url: &str, pool: &PoolConfig) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(store_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL syncs the WAL on every commit: an acknowledged postback survives
            // a power loss, not only a crash of this process.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = is_in_memory(url);
        if !in_memory {
            if let Some(folder) = options.get_filename().parent() {
                if !folder.as_os_str().is_empty() {
                    std::fs::create_dir_all(folder).map_err(|source| StoreError::Folder {
                        path: folder.to_owned(),
                        source,
                    })?;
                }
            }
        }
        // Kept open for the life of the store: reopening costs the pragmas, and an
        // in-memory database would vanish with its last connection.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(
                options
                    .clone()
                    .statement_cache_capacity(multi_row::WRITER_STATEMENT_CACHE)
                    .pragma("cache_size", WRITER_CACHE_SIZE),
            )
            .await
            .map_err(store_error)?;
        // An in-memory database lives in the writer's connection; readers would only
        // contend with it for shared-cache locks.
        let readers = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(pool.max_connections.max(1))
                .acquire_timeout(pool.acquire_timeout)
                .connect_with(options.create_if_missing(false))
                .await
                .map_err(store_error)?
        };
        Ok(Self { writer, readers })
    }

    /// A write transaction that takes the write lock at BEGIN, so it waits for another
    /// process's writer (busy timeout) instead of failing when it first writes.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.writer
            .begin_with("begin immediate")
            .await
            .map_err(store_error)
    }
}

/// `sqlite::memory:` or `mode=memory`, read the way sqlx reads the URL.
fn is_in_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|param| param == "mode=memory")
}

/// The one place sqlx errors become store errors: connection-level failures are
/// `Unavailable` (503, retried), everything else `Other`.
fn store_error(e: sqlx::Error) -> StoreError {
    let unavailable = is_connection_failure(&e)
        || match &e {
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(is_unavailable_code),
            _ => false,
        };
    if unavailable {
        StoreError::Unavailable(e)
    } else {
        StoreError::Other(e)
    }
}

/// Result codes of a file that is locked, read-only, failing, full or gone.
/// sqlx reports extended codes; their low byte is the primary code.
fn is_unavailable_code(code: i32) -> bool {
    matches!(
        code & 0xff,
        5 // SQLITE_BUSY
            | 6 // SQLITE_LOCKED
            | 8 // SQLITE_READONLY
            | 10 // SQLITE_IOERR
            | 13 // SQLITE_FULL
            | 14 // SQLITE_CANTOPEN
    )
}

fn time_text(t: DateTime<Utc>) -> String {
    t.format(TIME_FORMAT).to_string()
}

fn decode_error(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unexpected {what} {value:?} in the database").into())
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| decode_error("time", text))
}

fn time_col(row: &SqliteRow, col: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    parse_time(&row.try_get::<String, _>(col)?)
}

fn opt_time_col(row: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    row.try_get::<Option<String>, _>(col)?
        .as_deref()
        .map(parse_time)
        .transpose()
}

fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn uuid_col(row: &SqliteRow, col: &str) -> Result<Uuid, sqlx::Error> {
    let text: String = row.try_get(col)?;
    Uuid::parse_str(&text).map_err(|_| decode_error("uuid", &text))
}

fn app_id_col(row: &SqliteRow, col: &str) -> Result<AppId, sqlx::Error> {
    uuid_col(row, col).map(AppId::from_uuid)
}

fn tier_col(row: &SqliteRow, col: &str) -> Result<Tier, sqlx::Error> {
    let tier: String = row.try_get(col)?;
    tier.parse().map_err(|_| decode_error("tier", &tier))
}

fn partner_col(row: &SqliteRow, col: &str) -> Result<PartnerId, sqlx::Error> {
    let partner: String = row.try_get(col)?;
    partner
        .parse()
        .map_err(|_| decode_error("partner", &partner))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1")
            .execute(&self.readers)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    async fn pragma(pool: &SqlitePool, name: &str) -> String {
        let row = sqlx::query(&format!("pragma {name}"))
            .fetch_one(pool)
            .await
            .expect("pragma");
        row.try_get::<String, _>(0)
            .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
            .expect("pragma value")
    }

    #[tokio::test]
    async fn open_creates_file_and_folder_in_durable_wal_mode() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a").join("b").join("postbacks.db");
        // The short `sqlite:path` form is accepted as well as `sqlite://path`.
        let store = SqliteStore::open(
            &format!("sqlite:{}", path.display()),
            &PoolConfig::default(),
        )
        .await
        .expect("open");
        assert!(path.is_file(), "database file created with its folders");
        for pool in [&store.writer, &store.readers] {
            assert_eq!(pragma(pool, "journal_mode").await, "wal");
            assert_eq!(pragma(pool, "synchronous").await, "2", "FULL");
            assert_eq!(pragma(pool, "foreign_keys").await, "1");
            assert_eq!(pragma(pool, "busy_timeout").await, "5000");
        }
        assert_eq!(
            store.writer.options().get_max_connections(),
            1,
            "one writer"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn in_memory_database_works_through_the_writer() {
        let store = SqliteStore::open("sqlite::memory:", &PoolConfig::default())
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        assert!(store.list_apps().await.expect("list").is_empty());
        store.close().await;
    }

    #[test]
    fn times_are_fixed_width_and_sort_as_text() {
        let whole = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let times = [
            whole,
            whole + chrono::Duration::microseconds(1),
            whole + chrono::Duration::milliseconds(120),
            whole + chrono::Duration::seconds(1),
        ];
        let texts: Vec<String> = times.iter().copied().map(time_text).collect();
        assert_eq!(texts[0], "2024-05-01T12:00:00.000000Z");
        assert_eq!(texts[2], "2024-05-01T12:00:00.120000Z");
        assert!(texts.iter().all(|t| t.len() == texts[0].len()));
        assert!(
            texts.windows(2).all(|w| w[0] < w[1]),
            "text order is time order"
        );
        for (text, time) in texts.iter().zip(times) {
            assert_eq!(parse_time(text).expect("parse"), time);
        }
    }

    #[test]
    fn busy_locked_and_io_codes_mean_unavailable_by_their_primary_code() {
        for code in [
            5, 517, /* BUSY_SNAPSHOT */
            6, 8, 1032, /* READONLY_DBMOVED */
            10, 13, 14,
        ] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in [
            1, 19,   /* CONSTRAINT */
            2067, /* CONSTRAINT_UNIQUE */
            787,
        ] {
            assert!(!is_unavailable_code(code), "{code}");
        }
        assert!(matches!(
            store_error(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            store_error(sqlx::Error::RowNotFound),
            StoreError::Other(_)
        ));
    }

    #[test]
    fn in_memory_urls_are_recognised() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://:memory:"));
        assert!(is_in_memory("sqlite://db?mode=memory"));
        assert!(!is_in_memory("sqlite://data/postbacks.db"));
        assert!(!is_in_memory("sqlite:data/postbacks.db?mode=rwc"));
    }
}

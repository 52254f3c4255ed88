//! PostgreSQL store: a `PgPool` and runtime queries over `migrations/postgres`.
//! UUIDs are `uuid`, times `timestamptz`, the raw payload `jsonb`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, Postgres,
};
use sqlx::query::Query;
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
mod outbox;
mod privacy;
mod reads;

#[doc(hidden)]
pub use reads::{bind_list_users, bind_summary, list_users_sql, summary_sql};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long closing the store waits for connections still in use.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct PgStore {
    /// Reads and app management: planned per execution (see `connect`).
    pool: PgPool,
    /// The write path: statements whose plan is an index operation whatever the
    /// statistics (inserts from `unnest`, conflict arbiters, lateral key probes), so
    /// each is prepared and planned once per connection.
    writes: PgPool,
    /// The longest a batch transaction may take (`PoolConfig::transaction_timeout`).
    transaction_timeout: std::time::Duration,
    /// Which counter shard each batch in flight adds to (migration 0015).
    shards: ingest::CounterShards,
}

impl PgStore {
    pub async fn connect(url: &str, pool: &PoolConfig) -> Result<Self, StoreError> {
        let write_options = PgConnectOptions::from_str(url).map_err(store_error)?;
        // Reads: plan every statement with its actual parameters. A generic plan
        // cached while the tables are small (sequential scans) would stay in use as
        // they grow; planning a read costs far less than that.
        let options = write_options
            .clone()
            .options([("plan_cache_mode", "force_custom_plan")]);
        let config = pool;
        let pool = match PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => pool,
            // The pool retries until its deadline and then reports only that; one
            // plain connection attempt tells why (refused, unknown host, bad password).
            Err(sqlx::Error::PoolTimedOut) => {
                use sqlx::ConnectOptions;
                return Err(store_error(match options.connect().await {
                    Ok(_) => sqlx::Error::PoolTimedOut,
                    Err(cause) => cause,
                }));
            }
            Err(e) => return Err(store_error(e)),
        };
        let writes = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(write_options);
        Ok(Self {
            pool,
            writes,
            transaction_timeout: config.transaction_timeout,
            shards: ingest::CounterShards::new(),
        })
    }
}

/// The one place sqlx errors become store errors: connection-level failures are
/// `Unavailable` (503, retried), everything else `Other`.
fn store_error(e: sqlx::Error) -> StoreError {
    let unavailable = is_connection_failure(&e)
        || match &e {
            sqlx::Error::Database(db) => {
                db.code().is_some_and(|code| is_unavailable_sqlstate(&code))
            }
            _ => false,
        };
    if unavailable {
        StoreError::Unavailable(e)
    } else {
        StoreError::Other(e)
    }
}

/// SQLSTATEs of a server that is unreachable, shutting down, full or read-only.
fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "53300" // too_many_connections
                | "53100" // disk_full
                | "25006" // read_only_sql_transaction (standby, or a failover in progress)
        )
}

fn decode_error(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unexpected {what} {value:?} in the database").into())
}

fn tier_col(row: &PgRow, col: &str) -> Result<Tier, sqlx::Error> {
    let tier: String = row.try_get(col)?;
    tier.parse().map_err(|_| decode_error("tier", &tier))
}

fn partner_col(row: &PgRow, col: &str) -> Result<PartnerId, sqlx::Error> {
    let partner: String = row.try_get(col)?;
    partner
        .parse()
        .map_err(|_| decode_error("partner", &partner))
}

fn app_id_col(row: &PgRow, col: &str) -> Result<AppId, sqlx::Error> {
    row.try_get::<Uuid, _>(col).map(AppId::from_uuid)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn close(&self) {
        // `Pool::close` waits for every connection to come back. One whose server
        // vanished without closing it may never do so: sqlx's listener, dropped,
        // runs `UNLISTEN *` on its connection first, and on a silent one that waits
        // for good. Exiting closes whatever is left.
        let closing = async {
            self.pool.close().await;
            self.writes.close().await;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            tracing::warn!(
                "database connections still busy {CLOSE_TIMEOUT:?} after the pools were \
                 closed (a server that stopped answering); leaving them to the exit"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_availability_sqlstates_mean_unavailable() {
        for code in [
            "08000", "08006", "08P01", "57P01", "57P02", "57P03", "53300", "53100", "25006",
        ] {
            assert!(is_unavailable_sqlstate(code), "{code}");
        }
        for code in ["23505", "40001", "40P01", "42P01", "22P02", "57014"] {
            assert!(!is_unavailable_sqlstate(code), "{code}");
        }
        assert!(matches!(
            store_error(sqlx::Error::PoolClosed),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            store_error(sqlx::Error::RowNotFound),
            StoreError::Other(_)
        ));
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        let pool = PoolConfig {
            max_connections: 1,
            acquire_timeout: std::time::Duration::from_secs(2),
            ..PoolConfig::default()
        };
        // Port 1 on loopback: nothing listens there.
        let result = PgStore::connect("postgres://postgres@127.0.0.1:1/postgres", &pool).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{:?}",
            result.err()
        );
    }
}

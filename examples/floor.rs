//! The durable floor for `scripts/bench`: the leanest server that still answers 200
//! only after the database committed. Same route and the same decoding, parsing and
//! hashing as the gateway (`partners::read`, as in `echo`), then a group-commit
//! writer that runs ONE multi-row insert per batch into ONE table, and only then
//! answers. No key lookup (any non-empty key is accepted; the app id is a hash of the
//! key, so several keys spread over several apps), no quota, no first-touch
//! attribution, no counters. What the gateway does beyond this is what a batch costs
//! above the floor.
//!
//!     DATABASE_URL=postgres://postgres@127.0.0.1:5432/floor \
//!         cargo run --release --example floor -- 127.0.0.1:8091
//!     DATABASE_URL=sqlite:///tmp/floor.db cargo run --release --example floor
//!
//! - PostgreSQL: one autocommit `insert … select … from unnest(…) on conflict
//!   (app_id, partner, dedupe_key) do nothing returning id` per batch into
//!   `floor_events` (the columns of `postback_events`; indexes: primary key, unique
//!   dedupe key, (app_id, received_at)), created at start if missing. One pooled
//!   connection per writer; rows of a batch in dedupe-key order, as the gateway.
//! - SQLite: one writer connection, WAL, `synchronous = FULL` (as the gateway), one
//!   `begin immediate … commit` per batch of multi-row inserts of up to 64 rows,
//!   each statement prepared once and cached.
//!
//! Environment: `DATABASE_URL` (required), `FLOOR_WRITERS` (default 2, the gateway's
//! `writer.writers`), `FLOOR_MAX_BATCH` (512), `FLOOR_MAX_WAIT_MS` (1),
//! `FLOOR_QUEUE` (8192; when full: 503). Answers `{"status":"accepted","event_id":…}`
//! or `{"status":"duplicate","event_id":<first>}` after the commit, `ignored` for
//! organic deliveries (no write), 400/401/404/405 like the gateway, 503 when the
//! database fails.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use postback_gateway::domain::{ApiKey, Postback};
use postback_gateway::partners::{self, Accepted, Decision, Method, PartnerId};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row as _;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

/// One accepted delivery, ready to insert.
struct Row {
    id: Uuid,
    app_id: Uuid,
    partner: PartnerId,
    postback: Postback,
    dedupe_key: String,
    /// The request's fields (without the API key) as JSON text.
    raw: String,
    received_at: DateTime<Utc>,
}

#[derive(Clone, Copy)]
enum Answer {
    Accepted(Uuid),
    Duplicate(Uuid),
}

type Job = (Row, oneshot::Sender<Answer>);

#[derive(Clone, Copy)]
struct Config {
    writers: usize,
    max_batch: usize,
    max_wait: Duration,
    queue: usize,
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}: cannot parse {v:?}")),
        Err(_) => default,
    }
}

const COLUMNS: &str = "id, app_id, partner, kind, event_name, source, campaign, adgroup, ad, \
     user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
     ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, raw_payload";

enum Db {
    Postgres(PgPool),
    Sqlite {
        pool: SqlitePool,
        /// `INSERTS[n - 1]`: the insert of n rows, 1 ≤ n ≤ [`SQLITE_ROWS_PER_INSERT`].
        inserts: Vec<String>,
    },
}

/// Rows per SQLite insert statement: 64 × 22 parameters, and at most 64 distinct
/// statements in the connection's statement cache.
const SQLITE_ROWS_PER_INSERT: usize = 64;

/// Stored times in SQLite, as the gateway stores them (fixed width, sorts as text).
const SQLITE_TIME: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

impl Db {
    async fn open(url: &str, writers: usize) -> Result<Self, sqlx::Error> {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(writers as u32)
                .connect(url)
                .await?;
            sqlx::raw_sql(
                "create table if not exists floor_events (
                    id uuid primary key,
                    app_id uuid not null,
                    partner text not null,
                    kind text not null,
                    event_name text,
                    source text, campaign text, adgroup text, ad text,
                    user_id text, idfa text, idfv text, google_aid text, android_id text,
                    partner_device_id text,
                    ip text, user_agent text, partner_event_id text,
                    event_time timestamptz,
                    received_at timestamptz not null,
                    dedupe_key text not null,
                    raw_payload jsonb not null,
                    constraint floor_events_dedupe unique (app_id, partner, dedupe_key)
                );
                create index if not exists floor_events_received
                    on floor_events (app_id, received_at);",
            )
            .execute(&pool)
            .await?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?;
            sqlx::raw_sql(
                "create table if not exists floor_events (
                    id text primary key,
                    app_id text not null,
                    partner text not null,
                    kind text not null,
                    event_name text,
                    source text, campaign text, adgroup text, ad text,
                    user_id text, idfa text, idfv text, google_aid text, android_id text,
                    partner_device_id text,
                    ip text, user_agent text, partner_event_id text,
                    event_time text,
                    received_at text not null,
                    dedupe_key text not null,
                    raw_payload text not null,
                    constraint floor_events_dedupe unique (app_id, partner, dedupe_key)
                ) strict;
                create index if not exists floor_events_received
                    on floor_events (app_id, received_at);",
            )
            .execute(&pool)
            .await?;
            let row = format!("({})", vec!["?"; 22].join(", "));
            let inserts = (1..=SQLITE_ROWS_PER_INSERT)
                .map(|n| {
                    format!(
                        "insert into floor_events ({COLUMNS}) values {} \
                         on conflict (app_id, partner, dedupe_key) do nothing returning id",
                        vec![row.as_str(); n].join(", ")
                    )
                })
                .collect();
            Ok(Db::Sqlite { pool, inserts })
        } else {
            panic!("DATABASE_URL must start with postgres:// or sqlite:");
        }
    }

    /// Write one batch; committed when this returns `Ok`. One answer per row, in order.
    async fn write(&self, rows: &[Row]) -> Result<Vec<Answer>, sqlx::Error> {
        match self {
            Db::Postgres(pool) => write_postgres(pool, rows).await,
            Db::Sqlite { pool, inserts } => write_sqlite(pool, inserts, rows).await,
        }
    }
}

async fn write_postgres(pool: &PgPool, rows: &[Row]) -> Result<Vec<Answer>, sqlx::Error> {
    let col = |f: fn(&Row) -> Option<&str>| -> Vec<Option<&str>> { rows.iter().map(f).collect() };
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "insert into floor_events (id, app_id, partner, kind, event_name, source, campaign, \
             adgroup, ad, user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
             ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, raw_payload) \
         select id, app_id, partner, kind, event_name, source, campaign, adgroup, ad, \
             user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
             ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, raw::jsonb \
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], \
             $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], \
             $16::text[], $17::text[], $18::text[], $19::timestamptz[], $20::timestamptz[], \
             $21::text[], $22::text[]) \
           as t(id, app_id, partner, kind, event_name, source, campaign, adgroup, ad, \
             user_id, idfa, idfv, google_aid, android_id, partner_device_id, \
             ip, user_agent, partner_event_id, event_time, received_at, dedupe_key, raw) \
         on conflict (app_id, partner, dedupe_key) do nothing \
         returning id",
    )
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.app_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.partner.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.postback.kind.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(col(|r| r.postback.event_name.as_deref()))
    .bind(col(|r| r.postback.segments.source.as_deref()))
    .bind(col(|r| r.postback.segments.campaign.as_deref()))
    .bind(col(|r| r.postback.segments.adgroup.as_deref()))
    .bind(col(|r| r.postback.segments.ad.as_deref()))
    .bind(col(|r| r.postback.ids.user_id.as_deref()))
    .bind(col(|r| r.postback.ids.idfa.as_deref()))
    .bind(col(|r| r.postback.ids.idfv.as_deref()))
    .bind(col(|r| r.postback.ids.google_aid.as_deref()))
    .bind(col(|r| r.postback.ids.android_id.as_deref()))
    .bind(col(|r| r.postback.ids.partner_device_id.as_deref()))
    .bind(col(|r| r.postback.ip.as_deref()))
    .bind(col(|r| r.postback.user_agent.as_deref()))
    .bind(col(|r| r.postback.partner_event_id.as_deref()))
    .bind(
        rows.iter()
            .map(|r| r.postback.event_time)
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.received_at).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.dedupe_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.raw.as_str()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();
    let mut answers: Vec<Option<Answer>> = rows
        .iter()
        .map(|r| inserted.contains(&r.id).then_some(Answer::Accepted(r.id)))
        .collect();
    // Not inserted: stored before, or an earlier copy in this batch. Both are committed
    // now (ON CONFLICT waited for any other writer's transaction); read their ids.
    let dups: Vec<usize> = (0..rows.len()).filter(|&i| answers[i].is_none()).collect();
    if !dups.is_empty() {
        let found = sqlx::query(
            "select t.ord, e.id from unnest($1::int4[], $2::uuid[], $3::text[], $4::text[]) \
               as t(ord, app_id, partner, dedupe_key) \
             join floor_events e on e.app_id = t.app_id and e.partner = t.partner \
               and e.dedupe_key = t.dedupe_key",
        )
        .bind(dups.iter().map(|&i| i as i32).collect::<Vec<_>>())
        .bind(dups.iter().map(|&i| rows[i].app_id).collect::<Vec<_>>())
        .bind(
            dups.iter()
                .map(|&i| rows[i].partner.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            dups.iter()
                .map(|&i| rows[i].dedupe_key.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_all(pool)
        .await?;
        for row in found {
            let ord: i32 = row.try_get(0)?;
            answers[ord as usize] = Some(Answer::Duplicate(row.try_get(1)?));
        }
    }
    answers
        .into_iter()
        .map(|a| a.ok_or(sqlx::Error::RowNotFound))
        .collect()
}

async fn write_sqlite(
    pool: &SqlitePool,
    inserts: &[String],
    rows: &[Row],
) -> Result<Vec<Answer>, sqlx::Error> {
    let text = |u: Uuid| u.hyphenated().to_string();
    let time = |t: DateTime<Utc>| t.format(SQLITE_TIME).to_string();
    let mut tx = pool.begin_with("begin immediate").await?;
    let mut inserted: HashSet<String> = HashSet::with_capacity(rows.len());
    for chunk in rows.chunks(SQLITE_ROWS_PER_INSERT) {
        let mut query = sqlx::query(&inserts[chunk.len() - 1]);
        for r in chunk {
            let p = &r.postback;
            query = query
                .bind(text(r.id))
                .bind(text(r.app_id))
                .bind(r.partner.as_str())
                .bind(p.kind.as_str())
                .bind(p.event_name.as_deref())
                .bind(p.segments.source.as_deref())
                .bind(p.segments.campaign.as_deref())
                .bind(p.segments.adgroup.as_deref())
                .bind(p.segments.ad.as_deref())
                .bind(p.ids.user_id.as_deref())
                .bind(p.ids.idfa.as_deref())
                .bind(p.ids.idfv.as_deref())
                .bind(p.ids.google_aid.as_deref())
                .bind(p.ids.android_id.as_deref())
                .bind(p.ids.partner_device_id.as_deref())
                .bind(p.ip.as_deref())
                .bind(p.user_agent.as_deref())
                .bind(p.partner_event_id.as_deref())
                .bind(p.event_time.map(time))
                .bind(time(r.received_at))
                .bind(r.dedupe_key.as_str())
                .bind(r.raw.as_str());
        }
        for row in query.fetch_all(&mut *tx).await? {
            inserted.insert(row.try_get(0)?);
        }
    }
    let mut answers = Vec::with_capacity(rows.len());
    for r in rows {
        if inserted.contains(&text(r.id)) {
            answers.push(Answer::Accepted(r.id));
        } else {
            let first: String = sqlx::query_scalar(
                "select id from floor_events where app_id = ? and partner = ? and dedupe_key = ?",
            )
            .bind(text(r.app_id))
            .bind(r.partner.as_str())
            .bind(r.dedupe_key.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let first = Uuid::parse_str(&first).map_err(|e| sqlx::Error::Decode(e.into()))?;
            answers.push(Answer::Duplicate(first));
        }
    }
    tx.commit().await?;
    Ok(answers)
}

/// One writer: take a batch off the shared queue (one writer at a time, up to
/// `max_batch`, waiting at most `max_wait` for more), write it, then answer.
async fn writer(db: Arc<Db>, rx: Arc<Mutex<mpsc::Receiver<Job>>>, config: Config) {
    loop {
        let mut jobs: Vec<Job> = Vec::with_capacity(config.max_batch);
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, config.max_batch).await == 0 {
                return;
            }
            let deadline = tokio::time::Instant::now() + config.max_wait;
            while jobs.len() < config.max_batch {
                let room = config.max_batch - jobs.len();
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut jobs, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        // Dedupe-key order, so concurrent batches take index locks in one order.
        jobs.sort_by(|(a, _), (b, _)| {
            (a.app_id, a.partner.as_str(), &a.dedupe_key).cmp(&(
                b.app_id,
                b.partner.as_str(),
                &b.dedupe_key,
            ))
        });
        let (rows, waiters): (Vec<Row>, Vec<_>) = jobs.into_iter().unzip();
        match db.write(&rows).await {
            Ok(answers) => {
                for (done, answer) in waiters.into_iter().zip(answers) {
                    let _ = done.send(answer);
                }
            }
            // Dropping the senders answers 503.
            Err(e) => eprintln!("floor: batch of {} failed: {e}", rows.len()),
        }
    }
}

#[derive(Clone)]
struct Floor {
    tx: mpsc::Sender<Job>,
}

/// The app a key stands for: a UUID from the key's SHA-256, no lookup.
fn app_of(key: &ApiKey) -> Uuid {
    let digest = Sha256::digest(key.expose().as_bytes());
    let bytes: [u8; 16] = digest[..16].try_into().expect("32-byte digest");
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

async fn receive(
    State(floor): State<Floor>,
    Path(partner): Path<String>,
    method: HttpMethod,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let received_at = Utc::now();
    let Ok(partner) = partner.parse::<PartnerId>() else {
        return problem(StatusCode::NOT_FOUND, "unknown_partner");
    };
    let method = match method {
        HttpMethod::GET => Method::Get,
        HttpMethod::POST => Method::Post,
        _ => return problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    };
    let query = query.unwrap_or_default();
    let Some(delivery) = partners::read(partner, method, &query, &body) else {
        return problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    };
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .and_then(ApiKey::presented)
        .or(delivery.api_key);
    let Some(key) = key else {
        return problem(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let accepted = match delivery.decision {
        Decision::Accepted(accepted) => accepted,
        Decision::Organic(_) => {
            return Json(json!({"status": "ignored", "reason": "organic"})).into_response()
        }
        Decision::Invalid(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Accepted {
        postback,
        dedupe_key,
        raw,
    } = *accepted;
    let row = Row {
        id: Uuid::now_v7(),
        app_id: app_of(&key),
        partner,
        postback,
        dedupe_key,
        raw: Value::Object(raw).to_string(),
        received_at,
    };
    let (done, answer) = oneshot::channel();
    if floor.tx.try_send((row, done)).is_err() {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    match answer.await {
        Ok(Answer::Accepted(id)) => Json(json!({"status": "accepted", "event_id": id})),
        Ok(Answer::Duplicate(id)) => Json(json!({"status": "duplicate", "event_id": id})),
        Err(_) => return problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
    .into_response()
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8091".to_owned());
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (postgres://… or sqlite:…)");
    let config = Config {
        writers: env_or("FLOOR_WRITERS", 2usize).max(1),
        max_batch: env_or("FLOOR_MAX_BATCH", 512usize).max(1),
        max_wait: Duration::from_millis(env_or("FLOOR_MAX_WAIT_MS", 1u64)),
        queue: env_or("FLOOR_QUEUE", 8192usize).max(1),
    };
    let db = Arc::new(Db::open(&url, config.writers).await.expect("database"));
    let (tx, rx) = mpsc::channel(config.queue);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..config.writers {
        tokio::spawn(writer(db.clone(), rx.clone(), config));
    }
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("floor listening on {addr}");
    let app = Router::new()
        .route("/v1/postbacks/{partner}", any(receive))
        .layer(DefaultBodyLimit::max(65_536))
        .with_state(Floor { tx });
    axum::serve(listener, app).await.expect("serve");
}

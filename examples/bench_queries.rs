//! Read-side latency on a seeded PostgreSQL database (see `scripts/seed`).
//!
//! ```text
//! cargo run --release --example bench_queries -- [--url URL] [--app APP_ID]
//!     [--users-runs 200] [--summary-runs 20] [--limit 50] [--explain]
//! ```
//!
//! Every timing is one call of the store's own method (`PgStore::list_users`,
//! `PgStore::summary`, …) through its pool: the same SQL text, prepared statements
//! and row decoding as the server, measured from the call to the decoded rows.
//! Each shape cycles through several values taken from the seeded data, from the
//! most to the least frequent. `--explain` prints `EXPLAIN (ANALYZE, BUFFERS)` of
//! each shape for its first value, built by the same SQL builders and binders.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::Row;

use postback_gateway::domain::AppId;
use postback_gateway::store::postgres::{
    bind_list_users, bind_summary, list_users_sql, summary_sql, PgStore,
};
use postback_gateway::store::prelude::*;
use postback_gateway::store::{Dimension, PoolConfig, UserCursor, UserFilter};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/pbg_bench";
const DIMENSIONS: [Dimension; 4] = [
    Dimension::Source,
    Dimension::Campaign,
    Dimension::Adgroup,
    Dimension::Ad,
];

struct Args {
    url: String,
    app: Option<AppId>,
    users_runs: usize,
    summary_runs: usize,
    limit: u32,
    explain: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into()),
        app: None,
        users_runs: 200,
        summary_runs: 20,
        limit: 50,
        explain: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--app" => args.app = Some(value()?.parse().map_err(|_| "bad --app")?),
            "--users-runs" => args.users_runs = value()?.parse().map_err(|_| "bad number")?,
            "--summary-runs" => args.summary_runs = value()?.parse().map_err(|_| "bad number")?,
            "--limit" => args.limit = value()?.parse().map_err(|_| "bad number")?,
            "--explain" => args.explain = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// One query shape: a name and the argument sets it cycles through.
enum Shape {
    Users {
        name: String,
        calls: Vec<(UserFilter, Option<UserCursor>)>,
    },
    Summary {
        name: String,
        by: Dimension,
        since: DateTime<Utc>,
    },
    Daily {
        name: String,
        since: DateTime<Utc>,
    },
}

fn filter_on(by: Dimension, value: &str) -> UserFilter {
    let mut filter = UserFilter::default();
    let value = Some(value.to_owned());
    match by {
        Dimension::Source => filter.source = value,
        Dimension::Campaign => filter.campaign = value,
        Dimension::Adgroup => filter.adgroup = value,
        Dimension::Ad => filter.ad = value,
    }
    filter
}

/// Nearest-rank percentile of sorted durations, in ms.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let probe = PgPool::connect(&args.url).await?;
    let app = match args.app {
        Some(app) => app,
        None => {
            let id: uuid::Uuid = sqlx::query_scalar(
                "select a.id from apps a where a.name = 'bench' order by a.created_at desc limit 1",
            )
            .fetch_one(&probe)
            .await
            .map_err(|e| format!("no app named bench (run scripts/seed first?): {e}"))?;
            AppId::from_uuid(id)
        }
    };
    let app_uuid = app.as_uuid();
    let (count, newest): (i64, DateTime<Utc>) = sqlx::query_as(
        "select count(*), coalesce(max(attributed_at), now()) from attributions where app_id = $1",
    )
    .bind(app_uuid)
    .fetch_one(&probe)
    .await?;
    // "The last 30 days" of the data, so an older seed measures the same range.
    let since = newest - chrono::Duration::days(30);
    println!("app {app}: {count} attributions, newest {newest}");

    // Values per dimension, from the most to the least frequent (quantiles of the
    // ranking), plus for campaigns the one whose installs ended longest ago: with
    // LIMIT and newest-first order it is the value a planner can get most wrong.
    let mut shapes = Vec::new();
    for by in DIMENSIONS {
        let column = by.column();
        let ranked: Vec<(String, i64)> = sqlx::query_as(&format!(
            "select {column}, count(*) from attributions where app_id = $1 and {column} is not null \
             group by 1 order by 2 desc, 1"
        ))
        .bind(app_uuid)
        .fetch_all(&probe)
        .await?;
        if ranked.is_empty() {
            return Err(format!("no {column} values in the data").into());
        }
        let mut picks: Vec<(String, i64)> = [0.0, 0.25, 0.5, 0.75, 1.0]
            .iter()
            .map(|q| ranked[((ranked.len() - 1) as f64 * q) as usize].clone())
            .collect();
        if by == Dimension::Campaign {
            let ended: String = sqlx::query_scalar(
                "select campaign from attributions where app_id = $1 and campaign is not null \
                 group by 1 order by max(attributed_at), 1 limit 1",
            )
            .bind(app_uuid)
            .fetch_one(&probe)
            .await?;
            let rows = ranked.iter().find(|(v, _)| *v == ended).map_or(0, |r| r.1);
            picks.push((ended, rows));
        }
        picks.dedup();
        println!(
            "  {column}: {} values; picked {}",
            ranked.len(),
            picks
                .iter()
                .map(|(v, n)| format!("{v} ({n} rows)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        shapes.push(Shape::Users {
            name: format!("users by {column}"),
            calls: picks
                .iter()
                .map(|(value, _)| (filter_on(by, value), None))
                .collect(),
        });
    }

    // All four together: the segments of existing rows at spread-out ages.
    let mut combos = Vec::new();
    for offset in [10_i64, 1_000, 100_000, 400_000, 800_000] {
        let row = sqlx::query(
            "select source, campaign, adgroup, ad from attributions \
             where app_id = $1 and ad is not null \
             order by attributed_at desc, id desc offset $2 limit 1",
        )
        .bind(app_uuid)
        .bind(offset.min(count.max(1) - 1))
        .fetch_optional(&probe)
        .await?;
        if let Some(row) = row {
            combos.push(UserFilter {
                source: row.try_get("source")?,
                campaign: row.try_get("campaign")?,
                adgroup: row.try_get("adgroup")?,
                ad: row.try_get("ad")?,
                partner: None,
            });
        }
    }
    combos.dedup();
    shapes.push(Shape::Users {
        name: "users by all four".into(),
        calls: combos.iter().map(|f| (f.clone(), None)).collect(),
    });

    let store = PgStore::connect(
        &args.url,
        &PoolConfig {
            max_connections: 2,
            ..PoolConfig::default()
        },
    )
    .await?;

    // Second pages: the cursor is the last row of each combination's first page.
    let mut second_pages = Vec::new();
    for filter in &combos {
        let first = store.list_users(app, filter, None, args.limit).await?;
        if first.len() == args.limit as usize {
            let last = first.last().expect("a full page");
            let cursor = UserCursor {
                attributed_at: last.attributed_at,
                id: last.id,
            };
            second_pages.push((filter.clone(), Some(cursor)));
        }
    }
    if second_pages.is_empty() {
        println!(
            "  (no combination fills a first page of {}; using the source filter)",
            args.limit
        );
        if let Some(Shape::Users { calls, .. }) = shapes.first() {
            let filter = calls[0].0.clone();
            let first = store.list_users(app, &filter, None, args.limit).await?;
            let last = first.last().ok_or("no rows at all")?;
            second_pages.push((
                filter,
                Some(UserCursor {
                    attributed_at: last.attributed_at,
                    id: last.id,
                }),
            ));
        }
    }
    shapes.push(Shape::Users {
        name: "users by all four, page 2".into(),
        calls: second_pages,
    });
    for by in DIMENSIONS {
        shapes.push(Shape::Summary {
            name: format!("summary by {}, 30 days", by.column()),
            by,
            since,
        });
    }
    shapes.push(Shape::Daily {
        name: "daily by source, 30 days".into(),
        since,
    });

    if args.explain {
        for shape in &shapes {
            explain(&probe, app, shape, args.limit).await?;
        }
    }

    println!(
        "\n{:<30} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "query", "runs", "rows/call", "p50 ms", "p99 ms", "max ms"
    );
    for shape in &shapes {
        let runs = match shape {
            Shape::Users { .. } => args.users_runs,
            _ => args.summary_runs,
        };
        let (name, variants) = match shape {
            Shape::Users { name, calls } => (name, calls.len()),
            Shape::Summary { name, .. } | Shape::Daily { name, .. } => (name, 1),
        };
        // Warm-up: each variant once on each pooled connection (prepares the
        // statements and reads the pages the runs will read).
        for i in 0..variants * 2 {
            run(&store, app, shape, i, args.limit).await?;
        }
        let mut times = Vec::with_capacity(runs);
        let mut rows = 0;
        for i in 0..runs {
            let started = Instant::now();
            rows += run(&store, app, shape, i, args.limit).await?;
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "{:<30} {:>5} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
            name,
            runs,
            rows as f64 / runs as f64,
            percentile(&times, 50.0),
            percentile(&times, 99.0),
            percentile(&times, 100.0),
        );
    }
    store.close().await;
    probe.close().await;
    Ok(())
}

/// The `i`-th call of a shape (cycling through its variants); the number of rows.
async fn run(
    store: &PgStore,
    app: AppId,
    shape: &Shape,
    i: usize,
    limit: u32,
) -> Result<usize, Box<dyn std::error::Error>> {
    Ok(match shape {
        Shape::Users { calls, .. } => {
            let (filter, cursor) = &calls[i % calls.len()];
            store
                .list_users(app, filter, cursor.as_ref(), limit)
                .await?
                .len()
        }
        Shape::Summary { by, since, .. } => store
            .summary(app, *by, Some(*since), None, 100)
            .await?
            .rows
            .len(),
        Shape::Daily { since, .. } => store
            .daily_installs_by_source(app, since.date_naive(), 8)
            .await?
            .len(),
    })
}

async fn explain(
    pool: &PgPool,
    app: AppId,
    shape: &Shape,
    limit: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    let (name, lines): (&str, Vec<String>) = match shape {
        Shape::Users { name, calls } => {
            let (filter, cursor) = &calls[0];
            let sql = format!(
                "explain (analyze, buffers) {}",
                list_users_sql(filter, cursor.is_some())
            );
            let query = bind_list_users(sqlx::query(&sql), app, filter, cursor.as_ref(), limit);
            (name, plan_lines(query.fetch_all(pool).await?)?)
        }
        Shape::Summary { name, by, since } => {
            let sql = format!(
                "explain (analyze, buffers) {}",
                summary_sql(*by, true, false)
            );
            let query = bind_summary(sqlx::query(&sql), app, Some(*since), None, 100);
            (name, plan_lines(query.fetch_all(pool).await?)?)
        }
        Shape::Daily { .. } => return Ok(()),
    };
    println!("\n== {name}\n{}", lines.join("\n"));
    Ok(())
}

fn plan_lines(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<String>, sqlx::Error> {
    rows.iter().map(|row| row.try_get::<String, _>(0)).collect()
}

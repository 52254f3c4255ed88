//! The command line: `serve` (default), `migrate`, `apps …`, `destinations …`,
//! `deliveries …`, `prune`, and the offline
//! `check-url`. Every command but `check-url` opens the configured database and
//! applies pending migrations first.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use serde_json::json;
use uuid::Uuid;

use crate::apps::{self, CreatedApp};
use crate::config::Config;
use crate::domain::{AppId, PartnerId, Tier};
use crate::store::forwarding::DestinationWhat;
use crate::{open_store, shutdown_signal, App, StartError};

#[derive(Debug, Parser)]
#[command(
    name = "postback-gateway",
    version,
    about = "Receives mobile attribution postbacks and stores attributed installs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default command).
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8080 (overrides LISTEN_ADDR).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply pending migrations and exit.
    Migrate,
    /// Manage apps and their API keys.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Manage an app's forwarding destinations (signed webhooks).
    #[command(subcommand)]
    Destinations(DestinationsCommand),
    /// Erase a user on request (GDPR, CCPA).
    #[command(subcommand)]
    Users(crate::users_cli::UsersCommand),
    /// Read the delivery log: what each postback was answered, and why.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Check a postback URL as copied from a partner's dashboard, offline: the
    /// partner, api_key, which dimensions and identifiers have a macro, unknown
    /// macros, duplicated keys. Exits 1 when it has problems.
    CheckUrl {
        /// The whole URL, in quotes.
        url: String,
        /// The partner POSTs its fields in a body (Singular's or AppsFlyer's JSON):
        /// check the partner and the key only.
        #[arg(long)]
        post: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove stored events and dedupe keys past retention (`retention.*`), and clear
    /// the raw payload, IP address and user agent of events past `privacy.raw_days`.
    Prune {
        /// Report what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app; prints its id and its API key (shown only this once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "standard", value_parser = parse_tier)]
        tier: Tier,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List apps with their tier and key prefixes (never the keys).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Issue a new API key; the old one keeps working for the grace period.
    RotateKey {
        app_id: AppId,
        /// Hours the current key keeps working.
        #[arg(long, default_value_t = 24)]
        grace_hours: u32,
        #[arg(long)]
        json: bool,
    },
    /// Change an app's tier (standard: hourly quota; enterprise: unlimited).
    SetTier {
        app_id: AppId,
        #[arg(value_parser = parse_tier)]
        tier: Tier,
    },
}

#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// Add a destination; prints its id and its signing secret (shown only this once).
    /// Loopback, link-local and private addresses are refused unless
    /// forwarding.allow_private_targets is set.
    Add {
        app_id: AppId,
        /// Where messages are POSTed: an http(s) URL.
        #[arg(long)]
        url: String,
        /// attributions: one message per new first-touch attribution; events: one
        /// per accepted delivery, installs included; all: both.
        #[arg(long, default_value = "attributions", value_parser = parse_what)]
        what: DestinationWhat,
        /// Print {"destination_id","url","what","secret"} instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List an app's destinations with their state, backlog and dead count (never
    /// the secrets).
    List {
        app_id: AppId,
        #[arg(long)]
        json: bool,
    },
    /// Stop sending to a destination: it gets no new messages and its pending
    /// messages wait until `enable`.
    Disable { destination_id: Uuid },
    /// Send to a destination again, its waiting messages first.
    Enable { destination_id: Uuid },
    /// Delete a destination and all its messages (pending, dead and delivered).
    Remove { destination_id: Uuid },
    /// Give a destination a new signing secret (shown only this once); the old one
    /// stops signing at once.
    RotateSecret {
        destination_id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Re-queue a destination's messages: they are sent again, with the same
    /// webhook-id. Say which: --dead, --since, or both.
    Replay {
        destination_id: Uuid,
        /// Only dead messages (without it: dead and delivered ones).
        #[arg(long)]
        dead: bool,
        /// Only messages created at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Print an app's last deliveries, oldest of them first, one line each.
    Tail {
        app_id: AppId,
        /// Only this partner's.
        #[arg(long, value_parser = parse_partner)]
        partner: Option<PartnerId>,
        /// How many to print (1–1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Keep printing new deliveries as they arrive (until Ctrl-C).
        #[arg(long)]
        follow: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        })
        .map_err(|_| format!("{s:?} is not an RFC 3339 time or YYYY-MM-DD"))
}

fn parse_partner(s: &str) -> Result<PartnerId, String> {
    s.parse()
        .map_err(|_| format!("unknown partner {s:?}; expected one of kochava, tune, appsflyer, adjust, singular, branch"))
}

fn parse_what(s: &str) -> Result<DestinationWhat, String> {
    DestinationWhat::parse(s)
        .ok_or_else(|| format!("unknown {s:?}; expected attributions, events or all"))
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    s.parse()
        .map_err(|e: crate::domain::InvalidTier| e.to_string())
}

/// Run one command; what it prints goes to stdout, errors are returned.
pub async fn run(cli: Cli, mut config: Config) -> Result<(), StartError> {
    match cli.command.unwrap_or(Command::Serve { listen: None }) {
        Command::Serve { listen } => {
            if let Some(addr) = listen {
                config.listen_addr = addr;
            }
            let app = App::build(config).await?;
            let shutdown = shutdown_signal();
            if let Some(created) = &app.created_default_app {
                println!("{}", apps::describe_new_app(created, app.printout()));
                if let Err(e) = apps::mark_shown(app.store().as_ref(), created).await {
                    tracing::warn!(error = %crate::error_chain(&e), "could not record that the key was shown");
                }
            }
            for never_shown in &app.keys_never_shown {
                let message = apps::describe_key_never_shown(never_shown);
                eprintln!("warning: {message}");
                tracing::warn!("{message}");
            }
            tracing::info!(address = %app.address(), "listening");
            Ok(app.run(shutdown).await?)
        }
        Command::CheckUrl { url, post, json } => {
            let check = crate::check_url::check_url(&url, post);
            if json {
                println!("{}", serde_json::to_string(&check).unwrap_or_default());
            } else {
                print!("{}", crate::check_url::describe(&check));
            }
            if check.ok {
                Ok(())
            } else {
                Err(StartError::UrlCheckFailed)
            }
        }
        Command::Migrate => {
            let store = open_store(&config).await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Deliveries(DeliveriesCommand::Tail {
            app_id,
            partner,
            limit,
            follow,
            json,
        }) => {
            let store = open_store(&config).await?;
            let result =
                tail_deliveries(store.as_ref(), app_id, partner, limit, follow, json).await;
            store.close().await;
            result
        }
        Command::Prune { dry_run, json } => {
            let store = open_store(&config).await?;
            let report = store
                .prune(chrono::Utc::now(), config.retention_policy(), dry_run)
                .await;
            store.close().await;
            let report = report?;
            if json {
                println!(
                    "{}",
                    json!({"dry_run": dry_run, "months": report.months,
                           "events": report.events, "dedupe_keys": report.dedupe_keys,
                           "raw_cleared": report.raw_cleared})
                );
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                let months = if report.months.is_empty() {
                    "none".to_owned()
                } else {
                    report.months.join(", ")
                };
                let clear = if dry_run { "would clear" } else { "cleared" };
                println!(
                    "{verb}: {} events (months: {months}), {} dedupe keys; {clear} the raw \
                     payload, IP address and user agent of {} events",
                    report.events, report.dedupe_keys, report.raw_cleared
                );
            }
            Ok(())
        }
        Command::Users(cmd) => {
            let store = open_store(&config).await?;
            let result = crate::users_cli::run(cmd, store.as_ref()).await;
            store.close().await;
            result
        }
        Command::Apps(cmd) => {
            let store = open_store(&config).await?;
            let result = run_apps(cmd, store.as_ref(), &config).await;
            store.close().await;
            result
        }
        Command::Destinations(cmd) => {
            let store = open_store(&config).await?;
            let result = run_destinations(cmd, store.as_ref(), &config).await;
            store.close().await;
            result
        }
    }
}

async fn run_destinations(
    cmd: DestinationsCommand,
    store: &dyn crate::store::Store,
    config: &Config,
) -> Result<(), StartError> {
    use crate::forwarding::destinations::{self as dest, CreatedView, DestinationView};
    match cmd {
        DestinationsCommand::Add {
            app_id,
            url,
            what,
            json,
        } => {
            let allow_private = config.forwarding.allow_private_targets;
            let created = dest::add_destination(store, app_id, &url, what, allow_private).await?;
            if json {
                println!("{}", json!(CreatedView::from(&created)));
            } else {
                print!("{}", dest::describe_created(&created));
            }
        }
        DestinationsCommand::List { app_id, json } => {
            if store.get_app(app_id).await?.is_none() {
                return Err(dest::DestinationError::UnknownApp(app_id).into());
            }
            let list = store.list_destinations(app_id).await?;
            if json {
                let views: Vec<_> = list.iter().map(DestinationView::from).collect();
                println!("{}", json!({ "destinations": views }));
            } else {
                print!("{}", dest::describe_list(&list));
            }
        }
        DestinationsCommand::Disable { destination_id } => {
            dest::disable(store, destination_id).await?;
            println!("{destination_id}: disabled; its pending messages wait until `enable`");
        }
        DestinationsCommand::Enable { destination_id } => {
            let record = dest::enable(store, destination_id).await?;
            println!(
                "{destination_id}: enabled; {} pending messages to send",
                record.backlog
            );
        }
        DestinationsCommand::Remove { destination_id } => {
            let messages = dest::remove(store, destination_id).await?;
            println!("{destination_id}: removed, with its {messages} messages");
        }
        DestinationsCommand::Replay {
            destination_id,
            dead,
            since,
            json,
        } => {
            let filter = crate::store::forwarding::ReplayFilter {
                dead_only: dead,
                since,
            };
            let done =
                crate::forwarding::replay::replay(store, None, destination_id, filter).await?;
            if json {
                println!(
                    "{}",
                    json!({"destination_id": done.destination_id, "app_id": done.app_id,
                           "requeued": done.requeued, "enabled": done.enabled})
                );
            } else {
                println!(
                    "{}: {} messages re-queued",
                    done.destination_id, done.requeued
                );
                if !done.enabled {
                    println!(
                        "the destination is disabled: nothing is sent until `destinations enable {}`",
                        done.destination_id
                    );
                }
            }
        }
        DestinationsCommand::RotateSecret {
            destination_id,
            json,
        } => {
            let secret = dest::rotate_secret(store, destination_id).await?;
            if json {
                println!(
                    "{}",
                    json!({"destination_id": destination_id, "secret": secret.expose()})
                );
            } else {
                println!(
                    "new secret for {destination_id}: {}\n  (shown once; every attempt from \
                     now on, retries included, is signed with it only)",
                    secret.expose()
                );
            }
        }
    }
    Ok(())
}

async fn run_apps(
    cmd: AppsCommand,
    store: &dyn crate::store::Store,
    config: &Config,
) -> Result<(), StartError> {
    let printout = apps::Printout::new(config, config.listen_addr);
    match cmd {
        AppsCommand::Create { name, tier, json } => {
            let created = apps::create_app(store, &name, tier).await?;
            if json {
                println!("{}", created_json(&created, &printout));
            } else {
                println!("{}", apps::describe_new_app(&created, &printout));
            }
        }
        AppsCommand::List { json } => {
            let list = store.list_apps().await?;
            if json {
                let apps: Vec<_> = list
                    .iter()
                    .map(|a| {
                        let keys: Vec<_> = a
                            .keys
                            .iter()
                            .map(|k| json!({"prefix": k.prefix, "expires_at": k.expires_at, "shown": k.shown}))
                            .collect();
                        json!({"app_id": a.id, "name": a.name, "tier": a.tier,
                               "key_prefixes": a.key_prefixes, "keys": keys,
                               "created_at": a.created_at})
                    })
                    .collect();
                println!("{}", json!({ "apps": apps }));
            } else {
                print!("{}", apps::describe_app_list(&list));
            }
        }
        AppsCommand::RotateKey {
            app_id,
            grace_hours,
            json,
        } => {
            let key = apps::rotate_key(store, app_id, grace_hours).await?;
            if json {
                println!(
                    "{}",
                    json!({"app_id": app_id, "api_key": key.expose(), "old_key_grace_hours": grace_hours,
                           "endpoints": apps::endpoints(&printout.base_url, Some(&key))})
                );
            } else {
                println!(
                    "{}",
                    apps::describe_rotated_key(app_id, &key, grace_hours, &printout)
                );
            }
        }
        AppsCommand::SetTier { app_id, tier } => {
            apps::set_tier(store, app_id, tier).await?;
            println!("{app_id}: tier {tier}");
        }
    }
    Ok(())
}

fn created_json(created: &CreatedApp, printout: &apps::Printout) -> serde_json::Value {
    json!({
        "app_id": created.app.id,
        "name": created.app.name,
        "tier": created.app.tier,
        "api_key": created.api_key.expose(),
        "endpoints": apps::endpoints(&printout.base_url, Some(&created.api_key)),
        "quota_per_hour": (created.app.tier == Tier::Standard).then_some(printout.standard_quota),
    })
}

/// `deliveries tail`: the last `limit` rows, oldest first; with `follow`, then every
/// new row as it is committed (polled each second) until Ctrl-C.
async fn tail_deliveries(
    store: &dyn crate::store::Store,
    app: AppId,
    partner: Option<PartnerId>,
    limit: u32,
    follow: bool,
    json: bool,
) -> Result<(), StartError> {
    use crate::store::deliveries::{DeliveryFilter, DeliveryRecord};
    if store.get_app(app).await?.is_none() {
        return Err(apps::AppsError::UnknownApp(app).into());
    }
    let filter = DeliveryFilter {
        partner,
        ..DeliveryFilter::default()
    };
    let print = |d: &DeliveryRecord| {
        if json {
            println!(
                "{}",
                json!({"received_at": d.received_at, "partner": d.partner, "method": d.method,
                       "status": d.answer.status, "verdict": d.answer.verdict.as_str(),
                       "reason": d.answer.reason, "event_id": d.answer.event_id,
                       "request_id": d.request_id, "segments": d.segments,
                       "identifiers": d.identifiers, "payload": d.payload})
            );
        } else {
            println!(
                "{}  {:<9} {:<4} {} {:<12} {}",
                d.received_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                d.partner.as_str(),
                d.method,
                d.answer.status,
                d.answer.verdict.as_str(),
                d.answer.reason
            );
        }
    };
    let mut rows = store.list_deliveries(app, &filter, None, limit).await?;
    rows.reverse();
    rows.iter().for_each(print);
    if !follow {
        return Ok(());
    }
    let mut newest = rows.last().map(|d| (d.received_at, d.id));
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let mut fresh: Vec<DeliveryRecord> = store
            .list_deliveries(app, &filter, None, 1000)
            .await?
            .into_iter()
            .take_while(|d| newest.is_none_or(|n| (d.received_at, d.id) > n))
            .collect();
        fresh.reverse();
        fresh.iter().for_each(print);
        if let Some(last) = fresh.last() {
            newest = Some((last.received_at, last.id));
        }
    }
}

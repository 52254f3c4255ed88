//! The command line: `serve` (default), `migrate`, `apps …`, `prune`, and the offline
//! `check-url`. Every command but `check-url` opens the configured database and
//! applies pending migrations first.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::apps::{self, CreatedApp};
use crate::config::Config;
use crate::domain::{AppId, Tier};
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
    /// Remove stored events and dedupe keys past retention (`retention.*`).
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
        Command::Prune { dry_run, json } => {
            let store = open_store(&config).await?;
            let report = store
                .prune(chrono::Utc::now(), config.retention.policy(), dry_run)
                .await;
            store.close().await;
            let report = report?;
            if json {
                println!(
                    "{}",
                    json!({"dry_run": dry_run, "months": report.months,
                           "events": report.events, "dedupe_keys": report.dedupe_keys})
                );
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                let months = if report.months.is_empty() {
                    "none".to_owned()
                } else {
                    report.months.join(", ")
                };
                println!(
                    "{verb}: {} events (months: {months}), {} dedupe keys",
                    report.events, report.dedupe_keys
                );
            }
            Ok(())
        }
        Command::Apps(cmd) => {
            let store = open_store(&config).await?;
            let result = run_apps(cmd, store.as_ref(), &config).await;
            store.close().await;
            result
        }
    }
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

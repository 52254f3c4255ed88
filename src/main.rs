//! Entry point: parse the command line, load configuration, start logging, dispatch.

use clap::Parser;
use postback_gateway::cli::{self, Cli};
use postback_gateway::config::Config;
use postback_gateway::telemetry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging();
    telemetry::install_panic_hook();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", postback_gateway::error_chain(&e));
            return std::process::ExitCode::from(2);
        }
    };
    match cli::run(cli, config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", postback_gateway::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

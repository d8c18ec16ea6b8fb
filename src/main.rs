//! Thin main: parse the command line, load settings, start logging, run the command.

use clap::Parser;

// Fragmentation from the auth cache's many small entries is markedly lower with jemalloc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use logstitch_gateway::cli::{self, Cli};
use logstitch_gateway::configuration::Settings;
use logstitch_gateway::telemetry;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("logstitch-gateway: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(settings.log.format);
    match cli::run(cli, settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("logstitch-gateway: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

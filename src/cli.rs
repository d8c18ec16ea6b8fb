//! Command line: serve, migrate, and organization/project setup.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::configuration::Settings;
use crate::domain::{DisplayName, OrgId};
use crate::startup::Application;
use crate::store::{run_migrations, Store};

#[derive(Debug, Parser)]
#[command(
    name = "logstitch-gateway",
    version,
    about = "LogStitch key service and authentication gateway"
)]
pub struct Cli {
    /// Settings file layered over config/default.toml (also: LOGSTITCH_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP.
    Serve {
        /// Address to listen on (default: server.listen, 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Apply pending migrations and exit.
    Migrate,
    /// Organizations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Projects.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization, its "Default" project and its master key. The master key is
    /// printed once, here, and never again.
    Create {
        #[arg(long)]
        name: String,
    },
    /// One JSON line per organization.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project in an organization.
    Create {
        #[arg(long, value_name = "ORG_ID")]
        org: String,
        #[arg(long)]
        name: String,
    },
}

/// Runs a parsed command. Errors bubble to `main`, which prints them and exits non-zero.
pub async fn run(cli: Cli, mut settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                settings.server.listen = listen;
            }
            let application = Application::build(settings).await?;
            tracing::info!(port = application.port(), "serving");
            application.run_until_stopped().await?;
        }
        Command::Migrate => run_migrations(&settings.database).await?,
        Command::Org { command } => {
            // Bad input is refused before anything touches the database.
            let name = match &command {
                OrgCommand::Create { name } => Some(parse_name(name)?),
                OrgCommand::List => None,
            };
            let store = migrated_store(&settings).await?;
            match command {
                OrgCommand::Create { .. } => {
                    let name = name.expect("parsed above");
                    let created = store.create_organization(&name).await?;
                    println!(
                        "{}",
                        json!({
                            "organization_id": created.organization_id,
                            "project_id": created.project_id,
                            "master_key": created.master_key.expose(),
                        })
                    );
                }
                OrgCommand::List => {
                    for org in store.list_organizations().await? {
                        println!("{}", json!({"organization_id": org.id, "name": org.name}));
                    }
                }
            }
        }
        Command::Project {
            command: ProjectCommand::Create { org, name },
        } => {
            let org = OrgId::parse(&org)
                .ok_or_else(|| anyhow::anyhow!("--org must be an organization UUID"))?;
            let name = parse_name(&name)?;
            let store = migrated_store(&settings).await?;
            let project = store
                .create_project(org, &name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("organization {org} does not exist"))?;
            println!(
                "{}",
                json!({"id": project.id, "name": project.name, "organization_id": project.organization_id})
            );
        }
    }
    Ok(())
}

fn parse_name(raw: &str) -> anyhow::Result<DisplayName> {
    DisplayName::parse(raw).map_err(|problem| anyhow::anyhow!("--name {problem}"))
}

async fn migrated_store(settings: &Settings) -> anyhow::Result<Store> {
    run_migrations(&settings.database).await?;
    Store::connect(&settings.database)
}

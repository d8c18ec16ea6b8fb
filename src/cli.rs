//! Command line: serve, migrate, organization/project setup, and the master-key roll.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::audit::AuditContext;
use crate::configuration::{DatabaseSettings, Settings};
use crate::domain::{DisplayName, OrgId};
use crate::invalidation::AckListener;
use crate::startup::Application;
use crate::store::{run_migrations, MasterKeyRollError, Store};
use uuid::Uuid;

/// Shown under every `--help` that touches the database: where its URL comes from.
const DATABASE_HELP: &str = "\
Database: DATABASE_URL (a libpq URL, e.g. postgres://postgres@127.0.0.1:5432/logstitch) when set,
else database.url from the settings: config/default.toml, then the --config file (or
LOGSTITCH_CONFIG), then LOGSTITCH__DATABASE__URL. `make db` prints the URL `make run` uses.";

#[derive(Debug, Parser)]
#[command(
    name = "logstitch-gateway",
    version,
    about = "LogStitch key service and authentication gateway",
    after_help = DATABASE_HELP
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
    #[command(after_help = DATABASE_HELP)]
    Serve {
        /// Address to listen on (default: server.listen, 127.0.0.1:8080); port 0 picks a
        /// free port.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Once listening, write the port (one line) to FILE: how a tool that starts the
        /// server with `--listen 127.0.0.1:0` learns where it is.
        #[arg(long, value_name = "FILE")]
        port_file: Option<PathBuf>,
    },
    /// Apply pending migrations and exit.
    #[command(after_help = DATABASE_HELP)]
    Migrate,
    /// Organizations.
    #[command(after_help = DATABASE_HELP)]
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Projects.
    #[command(after_help = DATABASE_HELP)]
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization, its "Default" project and its master key. The master key is
    /// printed once, here, and never again.
    #[command(after_help = DATABASE_HELP)]
    Create {
        /// Name of the organization: 1-100 characters, not blank, no control characters.
        #[arg(long)]
        name: String,
    },
    /// One JSON line per organization.
    #[command(after_help = DATABASE_HELP)]
    List,
    /// The organization's master key.
    #[command(after_help = DATABASE_HELP)]
    MasterKey {
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// Give the organization a new master key, printed once, here, and never again; its old
    /// master key is revoked, and refused by every running instance once this returns.
    #[command(after_help = DATABASE_HELP)]
    Roll {
        /// Id (UUID) of the organization, as `org create` and `org list` print it.
        #[arg(long, value_name = "ORG_ID")]
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project in an organization.
    #[command(after_help = DATABASE_HELP)]
    Create {
        /// Id (UUID) of the organization, as `org create` and `org list` print it.
        #[arg(long, value_name = "ORG_ID")]
        org: String,
        /// Name of the project: 1-100 characters, not blank, no control characters.
        #[arg(long)]
        name: String,
    },
}

/// Runs a parsed command. Errors bubble to `main`, which prints them and exits non-zero; a
/// database error first says which database it was, and from which setting.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    let database = describe_database(&settings.database);
    execute(cli, settings).await.map_err(|error| {
        let from_postgres = error
            .chain()
            .any(|cause| cause.downcast_ref::<tokio_postgres::Error>().is_some());
        if from_postgres {
            error.context(format!("database at {database}"))
        } else {
            error
        }
    })
}

async fn execute(cli: Cli, mut settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen, port_file } => {
            let setting = if listen.is_some() {
                "serve --listen"
            } else {
                "server.listen"
            };
            let address = listen.unwrap_or(settings.server.listen);
            settings.server.listen = address;
            let listener = TcpListener::bind(address)
                .with_context(|| format!("cannot listen on {address} ({setting})"))?;
            let application = Application::build_on(settings, listener).await?;
            tracing::info!(port = application.port(), "serving");
            if let Some(path) = port_file {
                write_port_file(&path, application.port())?;
            }
            application.run_until_stopped().await?;
        }
        Command::Migrate => run_migrations(&settings.database).await?,
        Command::Org { command } => org_command(command, &settings).await?,
        Command::Project {
            command: ProjectCommand::Create { org, name },
        } => {
            let org = parse_org(&org)?;
            let name = parse_name(&name)?;
            let store = migrated_store(&settings).await?;
            let project = store
                .create_project(org, &name, &AuditContext::cli())
                .await?
                .ok_or_else(|| anyhow::anyhow!("organization {org} does not exist"))?;
            print_line(
                &json!({"id": project.id, "name": project.name, "organization_id": project.organization_id}),
            )?;
        }
    }
    Ok(())
}

/// `org …`. Bad input is refused before anything touches the database.
async fn org_command(command: OrgCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        OrgCommand::Create { name } => {
            let name = parse_name(&name)?;
            let store = migrated_store(settings).await?;
            let created = store
                .create_organization(&name, &AuditContext::cli())
                .await?;
            print_line(&json!({
                "organization_id": created.organization_id,
                "project_id": created.project_id,
                "master_key": created.master_key.expose(),
            }))?;
        }
        OrgCommand::List => {
            let store = migrated_store(settings).await?;
            for org in store.list_organizations().await? {
                let line = json!({"organization_id": org.id, "name": org.name});
                // A reader that has seen enough (`| head`, `| grep -q`) ends the list, quietly.
                match print_line(&line) {
                    Err(error) if is_broken_pipe(&error) => break,
                    other => other?,
                }
            }
        }
        OrgCommand::MasterKey {
            command: MasterKeyCommand::Roll { org },
        } => roll_master_key(settings, parse_org(&org)?).await?,
    }
    Ok(())
}

/// `host:port/dbname (user U, from SETTING)`: enough to find the database, never the password.
fn describe_database(settings: &DatabaseSettings) -> String {
    let setting = if std::env::var_os("DATABASE_URL").is_some() {
        "DATABASE_URL"
    } else {
        "database.url; DATABASE_URL overrides it"
    };
    match settings
        .url
        .expose_secret()
        .parse::<tokio_postgres::Config>()
    {
        Ok(config) => {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .enumerate()
                .map(|(i, host)| {
                    let host = match host {
                        tokio_postgres::config::Host::Tcp(name) => name.clone(),
                        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                    };
                    // libpq: one port for all hosts, or one per host; 5432 when none.
                    let ports = config.get_ports();
                    let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                    format!("{host}:{port}")
                })
                .collect();
            format!(
                "{}/{} (user {}, from {setting})",
                hosts.join(","),
                config.get_dbname().unwrap_or("(default)"),
                config.get_user().unwrap_or("(default)"),
            )
        }
        Err(_) => format!("(its URL does not parse; from {setting})"),
    }
}

/// Written whole, then renamed into place, so a reader polling for the file never sees a
/// partial port.
fn write_port_file(path: &Path, port: u16) -> anyhow::Result<()> {
    let partial = path.with_file_name(format!(
        ".{}.{}.partial",
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&partial, format!("{port}\n"))
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("cannot write --port-file {}", path.display()))
}

/// A new master key for `org`, its old one revoked as DELETE revokes a key: the key is printed
/// only once every running instance acknowledged the eviction (or `listener.ack_timeout_ms`
/// ran out, as for the server's revokes), so the old key is refused everywhere by then. The
/// acks come to a connection of this process's own, listening before the roll commits.
async fn roll_master_key(settings: &Settings, org: OrgId) -> anyhow::Result<()> {
    let store = migrated_store(settings).await?;
    let listener = AckListener::start(&settings.database).await?;
    let mut waiters = Vec::new();
    let mut next_address = || {
        let waiter = listener.acks().expect(Uuid::new_v4());
        let address = waiter.address();
        waiters.push(waiter);
        address
    };
    let roll = store
        .roll_master_key(org, &mut next_address, &AuditContext::cli())
        .await
        .map_err(|error| match error {
            MasterKeyRollError::OrganizationNotFound => {
                anyhow::anyhow!("organization {org} does not exist")
            }
            MasterKeyRollError::Store(error) => error.into(),
        })?;
    let timeout = settings.listener.ack_timeout;
    let waits = waiters.iter().zip(&roll.revoked).map(|(waiter, revoked)| {
        let listeners = &revoked.announced.listeners;
        async move { (listeners.len(), waiter.wait_for(listeners, timeout).await) }
    });
    for (listeners, waited) in futures_util::future::join_all(waits).await {
        match waited {
            Ok(()) => tracing::info!(
                listeners,
                "every listening instance refuses the old master key"
            ),
            Err(missing) => tracing::warn!(
                listeners,
                unacknowledged_instances = %missing.join(","),
                "not every instance acknowledged a revocation in time"
            ),
        }
    }
    print_line(&json!({
        "master_key": roll.master_key.expose(),
        "organization_id": org,
    }))
}

/// One JSON line on stdout. An error, not a panic (as `println!` would), when stdout is gone:
/// for a command that just made a key, that error says the key was not shown.
fn print_line(value: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{value}")
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .or_else(|| error.source()?.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn parse_org(raw: &str) -> anyhow::Result<OrgId> {
    OrgId::parse(raw).ok_or_else(|| anyhow::anyhow!("--org must be an organization UUID"))
}

fn parse_name(raw: &str) -> anyhow::Result<DisplayName> {
    DisplayName::parse(raw).map_err(|problem| anyhow::anyhow!("--name {problem}"))
}

async fn migrated_store(settings: &Settings) -> anyhow::Result<Store> {
    run_migrations(&settings.database).await?;
    Store::connect(&settings.database)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::domain::NAME_MAX_CHARS;

    fn help(path: &[&str]) -> String {
        let mut command = Cli::command();
        for name in path {
            command = command
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("no subcommand {name}"))
                .clone();
        }
        command.render_long_help().to_string()
    }

    #[test]
    fn every_help_names_database_url_and_describes_its_arguments() {
        let limit = format!("1-{NAME_MAX_CHARS} characters");
        for path in [
            &[][..],
            &["serve"],
            &["migrate"],
            &["org"],
            &["org", "create"],
            &["org", "list"],
            &["org", "master-key"],
            &["org", "master-key", "roll"],
            &["project", "create"],
        ] {
            let text = help(path);
            assert!(text.contains("DATABASE_URL"), "{path:?}: {text}");
            assert!(text.contains("database.url"), "{path:?}: {text}");
        }
        let org_create = help(&["org", "create"]);
        assert!(
            org_create.contains("Name of the organization"),
            "{org_create}"
        );
        assert!(org_create.contains(&limit), "{org_create}");
        let project_create = help(&["project", "create"]);
        assert!(
            project_create.contains("Id (UUID) of the organization"),
            "{project_create}"
        );
        assert!(
            project_create.contains("Name of the project"),
            "{project_create}"
        );
        assert!(project_create.contains(&limit), "{project_create}");
        assert!(help(&["serve"]).contains("--port-file"));
        let roll = help(&["org", "master-key", "roll"]);
        assert!(roll.contains("Id (UUID) of the organization"), "{roll}");
    }

    fn database(url: &str) -> DatabaseSettings {
        DatabaseSettings {
            url: url.to_owned().into(),
            pool_max_size: std::num::NonZeroUsize::MIN,
            pool_timeout: std::time::Duration::from_millis(1),
            statement_timeout: std::time::Duration::from_millis(1),
        }
    }

    #[test]
    fn a_database_is_described_by_host_port_name_and_user_never_its_password() {
        let text = describe_database(&database("postgres://alice:s3cret@db.example:6543/app"));
        assert!(
            text.starts_with("db.example:6543/app (user alice, from "),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        let text = describe_database(&database("postgres://bob@127.0.0.1/logstitch"));
        assert!(
            text.starts_with("127.0.0.1:5432/logstitch (user bob"),
            "{text}"
        );
        let text = describe_database(&database("not a url at all: pw=hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn the_port_file_holds_exactly_the_port_and_no_partial_file_is_left() {
        let dir = std::env::temp_dir().join(format!("port-file-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("port");
        write_port_file(&path, 43210).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "43210\n");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["port"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

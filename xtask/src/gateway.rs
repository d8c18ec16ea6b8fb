//! A gateway of a task's own: a fresh database beside the one scripts/ensure-db.sh reports
//! (dropped afterwards), and the binary serving on a port the kernel picks (`--listen
//! 127.0.0.1:0`, read back from `--port-file`), ready once `/readyz` answers 200.

use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::http;
use crate::process::{self, Running};
use crate::tools;

/// A directory under the system's temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(purpose: &str) -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "logstitch-{purpose}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// psql against one database: no password prompt, no ~/.psqlrc, stop at the first error.
pub struct Psql {
    psql: PathBuf,
    url: String,
}

impl Psql {
    pub fn new(url: &str) -> Result<Psql> {
        Ok(Psql {
            psql: tools::require("psql")?,
            url: url.to_owned(),
        })
    }

    /// The rows, unaligned, one per line (`psql -At`), trimmed.
    pub fn query(&self, sql: &str) -> Result<String> {
        let out = process::output(
            Command::new(&self.psql)
                .args(["-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d"])
                .arg(&self.url)
                .args(["-c", sql])
                .env("PGOPTIONS", "-c client_min_messages=warning"),
        )?;
        Ok(out.trim().to_owned())
    }
}

/// The URL of the database scripts/ensure-db.sh finds or makes (`DATABASE_URL` when set).
pub fn base_database_url() -> Result<String> {
    let url = process::output(&mut Command::new(
        crate::repo().join("scripts/ensure-db.sh"),
    ))?;
    Ok(url.trim().to_owned())
}

/// Replaces the database name in a libpq URL (`postgres://…/NAME?params`).
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(slash) => &head[..scheme_end + slash],
        None => head,
    };
    match query {
        Some(query) => format!("{base}/{dbname}?{query}"),
        None => format!("{base}/{dbname}"),
    }
}

/// `logstitch_<purpose>_<pid>` on the ensure-db.sh server, dropped (connections and all)
/// when this guard goes.
pub struct ScratchDatabase {
    pub name: String,
    pub url: String,
    admin: Psql,
}

impl ScratchDatabase {
    pub fn create(purpose: &str) -> Result<ScratchDatabase> {
        let base = base_database_url()?;
        let name = format!("logstitch_{purpose}_{}", std::process::id());
        let admin = Psql::new(&base)?;
        eprintln!("==> database {name}");
        // A leftover of an earlier process with the same pid.
        admin.query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
        admin.query(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(ScratchDatabase {
            url: with_dbname(&base, &name),
            name,
            admin,
        })
    }

    /// The server-wide maintenance connection (not inside the scratch database).
    pub fn admin(&self) -> &Psql {
        &self.admin
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        eprintln!("==> dropping database {}", self.name);
        if let Err(error) = self.admin.query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )) {
            eprintln!(
                "could not drop database {} ({error:#}); drop it by hand",
                self.name
            );
        }
    }
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buffer)?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// An organization made through the admin API.
pub struct Org {
    pub project_id: String,
    pub master_key: String,
}

pub struct Gateway {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub admin_token: String,
    pub log: PathBuf,
    process: Running,
    _dir: TempDir,
}

impl Gateway {
    /// Serves `binary` on `database_url` with the extra `env` settings, stdout and stderr
    /// appended to `log`; returns once `/readyz` answered 200.
    pub fn start(
        binary: &Path,
        database_url: &str,
        env: &[(&str, String)],
        log: &Path,
    ) -> Result<Gateway> {
        if !binary.exists() {
            bail!("{} is not built", binary.display());
        }
        let dir = TempDir::new("gateway")?;
        let port_file = dir.0.join("port");
        let admin_token = random_hex(16)?;
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .env("DATABASE_URL", database_url)
            .env("LOGSTITCH_ADMIN_TOKEN", &admin_token)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut process = Running::spawn("the gateway", &mut command)?;
        let started = Instant::now();
        let port = loop {
            process::check_interrupted()?;
            if let Err(error) = process.check_alive() {
                bail!("{error:#} during startup; its log: {}", log.display());
            }
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().to_owned();
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the gateway wrote no port file within 60 s; its log: {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let gateway = Gateway {
            url: format!("http://127.0.0.1:{port}"),
            admin_token,
            log: log.to_owned(),
            process,
            _dir: dir,
        };
        gateway.wait_ready(started)?;
        eprintln!("==> gateway on {} (log: {})", gateway.url, log.display());
        Ok(gateway)
    }

    fn wait_ready(&self, started: Instant) -> Result<()> {
        while started.elapsed() < Duration::from_secs(60) {
            process::check_interrupted()?;
            if http::get(&format!("{}/readyz", self.url), None).is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} was not ready within 60 s; its log: {}",
            self.url,
            self.log.display()
        )
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// One un-labelled sample from a live /metrics scrape (0 when absent).
    pub fn metric(&self, name: &str) -> Result<f64> {
        let scrape = http::get(&format!("{}/metrics", self.url), None)?.body;
        Ok(scrape
            .lines()
            .find_map(|line| {
                let (series, value) = line.split_once(' ')?;
                (series == name)
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })
            .unwrap_or(0.0))
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.process.check_alive()
    }

    pub fn create_org(&self, name: &str) -> Result<Org> {
        let body = http::post(
            &format!("{}/admin/v1/organizations", self.url),
            &self.admin_token,
            &json!({ "name": name }),
        )?
        .expect(201, "create an organization")?;
        let field = |name: &str| -> Result<String> {
            Ok(body[name]
                .as_str()
                .with_context(|| format!("no {name} in {body}"))?
                .to_owned())
        };
        Ok(Org {
            project_id: field("project_id")?,
            master_key: field("master_key")?,
        })
    }

    /// A new project key of `org`'s default project: (plaintext key, creation response).
    pub fn create_key(&self, org: &Org, name: &str) -> Result<(String, Value)> {
        self.create_key_with(
            org,
            json!({ "project_id": org.project_id, "type": "project", "name": name }),
        )
    }

    /// A restricted key, as the benches measure the paths with (issue 20): `scopes`, and a
    /// rate limit of its own set by PATCH (lifted, so it never refuses, but it is the limit
    /// the key's requests are counted under).
    pub fn create_restricted_key(
        &self,
        org: &Org,
        name: &str,
        scopes: &[&str],
    ) -> Result<(String, Value)> {
        let (key, created) = self.create_key_with(
            org,
            json!({ "project_id": org.project_id, "type": "project", "name": name, "scopes": scopes }),
        )?;
        let listed = http::get(&format!("{}/api/v1/keys", self.url), Some(&org.master_key))?
            .expect(200, "list keys")?;
        let id = listed["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|item| item["prefix"] == created["prefix"])
            .and_then(|item| item["id"].as_str())
            .with_context(|| format!("the new key is not in {listed}"))?
            .to_owned();
        http::request(
            "PATCH",
            &format!("{}/api/v1/keys/{id}", self.url),
            Some(&org.master_key),
            Some(
                &json!({ "rate_limit": { "requests_per_second": 1_000_000, "burst": 1_000_000 } }),
            ),
        )?
        .expect(200, "give the key a rate limit of its own")?;
        Ok((key, created))
    }

    fn create_key_with(&self, org: &Org, request: Value) -> Result<(String, Value)> {
        let body = http::post(
            &format!("{}/api/v1/keys", self.url),
            &org.master_key,
            &request,
        )?
        .expect(201, "create a project key")?;
        let key = body["key"]
            .as_str()
            .with_context(|| format!("no key in {body}"))?
            .to_owned();
        Ok((key, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_dbname_replaces_only_the_database() {
        assert_eq!(
            with_dbname("postgres://u@h:5432/logstitch", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_dbname("postgres://u:p@h/logstitch?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://h", "x"), "postgres://h/x");
    }
}

//! `make fuzz` (`cargo xtask fuzz`): schemathesis against a gateway of its own on a fresh
//! database, driven by the gateway's own GET /openapi.json. Three bounded runs, under three
//! minutes in all (the master run gets most: its stateful phase, which reaches the routes that
//! need ids another answer gives, comes last):
//!   1. a master key (and the admin token for /admin/v1/organizations) on every operation,
//!      stateful phase included (it creates, lists and revokes keys and projects, and creates,
//!      tests and deletes webhook endpoints and retries their failed deliveries);
//!   2. a project key of another organization on GET /api/v1/keys and GET /api/v1/auth/verify
//!      (its 403s elsewhere are the tenant-isolation test's; a DELETE would revoke the key
//!      under the run's feet);
//!   3. the master-key roll, on organizations the admin API creates (in run 1 it would roll the
//!      run's own master key).
//!
//! Fails on any failed check, a server panic, or a run that did not reach the endpoints: in
//! run 1 every operation must have answered 2xx at least once (read from the server's JSON
//! log, but for the signed-report route: a fuzzer can't sign as a partner), in run 2 both
//! GETs, in run 3 the roll.
//!
//! Environment: FUZZ_MASTER_SECS (100), FUZZ_PROJECT_SECS (35), FUZZ_ROLL_SECS (20), FUZZ_MAX_EXAMPLES (100),
//! FUZZ_SEED (replay a run's generation), FUZZ_RESULTS_DIR (target/fuzz: junit reports, the
//! server log, schemathesis' cache).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::gateway::{Gateway, ScratchDatabase, TempDir};
use crate::{build_gateway, env_or, http, process, target_dir, tools};

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,response_headers_conformance";

/// Keys reach schemathesis through its config files' ${VAR} interpolation, never through its
/// command line (which ps shows).
const MASTER_CONFIG: &str = r#"cache = { directory = "${LOGSTITCH_FUZZ_CACHE}" }
[auth.openapi.masterKey]
bearer = "${LOGSTITCH_FUZZ_MASTER_KEY}"
[auth.openapi.adminToken]
bearer = "${LOGSTITCH_FUZZ_ADMIN_TOKEN}"

# A delivery that failed before the run (see `failed_delivery`): the retry route's ids are
# pinned to it, so the run reaches its 202 whatever the stateful phase happens to chain.
[[operations]]
include-name = "POST /api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry"
parameters = { id = "${LOGSTITCH_FUZZ_ENDPOINT}", delivery_id = "${LOGSTITCH_FUZZ_DELIVERY}" }
"#;
const PROJECT_CONFIG: &str = r#"cache = { directory = "${LOGSTITCH_FUZZ_CACHE}" }
headers = { Authorization = "Bearer ${LOGSTITCH_FUZZ_PROJECT_KEY}" }
"#;

/// Statuses per (method, route) in the server's JSON log (one line per request), from line
/// `from` (1-based) on.
fn statuses(log: &str, from: usize) -> BTreeMap<(String, String), BTreeMap<u64, u64>> {
    let mut seen: BTreeMap<(String, String), BTreeMap<u64, u64>> = BTreeMap::new();
    for line in log.lines().skip(from.saturating_sub(1)) {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let (Some(method), Some(route), Some(status)) = (
            event["method"].as_str(),
            event["route"].as_str(),
            event["status"].as_u64(),
        ) {
            *seen
                .entry((method.to_owned(), route.to_owned()))
                .or_default()
                .entry(status)
                .or_default() += 1;
        }
    }
    seen
}

/// Operations the fuzzer can't be expected to get a 2xx from: a secret-scanning report must
/// carry a partner's ECDSA signature over its body. They are still fuzzed (every check holds
/// for their 401s, 404s and 413s); they are only left out of the reached-endpoints check.
const UNREACHABLE_BY_DESIGN: &[(&str, &str)] = &[("POST", "/api/v1/secret-scanning/{provider}")];

/// The master-key roll, fuzzed in a run of its own after the others: in the master run it
/// would find the run's own organization (its id is in several answers) and roll the master
/// key every other operation is sending, so the rest of the run would only see 401s.
const MASTER_KEY_ROLL: &str = "POST /admin/v1/organizations/{id}/master-key";

/// Every operation of the OpenAPI description, as (METHOD, path), but those
/// [`UNREACHABLE_BY_DESIGN`].
fn operations(openapi: &Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    if let Some(paths) = openapi["paths"].as_object() {
        for (path, methods) in paths {
            for method in methods.as_object().into_iter().flat_map(|m| m.keys()) {
                let method = method.to_uppercase();
                if !UNREACHABLE_BY_DESIGN.contains(&(method.as_str(), path.as_str())) {
                    operations.push((method, path.clone()));
                }
            }
        }
    }
    operations
}

/// Prints what each wanted operation answered; the ones that never answered 2xx (the fuzzer
/// never got past authentication or validation there, so the run proved little about them).
fn unreached(log: &str, from: usize, wanted: &[(String, String)]) -> Vec<String> {
    let seen = statuses(log, from);
    let empty = BTreeMap::new();
    let mut missing = Vec::new();
    for (method, path) in wanted {
        let counts = seen.get(&(method.clone(), path.clone())).unwrap_or(&empty);
        let shown: Vec<String> = counts
            .iter()
            .map(|(status, n)| format!("{status}x{n}"))
            .collect();
        eprintln!(
            "  {method:6} {path:26} {}",
            if shown.is_empty() {
                "no request".to_owned()
            } else {
                shown.join(" ")
            }
        );
        if !counts.keys().any(|status| (200..300).contains(status)) {
            missing.push(format!("{method} {path}"));
        }
    }
    missing
}

/// A webhook delivery of `master_key`'s organization that has failed (an endpoint on a name
/// that never resolves, a test event, no retries in the fuzzing gateway's settings): (endpoint
/// id, delivery id), for the retry route's pinned parameters.
fn failed_delivery(gateway: &Gateway, master_key: &str) -> Result<(String, String)> {
    let endpoints = format!("{}/api/v1/webhook-endpoints", gateway.url);
    let endpoint = http::post(
        &endpoints,
        master_key,
        &serde_json::json!({"url": "https://fuzz.invalid/hook", "events": ["key.created"]}),
    )?
    .expect(201, "create a webhook endpoint")?;
    let id = endpoint["id"]
        .as_str()
        .with_context(|| format!("no id in {endpoint}"))?
        .to_owned();
    http::post(
        &format!("{endpoints}/{id}/test"),
        master_key,
        &serde_json::json!({}),
    )?
    .expect_status(202, "queue a test delivery")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page = http::get(&format!("{endpoints}/{id}/deliveries"), Some(master_key))?
            .expect(200, "list deliveries")?;
        let delivery = &page["deliveries"][0];
        if delivery["status"] == "failed" {
            let delivery_id = delivery["id"].as_str().context("a delivery id")?.to_owned();
            return Ok((id, delivery_id));
        }
        if std::time::Instant::now() > deadline {
            bail!("the test delivery did not fail within 20 s: {page}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn log_lines(log: &Path) -> Result<usize> {
    Ok(std::fs::read_to_string(log)?.lines().count())
}

struct Runs<'a> {
    schemathesis: &'a Path,
    gateway: &'a Gateway,
    results: &'a Path,
    failed: Vec<String>,
    /// Variables every run's config may name (the pinned delivery's ids).
    env: Vec<(&'static str, String)>,
}

impl Runs<'_> {
    fn run(
        &mut self,
        name: &str,
        config: &Path,
        seconds: &str,
        extra: &[&str],
        env: (&str, &str),
    ) -> Result<()> {
        let mut command = Command::new(self.schemathesis);
        command
            .arg("--config-file")
            .arg(config)
            .arg("run")
            .arg(format!("{}/openapi.json", self.gateway.url))
            .args([
                "--url",
                &self.gateway.url,
                "--checks",
                CHECKS,
                "--max-time",
                seconds,
            ])
            .args([
                "--max-examples",
                &env_or("FUZZ_MAX_EXAMPLES", "100"),
                "--request-timeout",
                "10",
            ])
            // One worker: hypothesis describes its strategies with ast.parse, which CPython
            // 3.11 does not make thread-safe ("AST constructor recursion depth mismatch").
            .args([
                "--workers",
                "1",
                "--generation-database",
                "none",
                "--no-color",
            ])
            .args(["--report", "junit", "--report-junit-path"])
            .arg(self.results.join(format!("junit-{name}.xml")))
            .args(extra)
            .env(env.0, env.1)
            .envs(self.env.iter().map(|(name, value)| (*name, value)))
            .env("LOGSTITCH_FUZZ_ADMIN_TOKEN", &self.gateway.admin_token)
            .env("LOGSTITCH_FUZZ_CACHE", self.results.join("cache"));
        if let Ok(seed) = std::env::var("FUZZ_SEED") {
            command.args(["--seed", &seed]);
        }
        eprintln!("\n==> schemathesis, {name} run (at most {seconds}s)");
        if process::run(&mut command).is_err() {
            process::check_interrupted()?;
            self.failed.push(format!("the {name} run"));
        }
        Ok(())
    }

    fn reached(&mut self, name: &str, from: usize, wanted: &[(String, String)]) -> Result<()> {
        eprintln!("\n==> {name} run: statuses per operation (server log)");
        let missing = unreached(&std::fs::read_to_string(&self.gateway.log)?, from, wanted);
        if !missing.is_empty() {
            eprintln!("never answered 2xx: {}", missing.join(", "));
            self.failed.push(format!(
                "the {name} run did not reach {}",
                missing.join(", ")
            ));
        }
        Ok(())
    }
}

pub fn run() -> Result<()> {
    let schemathesis = tools::require("schemathesis")?;
    let binary = build_gateway("debug")?;
    let results = std::env::var("FUZZ_RESULTS_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| target_dir().join("fuzz"));
    std::fs::create_dir_all(&results)?;
    let results = results.canonicalize()?;
    let log = results.join("server.log");
    std::fs::write(&log, "")?;
    let work = TempDir::new("fuzz")?;
    let (master_config, project_config) = (work.0.join("master.toml"), work.0.join("project.toml"));
    std::fs::write(&master_config, MASTER_CONFIG)?;
    std::fs::write(&project_config, PROJECT_CONFIG)?;

    let database = ScratchDatabase::create("fuzz")?;
    // Webhook deliveries fail at their first attempt and are never retried on their own: a
    // 1 ms timeout, so no attempt reaches whatever host a fuzzed endpoint names (on a machine
    // with network access too), and no retry schedule, so a retry of a failed delivery can
    // answer 202 (the description links test -> deliveries -> retry).
    let settings = work.0.join("gateway.toml");
    std::fs::write(
        &settings,
        "[webhooks]\nretry_schedule_ms = []\ntimeout_ms = 1\n",
    )?;
    // Fuzzed requests come from one address and many carry bad keys on purpose: past
    // rate_limit.failed_auth_burst they would all answer 429 before reaching the code under
    // test. JSON logs: one line per request, read for the reached-endpoints check.
    let lifted = "100000000".to_owned();
    let gateway = Gateway::start(
        &binary,
        &database.url,
        &[
            ("LOGSTITCH__RATE_LIMIT__FAILED_AUTH_BURST", lifted.clone()),
            ("LOGSTITCH__RATE_LIMIT__FAILED_AUTH_PER_SECOND", lifted),
            ("LOGSTITCH__LOG__FORMAT", "json".to_owned()),
            ("LOGSTITCH_CONFIG", settings.display().to_string()),
        ],
        &log,
    )?;
    let mut runs = Runs {
        schemathesis: &schemathesis,
        gateway: &gateway,
        results: &results,
        failed: Vec::new(),
        env: Vec::new(),
    };

    eprintln!("\n==> run 1: an organization (admin API) for the master key");
    let org = gateway.create_org("Fuzz master")?;
    let (endpoint, delivery) = failed_delivery(&gateway, &org.master_key)?;
    runs.env.push(("LOGSTITCH_FUZZ_ENDPOINT", endpoint));
    runs.env.push(("LOGSTITCH_FUZZ_DELIVERY", delivery));
    let from = log_lines(&log)? + 1;
    let seconds = env_or("FUZZ_MASTER_SECS", "100");
    runs.run(
        "master",
        &master_config,
        &seconds,
        &["--exclude-name", MASTER_KEY_ROLL],
        ("LOGSTITCH_FUZZ_MASTER_KEY", &org.master_key),
    )?;
    let openapi: Value =
        serde_json::from_str(&std::fs::read_to_string("openapi.json")?).context("openapi.json")?;
    let mut wanted = operations(&openapi);
    wanted.retain(|(method, path)| format!("{method} {path}") != MASTER_KEY_ROLL);
    runs.reached("master", from, &wanted)?;

    eprintln!("\n==> run 2: another organization, and project keys made by its master key");
    let org = gateway.create_org("Fuzz project")?;
    gateway.create_key(&org, "fuzz one")?;
    let (key, _) = gateway.create_key(&org, "fuzz two")?;
    let from = log_lines(&log)? + 1;
    let seconds = env_or("FUZZ_PROJECT_SECS", "35");
    // By operation name: schemathesis ORs filters of different kinds, so a path filter plus a
    // method filter would also select every other GET and every /api/v1/keys method.
    // No stateful phase: the links of the description lead out of these two operations.
    let only = [
        "--include-name",
        "GET /api/v1/keys",
        "--include-name",
        "GET /api/v1/auth/verify",
        "--phases",
        "examples,coverage,fuzzing",
    ];
    runs.run(
        "project",
        &project_config,
        &seconds,
        &only,
        ("LOGSTITCH_FUZZ_PROJECT_KEY", &key),
    )?;
    let gets = [("GET", "/api/v1/keys"), ("GET", "/api/v1/auth/verify")]
        .map(|(m, p)| (m.to_owned(), p.to_owned()));
    runs.reached("project", from, &gets)?;

    eprintln!("\n==> run 3: the master-key roll, on organizations the admin API creates");
    let from = log_lines(&log)? + 1;
    let seconds = env_or("FUZZ_ROLL_SECS", "20");
    // The link from an organization's creation to its roll takes the stateful phase there.
    let only = [
        "--include-name",
        "POST /admin/v1/organizations",
        "--include-name",
        MASTER_KEY_ROLL,
    ];
    runs.run(
        "roll",
        &master_config,
        &seconds,
        &only,
        ("LOGSTITCH_FUZZ_MASTER_KEY", &org.master_key),
    )?;
    let (method, path) = MASTER_KEY_ROLL.split_once(' ').expect("METHOD path");
    runs.reached("roll", from, &[(method.to_owned(), path.to_owned())])?;

    let mut failed = runs.failed;
    let panics: Vec<String> = std::fs::read_to_string(&log)?
        .lines()
        .filter(|line| line.contains("panicked"))
        .take(5)
        .map(str::to_owned)
        .collect();
    if !panics.is_empty() {
        eprintln!("{}", panics.join("\n"));
        failed.push(format!("server panics (see {})", log.display()));
    }
    if !failed.is_empty() {
        bail!(
            "fuzz: failed: {} (junit reports and the server log in {})",
            failed.join("; "),
            results.display()
        );
    }
    eprintln!(
        "\n==> fuzz: every run passed (junit reports and the server log in {})",
        results.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_counted_per_route_from_the_given_line() {
        let log = [
            r#"{"method":"GET","route":"/api/v1/keys","status":200}"#,
            r#"{"method":"GET","route":"/api/v1/keys","status":401}"#,
            "not json",
            r#"{"method":"GET","route":"/api/v1/keys","status":200}"#,
            r#"{"method":"POST","route":"/api/v1/keys","status":400}"#,
        ]
        .join("\n");
        let seen = statuses(&log, 2);
        let keys = &seen[&("GET".to_owned(), "/api/v1/keys".to_owned())];
        assert_eq!(keys.get(&200), Some(&1));
        assert_eq!(keys.get(&401), Some(&1));
        let wanted = [
            ("GET", "/api/v1/keys"),
            ("POST", "/api/v1/keys"),
            ("GET", "/x"),
        ]
        .map(|(m, p)| (m.to_owned(), p.to_owned()));
        assert_eq!(unreached(&log, 1, &wanted), ["POST /api/v1/keys", "GET /x"]);
    }

    #[test]
    fn operations_come_from_the_openapi_paths() {
        let openapi: Value = serde_json::json!({"paths": {"/a": {"get": {}, "post": {}}, "/b": {"delete": {}},
                                  "/api/v1/secret-scanning/{provider}": {"post": {}}}});
        assert_eq!(
            operations(&openapi),
            [("GET", "/a"), ("POST", "/a"), ("DELETE", "/b")]
                .map(|(m, p)| (m.to_owned(), p.to_owned()))
        );
    }
}

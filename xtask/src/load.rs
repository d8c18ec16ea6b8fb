//! `make load` (`cargo xtask load`): a short k6 smoke of every script in load-tests/ against a
//! gateway of its own on a fresh database, 127.0.0.1 only. Fails when a script fails, a k6
//! threshold is crossed, the server dies, or the server counted a 5xx. See
//! load-tests/README.md for full-size runs.
//!
//! Environment: LOAD_PROFILE=release|debug (release: the p99 < 5 ms threshold is about an
//! optimised build), LOAD_SCRIPTS="auth-hot-path key-churn revocation-race", LOAD_RESULTS_DIR
//! (target/load); any variable a script reads (RATE, DURATION, …) overrides the smoke size.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::gateway::{Gateway, ScratchDatabase};
use crate::{build_gateway, env_or, http, process, target_dir, tools};

/// About 40 s of k6 in all, setup() included. The smoke proves the scripts run and every
/// answer is right; latency is measured by `make bench`, so its p99 bound here is loose
/// enough that a busy shared 2-core machine (a 5.7 ms p99 was seen) doesn't fail the run.
const SMOKE: &[(&str, &[(&str, &str)])] = &[
    (
        "auth-hot-path",
        &[("RATE", "200"), ("DURATION", "15s"), ("P99_MS", "25")],
    ),
    ("key-churn", &[("RATE", "20"), ("DURATION", "12s")]),
    (
        "revocation-race",
        &[
            ("REVOKE_RATE", "10"),
            ("HAMMER_RATE", "150"),
            ("DURATION", "10s"),
        ],
    ),
];

/// Server-side 5xx answers in a /metrics scrape, /readyz excluded (it answers 503 by design
/// while not ready).
fn server_errors(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("logstitch_http_requests_total{"))
        .filter(|line| line.contains("status=\"5") && !line.contains("route=\"/readyz\""))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        // Not .sum(): an empty f64 sum is -0, which prints as "-0".
        .fold(0.0, |total, n| total + n)
}

pub fn run() -> Result<()> {
    let k6 = tools::require("k6")?;
    let profile = env_or("LOAD_PROFILE", "release");
    let binary = build_gateway(&profile)?;
    let scripts = env_or("LOAD_SCRIPTS", "auth-hot-path key-churn revocation-race");
    let results = std::env::var("LOAD_RESULTS_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| target_dir().join("load"));
    std::fs::create_dir_all(&results)?;
    let results = results.canonicalize()?;
    let log = results.join("server.log");
    std::fs::write(&log, "")?;

    let database = ScratchDatabase::create("load")?;
    // All k6 traffic comes from 127.0.0.1 and revocation-race answers hundreds of 401s a
    // second by design: lift the per-IP failed-authentication throttle, or the smoke would
    // measure the throttle instead of the auth path.
    let lifted = "1000000".to_owned();
    let mut gateway = Gateway::start(
        &binary,
        &database.url,
        &[
            (
                "LOGSTITCH__RATE_LIMIT__FAILED_AUTH_PER_SECOND",
                lifted.clone(),
            ),
            ("LOGSTITCH__RATE_LIMIT__FAILED_AUTH_BURST", lifted),
        ],
        &log,
    )?;

    let mut failed = Vec::new();
    for name in scripts.split_whitespace() {
        let script = Path::new("load-tests").join(format!("{name}.js"));
        if !script.exists() {
            bail!("no such script: {}", script.display());
        }
        let mut command = Command::new(&k6);
        command
            .args(["run", "--quiet", "--no-color", "--summary-export"])
            .arg(results.join(format!("{name}.json")))
            .arg(&script)
            .env("BASE_URL", &gateway.url)
            .env("ADMIN_TOKEN", &gateway.admin_token);
        let sizes = SMOKE
            .iter()
            .find(|(script, _)| *script == name)
            .map_or(&[][..], |s| s.1);
        for (variable, value) in sizes {
            // An exported variable of the same name wins over the smoke size.
            if std::env::var_os(variable).is_none() {
                command.env(variable, value);
            }
        }
        let shown: Vec<String> = sizes
            .iter()
            .map(|(variable, value)| format!("{variable}={value}"))
            .collect();
        eprintln!(
            "\n==> k6 run {} (smoke size {}; the environment overrides)",
            script.display(),
            shown.join(" ")
        );
        let started = Instant::now();
        let outcome = process::run(&mut command);
        process::check_interrupted()?;
        eprintln!("({name}: {} s)", started.elapsed().as_secs());
        if let Err(error) = outcome {
            // k6 exits 99 when a threshold was crossed; anything else is the script or k6.
            eprintln!("load: {name} failed: {error:#}");
            failed.push(name.to_owned());
        }
    }

    if gateway.check_alive().is_err() {
        failed.push("server-died".to_owned());
    } else {
        let errors = server_errors(&http::get(&format!("{}/metrics", gateway.url), None)?.body);
        eprintln!("\nserver-side 5xx responses during the smoke (excluding /readyz): {errors}");
        if errors != 0.0 {
            failed.push("server-5xx".to_owned());
        }
    }
    eprintln!("k6 summaries and server log: {}", results.display());
    if !failed.is_empty() {
        bail!(
            "load: FAILED: {} (server log: {})",
            failed.join(" "),
            log.display()
        );
    }
    eprintln!("load: all thresholds passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_5xx_outside_readyz_count_as_server_errors() {
        let scrape = "# TYPE logstitch_http_requests_total counter\n\
            logstitch_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"503\"} 4\n\
            logstitch_http_requests_total{method=\"GET\",route=\"/api/v1/keys\",status=\"200\"} 9\n\
            logstitch_http_requests_total{method=\"GET\",route=\"/api/v1/keys\",status=\"500\"} 2\n\
            logstitch_http_requests_total{method=\"POST\",route=\"/api/v1/keys\",status=\"503\"} 1\n";
        assert_eq!(server_errors(scrape), 3.0);
        assert_eq!(server_errors(""), 0.0);
    }
}

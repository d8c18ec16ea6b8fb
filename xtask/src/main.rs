//! `cargo xtask …`: the developer tooling behind `make` (the cargo-xtask convention: plain
//! Rust, no install step). The Makefile stays the entry point; see xtask/README.md.

mod bench;
mod fuzz;
mod gateway;
mod http;
mod load;
mod process;
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask TASK

  install TOOL...   find each tool, installing the missing ones (apt-get as root, or a pinned
                    virtualenv in .data/tools); prints `TOOL: PATH` lines (tools below)
  bench             make bench: in-process benches, two release gateways under wrk and k6,
                    revoke-to-refused (the multi-instance test), gateway forwarding cost;
                    the table in target/bench-summary.md
  fleet             make bench-fleet: DELETE latency with 2, 10, 20 release gateways on one
                    database, and instances still accepting a key after its DELETE; then charts
  charts            redraw the charts of make bench from target/bench/*.json (docs/bench/)
  load              make load: k6 smoke of load-tests/ against a release gateway
  fuzz              make fuzz: schemathesis against a debug gateway

tools:";

/// The checkout: xtask/ sits at its top.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is inside the repository")
}

/// Where cargo puts builds: `CARGO_TARGET_DIR`, else target/ in the checkout.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds the gateway binary (`debug` or `release`) and returns its path.
pub fn build_gateway(profile: &str) -> Result<PathBuf> {
    let mut command = cargo();
    command.args(["build", "--bin", "logstitch-gateway"]);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => bail!("the profile must be release or debug, not {other:?}"),
    }
    eprintln!("==> building the gateway ({profile})");
    process::run(&mut command)?;
    Ok(target_dir().join(profile).join("logstitch-gateway"))
}

fn main() -> ExitCode {
    process::stop_on_signals();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(error) = std::env::set_current_dir(repo()) {
        eprintln!("xtask: cannot enter {}: {error}", repo().display());
        return ExitCode::FAILURE;
    }
    let result = match args.first().map(String::as_str) {
        Some("install") => tools::install(&args[1..]),
        Some("bench") if args.len() == 1 => bench::run(),
        Some("fleet") if args.len() == 1 => bench::fleet_only(),
        Some("charts") if args.len() == 1 => bench::charts_only(),
        Some("load") if args.len() == 1 => load::run(),
        Some("fuzz") if args.len() == 1 => fuzz::run(),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE} {}", tools::names().join(" "));
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE} {}", tools::names().join(" "));
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! `make bench` (`cargo xtask bench`): the numbers BENCHMARKS.md reports, in one run, on
//! this machine, in this order:
//!   1. the release binary and the benches are built; the in-process benches run while no
//!      server does (benches/cache_memory.rs, benches/auth_path.rs);
//!   2. two release gateways, A and B, on a fresh database: database transactions around
//!      exactly 10,000 warm verifies, verify/healthz throughput and latency at saturation
//!      (wrk), latency at a fixed rate (k6) (service.rs);
//!   3. revoke → refused on the other instance: the multi-instance integration test
//!      `a_revoke_through_a_is_refused_by_b_on_the_very_next_request`, which asserts it and
//!      times it, run in release with more rounds (the measurement exists only there);
//!   4. the summary table, written to target/bench-summary.md (summary.rs);
//!   5. what forwarding costs: a static nginx upstream, direct against through the gateway
//!      and through nginx proxy_pass and nginx auth_request (forwarding.rs), appended to the
//!      table; then issue 13's peers table (verify and /healthz ÷ a bare actix-web handler,
//!      measured in step 2; forwarded ÷ each nginx), with the rounds in target/bench/peers.json
//!      (peers.rs);
//!   6. the shared rate-limit store against the local one (rate_limit_store.rs);
//!   7. awc against hyper-util as the upstream client (clients.rs, bench/forwarder);
//!   8. the fleet: DELETE latency with 2, 10 and 20 instances on one database, and whether
//!      any instance still accepts a key once its DELETE answered (fleet.rs), appended;
//!   9. the charts, from the JSON of the stages above (charts.rs), into target/bench/ and
//!      docs/bench/.
//!
//! `BENCH_ONLY=peers` runs only issue 13's peers (step 2's throughput rounds on one gateway,
//! and step 5), `BENCH_ONLY=clients` only step 7, `BENCH_ONLY=rate-limit-store` only step 6,
//! `BENCH_ONLY=fleet` only step 8 (then the charts), `BENCH_ONLY=charts` only step 9.
//!
//! Raw outputs stay in target/bench/. Databases are dropped and servers stopped at the end,
//! on failure and on Ctrl-C too.
//!
//! The box is small (2 cores) and shared, so each server runs one worker and each load
//! generator one thread, and the table reports ratios measured side by side in this run.
//! All load goes to 127.0.0.1 and every step is bounded in time.

mod charts;
mod clients;
mod fleet;
mod forwarding;
mod parse;
mod peers;
mod rate_limit_store;
mod service;
mod summary;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{build_gateway, cargo, env_or, process, target_dir, tools};

/// The knobs, from the environment (defaults in parentheses in BENCHMARKS.md).
pub struct Knobs {
    /// Seconds per wrk run.
    pub duration: u64,
    /// Alternating healthz/verify rounds.
    pub rounds: u64,
    pub connections: u64,
    /// Requests per second of the fixed-rate runs.
    pub rate: u64,
    pub fixed_duration: u64,
    pub revokes: u64,
    pub server_rust_log: String,
    pub gateway_rounds: u64,
    pub gateway_rate: u64,
}

fn number(name: &str, default: u64) -> Result<u64> {
    env_or(name, &default.to_string())
        .parse()
        .with_context(|| format!("{name} must be a whole number"))
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        Ok(Knobs {
            duration: number("BENCH_DURATION", 6)?,
            rounds: number("BENCH_ROUNDS", 5)?,
            connections: number("BENCH_CONNECTIONS", 32)?,
            rate: number("BENCH_RATE", 2000)?,
            fixed_duration: number("BENCH_FIXED_DURATION", 15)?,
            revokes: number("BENCH_REVOKES", 100)?,
            server_rust_log: env_or("BENCH_SERVER_RUST_LOG", "warn"),
            gateway_rounds: number("BENCH_GATEWAY_ROUNDS", 5)?,
            gateway_rate: number("BENCH_GATEWAY_RATE", 1000)?,
        })
    }
}

/// The measuring tools, found (or installed) once.
pub struct Tools {
    pub wrk: PathBuf,
    pub k6: PathBuf,
    pub nginx: PathBuf,
}

impl Tools {
    /// `wrk -t1 -cN -dDs --timeout 5s --latency [-H auth] URL`, its output in `out`.
    pub fn wrk(
        &self,
        connections: u64,
        seconds: u64,
        auth: Option<&str>,
        url: &str,
        out: &Path,
    ) -> Result<parse::Wrk> {
        let mut command = Command::new(&self.wrk);
        command.args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "5s",
            "--latency",
        ]);
        if let Some(key) = auth {
            command.args(["-H", &format!("Authorization: Bearer {key}")]);
        }
        let text = process::output(command.arg(url))?;
        // wrk stops early and exits 0 on Ctrl-C: don't take that for a measurement.
        process::check_interrupted()?;
        std::fs::write(out, &text)?;
        parse::wrk(&text).with_context(|| format!("{}", out.display()))
    }

    /// xtask/k6/bench.js against `url`; `vars` are ITERATIONS, or RATE and DURATION. One
    /// thread, no usage report (nothing leaves loopback). The summary lands in `out`.
    pub fn k6(
        &self,
        url: &str,
        key: Option<&str>,
        vars: &[(&str, String)],
        out: &Path,
    ) -> Result<(parse::K6, Value)> {
        let log = out.with_extension("log");
        let mut command = Command::new(&self.k6);
        command
            .args(["run", "--quiet", "--no-color", "--no-usage-report"])
            .arg(crate::repo().join("xtask/k6/bench.js"))
            .env("GOMAXPROCS", "1")
            .env("K6_NO_USAGE_REPORT", "true")
            .env("URL", url)
            .env("OUT", out)
            .env("KEY", key.unwrap_or(""))
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("err"))?);
        for (name, value) in vars {
            command.env(name, value);
        }
        process::run(&mut command).with_context(|| format!("k6 (see {})", log.display()))?;
        process::check_interrupted()?;
        let summary: Value = serde_json::from_str(&std::fs::read_to_string(out)?)?;
        Ok((parse::k6(&summary), summary))
    }
}

/// Runs `command`, showing its stdout and keeping a copy in `copy` (stderr is shown only).
fn tee(command: &mut Command, copy: &Path) -> Result<()> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start a bench")?;
    let mut file = std::fs::File::create(copy)?;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        writeln!(file, "{line}")?;
    }
    let status = child.wait()?;
    process::check_interrupted()?;
    anyhow::ensure!(
        status.success(),
        "{:?} failed ({status})",
        command.get_args().collect::<Vec<_>>()
    );
    Ok(())
}

/// The multi-instance test, in release, with `revokes` rounds; its timings (µs) as JSON.
fn revoke_to_refused(revokes: u64, raw: &Path) -> Result<Value> {
    let report = raw.join("revoke.json");
    let base = crate::gateway::base_database_url()?;
    eprintln!("\n==> revoke through A → refused by B, {revokes} keys (tests/api/multi_instance.rs, release)");
    process::run(
        cargo()
            .args(["test", "--release", "--test", "api", "--", "--exact"])
            .arg("multi_instance::a_revoke_through_a_is_refused_by_b_on_the_very_next_request")
            .env("DATABASE_URL", base)
            .env("LOGSTITCH_BENCH_REVOKES", revokes.to_string())
            .env("LOGSTITCH_BENCH_REVOKE_REPORT", &report),
    )?;
    Ok(serde_json::from_str(&std::fs::read_to_string(&report)?)?)
}

/// `cargo xtask charts` (`BENCH_ONLY=charts`): redraws the charts from target/bench/*.json.
pub fn charts_only() -> Result<()> {
    charts::draw(&target_dir().join("bench"), &charts::docs_dir())?;
    Ok(())
}

/// `make bench-fleet` (`cargo xtask fleet`, `BENCH_ONLY=fleet`): the fleet stage alone, then
/// the charts. Other stages' outputs in target/bench/ are kept.
pub fn fleet_only() -> Result<()> {
    let knobs = fleet::FleetKnobs::from_env()?;
    let binary = build_gateway("release")?;
    let bench_dir = target_dir().join("bench");
    std::fs::create_dir_all(&bench_dir)?;
    let table = fleet::measure(&knobs, &binary, &bench_dir)?;
    eprintln!(
        "\n==> fleet summary (also in {}/fleet/table.md)",
        bench_dir.display()
    );
    println!("{table}");
    charts_only()
}

pub fn run() -> Result<()> {
    match env_or("BENCH_ONLY", "").as_str() {
        "charts" => return charts_only(),
        "fleet" => return fleet_only(),
        _ => {}
    }
    let knobs = Knobs::from_env()?;
    eprintln!("==> load generators");
    let tools = Tools {
        wrk: tools::require("wrk")?,
        k6: tools::require("k6")?,
        nginx: tools::require("nginx")?,
    };
    let only = env_or("BENCH_ONLY", "");
    // Just awc against hyper-util (its own raw folder; no gateway involved).
    if only == "clients" {
        let raw = fresh_dir("bench-clients")?;
        println!("{}", clients::measure(&knobs, &tools, &raw)?);
        return Ok(());
    }
    let binary = build_gateway("release")?;
    match only.as_str() {
        "" => {}
        // Just the shared-store comparison (its own raw folder).
        "rate-limit-store" => {
            let raw = fresh_dir("bench-rate-limit-store")?;
            println!(
                "{}",
                rate_limit_store::measure(&knobs, &tools, &binary, &raw)?
            );
            return Ok(());
        }
        // Just issue 13's peers: raw outputs in target/bench-peers/, the rounds in
        // target/bench/peers.json as in a whole run, the table in target/bench-peers.md.
        "peers" => {
            let bare = peers::build_bare()?;
            let raw = fresh_dir("bench-peers")?;
            let throughput = service::throughput_only(&knobs, &tools, &binary, &bare, &raw)?;
            let (forwarding, forwarded) = forwarding::measure(&knobs, &tools, &binary, &raw)?;
            let table = forwarding + "\n" + &peers_report(&knobs, &throughput, &forwarded)?;
            std::fs::write(target_dir().join("bench-peers.md"), &table)?;
            println!("{table}");
            return Ok(());
        }
        other => {
            bail!("BENCH_ONLY is rate-limit-store, clients, peers, fleet or charts, not {other:?}")
        }
    }
    let bare = peers::build_bare()?;
    process::run(cargo().args([
        "bench",
        "--no-run",
        "--bench",
        "auth_path",
        "--bench",
        "cache_memory",
        "--bench",
        "request_overhead",
    ]))?;
    let raw = fresh_dir("bench")?;

    eprintln!("\n==> cache memory: 1,000,000 keys (benches/cache_memory.rs)");
    tee(
        cargo().args(["bench", "--bench", "cache_memory"]),
        &raw.join("cache_memory.txt"),
    )?;
    eprintln!("\n==> auth path (benches/auth_path.rs, criterion)");
    tee(
        cargo().args(["bench", "--bench", "auth_path", "--", "--noplot"]),
        &raw.join("auth_path.txt"),
    )?;
    eprintln!("\n==> per-request parts (benches/request_overhead.rs, criterion)");
    tee(
        cargo().args(["bench", "--bench", "request_overhead", "--", "--noplot"]),
        &raw.join("request_overhead.txt"),
    )?;

    let service = service::measure(&knobs, &tools, &binary, &bare, &raw)?;
    let revoke = revoke_to_refused(knobs.revokes, &raw)?;
    let table = summary::table(&knobs, &raw, &service, &revoke)?;
    let summary_path = target_dir().join("bench-summary.md");
    std::fs::write(&summary_path, &table)?;
    eprintln!(
        "\n==> summary (also in {}; raw outputs in {}/)",
        summary_path.display(),
        raw.display()
    );
    println!("{table}");

    let overhead = summary::request_overhead_table(&target_dir().join("criterion"));
    println!("{overhead}");
    append(&summary_path, &overhead)?;

    let (forwarding, forwarded) = forwarding::measure(&knobs, &tools, &binary, &raw)?;
    eprintln!(
        "\n==> gateway summary (appended to {})",
        summary_path.display()
    );
    println!("{forwarding}");
    append(&summary_path, &forwarding)?;
    let peers = peers_report(&knobs, &service.throughput, &forwarded)?;
    println!("{peers}");
    append(&summary_path, &peers)?;

    let store = rate_limit_store::measure(&knobs, &tools, &binary, &raw)?;
    println!("{store}");
    append(&summary_path, &store)?;

    let clients = clients::measure(&knobs, &tools, &raw)?;
    println!("{clients}");
    append(&summary_path, &clients)?;

    let fleet = fleet::measure(&fleet::FleetKnobs::from_env()?, &binary, &raw)?;
    println!("{fleet}");
    append(&summary_path, &fleet)?;

    charts::draw(&raw, &charts::docs_dir())?;
    Ok(())
}

/// An empty target/NAME for a stage's raw outputs.
fn fresh_dir(name: &str) -> Result<PathBuf> {
    let dir = target_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn append(summary: &Path, table: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(summary)?
        .write_all(format!("\n{table}").as_bytes())?;
    Ok(())
}

/// Issue 13's four paths ÷ their peers: target/bench/peers.json and the table, with the
/// load average around the throughput rounds.
fn peers_report(
    knobs: &Knobs,
    throughput: &service::Throughput,
    forwarded: &[peers::PeerPath; 2],
) -> Result<String> {
    let [verify, healthz] = throughput.peers();
    let paths = [&verify, &healthz, &forwarded[0], &forwarded[1]];
    let json = peers::write_json(&paths)?;
    eprintln!("\n==> issue 13 peers (rounds in {})", json.display());
    Ok(format!(
        "\n{}(load average before/after the verify and /healthz rounds: {} / {}; after the forwarding rounds: {})\n",
        summary::peers_table(knobs, &paths),
        throughput.loadavg_before,
        throughput.loadavg_after,
        service::loadavg(),
    ))
}

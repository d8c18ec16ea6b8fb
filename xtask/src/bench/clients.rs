//! awc against hyper-util as the gateway's upstream client (issue 13): bench/forwarder, one
//! actix-web worker that forwards with one client or the other (an argument), twice, in
//! front of the same static nginx; the same wrk load through each in turn, alternating, so
//! the ratio is measured side by side. The forwarder crate is outside the workspace, with
//! its own Cargo.lock: awc links h2 0.3 (RUSTSEC-2026-0258), which must not enter the
//! gateway's. Only this stage builds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use super::forwarding::static_upstream;
use super::parse::{self, Wrk};
use super::peers;
use super::service::timed_wrk;
use super::{Knobs, Tools};
use crate::gateway::TempDir;
use crate::process::{self, Running};
use crate::{cargo, repo, target_dir};

/// Builds bench/forwarder in release, into its own target dir (nothing shared with the
/// workspace's, whose lock has no awc).
fn build() -> Result<PathBuf> {
    let target = target_dir().join("bench-forwarder");
    eprintln!("==> building bench/forwarder (release; its own Cargo.lock and target dir)");
    process::run(
        cargo()
            .args(["build", "--release", "--locked", "--manifest-path"])
            .arg(repo().join("bench/forwarder/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target),
    )?;
    Ok(target.join("release/bench-forwarder"))
}

struct Forwarder {
    url: String,
    process: Running,
    _dir: TempDir,
}

fn start(binary: &Path, client: &str, upstream: &str, log: &Path) -> Result<Forwarder> {
    let dir = TempDir::new("bench-forwarder")?;
    let port_file = dir.0.join("port");
    let (process, url) = process::start_server(
        &format!("bench-forwarder ({client})"),
        Command::new(binary)
            .args([client, upstream])
            .arg(&port_file),
        &port_file,
        "/",
        log,
    )?;
    eprintln!("==> forwarder with {client} on {url}");
    Ok(Forwarder {
        url,
        process,
        _dir: dir,
    })
}

pub fn measure(knobs: &Knobs, tools: &Tools, raw: &Path) -> Result<String> {
    let binary = build()?;
    let work = TempDir::new("bench-clients")?;
    eprintln!("\n==> static upstream (nginx) on 127.0.0.1");
    let (_nginx, upstream) = static_upstream(&tools.nginx, &work.0)?;
    let awc = start(&binary, "awc", &upstream, &raw.join("forwarder-awc.log"))?;
    let hyper = start(
        &binary,
        "hyper",
        &upstream,
        &raw.join("forwarder-hyper.log"),
    )?;
    let path = "/api/v1/events";
    let (connections, seconds, rounds) = (knobs.connections, knobs.duration, knobs.gateway_rounds);
    eprintln!(
        "\n==> throughput: wrk -t1 -c{connections} -d{seconds}s, forwarder with awc and with hyper-util alternating, {rounds} rounds"
    );
    let sides = [("awc", &awc), ("hyper", &hyper)];
    for (name, forwarder) in sides {
        let out = raw.join(format!("wrk-client-{name}-warmup.txt"));
        tools.wrk(
            connections,
            2,
            None,
            &format!("{}{path}", forwarder.url),
            &out,
        )?;
    }
    let (mut awc_runs, mut hyper_runs): (Vec<Wrk>, Vec<Wrk>) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut order = [0, 1];
        if !peers::ours_first(round) {
            order.reverse();
        }
        for i in order {
            let (name, forwarder) = sides[i];
            let out = raw.join(format!("wrk-client-{name}-{round}.txt"));
            let url = format!("{}{path}", forwarder.url);
            let run = timed_wrk(tools, knobs, forwarder.process.pid(), None, &url, &out)?;
            if run.non2xx > 0 {
                bail!(
                    "the {name} run of round {round} had {} non-2xx answers",
                    run.non2xx
                );
            }
            [&mut awc_runs, &mut hyper_runs][i].push(run);
        }
        eprintln!(
            "round {round}: awc {:.0} req/s, hyper-util {:.0} req/s",
            awc_runs[awc_runs.len() - 1].rps,
            hyper_runs[hyper_runs.len() - 1].rps
        );
    }
    let ratios: Vec<f64> = awc_runs
        .iter()
        .zip(&hyper_runs)
        .map(|(a, h)| a.rps / h.rps)
        .collect();
    let median = parse::median(&ratios);
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    let rps = |runs: &[Wrk]| parse::median(&runs.iter().map(|r| r.rps).collect::<Vec<_>>());
    // Server CPU per forwarded request (the forwarder's utime + stime ÷ requests), all rounds.
    let cpu_us = |runs: &[Wrk]| {
        1e6 * runs.iter().filter_map(|r| r.server_cpu_s).sum::<f64>()
            / runs.iter().map(|r| r.requests as f64).sum::<f64>()
    };
    Ok([
        String::new(),
        "| Upstream client (bench/forwarder: one actix-web worker, same static nginx upstream) | Result | Decision | |".to_owned(),
        "| --- | --- | --- | --- |".to_owned(),
        format!(
            "| awc ÷ hyper-util forwarded throughput (wrk -t1 -c{connections}, {seconds} s, alternating, median of rounds) | **{median:.3}** (rounds: {}) — awc {:.0} req/s, hyper-util {:.0} req/s (medians); forwarder CPU per request awc {:.1} µs, hyper-util {:.1} µs | keep hyper-util unless awc is clearly faster; awc links h2 0.3 (RUSTSEC-2026-0258) either way | {} |",
            shown.join(" "),
            rps(&awc_runs),
            rps(&hyper_runs),
            cpu_us(&awc_runs),
            cpu_us(&hyper_runs),
            if median > 1.05 { "awc faster (blocked by h2 0.3)" } else { "hyper-util kept" },
        ),
    ]
    .join("\n"))
}

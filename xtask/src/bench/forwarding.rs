//! What forwarding through the gateway costs. A static nginx on 127.0.0.1 answers every
//! request at once; the same wrk load hits it directly and through the gateway (project key,
//! route /api/v1/events, rate limit lifted), alternating, so the ratio is measured side by
//! side; then k6 at a fixed rate gives p50/p99 both ways, whose difference is the latency
//! the gateway adds.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::parse;
use super::{Knobs, Tools};
use crate::gateway::{Gateway, ScratchDatabase, TempDir};
use crate::http;
use crate::process::{self, Running};

/// nginx on a socket bound here on port 0. nginx cannot bind port 0 itself, but it adopts
/// listening sockets named in its `NGINX` environment variable (what its binary upgrade
/// uses), so the kernel picks the port and nothing guesses a free one.
pub(super) fn static_upstream(nginx: &Path, work: &Path) -> Result<(Running, String)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let fd = listener.as_raw_fd();
    let dir = work.display();
    let config = format!(
        "daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 \"ok\\n\"; }}
    }}
}}
"
    );
    std::fs::create_dir_all(work.join("tmp"))?;
    std::fs::write(work.join("nginx.conf"), config)?;
    let mut command = Command::new(nginx);
    command
        .arg("-p")
        .arg(work)
        .arg("-c")
        .arg(work.join("nginx.conf"))
        .arg("-e")
        .arg(work.join("nginx-error.log"))
        .env("NGINX", format!("{fd};"))
        .stdin(Stdio::null());
    // SAFETY: between fork and exec only fcntl(2), which is async-signal-safe, on an fd we own.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut nginx = Running::spawn("nginx", &mut command)?;
    drop(listener);
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        process::check_interrupted()?;
        nginx.check_alive()?;
        if http::get(&format!("{url}/"), None).is_ok_and(|r| r.status == 200) {
            return Ok((nginx, url));
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("nginx did not answer on {url} within 10 s (see {dir}/nginx-error.log)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn measure(knobs: &Knobs, tools: &Tools, binary: &Path, raw: &Path) -> Result<String> {
    let work = TempDir::new("bench-forwarding")?;
    eprintln!("\n==> static upstream (nginx) on 127.0.0.1");
    let (_nginx, upstream) = static_upstream(&tools.nginx, &work.0)?;

    eprintln!("\n==> gateway with /api/v1/events → nginx, rate limit lifted");
    let config = work.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[[gateway.routes]]\nprefix = \"/api/v1/events\"\nupstream = \"{upstream}\"\ntimeout_ms = 5000\n\n\
             [rate_limit]\nrequests_per_second = 1000000000.0\nburst = 1000000000\n"
        ),
    )?;
    let db = ScratchDatabase::create("benchgw")?;
    let env = [
        ("LOGSTITCH_CONFIG", config.display().to_string()),
        ("LOGSTITCH__SERVER__WORKERS", "1".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let gateway = Gateway::start(binary, &db.url, &env, &raw.join("server-forwarding.log"))?;
    let org = gateway.create_org("bench")?;
    let (key, _) = gateway.create_key(&org, "bench")?;
    let direct = format!("{upstream}/api/v1/events");
    let proxied = format!("{}/api/v1/events", gateway.url);
    http::get(&proxied, Some(&key))?.expect_status(200, "a proxied request")?;

    let (connections, seconds, rounds) = (knobs.connections, knobs.duration, knobs.gateway_rounds);
    eprintln!("\n==> throughput: wrk -t1 -c{connections} -d{seconds}s, direct and proxied alternating, {rounds} rounds");
    tools.wrk(
        connections,
        2,
        Some(&key),
        &proxied,
        &raw.join("wrk-forwarding-warmup.txt"),
    )?;
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let d = tools.wrk(
            connections,
            seconds,
            None,
            &direct,
            &raw.join(format!("wrk-direct-{round}.txt")),
        )?;
        let p = tools.wrk(
            connections,
            seconds,
            Some(&key),
            &proxied,
            &raw.join(format!("wrk-proxied-{round}.txt")),
        )?;
        eprintln!(
            "round {round}: direct {:.0} req/s, proxied {:.0} req/s",
            d.rps, p.rps
        );
        if p.non2xx > 0 {
            bail!(
                "the proxied run of round {round} had {} non-2xx answers",
                p.non2xx
            );
        }
        ratios.push(p.rps / d.rps);
    }
    let median = parse::median(&ratios);

    let rate = knobs.gateway_rate;
    eprintln!(
        "\n==> latency at a fixed {rate} req/s for {}s (k6), direct then proxied",
        knobs.fixed_duration
    );
    let vars = [
        ("RATE", rate.to_string()),
        ("DURATION", knobs.fixed_duration.to_string()),
    ];
    let (d, _) = tools.k6(&direct, None, &vars, &raw.join("k6-fixed-direct.json"))?;
    let (p, _) = tools.k6(
        &proxied,
        Some(&key),
        &vars,
        &raw.join("k6-fixed-proxied.json"),
    )?;
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    let us = |ms: f64| format!("{:.0} µs", ms * 1000.0);
    Ok([
        "| Gateway measure | Result | Target | |".to_owned(),
        "| --- | --- | --- | --- |".to_owned(),
        format!(
            "| proxied ÷ direct throughput (static nginx upstream, wrk -t1, median of rounds) | **{median:.3}** (rounds: {}) | ≥ 0.7 | {} |",
            shown.join(" "),
            if median >= 0.7 { "met" } else { "**NOT met**" }
        ),
        format!(
            "| latency added at a fixed rate (k6), p50 | {} (direct {}, proxied {}) | report | — |",
            us(p.p50_ms - d.p50_ms),
            us(d.p50_ms),
            us(p.p50_ms)
        ),
        format!(
            "| latency added at a fixed rate (k6), p99 | {} (direct {}, proxied {}); failed: direct {:.2}%, proxied {:.2}% | report | — |",
            us(p.p99_ms - d.p99_ms),
            us(d.p99_ms),
            us(p.p99_ms),
            100.0 * d.failed,
            100.0 * p.failed
        ),
    ]
    .join("\n"))
}

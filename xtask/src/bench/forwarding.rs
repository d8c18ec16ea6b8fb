//! What forwarding through the gateway costs. A static nginx on 127.0.0.1 answers every
//! request at once; the same wrk load hits it directly, through the gateway (project key,
//! route /api/v1/events, rate limit lifted), and through issue 13's two peers: nginx
//! `proxy_pass` (no auth: the floor) and nginx `auth_request` against the same gateway's
//! verify (what a user would build instead), each nginx one worker with keepalive pools.
//! The four alternate within each round, so the ratios are measured side by side; then k6
//! at a fixed rate gives p50/p99 direct and through the gateway, whose difference is the
//! latency the gateway adds.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::parse;
use super::peers::{self, PeerPath};
use super::{Knobs, Tools};
use crate::gateway::{Gateway, ScratchDatabase, TempDir};
use crate::http;
use crate::process::{self, Running};

/// nginx, one worker, on a socket bound here on port 0, serving `servers` (the `upstream`
/// and `server` blocks of its http block, given the port). nginx cannot bind port 0 itself,
/// but it adopts listening sockets named in its `NGINX` environment variable (what its binary
/// upgrade uses), so the kernel picks the port and nothing guesses a free one. Every instance
/// keeps a connection open for as many requests as it gets (`keepalive_requests`, 1000 by
/// default): neither the gateway nor wrk reconnects in the middle of a measurement.
fn nginx(
    nginx: &Path,
    work: &Path,
    name: &str,
    servers: impl FnOnce(u16) -> String,
) -> Result<(Running, String)> {
    let work = work.join(name);
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
    keepalive_requests 1000000;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
{}
}}
",
        servers(port)
    );
    std::fs::create_dir_all(work.join("tmp"))?;
    std::fs::write(work.join("nginx.conf"), config)?;
    let mut command = Command::new(nginx);
    command
        .arg("-p")
        .arg(&work)
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
    let mut nginx = Running::spawn(&format!("nginx ({name})"), &mut command)?;
    drop(listener);
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        process::check_interrupted()?;
        nginx.check_alive()?;
        // Any answer will do: behind auth_request, a request without a key is refused.
        if http::get(&format!("{url}/"), None).is_ok() {
            return Ok((nginx, url));
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("nginx did not answer on {url} within 10 s (see {dir}/nginx-error.log)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The upstream every forwarding measure shares: answers every request at once.
pub(super) fn static_upstream(nginx_binary: &Path, work: &Path) -> Result<(Running, String)> {
    nginx(nginx_binary, work, "upstream", |port| {
        format!(
            "    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 \"ok\\n\"; }}
    }}"
        )
    })
}

/// An `upstream` block with a keepalive pool (what a tuned nginx in front of it would use).
fn pool(name: &str, url: &str) -> String {
    let address = url.trim_start_matches("http://");
    format!(
        "    upstream {name} {{
        server {address};
        keepalive 32;
        keepalive_requests 1000000;
    }}
"
    )
}

/// What nginx needs to reuse a pooled upstream connection: HTTP/1.1 and no `Connection: close`.
const POOLED: &str = "proxy_http_version 1.1; proxy_set_header Connection \"\";";

/// nginx `proxy_pass` to `upstream`, no auth: the floor for the gateway's forwarded path.
fn proxy_pass(nginx_binary: &Path, work: &Path, upstream: &str) -> Result<(Running, String)> {
    nginx(nginx_binary, work, "proxy-pass", |port| {
        format!(
            "{}    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://backend; {POOLED} }}
    }}",
            pool("backend", upstream)
        )
    })
}

/// nginx `auth_request` → the gateway's verify → `upstream`: what a user would build instead
/// of the gateway (as tests/api/nginx.rs configures it, with keepalive pools to both).
fn auth_request(
    nginx_binary: &Path,
    work: &Path,
    upstream: &str,
    gateway: &str,
) -> Result<(Running, String)> {
    nginx(nginx_binary, work, "auth-request", |port| {
        format!(
            "{}{}    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /_auth;
            proxy_pass http://backend; {POOLED}
        }}
        location = /_auth {{
            internal;
            proxy_pass http://verify/api/v1/auth/verify; {POOLED}
            proxy_pass_request_body off;
            proxy_set_header Content-Length \"\";
            proxy_set_header Authorization $http_authorization;
        }}
    }}",
            pool("backend", upstream),
            pool("verify", gateway)
        )
    })
}

pub fn measure(
    knobs: &Knobs,
    tools: &Tools,
    binary: &Path,
    raw: &Path,
) -> Result<(String, [PeerPath; 2])> {
    let work = TempDir::new("bench-forwarding")?;
    eprintln!("\n==> static upstream (nginx) on 127.0.0.1");
    let (_nginx, upstream) = static_upstream(&tools.nginx, &work.0)?;

    eprintln!("\n==> gateway with /api/v1/events → nginx, rate limit lifted");
    let config = work.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[[gateway.routes]]\nprefix = \"/api/v1/events\"\nupstream = \"{upstream}\"\ntimeout_ms = 5000\n\
             scope = \"events.write\"\nmethod_scopes = {{ GET = \"events.read\" }}\n\n\
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
    // A restricted key (scopes, a rate limit of its own) on a scoped route: every check the
    // forwarded path makes is made.
    let (key, _) =
        gateway.create_restricted_key(&org, "bench", &["events.read", "events.write"])?;
    eprintln!(
        "\n==> peers: nginx proxy_pass → upstream; nginx auth_request → gateway verify → upstream"
    );
    let (_proxy_pass, proxy_pass_url) = proxy_pass(&tools.nginx, &work.0, &upstream)?;
    let (_auth_request, auth_request_url) =
        auth_request(&tools.nginx, &work.0, &upstream, &gateway.url)?;
    let path = "/api/v1/events";
    let direct = format!("{upstream}{path}");
    let proxied = format!("{}{path}", gateway.url);
    let nginx_pass = format!("{proxy_pass_url}{path}");
    let nginx_auth = format!("{auth_request_url}{path}");
    for (url, what) in [
        (&proxied, "a proxied request"),
        (&nginx_pass, "a request through nginx proxy_pass"),
        (&nginx_auth, "a request through nginx auth_request"),
    ] {
        http::get(url, Some(&key))?.expect_status(200, what)?;
    }

    let (connections, seconds, rounds) = (knobs.connections, knobs.duration, knobs.gateway_rounds);
    eprintln!("\n==> throughput: wrk -t1 -c{connections} -d{seconds}s, direct, gateway, nginx proxy_pass, nginx auth_request alternating, {rounds} rounds");
    let sides = [
        ("direct", &direct, None),
        ("proxied", &proxied, Some(key.as_str())),
        ("nginx-proxy-pass", &nginx_pass, Some(key.as_str())),
        ("nginx-auth-request", &nginx_auth, Some(key.as_str())),
    ];
    for (name, url, auth) in &sides[1..] {
        let out = raw.join(format!("wrk-{name}-warmup.txt"));
        tools.wrk(connections, 2, *auth, url, &out)?;
    }
    let mut runs: [Vec<parse::Wrk>; 4] = Default::default();
    for round in 1..=rounds {
        let mut order: Vec<usize> = (0..sides.len()).collect();
        if !peers::ours_first(round) {
            order.reverse();
        }
        for i in order {
            let (name, url, auth) = sides[i];
            let out = raw.join(format!("wrk-{name}-{round}.txt"));
            let run = tools.wrk(connections, seconds, auth, url, &out)?;
            if run.non2xx > 0 {
                bail!(
                    "the {name} run of round {round} had {} non-2xx answers",
                    run.non2xx
                );
            }
            runs[i].push(run);
        }
        let last = |i: usize| runs[i][runs[i].len() - 1].rps;
        eprintln!(
            "round {round}: direct {:.0} req/s, gateway {:.0} req/s, nginx proxy_pass {:.0} req/s, nginx auth_request {:.0} req/s",
            last(0),
            last(1),
            last(2),
            last(3)
        );
    }
    let [direct_runs, proxied_runs, pass_runs, auth_runs] = runs;
    let ratios: Vec<f64> = proxied_runs
        .iter()
        .zip(&direct_runs)
        .map(|(p, d)| p.rps / d.rps)
        .collect();
    let median = parse::median(&ratios);
    let peers = [
        PeerPath {
            path: "forwarded (proxy_pass)",
            ours: "gateway forwarded",
            peer: "nginx proxy_pass",
            ours_runs: proxied_runs.clone(),
            peer_runs: pass_runs,
            target: 0.8,
        },
        PeerPath {
            path: "forwarded (auth_request)",
            ours: "gateway forwarded",
            peer: "nginx auth_request",
            ours_runs: proxied_runs,
            peer_runs: auth_runs,
            target: 2.5,
        },
    ];

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
    let table = [
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
    .join("\n");
    Ok((table, peers))
}

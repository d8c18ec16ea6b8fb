//! What sharing key rate limits through Redis costs (`rate_limit.store = "redis"`): two
//! gateways on one database in front of the same static nginx, one counting locally, one in
//! Redis (rate limit lifted, so every request is admitted and leases are as large as they
//! get), the same wrk load on each in turn, so the throughput ratio is measured side by side;
//! then k6 at a fixed rate on each gives the p99 the shared store adds.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use super::forwarding::static_upstream;
use super::parse;
use super::{Knobs, Tools};
use crate::gateway::{Gateway, ScratchDatabase, TempDir};
use crate::http;
use crate::process;

/// `REDIS_URL`, else what scripts/ensure-redis.sh finds or starts.
fn redis_url() -> Result<String> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Ok(url);
    }
    let url = process::output(&mut Command::new(
        crate::repo().join("scripts/ensure-redis.sh"),
    ))?;
    Ok(url.trim().to_owned())
}

pub fn measure(knobs: &Knobs, tools: &Tools, binary: &Path, raw: &Path) -> Result<String> {
    let work = TempDir::new("bench-rate-limit-store")?;
    eprintln!("\n==> static upstream (nginx) on 127.0.0.1");
    let (_nginx, upstream) = static_upstream(&tools.nginx, &work.0)?;
    let redis = redis_url()?;
    let db = ScratchDatabase::create("benchrl")?;
    let start = |store: &str| -> Result<Gateway> {
        let config = work.0.join(format!("gateway-{store}.toml"));
        std::fs::write(
            &config,
            format!(
                "[[gateway.routes]]\nprefix = \"/api/v1/events\"\nupstream = \"{upstream}\"\ntimeout_ms = 5000\n\n\
                 [rate_limit]\nrequests_per_second = 1000000000.0\nburst = 1000000000\n\
                 store = \"{store}\"\nredis_key_prefix = \"logstitch:bench:{}:\"\n",
                std::process::id()
            ),
        )?;
        let env = [
            ("LOGSTITCH_CONFIG", config.display().to_string()),
            ("LOGSTITCH__RATE_LIMIT__REDIS_URL", redis.clone()),
            ("LOGSTITCH__SERVER__WORKERS", "1".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        let log = raw.join(format!("server-store-{store}.log"));
        eprintln!("\n==> gateway with rate_limit.store = \"{store}\"");
        Gateway::start(binary, &db.url, &env, &log)
    };
    let local = start("local")?;
    let shared = start("redis")?;
    let org = local.create_org("bench")?;
    let (key, _) = local.create_key(&org, "bench")?;
    let local_url = format!("{}/api/v1/events", local.url);
    let shared_url = format!("{}/api/v1/events", shared.url);
    for url in [&local_url, &shared_url] {
        http::get(url, Some(&key))?.expect_status(200, "a proxied request")?;
    }

    let (connections, seconds, rounds) = (knobs.connections, knobs.duration, knobs.gateway_rounds);
    eprintln!("\n==> throughput: wrk -t1 -c{connections} -d{seconds}s, local and redis alternating, {rounds} rounds");
    for (url, name) in [(&local_url, "local"), (&shared_url, "redis")] {
        let warmup = raw.join(format!("wrk-store-{name}-warmup.txt"));
        tools.wrk(connections, 2, Some(&key), url, &warmup)?;
    }
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let run = |url: &str, name: &str| {
            let out = raw.join(format!("wrk-store-{name}-{round}.txt"));
            tools.wrk(connections, seconds, Some(&key), url, &out)
        };
        let l = run(&local_url, "local")?;
        let r = run(&shared_url, "redis")?;
        eprintln!(
            "round {round}: local {:.0} req/s, redis {:.0} req/s",
            l.rps, r.rps
        );
        if l.non2xx > 0 || r.non2xx > 0 {
            bail!(
                "round {round} had non-2xx answers (local {}, redis {})",
                l.non2xx,
                r.non2xx
            );
        }
        ratios.push(r.rps / l.rps);
    }
    let median = parse::median(&ratios);

    let rate = knobs.gateway_rate;
    eprintln!(
        "\n==> latency at a fixed {rate} req/s for {}s (k6), local then redis",
        knobs.fixed_duration
    );
    let vars = [
        ("RATE", rate.to_string()),
        ("DURATION", knobs.fixed_duration.to_string()),
    ];
    let (l, _) = tools.k6(
        &local_url,
        Some(&key),
        &vars,
        &raw.join("k6-store-local.json"),
    )?;
    let (r, _) = tools.k6(
        &shared_url,
        Some(&key),
        &vars,
        &raw.join("k6-store-redis.json"),
    )?;
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    let us = |ms: f64| format!("{:.0} µs", ms * 1000.0);
    Ok([
        String::new(),
        "| Shared rate-limit store | Result | Target | |".to_owned(),
        "| --- | --- | --- | --- |".to_owned(),
        format!(
            "| forwarded throughput, store = \"redis\" ÷ \"local\" (static nginx upstream, wrk -t1, median of rounds) | **{median:.3}** (rounds: {}) | ≥ 0.9 | {} |",
            shown.join(" "),
            if median >= 0.9 { "met" } else { "**NOT met**" }
        ),
        format!(
            "| p99 added by the Redis store at a fixed rate (k6) | {} (local {}, redis {}); p50 local {}, redis {}; failed: local {:.2}%, redis {:.2}% | report | — |",
            us(r.p99_ms - l.p99_ms),
            us(l.p99_ms),
            us(r.p99_ms),
            us(l.p50_ms),
            us(r.p50_ms),
            100.0 * l.failed,
            100.0 * r.failed
        ),
    ]
    .join("\n"))
}

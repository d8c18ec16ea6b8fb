//! The Markdown table of `make bench` (target/bench-summary.md), one row per measure with
//! its target and whether this run met it.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::parse::{self, Wrk};
use super::peers::PeerPath;
use super::service::Service;
use super::Knobs;
use crate::target_dir;

/// `0.359 ms` → "359 µs"; from a millisecond up, "1.39 ms".
fn ms(value: f64) -> String {
    if value < 1.0 {
        format!("{:.0} µs", value * 1000.0)
    } else {
        format!("{value:.2} ms")
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**NOT met**"
    }
}

/// 125832.4 → "125,832".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mean(runs: &[Wrk]) -> f64 {
    runs.iter().map(|r| r.rps).sum::<f64>() / runs.len() as f64
}

fn cpu_us(runs: &[Wrk]) -> f64 {
    1e6 * runs.iter().filter_map(|r| r.server_cpu_s).sum::<f64>()
        / runs.iter().map(|r| r.requests as f64).sum::<f64>()
}

fn busy(runs: &[Wrk], seconds: u64) -> f64 {
    runs.iter().filter_map(|r| r.server_cpu_s).sum::<f64>() / (seconds as f64 * runs.len() as f64)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn memory_gib() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let kib: f64 = text
                .lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.0} GiB", kib / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "? GiB".to_owned())
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn table(knobs: &Knobs, raw: &Path, service: &Service, revoke: &Value) -> Result<String> {
    let (health, verify) = (&service.throughput.healthz, &service.throughput.verify);
    let ratios: Vec<f64> = health
        .iter()
        .zip(verify)
        .map(|(h, v)| v.rps / h.rps)
        .collect();
    // Judged on the median of the paired rounds: one round disturbed by a neighbour's build
    // does not decide it either way. All rounds are shown.
    let ratio = parse::median(&ratios);
    let per_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let errors: u64 = health.iter().chain(verify).map(|r| r.non2xx).sum();
    let (sat_v, sat_h) = (
        verify.last().context("no rounds")?,
        health.last().context("no rounds")?,
    );
    let (fixed_v, fixed_h) = (&service.fixed_verify, &service.fixed_healthz);
    let x = &service.transactions;
    let statements = match &x.statements {
        Some((_, kinds)) => {
            let mut kinds: Vec<(&String, &u64)> = kinds.iter().collect();
            kinds.sort_by(|a, b| b.1.cmp(a.1));
            let total: u64 = kinds.iter().map(|(_, n)| **n).sum();
            let shown: Vec<String> = kinds
                .iter()
                .map(|(kind, n)| format!("{kind} ×{n}"))
                .collect();
            format!("{total}: {}", shown.join(", "))
        }
        None => "n/a (the Postgres log is not readable here)".to_owned(),
    };

    let memory = parse::result_line(&std::fs::read_to_string(raw.join("cache_memory.txt"))?)?;
    let field = |name: &str| -> Result<f64> {
        memory
            .get(name)
            .with_context(|| format!("no {name} in the RESULT line"))?
            .parse()
            .context(name.to_owned())
    };
    let rss_mb = field("rss_after_kib")? * 1024.0 / 1e6;
    let grown_mb = (field("rss_after_kib")? - field("rss_before_kib")?) * 1024.0 / 1e6;
    let extra_lookups = field("extra_lookups")?;

    let criterion = target_dir().join("criterion");
    let auth_path_text = std::fs::read_to_string(raw.join("auth_path.txt"))?;
    let mut round_robin: Vec<(u64, String)> = auth_path_text
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("auth_path/"))
        .filter(|name| name.starts_with("full_") && name.ends_with("_keys_round_robin"))
        .filter_map(|name| Some((name.split('_').nth(1)?.parse().ok()?, name.to_owned())))
        .collect();
    round_robin.sort();
    round_robin.dedup();
    let full = parse::criterion_median_ns(&criterion, "full");

    let delays: Vec<f64> = revoke["delays_us"]
        .as_array()
        .context("no delays_us in revoke.json")?
        .iter()
        .filter_map(Value::as_f64)
        .map(|us| us / 1000.0)
        .collect();
    let deletes: Vec<f64> = revoke["delete_us"]
        .as_array()
        .context("no delete_us in revoke.json")?
        .iter()
        .filter_map(Value::as_f64)
        .map(|us| us / 1000.0)
        .collect();
    anyhow::ensure!(
        !delays.is_empty() && !deletes.is_empty(),
        "revoke.json holds no timings"
    );
    let revoke_p99 = parse::percentile(&delays, 99.0);

    let (conn, dur, rounds) = (knobs.connections, knobs.duration, knobs.rounds);
    let mut rows: Vec<[String; 4]> = vec![[
        format!("verify ÷ healthz throughput (wrk -t1 -c{conn}, {rounds}×{dur} s each, alternating)"),
        format!(
            "**{ratio:.3}** (median of rounds: {}; ratio of means {:.3}) — verify {} req/s, healthz {} req/s; non-2xx: {errors}",
            per_round.join(", "),
            mean(verify) / mean(health),
            thousands(mean(verify)),
            thousands(mean(health)),
        ),
        "≥ 0.9".into(),
        met(ratio >= 0.9 && errors == 0).into(),
    ]];
    rows.push([
        "… server CPU per request, same runs (utime+stime of server A ÷ requests)".into(),
        format!(
            "verify {:.1} µs, healthz {:.1} µs (ratio {:.3}); server busy {:.0}% / {:.0}% of one core",
            cpu_us(verify),
            cpu_us(health),
            cpu_us(health) / cpu_us(verify),
            100.0 * busy(verify, dur),
            100.0 * busy(health, dur),
        ),
        "report".into(),
        "—".into(),
    ]);
    rows.push([
        format!("verify latency at a fixed {} req/s (k6 constant-arrival-rate, {} s)", knobs.rate, knobs.fixed_duration),
        format!(
            "p50 {}, p99 {}, max {} ({} req, {} dropped, {} non-200) — healthz same rate: p50 {}, p99 {}",
            ms(fixed_v.p50_ms),
            ms(fixed_v.p99_ms),
            ms(fixed_v.max_ms),
            fixed_v.requests,
            fixed_v.dropped,
            fixed_v.check_fails,
            ms(fixed_h.p50_ms),
            ms(fixed_h.p99_ms),
        ),
        "report".into(),
        "—".into(),
    ]);
    let or_na = |value: Option<f64>| value.map_or("n/a".to_owned(), ms);
    rows.push([
        format!("verify latency at saturation (wrk --latency, -c{conn}, last round)"),
        format!(
            "p50 {}, p99 {} at {} req/s — healthz: p50 {}, p99 {}",
            or_na(sat_v.p50_ms),
            or_na(sat_v.p99_ms),
            thousands(sat_v.rps),
            or_na(sat_h.p50_ms),
            or_na(sat_h.p99_ms),
        ),
        "report".into(),
        "—".into(),
    ]);
    rows.push([
        "DB transactions per 10,000 verifies, warm cache (pg_stat_database delta)".into(),
        format!(
            "**{}** in a window of {:.1} s of load + 12 s settle (gateway A's counters: {} auth DB lookups, {} lastUsedAt flushes; \
             pool connections {} → {}; autovacuum in the window: {}); idle control, same length without load: {}",
            x.xacts,
            x.run_s,
            x.db_lookups,
            x.last_used_flushes,
            x.pool_size_start,
            x.pool_size_end,
            if x.autovacuum.is_empty() { "none" } else { &x.autovacuum },
            x.idle_xacts,
        ),
        "≤ 1".into(),
        met(x.xacts <= 1).into(),
    ]);
    rows.push([
        "… statements on the bench database in that window (Postgres log, log_statement=all)"
            .into(),
        statements,
        "report".into(),
        "—".into(),
    ]);
    rows.push([
        format!("revoke → refused on the other instance ({} revokes, tests/api/multi_instance.rs in release)", delays.len()),
        format!(
            "p50 {}, **p99 {}**, max {} (refused on B's first request after the DELETE answered: {n}/{n}, as the test asserts; \
             DELETE itself p50 {})",
            ms(parse::percentile(&delays, 50.0)),
            ms(revoke_p99),
            ms(parse::percentile(&delays, 100.0)),
            ms(parse::percentile(&deletes, 50.0)),
            n = delays.len(),
        ),
        "p99 ≤ 10 ms".into(),
        met(revoke_p99 <= 10.0).into(),
    ]);
    rows.push([
        format!("resident memory, {} cached keys (benches/cache_memory.rs)", thousands(field("entries")?)),
        format!(
            "**{rss_mb:.0} MB** process RSS ({grown_mb:.0} MB for the cache, {} B/key; re-resolve misses: {extra_lookups})",
            memory.get("bytes_per_entry").map_or("?", String::as_str)
        ),
        "≤ 400 MB".into(),
        met(rss_mb <= 400.0 && extra_lookups == 0.0).into(),
    ]);
    rows.push([
        "in-process auth path: check_format + SHA-256 + cache hit (criterion, median)".into(),
        full.map_or("n/a".to_owned(), |ns| format!("**{ns:.0} ns**")),
        "≤ 1 µs".into(),
        met(full.is_some_and(|ns| ns <= 1000.0)).into(),
    ]);
    let mut parts: Vec<(String, String)> = vec![
        (
            "check_format".into(),
            "… check_format (length, tag, base62, CRC32)".into(),
        ),
        ("sha256".into(), "… KeyHash::of (SHA-256)".into()),
        ("cache_hit".into(), "… AuthCache::resolve, hit".into()),
    ];
    for (keys, name) in &round_robin {
        parts.push((
            name.clone(),
            format!(
                "… whole path, each call another of {} cached keys",
                thousands(*keys as f64)
            ),
        ));
    }
    for (name, label) in parts {
        let value = parse::criterion_median_ns(&criterion, &name)
            .map_or("n/a".to_owned(), |ns| format!("{ns:.0} ns"));
        rows.push([label, value, "part".into(), "—".into()]);
    }

    let mut lines = vec![
        format!("# make bench — {}", utc_now()),
        String::new(),
        format!(
            "Machine: {} cores, {}, {} memory. Server: release build, LOGSTITCH__SERVER__WORKERS=1, RUST_LOG={}; \
             load generators pinned to 1 thread (wrk -t1, k6 with GOMAXPROCS=1). Load average before/after the \
             throughput runs: {} / {} (other work on the box shows here).",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model(),
            memory_gib(),
            knobs.server_rust_log,
            service.throughput.loadavg_before,
            service.throughput.loadavg_after,
        ),
        String::new(),
        "| Measure | Result | Target | |".into(),
        "| --- | --- | --- | --- |".into(),
    ];
    lines.extend(
        rows.iter()
            .map(|[a, b, c, d]| format!("| {a} | {b} | {c} | {d} |")),
    );
    lines.push(String::new());
    Ok(lines.join("\n"))
}

/// Issue 13's table: each path ÷ its peer, from the same run's alternating rounds.
pub fn peers_table(knobs: &Knobs, paths: &[&PeerPath]) -> String {
    let mut lines = vec![
        format!(
            "| Path ÷ its peer (issue 13; wrk -t1 -c{}, {} s runs, alternating, median of per-round ratios) | Result | Target | |",
            knobs.connections, knobs.duration
        ),
        "| --- | --- | --- | --- |".to_owned(),
    ];
    for path in paths {
        let ratios: Vec<String> = path.ratios().iter().map(|r| format!("{r:.3}")).collect();
        let median_rps =
            |runs: &[Wrk]| parse::median(&runs.iter().map(|r| r.rps).collect::<Vec<_>>());
        let cpu = if path
            .ours_runs
            .iter()
            .chain(&path.peer_runs)
            .all(|r| r.server_cpu_s.is_some())
        {
            format!(
                "; server CPU per request {:.1} µs vs {:.1} µs (ratio {:.3})",
                cpu_us(&path.ours_runs),
                cpu_us(&path.peer_runs),
                cpu_us(&path.peer_runs) / cpu_us(&path.ours_runs)
            )
        } else {
            String::new()
        };
        let ratio = path.ratio_median();
        lines.push(format!(
            "| {} ÷ {} | **{ratio:.3}** (rounds: {}) — {} {} req/s, {} {} req/s (medians){cpu}; non-2xx: {} | ≥ {} | {} |",
            path.ours,
            path.peer,
            ratios.join(" "),
            path.ours,
            thousands(median_rps(&path.ours_runs)),
            path.peer,
            thousands(median_rps(&path.peer_runs)),
            path.errors(),
            path.target,
            met(ratio >= path.target && path.errors() == 0),
        ));
    }
    lines.push(String::new());
    lines.join("\n")
}

/// benches/request_overhead.rs: what each per-request part costs, beside the way it replaced.
pub fn request_overhead_table(criterion: &Path) -> String {
    let median = |name: &str| parse::criterion_group_median_ns(criterion, "request_overhead", name);
    let shown = |ns: Option<f64>| ns.map_or("n/a".to_owned(), |ns| format!("{ns:.0} ns"));
    let mut lines = vec![
        "| Per-request part (benches/request_overhead.rs, criterion median) | Now | Before | |"
            .to_owned(),
        "| --- | --- | --- | --- |".to_owned(),
    ];
    let parts = [
        ("request id", "request_id", Some("request_id_before")),
        (
            "metrics sample (counter + histogram)",
            "metrics",
            Some("metrics_before"),
        ),
        ("lastUsedAt record", "last_used_record", None),
        (
            "identity headers (verify, forwarded)",
            "identity_headers",
            None,
        ),
        (
            "failed-auth throttle check (not on a cache hit)",
            "failed_auth_check",
            None,
        ),
        ("monotonic clock read", "clock_instant", None),
        ("wall clock read", "clock_utc", None),
    ];
    for (label, now, before) in parts {
        let (now_ns, before_ns) = (median(now), before.and_then(median));
        let ratio = match (now_ns, before_ns) {
            (Some(now), Some(before)) if now > 0.0 => format!("{:.1}x cheaper", before / now),
            _ => "—".to_owned(),
        };
        lines.push(format!(
            "| {label} | {} | {} | {ratio} |",
            shown(now_ns),
            before.map_or("—".to_owned(), |_| shown(before_ns))
        ));
    }
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_shown_the_way_the_table_reads() {
        assert_eq!(ms(0.359), "359 µs");
        assert_eq!(ms(1.386), "1.39 ms");
        assert_eq!(thousands(125832.4), "125,832");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000000.0), "1,000,000");
    }
}

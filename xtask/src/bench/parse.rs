//! Reading what the measuring tools print: wrk's text, k6's JSON summary, criterion's
//! estimates, cache_memory's RESULT line, the Postgres statement log.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// One `wrk --latency` run. Latencies in ms.
#[derive(Clone, Debug, Default)]
pub struct Wrk {
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub non2xx: u64,
    pub requests: u64,
    /// Server A's CPU time during the run (utime + stime), when measured.
    pub server_cpu_s: Option<f64>,
}

fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * scale)
}

pub fn wrk(text: &str) -> Result<Wrk> {
    let mut out = Wrk::default();
    let mut rps = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => rps = value.parse().ok(),
            ["50%", value] => out.p50_ms = duration_ms(value),
            ["99%", value] => out.p99_ms = duration_ms(value),
            ["Non-2xx", "or", "3xx", "responses:", n] => out.non2xx = n.parse().unwrap_or(0),
            [n, "requests", "in", ..] => out.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    out.rps = rps.context("no Requests/sec in wrk's output")?;
    Ok(out)
}

/// A k6 run's summary, as bench.js' handleSummary writes it. Latencies in ms.
#[derive(Debug, Default)]
pub struct K6 {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
    pub dropped: u64,
    pub check_fails: u64,
    /// Share of requests that failed (no answer, or a status k6 counts as failed).
    pub failed: f64,
}

pub fn k6(summary: &Value) -> K6 {
    let metric = |name: &str, value: &str| {
        summary["metrics"][name]["values"][value]
            .as_f64()
            .unwrap_or(0.0)
    };
    K6 {
        p50_ms: metric("http_req_duration", "med"),
        p99_ms: metric("http_req_duration", "p(99)"),
        max_ms: metric("http_req_duration", "max"),
        requests: metric("http_reqs", "count") as u64,
        dropped: metric("dropped_iterations", "count") as u64,
        check_fails: metric("checks", "fails") as u64,
        failed: metric("http_req_failed", "rate"),
    }
}

/// Criterion's median and mean (ns) of auth_path/NAME, when that bench ran.
pub fn criterion_median_ns(criterion_dir: &Path, name: &str) -> Option<f64> {
    criterion_group_median_ns(criterion_dir, "auth_path", name)
}

/// The median of criterion's `group/name`, in nanoseconds.
pub fn criterion_group_median_ns(criterion_dir: &Path, group: &str, name: &str) -> Option<f64> {
    let path = criterion_dir
        .join(group)
        .join(name)
        .join("new/estimates.json");
    let estimates: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

/// `RESULT entries=… rss_before_kib=…` from benches/cache_memory.rs, as a map.
pub fn result_line(text: &str) -> Result<BTreeMap<String, String>> {
    let line = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("RESULT "))
        .context("no RESULT line in cache_memory's output")?;
    Ok(line
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// Statements a Postgres log shows for `database` between two log timestamps (inclusive,
/// compared as text at the precision of `from`), counted by their first 60 characters.
/// Lines look like `2026-11-27 06:08:01.123 UTC [pid] user@db LOG:  statement: SELECT 1`.
pub fn log_statements(log: &str, database: &str, from: &str, to: &str) -> BTreeMap<String, u64> {
    let marker = format!("@{database} ");
    let mut kinds = BTreeMap::new();
    for line in log.lines() {
        let Some(at) = line.find(&marker) else {
            continue;
        };
        let Some(stamp) = line.get(..from.len()) else {
            continue;
        };
        if !line.starts_with(|c: char| c.is_ascii_digit()) || stamp < from || stamp > to {
            continue;
        }
        let rest = &line[at + marker.len()..];
        let Some(log_at) = rest.find("LOG:") else {
            continue;
        };
        let message = rest[log_at + 4..].trim_start();
        let text = if let Some(text) = message.strip_prefix("statement:") {
            text
        } else if message.starts_with("execute ") {
            message.split_once(':').map_or("", |(_, text)| text)
        } else {
            continue;
        };
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let kind: String = if text.is_empty() {
            "(empty query)".to_owned()
        } else {
            text.chars().take(60).collect()
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

/// Nearest-rank percentile.
pub fn percentile(values: &[f64], pct: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((pct / 100.0 * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 6s test @ http://127.0.0.1:4000/healthz
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   198.11us  100.22us   4.20ms   91.00%
  Latency Distribution
     50%  190.00us
     75%  210.00us
     90%  250.00us
     99%    1.36ms
  954120 requests in 6.00s, 120.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec: 159065.12
Transfer/sec:     20.00MB
";

    #[test]
    fn wrk_output_gives_rate_percentiles_and_errors() {
        let run = wrk(WRK).unwrap();
        assert_eq!(run.rps, 159065.12);
        assert!((run.p50_ms.unwrap() - 0.19).abs() < 1e-9);
        assert!((run.p99_ms.unwrap() - 1.36).abs() < 1e-9);
        assert_eq!(run.non2xx, 3);
        assert_eq!(run.requests, 954120);
        assert!(wrk("nothing").is_err());
    }

    #[test]
    fn k6_summary_values_are_read_and_missing_ones_are_zero() {
        let summary = serde_json::json!({"metrics": {
            "http_req_duration": {"values": {"med": 0.12, "p(99)": 1.4, "max": 7.0}},
            "http_reqs": {"values": {"count": 30001.0}},
            "checks": {"values": {"fails": 0.0}},
            "http_req_failed": {"values": {"rate": 0.5}}
        }});
        let run = k6(&summary);
        assert_eq!((run.p50_ms, run.p99_ms, run.max_ms), (0.12, 1.4, 7.0));
        assert_eq!((run.requests, run.dropped, run.check_fails), (30001, 0, 0));
        assert_eq!(run.failed, 0.5);
    }

    #[test]
    fn the_result_line_becomes_a_map() {
        let fields = result_line("noise\nRESULT entries=10 rss_after_kib=5\n").unwrap();
        assert_eq!(fields["entries"], "10");
        assert_eq!(fields["rss_after_kib"], "5");
        assert!(result_line("none").is_err());
    }

    #[test]
    fn statements_are_counted_inside_the_window_for_the_database_only() {
        let log = "\
2026-11-27 06:08:01.100 UTC [1] postgres@bench LOG:  statement: SELECT 1
2026-11-27 06:08:01.200 UTC [1] postgres@other LOG:  statement: SELECT 1
2026-11-27 06:08:02.300 UTC [2] postgres@bench LOG:  execute s0: UPDATE api_keys   SET x = 1
2026-11-27 06:08:02.400 UTC [2] postgres@bench LOG:  statement: 
2026-11-27 06:08:09.000 UTC [2] postgres@bench LOG:  statement: SELECT 2
";
        let kinds = log_statements(
            log,
            "bench",
            "2026-11-27 06:08:01.000",
            "2026-11-27 06:08:03.000",
        );
        assert_eq!(kinds["SELECT 1"], 1);
        assert_eq!(kinds["UPDATE api_keys SET x = 1"], 1);
        assert_eq!(kinds["(empty query)"], 1);
        assert_eq!(kinds.len(), 3);
    }

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
    }
}

//! The fleet bench (`make bench-fleet`, and a stage of `make bench`): N release gateways on
//! one fresh database (N = 2, 10, 20 by default), one worker and a small pool each. For each
//! of R revokes: a new key, warmed into every instance's cache (two verifies on each), a
//! DELETE through one instance (each in turn), timed from the request's first byte to the
//! answer; then, the moment the DELETE answered, one verify on every instance at once. Any
//! of those answering 200 is an instance still accepting the key after its DELETE answered,
//! which the revoke's ack rule forbids: the bench reports them and fails.
//!
//! What the DELETE waits for grows with N: it answers once every listening instance has
//! acknowledged the eviction, so its latency is the cost of the fleet-wide rule.

use std::io::Write;
use std::path::Path;
use std::sync::Barrier;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::parse;
use super::service::loadavg;
use crate::gateway::{Gateway, Org, ScratchDatabase};
use crate::http::{self, Prepared};
use crate::{env_or, process};

/// The fleet bench's knobs (BENCHMARKS.md lists them with their defaults).
pub struct FleetKnobs {
    /// Fleet sizes, measured in this order.
    pub sizes: Vec<usize>,
    pub revokes: usize,
    /// Each instance's `database.pool_max_size`.
    pub pool: usize,
    pub server_rust_log: String,
}

impl FleetKnobs {
    pub fn from_env() -> Result<FleetKnobs> {
        let whole = |name: &str, default: &str| -> Result<usize> {
            env_or(name, default)
                .parse()
                .with_context(|| format!("{name} must be a whole number"))
        };
        let sizes = parse_sizes(&env_or("BENCH_FLEET_SIZES", "2,10,20"))?;
        let revokes = whole("BENCH_FLEET_REVOKES", "100")?;
        ensure!(revokes > 0, "BENCH_FLEET_REVOKES must be at least 1");
        let pool = whole("BENCH_FLEET_POOL", "2")?;
        ensure!(pool > 0, "BENCH_FLEET_POOL must be at least 1");
        Ok(FleetKnobs {
            sizes,
            revokes,
            pool,
            server_rust_log: env_or("BENCH_SERVER_RUST_LOG", "warn"),
        })
    }
}

/// "2,10,20" → [2, 10, 20]; each size at least 2 (one instance is no fleet).
fn parse_sizes(text: &str) -> Result<Vec<usize>> {
    let sizes =
        text.split(',')
            .map(|size| {
                let size: usize = size.trim().parse().with_context(|| {
                    format!("BENCH_FLEET_SIZES: {size:?} is not a whole number")
                })?;
                ensure!(
                    size >= 2,
                    "BENCH_FLEET_SIZES: {size} instances is not a fleet"
                );
                Ok(size)
            })
            .collect::<Result<Vec<usize>>>()?;
    ensure!(!sizes.is_empty(), "BENCH_FLEET_SIZES is empty");
    Ok(sizes)
}

/// Postgres connections a fleet may hold at once: each instance's pool plus its LISTEN
/// connection. (The migration connection is closed before either opens.)
fn connections_needed(instances: usize, pool: usize) -> usize {
    instances * (pool + 1)
}

/// One fleet size's figures: what target/bench/fleet.json holds per size.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRow {
    pub instances: usize,
    pub revokes: usize,
    pub delete_p50_ms: f64,
    pub delete_p99_ms: f64,
    pub delete_max_ms: f64,
    /// Instances that answered 200, summed over every revoke, right after its DELETE answered.
    pub still_accepting: usize,
    /// `logstitch_revocation_ack_timeouts_total`, summed over the fleet: DELETEs that answered
    /// without every instance's ack.
    pub ack_timeouts: f64,
    pub loadavg: String,
}

impl FleetRow {
    fn from_samples(
        instances: usize,
        delete_ms: &[f64],
        still_accepting: usize,
        ack_timeouts: f64,
        loadavg: String,
    ) -> FleetRow {
        // To the microsecond: the clock read around a loopback request says no more.
        let at = |pct: f64| (parse::percentile(delete_ms, pct) * 1000.0).round() / 1000.0;
        FleetRow {
            instances,
            revokes: delete_ms.len(),
            delete_p50_ms: at(50.0),
            delete_p99_ms: at(99.0),
            delete_max_ms: at(100.0),
            still_accepting,
            ack_timeouts,
            loadavg,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "instances": self.instances,
            "revokes": self.revokes,
            "delete_p50_ms": self.delete_p50_ms,
            "delete_p99_ms": self.delete_p99_ms,
            "delete_max_ms": self.delete_max_ms,
            "still_accepting": self.still_accepting,
            "ack_timeouts": self.ack_timeouts,
            "loadavg": self.loadavg,
        })
    }

    pub fn from_json(row: &Value) -> Result<FleetRow> {
        let number = |name: &str| -> Result<f64> {
            row[name]
                .as_f64()
                .with_context(|| format!("no number {name} in {row}"))
        };
        Ok(FleetRow {
            instances: number("instances")? as usize,
            revokes: number("revokes")? as usize,
            delete_p50_ms: number("delete_p50_ms")?,
            delete_p99_ms: number("delete_p99_ms")?,
            delete_max_ms: number("delete_max_ms")?,
            still_accepting: number("still_accepting")? as usize,
            ack_timeouts: row["ack_timeouts"].as_f64().unwrap_or(0.0),
            loadavg: row["loadavg"].as_str().unwrap_or("").to_owned(),
        })
    }
}

/// fleet.json's text → its rows.
pub fn parse_fleet_json(text: &str) -> Result<Vec<FleetRow>> {
    let value: Value = serde_json::from_str(text).context("fleet.json is not JSON")?;
    value["fleet"]
        .as_array()
        .context("no \"fleet\" array in fleet.json")?
        .iter()
        .map(FleetRow::from_json)
        .collect()
}

pub fn fleet_json(rows: &[FleetRow]) -> Value {
    json!({ "fleet": rows.iter().map(FleetRow::to_json).collect::<Vec<_>>() })
}

fn verify_url(gateway: &Gateway) -> String {
    format!("{}/api/v1/auth/verify", gateway.url)
}

/// Starts `n` gateways at once (startup is mostly waiting: migrations serialize on a lock,
/// then each waits for its LISTEN connection), in instance order.
fn start_fleet(
    n: usize,
    binary: &Path,
    db: &ScratchDatabase,
    env: &[(&str, String)],
    raw: &Path,
) -> Result<Vec<Gateway>> {
    std::thread::scope(|scope| {
        let starting: Vec<_> = (0..n)
            .map(|i| {
                let log = raw.join(format!("server-{n}-{i}.log"));
                scope.spawn(move || Gateway::start(binary, &db.url, env, &log))
            })
            .collect();
        starting
            .into_iter()
            .map(|handle| handle.join().expect("a gateway start panicked"))
            .collect()
    })
}

/// What one revoke measured.
struct Revoke {
    delete_ms: f64,
    /// Instances (by index) that answered 200 right after the DELETE answered.
    accepting: Vec<usize>,
}

fn revoke_once(fleet: &[Gateway], org: &Org, round: usize) -> Result<Revoke> {
    let n = fleet.len();
    let via = &fleet[round % n];
    let (key, _) = via.create_key(org, &format!("fleet of {n}, revoke {round}"))?;
    // Twice on each: on the instances that did not create it the first use is a miss (a
    // Postgres lookup) and the second a cache hit, so every instance holds the key as valid
    // when the DELETE goes out.
    let mut key_id = None;
    for (i, gateway) in fleet.iter().enumerate() {
        for _ in 0..2 {
            let body = http::get(&verify_url(gateway), Some(&key))?
                .expect(200, &format!("instance {i}: verify before the DELETE"))?;
            key_id = body["key_id"].as_str().map(str::to_owned);
        }
    }
    let key_id = key_id.context("no key_id in verify's answer")?;

    // Every connection is open before the DELETE goes, and each probe waits on its own
    // thread, so all N verifies leave the moment the DELETE answered.
    let delete = http::prepare(&format!("{}/api/v1/keys/{key_id}", via.url))?;
    let probes: Vec<Prepared> = fleet
        .iter()
        .map(|gateway| http::prepare(&verify_url(gateway)))
        .collect::<Result<_>>()?;
    let go = Barrier::new(n + 1);
    let (deleted, answers) = std::thread::scope(|scope| {
        let waiting: Vec<_> = probes
            .into_iter()
            .map(|probe| {
                let (go, key) = (&go, key.as_str());
                scope.spawn(move || {
                    go.wait();
                    probe.send("GET", Some(key), None)
                })
            })
            .collect();
        let sent = Instant::now();
        let deleted = delete
            .send("DELETE", Some(&org.master_key), None)
            .map(|answer| (answer, sent.elapsed()));
        // Released whatever the DELETE did, so no probe thread is left waiting.
        go.wait();
        let answers: Vec<_> = waiting
            .into_iter()
            .map(|handle| handle.join().expect("a probe panicked"))
            .collect();
        (deleted, answers)
    });
    let (answer, took) = deleted?;
    let body = answer.expect(200, &format!("DELETE through instance {}", round % n))?;
    ensure!(body["revoked"] == true, "DELETE answered {body}");
    let mut accepting = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.with_context(|| format!("instance {i}: verify after the DELETE"))?;
        match answer.status {
            200 => accepting.push(i),
            401 => {}
            other => bail!(
                "instance {i}: verify after the DELETE answered {other} (expected 401): {}",
                answer.body
            ),
        }
    }
    Ok(Revoke {
        delete_ms: took.as_secs_f64() * 1000.0,
        accepting,
    })
}

fn measure_size(
    n: usize,
    knobs: &FleetKnobs,
    binary: &Path,
    db: &ScratchDatabase,
    raw: &Path,
) -> Result<FleetRow> {
    let in_use: usize = db
        .admin()
        .query("select count(*) from pg_stat_activity where backend_type = 'client backend'")?
        .parse()?;
    let max: usize = db.admin().query("show max_connections")?.parse()?;
    let needed = connections_needed(n, knobs.pool);
    if in_use + needed > max {
        bail!(
            "{n} instances may hold {needed} Postgres connections ({} pool + 1 LISTEN each), \
             but max_connections is {max} and {in_use} are in use: lower BENCH_FLEET_POOL or \
             BENCH_FLEET_SIZES",
            knobs.pool
        );
    }
    let env = [
        ("LOGSTITCH__SERVER__WORKERS", "1".to_owned()),
        ("LOGSTITCH__DATABASE__POOL_MAX_SIZE", knobs.pool.to_string()),
        ("RUST_LOG", knobs.server_rust_log.clone()),
    ];
    eprintln!(
        "\n==> fleet of {n}: starting {n} gateways (pool {} each; Postgres connections: {in_use} in use, up to {needed} more, max {max})",
        knobs.pool
    );
    let mut fleet = start_fleet(n, binary, db, &env, raw)?;
    let org = fleet[0].create_org(&format!("Fleet of {n}"))?;
    let loadavg_before = loadavg();
    eprintln!(
        "==> fleet of {n}: {} revokes, each through the next instance (load: {loadavg_before})",
        knobs.revokes
    );
    let (mut delete_ms, mut still_accepting) = (Vec::new(), 0);
    for round in 0..knobs.revokes {
        process::check_interrupted()?;
        let revoke = match revoke_once(&fleet, &org, round) {
            Ok(revoke) => revoke,
            Err(error) => {
                // Ctrl-C stops the gateways too: then the failed request is the interruption.
                process::check_interrupted()?;
                return Err(error.context(format!("fleet of {n}, revoke {round}")));
            }
        };
        if !revoke.accepting.is_empty() {
            eprintln!(
                "revoke {round}: instances {:?} still accepted the key after its DELETE answered",
                revoke.accepting
            );
        }
        still_accepting += revoke.accepting.len();
        delete_ms.push((revoke.delete_ms * 1000.0).round() / 1000.0);
    }
    for gateway in &mut fleet {
        gateway.check_alive()?;
    }
    let mut ack_timeouts = 0.0;
    for gateway in &fleet {
        ack_timeouts += gateway.metric("logstitch_revocation_ack_timeouts_total")?;
    }
    let row = FleetRow::from_samples(
        n,
        &delete_ms,
        still_accepting,
        ack_timeouts,
        format!("{loadavg_before} / {}", loadavg()),
    );
    eprintln!(
        "fleet of {n}: DELETE p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; still accepting after DELETE: {}; ack timeouts: {}",
        row.delete_p50_ms, row.delete_p99_ms, row.delete_max_ms, row.still_accepting, row.ack_timeouts
    );
    std::fs::write(
        raw.join(format!("delete-ms-{n}.json")),
        json!({ "instances": n, "delete_ms": delete_ms }).to_string(),
    )?;
    Ok(row)
}

/// The Markdown table appended to target/bench-summary.md.
pub fn table(knobs: &FleetKnobs, rows: &[FleetRow]) -> String {
    let mut lines = vec![
        format!(
            "| Fleet measure ({} revokes per size; one worker, pool_max_size {} per instance) | Result | Target | |",
            knobs.revokes, knobs.pool
        ),
        "| --- | --- | --- | --- |".to_owned(),
    ];
    for row in rows {
        let target = if row.instances == 20 {
            (
                "p99 ≤ 10 ms",
                if row.delete_p99_ms <= 10.0 {
                    "met"
                } else {
                    "**NOT met**"
                },
            )
        } else {
            ("report", "—")
        };
        lines.push(format!(
            "| DELETE latency, {} instances on one database (acks included) | p50 {:.2} ms, **p99 {:.2} ms**, max {:.2} ms (ack timeouts: {}; load {}) | {} | {} |",
            row.instances,
            row.delete_p50_ms,
            row.delete_p99_ms,
            row.delete_max_ms,
            row.ack_timeouts,
            row.loadavg,
            target.0,
            target.1,
        ));
    }
    let accepting: usize = rows.iter().map(|r| r.still_accepting).sum();
    let probes: usize = rows.iter().map(|r| r.revokes * r.instances).sum();
    lines.push(format!(
        "| instances still accepting a key right after its DELETE answered (all sizes) | **{accepting}** of {probes} verifies | 0 | {} |",
        if accepting == 0 { "met" } else { "**NOT met**" }
    ));
    lines.join("\n")
}

/// Every size in turn on one fresh database; target/bench/fleet.json and the table. Fails
/// when any instance still accepted a key after its DELETE answered (after writing both).
pub fn measure(knobs: &FleetKnobs, binary: &Path, bench_dir: &Path) -> Result<String> {
    let raw = bench_dir.join("fleet");
    let _ = std::fs::remove_dir_all(&raw);
    std::fs::create_dir_all(&raw)?;
    let db = ScratchDatabase::create("fleet")?;
    let mut rows = Vec::new();
    for &n in &knobs.sizes {
        // Each size's gateways stop (their guards drop) before the next size starts.
        rows.push(measure_size(n, knobs, binary, &db, &raw)?);
    }
    let json_path = bench_dir.join("fleet.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&fleet_json(&rows))?,
    )?;
    let table = table(knobs, &rows);
    std::fs::File::create(raw.join("table.md"))?.write_all(table.as_bytes())?;
    eprintln!("==> wrote {}", json_path.display());
    let accepting: usize = rows.iter().map(|r| r.still_accepting).sum();
    if accepting > 0 {
        bail!(
            "{accepting} verifies were accepted right after their key's DELETE answered\n{table}"
        );
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_a_single_instance_is_refused() {
        assert_eq!(parse_sizes("2,10,20").unwrap(), vec![2, 10, 20]);
        assert_eq!(parse_sizes(" 3 , 4").unwrap(), vec![3, 4]);
        assert!(parse_sizes("1,2").is_err());
        assert!(parse_sizes("2,x").is_err());
        assert!(parse_sizes("").is_err());
    }

    #[test]
    fn twenty_instances_with_a_pool_of_two_fit_under_the_default_max_connections() {
        assert_eq!(connections_needed(20, 2), 60);
        assert!(connections_needed(20, 16) > 100);
    }

    #[test]
    fn a_row_takes_nearest_rank_percentiles_and_survives_json() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let row = FleetRow::from_samples(10, &samples, 0, 1.0, "1.0 1.0 1.0 / 2.0 2.0 2.0".into());
        assert_eq!(
            (
                row.revokes,
                row.delete_p50_ms,
                row.delete_p99_ms,
                row.delete_max_ms
            ),
            (100, 50.0, 99.0, 100.0)
        );
        let text = fleet_json(std::slice::from_ref(&row)).to_string();
        assert_eq!(parse_fleet_json(&text).unwrap(), vec![row]);
    }

    #[test]
    fn the_brief_shape_of_fleet_json_is_read_without_the_extra_fields() {
        let rows = parse_fleet_json(
            r#"{"fleet":[{"instances":2,"revokes":50,"delete_p50_ms":1.5,"delete_p99_ms":9.0,"delete_max_ms":12.25,"still_accepting":0}]}"#,
        )
        .unwrap();
        assert_eq!(rows[0].instances, 2);
        assert_eq!(rows[0].delete_max_ms, 12.25);
        assert_eq!(rows[0].ack_timeouts, 0.0);
        assert!(parse_fleet_json(r#"{"paths":[]}"#).is_err());
        assert!(parse_fleet_json(r#"{"fleet":[{"instances":2}]}"#).is_err());
    }

    #[test]
    fn the_table_judges_twenty_instances_and_the_accepting_total() {
        let knobs = FleetKnobs {
            sizes: vec![2, 20],
            revokes: 10,
            pool: 2,
            server_rust_log: "warn".into(),
        };
        let rows = [
            FleetRow::from_samples(2, &[1.0, 2.0], 0, 0.0, String::new()),
            FleetRow::from_samples(20, &[5.0, 30.0], 1, 0.0, String::new()),
        ];
        let table = table(&knobs, &rows);
        assert!(table.contains("| DELETE latency, 2 instances on one database (acks included) | p50 1.00 ms, **p99 2.00 ms**"), "{table}");
        assert!(table.contains("**p99 30.00 ms**, max 30.00 ms (ack timeouts: 0; load ) | p99 ≤ 10 ms | **NOT met** |"), "{table}");
        assert!(
            table.contains("| **1** of 44 verifies | 0 | **NOT met** |"),
            "{table}"
        );
    }
}

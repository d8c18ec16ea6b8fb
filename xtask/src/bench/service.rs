//! The service measurements of `make bench`: two release gateways, A and B, on a fresh
//! database, then (in this order) database transactions around exactly 10,000 warm
//! verifies, throughput and latency at saturation (wrk), each endpoint side by side with a
//! bare actix-web handler answering the same bytes (issue 13), latency at a fixed rate (k6).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::parse::{self, Wrk, K6};
use super::peers::{self, Bare, PeerPath};
use super::{Knobs, Tools};
use crate::gateway::{Gateway, Psql, ScratchDatabase};
use crate::{http, process};

/// pg_stat_database is fed by each backend at most once a second, and an idle backend's
/// leftovers only after 10 s (PostgreSQL 15+), so counts are read after this long a pause.
/// (A backend that touches no table, like the listeners' heartbeat, reports its transactions
/// even later, in bursts; the statement log, when readable, gives the exact breakdown.)
const STATS_SETTLE: Duration = Duration::from_secs(12);

pub struct Transactions {
    pub xacts: i64,
    pub idle_xacts: i64,
    pub db_lookups: f64,
    pub last_used_flushes: f64,
    pub pool_size_start: f64,
    pub pool_size_end: f64,
    pub autovacuum: String,
    pub run_s: f64,
    /// The Postgres log read, and the statements it shows in the window, when readable.
    pub statements: Option<(PathBuf, BTreeMap<String, u64>)>,
}

pub struct Service {
    pub transactions: Transactions,
    pub throughput: Throughput,
    pub fixed_healthz: K6,
    pub fixed_verify: K6,
}

/// utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15, counted
/// after the command name, which may itself hold spaces).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no ) in /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The server's log file, when this user can read it and it holds the database's statements.
fn find_pg_log(admin: &Psql, database: &str) -> Option<(PathBuf, String)> {
    let mut candidates = Vec::new();
    if let Ok(current) = admin.query("select coalesce(pg_current_logfile(), '')") {
        if !current.is_empty() {
            let path = PathBuf::from(&current);
            if path.is_absolute() {
                candidates.push(path);
            } else if let Ok(data) = admin.query("show data_directory") {
                candidates.push(Path::new(&data).join(path));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/var/log/postgresql") {
        candidates.extend(
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log")),
        );
    }
    candidates.push(crate::repo().join(".data/pg.log"));
    let marker = format!("@{database} ");
    candidates.into_iter().find_map(|path| {
        let text = std::fs::read_to_string(&path).ok()?;
        text.contains(&marker).then_some((path, text))
    })
}

fn transactions(
    tools: &Tools,
    db: &ScratchDatabase,
    a: &Gateway,
    key: &str,
    raw: &Path,
) -> Result<Transactions> {
    let admin = db.admin();
    let xacts = || -> Result<i64> {
        Ok(admin
            .query(&format!(
                "select xact_commit + xact_rollback from pg_stat_database where datname = '{}'",
                db.name
            ))?
            .parse()?)
    };
    let log_now = || {
        admin.query("select to_char(now() at time zone current_setting('log_timezone'), 'YYYY-MM-DD HH24:MI:SS.MS')")
    };
    let verify = format!("{}/api/v1/auth/verify", a.url);
    eprintln!(
        "\n==> database transactions around exactly 10,000 warm verifies (waits {}s three times for pg_stat to settle)",
        STATS_SETTLE.as_secs()
    );
    // Measured first, right after a VACUUM ANALYZE of the fresh database: migrations churn
    // the catalogs and every lastUsedAt flush updates a row, and autovacuum (whose
    // transactions count in pg_stat_database too) would otherwise likely run in the window.
    // Any autovacuum or autoanalyze that still lands in it is listed, not hidden.
    let bench_db = Psql::new(&db.url)?;
    bench_db.query("vacuum analyze")?;
    // Warm: the key's cache entry (already there since its creation) and k6's connections.
    tools.k6(
        &verify,
        Some(key),
        &[("ITERATIONS", "1000".into())],
        &raw.join("k6-warm-verify.json"),
    )?;
    process::sleep(STATS_SETTLE)?;
    let idle_start = xacts()?;
    process::sleep(STATS_SETTLE)?;
    let start = xacts()?;
    let lookups = "logstitch_auth_db_lookups_total";
    let flushes = "logstitch_last_used_flush_duration_seconds_count";
    let pool = "logstitch_db_pool_size";
    let (lookups_start, flushes_start, pool_start) =
        (a.metric(lookups)?, a.metric(flushes)?, a.metric(pool)?);
    let window_start = admin.query("select now()")?;
    let log_start = log_now()?;
    let started = Instant::now();
    let (exact, _) = tools.k6(
        &verify,
        Some(key),
        &[("ITERATIONS", "10000".into())],
        &raw.join("k6-exact-verify.json"),
    )?;
    let run_s = started.elapsed().as_secs_f64();
    process::sleep(STATS_SETTLE)?;
    let end = xacts()?;
    let window_end = admin.query("select now()")?;
    let log_end = log_now()?;
    let statements = find_pg_log(admin, &db.name).map(|(path, text)| {
        let kinds = parse::log_statements(&text, &db.name, &log_start, &log_end);
        (path, kinds)
    });
    // After `end`, so this connection's own transactions are outside the window.
    let autovacuum = bench_db.query(&format!(
        "select coalesce(string_agg(what, ', ' order by what), '') from (
            select 'vacuum ' || relname as what from pg_stat_all_tables
             where last_autovacuum between '{window_start}' and '{window_end}'
            union all
            select 'analyze ' || relname from pg_stat_all_tables
             where last_autoanalyze between '{window_start}' and '{window_end}') as runs"
    ))?;
    eprintln!("{} requests, {} not 200", exact.requests, exact.check_fails);
    if exact.requests != 10_000 || exact.check_fails != 0 {
        bail!("the 10,000-verify run was not 10,000 answers of 200");
    }
    let measured = Transactions {
        xacts: end - start,
        idle_xacts: start - idle_start,
        db_lookups: a.metric(lookups)? - lookups_start,
        last_used_flushes: a.metric(flushes)? - flushes_start,
        pool_size_start: pool_start,
        pool_size_end: a.metric(pool)?,
        autovacuum,
        run_s,
        statements,
    };
    eprintln!(
        "transactions {} (idle control {}), auth lookups {}, flushes {}",
        measured.xacts, measured.idle_xacts, measured.db_lookups, measured.last_used_flushes
    );
    Ok(measured)
}

/// verify and `/healthz` at saturation, each against the bare actix-web peer answering the
/// same bytes, and the measures made from the same runs (verify ÷ healthz, CPU per request).
pub struct Throughput {
    pub healthz: Vec<Wrk>,
    pub verify: Vec<Wrk>,
    pub bare_healthz: Vec<Wrk>,
    pub bare_verify: Vec<Wrk>,
    pub loadavg_before: String,
    pub loadavg_after: String,
}

impl Throughput {
    /// The issue 13 rows: verify ÷ bare, `/healthz` ÷ bare.
    pub fn peers(&self) -> [PeerPath; 2] {
        [
            PeerPath {
                path: "verify",
                ours: "gateway verify",
                peer: "bare actix-web",
                ours_runs: self.verify.clone(),
                peer_runs: self.bare_verify.clone(),
                target: 0.9,
            },
            PeerPath {
                path: "healthz",
                ours: "gateway /healthz",
                peer: "bare actix-web",
                ours_runs: self.healthz.clone(),
                peer_runs: self.bare_healthz.clone(),
                target: 0.95,
            },
        ]
    }
}

const VERIFY: &str = "/api/v1/auth/verify";
/// The bench key's scopes: restricted (a listed set, its own header value), as a customer's
/// least-privilege key is, rather than the `*` of an unrestricted one.
const RESTRICTED: &[&str] = &["keys.read", "keys.write"];
const HEALTHZ: &str = "/healthz";

/// One server under wrk, its CPU time (utime + stime) read around the run: CPU per request
/// is steadier than req/s on a shared box, and utilisation shows whether the server (not
/// wrk) was the bottleneck.
pub(super) fn timed_wrk(
    tools: &Tools,
    knobs: &Knobs,
    pid: u32,
    key: Option<&str>,
    url: &str,
    out: &Path,
) -> Result<Wrk> {
    let before = cpu_ticks(pid)?;
    let mut run = tools.wrk(knobs.connections, knobs.duration, key, url, out)?;
    run.server_cpu_s = Some((cpu_ticks(pid)? - before) as f64 / clock_ticks_per_second());
    Ok(run)
}

/// Alternating rounds: healthz then verify, each on gateway A and on the bare peer (which
/// goes first alternates by round). Every request is the same (same Authorization header,
/// connections, duration).
fn throughput(
    knobs: &Knobs,
    tools: &Tools,
    a: &Gateway,
    key: &str,
    bare_binary: &Path,
    raw: &Path,
) -> Result<Throughput> {
    let answers = raw.join("peer-bare-answers.json");
    peers::record_answers(&a.url, key, &[HEALTHZ, VERIFY], &answers)?;
    let bare = Bare::start(bare_binary, &answers, HEALTHZ, &raw.join("peer-bare.log"))?;
    let (rounds, connections, seconds) = (knobs.rounds, knobs.connections, knobs.duration);
    let loadavg_before = loadavg();
    eprintln!(
        "\n==> throughput: wrk -t1 -c{connections} -d{seconds}s, healthz and verify alternating, each on the gateway and on the bare actix-web peer, {rounds} rounds (load: {loadavg_before})"
    );
    for (url, name) in [(&a.url, "warmup"), (&bare.url, "bare-warmup")] {
        let out = raw.join(format!("wrk-{name}.txt"));
        tools.wrk(connections, 2, Some(key), &format!("{url}{VERIFY}"), &out)?;
    }
    let mut t = Throughput {
        healthz: Vec::new(),
        verify: Vec::new(),
        bare_healthz: Vec::new(),
        bare_verify: Vec::new(),
        loadavg_before,
        loadavg_after: String::new(),
    };
    for round in 1..=rounds {
        for (name, path, ours, peer) in [
            ("healthz", HEALTHZ, &mut t.healthz, &mut t.bare_healthz),
            ("verify", VERIFY, &mut t.verify, &mut t.bare_verify),
        ] {
            let ours_out = raw.join(format!("wrk-{name}-{round}.txt"));
            let peer_out = raw.join(format!("wrk-bare-{name}-{round}.txt"));
            let run_ours = || {
                timed_wrk(
                    tools,
                    knobs,
                    a.pid(),
                    Some(key),
                    &format!("{}{path}", a.url),
                    &ours_out,
                )
            };
            let run_peer = || {
                timed_wrk(
                    tools,
                    knobs,
                    bare.pid(),
                    Some(key),
                    &format!("{}{path}", bare.url),
                    &peer_out,
                )
            };
            if peers::ours_first(round) {
                ours.push(run_ours()?);
                peer.push(run_peer()?);
            } else {
                peer.push(run_peer()?);
                ours.push(run_ours()?);
            }
        }
        let last = |runs: &[Wrk]| runs[runs.len() - 1].rps;
        eprintln!(
            "round {round}: healthz {:.0} req/s (bare {:.0}), verify {:.0} req/s (bare {:.0})",
            last(&t.healthz),
            last(&t.bare_healthz),
            last(&t.verify),
            last(&t.bare_verify),
        );
    }
    t.loadavg_after = loadavg();
    Ok(t)
}

/// `BENCH_ONLY=peers`: gateway A alone on a fresh database, the throughput rounds only.
pub fn throughput_only(
    knobs: &Knobs,
    tools: &Tools,
    binary: &Path,
    bare_binary: &Path,
    raw: &Path,
) -> Result<Throughput> {
    let db = ScratchDatabase::create("benchpeers")?;
    let env = [
        ("LOGSTITCH__SERVER__WORKERS", "1".to_owned()),
        ("RUST_LOG", knobs.server_rust_log.clone()),
    ];
    let a = Gateway::start(binary, &db.url, &env, &raw.join("server-A.log"))?;
    let org = a.create_org("Bench")?;
    let (key, _) = a.create_restricted_key(&org, "bench throughput key", RESTRICTED)?;
    throughput(knobs, tools, &a, &key, bare_binary, raw)
}

pub fn measure(
    knobs: &Knobs,
    tools: &Tools,
    binary: &Path,
    bare_binary: &Path,
    raw: &Path,
) -> Result<Service> {
    let db = ScratchDatabase::create("bench")?;
    // Every statement on the bench database goes to the Postgres log (this database only; it
    // is dropped at the end), so the transactions counted can be attributed one by one when
    // that log is readable here.
    db.admin().query(&format!(
        "alter database \"{}\" set log_statement = 'all'",
        db.name
    ))?;
    // One worker each; RUST_LOG=warn keeps the per-request info line out of the measurement.
    let env = [
        ("LOGSTITCH__SERVER__WORKERS", "1".to_owned()),
        ("RUST_LOG", knobs.server_rust_log.clone()),
    ];
    eprintln!("\n==> starting two gateways (A and B) on {}", db.name);
    let a = Gateway::start(binary, &db.url, &env, &raw.join("server-A.log"))?;
    let _b = Gateway::start(binary, &db.url, &env, &raw.join("server-B.log"))?;
    let org = a.create_org("Bench")?;
    let (key, _) = a.create_restricted_key(&org, "bench throughput key", RESTRICTED)?;
    let verify = format!("{}{VERIFY}", a.url);
    let healthz = format!("{}{HEALTHZ}", a.url);
    http::get(&verify, Some(&key))?.expect(200, "verify with a fresh key")?;

    let transactions = transactions(tools, &db, &a, &key, raw)?;
    let throughput = throughput(knobs, tools, &a, &key, bare_binary, raw)?;

    let (rate, fixed) = (knobs.rate, knobs.fixed_duration);
    eprintln!("\n==> latency at a fixed {rate} req/s for {fixed}s (k6 constant-arrival-rate), healthz then verify");
    let vars = [("RATE", rate.to_string()), ("DURATION", fixed.to_string())];
    let (fixed_healthz, _) = tools.k6(
        &healthz,
        Some(&key),
        &vars,
        &raw.join("k6-fixed-healthz.json"),
    )?;
    let (fixed_verify, _) = tools.k6(
        &verify,
        Some(&key),
        &vars,
        &raw.join("k6-fixed-verify.json"),
    )?;
    Ok(Service {
        transactions,
        throughput,
        fixed_healthz,
        fixed_verify,
    })
}

//! Does the in-process auth path take the same time whatever the state of the presented key?
//! (issue 6, §4: unknown, revoked and valid keys should be indistinguishable by timing.)
//!
//! Four cases, each the middleware's work once it has the header's token — `check_format`,
//! `KeyHash::of`, `AuthCache::resolve`, and the revoked check:
//!
//! - `unknown_cached`: a well-formed key (good checksum) that no organization has, remembered
//!   by the cache as unknown (the negative entry of `auth.negative_ttl_secs`);
//! - `revoked`: a key whose cached identity is revoked;
//! - `valid`: a key whose cached identity is valid;
//! - `malformed`: a key of the right length whose checksum is wrong (refused before any hash
//!   or lookup: it is *meant* to be faster, and reveals nothing an attacker can't compute).
//!
//! The cache is the real `AuthCache` over a fake `KeyLookup` (no Postgres), as in
//! `benches/auth_path.rs`. Two measurements:
//!
//! 1. criterion, one benchmark per case (`auth_timing/<case>`), for the usual statistics;
//! 2. an interleaved comparison: many rounds, each timing a batch of every case in rotating
//!    order, so drift on a shared machine (other builds, frequency changes) hits every case
//!    alike; the median batch mean per case is reported.
//!
//! Both print the per-case means and the largest difference between the unknown, revoked and
//! valid cases, as a percentage of the fastest of them.
//!
//! `cargo bench --bench auth_timing` measures; `cargo test --all-targets` runs each case once
//! (criterion's test mode) plus a tiny interleaved run that only checks the outcomes.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;

use logstitch_gateway::auth::{AuthCache, CacheSettings, KeyLookup, LookupFuture};
use logstitch_gateway::domain::{
    ApiKey, Identity, KeyHash, KeyId, KeyState, KeyType, OrgId, ProjectId, Scopes,
};
use logstitch_gateway::metrics::Metrics;

/// Knows exactly the keys it was given; every other hash is unknown.
struct FakeLookup(HashMap<KeyHash, KeyState>);

impl KeyLookup for FakeLookup {
    fn find_key_state<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a> {
        let found = self.0.get(hash).cloned().unwrap_or(KeyState::Unknown);
        Box::pin(async move { Ok(found) })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Valid,
    Revoked,
    Unknown,
    Malformed,
}

const CASES: [(&str, Outcome); 4] = [
    ("unknown_cached", Outcome::Unknown),
    ("revoked", Outcome::Revoked),
    ("valid", Outcome::Valid),
    ("malformed", Outcome::Malformed),
];

/// The indistinguishability claim covers these three (the first three of `CASES`).
const COMPARED: usize = 3;

/// The middleware's `identify` once the token is out of the header.
async fn authenticate(cache: &AuthCache, presented: &str) -> Outcome {
    if ApiKey::check_format(presented).is_err() {
        return Outcome::Malformed;
    }
    match cache.resolve(KeyHash::of(presented)).await {
        Ok(KeyState::Revoked(_)) => Outcome::Revoked,
        Ok(KeyState::Active(_)) => Outcome::Valid,
        Ok(KeyState::Unknown) => Outcome::Unknown,
        Err(error) => panic!("the fake lookup never fails: {error}"),
    }
}

fn identity() -> Identity {
    Identity {
        key_id: KeyId::new(),
        organization_id: OrgId::new(),
        project_id: Some(ProjectId::new()),
        key_type: KeyType::Project,
        expires_at: None,
        scopes: Scopes::All,
        enabled: true,
        rate_limit: None,
    }
}

/// A key of the right length and alphabet whose last checksum character is wrong.
fn with_bad_checksum(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ASCII")
}

struct Setup {
    runtime: tokio::runtime::Runtime,
    cache: AuthCache,
    /// The presented key of each case, in `CASES` order.
    keys: Vec<String>,
}

fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let valid = ApiKey::generate(KeyType::Project).expose().to_owned();
    let revoked = ApiKey::generate(KeyType::Project).expose().to_owned();
    let unknown = ApiKey::generate(KeyType::Project).expose().to_owned();
    let malformed = with_bad_checksum(ApiKey::generate(KeyType::Project).expose());
    let known = HashMap::from([
        (KeyHash::of(&valid), KeyState::Active(identity())),
        (KeyHash::of(&revoked), KeyState::Revoked(KeyId::nil())),
    ]);
    let cache = AuthCache::new(
        CacheSettings {
            max_entries: 1_000_000,
            ttl: Duration::from_secs(300),
            // Long enough that the negative entry outlives the whole benchmark: the case is
            // "unknown and remembered as unknown", not a Postgres round trip.
            unknown_ttl: Duration::from_secs(3600),
            stale_grace: Duration::ZERO,
        },
        Arc::new(FakeLookup(known)),
        Arc::new(Metrics::new()),
    );
    // As the invalidation listener does once LISTEN is active; untrusted, nothing is cached.
    cache.flush_and_trust();
    let keys = vec![unknown, revoked, valid, malformed];
    runtime.block_on(async {
        for ((name, expected), key) in CASES.iter().zip(&keys) {
            // The first resolve loads the entry; the second must be a hit with the same answer.
            for _ in 0..2 {
                let got = authenticate(&cache, key).await;
                assert_eq!(got, *expected, "case {name}");
            }
        }
    });
    Setup {
        runtime,
        cache,
        keys,
    }
}

fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn criterion_cases(criterion: &mut Criterion, setup: &Setup) {
    let cache = &setup.cache;
    let mut group = criterion.benchmark_group("auth_timing");
    for ((name, expected), key) in CASES.iter().zip(&setup.keys) {
        let (key, expected) = (key.as_str(), *expected);
        group.bench_function(*name, |b| {
            b.to_async(&setup.runtime).iter(|| async move {
                let outcome = authenticate(cache, black_box(key)).await;
                debug_assert_eq!(outcome, expected);
                outcome
            })
        });
    }
    group.finish();
}

/// criterion's `statistic` estimate ("mean", "median", …) in ns of one case, from its last
/// run's `estimates.json`.
fn criterion_estimate_ns(case: &str, statistic: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target
        .join("criterion")
        .join("auth_timing")
        .join(case)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let estimates: serde_json::Value = serde_json::from_str(&text).ok()?;
    estimates[statistic]["point_estimate"].as_f64()
}

/// Rounds of one batch per case, in rotating order; the median batch mean per case (ns).
fn interleaved_means_ns(setup: &Setup, rounds: usize, batch: usize) -> Vec<f64> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); CASES.len()];
    setup.runtime.block_on(async {
        for round in 0..rounds {
            for offset in 0..CASES.len() {
                let case = (round + offset) % CASES.len();
                let (key, expected) = (setup.keys[case].as_str(), CASES[case].1);
                let started = Instant::now();
                for _ in 0..batch {
                    let outcome = authenticate(&setup.cache, black_box(key)).await;
                    if outcome != expected {
                        panic!("case {} answered {outcome:?}", CASES[case].0);
                    }
                }
                samples[case].push(started.elapsed().as_nanos() as f64 / batch as f64);
            }
        }
    });
    samples
        .into_iter()
        .map(|mut case| {
            case.sort_by(f64::total_cmp);
            case[case.len() / 2]
        })
        .collect()
}

/// Largest difference among the compared cases, as a percentage of the fastest of them.
fn max_difference_percent(means: &[f64]) -> f64 {
    let compared = &means[..COMPARED];
    let min = compared.iter().copied().fold(f64::INFINITY, f64::min);
    let max = compared.iter().copied().fold(0.0, f64::max);
    (max - min) / min * 100.0
}

fn report(title: &str, means: &[f64]) {
    println!("\n{title}");
    for ((name, _), mean) in CASES.iter().zip(means) {
        println!("  {name:<16} {mean:>8.1} ns");
    }
    println!(
        "  max difference between unknown_cached / revoked / valid: {:.1}%",
        max_difference_percent(means)
    );
}

fn main() {
    let setup = setup();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();
    criterion_cases(&mut criterion, &setup);
    criterion.final_summary();

    if !measuring() {
        // Test mode: just exercise the interleaved loop once.
        interleaved_means_ns(&setup, 2, 10);
        return;
    }
    for statistic in ["mean", "median"] {
        let from_criterion: Option<Vec<f64>> = CASES
            .iter()
            .map(|(name, _)| criterion_estimate_ns(name, statistic))
            .collect();
        match from_criterion {
            Some(values) => report(
                &format!("Auth timing by key state (criterion, {statistic} per case):"),
                &values,
            ),
            None => println!("\n(criterion estimates not found; see the interleaved run below)"),
        }
    }
    let interleaved = interleaved_means_ns(&setup, 400, 2_000);
    report(
        "Auth timing by key state (interleaved, median of 400 batches of 2,000):",
        &interleaved,
    );
}

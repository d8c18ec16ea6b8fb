//! Resident memory of the auth cache holding 1,000,000 keys (issue 3, §7: target <= 400 MB).
//!
//! Builds an `AuthCache` with the service's default settings over a fake lookup, resolves
//! 1,000,000 distinct key hashes through the real miss path (`resolve` → coalesced load →
//! insert), resolves them all again to check they are all still cached (hits, no new
//! lookups), and reports VmRSS from /proc/self/status before and after.
//!
//! `cargo bench --bench cache_memory` does the 1M run; without `--bench` (as under
//! `cargo test --all-targets`) it does a tiny run so the test suite stays fast.
//! Prints one machine-readable line, `RESULT entries=… rss_before_kib=… …`, for `cargo xtask bench` (`make bench`).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use logstitch_gateway::auth::{AuthCache, KeyLookup, LookupFuture};
use logstitch_gateway::domain::{Identity, KeyHash, KeyState};
use logstitch_gateway::metrics::Metrics;

// The same allocator as the binary (src/main.rs), so the figure is the service's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Answers every hash with a fresh project-key identity, as Postgres would for a real key.
struct FakeLookup {
    calls: AtomicU64,
}

impl KeyLookup for FakeLookup {
    fn find_key_state<'a>(&'a self, _: &'a KeyHash) -> LookupFuture<'a> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(KeyState::Active(common::project_identity())) })
    }
}

/// A value from /proc/self/status, in kB (Linux only; 0 elsewhere).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// A distinct, deterministic key hash per index (SHA-256, as for real keys).
fn hash(i: u64) -> KeyHash {
    KeyHash::of(&format!("pk_bench{i:032}"))
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let count: u64 = if full { 1_000_000 } else { 10_000 };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let lookup = Arc::new(FakeLookup {
        calls: AtomicU64::new(0),
    });
    let cache = AuthCache::new(
        common::service_cache_settings(),
        lookup.clone(),
        Arc::new(Metrics::new()),
    );
    cache.flush_and_trust();

    let rss_before = status_kib("VmRSS:");
    let started = Instant::now();
    runtime.block_on(async {
        for i in 0..count {
            let state = cache.resolve(hash(i)).await.expect("fake lookup");
            assert!(matches!(state, KeyState::Active(_)));
        }
    });
    let load_time = started.elapsed();
    let rss_after = status_kib("VmRSS:");
    let loads = lookup.calls.load(Ordering::Relaxed);

    // Every key again: all must be hits (no eviction below max_entries, no lookup).
    let started = Instant::now();
    runtime.block_on(async {
        for i in 0..count {
            cache.resolve(hash(i)).await.expect("fake lookup");
        }
    });
    let hit_time = started.elapsed();
    let relookups = lookup.calls.load(Ordering::Relaxed) - loads;
    let rss_final = status_kib("VmRSS:");
    let hwm = status_kib("VmHWM:");

    let grown_kib = rss_after.saturating_sub(rss_before);
    let per_entry = grown_kib as f64 * 1024.0 / count as f64;
    println!(
        "cache_memory: {count} distinct keys resolved in {:.2} s ({} lookups), \
         re-resolved in {:.2} s ({relookups} extra lookups); entry_count={}",
        load_time.as_secs_f64(),
        loads,
        hit_time.as_secs_f64(),
        cache.entry_count(),
    );
    println!(
        "cache_memory: VmRSS before {:.1} MiB, after load {:.1} MiB, after re-resolve {:.1} MiB \
         (VmHWM {:.1} MiB); grown {:.1} MiB = {:.0} bytes per cached key",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_final as f64 / 1024.0,
        hwm as f64 / 1024.0,
        grown_kib as f64 / 1024.0,
        per_entry,
    );
    println!(
        "cache_memory: payload per entry: KeyHash {} B + Identity {} B",
        std::mem::size_of::<KeyHash>(),
        std::mem::size_of::<Identity>(),
    );
    println!(
        "RESULT entries={count} rss_before_kib={rss_before} rss_after_kib={rss_after} \
         rss_final_kib={rss_final} hwm_kib={hwm} bytes_per_entry={per_entry:.0} \
         extra_lookups={relookups}"
    );
    assert_eq!(loads, count, "every distinct key is looked up once");
    if relookups != 0 {
        eprintln!("cache_memory: WARNING {relookups} keys were no longer cached on re-resolve");
    }
}

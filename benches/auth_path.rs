//! The in-process auth hot path, without HTTP: format check (length, tag, base62, CRC32
//! checksum), SHA-256 of the key, and an auth-cache hit — together and each on its own.
//!
//! `cargo bench --bench auth_path` measures; `cargo test --all-targets` runs every function
//! once (criterion's test mode), so keep the setup small unless `--bench` was passed.
//! Target (issue 3, §7): the whole path <= 1 µs.

mod common;

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use logstitch_gateway::auth::{AuthCache, KeyLookup, LookupFuture};
use logstitch_gateway::domain::{ApiKey, KeyHash, KeyState, KeyType};
use logstitch_gateway::metrics::Metrics;

/// Every hash is a valid project key; the benchmark only measures hits, so this is called
/// once per distinct key during setup.
struct FakeLookup;

impl KeyLookup for FakeLookup {
    fn find_key_state<'a>(&'a self, _: &'a KeyHash) -> LookupFuture<'a> {
        Box::pin(async { Ok(KeyState::Active(common::project_identity())) })
    }
}

fn cache() -> AuthCache {
    let cache = AuthCache::new(
        common::service_cache_settings(),
        Arc::new(FakeLookup),
        Arc::new(Metrics::new()),
    );
    // As the invalidation listener does once LISTEN is active; untrusted, nothing is cached.
    cache.flush_and_trust();
    cache
}

fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn auth_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cache = cache();
    let key = ApiKey::generate(KeyType::Project);
    let plaintext = key.expose().to_owned();
    let hash = KeyHash::of(&plaintext);
    runtime.block_on(async {
        // First resolve is the miss that loads the entry; from then on, hits.
        for _ in 0..2 {
            let state = cache.resolve(hash).await.unwrap();
            assert!(matches!(state, KeyState::Active(_)));
        }
    });

    // Futures below copy these references (`async move`), so closures can be called again.
    let (cache, plaintext) = (&cache, plaintext.as_str());

    let mut group = c.benchmark_group("auth_path");
    group.bench_function("check_format", |b| {
        b.iter(|| ApiKey::check_format(black_box(plaintext)).unwrap())
    });
    group.bench_function("sha256", |b| b.iter(|| KeyHash::of(black_box(plaintext))));
    group.bench_function("cache_hit", |b| {
        b.to_async(&runtime)
            .iter(|| async move { cache.resolve(black_box(hash)).await.unwrap() })
    });
    // What the middleware does per request once it has the header's token.
    group.bench_function("full", |b| {
        b.to_async(&runtime).iter(|| async move {
            let presented = black_box(plaintext);
            ApiKey::check_format(presented).unwrap();
            match cache.resolve(KeyHash::of(presented)).await.unwrap() {
                KeyState::Active(identity) => identity,
                other => panic!("a valid key resolved to {other:?}"),
            }
        })
    });

    // Hits among many cached keys, each request a different key. With 1,000 keys the cache
    // stays in the CPU caches; with 100,000 (only under `--bench`) it does not, as in a busy
    // multi-tenant deployment.
    let sizes: &[usize] = if measuring() {
        &[1_000, 100_000]
    } else {
        &[1_000]
    };
    for &many in sizes {
        let keys: Vec<String> = (0..many)
            .map(|_| ApiKey::generate(KeyType::Project).expose().to_owned())
            .collect();
        runtime.block_on(async {
            for key in &keys {
                cache.resolve(KeyHash::of(key)).await.unwrap();
            }
        });
        let keys = &keys;
        // 7919 is prime, so the walk visits every key before repeating.
        let next = Cell::new(0usize);
        group.bench_function(format!("full_{many}_keys_round_robin"), |b| {
            b.to_async(&runtime).iter(|| {
                next.set((next.get() + 7919) % keys.len());
                let presented = keys[next.get()].as_str();
                async move {
                    ApiKey::check_format(presented).unwrap();
                    cache.resolve(KeyHash::of(presented)).await.unwrap()
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short windows: `make bench` runs on a shared 2-core box and must stay within minutes.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = auth_path
}
criterion_main!(benches);

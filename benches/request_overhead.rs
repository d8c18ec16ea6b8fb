//! What every request pays besides HTTP and the key lookup (issue 13), each part alone: the
//! request id, the per-request metrics, the lastUsedAt record, the identity headers, the
//! failed-auth throttle check and the clock reads. Where this round replaced a part, the
//! replaced way is measured beside it in the same run (`*_before`), so the saving is a ratio
//! on one machine, not a comparison across runs.
//!
//! `cargo bench --bench request_overhead`; `cargo test --all-targets` runs each once.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{distributions::Alphanumeric, Rng};

use logstitch_gateway::auth::LastUsedRecorder;
use logstitch_gateway::configuration::Settings;
use logstitch_gateway::domain::UsageOutcome;
use logstitch_gateway::metrics::{Metrics, RouteMetrics};
use logstitch_gateway::rate_limit::FailedAuthThrottle;
use logstitch_gateway::request_id::RequestId;
use logstitch_gateway::usage::UsageRecorder;

/// The request id as it was made until issue 13: one rejection-sampled draw per character.
fn request_id_before() -> [u8; 24] {
    let mut bytes = *b"req_00000000000000000000";
    let mut rng = rand::thread_rng();
    for byte in bytes[4..].iter_mut() {
        *byte = rng.sample(Alphanumeric);
    }
    bytes
}

fn request_overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_overhead");

    group.bench_function("request_id_before", |b| b.iter(request_id_before));
    group.bench_function("request_id", |b| b.iter(RequestId::generate));

    let metrics = Metrics::new();
    let request = TestRequest::with_uri("/api/v1/auth/verify").to_http_request();
    let elapsed = Duration::from_micros(120);
    // Until issue 13: the matched pattern as a new String, two labelled lookups.
    group.bench_function("metrics_before", |b| {
        b.iter(|| {
            let route = request.match_pattern();
            let route = route.as_deref().unwrap_or("unmatched");
            metrics
                .http_requests
                .with_label_values(&[request.method().as_str(), route, StatusCode::OK.as_str()])
                .inc();
            metrics
                .http_request_duration
                .with_label_values(&[route])
                .observe(black_box(elapsed).as_secs_f64());
        })
    });
    let route = RouteMetrics::new();
    group.bench_function("metrics", |b| {
        b.iter(|| route.observe(&metrics, &request, StatusCode::OK, black_box(elapsed)))
    });

    let last_used = LastUsedRecorder::new(100_000);
    let identity = common::project_identity();
    group.bench_function("last_used_record", |b| {
        b.iter(|| last_used.record(black_box(identity.key_id)))
    });
    // The usage count every request presenting an existing key adds (a key already counted
    // this hour: one shard lock, one wall-clock read, no allocation).
    let usage = UsageRecorder::new();
    group.bench_function("usage_count", |b| {
        b.iter(|| usage.count(black_box(identity.key_id), UsageOutcome::Valid))
    });
    group.bench_function("identity_headers", |b| {
        b.iter(|| black_box(&identity).headers())
    });

    let settings = Settings::load(None).expect("default settings load");
    let throttle = FailedAuthThrottle::new(&settings.rate_limit);
    let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    group.bench_function("failed_auth_check", |b| {
        b.iter(|| throttle.check(black_box(ip)))
    });

    group.bench_function("clock_instant", |b| b.iter(Instant::now));
    group.bench_function("clock_utc", |b| b.iter(chrono::Utc::now));
    group.finish();
}

criterion_group! {
    name = benches;
    // Short windows: `make bench` runs on a shared 2-core box and must stay within minutes.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = request_overhead
}
criterion_main!(benches);

//! What building a metric family takes: the registry it joins, the latency buckets, and label
//! values declared as enums, every one registered at zero from the start.

use std::marker::PhantomData;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Seconds, from 100 µs: the auth hot path answers in well under a millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A metric label's values as an enum with an `ALL` list, so every value can be registered at
/// zero at start-up (a dashboard shows 0, never "no data", for a counter that hasn't fired).
/// For metrics' own files: it implements [`LabelValue`] through `super::family`.
macro_rules! label_values {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }
        }

        impl super::family::LabelValue for $name {
            const ALL: &'static [$name] = $name::ALL;

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }
    };
}

pub(super) use label_values;

/// The values of one label, as [`label_values!`] declares them.
pub trait LabelValue: Copy + 'static {
    const ALL: &'static [Self];

    fn as_str(self) -> &'static str;
}

/// A counter family with one label whose values are a [`LabelValue`] enum: each value's series
/// exists (at zero) from the start, and counting takes the enum, never a string.
pub(super) struct LabelledCounter<L> {
    family: IntCounterVec,
    label: PhantomData<L>,
}

impl<L: LabelValue> LabelledCounter<L> {
    /// The counter of one value, resolved once, for a hot path that skips the label lookup.
    pub(super) fn counter(&self, value: L) -> IntCounter {
        self.family.with_label_values(&[value.as_str()])
    }

    pub(super) fn inc(&self, value: L) {
        self.counter(value).inc();
    }
}

/// Builds families into one registry; a name registered twice is a bug, so it panics.
pub(super) struct Families<'a> {
    registry: &'a Registry,
}

impl Families<'_> {
    pub(super) fn new(registry: &Registry) -> Families<'_> {
        Families { registry }
    }

    pub(super) fn register<C: Collector + Clone + 'static>(&self, collector: C) -> C {
        self.registry
            .register(Box::new(collector.clone()))
            .expect("metric names are unique");
        collector
    }

    pub(super) fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    pub(super) fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    /// A counter family labelled `label`, with every value of `L` at zero.
    pub(super) fn labelled<L: LabelValue>(
        &self,
        name: &str,
        help: &str,
        label: &str,
    ) -> LabelledCounter<L> {
        let family = self.counter_vec(name, help, &[label]);
        for value in L::ALL {
            family.with_label_values(&[value.as_str()]);
        }
        LabelledCounter {
            family,
            label: PhantomData,
        }
    }

    pub(super) fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    /// A latency histogram, in seconds ([`LATENCY_BUCKETS`]).
    pub(super) fn histogram(&self, name: &str, help: &str) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
                .expect("valid metric"),
        )
    }

    /// A latency histogram family, in seconds ([`LATENCY_BUCKETS`]).
    pub(super) fn histogram_vec(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        self.register(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid metric"),
        )
    }
}

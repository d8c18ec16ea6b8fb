//! Webhooks (src/webhooks): attempts by outcome and how long they took, and the outbox queue
//! (refreshed by each instance's dispatcher; every instance reports the fleet's queue).

use prometheus::{Histogram, IntGauge};

use super::family::{label_values, Families, LabelledCounter};

label_values! {
    /// `logstitch_webhook_deliveries_total{outcome}`, each attempt counted once: delivered;
    /// failed_attempt (status, timeout, connection; will be retried); failed (no retry left);
    /// refused (a forbidden target; will be retried).
    WebhookOutcome {
        Delivered => "delivered",
        FailedAttempt => "failed_attempt",
        Failed => "failed",
        Refused => "refused",
    }
}

pub(super) fn deliveries(families: &Families) -> LabelledCounter<WebhookOutcome> {
    families.labelled(
        "logstitch_webhook_deliveries_total",
        "Webhook delivery attempts by outcome: delivered, failed_attempt (will retry), failed (gave up), refused (forbidden target, will retry)",
        "outcome",
    )
}

pub(super) fn attempt_duration(families: &Families) -> Histogram {
    families.histogram(
        "logstitch_webhook_attempt_duration_seconds",
        "Time from the start of a webhook attempt to its outcome (bounded by webhooks.timeout_ms)",
    )
}

pub(super) fn queue_depth(families: &Families) -> IntGauge {
    families.gauge(
        "logstitch_webhook_queue_depth",
        "Pending webhook deliveries in the fleet's outbox, due or waiting for a retry",
    )
}

pub(super) fn oldest_pending_age(families: &Families) -> IntGauge {
    families.gauge(
        "logstitch_webhook_oldest_pending_age_seconds",
        "Seconds the oldest due webhook delivery has waited since it became due (queued, or its retry time came): how far behind the dispatchers are",
    )
}

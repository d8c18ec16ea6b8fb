//! How revocations reach every instance (src/invalidation): the LISTEN connection that hears
//! them, and the acknowledgements a revoking instance waits for.

use prometheus::{IntCounter, IntGauge};

use super::family::Families;

pub(super) fn listener_up(families: &Families) -> IntGauge {
    families.gauge(
        "logstitch_invalidation_listener_up",
        "1 while the LISTEN connection for revocations is active",
    )
}

pub(super) fn listener_reconnects(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_invalidation_listener_reconnects_total",
        "Times the invalidation listener lost its connection and reconnected",
    )
}

pub(super) fn ack_timeouts(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_revocation_ack_timeouts_total",
        "Revocations answered before every listening instance acknowledged (ack timeout)",
    )
}

pub(super) fn acks_received(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_revocation_acks_received_total",
        "Acknowledgements of revocations heard by this instance: those of its own revocations, plus, while instances of a version before addressed acks run, every ack on the shared channel",
    )
}

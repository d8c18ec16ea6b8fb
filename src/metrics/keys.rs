//! The key lifecycle, as the organization actors (src/actors) run it: keys created, revoked,
//! rolled and updated, and the actors themselves.

use prometheus::{IntCounter, IntGauge};

use super::family::Families;

pub(super) fn created(families: &Families) -> IntCounter {
    families.counter("logstitch_keys_created_total", "Project keys created")
}

pub(super) fn revoked(families: &Families) -> IntCounter {
    families.counter("logstitch_keys_revoked_total", "Keys revoked")
}

pub(super) fn rolled(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_keys_rolled_total",
        "Keys rolled (each also counts a created key)",
    )
}

pub(super) fn updated(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_keys_updated_total",
        "Keys updated (PATCH that changed something)",
    )
}

pub(super) fn org_actors(families: &Families) -> IntGauge {
    families.gauge(
        "logstitch_org_actors",
        "Organization actors currently running",
    )
}

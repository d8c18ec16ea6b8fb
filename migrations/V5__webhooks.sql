-- Webhooks (issue 21): customers' endpoints, the transactional outbox of deliveries written in
-- the transaction of each audited change, and the expiry warnings (`key.expiring`).

-- The audit vocabulary grows: endpoint changes, expiry warnings, and the service itself as
-- an actor (an expiry warning is nobody's request).
ALTER TABLE audit_events DROP CONSTRAINT audit_events_action_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_action_check CHECK (action IN (
    'organization.created', 'project.created',
    'key.created', 'key.revoked', 'key.rolled', 'key.updated', 'key.expiring',
    'webhook_endpoint.created', 'webhook_endpoint.deleted'));
ALTER TABLE audit_events DROP CONSTRAINT audit_events_actor_type_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_type_check
    CHECK (actor_type IN ('master', 'project', 'admin', 'cli', 'system'));
ALTER TABLE audit_events DROP CONSTRAINT audit_events_target_type_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_target_type_check
    CHECK (target_type IN ('organization', 'project', 'key', 'webhook_endpoint'));

-- A key's expiry warning is written once: whichever instance sets this first writes it.
ALTER TABLE api_keys ADD COLUMN expiry_warned_at timestamptz;
CREATE INDEX api_keys_expiry_unwarned ON api_keys (expires_at)
    WHERE expiry_warned_at IS NULL AND revoked_at IS NULL AND expires_at IS NOT NULL;

-- An organization's endpoints. `secret` holds the raw signing key (what `whsec_…` decodes
-- to): the service needs it to sign, so whoever can read this table can sign as us.
-- `busy_until` is the endpoint's lease: while it lies ahead, one instance is attempting a
-- delivery to it and no other instance starts one (one attempt per endpoint at a time).
CREATE TABLE webhook_endpoints (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    url              text NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    events           text[] NOT NULL CHECK (cardinality(events) >= 1),
    secret           bytea NOT NULL CHECK (octet_length(secret) >= 24),
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    busy_until       timestamptz
);

CREATE INDEX webhook_endpoints_by_organization
    ON webhook_endpoints (organization_id, created_at DESC, id DESC);

-- A uuid v7 (RFC 9562: 48 bits of Unix milliseconds, version 7, random rest), for delivery
-- ids made inside SQL statements: gen_random_uuid()'s v4 with the time laid over its first
-- 48 bits and the version nibble turned from 4 into 7.
CREATE FUNCTION logstitch_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- The outbox: one row per event and subscribed endpoint, inserted in the transaction of the
-- change (so a change that rolls back leaves none). `commit_order` is taken inside that
-- transaction, which holds the organization's advisory lock: within an organization (and so
-- per endpoint) it is the order in which the changes committed. `event_id` names the audit
-- event whose view is the body's `data` (null for `webhook.test`); no foreign key, so the
-- operator's pruning procedure for audit_events is not blocked by old deliveries.
-- A pending delivery has the time of its next attempt; delivered and failed ones have none.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    organization_id  uuid NOT NULL,
    commit_order     bigserial NOT NULL,
    event_type       text NOT NULL,
    event_id         uuid,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    status           text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz DEFAULT clock_timestamp(),
    last_attempt_at  timestamptz,
    last_status      integer,
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);

-- The dispatcher's question: which pending deliveries are due, per endpoint in commit order.
CREATE INDEX webhook_deliveries_pending
    ON webhook_deliveries (endpoint_id, commit_order) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- The deliveries list: an endpoint's deliveries newest first, keyset pages.
CREATE INDEX webhook_deliveries_page
    ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);

-- Restricted keys: scopes, an enabled flag and a per-key rate limit on every key, and the
-- `key.updated` audit event with what it changed.

-- Scopes are stored sorted (the order shown everywhere); '{*}' is every key's behaviour
-- before scopes existed, and always a master key's.
ALTER TABLE api_keys
    ADD COLUMN scopes                   text[] NOT NULL DEFAULT '{*}',
    ADD COLUMN enabled                  boolean NOT NULL DEFAULT true,
    ADD COLUMN rate_limit_per_second    double precision,
    ADD COLUMN rate_limit_burst         integer,
    ADD CONSTRAINT api_keys_scopes_bounded
        CHECK (cardinality(scopes) BETWEEN 1 AND 32),
    ADD CONSTRAINT api_keys_rate_limit_whole
        CHECK ((rate_limit_per_second IS NULL) = (rate_limit_burst IS NULL)),
    ADD CONSTRAINT api_keys_rate_limit_range
        CHECK (rate_limit_per_second IS NULL
               OR (rate_limit_per_second > 0 AND rate_limit_per_second <= 1000000
                   AND rate_limit_burst BETWEEN 1 AND 1000000)),
    ADD CONSTRAINT api_keys_master_unrestricted
        CHECK (key_type = 'project' OR (scopes = '{*}' AND enabled AND rate_limit_burst IS NULL));

-- `key.updated` events carry the fields they changed, {"field": {"from": …, "to": …}}.
-- json, not jsonb: kept as written, so its fields read in the order the list item shows them.
ALTER TABLE audit_events ADD COLUMN changes json;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_action_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_action_check CHECK (action IN (
    'organization.created', 'project.created',
    'key.created', 'key.revoked', 'key.rolled', 'key.updated'));
ALTER TABLE audit_events ADD CONSTRAINT audit_events_changes_only_on_update
    CHECK ((action = 'key.updated') = (changes IS NOT NULL));

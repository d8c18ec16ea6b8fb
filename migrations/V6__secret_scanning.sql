-- Secret scanning (issue 22): a key revoked because a scanning partner reported it leaked is
-- audited with actor {type: "secret_scanning", provider} and details {reason, url, source}.

ALTER TABLE audit_events ADD COLUMN actor_provider text;
ALTER TABLE audit_events ADD COLUMN details json;

ALTER TABLE audit_events DROP CONSTRAINT audit_events_actor_type_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_type_check
    CHECK (actor_type IN ('master', 'project', 'admin', 'cli', 'system', 'secret_scanning'));
-- A scanning partner is named by its provider; no other actor has one.
ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_provider_check
    CHECK ((actor_type = 'secret_scanning') = (actor_provider IS NOT NULL));

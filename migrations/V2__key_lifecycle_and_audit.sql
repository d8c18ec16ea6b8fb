-- Key lifecycle (expiry, rotation) and the audit trail of every change to organizations,
-- projects and keys.

-- A key past expires_at authenticates nowhere. A rolled key points at its successor, and a
-- key is rolled at most once.
ALTER TABLE api_keys
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN replaced_by  uuid UNIQUE REFERENCES api_keys (id);

-- Audit events. Written in the transaction of the change they record; never changed after.
-- Never a plaintext key or a key hash: the actor key is named by id and prefix only.
CREATE TABLE audit_events (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    action           text NOT NULL CHECK (action IN (
                         'organization.created', 'project.created',
                         'key.created', 'key.revoked', 'key.rolled')),
    occurred_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_type       text NOT NULL CHECK (actor_type IN ('master', 'project', 'admin', 'cli')),
    actor_key_id     uuid,
    actor_prefix     text,
    target_type      text NOT NULL CHECK (target_type IN ('organization', 'project', 'key')),
    target_id        uuid NOT NULL,
    project_id       uuid,
    ip               text,
    user_agent       text,
    request_id       text,
    -- A key actor is named by its key; the admin and the CLI by nothing else.
    CHECK ((actor_type IN ('master', 'project')) = (actor_key_id IS NOT NULL))
);

-- Keyset pagination, newest first, per organization (and per target for the filter).
CREATE INDEX audit_events_page ON audit_events (organization_id, occurred_at DESC, id DESC);
CREATE INDEX audit_events_by_target ON audit_events (organization_id, target_id, occurred_at DESC, id DESC);

-- Append-only: even a bug in the service can't rewrite history. Pruning is a deliberate
-- operator procedure (README, "Audit events"), run as the table owner with this trigger
-- disabled for that one transaction.
CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();

-- TRUNCATE bypasses row triggers: refuse it as well.
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

-- Organizations own projects and keys; keys belong to one project (project keys) or to the
-- whole organization (master keys). Only SHA-256 of a key is stored, never its plaintext.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    name             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX projects_by_organization ON projects (organization_id, created_at DESC);

CREATE TABLE api_keys (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    project_id       uuid REFERENCES projects (id),
    key_type         text NOT NULL CHECK (key_type IN ('master', 'project')),
    name             text NOT NULL,
    prefix           text NOT NULL,
    key_hash         bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_used_at     timestamptz,
    revoked_at       timestamptz,
    -- A project key has a project; a master key has none.
    CHECK ((key_type = 'master') = (project_id IS NULL))
);

CREATE INDEX api_keys_by_organization ON api_keys (organization_id, created_at DESC);
CREATE INDEX api_keys_active_by_organization ON api_keys (organization_id) WHERE revoked_at IS NULL;

-- Usage counts (issue 23): requests per key, per UTC hour, by outcome. Written by each
-- instance's flusher with additive upserts; read summed by hour or day. The organization and
-- project are copied from the key when a row is first written, so an organization's (or a
-- project's) usage is read from this table alone.

CREATE TABLE key_usage (
    key_id              uuid NOT NULL,
    hour                timestamptz NOT NULL CHECK (date_trunc('hour', hour AT TIME ZONE 'UTC') = hour AT TIME ZONE 'UTC'),
    organization_id     uuid NOT NULL,
    project_id          uuid,
    valid               bigint NOT NULL DEFAULT 0,
    rate_limited        bigint NOT NULL DEFAULT 0,
    usage_exceeded      bigint NOT NULL DEFAULT 0,
    insufficient_scope  bigint NOT NULL DEFAULT 0,
    forbidden           bigint NOT NULL DEFAULT 0,
    revoked             bigint NOT NULL DEFAULT 0,
    expired             bigint NOT NULL DEFAULT 0,
    disabled            bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, hour)
);

CREATE INDEX key_usage_by_organization ON key_usage (organization_id, hour);
-- Retention prunes the oldest hours first.
CREATE INDEX key_usage_by_hour ON key_usage (hour);

-- The flushes applied, by (instance, sequence number), written in the transaction of the
-- upserts: a flush retried after a lost commit answer finds its row and adds nothing.
CREATE TABLE usage_flushes (
    instance_id  uuid NOT NULL,
    seq          bigint NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, seq)
);

CREATE INDEX usage_flushes_by_age ON usage_flushes (applied_at);

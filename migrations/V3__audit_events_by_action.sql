-- `?action=` on the audit route: without this index a rare action in a large organization
-- makes Postgres scan the whole table (every tenant's events) to fill one page.
CREATE INDEX audit_events_by_action ON audit_events (organization_id, action, occurred_at DESC, id DESC);

//! Usage counts in Postgres: a flush applied once (its (instance, sequence number) recorded in
//! the transaction of its additive upserts), the buckets the usage routes read, and retention.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Granularity, KeyId, OrgId, ProjectId, UsageBucket, UsageCounts};
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

/// What one instance counted for one key in one UTC hour since its last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    pub key: KeyId,
    pub hour: DateTime<Utc>,
    pub counts: UsageCounts,
}

/// Whose usage a query sums: one key, one project's keys, or the whole organization's.
#[derive(Debug, Clone, Copy)]
pub enum UsageScope {
    Key(KeyId),
    Project(ProjectId),
    Organization,
}

/// Upserts adding a batch's counts; a key that no longer exists is skipped.
const UPSERT: &str = "
    INSERT INTO key_usage (key_id, hour, organization_id, project_id, valid, rate_limited,
                           usage_exceeded, insufficient_scope, forbidden, revoked, expired, disabled)
    SELECT b.key_id, b.hour, k.organization_id, k.project_id, b.valid, b.rate_limited,
           b.usage_exceeded, b.insufficient_scope, b.forbidden, b.revoked, b.expired, b.disabled
    FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[],
                $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
         AS b(key_id, hour, valid, rate_limited, usage_exceeded, insufficient_scope, forbidden,
              revoked, expired, disabled)
    JOIN api_keys k ON k.id = b.key_id
    ON CONFLICT (key_id, hour) DO UPDATE SET
        valid = key_usage.valid + EXCLUDED.valid,
        rate_limited = key_usage.rate_limited + EXCLUDED.rate_limited,
        usage_exceeded = key_usage.usage_exceeded + EXCLUDED.usage_exceeded,
        insufficient_scope = key_usage.insufficient_scope + EXCLUDED.insufficient_scope,
        forbidden = key_usage.forbidden + EXCLUDED.forbidden,
        revoked = key_usage.revoked + EXCLUDED.revoked,
        expired = key_usage.expired + EXCLUDED.expired,
        disabled = key_usage.disabled + EXCLUDED.disabled";

impl Store {
    /// Applies flush `seq` of `instance` exactly once: true when it was applied now, false
    /// when an earlier attempt had already committed it (its answer lost on the way back).
    /// A batch holds each (key, hour) at most once.
    pub async fn apply_usage(
        &self,
        instance: Uuid,
        seq: i64,
        batch: &[UsageDelta],
    ) -> Result<bool, StoreError> {
        let keys: Vec<Uuid> = batch.iter().map(|row| row.key.as_uuid()).collect();
        let hours: Vec<DateTime<Utc>> = batch.iter().map(|row| row.hour).collect();
        let columns: Vec<Vec<i64>> = (0..8)
            .map(|outcome| {
                batch
                    .iter()
                    .map(|row| i64::try_from(row.counts.0[outcome]).unwrap_or(i64::MAX))
                    .collect()
            })
            .collect();
        self.within_deadline(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let first_time = tx
                .execute_cached(
                    "INSERT INTO usage_flushes (instance_id, seq) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&instance, &seq],
                )
                .await?;
            if first_time == 0 {
                return Ok(false);
            }
            tx.execute_cached(
                UPSERT,
                &[
                    &keys,
                    &hours,
                    &columns[0],
                    &columns[1],
                    &columns[2],
                    &columns[3],
                    &columns[4],
                    &columns[5],
                    &columns[6],
                    &columns[7],
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// The organization's usage in `scope`, summed per bucket of `granularity`, for the hours
    /// in [`from`, `until`), oldest first; empty buckets are absent.
    pub async fn usage_buckets(
        &self,
        org: OrgId,
        scope: UsageScope,
        granularity: Granularity,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let (key, project) = match scope {
            UsageScope::Key(key) => (Some(key.as_uuid()), None),
            UsageScope::Project(project) => (None, Some(project.as_uuid())),
            UsageScope::Organization => (None, None),
        };
        let unit = match granularity {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        };
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let rows = client
                .query_cached(
                    "SELECT date_trunc($1, hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS start,
                            sum(valid)::bigint, sum(rate_limited)::bigint,
                            sum(usage_exceeded)::bigint, sum(insufficient_scope)::bigint,
                            sum(forbidden)::bigint, sum(revoked)::bigint, sum(expired)::bigint,
                            sum(disabled)::bigint
                     FROM key_usage
                     WHERE organization_id = $2
                       AND ($3::uuid IS NULL OR key_id = $3)
                       AND ($4::uuid IS NULL OR project_id = $4)
                       AND hour >= $5 AND hour < $6
                     GROUP BY 1 ORDER BY 1",
                    &[&unit, &org.as_uuid(), &key, &project, &from, &until],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| {
                    let mut counts = UsageCounts::default();
                    for (outcome, count) in counts.0.iter_mut().enumerate() {
                        *count = u64::try_from(row.get::<_, i64>(outcome + 1)).unwrap_or(0);
                    }
                    UsageBucket {
                        start: row.get(0),
                        counts,
                    }
                })
                .filter(|bucket| !bucket.counts.is_zero())
                .collect())
        })
        .await
    }

    /// Whether `key` is one the caller may see: the organization's, and when `project` is
    /// given, that project's.
    pub async fn key_in_scope(
        &self,
        org: OrgId,
        project: Option<ProjectId>,
        key: KeyId,
    ) -> Result<bool, StoreError> {
        let project = project.map(|project| project.as_uuid());
        self.within_deadline(async {
            let client = self.pool.get().await?;
            Ok(client
                .query_one_cached(
                    "SELECT EXISTS (SELECT 1 FROM api_keys WHERE id = $1 AND organization_id = $2
                                    AND ($3::uuid IS NULL OR project_id = $3))",
                    &[&key.as_uuid(), &org.as_uuid(), &project],
                )
                .await?
                .get(0))
        })
        .await
    }

    pub async fn project_in_organization(
        &self,
        org: OrgId,
        project: ProjectId,
    ) -> Result<bool, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            Ok(client
                .query_one_cached(
                    "SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1 AND organization_id = $2)",
                    &[&project.as_uuid(), &org.as_uuid()],
                )
                .await?
                .get(0))
        })
        .await
    }

    /// Deletes at most `limit` usage rows of hours before `before`, and at most `limit`
    /// records of flushes applied before `flushes_before`: one small batch of retention.
    /// Returns the usage rows deleted.
    pub async fn prune_usage(
        &self,
        before: DateTime<Utc>,
        flushes_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let deleted = client
                .execute_cached(
                    "DELETE FROM key_usage WHERE (key_id, hour) IN (
                         SELECT key_id, hour FROM key_usage WHERE hour < $1
                         ORDER BY hour LIMIT $2)",
                    &[&before, &limit],
                )
                .await?;
            client
                .execute_cached(
                    "DELETE FROM usage_flushes WHERE (instance_id, seq) IN (
                         SELECT instance_id, seq FROM usage_flushes WHERE applied_at < $1
                         ORDER BY applied_at LIMIT $2)",
                    &[&flushes_before, &limit],
                )
                .await?;
            Ok(deleted)
        })
        .await
    }
}

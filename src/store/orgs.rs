//! Organizations and projects. Organization setup writes the organization, its "Default"
//! project and its master key in one transaction: one action, so one audit event
//! (`organization.created`).

use super::cached::CachedStatements;
use chrono::{DateTime, Utc};

use super::audit::{record_event, Change};
use super::handle::Store;
use super::keys::{insert_master_key, org_lock_id};
use super::pool::StoreError;
use crate::audit::{Action, AuditContext, TargetType};
use crate::domain::{ApiKey, DisplayName, OrgId, ProjectId};

pub const DEFAULT_PROJECT_NAME: &str = "Default";

#[derive(Debug, Clone)]
pub struct OrganizationRecord {
    pub id: OrgId,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct ProjectRecord {
    pub id: ProjectId,
    pub organization_id: OrgId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// The result of organization setup; `master_key` is the only copy of the plaintext.
#[derive(Debug)]
pub struct NewOrganization {
    pub organization_id: OrgId,
    pub project_id: ProjectId,
    pub master_key: ApiKey,
}

impl Store {
    pub async fn create_organization(
        &self,
        name: &DisplayName,
        context: &AuditContext,
    ) -> Result<NewOrganization, StoreError> {
        self.within_deadline(async {
            let organization_id = OrgId::new();
            let project_id = ProjectId::new();
            let default_project =
                DisplayName::parse(DEFAULT_PROJECT_NAME).expect("constant name is valid");

            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute_cached(
                "INSERT INTO organizations (id, name) VALUES ($1, $2)",
                &[&organization_id.as_uuid(), &name.as_str()],
            )
            .await?;
            insert_project(&tx, organization_id, project_id, &default_project).await?;
            let (master_key, _) = insert_master_key(&tx, organization_id).await?;
            let change = Change::new(
                organization_id,
                Action::OrganizationCreated,
                TargetType::Organization,
                organization_id.as_uuid(),
                None,
            );
            record_event(&tx, &change, context).await?;
            tx.commit().await?;
            Ok(NewOrganization {
                organization_id,
                project_id,
                master_key,
            })
        })
        .await
    }

    pub async fn list_organizations(&self) -> Result<Vec<OrganizationRecord>, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT id, name FROM organizations ORDER BY created_at, id",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| OrganizationRecord {
                    id: OrgId::from_uuid(row.get(0)),
                    name: row.get(1),
                })
                .collect())
        })
        .await
    }

    /// None when the organization does not exist.
    pub async fn create_project(
        &self,
        org: OrgId,
        name: &DisplayName,
        context: &AuditContext,
    ) -> Result<Option<ProjectRecord>, StoreError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            // Every writer of an organization's events holds its lock, so events commit in
            // occurredAt order and a reader's keyset walk can't pass one still uncommitted.
            tx.execute_cached("SELECT pg_advisory_xact_lock($1)", &[&org_lock_id(org)])
                .await?;
            let exists = tx
                .query_opt_cached(
                    "SELECT 1 FROM organizations WHERE id = $1",
                    &[&org.as_uuid()],
                )
                .await?;
            if exists.is_none() {
                return Ok(None);
            }
            let record = insert_project(&tx, org, ProjectId::new(), name).await?;
            let change = Change::new(
                org,
                Action::ProjectCreated,
                TargetType::Project,
                record.id.as_uuid(),
                Some(record.id),
            );
            record_event(&tx, &change, context).await?;
            tx.commit().await?;
            Ok(Some(record))
        })
        .await
    }

    pub async fn list_projects(&self, org: OrgId) -> Result<Vec<ProjectRecord>, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT id, organization_id, name, created_at FROM projects
                     WHERE organization_id = $1 ORDER BY created_at DESC, id DESC",
                    &[&org.as_uuid()],
                )
                .await?;
            Ok(rows.iter().map(project_record).collect())
        })
        .await
    }
}

async fn insert_project(
    tx: &deadpool_postgres::Transaction<'_>,
    org: OrgId,
    id: ProjectId,
    name: &DisplayName,
) -> Result<ProjectRecord, StoreError> {
    let row = tx
        .query_one_cached(
            "INSERT INTO projects (id, organization_id, name) VALUES ($1, $2, $3)
             RETURNING id, organization_id, name, created_at",
            &[&id.as_uuid(), &org.as_uuid(), &name.as_str()],
        )
        .await?;
    Ok(project_record(&row))
}

fn project_record(row: &tokio_postgres::Row) -> ProjectRecord {
    ProjectRecord {
        id: ProjectId::from_uuid(row.get(0)),
        organization_id: OrgId::from_uuid(row.get(1)),
        name: row.get(2),
        created_at: row.get(3),
    }
}

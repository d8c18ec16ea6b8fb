//! Usage counts as customers read them: `GET /api/v1/keys/{id}/usage` (whoever may list the
//! key: a master key any key of its organization, a project key its own project's, holding
//! `keys.read`) and `GET /api/v1/usage` (master only: the organization's keys summed, or one
//! project's). Both take `from`, `to` (RFC 3339; default the last 24 hours) and `granularity`
//! (`hour`, the default, or `day`), each at most once and nothing else: a bucket is listed when
//! its start is in [`from` truncated to the granularity, `to`), oldest first, empty ones left
//! out.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};

use super::responses::listed;
use crate::access::{Authenticated, KeysRead, MasterOnly};
use crate::domain::{Granularity, KeyId, ProjectId};
use crate::error::{ApiError, FieldError};
use crate::metrics::counted_resource;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::store::UsageScope;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(counted_resource("/keys/{id}/usage").route(web::get().to(key_usage)))
        .service(counted_resource("/usage").route(web::get().to(organization_usage)));
}

/// What a usage query asks for: the hours to read, [`from`, `until`), and how to sum them.
#[derive(Debug, Clone, PartialEq)]
struct UsageQuery {
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    granularity: Granularity,
    project_id: Option<ProjectId>,
}

/// The parameters each route takes.
const KEY_PARAMETERS: &[&str] = &["from", "to", "granularity"];
const ORGANIZATION_PARAMETERS: &[&str] = &["project_id", "from", "to", "granularity"];

impl UsageQuery {
    fn parse(query: &str, names: &[&str], now: DateTime<Utc>) -> Result<UsageQuery, ApiError> {
        let refused = |field: &str, problem: String| {
            ApiError::validation(
                "Invalid query parameters",
                vec![FieldError::new(field.to_owned(), problem)],
            )
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| refused("query", "must be URL-encoded name=value pairs".into()))?;
        let (mut from, mut to, mut granularity, mut project_id) = (None, None, None, None);
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in &pairs {
            if !names.contains(&name.as_str()) {
                let known = names.join(", ");
                return Err(refused(
                    name,
                    format!("is not a parameter of this route ({known})"),
                ));
            }
            if seen.contains(&name.as_str()) {
                return Err(refused(name, "may be given only once".into()));
            }
            seen.push(name);
            match name.as_str() {
                "from" => from = Some(parse_time(value).ok_or_else(|| refused(name, TIME.into()))?),
                "to" => to = Some(parse_time(value).ok_or_else(|| refused(name, TIME.into()))?),
                "granularity" => {
                    granularity = Some(Granularity::parse(value).ok_or_else(|| {
                        refused(name, format!("must be one of {}", Granularity::NAMES))
                    })?)
                }
                _ => {
                    project_id = Some(
                        ProjectId::parse(value)
                            .ok_or_else(|| refused(name, "must be a UUID".into()))?,
                    )
                }
            }
        }
        let granularity = granularity.unwrap_or(Granularity::Hour);
        let to = to.unwrap_or(now);
        let from = from.unwrap_or(to - Duration::hours(24));
        if to <= from {
            return Err(refused("to", "must be after from".into()));
        }
        if to - from > granularity.max_range() {
            let (days, unit) = match granularity {
                Granularity::Hour => (31, "hour"),
                Granularity::Day => (366, "day"),
            };
            return Err(refused(
                "to",
                format!("must be at most {days} days after from at {unit} granularity"),
            ));
        }
        Ok(UsageQuery {
            from: granularity.truncate(from),
            // Every hour of the last bucket starting before `to`.
            until: granularity.ceil(to),
            granularity,
            project_id,
        })
    }
}

const TIME: &str = "must be an RFC 3339 time, such as 2026-01-15T09:00:00Z";

/// RFC 3339. A `+` offset arrives as a space when the client did not percent-encode it.
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .or_else(|_| DateTime::parse_from_rfc3339(&raw.replace(' ', "+")))
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

async fn key_usage(
    caller: Authenticated<KeysRead>,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let identity = caller.identity;
    let key = KeyId::parse(req.match_info().get("id").unwrap_or_default()).ok_or_else(|| {
        ApiError::validation(
            "Invalid key id",
            vec![FieldError::new("id", "must be a UUID")],
        )
    })?;
    let query = UsageQuery::parse(req.query_string(), KEY_PARAMETERS, Utc::now())?;
    // As the list: a master key sees the organization's keys, a project key its project's.
    let org = identity.organization_id;
    if !state
        .store
        .key_in_scope(org, identity.project_id, key)
        .await?
    {
        return Err(ApiError::not_found("Key not found"));
    }
    answer(&state, org, UsageScope::Key(key), &query, request_id).await
}

async fn organization_usage(
    caller: Authenticated<MasterOnly>,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let query = UsageQuery::parse(req.query_string(), ORGANIZATION_PARAMETERS, Utc::now())?;
    let org = caller.identity.organization_id;
    let scope = match query.project_id {
        Some(project) if !state.store.project_in_organization(org, project).await? => {
            return Err(ApiError::not_found("Project not found"))
        }
        Some(project) => UsageScope::Project(project),
        None => UsageScope::Organization,
    };
    answer(&state, org, scope, &query, request_id).await
}

async fn answer(
    state: &AppState,
    org: crate::domain::OrgId,
    scope: UsageScope,
    query: &UsageQuery,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let buckets = state
        .store
        .usage_buckets(org, scope, query.granularity, query.from, query.until)
        .await?;
    Ok(listed("usage", buckets, request_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 9, 30, 0).unwrap()
    }

    fn parse(query: &str) -> Result<UsageQuery, ApiError> {
        UsageQuery::parse(query, ORGANIZATION_PARAMETERS, now())
    }

    fn field_of(query: &str) -> String {
        let error = parse(query).expect_err(query);
        error.details()[0].field.to_string()
    }

    #[test]
    fn defaults_are_the_last_24_hours_by_hour() {
        let query = parse("").unwrap();
        assert_eq!(query.granularity, Granularity::Hour);
        assert_eq!(
            query.from,
            Utc.with_ymd_and_hms(2026, 1, 14, 9, 0, 0).unwrap()
        );
        assert_eq!(
            query.until,
            Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).unwrap()
        );
    }

    #[test]
    fn from_is_truncated_and_the_bucket_holding_to_is_whole() {
        let query =
            parse("from=2026-01-10T10:15:00Z&to=2026-01-12T00:00:00Z&granularity=day").unwrap();
        assert_eq!(
            query.from,
            Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap()
        );
        assert_eq!(
            query.until,
            Utc.with_ymd_and_hms(2026, 1, 12, 0, 0, 0).unwrap()
        );
        let offset = parse("from=2026-01-15T10:15:00%2B01:00&to=2026-01-15T09:45:00Z").unwrap();
        assert_eq!(
            offset.from,
            Utc.with_ymd_and_hms(2026, 1, 15, 9, 0, 0).unwrap()
        );
    }

    #[test]
    fn bad_ranges_name_their_field() {
        assert_eq!(field_of("from=yesterday"), "from");
        assert_eq!(field_of("to=2026-01-15"), "to");
        assert_eq!(field_of("granularity=minute"), "granularity");
        assert_eq!(field_of("project_id=nope"), "project_id");
        assert_eq!(
            field_of("from=2026-01-15T09:00:00Z&to=2026-01-15T09:00:00Z"),
            "to"
        );
        assert_eq!(field_of("from=2025-12-01T00:00:00Z"), "to");
        assert_eq!(field_of("granularity=day&granularity=day"), "granularity");
        assert_eq!(field_of("limit=5"), "limit");
        assert!(
            parse("from=2025-12-15T09:30:00Z").is_ok(),
            "31 days exactly"
        );
        assert!(parse("from=2025-01-15T00:00:00Z&granularity=day").is_ok());
        assert_eq!(field_of("from=2025-01-01T00:00:00Z&granularity=day"), "to");
        assert_eq!(
            UsageQuery::parse("project_id=x", KEY_PARAMETERS, now())
                .unwrap_err()
                .details()[0]
                .field,
            "project_id"
        );
    }
}

//! `GET /api/v1/auth/verify`: the shared hot path as an endpoint, usable as an nginx
//! `auth_request` or Envoy ext_authz target. Identity in the body and in headers. With
//! `?scope=resource.action`, a key without that scope is refused 403 `insufficient_scope`, so
//! a proxy in front can apply a route's scope with the same rule as the gateway.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::access::{insufficient_scope, AnyKey, Authenticated};
use crate::domain::timestamp;
use crate::domain::{KeyId, OrgId, ProjectId, ScopeName, Scopes};
use crate::error::{ApiError, FieldError};
use crate::metrics::counted_resource;
use crate::request_id::RequestId;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(counted_resource("/auth/verify").route(web::get().to(verify)));
}

#[derive(Serialize)]
struct Verified<'a> {
    valid: bool,
    key_id: KeyId,
    organization_id: OrgId,
    project_id: Option<ProjectId>,
    #[serde(rename = "type")]
    key_type: &'static str,
    #[serde(serialize_with = "timestamp::option::serialize")]
    expires_at: Option<DateTime<Utc>>,
    scopes: &'a Scopes,
    request_id: RequestId,
}

/// The one `scope` the caller asks about, if any: a plain `resource.action`, given once. Any
/// other parameter is refused: a misspelt `scope` in a proxy's configuration must fail loudly
/// rather than let every key through unchecked.
fn asked_scope(query: &str) -> Result<Option<ScopeName>, ApiError> {
    if query.is_empty() {
        return Ok(None);
    }
    let refuse = |problem: &'static str| {
        ApiError::validation("Invalid scope", vec![FieldError::new("scope", problem)])
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| refuse("the query string could not be read"))?;
    if let Some((name, _)) = pairs.iter().find(|(name, _)| name != "scope") {
        return Err(ApiError::validation(
            "Invalid query",
            vec![FieldError::new(
                name.clone(),
                "is not a parameter of this route (scope)",
            )],
        ));
    }
    let mut asked = pairs.iter().filter(|(name, _)| name == "scope");
    let Some((_, first)) = asked.next() else {
        return Ok(None);
    };
    if asked.next().is_some() {
        return Err(refuse("must be given once"));
    }
    ScopeName::parse(first).map(Some).ok_or_else(|| {
        refuse("must be one scope resource.action, each part [a-z][a-z0-9_-]{0,31} (no wildcard)")
    })
}

async fn verify(
    caller: Authenticated<AnyKey>,
    req: HttpRequest,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let identity = caller.identity;
    if let Some(scope) = asked_scope(req.query_string())? {
        if !identity.scopes.grants(scope.as_str()) {
            return Err(insufficient_scope(scope.as_str()));
        }
    }
    let mut answer = HttpResponse::Ok();
    for header in identity.headers() {
        answer.insert_header(header);
    }
    Ok(answer.json(Verified {
        valid: true,
        key_id: identity.key_id,
        organization_id: identity.organization_id,
        project_id: identity.project_id,
        key_type: identity.key_type.as_str(),
        expires_at: identity.expires_at,
        scopes: &identity.scopes,
        request_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_plain_scope_or_none() {
        assert_eq!(asked_scope("").unwrap(), None);
        assert!(
            asked_scope("other=1").is_err(),
            "unknown parameters are refused"
        );
        assert!(asked_scope("Scope=events.read").is_err());
        assert!(asked_scope("scopes=events.read").is_err());
        assert_eq!(
            asked_scope("scope=events.write").unwrap(),
            ScopeName::parse("events.write")
        );
        for bad in [
            "scope=",
            "scope=events.*",
            "scope=*",
            "scope=%2A",
            "scope=Events.write",
            "scope=a.b&scope=a.b",
            "scope=events",
        ] {
            assert!(asked_scope(bad).is_err(), "{bad}");
        }
    }
}

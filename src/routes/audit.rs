//! `GET /api/v1/audit-events`: the organization's audit trail, newest first, a page at a time
//! (master key only).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use uuid::Uuid;

use super::pages::{encode_cursor, parse_page_query, Page};
use crate::access::{Authenticated, MasterOnly};
use crate::audit::Action;
use crate::error::ApiError;
use crate::metrics::counted_resource;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::store::{EventQuery, EventView};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(counted_resource("/audit-events").route(web::get().to(list_events)));
}

/// The query string, parsed: the page, and the filters.
struct ListRequest {
    page: Page,
    action: Option<Action>,
    target_id: Option<Uuid>,
}

impl ListRequest {
    fn parse(query: &str) -> Result<ListRequest, ApiError> {
        let (mut action, mut target_id) = (None, None);
        let page =
            parse_page_query(
                query,
                "limit, cursor, action, target_id",
                |name, value| match name {
                    "action" => Some(
                        Action::from_name(value)
                            .map(|known| action = Some(known))
                            .ok_or_else(|| {
                                let names: Vec<_> =
                                    Action::ALL.iter().map(|a| a.as_str()).collect();
                                format!("must be one of {}", names.join(", "))
                            }),
                    ),
                    "target_id" => Some(
                        Uuid::try_parse(value)
                            .map(|id| target_id = Some(id))
                            .map_err(|_| "must be a UUID".to_owned()),
                    ),
                    _ => None,
                },
            )?;
        Ok(ListRequest {
            page,
            action,
            target_id,
        })
    }
}

#[derive(Serialize)]
struct EventList<'a> {
    events: Vec<EventView<'a>>,
    next_cursor: Option<String>,
    request_id: RequestId,
}

async fn list_events(
    caller: Authenticated<MasterOnly>,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let request = ListRequest::parse(req.query_string())?;
    let page = state
        .store
        .list_audit_events(EventQuery {
            organization_id: caller.identity.organization_id,
            action: request.action,
            target_id: request.target_id,
            after: request.page.after,
            limit: request.page.limit,
        })
        .await?;
    Ok(HttpResponse::Ok().json(EventList {
        events: page.events.iter().map(EventView::from).collect(),
        next_cursor: page.next.map(encode_cursor),
        request_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_known_and_given_once() {
        assert!(ListRequest::parse("").is_ok());
        assert!(ListRequest::parse("limit=2&action=key.created").is_ok());
        for bad in [
            "limit=2&limit=3",
            "actoin=key.created",
            "action=key.deleted",
            "target_id=nope",
            "cursor=",
        ] {
            assert!(ListRequest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

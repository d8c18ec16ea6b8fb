//! Audit events: what each change to organizations, projects and keys records about itself.
//! The store writes an event in the transaction of its change (`store::audit`); this module
//! holds the vocabulary and who-did-it context that handlers and the CLI pass down.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::USER_AGENT;
use actix_web::HttpRequest;

use crate::client_addr::TrustedProxies;
use crate::domain::{Identity, KeyId, KeyType};
use crate::request_id::RequestId;

/// A stored user agent is cut to this many bytes: enough to recognise any real client, and
/// a client can't make the audit table store kilobytes of its choosing per event.
pub const USER_AGENT_MAX_BYTES: usize = 512;

macro_rules! actions {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// What happened. The names are the API's `action` values (and the table's CHECK).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Action {
            $($variant),+
        }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name),+
                }
            }
        }
    };
}

actions! {
    OrganizationCreated => "organization.created",
    ProjectCreated => "project.created",
    KeyCreated => "key.created",
    KeyRevoked => "key.revoked",
    KeyRolled => "key.rolled",
    KeyUpdated => "key.updated",
    KeyExpiring => "key.expiring",
    WebhookEndpointCreated => "webhook_endpoint.created",
    WebhookEndpointDeleted => "webhook_endpoint.deleted",
}

/// The event types a webhook endpoint may subscribe to (`["*"]` means all of them). Each is an
/// audit action, but for `key.leaked`: a leaked key's `key.revoked` event, sent again under
/// that type. Endpoint changes are audited, never sent.
pub const WEBHOOK_EVENT_TYPES: &[&str] = &[
    "key.created",
    "key.revoked",
    "key.rolled",
    "key.updated",
    "key.expiring",
    WEBHOOK_KEY_LEAKED,
];

/// A key revoked because a scanning partner reported it leaked: its `key.revoked` event,
/// delivered again under this type to the endpoints that subscribe to it.
pub const WEBHOOK_KEY_LEAKED: &str = "key.leaked";

impl Action {
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL
            .iter()
            .copied()
            .find(|action| action.as_str() == name)
    }

    /// Whether webhook endpoints hear of this action (when they subscribe to it).
    pub fn is_webhook_event(self) -> bool {
        WEBHOOK_EVENT_TYPES.contains(&self.as_str())
    }
}

/// Who made the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Key {
        key_type: KeyType,
        key_id: KeyId,
    },
    /// The admin API (`admin.token`).
    Admin,
    /// The `logstitch-gateway` command line.
    Cli,
    /// The service itself, on nobody's request (expiry warnings).
    System,
    /// A secret-scanning partner's verified report (`POST /api/v1/secret-scanning/{provider}`),
    /// named by the provider's configured name.
    SecretScanning {
        provider: Arc<str>,
    },
}

impl Actor {
    pub fn type_name(&self) -> &'static str {
        match self {
            Actor::Key { key_type, .. } => key_type.as_str(),
            Actor::Admin => "admin",
            Actor::Cli => "cli",
            Actor::System => "system",
            Actor::SecretScanning { .. } => "secret_scanning",
        }
    }

    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Actor::Key { key_id, .. } => Some(*key_id),
            _ => None,
        }
    }

    /// The scanning partner that reported a leak; None for every other actor.
    pub fn provider(&self) -> Option<&str> {
        match self {
            Actor::SecretScanning { provider } => Some(provider),
            _ => None,
        }
    }
}

/// The target's kind; its id travels beside it as a uuid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    Organization,
    Project,
    Key,
    WebhookEndpoint,
}

impl TargetType {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::Organization => "organization",
            TargetType::Project => "project",
            TargetType::Key => "key",
            TargetType::WebhookEndpoint => "webhook_endpoint",
        }
    }
}

/// Who asked, and from where: everything an event records besides the change itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    pub actor: Actor,
    /// The client address as the server determines it (`server.trusted_proxies`).
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<RequestId>,
}

impl AuditContext {
    /// The command line: no address, no user agent, no request.
    pub fn cli() -> AuditContext {
        AuditContext::unrequested(Actor::Cli)
    }

    /// The service itself (expiry warnings): no address, no user agent, no request.
    pub fn system() -> AuditContext {
        AuditContext::unrequested(Actor::System)
    }

    fn unrequested(actor: Actor) -> AuditContext {
        AuditContext {
            actor,
            ip: None,
            user_agent: None,
            request_id: None,
        }
    }

    /// An HTTP request made by `actor`.
    pub fn of_request(
        actor: Actor,
        req: &HttpRequest,
        proxies: &TrustedProxies,
        request_id: RequestId,
    ) -> AuditContext {
        let user_agent = req
            .headers()
            .get(USER_AGENT)
            .map(|value| truncated(&String::from_utf8_lossy(value.as_bytes())));
        AuditContext {
            actor,
            ip: proxies.client_ip(req.peer_addr(), req.headers()),
            user_agent,
            request_id: Some(request_id),
        }
    }

    /// A request authenticated with a key.
    pub fn of_key(
        identity: &Identity,
        req: &HttpRequest,
        proxies: &TrustedProxies,
        request_id: RequestId,
    ) -> AuditContext {
        let actor = Actor::Key {
            key_type: identity.key_type,
            key_id: identity.key_id,
        };
        AuditContext::of_request(actor, req, proxies, request_id)
    }
}

fn truncated(agent: &str) -> String {
    if agent.len() <= USER_AGENT_MAX_BYTES {
        return agent.to_owned();
    }
    let mut end = USER_AGENT_MAX_BYTES;
    while !agent.is_char_boundary(end) {
        end -= 1;
    }
    agent[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_round_trip() {
        for action in Action::ALL {
            assert_eq!(Action::from_name(action.as_str()), Some(*action));
        }
        assert_eq!(Action::from_name("key.deleted"), None);
        assert_eq!(Action::from_name("KEY.CREATED"), None);
    }

    #[test]
    fn long_user_agents_are_cut_at_a_character_boundary() {
        let agent = "é".repeat(USER_AGENT_MAX_BYTES);
        let cut = truncated(&agent);
        assert!(cut.len() <= USER_AGENT_MAX_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncated("curl/8.5.0"), "curl/8.5.0");
    }
}

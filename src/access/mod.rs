//! Who may call what: the `authenticate` middleware that resolves a request's key once, and
//! the typed checks routes apply to the result (`Authenticated<MasterOnly | AnyKey>`, and
//! `authorize` for gateway routes). Above the application state, which it reads.

mod extract;
mod throttle;

pub(crate) use extract::bearer_token;
pub use extract::{
    authenticate, authorize, insufficient_scope, AnyKey, AuthFailure, AuthOutcome, Authenticated,
    KeysRead, KeysWrite, MasterOnly, Permission,
};
pub use throttle::unthrottled_address;

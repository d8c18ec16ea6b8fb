//! The forwarding gateway: authenticated tenant traffic under configured prefixes is
//! rate-limited per key and forwarded to its upstream with identity and forwarding headers.
//! Every request's path is normalised before routing (`normalize_request`), gateway or not.

mod forward;
mod headers;
mod path;
mod upstream;

pub use forward::configure;
pub use path::{normalize, normalize_request, PathError};
pub use upstream::Upstreams;

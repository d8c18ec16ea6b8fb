//! LogStitch gateway: the API key service and authentication gateway.

pub mod access;
pub mod actors;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client_addr;
pub mod configuration;
pub mod domain;
pub mod edge;
pub mod error;
pub mod gateway;
pub mod invalidation;
pub mod metrics;
pub mod notice;
pub mod outbound;
pub mod rate_limit;
pub mod request_id;
pub mod reserved_paths;
pub mod routes;
pub mod secret_scanning;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod usage;
pub mod webhooks;

//! Black-box integration tests: each starts the real server on a random port, on its own
//! fresh database (dropped afterwards), and speaks HTTP to it.

mod audit;
mod auth_throttle;
mod bad_input;
mod cli;
mod dashboards;
mod drills;
mod external;
mod fleet_rate_limit;
mod gateway;
mod gateway_edge;
mod helpers;
mod hot_path;
mod http_client;
mod keys;
mod lifecycle;
mod master_key;
mod multi_instance;
mod nginx;
mod observability;
mod openapi;
mod outage;
mod pg_proxy;
mod raw_http;
mod restricted_keys;
mod revocation_races;
mod routes;
mod secret_scanning;
mod security;
mod smoke;
mod usage;
mod webhooks;

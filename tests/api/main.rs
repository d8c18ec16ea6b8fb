//! Black-box integration tests: each starts the real server on a random port, on its own
//! fresh database (dropped afterwards), and speaks HTTP to it.

mod bad_input;
mod cli;
mod dashboards;
mod drills;
mod external;
mod gateway;
mod helpers;
mod hot_path;
mod keys;
mod multi_instance;
mod nginx;
mod observability;
mod openapi;
mod outage;
mod pg_proxy;
mod routes;
mod security;
mod smoke;

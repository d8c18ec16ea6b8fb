//! Black-box integration tests: each starts the real server on a random port, on its own
//! fresh database (dropped afterwards), and speaks HTTP to it.

mod helpers;
mod smoke;

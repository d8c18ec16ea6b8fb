//! Secret scanning: partners (GitHub, GitLab, …) report tokens found in public code, signed
//! with their published ECDSA keys; every live key of ours among them is revoked at once.
//!
//! `providers` (the configured partners, and a report's authentication), `public_keys` (each
//! partner's keys document, fetched and kept), `signature` (the ECDSA check), `report` (the
//! body, read whole before anything is done), `leaks` (labels and revocations).

mod leaks;
mod providers;
mod public_keys;
mod report;
mod signature;

pub use leaks::{act_on, Feedback, Handles};
pub use providers::{NotAuthentic, Provider, Providers};
pub use report::{parse as parse_report, ReportedToken, MAX_TOKENS};

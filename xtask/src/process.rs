//! Running other programs: commands that must succeed, servers stopped when their guard
//! drops, and Ctrl-C turned into an orderly stop so every guard still runs.

use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: all a signal handler may safely do.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C reaches the whole foreground process group: the children (servers, k6, cargo)
/// stop by themselves, and this process, instead of dying on the spot, notices at its next
/// wait and unwinds, so databases are dropped and servers stopped by their guards. A handler
/// (unlike SIG_IGN) is reset by exec, so children keep the default behaviour.
pub fn stop_on_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installs an async-signal-safe handler; no other code here touches signals.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, but returns early (with an error) on Ctrl-C.
pub fn sleep(duration: Duration) -> Result<()> {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
    }
    check_interrupted()
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Only the exit status: cleanup (dropping a database after Ctrl-C) runs commands too, so
/// an interruption is checked by the callers' waits, not here.
fn checked(command: &Command, status: ExitStatus) -> Result<()> {
    if !status.success() {
        bail!("`{}` failed ({status})", describe(command));
    }
    Ok(())
}

/// Runs to completion, output shown; fails on a non-zero exit.
pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run `{}`", describe(command)))?;
    checked(command, status)
}

/// Runs to completion and returns stdout (stderr shown); fails on a non-zero exit.
pub fn output(command: &mut Command) -> Result<String> {
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run `{}`", describe(command)))?;
    checked(command, output.status)?;
    String::from_utf8(output.stdout).with_context(|| format!("`{}`: stdout", describe(command)))
}

/// A long-running child: stopped (SIGTERM, SIGKILL after 15 s) when dropped, by its own pid.
pub struct Running {
    pub name: String,
    child: Option<Child>,
}

impl Running {
    pub fn spawn(name: &str, command: &mut Command) -> Result<Running> {
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}: `{}`", describe(command)))?;
        Ok(Running {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails when the process has exited (it should still be serving).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!("{} exited ({status})", self.name);
            }
        }
        Ok(())
    }

    /// Sends `signal`, waits up to 15 s, then SIGKILL. Safe to call twice.
    pub fn stop_with(&mut self, signal: libc::c_int) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill(2) on the pid of a child we have not reaped yet, so it is still ours.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop within 15 s; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn stop(&mut self) {
        self.stop_with(libc::SIGTERM);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `command` (a server that writes the port the kernel gave it to `port_file`), its
/// output into `log`, and waits up to 20 s until `GET ready_path` answers 200. Returns the
/// process and its base URL, `http://127.0.0.1:PORT`.
pub fn start_server(
    name: &str,
    command: &mut Command,
    port_file: &std::path::Path,
    ready_path: &str,
    log: &std::path::Path,
) -> Result<(Running, String)> {
    let log_file = std::fs::File::create(log)?;
    let mut process = Running::spawn(
        name,
        command
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file),
    )?;
    let started = Instant::now();
    loop {
        check_interrupted()?;
        process
            .check_alive()
            .with_context(|| format!("see {}", log.display()))?;
        if let Ok(port) = std::fs::read_to_string(port_file) {
            let url = format!("http://127.0.0.1:{}", port.trim());
            let ready = crate::http::get(&format!("{url}{ready_path}"), None);
            if ready.is_ok_and(|reply| reply.status == 200) {
                return Ok((process, url));
            }
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("{name} did not answer within 20 s (see {})", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! Running libtest binaries one test per process, and plain commands, with a timeout each.

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use vm_init::{
    manifest::RunCommand,
    protocol::{Line, Outcome},
};

use crate::{Report, sys};

/// The names of the tests in a libtest binary (`--list --format terse`: `name: test`), with
/// whether each is `#[ignore]`d.
fn list(binary: &str) -> Result<Vec<(String, bool)>, String> {
    let names = |ignored: bool| -> Result<Vec<String>, String> {
        let mut c = Command::new(binary);
        c.args(["--list", "--format", "terse"]);
        if ignored {
            c.arg("--ignored");
        }
        let out = c.output().map_err(|e| format!("{binary} --list: {e}"))?;
        if !out.status.success() {
            return Err(format!("{binary} --list exited with {}", out.status));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_owned)
            .collect())
    };
    let ignored = names(true)?;
    Ok(names(false)?
        .into_iter()
        .map(|n| {
            let skip = ignored.contains(&n);
            (n, skip)
        })
        .collect())
}

/// How a child ended, from its wait status.
fn succeeded(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Waits for `pid` up to `timeout`, reaping every other child on the way: as PID 1 the init
/// inherits all orphans (a daemon a test left behind), and unreaped they stay zombies that
/// look alive to `kill(pid, 0)`. `None` means it timed out.
fn reap_until(pid: libc::pid_t, timeout: Duration) -> Option<bool> {
    let started = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to a c_int.
        let reaped = unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) };
        if reaped == pid {
            return Some(succeeded(status));
        }
        if reaped > 0 {
            continue; // an orphan: reaped, look again at once
        }
        if reaped < 0 || started.elapsed() >= timeout {
            // No children left (cannot happen while `pid` runs) or out of time.
            return (reaped < 0).then_some(false);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills what is left of a test's process group (the test itself when it hung, and any
/// helper or agent it started), so the next test starts from a clean kernel state.
fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill(2) on a process group this init created; ESRCH (already gone) is fine.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    // Reap them (bounded: SIGKILL cannot be caught).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let mut status = 0;
        // SAFETY: as in reap_until.
        if unsafe { libc::waitpid(-pgid, &raw mut status, libc::WNOHANG) } <= 0 {
            break;
        }
    }
}

/// Runs `argv` in its own process group, output to the console; the outcome and seconds.
fn run_timed(argv: &[&str], timeout: Duration) -> Result<(Outcome, f64), String> {
    let started = Instant::now();
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", argv[0]))?;
    let pid = child.id() as libc::pid_t;
    let outcome = match reap_until(pid, timeout) {
        Some(true) => Outcome::Ok,
        Some(false) => Outcome::Failed,
        None => Outcome::Hung,
    };
    kill_group(pid);
    Ok((outcome, started.elapsed().as_secs_f64()))
}

fn record(report: &mut Report, binary: &str, test: &str, outcome: Outcome, secs: f64) {
    if outcome.is_failure() {
        report.failed += 1;
    } else if outcome == Outcome::Ok {
        report.passed += 1;
    }
    report.line(&Line::Result {
        kernel: report.kernel.clone(),
        binary: binary.to_owned(),
        test: test.to_owned(),
        outcome,
        secs,
    });
}

/// Every test of a libtest binary, each in its own process (`--exact`, one thread).
pub fn run_binary(report: &mut Report, path: &str, timeout_secs: u64) {
    let binary = sys::base_name(path);
    let tests = match list(path) {
        Ok(t) => t,
        Err(e) => {
            report.error(&e);
            return;
        }
    };
    for (test, ignored) in tests {
        if ignored {
            record(report, &binary, &test, Outcome::Ignored, 0.0);
            continue;
        }
        report.line(&Line::Start {
            kernel: report.kernel.clone(),
            binary: binary.clone(),
            test: test.clone(),
        });
        let argv = [path, "--exact", &test, "--test-threads=1", "--nocapture"];
        match run_timed(&argv, Duration::from_secs(timeout_secs)) {
            Ok((outcome, secs)) => record(report, &binary, &test, outcome, secs),
            Err(e) => report.error(&e),
        }
    }
}

/// A plain command that passes when it exits 0 (e.g. the agent's smoke run).
pub fn run_command(report: &mut Report, command: &RunCommand) {
    report.line(&Line::Start {
        kernel: report.kernel.clone(),
        binary: "run".to_owned(),
        test: command.name.clone(),
    });
    let argv: Vec<&str> = command.argv.iter().map(String::as_str).collect();
    match run_timed(&argv, Duration::from_secs(command.timeout_secs)) {
        Ok((outcome, secs)) => record(report, "run", &command.name, outcome, secs),
        Err(e) => report.error(&e),
    }
}

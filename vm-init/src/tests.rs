//! Running libtest binaries one test per process, and plain commands, with a timeout each.

use std::{
    process::{Child, Command, ExitStatus, Stdio},
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

/// Waits for `child` up to `timeout`; kills it after that. `None` means it was killed.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < timeout => thread::sleep(Duration::from_millis(20)),
            // Timed out, or try_wait failed (nothing left to do but stop it).
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs `argv` with output to the console; the outcome and the seconds it took.
fn run_timed(argv: &[&str], timeout: Duration) -> Result<(Outcome, f64), String> {
    let started = Instant::now();
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", argv[0]))?;
    let outcome = match wait_with_timeout(&mut child, timeout) {
        Some(status) if status.success() => Outcome::Ok,
        Some(_) => Outcome::Failed,
        None => Outcome::Hung,
    };
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

//! `cargo xtask vm-test --self-test`: the harness tested end to end, as a user runs it. The
//! whole `vm-test` command runs three times on a real boot with the fixture binary
//! (`vm-init/tests/fixture.rs`): all pass (exit 0); one fails (non-zero exit, the failure
//! named); one hangs (the init's timeout kills it, reports it `hung`, the other tests still
//! run, non-zero exit). The host watchdog that stops a silent VM is tested by `qemu`'s unit
//! tests on a stand-in VM.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail, ensure};
use vm_init::protocol::{Line, Outcome};

use crate::cmd;

/// What one `vm-test` run printed and how it exited.
struct Run {
    success: bool,
    stdout: String,
    lines: Vec<Line>,
}

impl Run {
    fn outcome(&self, test: &str) -> Option<Outcome> {
        self.lines.iter().find_map(|l| match l {
            Line::Result {
                test: t, outcome, ..
            } if t == test => Some(*outcome),
            _ => None,
        })
    }

    /// The `EGRESS-VM-KERNEL` verdict.
    fn kernel_ok(&self) -> Option<bool> {
        self.lines.iter().find_map(|l| match l {
            Line::Kernel { ok, .. } => Some(*ok),
            _ => None,
        })
    }
}

/// Runs `cargo xtask vm-test --no-suite --fixture MODE` (this very binary) and reads its
/// stdout with the protocol parser.
fn vm_test(kernel: &str, mode: &str, timeout_secs: u64, echo: bool) -> Result<Run> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let mut c = Command::new(exe);
    c.args([
        "vm-test",
        "--no-suite",
        "--kernel",
        kernel,
        "--fixture",
        mode,
    ])
    .args(["--timeout", &timeout_secs.to_string()])
    .stderr(Stdio::inherit());
    if echo {
        c.arg("--console");
    }
    let out = c
        .output()
        .with_context(|| format!("running {}", cmd::describe(&c)))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = Vec::new();
    for raw in stdout.lines() {
        if let Some(parsed) = Line::find(raw) {
            lines.push(parsed.map_err(|e| anyhow::anyhow!("{raw:?}: {e}"))?);
        }
    }
    Ok(Run {
        success: out.status.success(),
        stdout,
        lines,
    })
}

pub fn run(kernel: &str, echo: bool) -> Result<()> {
    // (mode, per-test timeout, the fixture test that differs, its outcome)
    let cases: [(&str, u64, &str, Outcome); 3] = [
        ("pass", 60, "fails", Outcome::Ok),
        ("fail", 60, "fails", Outcome::Failed),
        ("hang", 5, "hangs", Outcome::Hung),
    ];
    let mut wrong = Vec::new();
    for (mode, timeout_secs, test, want) in cases {
        let run = cmd::step(&format!("self-test: vm-test --fixture {mode}"), || {
            vm_test(kernel, mode, timeout_secs, echo)
        })?;
        let check = || -> Result<()> {
            ensure!(run.outcome(test) == Some(want), "{test}: want {want:?}");
            ensure!(
                run.outcome("passes") == Some(Outcome::Ok),
                "`passes` must pass"
            );
            let ok = want == Outcome::Ok;
            ensure!(
                run.success == ok,
                "vm-test must exit {} when a test is {want:?}",
                if ok { "0" } else { "non-zero" }
            );
            ensure!(
                run.kernel_ok() == Some(ok),
                "the kernel line must say {}",
                if ok { "ok" } else { "FAILED" }
            );
            Ok(())
        };
        if let Err(e) = check() {
            eprintln!(
                "    self-test {mode}: {e:#}\n    vm-test printed:\n{}",
                run.stdout
            );
            wrong.push(mode);
        }
    }
    if !wrong.is_empty() {
        bail!(
            "vm-test self-test failed for fixture mode(s): {}",
            wrong.join(", ")
        );
    }
    eprintln!("==> vm-test self-test: a pass exits 0, a failure and a hang exit non-zero, named");
    Ok(())
}

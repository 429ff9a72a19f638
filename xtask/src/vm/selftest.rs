//! `cargo xtask vm-test --self-test`: the harness tested end to end on a real boot. The
//! fixture binary (`vm-init/tests/fixture.rs`) runs three times: all pass; one fails (the
//! run must fail and name it); one hangs (the init's timeout must kill it and report it
//! `hung` while the other tests still run).

use std::{fs, path::Path};

use anyhow::{Result, bail, ensure};
use vm_init::protocol::{Line, Outcome};

use super::{
    MUSL, console::Console, initramfs, kernel, musl_cargo, one_kernel, prerequisites, qemu,
    test_binaries,
};
use crate::{bootstrap::Tools, cmd};

fn outcome(console: &Console, test: &str) -> Option<Outcome> {
    console.results.iter().find_map(|l| match l {
        Line::Result {
            test: t, outcome, ..
        } if t == test => Some(*outcome),
        _ => None,
    })
}

pub fn run(root: &Path, tools: &Tools, kernel_spec: &str, echo: bool) -> Result<()> {
    prerequisites(tools, false)?;
    let musl_dir = root.join("target").join(MUSL).join("release");
    cmd::step("build vm-init (static musl)", || {
        cmd::run(musl_cargo(tools, root).args(["build", "--release", "-p", "vm-init"]))
    })?;
    let tests = test_binaries(tools, root, &["-p", "vm-init", "--test", "fixture"])?;
    let vm_dir = root.join("target").join("vm");
    let cache = vm_dir.join("kernels");
    fs::create_dir_all(&cache)?;
    let kernel = cmd::step(&format!("kernel {kernel_spec}"), || {
        kernel::resolve(kernel_spec, &cache)
    })?;
    let accel = qemu::Accel::detect();
    let cases: [(&str, u64, &str, Outcome); 3] = [
        ("pass", 60, "fails", Outcome::Ok),
        ("fail", 60, "fails", Outcome::Failed),
        ("hang", 5, "hangs", Outcome::Hung),
    ];
    let mut wrong = Vec::new();
    for (mode, timeout_secs, test, want) in cases {
        let env = [("EGRESS_VM_FIXTURE".to_owned(), mode.to_owned())];
        let payload = initramfs::Payload {
            init: &musl_dir.join("vm-init"),
            tests: &tests,
            traffic: None,
            agent: None,
            host_tools: None,
            timeout_secs,
            env: &env,
        };
        let console = cmd::step(&format!("self-test: fixture {mode}"), || {
            one_kernel(&vm_dir, &kernel, &payload, accel, echo)
        })?;
        let check = || -> Result<()> {
            ensure!(
                outcome(&console, test) == Some(want),
                "{test}: want {want:?}"
            );
            ensure!(
                outcome(&console, "passes") == Some(Outcome::Ok),
                "passes must pass"
            );
            ensure!(
                console.passed() == (want == Outcome::Ok),
                "the kernel's verdict must follow its tests"
            );
            Ok(())
        };
        if let Err(e) = check() {
            eprintln!("    self-test {mode}: {e:#}");
            wrong.push(mode);
        }
    }
    if !wrong.is_empty() {
        bail!(
            "vm-test self-test failed for fixture mode(s): {}",
            wrong.join(", ")
        );
    }
    eprintln!("==> vm-test self-test: a pass passes, a failure fails, a hang is named");
    Ok(())
}

//! `cargo xtask test`: lints, unit tests, the kernel integration tests (root only) against the
//! release binary on this host's kernel, the end-to-end scenario in its short form (`e2e`:
//! the agent watching Synapse behind nginx, alerting into rsyslogd), then the kernel suite on
//! Debian's 6.1 kernel in QEMU (`vm-test`, after its own self-test).

use std::path::Path;

use anyhow::Result;

use crate::{bootstrap::Tools, build, cmd, e2e, vm};

pub struct Options<'a> {
    pub lint: bool,
    /// Only integration tests whose name contains this (on the host; the VM runs them all).
    pub filter: Option<&'a str>,
    /// Also run the suite in QEMU on Debian's kernel.
    pub vm: bool,
    /// Also run the short end-to-end scenario.
    pub e2e: bool,
}

pub fn all(root: &Path, tools: &Tools, opts: &Options<'_>) -> Result<()> {
    let Options {
        lint,
        filter,
        vm,
        e2e,
    } = *opts;
    if lint {
        lints(root, tools)?;
    }
    cmd::step("unit tests (no root needed)", || {
        cmd::run(tools.cargo(root).args([
            "test",
            "--package",
            "monitor",
            "--package",
            "monitor-common",
            "--package",
            "xtask",
            // The VM init's protocol and manifest (its fixture passes at once outside a VM).
            "--package",
            "vm-init",
        ]))
    })?;
    let bin = build::release(root, tools)?;
    if !cmd::is_root() {
        eprintln!(
            "==> skipping the kernel integration tests: they load BPF programs and need root \
             (run `sudo cargo xtask test`)"
        );
        return Ok(());
    }
    cmd::step("kernel integration tests (real kernel, root)", || {
        let mut c = tools.cargo(root);
        c.args(["test", "--release", "--package", "integration-tests", "--"]);
        c.arg("--test-threads=1");
        if let Some(f) = filter {
            c.arg(f);
        }
        c.env("EGRESS_MONITOR_BIN", &bin);
        cmd::run(&mut c)
    })?;
    if e2e {
        end_to_end(root, tools)?;
    } else {
        eprintln!("==> skipping the end-to-end scenario (--no-e2e)");
    }
    if !vm {
        eprintln!("==> skipping vm-test (--no-vm)");
        return Ok(());
    }
    cmd::step("vm-test self-test: the harness on a real boot", || {
        vm::self_test(vm::DEFAULT_KERNEL, false)
    })?;
    cmd::step(
        "vm-test: the kernel suite on Debian's 6.1 kernel in QEMU",
        || {
            vm::run(
                root,
                tools,
                &vm::Options {
                    kernels: vec![vm::DEFAULT_KERNEL.to_owned()],
                    suite: true,
                    fixture: None,
                    timeout_secs: vm_init::manifest::DEFAULT_TIMEOUT_SECS,
                    echo: false,
                    binaries: Vec::new(),
                },
            )
        },
    )
}

/// The short end-to-end scenario. Where Synapse, nginx or rsyslogd cannot be installed (no
/// package index reachable), it is skipped with the reason, except under CI (`CI` set), which
/// must run it.
fn end_to_end(root: &Path, tools: &Tools) -> Result<()> {
    let result = cmd::step(
        "end-to-end: the agent watching Synapse behind nginx, alerting into rsyslogd (short)",
        || e2e::run(root, tools, &e2e::Options::short()),
    );
    match result {
        Ok(report) => {
            eprintln!("    {}", report.headline());
            Ok(())
        }
        Err(e) => match e2e::unavailable(&e) {
            Some(u) if std::env::var_os("CI").is_none() => {
                eprintln!("==> skipping the end-to-end scenario: {u}");
                Ok(())
            }
            _ => Err(e),
        },
    }
}

/// rustfmt and clippy, userspace and kernel crate.
fn lints(root: &Path, tools: &Tools) -> Result<()> {
    cmd::step(
        "rustfmt --check (pinned nightly: unstable import options)",
        || {
            cmd::run(
                tools
                    .nightly_cargo(root)
                    .args(["fmt", "--all", "--", "--check"]),
            )
        },
    )?;
    cmd::step(
        "clippy (userspace, all targets, warnings are errors)",
        || {
            cmd::run(tools.cargo(root).args([
                "clippy",
                "--workspace",
                "--exclude",
                "monitor-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;
    cmd::step("clippy (kernel programs, bpfel-unknown-none)", || {
        cmd::run(tools.nightly_cargo(root).args([
            "clippy",
            "--package",
            "monitor-ebpf",
            "--bins",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    Ok(())
}

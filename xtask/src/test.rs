//! `cargo xtask test`: lints, unit tests, then the kernel integration tests (root only) against
//! the release binary.

use std::path::Path;

use anyhow::Result;

use crate::{bootstrap::Tools, build, cmd};

pub fn all(root: &Path, tools: &Tools, lint: bool, filter: Option<&str>) -> Result<()> {
    if lint {
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
    })
}

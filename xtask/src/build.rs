//! Release build of the agent, and running it.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{bootstrap::Tools, cmd};

pub fn release(root: &Path, tools: &Tools) -> Result<PathBuf> {
    cmd::step(
        "build egress-monitor (release, kernel programs included)",
        || {
            cmd::run(tools.cargo(root).args([
                "build",
                "--release",
                "--package",
                "monitor",
                "--bin",
                "egress-monitor",
            ]))
        },
    )?;
    let bin = root.join("target/release/egress-monitor");
    if !bin.exists() {
        bail!("build finished but {} is missing", bin.display());
    }
    Ok(bin)
}

/// Replaces this process with the agent, through sudo when not root.
pub fn run_agent(bin: &Path, args: &[String]) -> Result<()> {
    let mut c = if cmd::is_root() {
        Command::new(bin)
    } else {
        if !cmd::exists("sudo") {
            bail!(
                "the agent needs root (CAP_BPF, CAP_NET_ADMIN) and sudo is not installed: run {} run as root",
                bin.display()
            );
        }
        eprintln!("==> not root: re-executing through sudo");
        let mut c = Command::new("sudo");
        c.arg("--").arg(bin);
        c
    };
    c.arg("run").args(args);
    eprintln!("==> {}", cmd::describe(&c));
    let err = c.exec();
    Err(err).context("starting the agent")
}

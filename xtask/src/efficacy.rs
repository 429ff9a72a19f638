//! `cargo xtask efficacy`: builds the agent (release) and runs `egress-monitor efficacy`, the
//! homeserver scenarios through the detector; `--write-readme` puts its markdown table in
//! README.md between the efficacy markers, `--check-readme` fails when the README's table is
//! not what the detector does now.
//!
//! The harness loads no kernel program, so the binary is built without them
//! (`AYA_BUILD_SKIP=1`: no bpf-linker, no nightly, no root) into its own target directory,
//! leaving the agent's release binary alone.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{bootstrap::Tools, cmd, pins};

pub const BEGIN: &str = "<!-- efficacy:begin -->";
pub const END: &str = "<!-- efficacy:end -->";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the markdown table into README.md (between the efficacy markers).
    #[arg(long, conflicts_with = "check_readme")]
    write_readme: bool,
    /// Fail if README.md's table is not what the detector does now.
    #[arg(long)]
    check_readme: bool,
    /// Arguments for `egress-monitor efficacy` (after `--`), without the README options.
    #[arg(last = true)]
    passed: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readme {
    /// Print the table.
    Print,
    Write,
    Check,
}

/// `rustup run <pinned stable> cargo`, as every other real build.
fn cargo(root: &Path) -> Result<Command> {
    let pins = pins::read(root)?;
    let tools = Tools {
        stable: pins.userspace.toolchain,
        nightly: pins.ebpf.toolchain,
        bpf_linker_bin: root.join("target"),
    };
    Ok(tools.cargo(root))
}

fn build(root: &Path) -> Result<std::path::PathBuf> {
    let target = root.join("target/efficacy");
    cmd::step(
        "build egress-monitor (release, without kernel programs)",
        || {
            cmd::run(
                cargo(root)?
                    .args([
                        "build",
                        "--release",
                        "--package",
                        "monitor",
                        "--bin",
                        "egress-monitor",
                    ])
                    .env("AYA_BUILD_SKIP", "1")
                    .env("CARGO_TARGET_DIR", &target),
            )
        },
    )?;
    Ok(target.join("release/egress-monitor"))
}

/// Replaces what is between the markers of `readme` with `table`.
pub fn splice(readme: &str, table: &str) -> Result<String> {
    let (Some(begin), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        bail!("README.md has no {BEGIN} ... {END} markers");
    };
    if end < begin {
        bail!("README.md: {END} comes before {BEGIN}");
    }
    let head = &readme[..begin + BEGIN.len()];
    let tail = &readme[end..];
    Ok(format!("{head}\n{}\n{tail}", table.trim_end()))
}

pub fn run(root: &Path, opts: &Args) -> Result<()> {
    let readme = if opts.write_readme {
        Readme::Write
    } else if opts.check_readme {
        Readme::Check
    } else {
        Readme::Print
    };
    let args = &opts.passed;
    let bin = build(root)?;
    let mut c = Command::new(&bin);
    // One "schema migrated" line per in-memory store would bury the table.
    c.args(["--log", "info,monitor::store=warn", "efficacy"])
        .args(args);
    if readme != Readme::Print {
        if !args.is_empty() {
            bail!(
                "the README's table is the default run: no extra arguments with --write-readme or --check-readme"
            );
        }
        c.arg("--markdown");
    }
    let out = cmd::step(
        "egress-monitor efficacy (every scenario, 7 days, seeds 1-3)",
        || cmd::output(&mut c),
    )?;
    let path = root.join("README.md");
    match readme {
        Readme::Print => print!("{out}"),
        Readme::Write => {
            let text = fs::read_to_string(&path).context("reading README.md")?;
            fs::write(&path, splice(&text, &out)?).context("writing README.md")?;
            eprintln!("==> README.md: efficacy table written");
        }
        Readme::Check => {
            let text = fs::read_to_string(&path).context("reading README.md")?;
            let wanted = splice(&text, &out)?;
            if wanted != text {
                let old: Vec<&str> = text.lines().collect();
                let new: Vec<&str> = wanted.lines().collect();
                for (i, (a, b)) in old.iter().zip(&new).enumerate() {
                    if a != b {
                        eprintln!("README.md line {}:\n  has:  {a}\n  now:  {b}", i + 1);
                    }
                }
                bail!(
                    "README.md's efficacy table is not what the detector does now: \
                     run `cargo xtask efficacy --write-readme`"
                );
            }
            eprintln!("==> README.md: efficacy table up to date");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_goes_between_the_markers() {
        let readme = format!("# x\n\n{BEGIN}\nold\n{END}\nafter\n");
        let out = splice(&readme, "| a |\n|---|\n").unwrap();
        assert_eq!(out, format!("# x\n\n{BEGIN}\n| a |\n|---|\n{END}\nafter\n"));
        assert_eq!(splice(&out, "| a |\n|---|\n").unwrap(), out, "idempotent");
        assert!(splice("no markers", "t").is_err());
        assert!(splice(&format!("{END}{BEGIN}"), "t").is_err());
        // The repository's README has the markers.
        let text = fs::read_to_string(crate::workspace_root().join("README.md")).unwrap();
        assert!(splice(&text, "t").is_ok());
    }
}

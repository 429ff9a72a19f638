//! `cargo xtask efficacy`: builds the agent (release) and runs `egress-monitor efficacy`, the
//! homeserver scenarios through the detector; `--write-readme` puts its markdown table in
//! README.md between the efficacy markers, and one summary row per population shape
//! ([`SHAPES`]: other seeds, smaller, larger, more phones) between the robustness markers;
//! `--check-readme` fails when the README's tables are not what the detector does now.
//!
//! The harness loads no kernel program, so the binary is built without them
//! (`AYA_BUILD_SKIP=1`: no bpf-linker, no nightly, no root) into its own target directory,
//! leaving the agent's release binary alone.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{bootstrap::Tools, cmd, pins};

pub const BEGIN: &str = "<!-- efficacy:begin -->";
pub const END: &str = "<!-- efficacy:end -->";
pub const ROBUST_BEGIN: &str = "<!-- robustness:begin -->";
pub const ROBUST_END: &str = "<!-- robustness:end -->";

/// Population shapes of the robustness table (`egress-monitor efficacy` options): the
/// default, the default on seeds the detector was never looked at with, then a smaller
/// server, a larger one, and one whose clients are mostly phones. The detector is not tuned
/// to any of them; the table shows what changes with the traffic.
const SHAPES: [&[&str]; 5] = [
    &[],
    &["--seeds", "4,5,6,7,8,9,10"],
    &[
        "--nats",
        "3",
        "--homes",
        "150",
        "--mobiles",
        "200",
        "--federation",
        "15",
    ],
    &[
        "--nats",
        "12",
        "--homes",
        "1000",
        "--mobiles",
        "1500",
        "--federation",
        "60",
    ],
    &["--mobiles", "2000"],
];

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

/// Replaces what is between the efficacy markers of `readme` with `table`.
pub fn splice(readme: &str, table: &str) -> Result<String> {
    splice_between(readme, table, BEGIN, END)
}

/// Replaces what is between `begin` and `end` in `readme` with `table`.
fn splice_between(readme: &str, table: &str, begin_mark: &str, end_mark: &str) -> Result<String> {
    let (Some(begin), Some(end)) = (readme.find(begin_mark), readme.find(end_mark)) else {
        bail!("README.md has no {begin_mark} ... {end_mark} markers");
    };
    if end < begin {
        bail!("README.md: {end_mark} comes before {begin_mark}");
    }
    let head = &readme[..begin + begin_mark.len()];
    let tail = &readme[end..];
    Ok(format!("{head}\n{}\n{tail}", table.trim_end()))
}

/// The robustness table: one summary row per shape.
fn robustness(bin: &Path) -> Result<String> {
    let mut out = String::new();
    for (i, shape) in SHAPES.iter().enumerate() {
        let mut c = Command::new(bin);
        c.args(["--log", "warn", "efficacy", "--summary"])
            .args(*shape);
        if i == 0 {
            c.arg("--summary-header");
        }
        let label = format!("egress-monitor efficacy --summary {}", shape.join(" "));
        out.push_str(&cmd::step(label.trim_end(), || cmd::output(&mut c))?);
    }
    Ok(out)
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
    let tables = |text: &str| -> Result<String> {
        let robust = robustness(&bin)?;
        splice_between(&splice(text, &out)?, &robust, ROBUST_BEGIN, ROBUST_END)
    };
    match readme {
        Readme::Print => print!("{out}"),
        Readme::Write => {
            let text = fs::read_to_string(&path).context("reading README.md")?;
            fs::write(&path, tables(&text)?).context("writing README.md")?;
            eprintln!("==> README.md: efficacy and robustness tables written");
        }
        Readme::Check => {
            let text = fs::read_to_string(&path).context("reading README.md")?;
            let wanted = tables(&text)?;
            if wanted != text {
                let old: Vec<&str> = text.lines().collect();
                let new: Vec<&str> = wanted.lines().collect();
                for (i, (a, b)) in old.iter().zip(&new).enumerate() {
                    if a != b {
                        eprintln!("README.md line {}:\n  has:  {a}\n  now:  {b}", i + 1);
                    }
                }
                bail!(
                    "README.md's efficacy tables are not what the detector does now: \
                     run `cargo xtask efficacy --write-readme`"
                );
            }
            eprintln!("==> README.md: efficacy and robustness tables up to date");
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
        assert!(splice_between(&text, "t", ROBUST_BEGIN, ROBUST_END).is_ok());
    }
}

//! Builds the kernel programs with the pinned nightly and bpf-linker (see toolchains.toml) and
//! leaves the object in `OUT_DIR` for `include_bytes_aligned!`. `AYA_BUILD_SKIP=1` skips it for
//! lint-only runs; `cargo xtask` installs the toolchain and bpf-linker before building.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let pins = manifest_dir.join("../toolchains.toml");
    println!("cargo::rerun-if-changed={}", pins.display());
    println!("cargo::rerun-if-env-changed=EGRESS_MONITOR_EBPF_TOOLCHAIN");
    let toolchain =
        match env::var("EGRESS_MONITOR_EBPF_TOOLCHAIN") {
            Ok(t) => t,
            Err(_) => ebpf_toolchain(&fs::read_to_string(&pins).with_context(|| {
                format!("reading the pinned toolchains from {}", pins.display())
            })?)
            .ok_or_else(|| anyhow!("{}: no [ebpf] toolchain = \"...\" line", pins.display()))?,
        };
    let ebpf_dir = manifest_dir.join("../monitor-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .context("monitor-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [Package {
            name: "monitor-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )?;
    // With AYA_BUILD_SKIP=1 nothing was built: leave an empty object so the agent still
    // compiles for linting, and refuses to run with a clear message.
    let object = PathBuf::from(env::var("OUT_DIR")?).join("monitor");
    if !object.exists() {
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}

/// Reads `toolchain = "..."` under `[ebpf]` (the file is tiny and owned by this repository,
/// so a full TOML parser would only add a build dependency).
fn ebpf_toolchain(pins: &str) -> Option<String> {
    let mut in_ebpf = false;
    for line in pins.lines().map(str::trim) {
        if line.starts_with('[') {
            in_ebpf = line == "[ebpf]";
        } else if in_ebpf && let Some(v) = line.strip_prefix("toolchain") {
            return Some(
                v.trim()
                    .strip_prefix('=')?
                    .trim()
                    .trim_matches('"')
                    .to_owned(),
            );
        }
    }
    None
}

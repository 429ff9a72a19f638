//! `cargo xtask vm-test`: for each kernel, boot a QEMU VM whose initramfs holds static (musl)
//! test binaries and the agent, run them under `vm-init`, and report one line per test and
//! per kernel. Exits non-zero if anything failed, hung, or the kernel died.

mod console;
mod cpio;
mod hosttools;
mod initramfs;
mod kernel;
mod modules;
mod qemu;
mod selftest;
mod vmlinux;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use monitor_common::compat;
use vm_init::protocol::Line;

use crate::{bootstrap::Tools, cmd};

pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// The kernel `cargo xtask test` and a bare `vm-test` use: Debian bookworm's newest 6.1.
pub const DEFAULT_KERNEL: &str = "debian";

pub struct Options {
    /// `debian`, a Debian package name, or a kernel image path (see [`kernel::resolve`]).
    pub kernels: Vec<String>,
    /// Build and run the `tests/` suite and the agent (off: only `fixture`, for quick checks).
    pub suite: bool,
    /// Run the harness's own fixture binary in this mode (`pass`, `fail`, `hang`).
    pub fixture: Option<String>,
    pub timeout_secs: u64,
    pub echo: bool,
    /// Only the test binaries with these names (`lifecycle`, `kernel_support`...); all if empty.
    pub binaries: Vec<String>,
}

pub use selftest::run as self_test;

/// The tests' wait multiplier (`tests/src/time.rs`).
const TIME_SCALE: &str = "EGRESS_TEST_TIME_SCALE";

/// The host's `EGRESS_TEST_TIME_SCALE` if set, else 3 under TCG: emulation runs the agent and
/// the tests about three times slower than this host (measured: the suite took 171-223 s in
/// the VM against 62 s here, build included), and a wait sized for the host would fail a
/// correct agent.
fn time_scale(accel: qemu::Accel) -> String {
    std::env::var(TIME_SCALE).unwrap_or_else(|_| {
        match accel {
            qemu::Accel::Kvm => "1",
            qemu::Accel::Tcg => "3",
        }
        .to_owned()
    })
}

pub fn run(root: &Path, tools: &Tools, opts: &Options) -> Result<()> {
    prerequisites(tools, opts.suite)?;
    let musl_dir = root.join("target").join(MUSL).join("release");
    cmd::step("build vm-init (static musl)", || {
        cmd::run(musl_cargo(tools, root).args(["build", "--release", "-p", "vm-init"]))
    })?;
    let mut tests = Vec::new();
    if let Some(mode) = &opts.fixture {
        if !["pass", "fail", "hang"].contains(&mode.as_str()) {
            bail!("--fixture {mode}: expected pass, fail or hang");
        }
        tests.extend(test_binaries(
            tools,
            root,
            &["-p", "vm-init", "--test", "fixture"],
        )?);
    }
    let host_tools = if opts.suite {
        let c = cmd::step("host programs the tests call, with their libraries", || {
            hosttools::Closure::of_host()
        })?;
        if !c.missing.is_empty() {
            eprintln!(
                "    not on this host (tests using them will fail): {}",
                c.missing.join(" ")
            );
        }
        Some(c)
    } else {
        None
    };
    let (traffic, agent) = if opts.suite {
        tests.extend(test_binaries(tools, root, &["-p", "integration-tests"])?);
        cmd::step("build the agent (static musl)", || {
            cmd::run(musl_cargo(tools, root).args([
                "build",
                "--release",
                "-p",
                "monitor",
                "--bin",
                "egress-monitor",
            ]))
        })?;
        (
            Some(musl_dir.join("traffic")),
            Some(musl_dir.join("egress-monitor")),
        )
    } else {
        (None, None)
    };
    let vm_dir = root.join("target").join("vm");
    let cache = vm_dir.join("kernels");
    fs::create_dir_all(&cache)?;
    let accel = qemu::Accel::detect();
    let mut env = vec![(TIME_SCALE.to_owned(), time_scale(accel))];
    if let Some(mode) = &opts.fixture {
        env.push(("EGRESS_VM_FIXTURE".to_owned(), mode.clone()));
    }
    let mut failed_kernels = Vec::new();
    let mut booted = Vec::new();
    for spec in &opts.kernels {
        let kernel = cmd::step(&format!("kernel {spec}"), || kernel::resolve(spec, &cache))?;
        // Its initramfs, console log and result lines are named by the label: a second run
        // of the same kernel would overwrite the first and print the same lines twice.
        if booted.contains(&kernel.label) {
            eprintln!("==> {spec} is {} again: already run", kernel.label);
            continue;
        }
        booted.push(kernel.label.clone());
        let supported = supported(&kernel.label);
        if !supported {
            let (major, minor) = compat::MIN_KERNEL;
            eprintln!(
                "==> {} is older than the agent's minimum {major}.{minor}: only the `{SUPPORT_TESTS}` \
                 tests run there (the agent must refuse, naming the table's row)",
                kernel.label
            );
        }
        let tests_here: Vec<_> = tests
            .iter()
            .filter(|(name, _)| supported || name == SUPPORT_TESTS)
            .filter(|(name, _)| opts.binaries.is_empty() || opts.binaries.contains(name))
            .cloned()
            .collect();
        let payload = initramfs::Payload {
            init: &musl_dir.join("vm-init"),
            tests: &tests_here,
            traffic: traffic.as_deref(),
            agent: agent.as_deref(),
            doctor_must_pass: supported,
            host_tools: host_tools.as_ref(),
            timeout_secs: opts.timeout_secs,
            env: &env,
        };
        if !one_kernel(&vm_dir, &kernel, &payload, accel, opts.echo)?.passed() {
            failed_kernels.push(kernel.label);
        }
    }
    if !failed_kernels.is_empty() {
        bail!("vm-test failed on: {}", failed_kernels.join(", "));
    }
    Ok(())
}

/// The test binary that checks the compatibility table itself (`tests/tests/kernel_support.rs`).
const SUPPORT_TESTS: &str = "kernel_support";

/// Whether the agent supports a kernel, by the compatibility table's minimum. A label that is
/// not a release (an image given by path) counts as supported: the whole suite runs.
fn supported(label: &str) -> bool {
    compat::parse_release(label).is_none_or(|v| v >= compat::MIN_KERNEL)
}

/// Packs, boots and reports one kernel; what its console said.
fn one_kernel(
    vm_dir: &Path,
    kernel: &kernel::Kernel,
    payload: &initramfs::Payload<'_>,
    accel: qemu::Accel,
    echo: bool,
) -> Result<console::Console> {
    let modules = match &kernel.modules_dir {
        Some(dir) => modules::resolve(dir, &modules::WANTED)?,
        None => Vec::new(),
    };
    let initrd = vm_dir.join(format!("initramfs-{}.cpio", kernel.label));
    cmd::step(&format!("pack {}", initrd.display()), || {
        initramfs::pack(&initrd, payload, &modules).map(|_| ())
    })?;
    let image = cmd::step("uncompressed vmlinux (cached)", || {
        vmlinux::extract(&kernel.image, &kernel.cache_dir)
    })?
    .unwrap_or_else(|| kernel.image.clone());
    let log = vm_dir.join(format!("console-{}.log", kernel.label));
    let boot = qemu::Boot {
        image: &image,
        initrd: &initrd,
        accel,
        // Longer than the init's own per-test timeout, so a hung test is named by the init;
        // this one catches a hung kernel or init.
        silence: Duration::from_secs(payload.timeout_secs + 60),
        log: &log,
        echo,
    };
    eprintln!(
        "==> boot {} ({accel:?}), console in {}",
        kernel.label,
        log.display()
    );
    let (console, took) = qemu::boot(&boot, &kernel.label)?;
    for line in &console.results {
        println!("{line}");
    }
    let error = |message: String| Line::Error {
        kernel: kernel.label.clone(),
        message,
    };
    for e in console.errors.iter().chain(&console.garbled) {
        println!("{}", error(e.clone()));
    }
    if let Some(fatal) = &console.fatal {
        println!("{}", error(format!("kernel died: {fatal}")));
    }
    let (passed, failed) = console.done.unwrap_or_default();
    let verdict = Line::Kernel {
        kernel: kernel.label.clone(),
        ok: console.passed(),
        passed,
        failed,
        secs: took.as_secs_f64(),
    };
    println!("{verdict}");
    Ok(console)
}

/// `cargo` for static musl builds: rusqlite's bundled SQLite is C, compiled by `musl-gcc`.
/// Only compiled: linking stays with Rust's default (`cc` plus the target's self-contained
/// musl objects), because `musl-gcc` as the linker turns the static-pie binary into one
/// that requests `/lib/ld-musl-x86_64.so.1`, and the kernel then fails to execute `/init`
/// with ENOENT ("Failed to execute /init (error -2)").
fn musl_cargo(tools: &Tools, root: &Path) -> Command {
    let mut c = tools.cargo(root);
    c.env("CC_x86_64_unknown_linux_musl", "musl-gcc");
    c.arg("--config").arg(format!("build.target=\"{MUSL}\""));
    c
}

/// Builds test binaries for musl (`cargo test --no-run`) and returns `(target name, path)`.
fn test_binaries(tools: &Tools, root: &Path, select: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    cmd::step(
        &format!("build test binaries {} (static musl)", select.join(" ")),
        || {
            let out = cmd::output(
                musl_cargo(tools, root)
                    .args([
                        "test",
                        "--release",
                        "--no-run",
                        "--message-format=json-render-diagnostics",
                    ])
                    .args(select),
            )?;
            let mut bins = Vec::new();
            for line in out.lines() {
                let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if msg["reason"] == "compiler-artifact" && msg["profile"]["test"] == true {
                    if let (Some(name), Some(exe)) =
                        (msg["target"]["name"].as_str(), msg["executable"].as_str())
                    {
                        bins.push((name.replace('-', "_"), PathBuf::from(exe)));
                    }
                }
            }
            if bins.is_empty() {
                bail!(
                    "cargo test --no-run {} built no test binary",
                    select.join(" ")
                );
            }
            Ok(bins)
        },
    )
}

/// QEMU and the musl target (and musl-gcc for the suite's C code), installed when missing.
fn prerequisites(tools: &Tools, suite: bool) -> Result<()> {
    cmd::step(&format!("rust target {MUSL}"), || {
        cmd::run(Command::new("rustup").args(["target", "add", MUSL, "--toolchain", &tools.stable]))
    })?;
    let mut missing = Vec::new();
    if !cmd::exists("qemu-system-x86_64") {
        missing.push("qemu-system-x86");
    }
    if suite && !cmd::exists("musl-gcc") {
        missing.push("musl-tools");
    }

    if missing.is_empty() {
        return Ok(());
    }
    cmd::step(&format!("apt-get install {}", missing.join(" ")), || {
        if !cmd::is_root() {
            bail!("{} missing: install it (needs root)", missing.join(" "));
        }
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("apt-get install (run apt-get update first if the lists are old)")
    })
}

#[cfg(test)]
mod tests {
    use super::supported;

    #[test]
    fn kernels_below_the_tables_minimum_are_not_supported() {
        assert!(!supported("4.19.0-27-amd64"));
        assert!(!supported("5.9.16"));
        assert!(supported("5.10.0-32-amd64"));
        assert!(supported("6.1.0-56-amd64"));
        assert!(supported("6.12.117+deb13-amd64"));
        // An image given by path: unknown release, the whole suite runs.
        assert!(supported("bzImage"));
    }
}

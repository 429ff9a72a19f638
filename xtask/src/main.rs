//! `cargo xtask`: bootstraps the toolchains and tools, builds, runs and tests egress-monitor.
//! Builds on any stable >= 1.85; everything it builds uses the toolchains pinned in
//! `toolchains.toml`, which it installs itself.

mod bench;
mod bootstrap;
mod build;
mod cmd;
mod e2e;
mod efficacy;
mod install;
mod pins;
mod test;
mod vm;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test egress-monitor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the pinned toolchains, bpf-linker and the Debian packages the tests need.
    Bootstrap,
    /// Build everything in release mode and print the path of the egress-monitor binary.
    Build,
    /// Install the agent as a systemd service: binary, unit, default configuration (kept if
    /// present).
    Install {
        /// Install into this tree instead of the running system (packaging, staging).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Prefix of the binary (`<prefix>/bin/egress-monitor`).
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
    },
    /// Build, then run the agent as root (through sudo when needed) on its default settings.
    Run {
        /// Arguments for `egress-monitor run` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Everything: lint, unit and kernel integration tests on this host, then the kernel tests
    /// on Debian's 6.1 kernel in QEMU (`vm-test`).
    Test {
        /// Skip formatting and clippy checks.
        #[arg(long)]
        no_lint: bool,
        /// Skip the QEMU part (quicker local iterations; CI runs it).
        #[arg(long)]
        no_vm: bool,
        /// Skip the end-to-end scenario (Synapse, nginx, rsyslogd; CI runs it).
        #[arg(long)]
        no_e2e: bool,
        /// Only run integration tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Benchmarks: per-packet cost, throughput ratio, agent CPU and memory.
    Bench {
        /// Repetitions of each A/B pair.
        #[arg(long, default_value_t = 9)]
        rounds: u32,
        /// Only the benchmarks that need no root and no kernel: detector and alert delivery.
        #[arg(long)]
        detector_only: bool,
        /// Skip the detector and alert delivery benchmarks (`--detector-only` runs them alone).
        #[arg(long, conflicts_with = "detector_only")]
        no_detector: bool,
        /// Only the agent's CPU and RSS at 1k / 10k / 100k sockets (`target/bench/scale.json`).
        #[arg(long, conflicts_with = "detector_only")]
        scale_only: bool,
        /// Measure this agent binary instead of building one (e.g. an older build, for a
        /// before/after comparison).
        #[arg(long)]
        agent: Option<std::path::PathBuf>,
    },
    /// Boot each kernel in QEMU and run the root test suite and the agent inside it.
    VmTest {
        /// `debian` (the newest Debian bookworm 6.1 kernel), a Debian package name such as
        /// `linux-image-6.1.0-56-amd64`, or a path to a kernel image. Repeatable.
        #[arg(long = "kernel", default_value = vm::DEFAULT_KERNEL)]
        kernels: Vec<String>,
        /// Only the harness's own fixture tests, not the tests/ suite and the agent.
        #[arg(long)]
        no_suite: bool,
        /// Run the harness fixture in this mode: pass, fail or hang.
        #[arg(long)]
        fixture: Option<String>,
        /// Seconds a test may run before it counts as hung.
        #[arg(long, default_value_t = vm_init::manifest::DEFAULT_TIMEOUT_SECS)]
        timeout: u64,
        /// Echo the VM's serial console.
        #[arg(long)]
        console: bool,
        /// Only this test binary of tests/ (`lifecycle`, `kernel_support`...). Repeatable.
        #[arg(long = "binary")]
        binaries: Vec<String>,
        /// Test the harness itself on the first kernel: a passing, a failing and a hanging
        /// fixture test must be reported as such.
        #[arg(long)]
        self_test: bool,
    },
    /// Ground of the end-to-end scenario: a real Synapse (pip) behind a real nginx (Debian) on
    /// loopback, populated through the client API and read back in bulk; prints what it
    /// measured (also in target/e2e/report.json) and stops both servers.
    E2eSetup(e2e::Args),
    /// The acceptance scenario: the release agent watches a real Synapse behind nginx
    /// through learning, normal use, a restart and an account takeover's bulk download;
    /// its OCSF alert must reach a real rsyslogd within 60 s, naming the service, the
    /// attacker's address, the rule and the bytes, with no false alert. Writes
    /// target/e2e/report.json; exits non-zero naming each failed expectation.
    E2e(e2e::RunArgs),
    /// Detection efficacy: the week-long homeserver scenarios (attacks, benign events) for
    /// seeds 1-3 through the detector (release build, no root, no kernel): what is caught,
    /// how soon, and the false alerts.
    Efficacy(efficacy::Args),
    /// Write a synthetic trace for `egress-monitor replay`: a two-day one of a messaging
    /// server (normal, bulk-download, upload or slow-drip), or with `--homeserver` a
    /// realistic homeserver week (any `efficacy` scenario).
    Trace {
        scenario: String,
        /// Output file (JSON lines).
        #[arg(long, default_value = "trace.jsonl")]
        out: PathBuf,
        /// More options for `egress-monitor synthesize` (after `--`): `--homeserver`,
        /// `--days N`, `--seed N`, `--homes N`, `--mobiles N`, `--nats N`, `--federation N`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Command::Bootstrap => bootstrap::all(&root).map(|_| ()),
        Command::Build => {
            let tools = bootstrap::all(&root)?;
            let bin = build::release(&root, &tools)?;
            println!("{}", bin.display());
            Ok(())
        }
        Command::Install { root: dest, prefix } => {
            let tools = bootstrap::all(&root)?;
            install::run(&root, &tools, &install::Options { root: dest, prefix })
        }
        Command::Run { args } => {
            let tools = bootstrap::all(&root)?;
            let bin = build::release(&root, &tools)?;
            build::run_agent(&bin, &args)
        }
        Command::Test {
            no_lint,
            no_vm,
            no_e2e,
            filter,
        } => {
            let tools = bootstrap::all(&root)?;
            let opts = test::Options {
                lint: !no_lint,
                filter: filter.as_deref(),
                vm: !no_vm,
                e2e: !no_e2e,
            };
            test::all(&root, &tools, &opts)
        }
        Command::Bench {
            rounds,
            detector_only,
            scale_only,
            no_detector,
            agent,
        } => {
            let tools = bootstrap::all(&root)?;
            if detector_only {
                return bench::detector_only(&root, &tools);
            }
            let bin = match agent {
                Some(bin) => bin,
                None => build::release(&root, &tools)?,
            };
            if scale_only {
                return bench::scale_only(&root, &tools, &bin);
            }
            bench::all(&root, &tools, &bin, rounds, !no_detector)
        }
        Command::VmTest {
            kernels,
            no_suite,
            fixture,
            timeout,
            console,
            self_test,
            binaries,
        } => {
            let tools = bootstrap::all(&root)?;
            if self_test {
                return vm::self_test(&kernels[0], console);
            }
            let opts = vm::Options {
                kernels,
                suite: !no_suite,
                fixture,
                timeout_secs: timeout,
                echo: console,
                binaries,
            };
            vm::run(&root, &tools, &opts)
        }
        Command::E2eSetup(args) => e2e::setup(&root, &args),
        Command::E2e(args) => {
            let tools = bootstrap::all(&root)?;
            e2e::command(&root, &tools, &args.options())
        }
        Command::Efficacy(args) => efficacy::run(&root, &args),
        Command::Trace {
            scenario,
            out,
            args,
        } => trace(&root, &scenario, &out, &args),
    }
}

/// `cargo xtask trace`: the release binary's `synthesize` into `out`.
fn trace(root: &Path, scenario: &str, out: &Path, args: &[String]) -> Result<()> {
    let tools = bootstrap::all(root)?;
    let bin = build::release(root, &tools)?;
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let status = std::process::Command::new(&bin)
        .args(["synthesize", scenario])
        .args(args)
        .stdout(file)
        .status()
        .context("running egress-monitor synthesize")?;
    anyhow::ensure!(
        status.success(),
        "egress-monitor synthesize {scenario} failed"
    );
    eprintln!(
        "==> {} written; replay it with: {} replay {}",
        out.display(),
        bin.display(),
        out.display()
    );
    Ok(())
}

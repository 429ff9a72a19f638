//! Installs what the build and the tests need, idempotently: the pinned toolchains (with
//! rust-src, rustfmt, clippy), a bpf-linker linked against the pinned nightly's own libLLVM
//! (cached: the second run costs nothing), and the Debian packages the tests use.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, pins};

/// Debian packages the test suite and benchmarks use: bpftool (prove programs are detached,
/// read BPF run-time stats), iperf3 (throughput benchmark), iproute2 (network namespaces),
/// rsyslog and rsyslog-gnutls (a real syslog receiver, over TCP and TLS, for the syslog sink
/// tests; each test starts its own rsyslogd on loopback), xz-utils and zstd (`vm-test`
/// decompresses Debian's kernels: xz up to 6.1, zstd from 6.12; its unit tests use both).
const DEBIAN_PACKAGES: [&str; 7] = [
    "bpftool",
    "iperf3",
    "iproute2",
    "rsyslog",
    "rsyslog-gnutls",
    "xz-utils",
    "zstd",
];

/// Debian's maintainer scripts start a newly installed daemon through `invoke-rc.d`, which
/// asks this script first; exit status 101 means "do not start it".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Keeps `apt-get install` from starting services (rsyslog's postinst would start the
/// host's own rsyslogd: a daemon nobody asked for, reading /dev/log and writing the system
/// logs, left running on a developer's or CI's machine). Puts a `policy-rc.d` in place only
/// if there is none (an existing one is the machine's policy and stays), and removes its own
/// when dropped, so also when the install fails.
struct NoServiceStarts {
    path: PathBuf,
    created: bool,
}

impl NoServiceStarts {
    fn install(path: &Path) -> Result<Self> {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};

        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(path);
        match file {
            Ok(mut f) => {
                // Created: from here on, dropping the guard removes it.
                let guard = Self {
                    path: path.to_owned(),
                    created: true,
                };
                f.write_all(
                    b"#!/bin/sh\n# Written by `cargo xtask`: no service starts during its apt-get install.\nexit 101\n",
                )
                .with_context(|| format!("writing {}", path.display()))?;
                Ok(guard)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Self {
                path: path.to_owned(),
                created: false,
            }),
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.created
            && let Err(e) = fs::remove_file(&self.path)
        {
            eprintln!(
                "    could not remove {}: {e} (remove it by hand)",
                self.path.display()
            );
        }
    }
}

/// The installed, pinned tools.
pub struct Tools {
    pub stable: String,
    pub nightly: String,
    /// Directory holding the `bpf-linker` binary.
    pub bpf_linker_bin: PathBuf,
}

impl Tools {
    /// `cargo` of the pinned stable toolchain, with bpf-linker on PATH, run from `root`.
    pub fn cargo(&self, root: &Path) -> Command {
        self.cargo_on(&self.stable, root)
    }

    /// `cargo` of the pinned nightly (for the kernel crate's lints).
    pub fn nightly_cargo(&self, root: &Path) -> Command {
        self.cargo_on(&self.nightly, root)
    }

    fn cargo_on(&self, toolchain: &str, root: &Path) -> Command {
        let mut c = Command::new("rustup");
        c.args(["run", toolchain, "cargo"]).current_dir(root);
        // Variables set for `cargo xtask` itself would pin the outer toolchain.
        for var in [
            "RUSTUP_TOOLCHAIN",
            "CARGO",
            "RUSTC",
            "RUSTDOC",
            "CARGO_TARGET_DIR",
        ] {
            c.env_remove(var);
        }
        c.env("PATH", self.path_with_linker());
        c.env("EGRESS_MONITOR_EBPF_TOOLCHAIN", &self.nightly);
        c
    }

    pub fn path_with_linker(&self) -> std::ffi::OsString {
        let mut paths = vec![self.bpf_linker_bin.clone()];
        if let Some(p) = env::var_os("PATH") {
            paths.extend(env::split_paths(&p));
        }
        env::join_paths(paths).unwrap_or_default()
    }
}

pub fn all(root: &Path) -> Result<Tools> {
    let pins = cmd::step("read toolchains.toml", || pins::read(root))?;
    cmd::step("check rustup", || {
        if !cmd::exists("rustup") {
            bail!(
                "rustup is not on PATH: it is needed to install the pinned toolchains \
                 (install it with your distribution's rustup package or from rustup.rs)"
            );
        }
        Ok(())
    })?;
    toolchain(&pins.userspace.toolchain, &["rustfmt", "clippy"])?;
    toolchain(&pins.ebpf.toolchain, &["rust-src", "rustfmt", "clippy"])?;
    let bpf_linker_bin = bpf_linker(
        &pins.bpf_linker.version,
        &pins.userspace.toolchain,
        &pins.ebpf.toolchain,
    )?;
    debian_packages()?;
    Ok(Tools {
        stable: pins.userspace.toolchain,
        nightly: pins.ebpf.toolchain,
        bpf_linker_bin,
    })
}

fn toolchain(name: &str, components: &[&str]) -> Result<()> {
    cmd::step(
        &format!("toolchain {name} with {}", components.join(", ")),
        || {
            let installed = Command::new("rustup")
                .args(["component", "list", "--installed", "--toolchain", name])
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            if let Some(list) = installed {
                let have = |c: &str| {
                    list.lines()
                        .any(|l| l.starts_with(&format!("{c}-")) || l == c)
                };
                if components.iter().all(|c| have(c)) {
                    eprintln!("    already installed");
                    return Ok(());
                }
            }
            cmd::run(
                Command::new("rustup")
                    .args([
                        "toolchain",
                        "install",
                        name,
                        "--profile",
                        "minimal",
                        "--no-self-update",
                    ])
                    .arg("--component")
                    .arg(components.join(",")),
            )
            .with_context(|| {
                format!(
                    "downloading toolchain {name} (is the rustup distribution server reachable?)"
                )
            })
        },
    )
}

fn cache_dir() -> PathBuf {
    env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("egress-monitor")
}

/// The LLVM major version of a toolchain's rustc ("LLVM version: 23.1.4" -> 23).
pub fn llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
}

fn bpf_linker(version: &str, stable: &str, nightly: &str) -> Result<PathBuf> {
    let dir = cache_dir().join(format!("bpf-linker-{version}-{nightly}"));
    let bin_dir = dir.join("bin");
    cmd::step(
        &format!("bpf-linker {version} linked against {nightly}'s LLVM"),
        || {
            let bin = bin_dir.join("bpf-linker");
            if Command::new(&bin)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                eprintln!("    cached at {}", bin.display());
                return Ok(());
            }
            let vv = cmd::output(Command::new("rustup").args(["run", nightly, "rustc", "-vV"]))?;
            let major = llvm_major(&vv).context("no LLVM version in `rustc -vV`")?;
            let sysroot = cmd::output(
                Command::new("rustup").args(["run", nightly, "rustc", "--print", "sysroot"]),
            )?;
            let lib = PathBuf::from(sysroot.trim()).join("lib");
            // bpf-linker's build links `-lLLVM` from $LLVM_PREFIX/lib; the toolchain ships the
            // library under versioned names only, so give it both names it looks for.
            let llvm_lib = dir.join("llvm").join("lib");
            fs::create_dir_all(&llvm_lib)?;
            let mut found = false;
            for entry in fs::read_dir(&lib).with_context(|| format!("listing {}", lib.display()))? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("libLLVM") && name.contains(".so") {
                    found = true;
                    for link in [name.as_str(), "libLLVM.so"] {
                        let at = llvm_lib.join(link);
                        let _ = fs::remove_file(&at);
                        std::os::unix::fs::symlink(entry.path(), &at)
                            .with_context(|| format!("linking {}", at.display()))?;
                    }
                }
            }
            if !found {
                bail!(
                    "no libLLVM shared library in {} (is {nightly} complete?)",
                    lib.display()
                );
            }
            eprintln!("    building bpf-linker {version} with llvm-{major} (about 1-2 minutes)");
            cmd::run(
                Command::new("rustup")
                    .args(["run", stable, "cargo", "install", "bpf-linker", "--locked"])
                    .args(["--version", version, "--no-default-features", "--features"])
                    .arg(format!("llvm-{major}"))
                    .arg("--root")
                    .arg(&dir)
                    .env("LLVM_PREFIX", dir.join("llvm"))
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("CARGO_TARGET_DIR"),
            )
            .context("cargo install bpf-linker (is crates.io reachable?)")
        },
    )?;
    Ok(bin_dir)
}

fn debian_packages() -> Result<()> {
    cmd::step(
        &format!("Debian packages: {}", DEBIAN_PACKAGES.join(" ")),
        || apt_install(&DEBIAN_PACKAGES),
    )
}

/// True if dpkg says `package` is installed.
pub fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs the Debian packages of `packages` that are missing, without starting any
/// service they ship (see [`NoServiceStarts`]). Without root or apt-get it only says what
/// is missing.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("    already installed");
        return Ok(());
    }
    if !cmd::is_root() || !cmd::exists("apt-get") {
        eprintln!(
            "    not installed: {} (needs root and apt-get); tests that use them will say so",
            missing.join(" ")
        );
        return Ok(());
    }
    cmd::run(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get update")?;
    let _no_service_starts = NoServiceStarts::install(Path::new(POLICY_RC_D))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {}", missing.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let vv =
            "rustc 1.101.0-nightly (92ffebece 2026-10-28)\nbinary: rustc\nLLVM version: 23.1.4\n";
        assert_eq!(llvm_major(vv), Some(23));
        assert_eq!(llvm_major("rustc 1.0"), None);
    }

    #[test]
    fn policy_rc_d_is_added_for_the_install_only_and_an_existing_one_is_kept() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = env::temp_dir().join(format!("xtask-policy-rc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy-rc.d");
        {
            let _guard = NoServiceStarts::install(&path).unwrap();
            let script = fs::read_to_string(&path).unwrap();
            assert!(script.starts_with("#!/bin/sh\n") && script.ends_with("exit 101\n"));
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "executable: {mode:o}");
            let status = Command::new(&path).status().unwrap();
            assert_eq!(status.code(), Some(101), "invoke-rc.d: do not start");
        }
        assert!(!path.exists(), "removed after the install");

        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        drop(NoServiceStarts::install(&path).unwrap());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "#!/bin/sh\nexit 0\n",
            "the machine's own policy stays"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}

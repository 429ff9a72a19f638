//! Kernels to boot: Debian bookworm's 6.1 by default (downloaded with `apt-get download`,
//! unpacked with `dpkg -x`, cached under `target/vm/kernels/<release>/`, so a second run
//! downloads nothing), the newest kernel of another Debian release (`debian:bullseye` is
//! 5.10, `debian:trixie` 6.12: read from apt lists of its own under `target/vm/apt/`, the
//! host's apt configuration untouched), a `.deb`, or any kernel image given by path.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// A kernel ready to boot.
pub struct Kernel {
    /// `uname -r` when known (Debian), else the image's file name: a label for result lines.
    pub label: String,
    pub image: PathBuf,
    /// `lib/modules/<release>` of the package, when the kernel came with one.
    pub modules_dir: Option<PathBuf>,
    /// Where files derived from this kernel (its uncompressed `vmlinux`) are cached.
    pub cache_dir: PathBuf,
}

/// The package name Debian gives the 6.1 images: `linux-image-6.1.0-<abi>-amd64`.
fn abi_of(package: &str) -> Option<u32> {
    package
        .strip_prefix("linux-image-6.1.0-")?
        .strip_suffix("-amd64")?
        .parse()
        .ok()
}

/// The numbers in a kernel package's version, in order, for comparing two: `5.10.0-32` is
/// `[5, 10, 0, 32]`, `6.12.117+deb13` is `[6, 12, 117, 13]`.
fn version_key(package: &str) -> Vec<u64> {
    package
        .strip_prefix("linux-image-")
        .unwrap_or(package)
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The newest generic amd64 kernel image package in `apt-cache search` output (one
/// `name - description` per line) whose name `matches`: not the cloud, realtime, debug or
/// unsigned flavours, not the meta-packages (`linux-image-amd64`, `linux-image-6.12-amd64`).
fn newest(search_output: &str, matches: impl Fn(&str) -> bool) -> Option<String> {
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .filter(|p| {
            !["-cloud-", "-rt-", "-dbg", "-unsigned"]
                .iter()
                .any(|f| p.contains(f))
        })
        // A real image has its ABI number after the version: at least four numbers.
        .filter(|p| version_key(p).len() >= 4)
        .filter(|p| matches(p))
        .max_by_key(|p| version_key(p))
        .map(str::to_owned)
}

/// The newest `linux-image-6.1.0-*-amd64` (bookworm's own kernel).
pub fn newest_package(search_output: &str) -> Option<String> {
    newest(search_output, |p| abi_of(p).is_some())
}

/// Debian releases whose kernels `debian:<suite>` fetches, with the kernel they ship.
pub const SUITES: [(&str, &str); 3] = [
    ("bullseye", "5.10"),
    ("bookworm", "6.1"),
    ("trixie", "6.12"),
];

/// `apt-get`/`apt-cache` reading one Debian suite's lists from `dir` instead of the host's
/// configuration: the host's sources stay untouched, and any Debian release works.
struct SuiteApt {
    dir: PathBuf,
}

impl SuiteApt {
    fn new(suite: &str, vm_dir: &Path) -> Result<Self> {
        if !SUITES.iter().any(|(s, _)| *s == suite) {
            bail!(
                "debian:{suite}: unknown Debian release (known: {})",
                SUITES.map(|(s, k)| format!("{s} ({k})")).join(", ")
            );
        }
        let dir = vm_dir.join("apt").join(suite);
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        fs::write(
            dir.join("sources.list"),
            format!("deb http://deb.debian.org/debian {suite} main\n"),
        )?;
        Ok(Self { dir })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for (key, value) in [
            ("Dir::Etc::SourceList", self.dir.join("sources.list")),
            ("Dir::Etc::SourceParts", self.dir.join("none")),
            ("Dir::State::Lists", self.dir.join("lists")),
            ("Dir::Cache", self.dir.join("cache")),
            ("Dir::State::status", PathBuf::from("/dev/null")),
        ] {
            c.arg("-o").arg(format!("{key}={}", value.display()));
        }
        // The lists are this run's own files: no sandbox user needs to write them, and only
        // the package index is wanted (not the translations and AppStream metadata).
        c.args(["-o", "APT::Sandbox::User=root"]);
        c.args([
            "-o",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
        ]);
        c.args([
            "-o",
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
        ]);
        c.args(["-o", "Acquire::Languages=none"]);
        c
    }
}

/// Resolves a `--kernel` spec: `debian` (the newest bookworm 6.1 image), a Debian package
/// name (`linux-image-6.1.0-56-amd64`), a `linux-image-*.deb` file (any release, e.g. one
/// from a newer Debian, with its modules), or a path to a kernel image.
pub fn resolve(spec: &str, cache: &Path) -> Result<Kernel> {
    if let Some(suite) = spec.strip_prefix("debian:") {
        let vm_dir = cache.parent().unwrap_or(cache);
        let apt = SuiteApt::new(suite, vm_dir)?;
        cmd::step(&format!("apt-get update (debian {suite} lists)"), || {
            cmd::run(apt.command("apt-get").args(["update", "-q"]))
        })?;
        let search = cmd::output(apt.command("apt-cache").args([
            "search",
            "--names-only",
            "^linux-image-",
        ]))?;
        let package = newest(&search, |_| true)
            .with_context(|| format!("no linux-image-*-amd64 package in Debian {suite}"))?;
        return debian(&package, cache, Some(&apt));
    }
    if spec == "debian" {
        let search = cmd::output(Command::new("apt-cache").args([
            "search",
            "--names-only",
            r"^linux-image-6\.1\.0-[0-9]+-amd64$",
        ]))
        .context("apt-cache search (is this a Debian bookworm host with apt lists?)")?;
        let package = newest_package(&search).context(
            "no linux-image-6.1.0-*-amd64 in the apt lists (run apt-get update, or give --kernel PATH)",
        )?;
        return debian(&package, cache, None);
    }
    if abi_of(spec).is_some() {
        return debian(spec, cache, None);
    }
    if Path::new(spec).extension().is_some_and(|e| e == "deb") {
        return deb_file(Path::new(spec), cache);
    }
    let image = PathBuf::from(spec);
    let Ok(meta) = fs::metadata(&image) else {
        bail!(
            "--kernel {spec}: not `debian`, `debian:<release>`, a linux-image-6.1.0-N-amd64 \
             package, a .deb, or a file"
        );
    };
    let label = image
        .file_name()
        .map_or_else(|| spec.to_owned(), |n| n.to_string_lossy().into_owned());
    // Keyed by size too: a rebuilt image at the same path must not reuse an old vmlinux.
    let cache_dir = cache.join("local").join(format!("{label}-{}", meta.len()));
    Ok(Kernel {
        label,
        image,
        modules_dir: None,
        cache_dir,
    })
}

/// Downloads (with the host's apt, or a suite's own lists) and unpacks a Debian kernel
/// package once; later calls reuse the cache.
fn debian(package: &str, cache: &Path, apt: Option<&SuiteApt>) -> Result<Kernel> {
    let release = package
        .strip_prefix("linux-image-")
        .context("not a linux-image package")?;
    let dir = cache.join(release);
    let done = dir.join(".unpacked");
    if done.exists() {
        eprintln!("    {package}: cached in {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(&dir);
        let download = cache.join("download");
        fs::create_dir_all(&download)?;
        cmd::step(&format!("apt-get download {package}"), || {
            let mut c = apt.map_or_else(|| Command::new("apt-get"), |a| a.command("apt-get"));
            cmd::run(c.args(["download", "-q", package]).current_dir(&download))
        })?;
        let deb = fs::read_dir(&download)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
        cmd::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&dir))?;
        // The unpacked tree is the cache; the .deb (70 MB) is not needed any more.
        fs::remove_file(&deb)?;
        fs::write(&done, package)?;
    }
    let image = dir.join("boot").join(format!("vmlinuz-{release}"));
    if !image.is_file() {
        bail!("{package} has no {}", image.display());
    }
    Ok(Kernel {
        label: release.to_owned(),
        image,
        modules_dir: modules_dir(&dir, release),
        cache_dir: dir,
    })
}

/// Unpacks a kernel `.deb` once (keyed by its file name) and finds its image and modules.
fn deb_file(deb: &Path, cache: &Path) -> Result<Kernel> {
    let stem = deb
        .file_stem()
        .context("a .deb path with a file name")?
        .to_string_lossy()
        .into_owned();
    let dir = cache.join("deb").join(&stem);
    let done = dir.join(".unpacked");
    if !done.exists() {
        let _ = fs::remove_dir_all(&dir);
        // dpkg -x makes the last directory only ("tar subprocess returned error exit status 2").
        fs::create_dir_all(&dir)?;
        cmd::run(Command::new("dpkg").arg("-x").arg(deb).arg(&dir))?;
        fs::write(&done, &stem)?;
    }
    let image = fs::read_dir(dir.join("boot"))
        .with_context(|| format!("{} has no boot/", deb.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{} has no boot/vmlinuz-*", deb.display()))?;
    let release = image
        .file_name()
        .and_then(|n| {
            n.to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .context("vmlinuz- file name")?;
    Ok(Kernel {
        modules_dir: modules_dir(&dir, &release),
        label: release,
        image,
        cache_dir: dir,
    })
}

/// An unpacked package's modules: `lib/modules/<release>`, or `usr/lib/modules/<release>`
/// since Debian trixie's merged `/usr`.
fn modules_dir(unpacked: &Path, release: &str) -> Option<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| unpacked.join(d).join(release))
        .find(|d| d.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_abi_wins_numerically() {
        let search = "linux-image-6.1.0-9-amd64 - Linux 6.1 for 64-bit PCs (signed)\n\
                      linux-image-6.1.0-56-amd64 - Linux 6.1 for 64-bit PCs (signed)\n\
                      linux-image-6.1.0-56-amd64-unsigned - Linux 6.1 (unsigned)\n\
                      linux-image-6.1.0-10-amd64 - Linux 6.1 for 64-bit PCs (signed)\n";
        assert_eq!(
            newest_package(search).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(newest_package(""), None);
    }

    #[test]
    fn a_suites_newest_generic_image_is_chosen() {
        let bullseye = "linux-image-5.10.0-9-amd64 - Linux 5.10 for 64-bit PCs (signed)\n\
                        linux-image-5.10.0-32-amd64 - Linux 5.10 for 64-bit PCs (signed)\n\
                        linux-image-5.10.0-33-cloud-amd64 - Linux 5.10 for x86-64 cloud\n\
                        linux-image-5.10.0-33-rt-amd64 - Linux 5.10 PREEMPT_RT\n\
                        linux-image-amd64 - Linux for 64-bit PCs (meta-package)\n\
                        linux-image-5.10.0-34-amd64-dbg - Debug symbols\n";
        assert_eq!(
            newest(bullseye, |_| true).as_deref(),
            Some("linux-image-5.10.0-32-amd64")
        );
        let trixie = "linux-image-6.12-amd64 - Linux for 64-bit PCs (meta-package)\n\
                      linux-image-6.12.117+deb13-amd64 - Linux 6.12 for 64-bit PCs (signed)\n\
                      linux-image-6.12.99+deb13-amd64 - Linux 6.12 for 64-bit PCs (signed)\n";
        assert_eq!(
            newest(trixie, |_| true).as_deref(),
            Some("linux-image-6.12.117+deb13-amd64")
        );
    }

    #[test]
    fn modules_are_found_under_lib_or_merged_usr() {
        let dir = std::env::temp_dir().join(format!("xtask-modules-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(modules_dir(&dir, "6.12.1"), None);
        fs::create_dir_all(dir.join("usr/lib/modules/6.12.1")).unwrap();
        assert_eq!(
            modules_dir(&dir, "6.12.1"),
            Some(dir.join("usr/lib/modules/6.12.1"))
        );
        fs::create_dir_all(dir.join("lib/modules/6.1.0")).unwrap();
        assert_eq!(
            modules_dir(&dir, "6.1.0"),
            Some(dir.join("lib/modules/6.1.0"))
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unknown_debian_release_is_refused_with_the_known_ones() {
        let dir = std::env::temp_dir().join(format!("xtask-suite-{}", std::process::id()));
        let err = resolve("debian:hamm", &dir.join("kernels")).err().unwrap();
        let text = format!("{err:#}");
        assert!(
            text.contains("hamm") && text.contains("bullseye (5.10)"),
            "{text}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}

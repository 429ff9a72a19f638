//! Kernels to boot: Debian bookworm's 6.1 by default (downloaded with `apt-get download`,
//! unpacked with `dpkg -x`, cached under `target/vm/kernels/<release>/`, so a second run
//! downloads nothing), or any kernel image given by path.

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

/// The newest `linux-image-6.1.0-*-amd64` in `apt-cache search` output (one
/// `name - description` per line); unsigned and signed flavours have the same name.
pub fn newest_package(search_output: &str) -> Option<String> {
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| Some((abi_of(p)?, p)))
        .max_by_key(|(abi, _)| *abi)
        .map(|(_, p)| p.to_owned())
}

/// Resolves a `--kernel` spec: `debian` (the newest bookworm 6.1 image), a Debian package
/// name (`linux-image-6.1.0-56-amd64`), a `linux-image-*.deb` file (any release, e.g. one
/// from a newer Debian, with its modules), or a path to a kernel image.
pub fn resolve(spec: &str, cache: &Path) -> Result<Kernel> {
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
        return debian(&package, cache);
    }
    if abi_of(spec).is_some() {
        return debian(spec, cache);
    }
    if Path::new(spec).extension().is_some_and(|e| e == "deb") {
        return deb_file(Path::new(spec), cache);
    }
    let image = PathBuf::from(spec);
    let Ok(meta) = fs::metadata(&image) else {
        bail!("--kernel {spec}: not `debian`, a linux-image-6.1.0-N-amd64 package, or a file");
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

/// Downloads and unpacks a Debian kernel package once; later calls reuse the cache.
fn debian(package: &str, cache: &Path) -> Result<Kernel> {
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
            cmd::run(
                Command::new("apt-get")
                    .args(["download", "-q", package])
                    .current_dir(&download),
            )
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
        modules_dir: Some(dir.join("lib/modules").join(release)),
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
    let modules_dir = dir.join("lib/modules").join(&release);
    Ok(Kernel {
        label: release,
        image,
        modules_dir: modules_dir.is_dir().then_some(modules_dir),
        cache_dir: dir,
    })
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
}

//! `cargo xtask install`: the agent as a systemd service. Installs the release binary, the
//! unit (`deploy/egress-monitor.service`, its `@BINDIR@` replaced) and, unless one is there
//! already, the commented default configuration as `/etc/egress-monitor/config.toml`.
//! `--root DIR` installs into a staging tree instead of `/` (packaging, tests).

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{bootstrap::Tools, build, cmd};

pub struct Options {
    /// The tree to install into (`/` for the running system).
    pub root: PathBuf,
    /// Where the binary goes, under `root` (`/usr/local`: `bin/egress-monitor`).
    pub prefix: PathBuf,
}

const UNIT: &str = "egress-monitor.service";

/// The unit text with the binary's directory filled in.
pub fn unit_text(template: &str, bin_dir: &Path) -> Result<String> {
    let dir = bin_dir.to_str().context("a UTF-8 binary directory")?;
    if dir.chars().any(char::is_whitespace) {
        bail!("{dir}: systemd's ExecStart would split a path with whitespace");
    }
    if !template.contains("@BINDIR@") {
        bail!("the unit template has no @BINDIR@");
    }
    Ok(template.replace("@BINDIR@", dir))
}

/// `root` joined with an absolute `path` (`/etc/x` under `/tmp/r` is `/tmp/r/etc/x`).
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Through a temporary name: a running binary cannot be overwritten in place (ETXTBSY),
    // and a half-written unit must never be what systemd reads.
    let tmp = path.with_extension("xtask-new");
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))?;
    eprintln!("    {}", path.display());
    Ok(())
}

pub fn run(repo: &Path, tools: &Tools, opts: &Options) -> Result<()> {
    let bin = build::release(repo, tools)?;
    let bin_dir = opts.prefix.join("bin");
    cmd::step(&format!("install into {}", opts.root.display()), || {
        write(
            &under(&opts.root, &bin_dir.join("egress-monitor")),
            &fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?,
            0o755,
        )?;
        let template = fs::read_to_string(repo.join("deploy").join(UNIT))?;
        write(
            &under(&opts.root, &Path::new("/etc/systemd/system").join(UNIT)),
            unit_text(&template, &bin_dir)?.as_bytes(),
            0o644,
        )?;
        let config = under(&opts.root, Path::new("/etc/egress-monitor/config.toml"));
        if config.exists() {
            eprintln!("    {} kept (yours)", config.display());
        } else {
            write(
                &config,
                &fs::read(repo.join("monitor/config/default.toml"))?,
                0o644,
            )?;
        }
        Ok(())
    })?;
    if opts.root == Path::new("/") && Path::new("/run/systemd/system").is_dir() {
        cmd::run(Command::new("systemctl").arg("daemon-reload"))?;
        eprintln!("==> start it: systemctl enable --now egress-monitor");
    } else {
        eprintln!(
            "==> systemd is not running this tree: enable {UNIT} where it is (`systemctl enable --now egress-monitor`)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_binary_directory_is_filled_in() {
        let template = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/egress-monitor.service"),
        )
        .unwrap();
        let unit = unit_text(&template, Path::new("/usr/local/bin")).unwrap();
        assert!(unit.contains(
            "\nExecStart=/usr/local/bin/egress-monitor --config /etc/egress-monitor/config.toml run"
        ));
        assert!(!unit.contains("@BINDIR@"));
        assert!(unit_text(&template, Path::new("/opt/my dir/bin")).is_err());
        assert!(unit_text("[Service]\n", Path::new("/usr/bin")).is_err());
    }

    #[test]
    fn paths_land_under_the_staging_root() {
        assert_eq!(
            under(Path::new("/tmp/r"), Path::new("/etc/x")),
            PathBuf::from("/tmp/r/etc/x")
        );
        assert_eq!(
            under(Path::new("/"), Path::new("/etc/x")),
            PathBuf::from("/etc/x")
        );
    }
}

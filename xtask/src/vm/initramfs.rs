//! Packing one initramfs: the init, `/dev/console`, the kernel's modules, the test binaries,
//! the agent, and the `/manifest` that tells the init what to do with them.

use std::{fs, io::BufWriter, path::Path};

use anyhow::{Context as _, Result};
use vm_init::manifest::{Manifest, RunCommand};

use super::{cpio::Writer, hosttools::Closure, modules::Module};

/// A minimal `/etc`: the tests expect `root` to have a name (owner attribution prints the
/// user), `nobody` to exist (the unprivileged-run test), and `localhost` to resolve (the
/// allowlist test resolves it through the agent).
const ETC: [(&str, &str); 4] = [
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    ),
    ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    (
        "etc/hosts",
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    ),
    (
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files\n",
    ),
];

/// The static binaries that go in.
pub struct Payload<'a> {
    pub init: &'a Path,
    /// libtest binaries: `(name, path)`, installed as `/t/deps/<name>`.
    pub tests: &'a [(String, std::path::PathBuf)],
    /// The `traffic` helper: the tests look for it one directory above their own.
    pub traffic: Option<&'a Path>,
    pub agent: Option<&'a Path>,
    /// Smoke-run `doctor` (must exit 0): not on a kernel below the minimum, where it must
    /// fail (checked by the `kernel_support` tests).
    pub doctor_must_pass: bool,
    /// Host programs the tests call, with their libraries.
    pub host_tools: Option<&'a Closure>,
    pub timeout_secs: u64,
    /// Extra environment for every test.
    pub env: &'a [(String, String)],
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes the archive to `out` and returns the manifest it holds.
pub fn pack(out: &Path, payload: &Payload<'_>, modules: &[Module]) -> Result<Manifest> {
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = Writer::new(BufWriter::new(file));
    let mut manifest = Manifest {
        timeout_secs: payload.timeout_secs,
        ..Manifest::default()
    };
    w.file("init", 0o755, &read(payload.init)?)?;
    // For `init=/sbin/init` habits: the same binary.
    w.symlink("sbin/init", "/init")?;
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.dir("root", 0o700)?;
    for (path, text) in ETC {
        w.file(path, 0o644, text.as_bytes())?;
    }
    if let Some(tools) = payload.host_tools {
        for (at, real) in &tools.files {
            let mode = fs::metadata(real).map_or(0o755, |m| {
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
            });
            w.file(at, mode, &read(real)?)?;
        }
        for (link, target) in &tools.links {
            w.symlink(link, target)?;
        }
    }
    for m in modules {
        let path = format!("lib/modules/{}.ko", m.name);
        w.file(&path, 0o644, &m.data)?;
        manifest.modules.push(format!("/{path}"));
    }
    for (name, path) in payload.tests {
        let at = format!("t/deps/{name}");
        w.file(&at, 0o755, &read(path)?)?;
        manifest.tests.push(format!("/{at}"));
    }
    if let Some(traffic) = payload.traffic {
        w.file("t/traffic", 0o755, &read(traffic)?)?;
    }
    if let Some(agent) = payload.agent {
        w.file("bin/egress-monitor", 0o755, &read(agent)?)?;
        manifest
            .env
            .push(("EGRESS_MONITOR_BIN".into(), "/bin/egress-monitor".into()));
        // Smoke: the static agent starts in this kernel, and `doctor` finds what it needs
        // (programs load, cgroup v2, BTF) and exits 0.
        let smoke: &[(&str, &str)] = if payload.doctor_must_pass {
            &[("agent-version", "--version"), ("agent-doctor", "doctor")]
        } else {
            &[("agent-version", "--version")]
        };
        for &(name, arg) in smoke {
            manifest.commands.push(RunCommand {
                name: name.into(),
                timeout_secs: 120,
                argv: vec!["/bin/egress-monitor".into(), arg.into()],
            });
        }
    }
    manifest.env.extend(payload.env.iter().cloned());
    manifest.env.push(("HOME".into(), "/root".into()));
    manifest
        .env
        .push(("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin:/t".into()));
    manifest.env.push(("RUST_BACKTRACE".into(), "1".into()));
    w.file("manifest", 0o644, manifest.to_string().as_bytes())?;
    w.finish()
        .and_then(|mut b| std::io::Write::flush(&mut b))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(manifest)
}

//! Packing one initramfs: the init, `/dev/console`, the kernel's modules, the test binaries,
//! the agent, and the `/manifest` that tells the init what to do with them.

use std::{fs, io::BufWriter, path::Path};

use anyhow::{Context as _, Result};
use vm_init::manifest::{Manifest, RunCommand};

use super::{cpio::Writer, modules::Module};

/// The static binaries that go in.
pub struct Payload<'a> {
    pub init: &'a Path,
    /// libtest binaries: `(name, path)`, installed as `/t/deps/<name>`.
    pub tests: &'a [(String, std::path::PathBuf)],
    /// The `traffic` helper: the tests look for it one directory above their own.
    pub traffic: Option<&'a Path>,
    pub agent: Option<&'a Path>,
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
        // Smoke: the static agent starts in this kernel and answers.
        manifest.commands.push(RunCommand {
            name: "agent-version".into(),
            timeout_secs: 60,
            argv: vec!["/bin/egress-monitor".into(), "--version".into()],
        });
    }
    manifest.env.extend(payload.env.iter().cloned());
    manifest.env.push(("HOME".into(), "/root".into()));
    manifest.env.push(("PATH".into(), "/bin:/t".into()));
    manifest.env.push(("RUST_BACKTRACE".into(), "1".into()));
    w.file("manifest", 0o644, manifest.to_string().as_bytes())?;
    w.finish()
        .and_then(|mut b| std::io::Write::flush(&mut b))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(manifest)
}

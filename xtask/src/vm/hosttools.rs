//! Host programs some tests run (`bpftool`, `unshare`, `setpriv`, `sh`, `umount`, `rsyslogd`
//! and its plugins), copied into the initramfs with the shared libraries `ldd` says they need
//! and the dynamic loader. They are the host's glibc binaries: what the VM tests is the
//! *kernel*, and the userspace tools only have to run on it.
//!
//! A file goes in at its real path (symlinks resolved on the host, e.g. merged-/usr's
//! `/lib` -> `/usr/lib`); every other path it was named by becomes a symlink to it, so both
//! `/lib64/ld-linux-x86-64.so.2` (a binary's `PT_INTERP`) and `/usr/bin/sh` resolve.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

/// Programs the tests call by name (found on PATH) and directories of plugins they load.
pub const PROGRAMS: [&str; 7] = [
    "bpftool",
    "unshare",
    "setpriv",
    "sh",
    "umount",
    "rsyslogd",
    "systemd-analyze",
];
pub const PLUGIN_DIRS: [&str; 1] = ["/usr/lib/x86_64-linux-gnu/rsyslog"];

/// What to add to the archive: files by real path, and symlinks (path -> real path).
#[derive(Debug, Default)]
pub struct Closure {
    pub files: BTreeMap<String, PathBuf>,
    pub links: BTreeMap<String, String>,
    /// Programs not installed on the host: the tests that need them will say so.
    pub missing: Vec<String>,
}

/// The libraries in `ldd` output: `name => /path (0x...)` and the loader's `/path (0x...)`.
pub fn ldd_paths(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=> ").map_or(l, |(_, p)| p);
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl Closure {
    /// Adds `path` (and, for an ELF with dependencies, its libraries).
    fn add(&mut self, path: &Path) -> Result<()> {
        let real =
            fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
        let named = path.to_string_lossy().into_owned();
        let real_s = real.to_string_lossy().into_owned();
        if named != real_s {
            self.links.insert(named, real_s.clone());
        }
        if self.files.insert(real_s, real.clone()).is_some() {
            return Ok(());
        }
        // `ldd` fails on static binaries and scripts: they need nothing more.
        let out = Command::new("ldd").arg(&real).output();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            for lib in ldd_paths(&String::from_utf8_lossy(&out.stdout)) {
                self.add(Path::new(&lib))?;
            }
        }
        Ok(())
    }

    /// [`PROGRAMS`] and the plugins in [`PLUGIN_DIRS`] that exist on this host.
    pub fn of_host() -> Result<Self> {
        let mut c = Self::default();
        for program in PROGRAMS {
            match find_on_path(program) {
                Some(p) => {
                    c.add(&p)?;
                    // Tests find programs through PATH=/usr/sbin:/usr/bin:...; a program found
                    // elsewhere also gets a link in /usr/bin.
                    let in_usr_bin = format!("/usr/bin/{program}");
                    if !c.files.contains_key(&in_usr_bin) && !c.links.contains_key(&in_usr_bin) {
                        c.links.insert(in_usr_bin, p.to_string_lossy().into_owned());
                    }
                }
                None => c.missing.push(program.to_owned()),
            }
        }
        for dir in PLUGIN_DIRS {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for e in entries.filter_map(Result::ok) {
                if e.path().extension().is_some_and(|x| x == "so") {
                    c.add(&e.path())?;
                }
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007fcc97598000)\n\
                   \tlibelf.so.1 => /lib/x86_64-linux-gnu/libelf.so.1 (0x00007fcc974e6000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fcc972d9000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007fcc9759a000)\n\
                   \tlibmissing.so.9 => not found\n";
        assert_eq!(
            ldd_paths(out),
            [
                "/lib/x86_64-linux-gnu/libelf.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn a_host_program_comes_with_its_loader_and_libc() {
        let mut c = Closure::default();
        let Some(sh) = find_on_path("sh") else {
            eprintln!("no sh on PATH: skipping");
            return;
        };
        c.add(&sh).unwrap();
        let all: Vec<&String> = c.files.keys().chain(c.links.keys()).collect();
        assert!(all.iter().any(|p| p.contains("ld-linux")), "{all:?}");
        assert!(all.iter().any(|p| p.contains("libc.so")), "{all:?}");
        for (link, target) in &c.links {
            assert!(c.files.contains_key(target), "{link} -> {target} dangles");
        }
    }
}

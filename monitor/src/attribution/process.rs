//! pid -> executable, command line and user, read from /proc and cached briefly (a busy
//! server's flows share a handful of pids; /proc is read once per pid per TTL).

use std::{
    collections::HashMap,
    fs,
    path::Path,
    time::{Duration, Instant},
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    pub uid: Option<u32>,
}

/// Reads a process's identity from `proc_root/PID` (`/proc` in production).
pub fn read(proc_root: &Path, pid: u32) -> Option<ProcessInfo> {
    let dir = proc_root.join(pid.to_string());
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    let comm = status
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))
        .map(|v| v.trim().to_owned());
    // exe is unreadable for kernel threads and without CAP_SYS_PTRACE for others' processes;
    // a deleted binary reads "/path (deleted)", which is worth keeping as is.
    let exe = fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.display().to_string());
    let cmdline = fs::read(dir.join("cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Some(ProcessInfo {
        comm,
        exe,
        cmdline,
        uid,
    })
}

pub struct ProcessCache {
    proc_root: std::path::PathBuf,
    entries: HashMap<u32, (Instant, Option<ProcessInfo>)>,
    ttl: Duration,
    max_entries: usize,
}

impl ProcessCache {
    pub fn new(proc_root: impl Into<std::path::PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            entries: HashMap::new(),
            ttl: Duration::from_secs(30),
            max_entries: 65_536,
        }
    }

    /// Re-reads `pid` now (a new process, or a pid that may have been re-used).
    pub fn refresh(&mut self, pid: u32) {
        self.entries.remove(&pid);
        let _ = self.get(pid);
    }

    /// `None` when the process is gone (short-lived senders often are by the next poll).
    pub fn get(&mut self, pid: u32) -> Option<ProcessInfo> {
        if let Some((at, info)) = self.entries.get(&pid)
            && at.elapsed() < self.ttl
        {
            return info.clone();
        }
        if self.entries.len() >= self.max_entries {
            let ttl = self.ttl;
            self.entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if self.entries.len() >= self.max_entries {
                self.entries.clear();
            }
        }
        // A process that has exited keeps what was last read of it: its flows are still
        // reported after it is gone. (A re-used pid reads as the new process.)
        let info = read(&self.proc_root, pid)
            .or_else(|| self.entries.get(&pid).and_then(|(_, i)| i.clone()));
        self.entries.insert(pid, (Instant::now(), info.clone()));
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let info = read(Path::new("/proc"), me).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(info.exe.as_deref(), Some(exe.to_str().unwrap()));
        assert_eq!(info.uid, Some(nix::unistd::getuid().as_raw()));
        assert_ne!(info.cmdline, Vec::<String>::new());
        assert!(info.comm.is_some());
    }

    #[test]
    fn reads_a_crafted_proc_tree() {
        let root = std::env::temp_dir().join(format!("em-proc-{}", std::process::id()));
        let dir = root.join("4242");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("status"),
            "Name:\tsynapse\nUid:\t991\t991\t991\t991\n",
        )
        .unwrap();
        fs::write(dir.join("cmdline"), b"python\0-m\0synapse.app.homeserver\0").unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3.11", dir.join("exe")).unwrap();
        let info = read(&root, 4242).unwrap();
        assert_eq!(info.comm.as_deref(), Some("synapse"));
        assert_eq!(info.uid, Some(991));
        assert_eq!(info.exe.as_deref(), Some("/usr/bin/python3.11"));
        assert_eq!(info.cmdline, ["python", "-m", "synapse.app.homeserver"]);
        assert_eq!(read(&root, 1), None);
        fs::remove_dir_all(&root).unwrap();
    }
}

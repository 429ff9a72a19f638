//! The servers the scenario starts (Synapse, nginx): a free loopback port for each, readiness
//! polling with a deadline, a stop by the child's own pid (SIGTERM, then SIGKILL), and what
//! `/proc` says about them (comm, command line, workers and their users).

use std::{
    fs,
    net::{Ipv4Addr, TcpListener},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// A port on 127.0.0.1 that nothing listens on right now (the kernel picks it; the listener
/// is closed before the server binds it, a race nobody else on a test machine is running).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A port on 127.0.0.1 below the ephemeral range (where real services listen), free right
/// now: clients' ports are then above the server's, as on a real host. Starts at a place
/// that depends on the pid, so two runs rarely probe the same ports.
pub fn free_service_port() -> Result<u16> {
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 8_000;
    let start = (std::process::id() % u32::from(COUNT)) as u16;
    for i in 0..COUNT {
        let port = FIRST + (start + i) % COUNT;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 in {FIRST}-{}", FIRST + COUNT - 1)
}

/// A server started by the scenario, stopped on drop by its own pid.
pub struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {}", crate::cmd::describe(cmd)))?;
        eprintln!(
            "    {name} started, pid {} (log {})",
            child.id(),
            log.display()
        );
        Ok(Self { name, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `ready` every 100 ms until it holds, the child exits, or `timeout` passes.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited during start-up with {status}", self.name);
            }
            if ready() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!("{} not ready after {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The exit status, if the child has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM to the child's pid, up to 15 s to exit, then SIGKILL. Returns how long it took.
    pub fn stop(&mut self) -> Duration {
        self.stop_status().0
    }

    /// As [`Self::stop`], with the exit status (`None`: it had to be killed, or cannot be
    /// waited for).
    pub fn stop_status(&mut self) -> (Duration, Option<ExitStatus>) {
        let started = Instant::now();
        if let Some(status) = self.exited() {
            return (started.elapsed(), Some(status));
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        while started.elapsed() < Duration::from_secs(15) {
            if let Some(status) = self.exited() {
                eprintln!("    {} (pid {pid}) stopped: {status}", self.name);
                return (started.elapsed(), Some(status));
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "    {} (pid {pid}) ignored SIGTERM for 15 s: SIGKILL",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        (started.elapsed(), None)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What `/proc` tells about one process.
#[derive(Debug)]
pub struct ProcFacts {
    pub pid: u32,
    pub comm: String,
    /// Arguments joined by spaces (NULs in `/proc/PID/cmdline`).
    pub cmdline: String,
    pub exe: String,
    pub user: String,
}

pub fn facts(pid: u32) -> Result<ProcFacts> {
    let dir = Path::new("/proc").join(pid.to_string());
    let comm = fs::read_to_string(dir.join("comm"))
        .with_context(|| format!("reading /proc/{pid}/comm"))?
        .trim_end()
        .to_owned();
    let cmdline = cmdline_text(&fs::read(dir.join("cmdline"))?);
    let exe = fs::read_link(dir.join("exe"))
        .map_or_else(|e| format!("({e})"), |p| p.display().to_string());
    let status = fs::read_to_string(dir.join("status"))?;
    let uid = status_uid(&status).context("no Uid: line")?;
    let user = user_name(uid, &fs::read_to_string("/etc/passwd").unwrap_or_default())
        .unwrap_or_else(|| uid.to_string());
    Ok(ProcFacts {
        pid,
        comm,
        cmdline,
        exe,
        user,
    })
}

/// The children of `ppid` (from each process's `/proc/PID/stat`).
pub fn children(ppid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_ppid(&s))
                == Some(ppid)
        })
        .collect();
    out.sort_unstable();
    out
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat` (fields 14 and
/// 15, in `USER_HZ` ticks: 100 per second on every Linux architecture this runs on).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|t| t as f64 / 100.0)
}

/// Resident memory (kB) of a process, from `/proc/PID/status`.
pub fn rss_kb(pid: u32) -> Option<u64> {
    status_field(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS:",
    )
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let mut f = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
}

fn cmdline_text(raw: &[u8]) -> String {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The parent pid in `/proc/PID/stat` (field 4, after the parenthesised comm, which may
/// itself hold spaces and parentheses).
fn stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn user_name(uid: u32, passwd: &str) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_port_is_free_and_below_the_ephemeral_range() {
        let port = free_service_port().unwrap();
        assert!((20_000..28_000).contains(&port), "{port}");
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn proc_parsing() {
        assert_eq!(stat_ppid("42 (nginx: worker) S 41 42 41 0"), Some(41));
        assert_eq!(stat_ppid("7 (a) b) R 1 7"), Some(1));
        let stat = "9 (python) S 1 9 1 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 5 1000 10";
        assert_eq!(stat_cpu_ticks(stat), Some(281));
        assert_eq!(
            cmdline_text(b"python3\0-m\0synapse.app.homeserver\0"),
            "python3 -m synapse.app.homeserver"
        );
        assert_eq!(status_uid("Name:\tx\nUid:\t33\t33\t33\t33\n"), Some(33));
        assert_eq!(
            status_field("Name:\tx\nVmRSS:\t  12345 kB\n", "VmRSS:"),
            Some(12345)
        );
        assert_eq!(status_field("Name:\tx\n", "VmRSS:"), None);
        let passwd = "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
        assert_eq!(user_name(33, passwd).as_deref(), Some("www-data"));
        assert_eq!(user_name(5, passwd), None);
    }

    #[test]
    fn free_port_is_bindable() {
        let p = free_port().unwrap();
        assert!(p > 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("the port is free");
    }
}

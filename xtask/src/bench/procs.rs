//! Processes and settings the benchmark starts and must clean up: the agent under measurement,
//! the load generators, and the BPF statistics switch.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::UdpSocket,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::cmd;

/// Switches `kernel.bpf_stats_enabled` during the benchmark and restores the host's setting
/// afterwards.
pub(super) struct BpfStats(String);

impl BpfStats {
    pub(super) const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    /// Remembers the current setting, restored on drop.
    pub(super) fn save() -> Result<Self> {
        let old =
            fs::read_to_string(Self::PATH).with_context(|| format!("reading {}", Self::PATH))?;
        Ok(Self(old.trim().to_owned()))
    }

    #[expect(
        clippy::unused_self,
        reason = "taking the guard makes sure the host setting is restored afterwards"
    )]
    pub(super) fn set(&self, on: bool) -> Result<()> {
        fs::write(Self::PATH, if on { "1" } else { "0" })
            .with_context(|| format!("writing {}", Self::PATH))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(Self::PATH, &self.0);
    }
}

/// The agent under measurement.
pub(super) struct Agent {
    child: Child,
    program_ids: Vec<u64>,
    /// The kernel map holding the agent's containment rules.
    rules_map: u64,
}

/// The one containment every measured agent enforces (the issue's budget is "with enforcement
/// compiled in and one containment active"): a throttle of [`CONTAINED_SERVICE`] (this
/// benchmark process itself, matched by its executable) to a documentation address it never
/// sends to. The measured traffic (iperf3, the load generators) runs in the same cgroup as
/// this process, so its flows are looked up against the rule when they start and then pass
/// the uncontained fast path: the case the budget is about.
const CONTAINED_SERVICE: &str = "bench-contained";
const CONTAINED_PEER: &str = "192.0.2.1";

/// How long the agent may take to put the containment into the kernel (it does once it has
/// seen a socket of the service, at its next poll).
const CONTAIN_DEADLINE: Duration = Duration::from_secs(20);

impl Agent {
    /// Starts the agent (detector included, `containment.mode = "enforce"`) with a fresh state
    /// directory next to `samples`, never the host's, holding one containment started by
    /// `contain add` as an operator would; returns once the kernel enforces it.
    pub(super) fn start(bin: &Path, samples: &Path) -> Result<Self> {
        let out = fs::File::create(samples)?;
        let state = samples.with_extension("state");
        let _ = fs::remove_dir_all(&state);
        let config = contain_config(samples)?;
        cmd::output(
            Command::new(bin)
                .arg("--config")
                .arg(&config)
                .args([
                    "contain",
                    "add",
                    "--service",
                    CONTAINED_SERVICE,
                    "--peer",
                    CONTAINED_PEER,
                    "--rate",
                    "256KiB",
                    "--for",
                    "1h",
                    "--reason",
                    "benchmark: one containment active",
                ])
                .arg("--state-dir")
                .arg(&state),
        )?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .args([
                "--log-format",
                "json",
                "run",
                "--output",
                "json",
                "--interval",
                "1s",
            ])
            .arg("--state-dir")
            .arg(&state)
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .context("agent did not attach within 30 s")?;
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["message"] == "attached: counting egress" {
                let ids = v["programs"].as_str().unwrap_or_default();
                let program_ids: Vec<u64> = ids
                    .trim_matches(['[', ']'])
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect();
                // Keep draining stderr so the agent never blocks on a full pipe.
                thread::spawn(move || while rx.recv().is_ok() {});
                let rules_map = contain_rules_map(&program_ids)?;
                let agent = Self {
                    child,
                    program_ids,
                    rules_map,
                };
                agent.wait_for_containment()?;
                return Ok(agent);
            }
        }
    }

    /// Sends datagrams from this process (the contained service) to loopback until the
    /// agent has seen its socket and written the rule into the kernel.
    fn wait_for_containment(&self) -> Result<()> {
        let sink = UdpSocket::bind("127.0.0.1:0")?;
        let from = UdpSocket::bind("127.0.0.1:0")?;
        let deadline = Instant::now() + CONTAIN_DEADLINE;
        while Instant::now() < deadline {
            from.send_to(b"bench", sink.local_addr()?)?;
            if self.contain_rules()? > 0 {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(200));
        }
        bail!("the agent did not enforce the benchmark's containment within {CONTAIN_DEADLINE:?}")
    }

    /// Keys in the kernel's containment rules (one per contained (network, cgroup)).
    pub(super) fn contain_rules(&self) -> Result<usize> {
        let text = cmd::output(Command::new("bpftool").args([
            "-j",
            "map",
            "dump",
            "id",
            &self.rules_map.to_string(),
        ]))?;
        let v: Value = serde_json::from_str(&text)?;
        Ok(v.as_array().map_or(0, Vec::len))
    }

    /// Fails unless the containment is still in the kernel: called after each measurement.
    pub(super) fn check_contained(&self) -> Result<()> {
        if self.contain_rules()? == 0 {
            bail!("the benchmark's containment left the kernel during the measurement");
        }
        Ok(())
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (name, `run_time_ns`, `run_cnt`) of each of the agent's programs so far.
    pub(super) fn program_stats(&self) -> Result<Vec<(String, u64, u64)>> {
        let mut out = Vec::new();
        for id in &self.program_ids {
            let text = cmd::output(Command::new("bpftool").args([
                "-j",
                "prog",
                "show",
                "id",
                &id.to_string(),
            ]))?;
            let v: Value = serde_json::from_str(&text)?;
            out.push((
                v["name"].as_str().unwrap_or("?").to_owned(),
                v["run_time_ns"].as_u64().unwrap_or(0),
                v["run_cnt"].as_u64().unwrap_or(0),
            ));
        }
        Ok(out)
    }

    pub(super) fn stop(mut self) -> Result<()> {
        cmd::run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("agent exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Agent {
    /// A failed measurement must not leave an agent (and its programs) running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// Writes the agent's configuration: enforcing containment, and this process as the one
/// configured service.
fn contain_config(samples: &Path) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("this benchmark's executable")?;
    let path = samples.with_extension("toml");
    fs::write(
        &path,
        format!(
            "[containment]\nmode = \"enforce\"\n\n[[services]]\nname = \"{CONTAINED_SERVICE}\"\n\
             [[services.match]]\nexe = \"{}\"\n",
            exe.display()
        ),
    )?;
    Ok(path)
}

/// The id of the `CONTAIN_RULES` map the agent's programs use.
fn contain_rules_map(program_ids: &[u64]) -> Result<u64> {
    for id in program_ids {
        let text = cmd::output(Command::new("bpftool").args([
            "-j",
            "prog",
            "show",
            "id",
            &id.to_string(),
        ]))?;
        let prog: Value = serde_json::from_str(&text)?;
        for map in prog["map_ids"].as_array().into_iter().flatten() {
            let Some(map) = map.as_u64() else { continue };
            let text = cmd::output(Command::new("bpftool").args([
                "-j",
                "map",
                "show",
                "id",
                &map.to_string(),
            ]))?;
            let v: Value = serde_json::from_str(&text)?;
            if v["name"] == monitor_common::CONTAIN_RULES_MAP {
                return Ok(map);
            }
        }
    }
    bail!("none of the agent's programs {program_ids:?} uses a CONTAIN_RULES map")
}

/// Load generators, killed if the measurement fails half way.
pub(super) struct Loads(pub(super) Vec<Child>);

impl Drop for Loads {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

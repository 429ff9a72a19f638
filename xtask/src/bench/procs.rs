//! Processes and settings the benchmark starts and must clean up: the agent under measurement,
//! the load generators, and the BPF statistics switch.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
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
}

impl Agent {
    /// Starts the agent (detector included) with a fresh state directory next to `samples`,
    /// never the host's.
    pub(super) fn start(bin: &Path, samples: &Path) -> Result<Self> {
        let out = fs::File::create(samples)?;
        let state = samples.with_extension("state");
        let _ = fs::remove_dir_all(&state);
        let mut child = Command::new(bin)
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
                let program_ids = ids
                    .trim_matches(['[', ']'])
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect();
                // Keep draining stderr so the agent never blocks on a full pipe.
                thread::spawn(move || while rx.recv().is_ok() {});
                return Ok(Self { child, program_ids });
            }
        }
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

//! The agent's CPU and memory with many active sockets.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::UdpSocket,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    CPU_WINDOW, PER_PROCESS_SOCKETS,
    procs::{Agent, Loads},
};
use crate::cmd;

fn clock_ticks_per_second() -> f64 {
    cmd::output(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn status_kib(pid: u32, field: &str) -> Result<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

pub(super) fn socket_scale(
    agent_bin: &Path,
    traffic: &Path,
    sockets: usize,
    out_dir: &Path,
) -> Result<Value> {
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let to = sink.local_addr()?;
    let samples = out_dir.join(format!("scale-{sockets}.jsonl"));
    let agent = Agent::start(agent_bin, &samples)?;
    let seconds = CPU_WINDOW + 6;
    // The open-files limit here may be low (and not raisable without CAP_SYS_RESOURCE):
    // spread the sockets over several generator processes.
    let per_process = PER_PROCESS_SOCKETS.min(sockets);
    let mut loads = Loads(Vec::new());
    let mut outputs = Vec::new();
    let mut left = sockets;
    while left > 0 {
        let n = left.min(per_process);
        left -= n;
        let mut load = Command::new(traffic)
            .args([
                "active-udp",
                &to.to_string(),
                &n.to_string(),
                &seconds.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(load.stdout.take().context("load stdout")?).lines();
        loads.0.push(load);
        let ready = lines.next().transpose()?.unwrap_or_default();
        if !ready.starts_with("ready") {
            bail!(
                "load generator did not start ({ready:?}); is `ulimit -n` at least {}?",
                n + 64
            );
        }
        outputs.push(lines);
    }
    thread::sleep(Duration::from_secs(3)); // warm-up: every socket has sent and been read once
    let tck = clock_ticks_per_second();
    let (t0, c0) = (Instant::now(), cpu_ticks(agent.pid())?);
    thread::sleep(Duration::from_secs(CPU_WINDOW));
    let (t1, c1) = (Instant::now(), cpu_ticks(agent.pid())?);
    let rss = status_kib(agent.pid(), "VmRSS:")? / 1024.0;
    let peak = status_kib(agent.pid(), "VmHWM:")? / 1024.0;
    let cpu = (c1 - c0) as f64 / tck / (t1 - t0).as_secs_f64() * 100.0;
    for mut lines in outputs {
        let _ = lines.next(); // "done"
    }
    for load in &mut loads.0 {
        load.wait()?;
    }
    agent.check_contained()?;
    agent.stop()?;
    let flows = busiest_window_flows(&samples, to.port())?;
    Ok(
        json!({ "sockets": sockets, "cpu_percent": cpu, "rss_mib": rss, "peak_rss_mib": peak,
               "flows_in_busiest_window": flows }),
    )
}

/// Number of flows to the sink reported in the busiest window: proves the agent really
/// tracked the sockets it was measured with.
fn busiest_window_flows(samples: &Path, port: u16) -> Result<u64> {
    let text = fs::read_to_string(samples)?;
    let mut per_window: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)?;
        if v["remote"]["port"] == port {
            *per_window
                .entry(v["window_end"].as_str().unwrap_or_default().to_owned())
                .or_default() += v["flows"].as_u64().unwrap_or(0);
        }
    }
    Ok(per_window.values().copied().max().unwrap_or(0))
}

//! `cargo xtask bench`: measures, in one run, what the agent costs.
//!
//! - per-packet cost of each kernel program, from the kernel's BPF run-time statistics
//!   (`run_time_ns / run_cnt`, `kernel.bpf_stats_enabled` is switched on for the run);
//! - loopback throughput with and without the agent, as a ratio, for bulk TCP (iperf3) and for
//!   1-KiB UDP datagrams (packets per second), in interleaved A/B rounds;
//! - the agent's CPU and RSS with 1,000 / 10,000 / 100,000 active sockets (each sends one
//!   datagram per second) at a 1 s poll.
//!
//! Results are printed and saved as JSON under `target/bench/`. Traffic stays on loopback.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::UdpSocket,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{bootstrap::Tools, cmd};

const IPERF_PORT: u16 = 15201;
const IPERF_SECONDS: u32 = 5;
const SOCKET_COUNTS: [usize; 3] = [1_000, 10_000, 100_000];
/// Sockets per load-generator process (below common open-file limits).
const PER_PROCESS_SOCKETS: usize = 15_000;
/// Seconds of steady load measured for CPU, after a warm-up.
const CPU_WINDOW: u64 = 10;

pub fn all(root: &Path, tools: &Tools, agent: &Path, rounds: u32) -> Result<()> {
    if !cmd::is_root() {
        bail!("the benchmark loads BPF programs and needs root: run `sudo cargo xtask bench`");
    }
    for tool in ["iperf3", "bpftool"] {
        if !cmd::exists(tool) {
            bail!("{tool} is missing (cargo xtask bootstrap installs it as root)");
        }
    }
    let traffic = cmd::step("build the load generator", || {
        cmd::run(tools.cargo(root).args([
            "build",
            "--release",
            "--package",
            "integration-tests",
            "--bin",
            "traffic",
        ]))?;
        Ok(root.join("target/release/traffic"))
    })?;
    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir)?;
    // Statistics cost every BPF program run a clock read or two (60-80 ns in this guest):
    // they are on only while per-program cost is measured, off for the A/B throughput and
    // the agent's CPU, so those measure the agent and not the measurement.
    let stats = BpfStats::save()?;
    stats.set(false)?;

    let mut bulk = Vec::new();
    let mut small = Vec::new();
    cmd::step(
        &format!("throughput A/B, {rounds} interleaved rounds (BPF stats off)"),
        || {
            for round in 0..rounds {
                // Alternate which side goes first so drift (thermal, noise) hits both equally.
                let order = if round % 2 == 0 {
                    [false, true]
                } else {
                    [true, false]
                };
                let mut pair = [(0.0, 0.0); 2];
                for with_agent in order {
                    let running = if with_agent {
                        Some(Agent::start(agent, &out_dir.join("ab-samples.jsonl"))?)
                    } else {
                        None
                    };
                    let b = iperf_tcp_bulk()?;
                    let s = iperf_udp_small()?;
                    if let Some(a) = running {
                        a.stop()?;
                    }
                    pair[usize::from(with_agent)] = (b, s);
                }
                eprintln!(
                    "    round {round}: bulk {:.2} -> {:.2} Gbit/s, small {:.0} -> {:.0} pkt/s",
                    pair[0].0 / 1e9,
                    pair[1].0 / 1e9,
                    pair[0].1,
                    pair[1].1
                );
                bulk.push((pair[0].0, pair[1].0));
                small.push((pair[0].1, pair[1].1));
            }
            Ok(())
        },
    )?;

    let prog_cost = cmd::step(
        "per-program cost from BPF stats (stats on, agent attached, iperf3 bulk + small)",
        || {
            stats.set(true)?;
            let a = Agent::start(agent, &out_dir.join("cost-samples.jsonl"))?;
            iperf_tcp_bulk()?;
            iperf_udp_small()?;
            let costs = a.program_stats()?;
            a.stop()?;
            stats.set(false)?;
            Ok(costs)
        },
    )?;

    let test_run = cmd::step(
        "count_egress cost via BPF_PROG_TEST_RUN, stats off and on",
        || test_run_cost(root, tools),
    )?;
    eprintln!("    {test_run}");

    let mut scale = Vec::new();
    for n in SOCKET_COUNTS {
        let r = cmd::step(
            &format!("agent CPU and RSS with {n} active sockets"),
            || socket_scale(agent, &traffic, n, &out_dir),
        )?;
        eprintln!("    {r}");
        scale.push(r);
    }

    let mut report = report(&bulk, &small, &prog_cost, &scale);
    report["test_run_cost"] = test_run;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = serde_json::to_string_pretty(&report)?;
    fs::write(out_dir.join(format!("bench-{stamp}.json")), &text)?;
    fs::write(out_dir.join("latest.json"), &text)?;
    print_summary(&report);
    eprintln!("==> saved {}", out_dir.join("latest.json").display());
    Ok(())
}

/// Runs the egress program 1M times on one packet in the kernel (`BPF_PROG_TEST_RUN`, timed
/// by the kernel around the loop) with BPF statistics off, then on. The difference is what
/// the statistics themselves add to every run, which `run_time_ns / run_cnt` includes.
fn test_run_cost(root: &Path, tools: &Tools) -> Result<Value> {
    let mut medians = [0.0f64; 2];
    for (i, on) in ["0", "1"].into_iter().enumerate() {
        fs::write(BpfStats::PATH, on).with_context(|| format!("writing {}", BpfStats::PATH))?;
        let out = cmd::output(tools.cargo(root).args([
            "test",
            "--release",
            "--package",
            "integration-tests",
            "--test",
            "parser_test_run",
            "--",
            "--ignored",
            "--nocapture",
            "cost_of_one_run",
        ]))?;
        let runs: Vec<f64> = out
            .lines()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)?
                    .strip_suffix(" ns per run (BPF_PROG_TEST_RUN)")?
                    .parse()
                    .ok()
            })
            .collect();
        if runs.is_empty() {
            bail!("no measurement in the test output:\n{out}");
        }
        medians[i] = median(runs);
    }
    fs::write(BpfStats::PATH, "0")?;
    Ok(
        json!({ "ns_per_run_stats_off": medians[0], "ns_per_run_stats_on": medians[1],
               "stats_overhead_ns": medians[1] - medians[0] }),
    )
}

/// [min, max] of the A/B pair ratios: how much of the median is noise.
fn range(v: &[f64]) -> [f64; 2] {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() { [0.0, 0.0] } else { [min, max] }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(
    bulk: &[(f64, f64)],
    small: &[(f64, f64)],
    progs: &[(String, u64, u64)],
    scale: &[Value],
) -> Value {
    let ratios = |v: &[(f64, f64)]| -> Vec<f64> {
        v.iter()
            .map(|(a, b)| if *a > 0.0 { b / a } else { 0.0 })
            .collect()
    };
    let per_packet: Vec<Value> = progs
        .iter()
        .map(|(name, ns, cnt)| {
            json!({ "program": name, "run_time_ns": ns, "run_cnt": cnt,
                    "ns_per_run": if *cnt > 0 { *ns as f64 / *cnt as f64 } else { 0.0 } })
        })
        .collect();
    json!({
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": thread::available_parallelism().map_or(0, usize::from),
        "per_program_cost": per_packet,
        "targets": { "egress_ns_per_packet": 80, "bulk_ratio": 0.97, "small_ratio": 0.95,
                     "rss_mib_at_100k": 64, "cpu_percent_at_10k": 2.0 },
        "throughput": {
            "bulk_tcp_bits_per_second": bulk.iter().map(|(a, b)| json!({"without": a, "with": b})).collect::<Vec<_>>(),
            "small_udp_packets_per_second": small.iter().map(|(a, b)| json!({"without": a, "with": b})).collect::<Vec<_>>(),
            "bulk_ratio_median": median(ratios(bulk)),
            "small_ratio_median": median(ratios(small)),
            "bulk_pair_ratio_range": range(&ratios(bulk)),
            "small_pair_ratio_range": range(&ratios(small)),
        },
        "socket_scale": scale,
    })
}

fn print_summary(r: &Value) {
    println!(
        "\negress-monitor benchmark (kernel {}, {} CPUs)",
        r["kernel"].as_str().unwrap_or("?"),
        r["cpus"]
    );
    for p in r["per_program_cost"].as_array().into_iter().flatten() {
        let ns = p["ns_per_run"].as_f64().unwrap_or(0.0);
        let verdict = if p["program"] == "count_egress" {
            if ns <= 80.0 {
                " (target <= 80: met)"
            } else {
                " (target <= 80: NOT met)"
            }
        } else {
            ""
        };
        println!(
            "  {:<16} {:>8.1} ns per run over {} runs{verdict}",
            p["program"].as_str().unwrap_or("?"),
            ns,
            p["run_cnt"]
        );
    }
    let tr = &r["test_run_cost"];
    println!(
        "  count_egress via BPF_PROG_TEST_RUN: {:.0} ns per run with stats off, {:.0} with stats on \
         (the statistics add {:.0} ns per run on this machine)",
        tr["ns_per_run_stats_off"].as_f64().unwrap_or(0.0),
        tr["ns_per_run_stats_on"].as_f64().unwrap_or(0.0),
        tr["stats_overhead_ns"].as_f64().unwrap_or(0.0)
    );
    let t = &r["throughput"];
    let bulk = t["bulk_ratio_median"].as_f64().unwrap_or(0.0);
    let small = t["small_ratio_median"].as_f64().unwrap_or(0.0);
    let spread = |k: &str| {
        let r = &t[k];
        format!(
            "{:.2}-{:.2}",
            r[0].as_f64().unwrap_or(0.0),
            r[1].as_f64().unwrap_or(0.0)
        )
    };
    println!(
        "  bulk TCP throughput ratio (with/without), median of pairs {bulk:.3} (target >= 0.97: {}; pairs ranged {})",
        met(bulk >= 0.97),
        spread("bulk_pair_ratio_range")
    );
    println!(
        "  1-KiB UDP packet rate ratio (with/without), median of pairs {small:.3} (target >= 0.95: {}; pairs ranged {})",
        met(small >= 0.95),
        spread("small_pair_ratio_range")
    );
    for s in r["socket_scale"].as_array().into_iter().flatten() {
        println!(
            "  {:>6} active sockets: agent CPU {:.2} % of one core, RSS {:.1} MiB (peak {:.1}), flows reported {}",
            s["sockets"],
            s["cpu_percent"].as_f64().unwrap_or(0.0),
            s["rss_mib"].as_f64().unwrap_or(0.0),
            s["peak_rss_mib"].as_f64().unwrap_or(0.0),
            s["flows_in_last_window"]
        );
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// Switches `kernel.bpf_stats_enabled` during the benchmark and restores the host's setting
/// afterwards.
struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    /// Remembers the current setting, restored on drop.
    fn save() -> Result<Self> {
        let old =
            fs::read_to_string(Self::PATH).with_context(|| format!("reading {}", Self::PATH))?;
        Ok(Self(old.trim().to_owned()))
    }

    #[expect(
        clippy::unused_self,
        reason = "taking the guard makes sure the host setting is restored afterwards"
    )]
    fn set(&self, on: bool) -> Result<()> {
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
struct Agent {
    child: Child,
    program_ids: Vec<u64>,
}

impl Agent {
    fn start(bin: &Path, samples: &Path) -> Result<Self> {
        let out = fs::File::create(samples)?;
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (name, `run_time_ns`, `run_cnt`) of each of the agent's programs so far.
    fn program_stats(&self) -> Result<Vec<(String, u64, u64)>> {
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

    fn stop(mut self) -> Result<()> {
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
struct Loads(Vec<Child>);

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

fn iperf(client_args: &[&str]) -> Result<Value> {
    let port = IPERF_PORT.to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 server")?;
    let secs = IPERF_SECONDS.to_string();
    let mut last_err = None;
    // The server needs a moment to listen; retry the client a few times.
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(100));
        let out = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port, "-t", &secs, "-J"])
            .args(client_args)
            .output()
            .context("running iperf3 client")?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() && v.get("error").is_none() {
            let _ = server.wait();
            return Ok(v);
        }
        last_err = Some(v["error"].as_str().unwrap_or("iperf3 failed").to_owned());
    }
    let _ = server.kill();
    let _ = server.wait();
    bail!("iperf3: {}", last_err.unwrap_or_default())
}

fn iperf_tcp_bulk() -> Result<f64> {
    let v = iperf(&[])?;
    v["end"]["sum_sent"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_sent")
}

fn iperf_udp_small() -> Result<f64> {
    let v = iperf(&["-u", "-b", "0", "-l", "1024"])?;
    let sum = &v["end"]["sum"];
    let packets = sum["packets"]
        .as_f64()
        .context("iperf3 JSON without end.sum.packets")?;
    let seconds = sum["seconds"].as_f64().unwrap_or(f64::from(IPERF_SECONDS));
    Ok(packets / seconds)
}

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

fn socket_scale(agent_bin: &Path, traffic: &Path, sockets: usize, out_dir: &Path) -> Result<Value> {
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
    agent.stop()?;
    let flows = flows_in_last_full_window(&samples, to.port())?;
    Ok(
        json!({ "sockets": sockets, "cpu_percent": cpu, "rss_mib": rss, "peak_rss_mib": peak,
               "flows_in_last_window": flows }),
    )
}

/// Number of flows to the sink reported in the busiest window: proves the agent really
/// tracked the sockets it was measured with.
fn flows_in_last_full_window(samples: &Path, port: u16) -> Result<u64> {
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

//! `cargo xtask bench`: measures, in one run, what the agent costs.
//!
//! - per-packet cost of each kernel program, from the kernel's BPF run-time statistics
//!   (`run_time_ns / run_cnt`, `kernel.bpf_stats_enabled` switched on for that phase only),
//!   and of the egress programs under `BPF_PROG_TEST_RUN` with the statistics off and on
//!   (`count_egress`, and `observe_egress` which never enforces; with no containment and with one);
//! - loopback throughput with and without the agent, as a ratio, for bulk TCP (iperf3) and for
//!   1-KiB UDP datagrams (packets per second), in interleaved A/B rounds;
//! - the agent's CPU and RSS with 1,000 / 10,000 / 100,000 active sockets (each sends one
//!   datagram per second) at a 1 s poll;
//! - the detector alone (no root needed): `FlowSample`s per second on one core and heap bytes
//!   per tracked (service, peer) pair, at 10,000 and 1,000,000 peers.
//! - alert delivery (no root needed): events per second written to the outbox and delivered
//!   to a file sink and to a syslog receiver over TCP.
//!
//! Every measured agent runs with `containment.mode = "enforce"` and one containment active
//! (for a peer the measured traffic never goes to; see `procs::Agent`), checked in the kernel
//! map after each measurement: the budget is the cost with enforcement in use.
//!
//! Results are printed and saved as JSON under `target/bench/`. Traffic stays on loopback.

use std::{
    fs,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{bootstrap::Tools, cmd};

mod iperf;
mod procs;
mod report;
mod scale;

use self::{
    iperf::{iperf_tcp_bulk, iperf_udp_small},
    procs::{Agent, BpfStats},
    report::{median, print_summary, report},
    scale::socket_scale,
};

const IPERF_PORT: u16 = 15201;
const IPERF_SECONDS: u32 = 5;
const SOCKET_COUNTS: [usize; 3] = [1_000, 10_000, 100_000];
/// Sockets per load-generator process (below common open-file limits).
const PER_PROCESS_SOCKETS: usize = 15_000;
/// Seconds of steady load measured for CPU, after a warm-up.
const CPU_WINDOW: u64 = 10;

fn check_prerequisites() -> Result<()> {
    if !cmd::is_root() {
        bail!("the benchmark loads BPF programs and needs root: run `sudo cargo xtask bench`");
    }
    for tool in ["iperf3", "bpftool"] {
        if !cmd::exists(tool) {
            bail!("{tool} is missing (cargo xtask bootstrap installs it as root)");
        }
    }
    Ok(())
}

fn build_traffic(root: &Path, tools: &Tools) -> Result<std::path::PathBuf> {
    cmd::step("build the load generator", || {
        cmd::run(tools.cargo(root).args([
            "build",
            "--release",
            "--package",
            "integration-tests",
            "--bin",
            "traffic",
        ]))?;
        Ok(root.join("target/release/traffic"))
    })
}

pub fn all(root: &Path, tools: &Tools, agent: &Path, rounds: u32, detector: bool) -> Result<()> {
    check_prerequisites()?;
    let traffic = build_traffic(root, tools)?;
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
                        a.check_contained()?;
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
            a.check_contained()?;
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

    let scale = scale_all(agent, &traffic, &out_dir)?;

    let (detector, delivery) = if detector {
        (
            cmd::step("detector throughput and memory per pair", || {
                detector_bench(root, tools)
            })?,
            cmd::step("alert delivery: outbox, file and syslog sinks", || {
                delivery_bench(root, tools)
            })?,
        )
    } else {
        eprintln!("==> skipping the detector and delivery benchmarks (--no-detector)");
        (Value::Null, Value::Null)
    };

    let mut report = report(&bulk, &small, &prog_cost, &scale);
    report["test_run_cost"] = test_run;
    report["detector"] = detector;
    report["delivery"] = delivery;
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

/// The agent's CPU and RSS at each of `SOCKET_COUNTS`.
fn scale_all(agent: &Path, traffic: &Path, out_dir: &Path) -> Result<Vec<Value>> {
    let mut scale = Vec::new();
    for n in SOCKET_COUNTS {
        let r = cmd::step(
            &format!("agent CPU and RSS with {n} active sockets"),
            || socket_scale(agent, traffic, n, out_dir),
        )?;
        eprintln!("    {r}");
        scale.push(r);
    }
    Ok(scale)
}

/// `cargo xtask bench --scale-only`: the agent's CPU and RSS at each of `SOCKET_COUNTS`,
/// saved as `target/bench/scale.json`.
pub fn scale_only(root: &Path, tools: &Tools, agent: &Path) -> Result<()> {
    check_prerequisites()?;
    let traffic = build_traffic(root, tools)?;
    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let scale = scale_all(agent, &traffic, &out_dir)?;
    let report = json!({ "agent": agent.display().to_string(), "socket_scale": scale });
    fs::write(
        out_dir.join("scale.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    report::print_scale(&report);
    Ok(())
}

/// `cargo xtask bench --detector-only`: the parts that need no root (detector, alert
/// delivery), saved as `target/bench/detector.json`.
pub fn detector_only(root: &Path, tools: &Tools) -> Result<()> {
    let detector = cmd::step("detector throughput and memory per pair", || {
        detector_bench(root, tools)
    })?;
    let delivery = cmd::step("alert delivery: outbox, file and syslog sinks", || {
        delivery_bench(root, tools)
    })?;
    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let report = json!({ "detector": detector, "delivery": delivery });
    fs::write(
        out_dir.join("detector.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    report::print_detector(&report);
    report::print_delivery(&report);
    Ok(())
}

/// Peers of the detector benchmark (the 10k and 1M).
const DETECTOR_PEERS: [u64; 2] = [10_000, 1_000_000];

/// Runs `monitor/examples/detector_bench` (see its header) for each peer count; three runs
/// each, the median throughput kept (the machine is noisy), memory from the last.
fn detector_bench(root: &Path, tools: &Tools) -> Result<Value> {
    let bin = build_example(root, tools, "detector_bench")?;
    let mut results = Vec::new();
    for peers in DETECTOR_PEERS {
        let mut rates = Vec::new();
        let mut last = Value::Null;
        for _ in 0..3 {
            let out = cmd::output(
                std::process::Command::new(&bin).args(["--peers", &peers.to_string()]),
            )?;
            let v: Value = serde_json::from_str(out.trim())
                .with_context(|| format!("detector_bench output: {out}"))?;
            rates.push(v["samples_per_second"].as_f64().unwrap_or(0.0));
            last = v;
        }
        eprintln!(
            "    {peers} peers: {:.0} samples/s (runs {rates:.0?}), {:.0} bytes per pair",
            median(rates.clone()),
            last["bytes_per_pair"].as_f64().unwrap_or(0.0)
        );
        results.push(json!({
            "peers": peers,
            "samples_per_second_median": median(rates.clone()),
            "samples_per_second_runs": rates,
            "bytes_per_pair": last["bytes_per_pair"],
            "pairs_tracked": last["pairs_tracked"],
            "samples_timed": last["samples_timed"],
        }));
    }
    Ok(json!(results))
}

/// Builds `monitor/examples/<name>.rs` (release) and returns the binary's path.
fn build_example(root: &Path, tools: &Tools, name: &str) -> Result<std::path::PathBuf> {
    cmd::run(tools.cargo(root).args([
        "build",
        "--release",
        "--package",
        "monitor",
        "--example",
        name,
    ]))?;
    Ok(root.join("target/release/examples").join(name))
}

/// Runs `monitor/examples/delivery_bench` (see its header) three times: the median of each
/// rate.
fn delivery_bench(root: &Path, tools: &Tools) -> Result<Value> {
    let bin = build_example(root, tools, "delivery_bench")?;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let out = cmd::output(&mut std::process::Command::new(&bin))?;
        let v: Value = serde_json::from_str(out.trim())
            .with_context(|| format!("delivery_bench output: {out}"))?;
        runs.push(v);
    }
    let mut result = json!({ "events": runs[0]["events"], "file_bytes_per_event": runs[0]["file_bytes_per_event"] });
    for key in [
        "record_events_per_second",
        "file_ocsf_fsync_batch_events_per_second",
        "syslog_tcp_ocsf_events_per_second",
    ] {
        let rates: Vec<f64> = runs
            .iter()
            .map(|r| r[key].as_f64().unwrap_or(0.0))
            .collect();
        result[format!("{key}_median")] = json!(median(rates.clone()));
        result[format!("{key}_runs")] = json!(rates);
    }
    eprintln!("    {result}");
    Ok(result)
}

/// Runs the egress programs 1M times on one packet of an existing flow in the kernel
/// (`BPF_PROG_TEST_RUN`, timed by the kernel around the loop), three times each, with BPF
/// statistics off, then on: each enforcing program (`count_egress`) and its variant without
/// enforcement (`observe_egress`), with no containment and with one containment active (for
/// another peer; see the test). The difference between off and on is what the statistics
/// themselves add to every run, which `run_time_ns / run_cnt` includes.
///
/// Returns `{"stats_off": {label: median ns}, "stats_on": {..}, "stats_overhead_ns": ..}`,
/// labels such as `"count_egress, one containment active"`.
fn test_run_cost(root: &Path, tools: &Tools) -> Result<Value> {
    let mut by_setting = Vec::new();
    for on in ["0", "1"] {
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
            "--exact",
            "cost_of_one_run_on_an_existing_flow",
        ]))?;
        let mut runs = std::collections::BTreeMap::<String, Vec<f64>>::new();
        for line in out.lines() {
            let Some((label, rest)) = line
                .strip_prefix("cost: ")
                .and_then(|l| l.rsplit_once(": "))
            else {
                continue;
            };
            if let Some(ns) = rest
                .strip_suffix(" ns per run (BPF_PROG_TEST_RUN)")
                .and_then(|n| n.parse().ok())
            {
                runs.entry(label.to_owned()).or_default().push(ns);
            }
        }
        if runs.is_empty() {
            bail!("no measurement in the test output:\n{out}");
        }
        let medians: serde_json::Map<String, Value> = runs
            .into_iter()
            .map(|(label, v)| (label, json!(median(v))))
            .collect();
        by_setting.push(Value::Object(medians));
    }
    fs::write(BpfStats::PATH, "0")?;
    let headline = "count_egress, one containment active";
    let ns = |v: &Value| v[headline].as_f64().unwrap_or(0.0);
    let overhead = ns(&by_setting[1]) - ns(&by_setting[0]);
    Ok(
        json!({ "stats_off": by_setting[0], "stats_on": by_setting[1],
               "stats_overhead_ns": overhead }),
    )
}

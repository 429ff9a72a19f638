//! The benchmark's JSON report and its printed summary.

use std::{fs, thread};

use serde_json::{Value, json};

/// [min, max] of the A/B pair ratios: how much of the median is noise.
pub(super) fn range(v: &[f64]) -> [f64; 2] {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() { [0.0, 0.0] } else { [min, max] }
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(super) fn report(
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
                     "rss_mib_at_100k": 64, "cpu_percent_at_10k": 2.0,
                     "detector_samples_per_second": 1_000_000, "detector_bytes_per_pair": 512 },
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

pub(super) fn print_summary(r: &Value) {
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
    let ns = |stats: &str, label: &str| tr[stats][label].as_f64().unwrap_or(0.0);
    for prog in ["count_egress", "observe_egress"] {
        for setting in ["no containment", "one containment active"] {
            let label = format!("{prog}, {setting}");
            let off = ns("stats_off", &label);
            let verdict = if label == "count_egress, one containment active" {
                format!(" (target <= 80: {})", met(off <= 80.0))
            } else {
                String::new()
            };
            println!(
                "  {label:<38} BPF_PROG_TEST_RUN: {off:.0} ns per run with stats off{verdict}, {:.0} with stats on",
                ns("stats_on", &label)
            );
        }
    }
    println!(
        "  (the statistics add {:.0} ns per run on this machine)",
        tr["stats_overhead_ns"].as_f64().unwrap_or(0.0)
    );
    // The harness baseline's label (`empty_program_cost` in the kernel tests).
    let empty = ns("stats_off", "empty program (the test-run loop alone)");
    println!(
        "  the test-run loop alone (an empty program) costs {empty:.0} ns per run: count_egress's own work is {:.0} ns",
        ns("stats_off", "count_egress, one containment active") - empty
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
    print_scale(r);
    print_detector(r);
    print_delivery(r);
}

pub(super) fn print_scale(r: &Value) {
    for s in r["socket_scale"].as_array().into_iter().flatten() {
        println!(
            "  {:>6} active sockets: agent CPU {:.2} % of one core, RSS {:.1} MiB (peak {:.1}), flows reported {}",
            s["sockets"],
            s["cpu_percent"].as_f64().unwrap_or(0.0),
            s["rss_mib"].as_f64().unwrap_or(0.0),
            s["peak_rss_mib"].as_f64().unwrap_or(0.0),
            s["flows_in_busiest_window"]
        );
    }
}

pub(super) fn print_detector(r: &Value) {
    for d in r["detector"].as_array().into_iter().flatten() {
        let rate = d["samples_per_second_median"].as_f64().unwrap_or(0.0);
        let bytes = d["bytes_per_pair"].as_f64().unwrap_or(f64::MAX);
        println!(
            "  detector at {:>7} peers: {:.2} M samples/s on one core (target >= 1: {}), {:.0} bytes per (service, peer) (target <= 512: {})",
            d["peers"],
            rate / 1e6,
            met(rate >= 1e6),
            bytes,
            met(bytes <= 512.0)
        );
    }
}

pub(super) fn print_delivery(r: &Value) {
    let d = &r["delivery"];
    if d.is_null() {
        return;
    }
    let rate = |k: &str| d[format!("{k}_median")].as_f64().unwrap_or(0.0);
    println!(
        "  alert delivery ({} events): outbox {:.0}/s, file (OCSF, fsync per batch) {:.0}/s, syslog TCP (OCSF) {:.0}/s",
        d["events"],
        rate("record_events_per_second"),
        rate("file_ocsf_fsync_batch_events_per_second"),
        rate("syslog_tcp_ocsf_events_per_second"),
    );
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

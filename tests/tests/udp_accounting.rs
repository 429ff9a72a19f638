//! UDP byte counts are exact: every datagram is one IP packet of payload + 8 (UDP) + 20 (IPv4)
//! or + 40 (IPv6) bytes.

use std::time::Duration;

use integration_tests::{Agent, Traffic, traffic_exe, udp_sink};
use monitor::flow::{FlowSample, Protocol};

fn send_and_count(sink_addr: &str, count: u64, size: u64, fresh: bool, ip_overhead: u64) {
    let sink = udp_sink(sink_addr);
    let to = sink.local_addr().unwrap();
    let agent = Agent::start(&["--interval", "200ms"]);
    let mut args = vec![
        "udp-send".to_owned(),
        to.to_string(),
        count.to_string(),
        size.to_string(),
    ];
    if fresh {
        args.push("--socket-per-datagram".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sender = Traffic::start(&args);
    let pid = sender.pid();
    sender.expect_line("done", Duration::from_secs(60));
    agent.wait_for_sample_of(pid, Duration::from_secs(10));
    sender.go();
    sender.wait();
    let run = agent.stop();
    let mine =
        |s: &FlowSample| s.owner.pid == Some(pid) && s.remote.is_some_and(|r| r.port == to.port());
    assert_eq!(
        run.bytes_where(mine),
        count * (size + 8 + ip_overhead),
        "bytes"
    );
    assert_eq!(run.packets_where(mine), count, "packets");
    for s in run.samples.iter().filter(|s| mine(s)) {
        let (first, last) = (
            s.first_seen.expect("first_seen"),
            s.last_seen.expect("last_seen"),
        );
        assert!(first <= last, "{s:?}");
        // The coarse clock may lag a few ms behind the precise one, never run ahead of it.
        assert!(
            last <= s.window_end,
            "last packet after the window closed: {s:?}"
        );
    }
    let s = run.samples.iter().find(|s| mine(s)).expect("sample");
    assert_eq!(s.protocol, Protocol::Udp);
    assert_eq!(s.remote.unwrap().addr, to.ip());
    assert_eq!(s.owner.exe.as_deref(), Some(traffic_exe().as_str()));
}

#[test]
fn udp_ipv4_bytes_are_exact() {
    send_and_count("127.0.0.1:0", 2000, 1200, false, 20);
}

#[test]
fn udp_ipv6_bytes_are_exact() {
    send_and_count("[::1]:0", 2000, 1200, false, 40);
}

/// 5,000 short-lived sockets, each created, used once and closed within one poll interval:
/// their sum is exact (nothing lost between polls or on socket release).
#[test]
fn five_thousand_short_lived_udp_sockets_within_one_interval_sum_exactly() {
    // A 30 s interval: every socket opens and closes long before the first poll; the agent's
    // final poll at SIGTERM reports them.
    let sink = udp_sink("127.0.0.1:0");
    let to = sink.local_addr().unwrap();
    let agent = Agent::start(&["--interval", "30s"]);
    let mut sender = Traffic::start(&[
        "udp-send",
        &to.to_string(),
        "5000",
        "100",
        "--socket-per-datagram",
    ]);
    let pid = sender.pid();
    sender.expect_line("done", Duration::from_secs(60));
    sender.go();
    sender.wait();
    assert!(
        agent.samples_so_far().is_empty(),
        "the test needs all sockets to close before the first poll"
    );
    let run = agent.stop();
    let mine =
        |s: &FlowSample| s.owner.pid == Some(pid) && s.remote.is_some_and(|r| r.port == to.port());
    assert_eq!(run.bytes_where(mine), 5000 * (100 + 28));
    assert_eq!(run.packets_where(mine), 5000);
    let flows: u32 = run
        .samples
        .iter()
        .filter(|s| mine(s))
        .map(|s| s.flows)
        .sum();
    assert_eq!(flows, 5000, "one flow per socket");
}

/// Two threads on two CPUs send on one socket at once: no increment is lost.
#[test]
fn concurrent_cpus_on_one_socket_are_counted_exactly() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        cpus >= 2,
        "this test needs two CPUs, the machine has {cpus}"
    );
    let sink = udp_sink("127.0.0.1:0");
    let to = sink.local_addr().unwrap();
    let agent = Agent::start(&["--interval", "200ms"]);
    let mut sender = Traffic::start(&["two-cpu-udp", &to.to_string(), "20000", "64"]);
    let pid = sender.pid();
    sender.expect_line("done", Duration::from_secs(60));
    sender.go();
    sender.wait();
    let run = agent.stop();
    let mine =
        |s: &FlowSample| s.owner.pid == Some(pid) && s.remote.is_some_and(|r| r.port == to.port());
    assert_eq!(run.packets_where(mine), 40_000);
    assert_eq!(run.bytes_where(mine), 40_000 * (64 + 28));
}

//! Passive DNS on the real kernel: a DNS answer received by a local socket names the
//! destination it resolved (IPv4 and IPv6), answers from other ports do not, and the
//! `watch_ingress` program, run on crafted packets, copies exactly UDP payloads from port 53,
//! always lets packets pass, and counts what it cannot copy.

use std::{net::SocketAddr, time::Duration};

use integration_tests::{
    Agent, bpf_test_run::DnsUnderTest, dns::resolve_through, require_root, udp_sink,
};
use monitor::flow::FlowSample;
use monitor_common::{DNS_CAPTURE_BYTES, ProgError};

fn to(addr: SocketAddr) -> impl Fn(&FlowSample) -> bool {
    move |s| {
        s.remote
            .is_some_and(|r| r.addr == addr.ip() && r.port == addr.port())
    }
}

/// Resolves `name` to `dest`'s address through a fake server at `server`, sends one datagram
/// to `dest` from the resolving socket, and returns the agent's first sample for it.
fn resolve_then_send(agent: &Agent, server: &str, name: &str, dest: SocketAddr) -> FlowSample {
    let client = resolve_through(server.parse().unwrap(), name, &[dest.ip()]);
    client.send_to(&[0x5a; 100], dest).expect("send");
    agent.wait_for_sample(&format!("to {dest}"), to(dest), Duration::from_secs(10))
}

#[test]
fn a_dns_answer_names_the_destination() {
    let sink = udp_sink("127.0.0.9:0");
    let dest = sink.local_addr().unwrap();
    let agent = Agent::start(&["--interval", "200ms"]);
    assert_eq!(agent.attach_log()["passive_dns"], true);
    let first = resolve_then_send(&agent, "127.0.0.2:53", "exfil.example.test", dest);
    let run = agent.stop();
    assert_eq!(
        first.remote_name.as_deref(),
        Some("exfil.example.test"),
        "the first sample to the address already carries its name: {first:?}"
    );
    for s in run.samples.iter().filter(|s| to(dest)(s)) {
        assert_eq!(
            s.remote_name.as_deref(),
            Some("exfil.example.test"),
            "{s:?}"
        );
    }
    let dns = run.dns_stats();
    assert!(dns["answers"].as_u64() >= Some(1), "{dns}");
    assert!(dns["learned"].as_u64() >= Some(1), "{dns}");
    assert_eq!(run.kernel_error("dns_ring_full"), 0);
}

#[test]
fn an_aaaa_answer_names_an_ipv6_destination() {
    let sink = udp_sink("[::1]:0");
    let dest = sink.local_addr().unwrap();
    let agent = Agent::start(&["--interval", "200ms"]);
    let first = resolve_then_send(&agent, "[::1]:53", "v6.example.test", dest);
    agent.stop();
    assert_eq!(
        first.remote_name.as_deref(),
        Some("v6.example.test"),
        "{first:?}"
    );
}

/// The program copies UDP from source port 53 only: a DNS-shaped answer from port 5353 names
/// nothing. A real port-53 answer in the same run names its address, so the test cannot pass
/// with passive DNS simply not working.
#[test]
fn answers_from_other_ports_give_no_name() {
    let other = udp_sink("127.0.0.10:0");
    let control = udp_sink("127.0.0.11:0");
    let (other, control) = (other.local_addr().unwrap(), control.local_addr().unwrap());
    let agent = Agent::start(&["--interval", "200ms"]);
    resolve_then_send(&agent, "127.0.0.2:5353", "notdns.example.test", other);
    resolve_then_send(&agent, "127.0.0.2:53", "control.example.test", control);
    let run = agent.stop();
    let named = |dest: SocketAddr| -> Vec<Option<String>> {
        run.samples
            .iter()
            .filter(|s| to(dest)(s))
            .map(|s| s.remote_name.as_deref().map(str::to_owned))
            .collect()
    };
    let control_names = named(control);
    assert!(
        control_names
            .iter()
            .all(|n| n.as_deref() == Some("control.example.test")),
        "{control_names:?}"
    );
    let other_names = named(other);
    assert!(!other_names.is_empty(), "a sample to {other}");
    assert!(other_names.iter().all(Option::is_none), "{other_names:?}");
}

// ---- The kernel program on crafted packets (BPF_PROG_TEST_RUN) ----

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

fn udp(sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&40000u16.to_be_bytes());
    u.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// IPv4 with `options` bytes of IP options (a multiple of 4).
fn ipv4(protocol: u8, options: usize, l4: &[u8]) -> Vec<u8> {
    let ihl = 20 + options;
    let mut p = vec![0u8; ihl];
    p[0] = 0x40 | u8::try_from(ihl / 4).unwrap();
    p[2..4].copy_from_slice(&u16::try_from(ihl + l4.len()).unwrap().to_be_bytes());
    p[8] = 64;
    p[9] = protocol;
    p[12..16].copy_from_slice(&[192, 0, 2, 53]);
    p[16..20].copy_from_slice(&[10, 0, 0, 1]);
    p.extend_from_slice(l4);
    p
}

/// IPv6 with a hop-by-hop and a destination options header before `protocol`.
fn ipv6_with_ext_headers(protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[6] = 0; // hop-by-hop
    p[7] = 64;
    p[8..24].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53]);
    p[24..40].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop -> destination options
    p.extend_from_slice(&[protocol, 1]); // destination options (16 bytes) -> protocol
    p.extend_from_slice(&[0u8; 14]);
    p.extend_from_slice(l4);
    let payload_len = u16::try_from(p.len() - 40).unwrap();
    p[4..6].copy_from_slice(&payload_len.to_be_bytes());
    p
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn watch_ingress_copies_udp_payloads_from_port_53_only() {
    require_root();
    let mut prog = DnsUnderTest::load();
    let answer = payload(100);

    // IPv4 with options, IPv6 behind two extension headers: the payload, exactly.
    assert_eq!(
        prog.run(ETH_P_IP, &ipv4(17, 8, &udp(53, &answer))).unwrap(),
        1
    );
    assert_eq!(
        prog.run(ETH_P_IPV6, &ipv6_with_ext_headers(17, &udp(53, &answer)))
            .unwrap(),
        1
    );
    assert_eq!(
        prog.captures(),
        vec![(100, answer.clone()), (100, answer.clone())]
    );

    // Not DNS answers: UDP from another port, TCP from port 53, UDP *to* port 53.
    let mut tcp = 53u16.to_be_bytes().to_vec();
    tcp.extend_from_slice(&[
        0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x18, 0, 0, 0, 0, 0, 0,
    ]);
    tcp.extend_from_slice(&answer);
    let mut to_53 = udp(40000, &answer);
    to_53[2..4].copy_from_slice(&53u16.to_be_bytes());
    for (what, pkt) in [
        ("udp from 5353", ipv4(17, 0, &udp(5353, &answer))),
        ("tcp from 53", ipv4(6, 0, &tcp)),
        ("udp to 53", ipv4(17, 0, &to_53)),
    ] {
        assert_eq!(prog.run(ETH_P_IP, &pkt).unwrap(), 1, "{what}");
    }
    assert_eq!(prog.captures(), vec![], "nothing but answers from port 53");
    assert_eq!(prog.error(ProgError::DnsParse as u32), 0);
}

#[test]
fn watch_ingress_cuts_long_answers_and_counts_what_it_cannot_read() {
    require_root();
    let mut prog = DnsUnderTest::load();
    // Longer than the copy: the real length is reported, the start is copied.
    let long = payload(700);
    assert_eq!(
        prog.run(ETH_P_IP, &ipv4(17, 0, &udp(53, &long))).unwrap(),
        1
    );
    assert_eq!(
        prog.captures(),
        vec![(700, long[..DNS_CAPTURE_BYTES].to_vec())]
    );

    // An empty datagram from port 53 and an unparsable header: passed, counted, not copied.
    assert_eq!(prog.run(ETH_P_IP, &ipv4(17, 0, &udp(53, &[]))).unwrap(), 1);
    let mut bad = ipv4(17, 0, &udp(53, &long));
    bad[0] = 0x55;
    assert_eq!(
        prog.run(ETH_P_IP, &bad).unwrap(),
        1,
        "a malformed packet passes"
    );
    assert_eq!(prog.captures(), vec![]);
    assert_eq!(prog.error(ProgError::DnsParse as u32), 2);
}

/// Nobody reads the ring: it fills, every further answer is counted as `dns_ring_full`, and
/// every packet still passes.
#[test]
fn a_full_dns_ring_is_counted_and_packets_still_pass() {
    require_root();
    let mut prog = DnsUnderTest::load();
    let pkt = ipv4(17, 0, &udp(53, &payload(64)));
    let runs = 3000;
    let (verdict, _) = prog.run_timed(ETH_P_IP, &pkt, runs).unwrap();
    assert_eq!(verdict, 1);
    let captured = prog.captures().len() as u64;
    let full = prog.error(ProgError::DnsRingFull as u32);
    assert!(full > 0, "the ring must have filled ({captured} captured)");
    assert_eq!(
        captured + full,
        u64::from(runs),
        "each run captured or counted"
    );
}

/// Cost of `watch_ingress` per ingress packet, measured by the kernel around 1M runs
/// (`cargo xtask test --filter cost -- --ignored --nocapture`): the common case (not DNS) and
/// a DNS answer (copy included; the ring is drained between rounds).
#[test]
#[ignore = "measurement; run on demand"]
fn cost_of_watch_ingress() {
    require_root();
    let mut prog = DnsUnderTest::load();
    let mut tcp = 443u16.to_be_bytes().to_vec();
    tcp.extend_from_slice(&[
        0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x10, 0, 0, 0, 0, 0, 0,
    ]);
    tcp.extend_from_slice(&payload(1000));
    let tcp = ipv4(6, 0, &tcp);
    for _ in 0..3 {
        let (verdict, ns) = prog.run_timed(ETH_P_IP, &tcp, 1_000_000).unwrap();
        assert_eq!(verdict, 1);
        println!("watch_ingress, IPv4 TCP (not DNS): {ns} ns per run (BPF_PROG_TEST_RUN)");
    }
    // A datagram that is not DNS, from a peer that spoke before (its conversation recorded
    // on the first run, looked up on the others).
    let datagram = ipv4(17, 0, &udp(4000, &payload(200)));
    for _ in 0..3 {
        let (verdict, ns) = prog.run_timed(ETH_P_IP, &datagram, 1_000_000).unwrap();
        assert_eq!(verdict, 1);
        println!(
            "watch_ingress, IPv4 UDP (not DNS, known peer): {ns} ns per run (BPF_PROG_TEST_RUN)"
        );
    }
    let answer = ipv4(17, 0, &udp(53, &payload(120)));
    for _ in 0..3 {
        let (verdict, ns) = prog.run_timed(ETH_P_IP, &answer, 500).unwrap();
        assert_eq!(verdict, 1);
        assert_eq!(prog.captures().len(), 500);
        println!(
            "watch_ingress, IPv4 DNS answer of 120 bytes: {ns} ns per run (BPF_PROG_TEST_RUN)"
        );
    }
}

//! The egress program on crafted packets, in the kernel, through `BPF_PROG_TEST_RUN`: it always
//! lets the packet pass, parses IPv4/IPv6 (with extension headers) destinations, and counts
//! what it cannot parse instead of dropping it.

use integration_tests::{
    bpf_test_run::{EgressUnderTest, EgressWithEnforcer, empty_program_cost},
    require_root,
};
use monitor_common::{ProgError, Untracked, packet::v4_mapped};

fn ipv4_udp(dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
    let total = 20 + 8 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p
}

fn ipv6_tcp_with_ext_headers(dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[6] = 0; // hop-by-hop
    p[7] = 64;
    p[8..24].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p[24..40].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop -> destination options
    p.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]); // destination options -> TCP
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&50000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 0x50;
    p.extend_from_slice(&tcp);
    let payload_len = (p.len() - 40) as u16;
    p[4..6].copy_from_slice(&payload_len.to_be_bytes());
    p
}

/// Each egress program this kernel accepts (`count_egress`, its fallback `count_egress_ns`).
fn egress_programs() -> Vec<EgressUnderTest> {
    let progs = EgressUnderTest::all_for_this_kernel();
    assert!(!progs.is_empty(), "no egress program for this kernel");
    progs
}

#[test]
fn ipv4_udp_destination_and_length() {
    require_root();
    for mut prog in egress_programs() {
        let name = prog.name();
        let pkt = ipv4_udp([192, 0, 2, 7], 443, 100);
        assert_eq!(
            prog.run(0x0800, &pkt, 3).unwrap(),
            1,
            "{name} must let the packet pass"
        );
        let flows = prog.flows();
        let (key, c) = flows
            .iter()
            .find(|(k, _)| k.remote_addr == v4_mapped([192, 0, 2, 7]))
            .expect("flow");
        assert_eq!(
            (key.remote_port, key.protocol, key.ip_version),
            (443, 17, 4),
            "{name}"
        );
        assert_eq!(c.packets, 3, "{name}: three runs on one socket, one flow");
        assert_eq!(c.bytes, 3 * pkt.len() as u64, "{name}");
        assert_eq!(c.local_port, 40000, "{name}");
        assert_eq!(c.local_addr, v4_mapped([10, 0, 0, 1]), "{name}");
        // Runs 2 and 3 stamped the flow with the program's clock (the coarse one may lag
        // the insert's fine stamp by a tick, never by a second).
        assert!(c.last_seen_ns > 0, "{name}: last_seen stamped");
        assert!(
            c.last_seen_ns.abs_diff(c.first_seen_ns) < 1_000_000_000,
            "{name}: both stamps on CLOCK_MONOTONIC: {c:?}"
        );
    }
}

#[test]
fn ipv6_extension_headers_are_walked_in_the_kernel() {
    require_root();
    for mut prog in egress_programs() {
        let name = prog.name();
        let pkt = ipv6_tcp_with_ext_headers(8448);
        assert_eq!(prog.run(0x86dd, &pkt, 1).unwrap(), 1, "{name}");
        let flows = prog.flows();
        let (key, c) = flows.iter().find(|(k, _)| k.ip_version == 6).expect("flow");
        assert_eq!(key.remote_addr[15], 2, "{name}");
        assert_eq!((key.remote_port, key.protocol), (8448, 6), "{name}");
        assert_eq!(c.bytes, pkt.len() as u64, "{name}");
    }
}

#[test]
fn unparsable_packets_pass_and_are_counted() {
    require_root();
    for mut prog in egress_programs() {
        let name = prog.name();
        let mut bad = ipv4_udp([192, 0, 2, 9], 53, 10);
        bad[0] = 0x55; // IP version 5
        assert_eq!(
            prog.run(0x0800, &bad, 1).unwrap(),
            1,
            "{name}: a malformed packet still passes"
        );
        assert_eq!(prog.flows(), vec![], "{name}");
        assert_eq!(prog.error(ProgError::Parse as u32), 1, "{name}");
        let v = prog.untracked(Untracked::Unparsed as u32);
        assert_eq!((v.bytes, v.packets), (bad.len() as u64, 1), "{name}");
    }
}

/// Average cost of one run of the egress program on an existing flow, measured by the kernel
/// around a loop of 1M runs (`cargo xtask test --filter cost -- --ignored --nocapture`;
/// `cargo xtask bench` runs it and parses its lines). A measurement, not a pass/fail check:
/// it prints, and only fails if the programs misbehave.
///
/// Each enforcing egress program this kernel accepts is loaded in one object with its variant
/// without enforcement (they share `FLOWS` and the containment maps), and measured with no
/// containment, then with one containment active (a throttle set through the agent's own
/// `Enforcer`, for another peer of the same cgroup: the measured flow is uncontained, but the
/// rules exist and their epoch is not 0, as on a host where containment is in use).
#[test]
#[ignore = "measurement; run on demand"]
fn cost_of_one_run_on_an_existing_flow() {
    use monitor::{
        contain::kernel::{KernelAction, KernelRule},
        kernel::compat,
    };
    require_root();
    let version = compat::parse_release(&compat::running_release());
    let pairs: Vec<(&str, &str)> = compat::all_programs()
        .filter(|p| p.attach == compat::AttachPoint::SkbEgress)
        .filter(|p| version >= compat::parse_release(p.min_kernel))
        .filter_map(|p| Some((p.name, p.without_enforcement?.name)))
        .collect();
    assert!(
        !pairs.is_empty(),
        "no enforcing egress program for this kernel"
    );
    let measured = [192, 0, 2, 7];
    let contained = [192, 0, 2, 99];
    for (enforcing, observing) in pairs {
        let mut progs = EgressWithEnforcer::load(&[enforcing, observing]);
        let pkt = ipv4_udp(measured, 443, 1000);
        for _ in 0..3 {
            let ns = empty_program_cost(0x0800, &pkt, 1_000_000).unwrap();
            println!(
                "cost: empty program (the test-run loop alone): {ns} ns per run (BPF_PROG_TEST_RUN)"
            );
        }
        let measure = |progs: &mut EgressWithEnforcer, setting: &str| {
            for name in [enforcing, observing] {
                for _ in 0..3 {
                    let (verdict, ns) = progs.run_timed(name, 0x0800, &pkt, 1_000_000).unwrap();
                    assert_eq!(verdict, 1, "{name}: an uncontained flow passes");
                    println!("cost: {name}, {setting}: {ns} ns per run (BPF_PROG_TEST_RUN)");
                }
            }
        };
        measure(&mut progs, "no containment");

        // One containment, for another peer of the cgroup the test-run sockets are in.
        let cgroup = progs.flows()[0].1.cgroup_id;
        let rule = KernelRule {
            id: 1,
            cgroups: vec![cgroup],
            network: "192.0.2.99/32".parse().unwrap(),
            action: KernelAction::Throttle {
                bytes_per_sec: 256 * 1024,
                burst_bytes: 128 * 1024,
            },
            exempt: Vec::new(),
        };
        progs
            .enforcer()
            .apply(&[rule])
            .expect("apply the containment");
        let to_contained = ipv4_udp(contained, 443, 1000);
        assert_eq!(
            progs
                .run_timed(enforcing, 0x0800, &to_contained, 1)
                .unwrap()
                .0,
            1,
            "{enforcing}: the contained peer's first packet fits its bucket"
        );
        let stats = progs.enforcer().stats().expect("bucket stats");
        assert_eq!(
            stats.iter().map(|(_, s)| s.passed_packets).sum::<u64>(),
            1,
            "{enforcing}: the containment is active in the kernel: {stats:?}"
        );
        measure(&mut progs, "one containment active");

        let flows = progs.flows();
        for (key, c) in &flows {
            let slot_expected = key.remote_addr == v4_mapped(contained);
            assert_eq!(
                c.contain_slot != 0,
                slot_expected,
                "{enforcing}: only the contained peer's flow has a slot: {key:?} {c:?}"
            );
        }
        assert!(
            flows.iter().any(|(_, c)| c.contain_epoch != 0),
            "{enforcing}: flows created after the rule carry its epoch"
        );
    }
}

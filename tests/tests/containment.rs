//! Containment in the kernel: the egress program's token bucket and block rules, driven through
//! the agent's own API (`monitor::contain::kernel::Enforcer`), on real TCP downloads.
//!
//! Each test loads and attaches the kernel programs in this process, on a cgroup of its own
//! (`/egress-contain-PID`, two service cgroups inside), never on the root; servers (the
//! `traffic` helper) run in the service cgroups, clients in this process, bound to loopback
//! addresses (127.0.0.66, 127.0.0.67, ...) so that each is its own peer. Everything is
//! detached and removed on drop, panics included. Loops are bounded in count and time.

use std::{
    fs,
    net::Ipv4Addr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    cgroup2_root,
    downloads::{Download, MIB, TestCgroup, connect_from, mib, rates, server},
    require_root, tcp_retransmitted_segments,
};
use monitor::{
    contain::kernel::{BucketStats, DropMode, Enforcer, KernelAction, KernelRule},
    kernel::loader::{self, Attached, LoadOptions},
};

/// The throttle rate of the convergence test.
const RATE: u64 = 2 * MIB;
/// Half a second of the rate. On loopback a throttled TCP sender whose packet is dropped
/// locally (nothing left in flight) sends again when its probe timer fires, 200 ms or more
/// later; a bucket smaller than what the rate earns meanwhile caps the average below the rate
/// (measured: a 128 KiB bucket held a 2 MiB/s rule to 0.5 MiB/s).
const BURST: u64 = RATE / 2;
const THROTTLED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 66);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 67);
const THIRD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 68);

/// The test's cgroups, with or without the programs attached to the parent. Field order is
/// drop order: programs first, then the service cgroups, then their parent.
struct Setup {
    attached: Option<Attached>,
    enforcer: Option<Enforcer>,
    a: TestCgroup,
    b: TestCgroup,
    parent: TestCgroup,
}

impl Setup {
    fn new(tag: &str) -> Self {
        require_root();
        let parent = TestCgroup::create(
            Path::new(&cgroup2_root()).join(format!("egress-contain-{}-{tag}", std::process::id())),
        );
        let a = TestCgroup::create(parent.path().join("a.service"));
        let b = TestCgroup::create(parent.path().join("b.service"));
        let mut s = Self {
            attached: None,
            enforcer: None,
            a,
            b,
            parent,
        };
        s.attach();
        s
    }

    fn attach(&mut self) {
        let mut attached = loader::load_and_attach_to(LoadOptions::default(), self.parent.path())
            .unwrap_or_else(|e| panic!("attach: {}", loader::error_chain(&e)));
        assert!(attached.enforcement, "this kernel refused enforcement");
        self.enforcer = Some(attached.enforcer().expect("an enforcer"));
        self.attached = Some(attached);
    }

    /// Detaches every program (what the agent's exit or SIGKILL does).
    fn detach(&mut self) {
        self.enforcer = None;
        self.attached = None;
    }

    fn enforcer(&mut self) -> &mut Enforcer {
        self.enforcer.as_mut().expect("attached")
    }

    fn apply(&mut self, rules: &[KernelRule]) {
        self.enforcer()
            .apply(rules)
            .unwrap_or_else(|e| panic!("apply: {}", loader::error_chain(&e)));
    }

    fn stats_of(&mut self, id: u64) -> BucketStats {
        self.enforcer()
            .stats()
            .expect("stats")
            .into_iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s)
            .unwrap_or_default()
    }
}

/// Request sockets (state `SYN_RECV` in `/proc/net/tcp`) from `peer` to local port `port`.
fn syn_recv_from(peer: Ipv4Addr, port: u16) -> usize {
    let peer_hex = format!("{:08X}", u32::from_ne_bytes(peer.octets()));
    let local_suffix = format!(":{port:04X}");
    fs::read_to_string("/proc/net/tcp")
        .expect("/proc/net/tcp")
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && f[1].ends_with(&local_suffix)
                && f[2].starts_with(&peer_hex)
                && f[3] == "03"
        })
        .count()
}

fn throttle(id: u64, cgroup: u64, peer: Ipv4Addr, bytes_per_sec: u64) -> KernelRule {
    KernelRule {
        id,
        cgroups: vec![cgroup],
        network: ipnet::IpNet::from(std::net::IpAddr::V4(peer)),
        action: KernelAction::Throttle {
            bytes_per_sec,
            burst_bytes: BURST,
        },
        exempt: Vec::new(),
    }
}

fn block(id: u64, cgroup: u64, peer: Ipv4Addr) -> KernelRule {
    KernelRule {
        id,
        cgroups: vec![cgroup],
        network: ipnet::IpNet::from(std::net::IpAddr::V4(peer)),
        action: KernelAction::Block,
        exempt: Vec::new(),
    }
}

/// At least this many bytes per second is "not throttled" beside a 2 MiB/s throttle (which
/// holds a flow within 1.2 x its rate): loopback does hundreds of MiB/s per flow here, but
/// 12-34 MiB/s in QEMU without KVM while the host is busy (measured on 6.1: 19.5 MiB/s for an
/// untouched peer failed a 20 MiB/s bar).
const FULL_SPEED: f64 = 4.0 * RATE as f64;

/// 1. A throttled peer's download converges to the rate (±20 % over 10 s) while another peer
///    of the same server, and a server in another cgroup, go at full speed at the same time.
#[test]
fn a_throttled_peer_converges_to_the_rate_and_others_keep_full_speed() {
    let mut setup = Setup::new("rate");
    let (_server_a, addr_a) = server(&setup.a);
    let (_server_b, addr_b) = server(&setup.b);
    let id_a = setup.a.id();
    setup.apply(&[throttle(1, id_a, THROTTLED, RATE)]);
    let throttled = Download::start(THROTTLED, addr_a);
    let other_peer = Download::start(OTHER, addr_a);
    let other_service = Download::start(THROTTLED, addr_b);
    // The burst and TCP's first reaction: one second, then the measured ten.
    thread::sleep(Duration::from_secs(1));
    let retrans = tcp_retransmitted_segments();
    let r = rates(
        &[&throttled, &other_peer, &other_service],
        Duration::from_secs(10),
    );
    let retrans = tcp_retransmitted_segments() - retrans;
    let stats = setup.stats_of(1);
    println!(
        "throttled {} (target {}), other peer {}, other service {}; bucket {stats:?}; {retrans} retransmitted segments",
        mib(r[0]),
        mib(RATE as f64),
        mib(r[1]),
        mib(r[2]),
    );
    let ratio = r[0] / RATE as f64;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "throttled peer at {} for a {} rule ({ratio:.3} of it)",
        mib(r[0]),
        mib(RATE as f64)
    );
    assert!(r[1] > FULL_SPEED, "the other peer got {}", mib(r[1]));
    assert!(r[2] > FULL_SPEED, "the other service got {}", mib(r[2]));
    assert!(
        stats.dropped_packets > 0 && stats.passed_bytes > 0,
        "{stats:?}"
    );
}

/// 1b. A throttled prefix leaves its exempted address alone (a more specific key with no
///     bucket: the trie's longest match finds no containment), while another address of the
///     prefix is throttled.
#[test]
fn an_exempted_address_inside_a_throttled_prefix_keeps_full_speed() {
    let mut setup = Setup::new("exempt");
    let (_server_a, addr_a) = server(&setup.a);
    let id_a = setup.a.id();
    let mut rule = throttle(7, id_a, THROTTLED, RATE);
    rule.network = "127.0.0.0/24".parse().unwrap();
    rule.exempt = vec![ipnet::IpNet::from(std::net::IpAddr::V4(OTHER))];
    setup.apply(&[rule]);
    let throttled = Download::start(THROTTLED, addr_a);
    let exempted = Download::start(OTHER, addr_a);
    thread::sleep(Duration::from_secs(1));
    let r = rates(&[&throttled, &exempted], Duration::from_secs(5));
    println!("prefix member {}, exempted member {}", mib(r[0]), mib(r[1]));
    let ratio = r[0] / RATE as f64;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "prefix member at {}",
        mib(r[0])
    );
    assert!(r[1] > FULL_SPEED, "the exempted address got {}", mib(r[1]));
}

/// What converges best for TCP: drop with congestion notification (the default) against a
/// plain drop, at the same rate (`--ignored --nocapture`: a measurement, prints).
#[test]
#[ignore = "measurement; run on demand"]
fn drop_modes_compared() {
    let mut setup = Setup::new("modes");
    let (_server_a, addr_a) = server(&setup.a);
    let id_a = setup.a.id();
    for (n, mode) in [DropMode::CongestionNotification, DropMode::Plain]
        .into_iter()
        .enumerate()
    {
        let id = 10 + n as u64;
        setup.enforcer().set_drop_mode(mode);
        setup.apply(&[throttle(id, id_a, THROTTLED, RATE)]);
        let d = Download::start(THROTTLED, addr_a);
        thread::sleep(Duration::from_secs(1));
        let retrans = tcp_retransmitted_segments();
        let per_second: Vec<String> = (0..10)
            .map(|_| mib(rates(&[&d], Duration::from_secs(1))[0]))
            .collect();
        let retrans = tcp_retransmitted_segments() - retrans;
        let stats = setup.stats_of(id);
        println!(
            "{mode:?}: per second {per_second:?}; {retrans} retransmitted segments; {stats:?}"
        );
        drop(d);
        setup.apply(&[]);
    }
}

/// 2. A blocked peer gets nothing: its open download stalls and its new connection is refused
///    (the SYN is dropped on ingress) while another peer of the same server is served.
#[test]
fn a_blocked_peer_gets_nothing_while_another_is_served() {
    let mut setup = Setup::new("block");
    let (_server_a, addr_a) = server(&setup.a);
    let id_a = setup.a.id();
    let blocked = Download::start(THROTTLED, addr_a);
    let served = Download::start(OTHER, addr_a);
    thread::sleep(Duration::from_millis(500));
    assert!(blocked.received() > 0, "the download runs before the block");
    assert!(
        setup.enforcer().blocks_ingress(),
        "ingress program attached"
    );
    setup.apply(&[block(2, id_a, THROTTLED)]);
    // What was already in flight or queued may still arrive for a moment.
    thread::sleep(Duration::from_millis(500));
    let r = rates(&[&blocked, &served], Duration::from_secs(2));
    let started = Instant::now();
    let refused = connect_from(THROTTLED, addr_a, Duration::from_millis(1500));
    let waited = started.elapsed();
    // Refused on ingress: the server's kernel never saw the SYN (no request socket for the
    // peer; a block on egress alone drops the SYN-ACK, leaving one in SYN_RECV).
    let half_open = syn_recv_from(THROTTLED, addr_a.port());
    let fresh = connect_from(OTHER, addr_a, Duration::from_secs(2));
    let stats = setup.stats_of(2);
    println!(
        "blocked {} B/s, served {}; new connection of the blocked peer: {:?} after {waited:?}; bucket {stats:?}",
        r[0],
        mib(r[1]),
        refused
            .as_ref()
            .map(|_| "connected")
            .map_err(ToString::to_string)
    );
    assert!(r[0] == 0.0, "the blocked peer still received {} B/s", r[0]);
    assert!(r[1] > FULL_SPEED, "the other peer got {}", mib(r[1]));
    assert!(
        refused.is_err(),
        "the blocked peer's new connection was accepted"
    );
    assert!(waited < Duration::from_secs(3), "refused in {waited:?}");
    assert_eq!(half_open, 0, "the server got the blocked peer's SYN");
    assert!(fresh.is_ok(), "the other peer's new connection: {fresh:?}");
    assert!(stats.dropped_packets > 0, "{stats:?}");
}

/// 3. Removing the rule gives full speed back within a second; so does detaching the programs
///    (what the agent's exit or SIGKILL does) with a rule in force.
#[test]
fn removing_the_rule_or_the_programs_restores_full_speed() {
    let mut setup = Setup::new("restore");
    let (_server_a, addr_a) = server(&setup.a);
    let id_a = setup.a.id();
    setup.apply(&[throttle(3, id_a, THROTTLED, RATE)]);
    let d = Download::start(THROTTLED, addr_a);
    thread::sleep(Duration::from_secs(2));
    let throttled = rates(&[&d], Duration::from_secs(1))[0];
    setup.apply(&[]);
    let removed_at = d.received();
    let t0 = Instant::now();
    // Within a second of the removal: full speed over the second half of that second.
    thread::sleep(Duration::from_millis(500));
    let after_removal = rates(&[&d], Duration::from_millis(500))[0];
    let first_second = (d.received() - removed_at) as f64 / t0.elapsed().as_secs_f64();
    let epoch = setup.enforcer().epoch().expect("epoch");
    assert_eq!(epoch.blocks, 0);
    assert_eq!(setup.enforcer().stats().expect("stats"), vec![]);

    // Throttled again, then the programs go: nothing stays throttled.
    setup.apply(&[throttle(4, id_a, THROTTLED, RATE)]);
    thread::sleep(Duration::from_secs(2));
    let throttled_again = rates(&[&d], Duration::from_secs(1))[0];
    setup.detach();
    thread::sleep(Duration::from_millis(500));
    let after_detach = rates(&[&d], Duration::from_millis(500))[0];
    // A connection made after the detach is not throttled either.
    let fresh = Download::start(THROTTLED, addr_a);
    let fresh_rate = rates(&[&fresh], Duration::from_secs(1))[0];
    println!(
        "throttled {}, after removal {} (first second {}), throttled again {}, after detach {}, new connection {}",
        mib(throttled),
        mib(after_removal),
        mib(first_second),
        mib(throttled_again),
        mib(after_detach),
        mib(fresh_rate)
    );
    assert!(
        throttled < 1.5 * RATE as f64,
        "not throttled: {}",
        mib(throttled)
    );
    assert!(
        throttled_again < 1.5 * RATE as f64,
        "not throttled again: {}",
        mib(throttled_again)
    );
    assert!(
        after_removal > FULL_SPEED,
        "after removal {}",
        mib(after_removal)
    );
    assert!(
        after_detach > FULL_SPEED,
        "after detach {}",
        mib(after_detach)
    );
    assert!(
        fresh_rate > FULL_SPEED,
        "after detach, new {}",
        mib(fresh_rate)
    );
}

/// 4. With no rule for it, a bulk download goes as fast with the programs attached as without
///    them (alternating rounds of 2 s, medians compared), and nothing is dropped: the rules of
///    another cgroup in force saw none of its packets, and TCP retransmits no more than it
///    does uninstrumented.
#[test]
fn without_rules_a_bulk_download_is_as_fast_as_uninstrumented() {
    const ROUNDS: usize = 5;
    let mut setup = Setup::new("norules");
    let (_server_a, addr_a) = server(&setup.a);
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut retrans_with = 0;
    let mut retrans_without = 0;
    for round in 0..2 * ROUNDS {
        let instrumented = round % 2 == 0;
        if instrumented {
            if setup.attached.is_none() {
                setup.attach();
            }
            // Rules for another cgroup exist: flows do the epoch check and look their rules
            // up once, finding none for them.
            let id_b = setup.b.id();
            setup.apply(&[throttle(5, id_b, THIRD, RATE), block(6, id_b, OTHER)]);
        } else {
            setup.detach();
        }
        let before = tcp_retransmitted_segments();
        let d = Download::start(THROTTLED, addr_a);
        thread::sleep(Duration::from_millis(300));
        let r = rates(&[&d], Duration::from_secs(2))[0];
        let retransmitted = tcp_retransmitted_segments() - before;
        drop(d);
        if instrumented {
            with.push(r);
            retrans_with += retransmitted;
            let stats = setup.enforcer().stats().expect("stats");
            assert!(
                stats
                    .iter()
                    .all(|(_, s)| s.dropped_packets == 0 && s.passed_packets == 0),
                "the rules of another cgroup touched this download: {stats:?}"
            );
        } else {
            without.push(r);
            retrans_without += retransmitted;
        }
    }
    setup.detach();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m_with, m_without) = (median(&mut with), median(&mut without));
    let ratio = m_with / m_without;
    println!(
        "median with programs {} (rounds {:?}), without {} (rounds {:?}): ratio {ratio:.3}; retransmitted segments {retrans_with} with, {retrans_without} without",
        mib(m_with),
        with.iter().map(|r| mib(*r)).collect::<Vec<_>>(),
        mib(m_without),
        without.iter().map(|r| mib(*r)).collect::<Vec<_>>(),
    );
    // Loopback at full speed retransmits a little by itself (the softirq backlog overflows;
    // measured: about a hundred segments in 10 s, attached or not): the programs must not
    // add to it.
    assert!(
        retrans_with <= 2 * retrans_without + 50,
        "{retrans_with} segments retransmitted with the programs, {retrans_without} without"
    );
    // In QEMU without KVM (a stretched time scale) the rounds spread over 2x in each arm
    // (41-81 MiB/s measured on 5.10): only a gross slowdown is told from that noise there.
    let bar = if integration_tests::time::scale() > 1.0 {
        0.7
    } else {
        0.85
    };
    assert!(
        ratio > bar,
        "with the programs {} against {} without (bar {bar})",
        mib(m_with),
        mib(m_without)
    );
}

//! Every flow's direction: `served` when the peer came first (a TCP connection accepted from a
//! local listener, a UDP peer whose datagram reached a bound port before the host sent it
//! anything), `initiated` when the host did. Real sockets on loopback with the agent running,
//! then the kernel programs on crafted packets (`BPF_PROG_TEST_RUN`) for what loopback cannot
//! stage: a forged-peer flood of the UDP conversation table.

use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use integration_tests::{
    Agent, Finished, Traffic, bpf_test_run::DirectionUnderTest, cgroup2_root,
    exclusive_attach::Exclusive, require_root,
};
use monitor::flow::{Direction, FlowSample, Protocol};
use monitor_common::{
    FLOW_DIRECTION_UNKNOWN, FLOW_INITIATED, FLOW_SERVED, UDP_PEERS_ENTRIES,
    packet::{ETH_P_IP, v4_mapped},
};

/// The directions of the samples `which` selects; fails when there is none.
fn directions_of(
    run: &Finished,
    what: &str,
    which: impl Fn(&FlowSample) -> bool,
) -> Vec<Option<Direction>> {
    let found: Vec<Option<Direction>> = run
        .samples
        .iter()
        .filter(|s| which(s))
        .map(|s| s.direction)
        .collect();
    assert!(!found.is_empty(), "no sample of {what}: {:#?}", run.samples);
    found
}

/// The server's flows on `port` (owner `server`, local port `port`) are all served, the
/// client's (owner `client`, remote port `port`) all initiated; each side has samples.
fn assert_split(run: &Finished, server: u32, client: u32, protocol: Protocol, port: u16) {
    let served = directions_of(run, "the server side", |s| {
        s.owner.pid == Some(server)
            && s.protocol == protocol
            && s.local.is_some_and(|l| l.port == port)
    });
    assert!(
        served.iter().all(|d| *d == Some(Direction::Served)),
        "server side: {served:?}"
    );
    let initiated = directions_of(run, "the client side", |s| {
        s.owner.pid == Some(client)
            && s.protocol == protocol
            && s.remote.is_some_and(|r| r.port == port)
    });
    assert!(
        initiated.iter().all(|d| *d == Some(Direction::Initiated)),
        "client side: {initiated:?}"
    );
}

/// The agent says it attached both optional direction programs (the table puts them at 5.10
/// and 5.8, below the agent's own minimum: every kernel the suite runs on has them).
fn assert_kernel_sources(agent: &Agent) {
    let log = agent.attach_log();
    assert_eq!(log["tcp_direction"], true, "{log}");
    assert_eq!(log["udp_direction"], true, "{log}");
}

/// A client connects to a local server, which sends and closes. The server's flows are
/// served, the client's initiated, each decided by the kernel (the agent's attach log says
/// both direction programs are in).
fn tcp_connection_both_ends(bind: &str, connect_to: IpAddr) {
    let agent = Agent::start(&["--interval", "200ms"]);
    assert_kernel_sources(&agent);
    let mut server = Traffic::start(&["tcp-serve", bind, "200000"]);
    let port: u16 = server.expect_line("port", Duration::from_secs(10))[1]
        .parse()
        .unwrap();
    let server_pid = server.pid();
    let mut client = TcpStream::connect(SocketAddr::new(connect_to, port)).expect("connect");
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("read");
    assert_eq!(got.len(), 200_000);
    drop(client);
    server.expect_line("done", Duration::from_secs(10));
    agent.wait_for_sample_of(server_pid, Duration::from_secs(10));
    server.go();
    server.wait();
    let run = agent.stop();
    let me = std::process::id();
    assert_split(&run, server_pid, me, Protocol::Tcp, port);
}

#[test]
fn tcp_ipv4_accepted_is_served_and_connecting_is_initiated() {
    tcp_connection_both_ends("127.0.0.1:0", "127.0.0.1".parse().unwrap());
}

#[test]
fn tcp_ipv6_accepted_is_served_and_connecting_is_initiated() {
    tcp_connection_both_ends("[::1]:0", "::1".parse().unwrap());
}

/// 200 connections opened, used and closed long before the first poll, by a process that has
/// exited (its listener closed with it) when the agent reads them: the directions come from
/// the kernel alone, the listener table having nothing left to say.
#[test]
fn short_connections_closed_before_the_first_poll_keep_their_direction() {
    const CONNS: u64 = 200;
    let agent = Agent::start(&["--interval", "30s"]);
    let t = Traffic::start(&["short-tcp", &CONNS.to_string(), "1000"]);
    let port: u16 = t.expect_line("port", Duration::from_secs(10))[1]
        .parse()
        .unwrap();
    t.expect_line("done", Duration::from_secs(60));
    let pid = t.pid();
    t.wait();
    assert!(
        agent.samples_so_far().is_empty(),
        "the connections must be gone before the first poll"
    );
    let run = agent.stop();
    assert_split(&run, pid, pid, Protocol::Tcp, port);
    let ours = |s: &FlowSample| s.owner.pid == Some(pid) && s.protocol == Protocol::Tcp;
    // Every connection's client flow is there (one flow per connecting socket).
    let flows: u32 = run
        .samples
        .iter()
        .filter(|s| ours(s) && s.remote.is_some_and(|r| r.port == port))
        .map(|s| s.flows)
        .sum();
    assert_eq!(u64::from(flows), CONNS, "client flows");
}

/// A UDP server that receives before it answers is served; its client, which sent first,
/// initiated.
fn udp_both_ends(bind: &str, client_bind: &str) {
    const DATAGRAMS: u64 = 20;
    let agent = Agent::start(&["--interval", "200ms"]);
    assert_kernel_sources(&agent);
    let mut server = Traffic::start(&["udp-echo", bind, &DATAGRAMS.to_string()]);
    let port: u16 = server.expect_line("port", Duration::from_secs(10))[1]
        .parse()
        .unwrap();
    let server_pid = server.pid();
    let client = UdpSocket::bind(client_bind).expect("bind the client");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let to = SocketAddr::new(client.local_addr().unwrap().ip(), port);
    let mut buf = [0u8; 256];
    for i in 0..DATAGRAMS {
        client.send_to(&[i as u8; 100], to).expect("send");
        let (n, from) = client.recv_from(&mut buf).expect("the echo");
        assert_eq!((n, from), (100, to));
    }
    server.expect_line("done", Duration::from_secs(10));
    agent.wait_for_sample_of(server_pid, Duration::from_secs(10));
    server.go();
    server.wait();
    let run = agent.stop();
    let me = std::process::id();
    assert_split(&run, server_pid, me, Protocol::Udp, port);
}

#[test]
fn udp_ipv4_server_receiving_first_is_served_and_its_client_initiated() {
    udp_both_ends("127.0.0.1:0", "127.0.0.1:0");
}

#[test]
fn udp_ipv6_server_receiving_first_is_served_and_its_client_initiated() {
    udp_both_ends("[::1]:0", "[::1]:0");
}

/// A connection made before the agent started: the kernel saw neither its handshake nor its
/// creation. The accepted end is still on its listener's port, so the agent's listener table
/// calls it served; the connecting end matches no listener and stays without direction (the
/// detector infers one from the ports).
#[test]
fn a_connection_older_than_the_agent_gets_the_listener_fallback_or_nothing() {
    let mut t = Traffic::start(&["pre-existing", "200000"]);
    let port: u16 = t.expect_line("ready", Duration::from_secs(10))[1]
        .parse()
        .unwrap();
    let pid = t.pid();
    let agent = Agent::start(&["--interval", "200ms"]);
    t.go();
    t.expect_line("done", Duration::from_secs(10));
    agent.wait_for_sample_of(pid, Duration::from_secs(10));
    t.go();
    t.wait();
    let run = agent.stop();
    let ours = |s: &FlowSample| s.owner.pid == Some(pid) && s.protocol == Protocol::Tcp;
    let accepted = directions_of(&run, "the accepted end", |s| {
        ours(s) && s.local.is_some_and(|l| l.port == port)
    });
    assert!(
        accepted.iter().all(|d| *d == Some(Direction::Served)),
        "accepted end: {accepted:?}"
    );
    // Selected by its ends alone: an older socket's owner is found through sock_diag and
    // /proc, which does not always name this one in time (seen twice in under 20 runs here, leaving it
    // unattributed), and its direction does not depend on it.
    let connecting = directions_of(&run, "the connecting end", |s| {
        s.protocol == Protocol::Tcp && s.remote.is_some_and(|r| r.port == port)
    });
    assert!(
        connecting.iter().all(Option::is_none),
        "connecting end: {connecting:?}"
    );
}

/// A host where the `sockops` hook is taken: another tool attached a program there without
/// `BPF_F_ALLOW_MULTI`, so the kernel refuses the agent's (`EPERM`). The agent still runs, says
/// once that TCP direction comes from SYNs and the listeners, and its TCP flows still get
/// their direction: the client's from its SYN, the accepted end's from the listener table.
#[test]
fn a_refused_sockops_program_leaves_the_agent_running_with_the_fallbacks() {
    require_root();
    let blocker = Exclusive::sock_ops(&cgroup2_root())
        .expect("attach an exclusive sockops program to the cgroup root (is another attached?)");
    let agent = Agent::start(&["--interval", "200ms"]);
    let log = agent.attach_log();
    assert_eq!(log["tcp_direction"], false, "{log}");
    assert_eq!(log["udp_direction"], true, "{log}");
    let warning = agent.wait_for_log_where(Duration::from_secs(5), |l| {
        l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("TCP direction from the kernel unavailable"))
    });
    assert_eq!(
        warning["program"], "record_tcp_direction",
        "the log line names the program: {warning}"
    );
    let mut server = Traffic::start(&["tcp-serve", "127.0.0.1:0", "100000"]);
    let port: u16 = server.expect_line("port", Duration::from_secs(10))[1]
        .parse()
        .unwrap();
    let server_pid = server.pid();
    let mut client =
        TcpStream::connect(SocketAddr::new("127.0.0.1".parse().unwrap(), port)).expect("connect");
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("read");
    assert_eq!(got.len(), 100_000);
    drop(client);
    server.expect_line("done", Duration::from_secs(10));
    agent.wait_for_sample_of(server_pid, Duration::from_secs(10));
    server.go();
    server.wait();
    let run = agent.stop();
    drop(blocker);
    let me = std::process::id();
    assert_split(&run, server_pid, me, Protocol::Tcp, port);
}

/// An IPv4 UDP datagram `src:sport -> dst:dport` with `payload` bytes.
fn ipv4_udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
    let total = 20 + 8 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    p
}

/// An IPv4 TCP segment to `dst:443` with header `flags`.
fn ipv4_tcp(dst: [u8; 4], flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&50000u16.to_be_bytes());
    p[22..24].copy_from_slice(&443u16.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags;
    p
}

/// A socket the kernel has no mark for (the test run's own): the first packet's flags decide.
#[test]
fn a_tcp_flows_first_packet_tells_its_direction_in_the_kernel() {
    require_root();
    let mut prog = DirectionUnderTest::load();
    let cases = [
        ([192, 0, 2, 1], 0x02, FLOW_INITIATED),         // SYN
        ([192, 0, 2, 2], 0x12, FLOW_SERVED),            // SYN-ACK
        ([192, 0, 2, 3], 0x10, FLOW_DIRECTION_UNKNOWN), // ACK: opened before it was seen
        ([192, 0, 2, 4], 0x18, FLOW_DIRECTION_UNKNOWN), // PSH-ACK
    ];
    for (dst, flags, _) in cases {
        assert_eq!(prog.send(ETH_P_IP, &ipv4_tcp(dst, flags), 1).unwrap(), 1);
    }
    let flows = prog.flows();
    for (dst, flags, expected) in cases {
        let (_, c) = flows
            .iter()
            .find(|(k, _)| k.remote_addr == v4_mapped(dst))
            .unwrap_or_else(|| panic!("no flow to {dst:?}: {flows:?}"));
        assert_eq!(c.direction, expected, "flags {flags:#04x}");
    }
}

/// A flood of datagrams from forged peers, more than the conversation table holds, only
/// evicts old records: the table never exceeds its size, every packet passes, and counting
/// is untouched. A conversation whose peer spoke within the table's memory is still served.
#[test]
fn a_forged_peer_flood_only_evicts_udp_records() {
    require_root();
    let mut prog = DirectionUnderTest::load();
    let local = [10, 0, 0, 1];
    let flood = UDP_PEERS_ENTRIES + 4096;
    for i in 0..flood {
        let [_, a, b, c] = i.to_be_bytes();
        let forged = ipv4_udp([100, a, b, c], 4000, local, 53, 32);
        assert_eq!(prog.receive(ETH_P_IP, &forged).unwrap(), 1, "datagram {i}");
    }
    let peers = prog.udp_peers();
    assert!(
        peers.len() <= UDP_PEERS_ENTRIES as usize,
        "{} records in a table of {UDP_PEERS_ENTRIES}",
        peers.len()
    );
    assert!(
        peers.len() > UDP_PEERS_ENTRIES as usize / 2,
        "the table holds the flood's recent peers: {}",
        peers.len()
    );
    assert!(peers.iter().all(|(_, d)| *d == FLOW_SERVED));
    // The latest forged peer, answered: served. Its 3 answers are counted exactly.
    let [_, a, b, c] = (flood - 1).to_be_bytes();
    let answer = ipv4_udp(local, 53, [100, a, b, c], 4000, 32);
    assert_eq!(prog.send(ETH_P_IP, &answer, 3).unwrap(), 1);
    // A peer that never spoke: the test run's socket has no recorded creator, so the kernel
    // claims nothing (a socket created under the agent would be `initiated`).
    let unsolicited = ipv4_udp(local, 40000, [192, 0, 2, 9], 53, 32);
    assert_eq!(prog.send(ETH_P_IP, &unsolicited, 1).unwrap(), 1);
    let flows = prog.flows();
    let flow_to = |addr: [u8; 4]| {
        flows
            .iter()
            .find(|(k, _)| k.remote_addr == v4_mapped(addr))
            .map_or_else(|| panic!("no flow to {addr:?}: {flows:?}"), |(_, c)| *c)
    };
    let answered = flow_to([100, a, b, c]);
    assert_eq!(answered.direction, FLOW_SERVED);
    assert_eq!(
        (answered.packets, answered.bytes),
        (3, 3 * answer.len() as u64)
    );
    assert_eq!(flow_to([192, 0, 2, 9]).direction, FLOW_DIRECTION_UNKNOWN);
}

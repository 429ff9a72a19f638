//! A one-shot DNS exchange on loopback for the passive DNS tests: a "server" socket bound on
//! a loopback address answers one query from a fresh client socket with the addresses the
//! test chooses. Messages are built by hand (RFC 1035 wire format), independent of the
//! agent's parser.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;

/// How long a test waits for a datagram on loopback before failing.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(label.len()).expect("label length"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A standard query (RD set) for `name`, type `qtype`, class IN.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&wire_name(name));
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

/// A NOERROR response to `query`: its question, then one A or AAAA record per address,
/// owned by the question name (a compression pointer to offset 12).
pub fn response(query: &[u8], addrs: &[IpAddr], ttl: u32) -> Vec<u8> {
    let mut m = query[..2].to_vec();
    m.extend_from_slice(&[0x81, 0x80, 0, 1]);
    m.extend_from_slice(&u16::try_from(addrs.len()).expect("count").to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&query[12..]);
    for addr in addrs {
        let (rtype, rdata) = match addr {
            IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
            IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
        };
        m.extend_from_slice(&[0xc0, 12]);
        m.extend_from_slice(&rtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&u16::try_from(rdata.len()).expect("len").to_be_bytes());
        m.extend_from_slice(&rdata);
    }
    m
}

/// Binds a fake DNS server on `server` (loopback only), sends it a query for `name` from a
/// fresh client socket, answers it with `addrs`, and returns the client socket once the
/// answer has arrived. Fails if the answer arrived altered: the kernel program only reads.
pub fn resolve_through(server: SocketAddr, name: &str, addrs: &[IpAddr]) -> UdpSocket {
    assert!(server.ip().is_loopback(), "tests stay on loopback");
    let srv = UdpSocket::bind(server).unwrap_or_else(|e| {
        panic!("cannot bind the fake DNS server on {server} ({e}): is a resolver listening there?")
    });
    let client_bind = if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let client = UdpSocket::bind(client_bind).expect("bind DNS client");
    for s in [&srv, &client] {
        s.set_read_timeout(Some(crate::scaled(RECV_TIMEOUT)))
            .expect("timeout");
    }
    let qtype = if addrs.first().is_some_and(IpAddr::is_ipv6) {
        TYPE_AAAA
    } else {
        TYPE_A
    };
    let q = query(0x4242, name, qtype);
    client.send_to(&q, server).expect("send query");
    let mut buf = [0u8; 1500];
    let (n, peer) = srv
        .recv_from(&mut buf)
        .expect("fake server receives the query");
    assert_eq!(&buf[..n], q.as_slice());
    let answer = response(&q, addrs, 60);
    srv.send_to(&answer, peer).expect("send answer");
    let (n, from) = client
        .recv_from(&mut buf)
        .expect("client receives the answer");
    assert_eq!(from, server);
    assert_eq!(
        &buf[..n],
        answer.as_slice(),
        "the answer must arrive unaltered"
    );
    client
}

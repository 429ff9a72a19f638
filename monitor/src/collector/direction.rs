//! The direction of each flow. The kernel decides it when it sees a flow's first packet
//! (`FlowCounters::direction`); where it could not (a TCP socket older than the agent, or a
//! kernel without the `sockops` program, whose accepted connections start with no SYN of
//! their own), a TCP flow whose local end is a local listener's is an accepted connection.
//! Otherwise the direction stays unknown and the detector infers it from the ports.

use std::{
    io,
    net::IpAddr,
    time::{Duration, Instant},
};

use monitor_common::{FLOW_INITIATED, FLOW_SERVED, IPPROTO_TCP, IPPROTO_UDP};
use rustc_hash::FxHashMap;

use crate::{
    attribution::sockdiag::{self, DiagSocket},
    flow::{Direction, Endpoint},
    kernel::loader::DirectionSources,
};

/// What the kernel's `FLOW_*` value says, given which of its sources are attached.
pub fn from_kernel(protocol: u8, value: u8, sources: DirectionSources) -> Option<Direction> {
    // Without the ingress program no UDP peer is ever recorded as first, so the egress
    // program's "initiated" would be said of every UDP flow, served ones included.
    if protocol == IPPROTO_UDP && !sources.udp_peers {
        return None;
    }
    match value {
        FLOW_SERVED => Some(Direction::Served),
        FLOW_INITIATED => Some(Direction::Initiated),
        _ => None,
    }
}

/// The agent's direction of one flow: the kernel's, else the listeners' for TCP.
pub fn of_flow(
    protocol: u8,
    value: u8,
    sources: DirectionSources,
    local: Endpoint,
    listeners: &mut Listeners,
    now: Instant,
) -> Option<Direction> {
    from_kernel(protocol, value, sources).or_else(|| {
        (protocol == IPPROTO_TCP && listeners.accepts(local, now)).then_some(Direction::Served)
    })
}

/// How long a listener table is used before it is read again.
const MAX_AGE: Duration = Duration::from_secs(10);
/// How soon after the last read a flow matching no listener makes the table be read again
/// (a listener opened since, whose first connections are being reported).
const MISS_RETRY: Duration = Duration::from_secs(2);

/// Source of the listening TCP sockets (`sock_diag` in the agent, a fixture in tests).
type Dump = Box<dyn FnMut() -> io::Result<Vec<DiagSocket>> + Send>;

/// The host's listening TCP sockets, by port, read lazily: only when a flow needs them, at
/// most every [`MAX_AGE`], or [`MISS_RETRY`] after a miss. A host whose flows all have a
/// kernel direction never reads it.
pub struct Listeners {
    dump: Dump,
    /// Local addresses listening on each port (unspecified: every address).
    by_port: FxHashMap<u16, Vec<IpAddr>>,
    read_at: Option<Instant>,
    reads: u64,
    failed_once: bool,
}

impl Default for Listeners {
    fn default() -> Self {
        Self::with_dump(Box::new(sockdiag::dump_tcp_listeners))
    }
}

impl Listeners {
    pub fn with_dump(dump: Dump) -> Self {
        Self {
            dump,
            by_port: FxHashMap::default(),
            read_at: None,
            reads: 0,
            failed_once: false,
        }
    }

    /// Times the table was read.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Whether `local` is the local end of a connection accepted from a listener: it has a
    /// listener's port, on the listener's address or under a wildcard listener. (An outgoing
    /// connection bound to a listening port matches too; servers rarely make those.)
    pub fn accepts(&mut self, local: Endpoint, now: Instant) -> bool {
        let age = self.read_at.map(|at| now.saturating_duration_since(at));
        if age.is_none_or(|a| a >= MAX_AGE) {
            self.read(now);
            return self.matches(local);
        }
        if self.matches(local) {
            return true;
        }
        if age.is_some_and(|a| a >= MISS_RETRY) {
            self.read(now);
            return self.matches(local);
        }
        false
    }

    fn matches(&self, local: Endpoint) -> bool {
        let addr = local.addr.to_canonical();
        self.by_port
            .get(&local.port)
            .is_some_and(|addrs| addrs.iter().any(|a| a.is_unspecified() || *a == addr))
    }

    fn read(&mut self, now: Instant) {
        self.read_at = Some(now);
        self.reads += 1;
        match (self.dump)() {
            Ok(sockets) => {
                self.by_port.clear();
                for s in sockets.iter().filter(|s| s.state == sockdiag::TCP_LISTEN) {
                    self.by_port
                        .entry(s.sport)
                        .or_default()
                        .push(sockdiag::local_ip(s));
                }
            }
            // The last table is kept; said once, as a failure would repeat every read.
            Err(error) if !self.failed_once => {
                self.failed_once = true;
                tracing::warn!(%error, "listing TCP listeners (sock_diag) failed: accepted connections older than the agent get no direction");
            }
            Err(error) => tracing::debug!(%error, "listing TCP listeners failed again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use monitor_common::FLOW_DIRECTION_UNKNOWN;

    use super::*;

    const BOTH: DirectionSources = DirectionSources {
        tcp_marks: true,
        udp_peers: true,
    };

    fn listener(family: i32, src: [u32; 4], port: u16) -> DiagSocket {
        DiagSocket {
            family: family as u8,
            cookie: 1,
            inode: 1,
            uid: 0,
            state: sockdiag::TCP_LISTEN,
            sport: port,
            src,
        }
    }

    fn v4(a: [u8; 4]) -> [u32; 4] {
        [u32::from_ne_bytes(a), 0, 0, 0]
    }

    fn at(addr: &str, port: u16) -> Endpoint {
        Endpoint {
            addr: addr.parse().unwrap(),
            port,
        }
    }

    /// Listeners read from `table` (shared, so a test can change it), counting reads.
    fn listeners(table: &Arc<Mutex<Vec<DiagSocket>>>) -> Listeners {
        let table = table.clone();
        Listeners::with_dump(Box::new(move || Ok(table.lock().unwrap().clone())))
    }

    #[test]
    fn the_kernels_values_map_to_directions() {
        let tcp = IPPROTO_TCP;
        assert_eq!(from_kernel(tcp, FLOW_SERVED, BOTH), Some(Direction::Served));
        assert_eq!(
            from_kernel(tcp, FLOW_INITIATED, BOTH),
            Some(Direction::Initiated)
        );
        assert_eq!(from_kernel(tcp, FLOW_DIRECTION_UNKNOWN, BOTH), None);
        assert_eq!(
            from_kernel(tcp, 7, BOTH),
            None,
            "a value from a newer kernel object"
        );
        // TCP directions from SYNs stand without the sockops program.
        let no_marks = DirectionSources {
            tcp_marks: false,
            udp_peers: true,
        };
        assert_eq!(
            from_kernel(tcp, FLOW_INITIATED, no_marks),
            Some(Direction::Initiated)
        );
        assert_eq!(
            from_kernel(IPPROTO_UDP, FLOW_SERVED, BOTH),
            Some(Direction::Served)
        );
    }

    #[test]
    fn udp_directions_mean_nothing_without_the_ingress_program() {
        let no_peers = DirectionSources {
            tcp_marks: true,
            udp_peers: false,
        };
        assert_eq!(from_kernel(IPPROTO_UDP, FLOW_INITIATED, no_peers), None);
        assert_eq!(
            from_kernel(IPPROTO_TCP, FLOW_SERVED, no_peers),
            Some(Direction::Served)
        );
    }

    #[test]
    fn an_unknown_tcp_flow_on_a_listeners_port_is_served() {
        let table = Arc::new(Mutex::new(vec![
            listener(libc::AF_INET, v4([127, 0, 0, 5]), 8080),
            listener(libc::AF_INET6, [0; 4], 443),
        ]));
        let mut l = listeners(&table);
        let now = Instant::now();
        let mut of = |local: Endpoint, value: u8, protocol: u8| {
            of_flow(protocol, value, BOTH, local, &mut l, now)
        };
        // The wildcard IPv6 listener covers IPv4 connections too (dual stack).
        assert_eq!(
            of(at("127.0.0.9", 443), FLOW_DIRECTION_UNKNOWN, IPPROTO_TCP),
            Some(Direction::Served)
        );
        assert_eq!(
            of(at("127.0.0.5", 8080), FLOW_DIRECTION_UNKNOWN, IPPROTO_TCP),
            Some(Direction::Served)
        );
        // Another address than the listener's, another port: not accepted from it.
        assert_eq!(
            of(at("127.0.0.6", 8080), FLOW_DIRECTION_UNKNOWN, IPPROTO_TCP),
            None
        );
        assert_eq!(
            of(at("127.0.0.5", 41000), FLOW_DIRECTION_UNKNOWN, IPPROTO_TCP),
            None
        );
        // UDP has no listeners; the kernel's word is never overruled.
        assert_eq!(
            of(at("127.0.0.5", 8080), FLOW_DIRECTION_UNKNOWN, IPPROTO_UDP),
            None
        );
        assert_eq!(
            of(at("127.0.0.5", 8080), FLOW_INITIATED, IPPROTO_TCP),
            Some(Direction::Initiated)
        );
    }

    #[test]
    fn flows_with_a_kernel_direction_never_read_the_listeners() {
        let table = Arc::new(Mutex::new(vec![listener(libc::AF_INET, [0; 4], 80)]));
        let mut l = listeners(&table);
        let now = Instant::now();
        for value in [FLOW_SERVED, FLOW_INITIATED] {
            for _ in 0..1000 {
                of_flow(IPPROTO_TCP, value, BOTH, at("127.0.0.1", 80), &mut l, now);
            }
        }
        assert_eq!(l.reads(), 0);
    }

    #[test]
    fn the_table_is_read_again_only_when_old_or_after_a_miss() {
        let table = Arc::new(Mutex::new(vec![listener(libc::AF_INET, [0; 4], 80)]));
        let mut l = listeners(&table);
        let t0 = Instant::now();
        assert!(l.accepts(at("10.0.0.1", 80), t0));
        assert_eq!(l.reads(), 1);
        // Hits and misses within MISS_RETRY use the table as read.
        for _ in 0..100 {
            assert!(l.accepts(at("10.0.0.1", 80), t0 + Duration::from_millis(500)));
            assert!(!l.accepts(at("10.0.0.1", 9000), t0 + Duration::from_millis(500)));
        }
        assert_eq!(l.reads(), 1);
        // A listener opened since: its first connection misses, and once MISS_RETRY has
        // passed that miss reads the table again.
        table
            .lock()
            .unwrap()
            .push(listener(libc::AF_INET, [0; 4], 9000));
        assert!(!l.accepts(at("10.0.0.1", 9000), t0 + MISS_RETRY / 2));
        assert!(l.accepts(at("10.0.0.1", 9000), t0 + MISS_RETRY));
        assert_eq!(l.reads(), 2);
        // Hits alone read it again after MAX_AGE, so a closed listener is forgotten.
        table.lock().unwrap().clear();
        assert!(l.accepts(at("10.0.0.1", 80), t0 + MISS_RETRY + MAX_AGE / 2));
        assert!(!l.accepts(at("10.0.0.1", 80), t0 + MISS_RETRY + MAX_AGE));
        assert_eq!(l.reads(), 3);
    }

    #[test]
    fn a_failed_read_keeps_the_last_table() {
        let fail = Arc::new(Mutex::new(false));
        let f = fail.clone();
        let mut l = Listeners::with_dump(Box::new(move || {
            if *f.lock().unwrap() {
                Err(io::Error::from_raw_os_error(libc::EPERM))
            } else {
                Ok(vec![listener(libc::AF_INET, [0; 4], 22)])
            }
        }));
        let t0 = Instant::now();
        assert!(l.accepts(at("10.0.0.1", 22), t0));
        *fail.lock().unwrap() = true;
        assert!(l.accepts(at("10.0.0.1", 22), t0 + MAX_AGE));
        assert_eq!(l.reads(), 2);
    }
}

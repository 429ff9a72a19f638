//! Simulated hosts on one machine: a ureq connector that binds each client's sockets to its
//! own loopback source address (127.0.0.x) before connecting, so that nginx answers, and the
//! agent sees egress to, a distinct peer per client. It also counts the bytes each client
//! receives and sends at the TCP level (headers and bodies, what nginx really sent), which
//! is what the agent's byte counts are compared with.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use ureq::{
    Agent,
    unversioned::{
        resolver::DefaultResolver,
        transport::{Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport},
    },
};

/// Bytes through one client's connections, all of them (shared by the connector and every
/// transport it made).
#[derive(Debug, Default)]
pub struct Counters {
    received: AtomicU64,
    sent: AtomicU64,
}

impl Counters {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// Opens plain TCP connections from `source` (port chosen by the kernel).
#[derive(Debug)]
pub struct SourceConnector {
    source: IpAddr,
    counters: Arc<Counters>,
}

impl SourceConnector {
    /// A connector whose bytes add to `counters` (a client that moved to a new address
    /// keeps one count).
    pub fn counting_into(source: IpAddr, counters: Arc<Counters>) -> Self {
        Self { source, counters }
    }

    fn open(&self, to: SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
        // Bound before connect: the kernel would otherwise pick 127.0.0.1 (the route's
        // preferred source) for every client, and all of them would be one peer.
        socket.bind(&SocketAddr::new(self.source, 0).into())?;
        match timeout {
            Some(t) => socket.connect_timeout(&to.into(), t)?,
            None => socket.connect(&to.into())?,
        }
        Ok(socket.into())
    }
}

impl Connector<()> for SourceConnector {
    type Out = Counting;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<Counting>, ureq::Error> {
        // Only addresses of the source's family can be reached from it.
        let to = details
            .addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == self.source.is_ipv4())
            .ok_or_else(|| {
                ureq::Error::Io(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("no address of {}'s family to connect to", self.source),
                ))
            })?;
        let stream = self.open(to, details.timeout.not_zero().map(|t| *t))?;
        if details.config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        // No shutdown handle is registered: these agents are never shut down from another
        // thread (each client stops at its own deadline, every read has a timeout).
        Ok(Some(Counting {
            stream,
            buffers,
            counters: Arc::clone(&self.counters),
        }))
    }
}

/// A TCP transport (as ureq's own, which it does not export) that adds what it reads and
/// writes to its client's counters.
#[derive(Debug)]
pub struct Counting {
    stream: TcpStream,
    buffers: LazyBuffers,
    counters: Arc<Counters>,
}

/// An I/O error as ureq reports it: a socket timeout is the request's timeout.
fn io_error(e: io::Error, timeout: NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ureq::Error::Timeout(timeout.reason),
        _ => ureq::Error::Io(e),
    }
}

impl Transport for Counting {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.stream
            .set_write_timeout(timeout.not_zero().map(|t| *t))?;
        (&self.stream)
            .write_all(&self.buffers.output()[..amount])
            .map_err(|e| io_error(e, timeout))?;
        self.counters
            .sent
            .fetch_add(amount as u64, Ordering::Relaxed);
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        self.stream
            .set_read_timeout(timeout.not_zero().map(|t| *t))?;
        let input = self.buffers.input_append_buf();
        let n = loop {
            match (&self.stream).read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r.map_err(|e| io_error(e, timeout))?,
            }
        };
        self.buffers.input_appended(n);
        self.counters
            .received
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n > 0)
    }

    /// Open when a non-blocking read finds nothing to read (the server has not closed it).
    fn is_open(&mut self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let open = matches!(
            (&self.stream).read(&mut [0]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        );
        open && self.stream.set_nonblocking(false).is_ok()
    }
}

/// A client agent as [`super::client::agent`] (no proxy, statuses as answers) whose
/// connections come from `source`; and its counters.
pub fn agent_from(source: IpAddr, timeout: Duration) -> (Agent, Arc<Counters>) {
    let counters = Arc::default();
    (agent_counting(source, timeout, &counters), counters)
}

/// An agent from `source` whose bytes add to `counters`.
pub fn agent_counting(source: IpAddr, timeout: Duration, counters: &Arc<Counters>) -> Agent {
    let connector = SourceConnector::counting_into(source, Arc::clone(counters));
    let config = Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build();
    Agent::with_parts(config, connector, DefaultResolver::default())
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, TcpListener},
        thread,
    };

    use super::*;

    /// A one-request HTTP server on 127.0.0.1: answers `body` and reports the peer address
    /// of the connection it accepted.
    fn serve_once(body: &'static str) -> (u16, thread::JoinHandle<SocketAddr>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = thread::spawn(move || {
            let (mut conn, peer) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "request ended early");
                req.extend_from_slice(&buf[..n]);
            }
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            peer
        });
        (port, handle)
    }

    #[test]
    fn connections_come_from_the_clients_own_address_and_are_counted() {
        for last in [66u8, 123] {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            let (port, server) = serve_once("hello from nginx");
            let (agent, counters) = agent_from(source, Duration::from_secs(10));
            let mut res = agent
                .get(&format!("http://127.0.0.1:{port}/x"))
                .call()
                .unwrap();
            let text = res.body_mut().read_to_string().unwrap();
            assert_eq!(text, "hello from nginx");
            let peer = server.join().unwrap();
            assert_eq!(peer.ip(), source, "the server saw the client's own address");
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\n";
            assert_eq!(counters.received(), (head.len() + text.len()) as u64);
            assert!(
                counters.sent() > "GET /x HTTP/1.1\r\n\r\n".len() as u64,
                "the request was counted: {}",
                counters.sent()
            );
        }
    }

    #[test]
    fn an_address_that_is_not_local_cannot_be_a_source() {
        // 192.0.2.1 (TEST-NET-1) is on no interface: bind fails, no connection is made.
        let (agent, _) = agent_from(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            Duration::from_secs(5),
        );
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(
            agent
                .get(&format!("http://127.0.0.1:{port}/"))
                .call()
                .is_err()
        );
    }
}

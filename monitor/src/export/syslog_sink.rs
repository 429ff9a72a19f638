//! Syslog transport: RFC 5424 messages over TCP or TLS (RFC 5425; octet counting by
//! default, or LF framing) or UDP (one message per datagram). Connections have timeouts; a
//! failed send drops the connection and reports the error, so the batch stays in the outbox
//! and is sent again on a fresh connection at the next round.

use std::{
    io::{self, Read as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket},
    time::{Duration, Instant},
};

use rustls::{ClientConnection, ProtocolVersion};
use serde::{Deserialize, Serialize};

use super::{
    Format, Reporter,
    deadline::{budget, write_all_within},
    syslog::{Framing, Payload, frame},
    tls::TlsClient,
    transport::{Sent, Transport, TransportError},
};
use crate::store::Pending;

/// Connect timeout, and the TLS handshake's. Writes have one deadline per batch (5 s plus
/// 1 s per 256 KiB, `deadline::budget`): a hung or trickling receiver costs a round at most
/// that long.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    /// TCP with TLS (RFC 5425), the receiver's certificate always verified.
    Tls,
}

/// An open stream to the receiver.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
}

pub struct SyslogSink {
    address: String,
    protocol: Protocol,
    framing: Framing,
    tls: Option<TlsClient>,
    stream: Option<Stream>,
    udp: Option<UdpSocket>,
}

impl SyslogSink {
    /// A TCP or UDP sink (`Protocol::Tls` needs [`SyslogSink::tls`]).
    pub fn new(address: String, protocol: Protocol, framing: Framing) -> Self {
        Self {
            address,
            protocol,
            framing,
            tls: None,
            stream: None,
            udp: None,
        }
    }

    /// A TLS sink: `client` verifies the receiver (and may authenticate this agent).
    pub fn tls(address: String, framing: Framing, client: TlsClient) -> Self {
        Self {
            tls: Some(client),
            ..Self::new(address, Protocol::Tls, framing)
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn resolve(&self) -> io::Result<SocketAddr> {
        self.address.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolves to nothing", self.address),
            )
        })
    }

    /// Sends `messages` (unframed RFC 5424 messages) in order.
    pub fn send(&mut self, messages: &[String]) -> io::Result<()> {
        let result = match self.protocol {
            Protocol::Tcp | Protocol::Tls => self.send_stream(messages),
            Protocol::Udp => self.send_udp(messages),
        };
        if result.is_err() {
            // A half-written stream cannot be trusted: start over on a new connection.
            self.stream = None;
            self.udp = None;
        }
        result
    }

    fn connect(&self) -> io::Result<Stream> {
        let addr = self.resolve()?;
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        tcp.set_nodelay(true)?;
        match (self.protocol, &self.tls) {
            (Protocol::Tls, Some(client)) => Ok(Stream::Tls(Box::new(TlsStream::handshake(
                tcp,
                client,
                &self.address,
            )?))),
            (Protocol::Tls, None) => Err(io::Error::other(
                "syslog over TLS without a TLS client configuration",
            )),
            _ => Ok(Stream::Tcp(tcp)),
        }
    }

    fn send_stream(&mut self, messages: &[String]) -> io::Result<()> {
        // A TLS receiver that went away (closed, or refused this agent after the handshake)
        // said so on the stream: reconnect rather than write into a dead connection.
        if let Some(Stream::Tls(tls)) = &mut self.stream
            && let Err(e) = tls.check_peer()
        {
            tracing::debug!(address = %self.address, error = %e, "syslog TLS connection closed; reconnecting");
            self.stream = None;
        }
        // Same for plain TCP: a receiver that restarted closed this connection, and bytes
        // written into it now would be answered with a reset and lost.
        if let Some(Stream::Tcp(tcp)) = &self.stream
            && let Err(e) = check_open(tcp)
        {
            tracing::debug!(address = %self.address, error = %e, "syslog connection closed; reconnecting");
            self.stream = None;
        }
        if self.stream.is_none() {
            self.stream = Some(self.connect()?);
        }
        let mut buf = Vec::new();
        for m in messages {
            buf.extend_from_slice(&frame(m, self.framing));
        }
        match self.stream.as_mut() {
            Some(Stream::Tcp(tcp)) => {
                let mut out: &TcpStream = tcp;
                write_all_within(&mut out, tcp, &buf, budget(buf.len()))
            }
            Some(Stream::Tls(tls)) => tls.write_all(&buf),
            None => Err(io::Error::other("syslog connection not open")),
        }
    }

    fn send_udp(&mut self, messages: &[String]) -> io::Result<()> {
        let target = self.resolve()?;
        if self.udp.is_none() {
            let bind = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(bind)?;
            socket.set_write_timeout(Some(TIMEOUT))?;
            self.udp = Some(socket);
        }
        let socket = self
            .udp
            .as_ref()
            .ok_or_else(|| io::Error::other("syslog socket not open"))?;
        for m in messages {
            socket.send_to(m.as_bytes(), target)?;
        }
        Ok(())
    }
}

/// A TLS connection whose handshake is complete.
struct TlsStream {
    conn: ClientConnection,
    tcp: TcpStream,
}

/// The least and the most time to wait after a TLS 1.3 handshake for the receiver's verdict.
const SETTLE_MIN: Duration = Duration::from_millis(50);
const SETTLE_MAX: Duration = Duration::from_secs(2);

impl TlsStream {
    /// Connects TLS over `tcp` and completes the handshake here, so a bad certificate, a name
    /// mismatch or an unknown CA is reported as a handshake error (with `address` and the
    /// name checked), not as a failed write later.
    fn handshake(tcp: TcpStream, client: &TlsClient, address: &str) -> io::Result<Self> {
        let name = client.server_name.to_str().into_owned();
        let context = |e: &dyn std::fmt::Display, kind: io::ErrorKind| {
            io::Error::new(
                kind,
                format!("TLS handshake with {address} (server name {name:?}): {e}"),
            )
        };
        let conn = ClientConnection::new(client.config.clone(), client.server_name.clone())
            .map_err(|e| context(&e, io::ErrorKind::InvalidInput))?;
        let mut s = Self { conn, tcp };
        s.tcp.set_read_timeout(Some(TIMEOUT))?;
        let started = Instant::now();
        while s.conn.is_handshaking() {
            if started.elapsed() > TIMEOUT {
                return Err(context(&"timed out", io::ErrorKind::TimedOut));
            }
            s.conn
                .complete_io(&mut s.tcp)
                .map_err(|e| context(&e, e.kind()))?;
        }
        // TLS 1.3: the receiver checks this agent's certificate (or its absence) only after
        // the client has finished its handshake, and answers a refusal with an alert. Wait a
        // little for it (about the handshake's own round trip), or the first batch would go
        // into a connection the receiver is closing.
        if s.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3) {
            let wait = (started.elapsed() * 2).clamp(SETTLE_MIN, SETTLE_MAX);
            s.settle(wait).map_err(|e| {
                context(
                    &format_args!("the receiver closed the connection after the handshake: {e}"),
                    e.kind(),
                )
            })?;
        }
        Ok(s)
    }

    /// Reads what the receiver sends for `wait` (session tickets, or an alert or the end of
    /// the stream, which are errors).
    fn settle(&mut self, wait: Duration) -> io::Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            self.tcp.set_read_timeout(Some(left))?;
            match self.read_records() {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Without blocking: an error if the receiver closed the connection or sent an alert.
    /// Reads a bounded number of times (a receiver that keeps sending cannot hold it).
    fn check_peer(&mut self) -> io::Result<()> {
        self.tcp.set_nonblocking(true)?;
        let mut result = Ok(());
        for _ in 0..64 {
            match self.read_records() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.tcp.set_nonblocking(false)?;
        result
    }

    /// Reads and processes one read's worth of TLS records; data the receiver sends (syslog
    /// receivers send none) is discarded.
    fn read_records(&mut self) -> io::Result<()> {
        if self.conn.read_tls(&mut self.tcp)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the receiver closed the connection",
            ));
        }
        let state = self
            .conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if state.peer_has_closed() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the receiver closed the connection",
            ));
        }
        let mut discard = vec![0; state.plaintext_bytes_to_read()];
        self.conn.reader().read_exact(&mut discard)
    }

    /// Writes within the batch's deadline (see `deadline`).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut socket: &TcpStream = &self.tcp;
        let mut stream = rustls::Stream::new(&mut self.conn, &mut socket);
        write_all_within(&mut stream, &self.tcp, buf, budget(buf.len()))
    }
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        // Best effort and bounded (the write timeout): tell the receiver this end is done.
        self.conn.send_close_notify();
        for _ in 0..4 {
            if !self.conn.wants_write() || self.conn.write_tls(&mut self.tcp).is_err() {
                break;
            }
        }
    }
}

/// Has the receiver closed `tcp` (or sent something, which a syslog receiver never does)?
/// A non-blocking peek: `WouldBlock` means open and silent.
fn check_open(tcp: &TcpStream) -> io::Result<()> {
    tcp.set_nonblocking(true)?;
    let peeked = tcp.peek(&mut [0u8; 1]);
    tcp.set_nonblocking(false)?;
    match peeked {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the receiver closed the connection",
        )),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the receiver sent data (not a syslog receiver?)",
        )),
    }
}

/// A syslog sink with its facility and the format of the message part.
pub struct SyslogTransport {
    pub sink: SyslogSink,
    pub facility: u8,
    pub format: Format,
    /// `ocsf_network_activity`: each finding about one peer followed by its traffic.
    pub network_activity: bool,
}

impl Transport for SyslogTransport {
    fn target(&self) -> String {
        self.sink.address().to_owned()
    }

    fn send(&mut self, batch: &[Pending], reporter: &Reporter) -> Result<Sent, TransportError> {
        let payload = Payload::Format(self.format);
        let mut messages = Vec::with_capacity(batch.len());
        for p in batch {
            messages.extend(p.event.syslog_messages(
                reporter,
                self.facility,
                payload,
                self.network_activity,
            ));
        }
        self.sink.send(&messages)?;
        Ok(Sent::all(batch))
    }
}

/// A minimal syslog receiver for tests.
#[cfg(test)]
pub(crate) mod receiver {
    use std::{
        io::{self, BufRead as _, BufReader, Read},
        net::TcpListener,
    };

    /// Reads `n` octet-counted messages from one connection.
    pub fn read_octet_counted(listener: &TcpListener, n: usize) -> Vec<String> {
        let (stream, _) = listener.accept().unwrap();
        read_frames(stream, n).unwrap()
    }

    /// Reads `n` octet-counted messages from a stream.
    pub fn read_frames(stream: impl Read, n: usize) -> io::Result<Vec<String>> {
        let mut r = BufReader::new(stream);
        (0..n)
            .map(|_| {
                let mut len = Vec::new();
                r.read_until(b' ', &mut len)?;
                let len: usize = std::str::from_utf8(len.strip_suffix(b" ").unwrap_or(&len))
                    .ok()
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(|| io::Error::other(format!("bad frame length {len:?}")))?;
                let mut msg = vec![0; len];
                r.read_exact(&mut msg)?;
                String::from_utf8(msg).map_err(io::Error::other)
            })
            .collect()
    }
}

#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader},
        net::TcpListener,
        thread,
    };

    use super::*;

    #[test]
    fn tcp_octet_counting_reaches_a_receiver_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let reader = thread::spawn(move || receiver::read_octet_counted(&listener, 3));
        let mut sink = SyslogSink::new(addr, Protocol::Tcp, Framing::OctetCounting);
        let msgs: Vec<String> = (0..3)
            .map(|i| format!("<110>1 - h app - m{i} - line {i}\nwith LF"))
            .collect();
        sink.send(&msgs).unwrap();
        assert_eq!(
            reader.join().unwrap(),
            msgs,
            "LF inside a message survives octet counting"
        );
    }

    #[test]
    fn tcp_lf_framing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let reader = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            BufReader::new(s)
                .lines()
                .take(2)
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        });
        let mut sink = SyslogSink::new(addr, Protocol::Tcp, Framing::Lf);
        sink.send(&["a".into(), "b".into()]).unwrap();
        assert_eq!(reader.join().unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn a_connection_the_receiver_closed_is_replaced_before_writing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut sink = SyslogSink::new(addr, Protocol::Tcp, Framing::OctetCounting);
        let (first_read, first_done) = std::sync::mpsc::channel();
        let (got, received) = std::sync::mpsc::channel();
        thread::spawn(move || {
            // First connection: one message, then the receiver restarts (closes it).
            let first = receiver::read_octet_counted(&listener, 1);
            first_read.send(()).unwrap();
            let second = receiver::read_octet_counted(&listener, 1);
            let _ = got.send((first, second));
        });
        sink.send(&["one".into()]).unwrap();
        first_done.recv().unwrap();
        // Let the FIN reach this end.
        thread::sleep(Duration::from_millis(100));
        sink.send(&["two".into()]).unwrap();
        let (first, second) = received
            .recv_timeout(Duration::from_secs(10))
            .expect("\"two\" was written into the closed connection and lost");
        assert_eq!(
            (first, second),
            (vec!["one".to_owned()], vec!["two".to_owned()])
        );
    }

    #[test]
    fn a_dead_receiver_is_an_error_and_a_new_one_is_reached() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener); // nobody listens now
        let mut sink = SyslogSink::new(addr.to_string(), Protocol::Tcp, Framing::OctetCounting);
        assert!(sink.send(&["x".into()]).is_err());
        let Ok(listener) = TcpListener::bind(addr) else {
            return; // the port was taken meanwhile: nothing more to check
        };
        let reader = thread::spawn(move || receiver::read_octet_counted(&listener, 1));
        sink.send(&["back".into()]).unwrap();
        assert_eq!(reader.join().unwrap(), vec!["back".to_owned()]);
    }

    #[test]
    fn udp_one_message_per_datagram() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut sink = SyslogSink::new(
            receiver.local_addr().unwrap().to_string(),
            Protocol::Udp,
            Framing::OctetCounting,
        );
        sink.send(&["one".into(), "two".into()]).unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"one");
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
    }

    #[test]
    fn a_bad_address_is_an_error_without_any_lookup() {
        let mut sink = SyslogSink::new("127.0.0.1:notaport".into(), Protocol::Tcp, Framing::Lf);
        assert!(sink.send(&["x".into()]).is_err());
    }
}

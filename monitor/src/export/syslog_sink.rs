//! Syslog transport: RFC 5424 messages over TCP (octet counting by default, or LF framing)
//! or UDP (one message per datagram). Connections have timeouts; a failed send drops the
//! connection and reports the error, so the batch stays in the outbox and is sent again on
//! a fresh connection at the next round. TLS is not here yet.

use std::{
    io::{self, Write as _},
    net::{TcpStream, ToSocketAddrs as _, UdpSocket},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{
    Format, Reporter,
    syslog::{Framing, Payload, frame, message},
    transport::{Sent, Transport, TransportError},
};
use crate::store::Pending;

/// Connect and write timeout: a hung receiver costs a round at most this long.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
}

pub struct SyslogSink {
    address: String,
    protocol: Protocol,
    framing: Framing,
    tcp: Option<TcpStream>,
    udp: Option<UdpSocket>,
}

impl SyslogSink {
    pub fn new(address: String, protocol: Protocol, framing: Framing) -> Self {
        Self {
            address,
            protocol,
            framing,
            tcp: None,
            udp: None,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn resolve(&self) -> io::Result<std::net::SocketAddr> {
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
            Protocol::Tcp => self.send_tcp(messages),
            Protocol::Udp => self.send_udp(messages),
        };
        if result.is_err() {
            // A half-written stream cannot be trusted: start over on a new connection.
            self.tcp = None;
            self.udp = None;
        }
        result
    }

    fn send_tcp(&mut self, messages: &[String]) -> io::Result<()> {
        if self.tcp.is_none() {
            let stream = TcpStream::connect_timeout(&self.resolve()?, TIMEOUT)?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            stream.set_nodelay(true)?;
            self.tcp = Some(stream);
        }
        let mut buf = Vec::new();
        for m in messages {
            buf.extend_from_slice(&frame(m, self.framing));
        }
        let stream = self
            .tcp
            .as_mut()
            .ok_or_else(|| io::Error::other("syslog connection not open"))?;
        stream.write_all(&buf)?;
        stream.flush()
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

/// A syslog sink with its facility and the format of the message part.
pub struct SyslogTransport {
    pub sink: SyslogSink,
    pub facility: u8,
    pub format: Format,
}

impl Transport for SyslogTransport {
    fn target(&self) -> String {
        self.sink.address().to_owned()
    }

    fn send(&mut self, batch: &[Pending], reporter: &Reporter) -> Result<Sent, TransportError> {
        let payload = Payload::Format(self.format);
        let messages: Vec<String> = batch
            .iter()
            .map(|p| message(&p.event, reporter, self.facility, payload))
            .collect();
        self.sink.send(&messages)?;
        Ok(Sent::all(batch))
    }
}

/// A minimal syslog receiver for tests.
#[cfg(test)]
pub(crate) mod receiver {
    use std::{
        io::{BufRead as _, BufReader, Read as _},
        net::TcpListener,
    };

    /// Reads `n` octet-counted messages from one connection.
    pub fn read_octet_counted(listener: &TcpListener, n: usize) -> Vec<String> {
        let (stream, _) = listener.accept().unwrap();
        let mut r = BufReader::new(stream);
        (0..n)
            .map(|_| {
                let mut len = Vec::new();
                r.read_until(b' ', &mut len).unwrap();
                let len: usize = std::str::from_utf8(&len[..len.len() - 1])
                    .unwrap()
                    .parse()
                    .unwrap();
                let mut msg = vec![0; len];
                r.read_exact(&mut msg).unwrap();
                String::from_utf8(msg).unwrap()
            })
            .collect()
    }
}

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

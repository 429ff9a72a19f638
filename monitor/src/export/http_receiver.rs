//! Test receivers for the HTTP sinks: a minimal HTTP/1.1 server on loopback (plain or TLS
//! with rustls) that records each request (gzip bodies decoded) and plays a script of
//! answers, one connection per answer; and a throwaway PKI (a CA, server and client
//! certificates) made with rcgen. Every wait is bounded: a test fails, it never hangs.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::{
    RootCertStore, ServerConfig, ServerConnection, StreamOwned,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
};

/// How long the receiver waits for the next connection, or for a silent answer's client.
const WAIT: Duration = Duration::from_secs(10);

/// One recorded request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    /// Decoded when it came gzipped.
    pub body: Vec<u8>,
    pub gzipped: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

/// What the receiver does with one connection.
pub enum Answer {
    /// An HTTP answer with a JSON body.
    Http(u16, String),
    /// These bytes instead of an HTTP answer.
    Raw(&'static [u8]),
    /// Reads the request, then says nothing until the client gives up.
    Silent,
}

pub struct Receiver {
    pub addr: SocketAddr,
    handle: JoinHandle<Vec<Request>>,
}

impl Receiver {
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// The requests it got (waits for the script to end; bounded by `WAIT` per answer).
    pub fn requests(self) -> Vec<Request> {
        self.handle.join().expect("the receiver thread")
    }
}

/// A plain HTTP receiver playing `answers`.
pub fn serve(answers: Vec<Answer>) -> Receiver {
    start(answers, None)
}

/// An HTTPS receiver playing `answers`.
pub fn serve_tls(answers: Vec<Answer>, tls: Arc<ServerConfig>) -> Receiver {
    start(answers, Some(tls))
}

fn start(answers: Vec<Answer>, tls: Option<Arc<ServerConfig>>) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for answer in answers {
            let Some(stream) = accept(&listener) else {
                break;
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let request = match &tls {
                Some(config) => {
                    let conn = ServerConnection::new(Arc::clone(config)).unwrap();
                    exchange(StreamOwned::new(conn, stream), &answer)
                }
                None => exchange(stream, &answer),
            };
            requests.extend(request);
        }
        requests
    });
    Receiver { addr, handle }
}

fn accept(listener: &TcpListener) -> Option<TcpStream> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => return Some(stream),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

/// Reads one request and plays `answer`; `None` when no request came (a failed TLS
/// handshake, a client that hung up).
fn exchange(mut stream: impl Read + Write, answer: &Answer) -> Option<Request> {
    let request = read_request(&mut stream)?;
    match answer {
        Answer::Http(status, body) => {
            let head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                if *status < 400 { "OK" } else { "Error" },
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        Answer::Raw(bytes) => {
            let _ = stream.write_all(bytes);
            let _ = stream.flush();
        }
        Answer::Silent => {
            // Until the client closes (it times out) or `WAIT` passes.
            let mut buf = [0u8; 64];
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
    Some(request)
}

fn read_request(stream: &mut impl Read) -> Option<Request> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        raw.extend_from_slice(&buf[..n]);
        assert!(raw.len() < 1 << 20, "an endless request head");
    };
    let head = String::from_utf8(raw[..head_end].to_vec()).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("a content-length"));
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&buf[..n]);
    }
    let gzipped = headers
        .iter()
        .any(|(n, v)| n == "content-encoding" && v == "gzip");
    if gzipped {
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .read_to_end(&mut decoded)
            .expect("a gzip body");
        body = decoded;
    }
    Some(Request {
        method,
        path,
        headers,
        body,
        gzipped,
    })
}

/// A throwaway CA with server and client certificates.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two test CAs must not look like one (issuers are found by name).
        params.distinguished_name.push(
            DnType::CommonName,
            format!("egress-monitor test CA {:016x}", fastrand::u64(..)),
        );
        Self {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) and its key, signed by the CA.
    fn leaf(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        (cert, key)
    }

    /// A client certificate and key, PEM.
    pub fn client_pem(&self) -> (String, String) {
        let (cert, key) = self.leaf(&["egress-monitor.test"]);
        (cert.pem(), key.serialize_pem())
    }

    /// A server configuration with a certificate for `names`; with `client_auth`, it wants
    /// a client certificate from this CA.
    pub fn server(&self, names: &[&str], client_auth: bool) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert, key) = self.leaf(names);
        let cert: CertificateDer<'static> = cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let config = if client_auth {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.der().clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![cert], key)
        } else {
            builder
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
        };
        Arc::new(config.unwrap())
    }
}

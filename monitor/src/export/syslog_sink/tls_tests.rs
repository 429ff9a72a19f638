//! Syslog over TLS against an in-test receiver (rustls server on loopback) with certificates
//! made by the tests: delivery in order, the receiver's certificate verified (unknown CA,
//! wrong name), client certificates, and configuration errors that name the key and file.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    sync::Arc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use rustls::{
    RootCertStore, ServerConfig, ServerConnection, StreamOwned, crypto::ring,
    server::WebPkiClientVerifier,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use super::{receiver::read_frames, *};
use crate::{
    config::{Config, Origin},
    export::{
        delivery::Deliverer,
        fixtures,
        tls::{
            self, TlsFiles,
            test_pki::{Ca, Leaf},
        },
    },
    kernel::loader::error_chain,
    store::Store,
};

/// A directory with the test's certificates, removed at the end.
struct Pki {
    dir: PathBuf,
    ca: Ca,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("egress-tls-sink-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new("egress test CA");
        fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
        Self { dir, ca }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A receiver's TLS configuration: its certificate, and the CA its clients must present a
/// certificate from (if it asks for one).
fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
                .unwrap();
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let chain = vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

/// Accepts one connection (waiting at most 10 s), then reads `n` octet-counted messages
/// over TLS. `Err` is the receiver's view of a failure (handshake refused, nothing read).
fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    n: usize,
) -> JoinHandle<(Result<Vec<String>, String>, TcpListener)> {
    thread::spawn(move || {
        let result = accept(&listener).and_then(|tcp| {
            tcp.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
            read_frames(StreamOwned::new(conn, tcp), n).map_err(|e| e.to_string())
        });
        (result, listener)
    })
}

fn accept(listener: &TcpListener) -> Result<std::net::TcpStream, String> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((tcp, _)) => {
                tcp.set_nonblocking(false).unwrap();
                return Ok(tcp);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("no connection: {e}")),
        }
    }
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn client(files: &TlsFiles<'_>, name: &str) -> tls::TlsClient {
    tls::client(files, name).unwrap()
}

fn ca_only(path: &Path) -> TlsFiles<'_> {
    TlsFiles {
        ca_file: Some(path),
        ..TlsFiles::default()
    }
}

#[test]
fn tls_octet_counting_reaches_a_receiver_in_order() {
    let pki = Pki::new("order");
    let (l, addr) = listener();
    let receiver = serve(l, server_config(&pki.ca.server(&["127.0.0.1"]), None), 3);
    let ca = pki.ca_file();
    let mut sink = SyslogSink::tls(
        addr.to_string(),
        Framing::OctetCounting,
        client(&ca_only(&ca), "127.0.0.1"),
    );
    let msgs: Vec<String> = (0..3)
        .map(|i| format!("<110>1 - h app - m{i} - line {i}\nwith LF"))
        .collect();
    sink.send(&msgs[..1]).unwrap();
    sink.send(&msgs[1..]).unwrap();
    let (got, _) = receiver.join().unwrap();
    assert_eq!(got.unwrap(), msgs, "one connection, in order, LF kept");
}

#[test]
fn an_unknown_ca_is_a_handshake_error_and_the_backlog_waits_for_the_fixed_receiver() {
    let pki = Pki::new("unknown-ca");
    let (l, addr) = listener();
    let rogue = Ca::new("someone else's CA");
    let receiver = serve(l, server_config(&rogue.server(&["127.0.0.1"]), None), 1);
    let config = Config::parse(
        &format!(
            "[[sinks]]\nname = \"soc\"\ntype = \"syslog\"\nprotocol = \"tls\"\naddress = \"{addr}\"\nformat = \"ocsf\"\nca_file = \"{}\"\n",
            pki.ca_file().display()
        ),
        &Origin::Embedded,
    )
    .unwrap();
    let mut store = Store::in_memory().unwrap();
    let mut d = Deliverer::new(&config.sinks, &pki.dir, fixtures::reporter()).unwrap();
    d.register(&mut store).unwrap();
    let e = fixtures::opened();
    store.record(std::slice::from_ref(&e), &[]).unwrap();
    let r = d.round(&mut store, Instant::now()).unwrap();
    assert_eq!((r.delivered, r.failed_sinks), (0, 1));
    assert_eq!(store.backlog("soc").unwrap(), 1, "kept for the retry");
    let (got, l) = receiver.join().unwrap();
    let refused = got.unwrap_err();
    assert!(
        refused.contains("UnknownCA"),
        "the receiver saw the refusal: {refused}"
    );

    // The same error, as the sink reports it.
    let receiver = serve(l, server_config(&rogue.server(&["127.0.0.1"]), None), 1);
    let ca = pki.ca_file();
    let mut sink = SyslogSink::tls(
        addr.to_string(),
        Framing::OctetCounting,
        client(&ca_only(&ca), "127.0.0.1"),
    );
    let err = sink.send(&["secret alert".into()]).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "TLS handshake with {addr} (server name \"127.0.0.1\"): invalid peer certificate: \
             UnknownIssuer"
        )
    );
    let (got, l) = receiver.join().unwrap();
    assert!(got.is_err(), "nothing delivered: {got:?}");

    // The receiver now has a certificate from the configured CA: the retry delivers.
    let receiver = serve(l, server_config(&pki.ca.server(&["127.0.0.1"]), None), 1);
    assert_eq!(d.round(&mut store, later()).unwrap().delivered, 1);
    let (got, _) = receiver.join().unwrap();
    let msg = got.unwrap().remove(0);
    assert!(
        msg.contains(&format!("eventId=\"{}\"", crate::export::event_id(&e))),
        "{msg}"
    );
    assert_eq!(store.backlog("soc").unwrap(), 0);
}

#[test]
fn a_certificate_for_another_name_is_refused_with_the_name() {
    let pki = Pki::new("name");
    let (l, addr) = listener();
    let server = server_config(&pki.ca.server(&["syslog.example.org"]), None);
    let receiver = serve(l, server.clone(), 1);
    let ca = pki.ca_file();
    let mut sink = SyslogSink::tls(
        addr.to_string(),
        Framing::OctetCounting,
        client(&ca_only(&ca), tls::host_of(&addr.to_string())),
    );
    let err = sink.send(&["x".into()]).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "TLS handshake with {addr} (server name \"127.0.0.1\"): "
        )),
        "{err}"
    );
    assert!(
        err.contains("certificate not valid for name \"127.0.0.1\"")
            && err.contains("syslog.example.org"),
        "{err}"
    );
    let (got, l) = receiver.join().unwrap();
    assert!(got.is_err(), "{got:?}");

    // `server_name` names what the certificate holds: accepted.
    let receiver = serve(l, server, 1);
    let mut sink = SyslogSink::tls(
        addr.to_string(),
        Framing::OctetCounting,
        client(&ca_only(&ca), "syslog.example.org"),
    );
    sink.send(&["y".into()]).unwrap();
    assert_eq!(receiver.join().unwrap().0.unwrap(), vec!["y".to_owned()]);
}

#[test]
fn a_receiver_that_requires_a_client_certificate() {
    let pki = Pki::new("mtls");
    let agent = pki.ca.client("agent.example.org");
    let cert = pki.write("agent.pem", &agent.cert_pem);
    let key = pki.write("agent.key", &agent.key_pem);
    let ca = pki.ca_file();
    let server = server_config(&pki.ca.server(&["localhost"]), Some(&pki.ca));
    let (l, addr) = listener();
    let address = format!("localhost:{}", addr.port());

    // Without a client certificate: refused, and the refusal is the send's error.
    let receiver = serve(l, server.clone(), 1);
    let mut sink = SyslogSink::tls(
        address.clone(),
        Framing::OctetCounting,
        client(&ca_only(&ca), "localhost"),
    );
    let started = Instant::now();
    let err = sink.send(&["lost?".into()]).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "TLS handshake with {address} (server name \"localhost\"): "
        )),
        "{err}"
    );
    assert!(err.contains("CertificateRequired"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (got, l) = receiver.join().unwrap();
    let refused = got.unwrap_err();
    assert!(
        refused.contains("peer sent no certificates"),
        "nothing delivered: {refused}"
    );

    // With one: accepted.
    let receiver = serve(l, server, 2);
    let files = TlsFiles {
        ca_file: Some(&ca),
        client_cert: Some(&cert),
        client_key: Some(&key),
    };
    let mut sink = SyslogSink::tls(address, Framing::OctetCounting, client(&files, "localhost"));
    sink.send(&["a".into(), "b".into()]).unwrap();
    assert_eq!(receiver.join().unwrap().0.unwrap(), vec!["a", "b"]);
}

#[test]
fn lf_framing_over_tls() {
    let pki = Pki::new("lf");
    let (l, addr) = listener();
    let server = server_config(&pki.ca.server(&["127.0.0.1"]), None);
    let receiver = thread::spawn(move || {
        let tcp = accept(&l).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let stream = StreamOwned::new(ServerConnection::new(server).unwrap(), tcp);
        io::BufRead::lines(io::BufReader::new(stream))
            .take(2)
            .collect::<io::Result<Vec<_>>>()
            .unwrap()
    });
    let ca = pki.ca_file();
    let mut sink = SyslogSink::tls(
        addr.to_string(),
        Framing::Lf,
        client(&ca_only(&ca), "127.0.0.1"),
    );
    sink.send(&["one".into(), "two".into()]).unwrap();
    assert_eq!(receiver.join().unwrap(), vec!["one", "two"]);
}

#[test]
fn a_receiver_that_went_away_is_noticed_and_reconnected() {
    let pki = Pki::new("reconnect");
    let (l, addr) = listener();
    let server = server_config(&pki.ca.server(&["127.0.0.1"]), None);
    let receiver = serve(l, server.clone(), 1);
    let ca = pki.ca_file();
    let mut sink = SyslogSink::tls(
        addr.to_string(),
        Framing::OctetCounting,
        client(&ca_only(&ca), "127.0.0.1"),
    );
    sink.send(&["first".into()]).unwrap();
    // The receiver reads one message and closes its socket.
    let (got, l) = receiver.join().unwrap();
    assert_eq!(got.unwrap(), vec!["first"]);
    thread::sleep(Duration::from_millis(50));
    let receiver = serve(l, server, 1);
    sink.send(&["second".into()]).unwrap();
    assert_eq!(
        receiver.join().unwrap().0.unwrap(),
        vec!["second"],
        "sent on a new connection, not into the closed one"
    );
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn parse(toml: &str) -> Result<Config, String> {
    Config::parse(toml, &Origin::Embedded).map_err(|e| e.to_string())
}

#[test]
fn setup_errors_name_the_sink_the_key_and_the_file() {
    let pki = Pki::new("setup");
    let sink = |extra: &str| {
        format!(
            "[[sinks]]\nname = \"soc\"\ntype = \"syslog\"\nprotocol = \"tls\"\naddress = \"127.0.0.1:6514\"\n{extra}"
        )
    };
    let missing = pki.dir.join("missing-ca.pem");
    let config = parse(&sink(&format!("ca_file = \"{}\"\n", missing.display()))).unwrap();
    let Err(e) = Deliverer::new(&config.sinks, &pki.dir, fixtures::reporter()) else {
        panic!("a missing CA file must stop the agent");
    };
    let m = error_chain(&e);
    assert!(
        m.starts_with(&format!(
            "alert sink \"soc\": ca_file {}: cannot read it: ",
            missing.display()
        )),
        "{m}"
    );

    let empty = pki.write("empty.pem", "# no certificates here\n");
    let config = parse(&sink(&format!("ca_file = \"{}\"\n", empty.display()))).unwrap();
    let Err(e) = Deliverer::new(&config.sinks, &pki.dir, fixtures::reporter()) else {
        panic!("a CA file without certificates must stop the agent");
    };
    assert_eq!(
        error_chain(&e),
        format!(
            "alert sink \"soc\": ca_file {}: no certificate in it (expected PEM \"BEGIN \
             CERTIFICATE\" blocks)",
            empty.display()
        )
    );

    let e = parse(&sink("client_cert = \"/etc/agent.pem\"\n")).unwrap_err();
    assert!(
        e.contains(":6:")
            && e.contains("sinks[0].client_cert: client_cert and client_key go together"),
        "{e}"
    );
    let e = parse(&sink("server_name = \"not a name\"\n")).unwrap_err();
    assert!(
        e.contains(":6:")
            && e.contains("sinks[0].server_name: server_name \"not a name\": neither a DNS name"),
        "{e}"
    );
    let e = parse(
        "[[sinks]]\nname = \"soc\"\ntype = \"syslog\"\naddress = \"127.0.0.1:514\"\nca_file = \"/etc/ca.pem\"\n",
    )
    .unwrap_err();
    assert!(
        e.contains(":5:")
            && e.contains(
                "sinks[0].ca_file: only with protocol = \"tls\" (this sink sends in clear text)"
            ),
        "{e}"
    );
    let c = parse(&sink(
        "server_name = \"syslog.example.org\"\nframing = \"lf\"\n",
    ))
    .unwrap();
    assert_eq!(c.sinks[0].protocol, Protocol::Tls);
    assert_eq!(
        c.sinks[0].server_name.as_ref().unwrap().get_ref(),
        "syslog.example.org"
    );
    assert_eq!(parse(&c.to_toml()).unwrap(), c, "round trip");
}

#[test]
fn without_ca_file_the_host_trust_store_verifies_and_refuses_a_private_ca() {
    let pki = Pki::new("native");
    let (l, addr) = listener();
    let receiver = serve(l, server_config(&pki.ca.server(&["127.0.0.1"]), None), 1);
    let client = match tls::client(&TlsFiles::default(), "127.0.0.1") {
        Ok(c) => c,
        Err(e) => {
            // A host without a trust store: an error at start, never an unverified link.
            assert!(matches!(e, tls::TlsError::NoNativeRoots { .. }), "{e}");
            return;
        }
    };
    let mut sink = SyslogSink::tls(addr.to_string(), Framing::OctetCounting, client);
    let err = sink.send(&["x".into()]).unwrap_err().to_string();
    assert!(
        err.ends_with("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    assert!(receiver.join().unwrap().0.is_err(), "nothing delivered");
}

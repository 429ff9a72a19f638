//! The syslog sink against a real receiver: each test starts its own rsyslogd on a loopback
//! port (imtcp, plain or with the gtls driver and certificates made here), delivers real
//! alert events from the outbox (a replayed synthetic attack, recorded in a store), and
//! parses every message rsyslog wrote back: RFC 5424 header, the `egress@32473` structured
//! data, and the payload, compared with what was sent (count, order, event ids).

use std::{
    collections::BTreeMap,
    fs::{self, File},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use integration_tests::{deadline, pause};
use monitor::{
    config::{Config, Origin},
    detect::alerts::AlertEvent,
    export::{Reporter, delivery::Deliverer, event_id, syslog::SD_ID},
    replay::{
        Replayer,
        synthetic::{self, Scenario},
    },
    store::Store,
};
use nix::{sys::signal, unistd::Pid};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;

/// How long rsyslogd may take to listen, and to write what it received (a bound, not a
/// delay: about a second here; its TLS start-up took over 15 s once under QEMU's TCG).
const WAIT: Duration = Duration::from_secs(45);

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("egress-rsyslog-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("work")).expect("create the test directory");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, content).expect("write a test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn rsyslogd_bin() -> PathBuf {
    let found = [
        "/usr/sbin/rsyslogd",
        "/sbin/rsyslogd",
        "/usr/local/sbin/rsyslogd",
    ]
    .iter()
    .map(PathBuf::from)
    .chain(
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join("rsyslogd")),
    )
    .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("rsyslogd not found: `cargo xtask test` installs rsyslog"))
}

/// A loopback port nobody listens on (free when it was asked for).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Whether something listens on 127.0.0.1:`port` (read from /proc: no connection, so
/// rsyslogd logs no aborted session).
fn listening(port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == wanted && f[3] == "0A"
        })
    })
}

/// An rsyslogd of this test: killed by its pid and waited for when dropped (also when an
/// assertion failed), its directory removed after.
struct Rsyslogd {
    child: Child,
    port: u16,
    out: PathBuf,
    dir: TempDir,
}

/// How the receiver's input listens.
enum Input<'a> {
    Tcp,
    /// TLS with the gtls driver: its CA, certificate and key; `require_client` asks senders
    /// for a certificate from that CA.
    Tls {
        ca: &'a Path,
        cert: &'a Path,
        key: &'a Path,
        require_client: bool,
    },
}

impl Rsyslogd {
    fn start(dir: TempDir, input: &Input<'_>) -> Self {
        let bin = rsyslogd_bin();
        let port = free_port();
        let out = dir.path("received.log");
        let tls_globals = match input {
            Input::Tcp => String::new(),
            Input::Tls { ca, cert, key, .. } => format!(
                " defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" \
                 defaultNetstreamDriverKeyFile=\"{}\"",
                ca.display(),
                cert.display(),
                key.display()
            ),
        };
        let module = match input {
            Input::Tcp => "module(load=\"imtcp\")".to_owned(),
            Input::Tls { require_client, .. } => format!(
                "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" \
                 streamDriver.authMode=\"{}\")",
                if *require_client {
                    "x509/certvalid"
                } else {
                    "anon"
                }
            ),
        };
        // Every message as received (%rawmsg%, without the framing), one per line: the
        // agent's messages have no line breaks. Its own messages go to internal.log.
        let config = format!(
            "global(workDirectory=\"{work}\" maxMessageSize=\"64k\"{tls_globals})\n\
             {module}\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             ruleset(name=\"alerts\") {{\n\
             \x20 action(type=\"omfile\" file=\"{out}\" template=\"raw\")\n\
             }}\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"alerts\")\n\
             *.* action(type=\"omfile\" file=\"{internal}\")\n",
            work = dir.path("work").display(),
            out = out.display(),
            internal = dir.path("internal.log").display(),
        );
        let conf = dir.write("rsyslog.conf", &config);
        let log = |name: &str| Stdio::from(File::create(dir.path(name)).expect("log file"));
        let child = Command::new(&bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut r = Self {
            child,
            port,
            out,
            dir,
        };
        let deadline = deadline(WAIT);
        while !listening(port) {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("rsyslogd exited ({status}) before listening\n{}", r.logs());
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd does not listen on 127.0.0.1:{port}\n{}",
                r.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What rsyslogd said (for failure messages).
    fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["stderr.log", "internal.log"] {
            s.push_str("--- rsyslogd ");
            s.push_str(f);
            s.push_str(":\n");
            s.push_str(&fs::read_to_string(self.dir.path(f)).unwrap_or_default());
        }
        s
    }

    /// The first `n` messages written, waiting for them at most `WAIT`.
    fn received(&self, n: usize) -> Vec<String> {
        let deadline = deadline(WAIT);
        loop {
            let text = fs::read_to_string(&self.out).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n && text.ends_with('\n') {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd wrote {} of {n} messages\n{}",
                lines.len(),
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whatever was written so far.
    fn written(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = signal::kill(pid, signal::Signal::SIGTERM);
        let deadline = deadline(Duration::from_secs(5));
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Test certificates: a CA, and certificates it signs.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate, key), PEM.
    fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// Real alert events: the synthetic upload scenario replayed through the detector into a
/// store in `dir`, after the sink's cursor was registered (so all of them are pending).
fn alerts_in_outbox(
    dir: &Path,
    config: &Config,
    deliverer: &Deliverer,
) -> (Store, Vec<AlertEvent>) {
    let mut store = Store::open(dir).expect("open the store");
    deliverer.register(&mut store).expect("register the sink");
    let mut events = Vec::new();
    {
        let mut replayer = Replayer::new(config, &mut store).expect("replayer");
        synthetic::generate(Scenario::Upload, 1, |window| {
            replayer
                .window(window, &mut |e| {
                    events.push(e.clone());
                    Ok(())
                })
                .expect("replay a window");
        });
    }
    assert!(
        events.len() >= 3,
        "the upload scenario raises alerts (opened, updated, resolved): {}",
        events.len()
    );
    (store, events)
}

fn sink_config(sink: &str) -> Config {
    // `batch_max` small: several batches on one connection.
    let toml = format!("[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\nbatch_max = 2\n{sink}");
    Config::parse(&toml, &Origin::Embedded).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// Delivers everything pending in one round (rsyslogd already listens).
fn deliver_all(d: &mut Deliverer, store: &mut Store, n: usize, rsyslogd: &Rsyslogd) {
    let r = d.round(store, Instant::now()).expect("delivery round");
    assert_eq!(
        (r.delivered, r.failed_sinks),
        (n as u64, 0),
        "delivered in one round\n{}",
        rsyslogd.logs()
    );
    assert_eq!(store.backlog("siem").expect("backlog"), 0);
}

/// One RFC 5424 message, parsed.
#[derive(Debug)]
struct Parsed {
    pri: u16,
    timestamp: String,
    host: String,
    app: String,
    msgid: String,
    sd_id: String,
    params: BTreeMap<String, String>,
    payload: String,
}

fn parse_5424(m: &str) -> Parsed {
    let fail = |why: &str| -> ! { panic!("not an RFC 5424 message ({why}): {m}") };
    let rest = m.strip_prefix('<').unwrap_or_else(|| fail("no PRI"));
    let (pri, rest) = rest.split_once('>').unwrap_or_else(|| fail("PRI"));
    let pri: u16 = pri.parse().unwrap_or_else(|_| fail("PRI value"));
    let mut fields = rest.splitn(7, ' ');
    let mut next = |what: &str| fields.next().unwrap_or_else(|| fail(what)).to_owned();
    assert_eq!(next("version"), "1", "{m}");
    let timestamp = next("timestamp");
    let host = next("hostname");
    let app = next("app-name");
    let _procid = next("procid");
    let msgid = next("msgid");
    let sd = next("structured data");
    let sd = sd.strip_prefix('[').unwrap_or_else(|| fail("SD element"));
    let (sd_id, mut rest) = sd.split_once(' ').unwrap_or_else(|| fail("SD-ID"));
    let mut params = BTreeMap::new();
    loop {
        if let Some(after) = rest.strip_prefix("] ") {
            rest = after;
            break;
        }
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| fail("SD-PARAM"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.push(chars.next().unwrap_or_else(|| fail("escape")).1),
                Some((i, '"')) => break i + 1,
                Some((_, c)) => value.push(c),
                None => fail("unterminated SD-PARAM"),
            }
        };
        params.insert(name.trim_start().to_owned(), value);
        rest = &after[end..];
    }
    Parsed {
        pri,
        timestamp,
        host,
        app,
        msgid,
        sd_id: sd_id.to_owned(),
        params,
        payload: rest.to_owned(),
    }
}

/// Every message parses, in the order sent, with the header and structured data of its event.
fn check_messages(lines: &[String], sent: &[AlertEvent]) -> Vec<Parsed> {
    assert_eq!(lines.len(), sent.len(), "one message per event, none more");
    let reporter = Reporter::this_host();
    lines
        .iter()
        .zip(sent)
        .enumerate()
        .map(|(i, (line, e))| {
            let m = parse_5424(line);
            assert_eq!(m.pri / 8, 13, "facility log audit: {line}");
            assert_eq!(m.host, reporter.hostname.replace(' ', ""), "{line}");
            assert_eq!(m.app, "egress-monitor", "{line}");
            assert_eq!(m.msgid, e.event.name(), "message {i}: {line}");
            assert!(m.timestamp.starts_with("2026-06-0"), "{line}");
            assert_eq!(m.sd_id, SD_ID, "{line}");
            assert_eq!(
                m.params.get("eventId").map(String::as_str),
                Some(event_id(e).to_string().as_str()),
                "message {i} is event {i}: {line}"
            );
            assert_eq!(m.params["alertId"], e.alert.id.to_string(), "{line}");
            assert_eq!(m.params["rule"], e.alert.rule.id(), "{line}");
            assert_eq!(m.params["service"], e.alert.service, "{line}");
            assert_eq!(m.params["bytes"], e.alert.bytes.to_string(), "{line}");
            m
        })
        .collect()
}

/// The OCSF payloads carry the same event and alert ids.
fn check_ocsf(parsed: &[Parsed], sent: &[AlertEvent]) {
    for (m, e) in parsed.iter().zip(sent) {
        let ocsf: Value = serde_json::from_str(&m.payload)
            .unwrap_or_else(|err| panic!("OCSF payload is not JSON ({err}): {}", m.payload));
        assert_eq!(ocsf["class_uid"], 2004, "{ocsf}");
        assert_eq!(ocsf["metadata"]["uid"], event_id(e).to_string(), "{ocsf}");
        assert_eq!(
            ocsf["finding_info"]["uid"],
            e.alert.id.to_string(),
            "{ocsf}"
        );
    }
}

#[test]
fn tcp_octet_counting_ocsf() {
    let dir = TempDir::new("tcp-octet");
    let state = dir.path("state");
    let rsyslogd = Rsyslogd::start(dir, &Input::Tcp);
    let config = sink_config(&format!(
        "address = \"{}\"\nformat = \"ocsf\"\n",
        rsyslogd.address()
    ));
    let mut d = Deliverer::new(&config.sinks, &state, Reporter::this_host()).expect("sink");
    let (mut store, sent) = alerts_in_outbox(&state, &config, &d);
    deliver_all(&mut d, &mut store, sent.len(), &rsyslogd);
    let parsed = check_messages(&rsyslogd.received(sent.len()), &sent);
    check_ocsf(&parsed, &sent);
}

#[test]
fn tcp_lf_framing_json() {
    let dir = TempDir::new("tcp-lf");
    let state = dir.path("state");
    let rsyslogd = Rsyslogd::start(dir, &Input::Tcp);
    let config = sink_config(&format!(
        "address = \"{}\"\nframing = \"lf\"\nformat = \"json\"\n",
        rsyslogd.address()
    ));
    let mut d = Deliverer::new(&config.sinks, &state, Reporter::this_host()).expect("sink");
    let (mut store, sent) = alerts_in_outbox(&state, &config, &d);
    deliver_all(&mut d, &mut store, sent.len(), &rsyslogd);
    let parsed = check_messages(&rsyslogd.received(sent.len()), &sent);
    for (m, e) in parsed.iter().zip(&sent) {
        let back: AlertEvent = serde_json::from_str(&m.payload)
            .unwrap_or_else(|err| panic!("not an AlertEvent ({err}): {}", m.payload));
        assert_eq!(&back, e, "the event arrives whole");
    }
}

/// TLS both ways: rsyslogd (gtls driver) verifies the agent's client certificate, the agent
/// verifies rsyslogd's. First with the wrong CA: nothing arrives and the backlog waits; then
/// with the right one everything arrives.
#[test]
fn tls_octet_counting_with_client_certificate() {
    let dir = TempDir::new("tls");
    let pki = Pki::new("egress test CA");
    let (server_cert, server_key) = pki.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) =
        pki.leaf("agent.example.org", ExtendedKeyUsagePurpose::ClientAuth);
    let ca = dir.write("ca.pem", &pki.ca_pem);
    let other_ca = dir.write("other-ca.pem", &Pki::new("another CA").ca_pem);
    let cert = dir.write("server.pem", &server_cert);
    let key = dir.write("server.key", &server_key);
    let agent_cert = dir.write("agent.pem", &client_cert);
    let agent_key = dir.write("agent.key", &client_key);
    let state = dir.path("state");
    let rsyslogd = Rsyslogd::start(
        dir,
        &Input::Tls {
            ca: &ca,
            cert: &cert,
            key: &key,
            require_client: true,
        },
    );
    let tls_sink = |ca_file: &Path, with_client_cert: bool| {
        let client = if with_client_cert {
            format!(
                "client_cert = \"{}\"\nclient_key = \"{}\"\n",
                agent_cert.display(),
                agent_key.display()
            )
        } else {
            String::new()
        };
        sink_config(&format!(
            "address = \"{}\"\nprotocol = \"tls\"\nformat = \"ocsf\"\nca_file = \"{}\"\n{client}",
            rsyslogd.address(),
            ca_file.display(),
        ))
    };
    let config = tls_sink(&other_ca, true);
    let mut d = Deliverer::new(&config.sinks, &state, Reporter::this_host()).expect("sink");
    let (mut store, sent) = alerts_in_outbox(&state, &config, &d);
    let r = d.round(&mut store, Instant::now()).expect("round");
    assert_eq!(
        (r.delivered, r.failed_sinks),
        (0, 1),
        "rsyslogd's certificate is refused"
    );
    assert_eq!(store.backlog("siem").expect("backlog"), sent.len() as u64);

    // rsyslogd refuses an agent without a client certificate (after the handshake, in TLS
    // 1.3): the sink must see it rather than write the batch into the closing connection.
    let config = tls_sink(&ca, false);
    let mut d = Deliverer::new(&config.sinks, &state, Reporter::this_host()).expect("sink");
    let r = d.round(&mut store, Instant::now()).expect("round");
    assert_eq!(
        (r.delivered, r.failed_sinks),
        (0, 1),
        "rsyslogd refuses the agent without a certificate\n{}",
        rsyslogd.logs()
    );
    assert_eq!(store.backlog("siem").expect("backlog"), sent.len() as u64);
    pause(Duration::from_millis(200));
    assert_eq!(rsyslogd.written(), "", "nothing reached rsyslogd");

    let config = tls_sink(&ca, true);
    let mut d = Deliverer::new(&config.sinks, &state, Reporter::this_host()).expect("sink");
    deliver_all(&mut d, &mut store, sent.len(), &rsyslogd);
    let parsed = check_messages(&rsyslogd.received(sent.len()), &sent);
    check_ocsf(&parsed, &sent);
}

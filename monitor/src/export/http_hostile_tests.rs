//! The HTTP sinks against receivers that misbehave: one that never answers, one that
//! answers garbage, TLS with a certificate for another name, and receivers that echo the
//! credentials back. Each must end in a clear, logged error, the batch kept for a retry,
//! no crash, and no token in any log line or dead letter. Also: setup errors name the sink,
//! the key and the file.

use std::{
    io::Write,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    delivery::Deliverer,
    fixtures,
    http_receiver::{Answer, Pki, serve, serve_tls},
    http_tests::{HEC_OK, TOKEN, bulk_answer, events, later, setup, workdir},
};
use crate::config::{Config, Origin};

/// A log sink for one test.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with every log line of this thread (all levels) captured; returns them.
fn logged(f: impl FnOnce()) -> String {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(logs.0.lock().unwrap().clone()).unwrap()
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_receiver_that_never_answers_times_out_and_the_batch_is_retried() {
    let dir = workdir("silent");
    let rx = serve(vec![Answer::Silent, Answer::Http(200, HEC_OK.into())]);
    let sink = format!(
        "type = \"splunk_hec\"\nurl = \"{}\"\ntimeout = \"1s\"\n",
        rx.url("http")
    );
    let (mut d, mut store) = setup(&sink, &dir, &events(2));
    let started = Instant::now();
    let logs = logged(|| {
        let r = d.round(&mut store, Instant::now()).unwrap();
        assert_eq!((r.delivered, r.failed_sinks), (0, 1));
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeout"
    );
    assert!(
        logs.contains("no complete answer within 1s (timeout)") && logs.contains(&rx.url("http")),
        "{logs}"
    );
    assert_eq!(store.backlog("http").unwrap(), 2);
    assert_eq!(
        d.round(&mut store, later()).unwrap().delivered,
        2,
        "retried"
    );
    assert_eq!(rx.requests().len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_answers_are_clear_errors_and_nothing_is_lost() {
    let dir = workdir("garbage");
    let rx = serve(vec![
        Answer::Raw(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n"),
        Answer::Http(200, HEC_OK.into()),
    ]);
    let sink = format!("type = \"splunk_hec\"\nurl = \"{}\"\n", rx.url("http"));
    let (mut d, mut store) = setup(&sink, &dir, &events(1));
    let logs = logged(|| assert_eq!(d.round(&mut store, Instant::now()).unwrap().failed_sinks, 1));
    assert!(logs.contains("not an HTTP answer"), "{logs}");
    assert_eq!(d.round(&mut store, later()).unwrap().delivered, 1);
    rx.requests();

    // 200 from something that is not Elasticsearch, then a bulk answer that does not add up.
    let rx = serve(vec![
        Answer::Http(200, "<html><body>Welcome to nginx!</body></html>".into()),
        Answer::Http(200, bulk_answer(&[201])),
        Answer::Http(200, bulk_answer(&[201, 201])),
    ]);
    let sink = format!(
        "type = \"elasticsearch\"\nurl = \"{}\"\nformat = \"ecs\"\n",
        rx.url("http")
    );
    let (mut d, mut store) = setup(&sink, &dir, &events(2));
    let logs = logged(|| {
        assert_eq!(d.round(&mut store, Instant::now()).unwrap().failed_sinks, 1);
        assert_eq!(d.round(&mut store, later()).unwrap().failed_sinks, 1);
    });
    assert!(logs.contains("not a bulk answer (not JSON)") && logs.contains("Welcome to nginx"));
    assert!(
        logs.contains("not a bulk answer (1 items for 2 events)"),
        "{logs}"
    );
    assert_eq!(
        store.backlog("http").unwrap(),
        2,
        "nothing taken as delivered"
    );
    let much_later = later() + Duration::from_secs(3600);
    assert_eq!(d.round(&mut store, much_later).unwrap().delivered, 2);
    rx.requests();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tls_is_verified_against_ca_file_and_a_wrong_name_is_a_clear_error() {
    let dir = workdir("tls");
    let pki = Pki::new();
    let ca = write_file(&dir, "ca.pem", &pki.ca_pem());
    let sink = |url: String| {
        format!("type = \"splunk_hec\"\nurl = \"{url}\"\nca_file = {ca:?}\ntimeout = \"5s\"\n")
    };
    let rx = serve_tls(
        vec![Answer::Http(200, HEC_OK.into())],
        pki.server(&["other.example"], false),
    );
    let (mut d, mut store) = setup(&sink(rx.url("https")), &dir, &events(1));
    let logs = logged(|| assert_eq!(d.round(&mut store, Instant::now()).unwrap().failed_sinks, 1));
    assert!(
        logs.contains("TLS: invalid peer certificate: certificate not valid for name")
            && logs.contains("other.example"),
        "{logs}"
    );
    assert!(rx.requests().is_empty(), "no request went over it");
    assert_eq!(store.backlog("http").unwrap(), 1);

    // The right name, same CA: delivered, so the CA in ca_file is what is trusted.
    let rx = serve_tls(
        vec![Answer::Http(200, HEC_OK.into())],
        pki.server(&["127.0.0.1"], false),
    );
    let (mut d, mut store) = setup(&sink(rx.url("https")), &dir, &events(1));
    assert_eq!(d.round(&mut store, Instant::now()).unwrap().delivered, 1);
    assert_eq!(rx.requests().len(), 1);

    // A certificate from a CA not in ca_file: refused, even for the right name.
    let rx = serve_tls(
        vec![Answer::Http(200, HEC_OK.into())],
        Pki::new().server(&["127.0.0.1"], false),
    );
    let (mut d, mut store) = setup(&sink(rx.url("https")), &dir, &events(1));
    let logs = logged(|| assert_eq!(d.round(&mut store, Instant::now()).unwrap().failed_sinks, 1));
    assert!(logs.contains("UnknownIssuer"), "{logs}");
    assert!(rx.requests().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_client_certificate_is_presented_when_configured() {
    let dir = workdir("mtls");
    let pki = Pki::new();
    let ca = write_file(&dir, "ca.pem", &pki.ca_pem());
    let (cert, key) = pki.client_pem();
    let cert = write_file(&dir, "client.pem", &cert);
    let key = write_file(&dir, "client.key", &key);
    let rx = serve_tls(
        vec![Answer::Http(200, "{}".into())],
        pki.server(&["127.0.0.1"], true),
    );
    let sink = format!(
        "type = \"webhook\"\nurl = \"{}/in\"\nca_file = {ca:?}\nclient_cert = {cert:?}\nclient_key = {key:?}\n",
        rx.url("https")
    );
    let (mut d, mut store) = setup(&sink, &dir, &events(1));
    assert_eq!(d.round(&mut store, Instant::now()).unwrap().delivered, 1);
    assert_eq!(rx.requests()[0].path, "/in");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokens_never_reach_the_logs_or_the_dead_letters() {
    let dir = workdir("no-token-logs");
    // Receivers that echo the credentials back in their answers.
    let echo = format!(r#"{{"text":"Invalid token Splunk {TOKEN}","code":4}}"#);
    let hec = serve(vec![Answer::Http(401, echo)]);
    let es = serve(vec![Answer::Http(
        403,
        format!(
            r#"{{"error":{{"type":"security_exception","reason":"ApiKey {TOKEN} lacks create_doc"}},"status":403}}"#
        ),
    )]);
    let hook = serve(vec![
        Answer::Http(
            400,
            format!(r#"{{"error":"bad request from Bearer {TOKEN}"}}"#),
        ),
        Answer::Silent,
    ]);
    let sinks = [
        format!("type = \"splunk_hec\"\nurl = \"{}\"\n", hec.url("http")),
        format!(
            "type = \"elasticsearch\"\nurl = \"{}\"\nformat = \"ecs\"\n",
            es.url("http")
        ),
        // 3 s: the 400 must come back before the client gives up even on a loaded machine
        // (with 1 s, a receiver thread scheduled late turned it into a timeout).
        format!(
            "type = \"webhook\"\nurl = \"{}\"\ntimeout = \"3s\"\n",
            hook.url("http")
        ),
    ];
    let logs = logged(|| {
        for sink in &sinks {
            let (mut d, mut store) = setup(sink, &dir, &events(2));
            d.round(&mut store, Instant::now()).unwrap();
            store.record(&events(3)[2..], &[]).unwrap();
            d.round(&mut store, later()).unwrap();
        }
    });
    assert!(
        logs.contains("HTTP 401") && logs.contains("HTTP 403"),
        "{logs}"
    );
    assert!(
        logs.contains("HTTP 400") && logs.contains("timeout"),
        "{logs}"
    );
    assert!(
        logs.contains("<redacted>"),
        "the echoes were there, scrubbed: {logs}"
    );
    assert!(!logs.contains(TOKEN), "{logs}");
    let dead = std::fs::read_to_string(dir.join("dead-letter").join("http.jsonl")).unwrap();
    assert!(
        dead.contains("bad request from Bearer <redacted>"),
        "{dead}"
    );
    assert!(!dead.contains(TOKEN));
    for rx in [hec, es, hook] {
        rx.requests();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The error as `main` prints it: the chain of causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[test]
fn setup_errors_name_the_sink_the_key_and_the_file() {
    let start = |sink: &str| {
        let text = format!("[[sinks]]\nname = \"siem\"\nurl = \"https://127.0.0.1:9\"\n{sink}");
        let config = Config::parse(&text, &Origin::Embedded).unwrap();
        let dir = std::env::temp_dir();
        match Deliverer::new(&config.sinks, &dir, fixtures::reporter()) {
            Ok(_) => panic!("{sink} started"),
            Err(e) => chain(&e),
        }
    };
    let e = start("type = \"splunk_hec\"\ntoken_file = \"/nonexistent/hec.token\"\n");
    assert!(
        e.starts_with("alert sink \"siem\": token_file /nonexistent/hec.token: No such file"),
        "{e}"
    );
    let e = start("type = \"webhook\"\ntoken_env = \"EGRESS_MONITOR_TEST_UNSET_TOKEN_5F3A\"\n");
    assert!(
        e.contains("\"siem\": token_env EGRESS_MONITOR_TEST_UNSET_TOKEN_5F3A: the environment"),
        "{e}"
    );
    let dir = workdir("setup");
    let token = dir.join("token").display().to_string();
    let e = start(&format!(
        "type = \"elasticsearch\"\nformat = \"ecs\"\nauth = \"basic\"\ntoken_file = {token:?}\n"
    ));
    assert!(e.contains("\"siem\": auth = \"basic\" needs a token of the form user:password"));
    let e = start(&format!(
        "type = \"webhook\"\nca_file = \"/nonexistent/ca.pem\"\ntoken_file = {token:?}\n"
    ));
    assert!(
        e.contains("\"siem\": ca_file /nonexistent/ca.pem: No such file"),
        "{e}"
    );
    assert!(!e.contains(TOKEN));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn configuration_errors_keep_the_events_queued_and_say_what_to_fix() {
    let dir = workdir("config-errors");
    let rx = serve(vec![
        Answer::Http(301, String::new()),
        Answer::Http(401, r#"{"message":"Unauthorized"}"#.into()),
        Answer::Http(413, "request entity too large".into()),
        Answer::Http(200, "{}".into()),
    ]);
    let sink = format!("type = \"webhook\"\nurl = \"{}/in\"\n", rx.url("http"));
    let (mut d, mut store) = setup(&sink, &dir, &events(2));
    let logs = logged(|| {
        for hours in 0..3 {
            let at = Instant::now() + Duration::from_secs(hours * 3600);
            assert_eq!(d.round(&mut store, at).unwrap().failed_sinks, 1);
        }
    });
    assert!(logs.contains("HTTP 301") && logs.contains("set url to the final address"));
    assert!(logs.contains("HTTP 401") && logs.contains("check token_file / token_env"));
    assert!(
        logs.contains("HTTP 413") && logs.contains("lower batch_max"),
        "{logs}"
    );
    assert!(!dir.join("dead-letter").exists(), "no event is at fault");
    let at = Instant::now() + Duration::from_hours(4);
    assert_eq!(d.round(&mut store, at).unwrap().delivered, 2);
    assert_eq!(rx.requests().len(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Alert delivery by the real agent: a syslog receiver that is down while alerts are raised,
//! the agent killed with SIGKILL with that backlog queued, restarted while the receiver is
//! still down, then the receiver comes back: it gets every event, once, in the outbox's order
//! (the same as the file sink's, which never failed). The Prometheus endpoint shows the
//! backlog and bytes by destination class on the way.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use integration_tests::{Agent, StateDir, deadline, pause, rule_1_only, scaled, udp_sink};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Rule 1 alone, loopback as the outside world; a file sink and a syslog sink that retries
/// fast; the metrics endpoint on a port of the system's choice.
fn config(syslog: SocketAddr) -> String {
    rule_1_only("2s")
        + &format!(
            r#"
[metrics]
listen = "127.0.0.1:0"
[[sinks]]
name = "file"
type = "file"
path = "alerts.jsonl"
[[sinks]]
name = "soc"
type = "syslog"
address = "{syslog}"
format = "json"
retry_initial = "200ms"
retry_max = "1s"
"#
        )
}

fn start(state: &StateDir, config: &str) -> Agent {
    Agent::start_with_config(state, config, &[])
}

/// `GET /metrics` from the address the agent logged.
fn scrape(agent: &Agent) -> String {
    let log = agent.wait_for_log_where(Duration::from_secs(10), |l| {
        l["message"] == "metrics endpoint: GET /metrics"
    });
    let addr: SocketAddr = log["address"].as_str().unwrap().parse().unwrap();
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, scaled(Duration::from_secs(5))).unwrap();
    s.set_read_timeout(Some(scaled(Duration::from_secs(5))))
        .unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET /metrics HTTP/1.1\r\nHost: egress\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the metric line starting with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
}

/// Waits until the metric reaches `want` (the endpoint shows the state of the last poll).
fn wait_metric(agent: &Agent, prefix: &str, want: impl Fn(f64) -> bool) -> String {
    let deadline = deadline(Duration::from_secs(15));
    loop {
        let text = scrape(agent);
        if metric(&text, prefix).is_some_and(&want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{prefix} never as expected:\n{text}"
        );
        pause(Duration::from_millis(200));
    }
}

/// A syslog receiver on `addr` (octet counting): every message, across reconnections.
struct Receiver {
    messages: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).expect("the receiver's port is free again");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = Arc::clone(&messages);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let m = Arc::clone(&m);
                thread::spawn(move || {
                    let mut r = BufReader::new(stream);
                    loop {
                        let mut len = Vec::new();
                        if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                            return;
                        }
                        let len: usize = String::from_utf8_lossy(&len).trim().parse().unwrap();
                        let mut msg = vec![0; len];
                        r.read_exact(&mut msg).unwrap();
                        m.lock().unwrap().push(String::from_utf8(msg).unwrap());
                    }
                });
            }
        });
        Self { messages }
    }

    /// The messages once there are `n` of them.
    fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = deadline(Duration::from_secs(30));
        loop {
            let got = self.messages.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived",
                got.len()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn file_events(state: &StateDir) -> Vec<String> {
    std::fs::read_to_string(state.path().join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn wait_file_events(state: &StateDir, n: usize) -> Vec<String> {
    let deadline = deadline(Duration::from_secs(15));
    loop {
        let events = file_events(state);
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} events in the file",
            events.len()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The endpoint while the syslog receiver is down, after three alerts.
fn check_metrics_with_the_receiver_down(text: &str) {
    assert!(
        metric(text, "egress_monitor_sink_failures_total{sink=\"soc\"}").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(text, "egress_monitor_sink_backlog_events{sink=\"file\"}"),
        Some(0.0),
        "the dead receiver holds back no other sink"
    );
    let unknown = text
        .lines()
        .filter(|l| {
            l.starts_with("egress_monitor_egress_bytes_total{") && l.contains("class=\"unknown\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(
        unknown >= 3.0 * 1_500_000.0,
        "bytes to unknown peers: {unknown}\n{text}"
    );
    assert_eq!(
        metric(text, "egress_monitor_alerts_open{rule=\"unknown_volume\"}"),
        Some(3.0),
        "{text}"
    );
}

#[test]
fn a_receiver_outage_and_a_sigkill_lose_no_alert() {
    let state = StateDir::new();
    // A port nobody listens on until the receiver starts.
    let syslog = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = config(syslog);
    let sinks: Vec<_> = (1..=5)
        .map(|i| udp_sink(&format!("127.0.0.{i}:0")))
        .collect();
    let addr = |i: usize| sinks[i].local_addr().unwrap();

    let agent = start(&state, &config);
    agent.send_udp(addr(0), 5, 100); // learned
    pause(Duration::from_millis(2500));
    for i in 1..=3 {
        agent.send_udp(addr(i), 1500, 1000);
    }
    let before_kill = wait_file_events(&state, 3);
    let text = wait_metric(
        &agent,
        "egress_monitor_sink_backlog_events{sink=\"soc\"}",
        |v| v >= 3.0,
    );
    check_metrics_with_the_receiver_down(&text);

    // SIGKILL with the backlog queued: no chance to deliver or checkpoint.
    agent.signal(Signal::SIGKILL);
    let killed = agent.stop_after_kill();
    assert!(!killed.status.success());

    // Restarted while the receiver is still down; one more alert meanwhile. Killed before
    // its first periodic checkpoint, the agent still knows its learning period is over (saved
    // when it started): the new peer is judged at once, not learned.
    let agent = start(&state, &config);
    agent.send_udp(addr(4), 1500, 1000);
    let all = wait_file_events(&state, before_kill.len() + 1);
    let text = wait_metric(
        &agent,
        "egress_monitor_sink_backlog_events{sink=\"soc\"}",
        |v| v >= all.len() as f64,
    );
    assert!(
        metric(
            &text,
            "egress_monitor_sink_delivered_events_total{sink=\"soc\"}"
        ) == Some(0.0),
        "{text}"
    );

    // The receiver comes back: the retries (backoff capped at 1 s) reach it.
    let receiver = Receiver::start(syslog);
    let messages = receiver.wait_for(all.len());
    let payloads: Vec<String> = messages
        .iter()
        .map(|m| {
            m.split_once("] ")
                .expect("structured data, then the event")
                .1
                .to_owned()
        })
        .collect();
    assert_eq!(payloads, all, "every event, once, in the outbox's order");
    let events: Vec<Value> = all
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().all(|e| e["event"] == "opened"), "{events:?}");
    let mut peers: Vec<&str> = events
        .iter()
        .map(|e| e["alert"]["peer"]["addr"].as_str().unwrap())
        .collect();
    // The restarted agent's alert comes last. The first three may open in one poll when the
    // machine is slow (seen under QEMU's TCG): their relative order is then the detector's.
    peers[..3].sort_unstable();
    assert_eq!(
        peers,
        vec!["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    );
    wait_metric(
        &agent,
        "egress_monitor_sink_backlog_events{sink=\"soc\"}",
        |v| v == 0.0,
    );
    let run = agent.stop();
    assert!(run.status.success());
    assert!(
        run.logs
            .iter()
            .any(|l| l["message"] == "alert sink delivers again" && l["sink"] == "soc"),
        "the recovery is logged"
    );
    pause(Duration::from_millis(200));
    assert_eq!(
        receiver.messages.lock().unwrap().len(),
        all.len(),
        "nothing sent twice after the stop"
    );
}

/// `[agent] output = "none"` and a stdout sink: stdout carries ECS alert documents only.
#[test]
fn a_stdout_sink_prints_alerts_and_no_samples() {
    let state = StateDir::new();
    let config = rule_1_only("2s")
        + "[agent]\noutput = \"none\"\n[[sinks]]\nname = \"out\"\ntype = \"stdout\"\nformat = \"ecs\"\n";
    let agent = Agent::start_with_config(&state, &config, &["--output", "none"]);
    let known = udp_sink("127.0.0.1:0");
    let stranger = udp_sink("127.0.0.2:0");
    agent.send_udp(known.local_addr().unwrap(), 5, 100);
    pause(Duration::from_millis(2500));
    agent.send_udp(stranger.local_addr().unwrap(), 1500, 1000);
    let deadline = deadline(Duration::from_secs(15));
    while agent.stdout_so_far().is_empty() {
        assert!(Instant::now() < deadline, "no alert on stdout");
        thread::sleep(Duration::from_millis(50));
    }
    pause(Duration::from_millis(500));
    let lines = agent.stdout_so_far();
    let run = agent.stop();
    assert!(run.status.success());
    assert_eq!(lines.len(), 1, "one alert, nothing else: {lines:?}");
    let doc: Value = serde_json::from_str(&lines[0]).expect("an ECS document");
    assert_eq!(doc["event"]["kind"], "alert", "{doc}");
    assert_eq!(doc["event"]["action"], "egress-alert-opened", "{doc}");
    assert_eq!(doc["rule"]["id"], "unknown_volume", "{doc}");
    assert_eq!(doc["destination"]["ip"], "127.0.0.2", "{doc}");
    assert!(doc["source"]["bytes"].as_u64().unwrap() > 1 << 20, "{doc}");
    drop((known, stranger));
}

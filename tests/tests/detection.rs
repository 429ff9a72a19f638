//! Detection on the real kernel, end to end: bytes counted by the kernel programs reach the
//! detector, a destination seen during learning stays quiet, a never-seen one that receives
//! more than the threshold raises an alert naming the process; the alert is in the state
//! database and in the default sink's file, survives a restart, and an operator's `alerts ack`
//! reaches the running agent.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{
    Agent, StateDir, agent_bin, pause, rule_1_only, scaled, traffic_exe, udp_sink,
};
use serde_json::Value;

/// Rule 1 alone, loopback as the outside world, a 3 s learning period.
fn config() -> String {
    rule_1_only("3s")
}

fn alerts_json(state: &StateDir) -> Vec<Value> {
    let out = Command::new(agent_bin())
        .args(["alerts", "list", "--json", "--state-dir", state.arg()])
        .output()
        .expect("run alerts list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert JSON"))
        .collect()
}

fn start(state: &StateDir, config: &str) -> Agent {
    Agent::start_with_config(state, config, &[])
}

fn is_alert(l: &Value, event: &str) -> bool {
    l["event"] == event && l["rule"] == "unknown_volume"
}

#[test]
fn an_unknown_destination_over_threshold_raises_an_alert_that_survives_a_restart() {
    let state = StateDir::new();
    let known_sink = udp_sink("127.0.0.1:0");
    let known = known_sink.local_addr().unwrap();
    let stranger_sink = udp_sink("127.0.0.2:0");
    let stranger = stranger_sink.local_addr().unwrap();

    let agent = start(&state, &config());
    // Learning: a small exchange with `known`.
    agent.send_udp(known, 10, 100);
    let learned_at = Instant::now();
    pause(Duration::from_millis(3500));
    assert!(
        !agent.logs_so_far().iter().any(|l| is_alert(l, "opened")),
        "no alert during learning"
    );
    // After learning: 2 MB to the learned peer (quiet), then 2 MB to a stranger (alert).
    let quiet = agent.send_udp(known, 2000, 1000);
    let loud = agent.send_udp(stranger, 2000, 1000);
    let opened = agent.wait_for_log_where(Duration::from_secs(10), |l| is_alert(l, "opened"));
    assert!(learned_at.elapsed() < scaled(Duration::from_secs(30)));
    assert_eq!(opened["peer"], stranger.ip().to_string(), "{opened}");
    assert!(opened["bytes"].as_u64().unwrap() > 1 << 20, "{opened}");
    assert_eq!(opened["threshold"], 1 << 20, "{opened}");
    let run = agent.stop();
    let opened_logs: Vec<&Value> = run.logs.iter().filter(|l| is_alert(l, "opened")).collect();
    assert_eq!(opened_logs.len(), 1, "only the stranger: {opened_logs:?}");
    assert!(run.samples.iter().any(|s| s.owner.pid == Some(quiet)));

    // The database has it, with the process that sent the bytes.
    let alerts = alerts_json(&state);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["rule"], "unknown_volume");
    assert_eq!(a["status"], "open");
    assert_eq!(a["peer"]["addr"], stranger.ip().to_string());
    assert_eq!(a["peer"]["port"], stranger.port());
    assert_eq!(a["peer"]["class"], "unknown");
    assert_eq!(a["process"]["pid"], loud);
    assert_eq!(a["process"]["exe"], traffic_exe());
    assert_eq!(a["attack"]["tactic_id"], "TA0010");
    let id = a["id"].as_str().unwrap().to_owned();

    // The default sink wrote the event, from the outbox, to state.dir/alerts.jsonl.
    let file = std::fs::read_to_string(state.path().join("alerts.jsonl")).expect("alert file");
    let events: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).expect("AlertEvent JSON"))
        .collect();
    assert_eq!(events.len(), 1, "{file}");
    assert_eq!(events[0]["event"], "opened");
    assert_eq!(events[0]["alert"]["id"], id.as_str());

    // A restart loads the learning and the open alert; an acknowledgement reaches it.
    let agent = start(&state, &config());
    let loaded = agent.wait_for_log_where(Duration::from_secs(10), |l| {
        l["message"] == "detector state loaded"
    });
    assert_eq!(loaded["open_alerts"], 1, "{loaded}");
    assert!(loaded["learned"].as_u64().unwrap() >= 1, "{loaded}");
    let ack = Command::new(agent_bin())
        .args(["alerts", "ack", &id[..8], "--state-dir", state.arg()])
        .output()
        .unwrap();
    assert!(
        ack.status.success(),
        "{}",
        String::from_utf8_lossy(&ack.stderr)
    );
    agent.wait_for_log_where(Duration::from_secs(10), |l| {
        l["message"] == "applying an operator decision"
    });
    // More bytes to the stranger: the alert is open and acknowledged, so no new alert.
    agent.send_udp(stranger, 2000, 1000);
    pause(Duration::from_secs(1));
    let run = agent.stop();
    assert!(
        !run.logs.iter().any(|l| is_alert(l, "opened")),
        "the reloaded alert is still open: no second alert"
    );
    let alerts = alerts_json(&state);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["acknowledged"], true);
    drop((known_sink, stranger_sink));
}

/// The allowlist's host names are resolved by the agent (here `localhost`, from /etc/hosts):
/// their addresses are `allowlisted`, never alerted on, while a stranger still is.
#[test]
fn an_allowlisted_host_name_resolved_by_the_agent_is_silent() {
    let state = StateDir::new();
    let config = rule_1_only("1s") + "[[destinations.allow]]\nhost = \"localhost\"\n";
    let local_sink = udp_sink("127.0.0.1:0");
    let local = local_sink.local_addr().unwrap();
    let stranger_sink = udp_sink("127.0.0.2:0");
    let stranger = stranger_sink.local_addr().unwrap();
    let agent = start(&state, &config);
    // Starts the service's learning period with a destination that is neither.
    let other_sink = udp_sink("127.0.0.3:0");
    agent.send_udp(other_sink.local_addr().unwrap(), 5, 100);
    pause(Duration::from_millis(1500));
    agent.send_udp(local, 2000, 1000);
    agent.send_udp(stranger, 2000, 1000);
    agent.wait_for_log_where(Duration::from_secs(10), |l| is_alert(l, "opened"));
    pause(Duration::from_millis(500));
    let run = agent.stop();
    let peers: Vec<&Value> = run
        .logs
        .iter()
        .filter(|l| is_alert(l, "opened"))
        .map(|l| &l["peer"])
        .collect();
    assert_eq!(
        peers,
        vec![&Value::from(stranger.ip().to_string())],
        "localhost is allowlisted"
    );
    drop((local_sink, stranger_sink, other_sink));
}

/// A configured service (matched on its command line) that stops and starts again, as a
/// watched service restarted by its operator: the new process, with new sockets, is the same
/// service to the agent. Its learned destination stays quiet, a stranger raises an alert that
/// names the service and the new process. Nothing is re-attached for it: the programs watch
/// the cgroup root, so processes come and go under them.
#[test]
fn a_restarted_watched_service_is_still_watched() {
    let state = StateDir::new();
    let config = rule_1_only("2s").replace("[detect]\n", "[detect]\ngroup_unmatched = false\n")
        + "[[services]]\nname = \"sender\"\n[[services.match]]\ncmdline = \"*udp-send*\"\n";
    let known_sink = udp_sink("127.0.0.1:0");
    let known = known_sink.local_addr().unwrap();
    let stranger_sink = udp_sink("127.0.0.2:0");
    let stranger = stranger_sink.local_addr().unwrap();
    let agent = start(&state, &config);
    let ids = agent.program_ids();
    let first = agent.send_udp(known, 10, 100); // learned, then this process exits
    pause(Duration::from_millis(2500));
    let quiet = agent.send_udp(known, 2000, 1000);
    let loud = agent.send_udp(stranger, 2000, 1000);
    assert!(first != quiet && quiet != loud, "three processes");
    let opened = agent.wait_for_log_where(Duration::from_secs(10), |l| is_alert(l, "opened"));
    assert_eq!(opened["service"], "sender", "{opened}");
    assert_eq!(opened["peer"], stranger.ip().to_string(), "{opened}");
    let attached = integration_tests::cgroup_attached_ids(&integration_tests::cgroup2_root());
    assert!(
        ids.iter().all(|id| attached.contains(id)),
        "{ids:?} {attached:?}"
    );
    let run = agent.stop();
    assert_eq!(
        run.logs.iter().filter(|l| is_alert(l, "opened")).count(),
        1,
        "the learned destination stays quiet after the restart"
    );
    let alerts = alerts_json(&state);
    assert_eq!(alerts[0]["service"], "sender");
    assert_eq!(alerts[0]["process"]["pid"], loud);
    drop((known_sink, stranger_sink));
}

#[test]
fn a_corrupt_state_file_is_refused_and_reset_moves_it_aside() {
    let state = StateDir::new();
    std::fs::write(state.path().join("state.db"), vec![7u8; 4096]).unwrap();
    let out = Command::new(agent_bin())
        .args(["run", "--state-dir", state.arg()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("corrupt or not a database") && err.contains("--reset-state"),
        "{err}"
    );
    let agent = Agent::start(&["--state-dir", state.arg(), "--reset-state"]);
    agent.wait_for_log_where(Duration::from_secs(10), |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("--reset-state"))
    });
    let run = agent.stop();
    assert!(run.status.success());
    let kept: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.db.reset-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read(kept[0].path()).unwrap(),
        vec![7u8; 4096],
        "kept as it was"
    );
}

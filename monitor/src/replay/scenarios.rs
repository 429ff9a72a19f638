//! The replay scenarios of the detection issue, on synthetic traces (see `synthetic`): the
//! normal day raises nothing; each attack raises the right rule's alert, for the right service
//! and peer, within one window of its start; state survives a restart.

use std::{io::BufReader, net::IpAddr};

use super::{
    Replayer, replay_lines,
    synthetic::{self, Scenario, WINDOW_SECS},
};
use crate::{
    config::{Config, Origin},
    detect::{
        alerts::{AlertEvent, AlertEventKind},
        classes::DestinationClass,
        rules::RuleId,
    },
    store::Store,
};

fn config(extra: &str) -> Config {
    Config::parse(extra, &Origin::Embedded).expect("test config parses")
}

/// Replays a whole scenario; returns every alert event.
fn run(scenario: Scenario, config: &Config) -> Vec<AlertEvent> {
    let mut store = Store::in_memory().unwrap();
    let mut replayer = Replayer::new(config, &mut store).unwrap();
    let mut events = Vec::new();
    synthetic::generate(scenario, 1, |batch| {
        replayer
            .window(batch, &mut |e| {
                events.push(e.clone());
                Ok(())
            })
            .unwrap();
    });
    events
}

fn opened(events: &[AlertEvent]) -> Vec<&AlertEvent> {
    events
        .iter()
        .filter(|e| e.event == AlertEventKind::Opened)
        .collect()
}

fn describe(events: &[&AlertEvent]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {:?} {} bytes (threshold {})",
                e.at,
                e.alert.rule,
                e.alert.service,
                e.alert.peer.as_ref().map(|p| p.addr),
                e.alert.bytes,
                e.alert.threshold.bytes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The attack's alert of `rule` for the expected service and peer, opened within one rule
/// window (plus the one-minute sample window that carries the first attack bytes).
fn assert_caught(events: &[AlertEvent], scenario: Scenario, rule: RuleId, service: &str) {
    let expected = scenario.expected().unwrap();
    let all = opened(events);
    let hit = all
        .iter()
        .find(|e| e.alert.rule == rule)
        .unwrap_or_else(|| panic!("{scenario:?}: no {rule} alert; got:\n{}", describe(&all)));
    assert_eq!(hit.alert.service, service, "{}", describe(&all));
    let peer = hit
        .alert
        .peer
        .as_ref()
        .expect("a per-peer rule names the peer");
    assert_eq!(peer.addr, expected.peer);
    let process = hit.alert.process.as_ref().expect("the process is named");
    assert_eq!(process.unit.as_deref(), Some(expected.unit));
    assert!(process.pid.is_some() && process.exe.is_some() && process.user.is_some());
    let latency = hit.alert.opened_at.as_second() - expected.start.as_second();
    let allowed = i64::from(hit.alert.window.secs()) + WINDOW_SECS;
    assert!(
        (0..=allowed).contains(&latency),
        "{rule} opened {latency} s after the attack started (allowed {allowed})"
    );
    assert!(hit.alert.bytes > hit.alert.threshold.bytes);
    for e in &all {
        let p = e.alert.peer.as_ref().map(|p| p.addr);
        assert!(
            p.is_none_or(|p| p == expected.peer),
            "alert about an innocent peer:\n{}",
            describe(&all)
        );
    }
}

#[test]
fn a_normal_day_raises_no_alert() {
    let events = run(Scenario::Normal, &config(""));
    assert!(
        events.is_empty(),
        "{}",
        describe(&events.iter().collect::<Vec<_>>())
    );
}

#[test]
fn a_bulk_download_by_one_client_is_a_peer_outlier() {
    let events = run(Scenario::BulkDownload, &config(""));
    assert_caught(
        &events,
        Scenario::BulkDownload,
        RuleId::PeerOutlier,
        "nginx.service",
    );
    let all = opened(&events);
    let outlier = all
        .iter()
        .find(|e| e.alert.rule == RuleId::PeerOutlier)
        .unwrap();
    assert_eq!(
        outlier.alert.peer.as_ref().unwrap().class,
        DestinationClass::Client,
        "the service accepted the connection: a client, judged against the clients"
    );
    assert!(
        !all.iter().any(|e| e.alert.rule == RuleId::UnknownVolume),
        "a client is never unknown: {}",
        describe(&all)
    );
    // The alert grows while the download goes on; it stays open while the pulled bytes
    // are in the peer's 1h and 24h windows (no second alert on the peer's next ordinary
    // request), and its /64, whose volume the client explains, raises nothing.
    let id = outlier.alert.id;
    assert!(
        events
            .iter()
            .any(|e| e.alert.id == id && e.event == AlertEventKind::Updated)
    );
    assert_eq!(all.len(), 1, "{}", describe(&all));
    let last = events.iter().rev().find(|e| e.alert.id == id).unwrap();
    assert!(
        last.alert.peak_bytes >= 1 << 30,
        "{}",
        last.alert.peak_bytes
    );
    assert!(
        !events
            .iter()
            .any(|e| e.alert.id == id && e.event == AlertEventKind::Resolved),
        "resolved while its 24h window still held"
    );
}

#[test]
fn a_configured_service_groups_nginx_and_synapse() {
    let cfg = config(
        r#"
        [[services]]
        name = "messaging"
        [[services.match]]
        unit = "nginx.service"
        [[services.match]]
        comm = "python*"
        cmdline = "*synapse.app.homeserver*"
        "#,
    );
    let events = run(Scenario::BulkDownload, &cfg);
    assert_caught(
        &events,
        Scenario::BulkDownload,
        RuleId::PeerOutlier,
        "messaging",
    );
}

#[test]
fn an_upload_to_a_never_seen_host_is_unknown_volume() {
    let events = run(Scenario::Upload, &config(""));
    assert_caught(
        &events,
        Scenario::Upload,
        RuleId::UnknownVolume,
        "matrix-synapse.service",
    );
    let hit = opened(&events)
        .into_iter()
        .find(|e| e.alert.rule == RuleId::UnknownVolume)
        .unwrap();
    assert_eq!(
        hit.alert.peer.as_ref().unwrap().class,
        DestinationClass::Unknown
    );
    assert_eq!(hit.alert.attack.tactic_id, "TA0010");
}

#[test]
fn a_slow_drip_fires_only_the_24h_rule() {
    let events = run(Scenario::SlowDrip, &config(""));
    let all = opened(&events);
    assert_eq!(
        all.iter().map(|e| e.alert.rule).collect::<Vec<_>>(),
        vec![RuleId::SlowDrip],
        "{}",
        describe(&all)
    );
    let expected = Scenario::SlowDrip.expected().unwrap();
    let hit = all[0];
    assert_eq!(hit.alert.peer.as_ref().unwrap().addr, expected.peer);
    assert_eq!(hit.alert.service, "matrix-synapse.service");
    // 256 MiB of 400 one-MiB pieces spread over 24 h: about 15.4 h in.
    let hours = (hit.alert.opened_at.as_second() - expected.start.as_second()) as f64 / 3600.0;
    assert!((15.0..16.0).contains(&hours), "{hours}");
}

#[test]
fn disabled_rules_stay_silent() {
    let events = run(
        Scenario::Upload,
        &config("[rules.unknown_volume]\nenabled = false\n[rules.slow_drip]\nenabled = false\n"),
    );
    assert!(events.is_empty(), "{}", describe(&opened(&events)));
}

/// Replays with a restart (checkpoint, drop, reload) every `every` windows; returns events.
fn run_with_restarts(scenario: Scenario, dir: &std::path::Path, every: usize) -> Vec<AlertEvent> {
    let config = config("");
    let mut batches: Vec<Vec<crate::flow::FlowSample>> = Vec::new();
    synthetic::generate(scenario, 1, |b| batches.push(b.to_vec()));
    let mut events = Vec::new();
    for chunk in batches.chunks(every) {
        let mut store = Store::open(dir).unwrap();
        let mut replayer = Replayer::new(&config, &mut store).unwrap();
        for batch in chunk {
            replayer
                .window(batch, &mut |e| {
                    events.push(e.clone());
                    Ok(())
                })
                .unwrap();
        }
        replayer.finish().unwrap();
    }
    events
}

#[test]
fn restarts_lose_no_learning_no_bytes_and_no_open_alert() {
    let dir = std::env::temp_dir().join(format!("egress-monitor-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Restart every 7 hours and 13 minutes: mid-window for every window length, once in the
    // middle of the download (14:00-14:20 on day 2 is window 2,880 + 840).
    let every = 7 * 60 + 13;
    let with = run_with_restarts(Scenario::BulkDownload, &dir, every);
    let without = run(Scenario::BulkDownload, &config(""));
    let brief = |events: &[AlertEvent]| {
        events
            .iter()
            .map(|e| {
                (
                    e.event,
                    e.at,
                    e.alert.id,
                    e.alert.rule,
                    e.alert.bytes,
                    e.alert.peak_bytes,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_ne!(without, vec![]);
    assert_eq!(brief(&with), brief(&without));
    let store = Store::open(&dir).unwrap();
    assert!(store.alert_count(None).unwrap() >= 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_lines_replay_like_the_agent_prints_them() {
    // 10:00 to 11:30 of day 2 of the upload scenario, written as the agent writes samples,
    // with a 30-minute learning period.
    let from = synthetic::START_SECS + synthetic::DAY_SECS + 10 * 3600;
    let to = from + 90 * 60;
    let mut text: Vec<u8> = Vec::new();
    synthetic::generate(Scenario::Upload, 1, |batch| {
        for s in batch {
            let t = s.window_end.as_second();
            if t > from && t <= to {
                crate::output::write_samples(
                    &mut text,
                    crate::output::OutputFormat::Json,
                    std::slice::from_ref(s),
                )
                .unwrap();
            }
        }
    });
    text.extend_from_slice(b"\n\n"); // blank lines are fine
    let cfg = config("[detect]\nlearning_period = \"30m\"\n");
    let mut store = Store::in_memory().unwrap();
    let mut replayer = Replayer::new(&cfg, &mut store).unwrap();
    let mut events = Vec::new();
    replay_lines(BufReader::new(&text[..]), &mut replayer, |e| {
        events.push(e.clone());
        Ok(())
    })
    .unwrap();
    let summary = replayer.finish().unwrap();
    assert_eq!(summary.windows, 90);
    let all = opened(&events);
    assert_eq!(
        all[0].alert.rule,
        RuleId::UnknownVolume,
        "{}",
        describe(&all)
    );
    assert!(
        all.iter().all(|e| e
            .alert
            .peer
            .as_ref()
            .is_some_and(|p| p.addr == synthetic::UPLOAD_HOST)),
        "{}",
        describe(&all)
    );
    // The clients are clients, not learned destinations; the service's own upstreams are.
    assert!(summary.detector.peers > 400, "{summary:?}");
    assert!((1..100).contains(&summary.detector.learned), "{summary:?}");

    // A broken line is named, with its number.
    let bad = "{\"window_start\": 3}\n";
    let mut store = Store::in_memory().unwrap();
    let mut replayer = Replayer::new(&cfg, &mut store).unwrap();
    let e = replay_lines(BufReader::new(bad.as_bytes()), &mut replayer, |_| Ok(())).unwrap_err();
    assert!(e.to_string().starts_with("line 1: not a FlowSample"), "{e}");
}

#[test]
fn expected_peers_are_documentation_addresses() {
    for s in [Scenario::BulkDownload, Scenario::Upload, Scenario::SlowDrip] {
        let peer = s.expected().unwrap().peer;
        let doc = match peer {
            IpAddr::V4(v4) => v4.is_documentation(),
            IpAddr::V6(v6) => v6.segments()[0] == 0x2001 && v6.segments()[1] == 0xdb8,
        };
        assert!(doc, "{peer}");
    }
}

use std::net::IpAddr;

use super::*;
use crate::{
    detect::tests::{T0, owner, sample},
    flow::{Direction, FlowSample},
    replay::homeserver::MIB,
};

fn send(at: i64, peer: &str, bytes: u64, direction: Direction) -> FlowSample {
    let mut s = sample(&owner(), T0 + at, peer, 50_000, bytes);
    s.direction = Some(direction);
    s
}

/// A hand-made stream: learning for an hour, then one attacker pulling 60 MB a minute, an
/// innocent client pulling as much once, an upload to a never-seen host, and twelve
/// addresses of one /24 adding up.
fn hand_made() -> Vec<AlertEvent> {
    let config = Config::parse("[detect]\nlearning_period = \"1h\"\n", &Origin::Embedded).unwrap();
    let mut store = Store::in_memory().unwrap();
    let mut replayer = Replayer::new(&config, &mut store).unwrap();
    let mut events = Vec::new();
    let mut window = |batch: &[FlowSample]| {
        replayer
            .window(batch, &mut |e| {
                events.push(e.clone());
                Ok(())
            })
            .unwrap();
    };
    window(&[send(0, "198.51.100.1", 1000, Direction::Served)]);
    for m in 0..3 {
        window(&[send(
            7200 + m * 60,
            "203.0.113.5",
            60_000_000,
            Direction::Served,
        )]);
    }
    window(&[send(
        3 * 3600,
        "198.51.100.9",
        60_000_000,
        Direction::Served,
    )]);
    window(&[send(
        4 * 3600,
        "192.0.2.99",
        60_000_000,
        Direction::Initiated,
    )]);
    for m in 0..10 {
        let batch: Vec<FlowSample> = (10..22)
            .map(|h| {
                send(
                    5 * 3600 + m * 60,
                    &format!("198.18.7.{h}"),
                    5 * MIB,
                    Direction::Served,
                )
            })
            .collect();
        window(&batch);
    }
    events
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rules(list: &[Brief]) -> Vec<(&str, Option<&str>)> {
    list.iter()
        .map(|b| (b.rule.as_str(), b.peer.as_deref()))
        .collect()
}

#[test]
fn the_harness_sorts_alerts_into_the_event_and_false_ones() {
    let events = hand_made();
    let attacker = Target {
        attack: true,
        service: "backup.service".into(),
        peers: vec![ip("203.0.113.5")],
        spans: vec![(T0 + 7200, T0 + 7380)],
        start: T0 + 7200,
    };
    let v = judge(&events, Some(&attacker), T0 + 3600, &[]);
    assert_eq!(
        rules(&v.on_event),
        vec![("peer_outlier", Some("203.0.113.5"))]
    );
    assert!(v.detected());
    assert!((0..=120).contains(&v.first_alert_secs.unwrap()), "{v:?}");
    assert_eq!(
        rules(&v.false_alerts),
        vec![
            ("peer_outlier", Some("198.51.100.9")),
            ("unknown_volume", Some("192.0.2.99")),
            ("prefix_outlier", Some("198.18.7.0/24")),
            // 600 MiB to twelve new clients in ten minutes: the service's new clients.
            ("new_client_volume", None),
        ],
    );
    // Updates and resolutions are not alerts; alerts before `judged_from` are not counted.
    assert!(events.iter().any(|e| e.event != AlertEventKind::Opened));
    let late = judge(&events, Some(&attacker), T0 + 10 * 3600, &[]);
    assert_eq!(late, Verdict::default());

    // The prefix's members are the event: the prefix alert is about it; a service in
    // another name would not be.
    let spread = Target {
        peers: (10..22).map(|h| ip(&format!("198.18.7.{h}"))).collect(),
        spans: vec![(T0 + 5 * 3600, T0 + 5 * 3600 + 600)],
        start: T0 + 5 * 3600,
        ..attacker.clone()
    };
    let v = judge(&events, Some(&spread), T0 + 3600, &[]);
    // The service rule that fired while it ran is about it too, unless the same trace
    // without the event has it then.
    assert_eq!(
        rules(&v.on_event),
        vec![("prefix_outlier", Some("198.18.7.0/24"))]
    );
    assert_eq!(
        rules(&v.service_on_event),
        vec![("new_client_volume", None)]
    );
    assert_eq!(v.false_alerts.len(), 3);
    let ordinary: Vec<Brief> = v.service_on_event.clone();
    let v = judge(&events, Some(&spread), T0 + 3600, &ordinary);
    assert!(v.service_on_event.is_empty() && v.detected());
    assert_eq!(v.false_alerts.len(), 4);
    let elsewhere = Target {
        service: "messaging".into(),
        ..spread
    };
    assert!(!judge(&events, Some(&elsewhere), T0 + 3600, &[]).detected());
    // Without an event, every alert is false.
    assert_eq!(judge(&events, None, T0 + 3600, &[]).false_alerts.len(), 5);
    // The attacker's address, outside its span (and the day after it), is a false alert.
    let later = Target {
        spans: vec![(T0 - 2 * 86_400, T0 - 2 * 86_400 + 60)],
        start: T0 - 2 * 86_400,
        ..attacker
    };
    let v = judge(&events, Some(&later), T0 + 3600, &[]);
    assert!(!v.detected());
    assert_eq!(v.false_alerts.len(), 5);
}

#[test]
fn the_table_counts_seeds_rules_and_false_alerts() {
    let events = hand_made();
    let attacker = Target {
        attack: true,
        service: "backup.service".into(),
        peers: vec![ip("203.0.113.5")],
        spans: vec![(T0 + 7200, T0 + 7380)],
        start: T0 + 7200,
    };
    let caught = judge(&events, Some(&attacker), T0 + 3600, &[]);
    let missed = judge(
        &events,
        Some(&Target {
            peers: vec![],
            ..attacker
        }),
        T0 + 3600,
        &[],
    );
    let run = |seed, verdict: &Verdict| RunResult {
        seed,
        samples: 0,
        clients: 2000,
        alert_events: 0,
        verdict: verdict.clone(),
    };
    let report = Report {
        days: 7,
        seeds: vec![1, 2],
        seconds: 1.0,
        scenarios: vec![
            ScenarioReport {
                scenario: "burst".into(),
                expected_alert: true,
                event: true,
                runs: vec![run(1, &caught), run(2, &missed)],
            },
            ScenarioReport {
                scenario: "normal".into(),
                expected_alert: false,
                event: false,
                runs: vec![run(1, &caught), run(2, &Verdict::default())],
            },
        ],
    };
    // The ordinary week: (4 + 0) / 2 false alerts over 6 judged days and 2,000 clients.
    assert_eq!(caught.false_alerts.len(), 4);
    let (clients, rate) = report.false_rate().unwrap();
    assert_eq!(clients, 2000);
    assert!((rate - 2.0 / 6.0 / 2.0).abs() < 1e-9, "{rate}");
    let md = report.markdown();
    let first = caught.first_alert_secs.unwrap();
    assert!(
        md.contains(&format!(
            "| burst | alert | 1/2 partly | peer_outlier | {first} / – | \
             9 (new_client_volume 2, peer_outlier 3, prefix_outlier 2, unknown_volume 2) |"
        )),
        "{md}"
    );
    assert!(
        md.contains("2000 distinct client addresses (mean over seeds): 0.17 false alerts per day per 1,000 clients"),
        "{md}"
    );
    assert!(report.text().contains("1/2 partly"));
    assert!(report.details().contains("FALSE"));
    // The summary row of the shape: 1 of 2 attack runs, the partly caught scenario, the
    // ordinary weeks' 4 false alerts by rule; as many cells as its header.
    let row = report.summary_row("6 / 300 / 420 / 30");
    assert_eq!(
        row,
        "| 6 / 300 / 420 / 30 | 2000 | 1/2 | burst (1/2) | – | 4 (new_client_volume 1, \
         peer_outlier 1, prefix_outlier 1, unknown_volume 1) | 0.17 |"
    );
    let cells = |line: &str| line.matches('|').count();
    assert_eq!(cells(&row), cells(SUMMARY_HEADER.lines().next().unwrap()));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["scenarios"][0]["runs"][0]["on_event"][0]["rule"],
        "peer_outlier"
    );
}

#[test]
fn a_small_homeserver_burst_is_caught() {
    let opts = Options {
        days: 3,
        seeds: vec![1],
        scenarios: vec![Scenario::Burst],
        population: Population {
            nats: 2,
            homes: 20,
            mobiles: 20,
            new_devices_per_day: 1,
            federation: 3,
        },
        threads: 2,
    };
    let config = with_services(&Config::parse("", &Origin::Embedded).unwrap()).unwrap();
    let report = run(&config, &opts).unwrap();
    let r = &report.scenarios[0].runs[0];
    assert!(r.samples > 4320, "{}", r.samples);
    // 20 homes and 2 gateways, plus 20 phones a day on new addresses (3 days).
    assert!((60..=120).contains(&r.clients), "{}", r.clients);
    assert!(r.verdict.detected(), "{:?}", r.verdict);
    assert!(r.verdict.on_event.iter().all(|b| b.service == "messaging"));
    assert!(r.verdict.first_alert_secs.unwrap() <= 120);
    assert_eq!(
        target(Scenario::Normal, &Params::default()).map(|t| t.start),
        None
    );
}

//! Rule-by-rule tests of the detector on small hand-made streams: what fires, what does not,
//! and what classes of destination silence it.

use std::{net::IpAddr, sync::Arc};

use jiff::Timestamp;

use super::{Detector, alerts::AlertEvent, classes::DestinationClass, rules::RuleId};
use crate::{
    config::{Config, Origin},
    flow::{Direction, Endpoint, FlowSample, Owner, Protocol},
};

pub(crate) const T0: i64 = 1_780_272_000; // 2026-06-01T00:00:00Z

pub(crate) fn config(text: &str) -> Config {
    Config::parse(text, &Origin::Embedded).unwrap()
}

pub(crate) fn owner() -> Arc<Owner> {
    Arc::new(Owner {
        pid: Some(4242),
        comm: Some("backup".into()),
        exe: Some("/usr/bin/backup".into()),
        unit: Some("backup.service".into()),
        service: "backup.service".into(),
        ..Owner::default()
    })
}

pub(crate) fn sample(owner: &Arc<Owner>, at: i64, peer: &str, port: u16, bytes: u64) -> FlowSample {
    FlowSample {
        window_start: Timestamp::from_second(at - 1).unwrap(),
        window_end: Timestamp::from_second(at).unwrap(),
        owner: owner.clone(),
        local: None,
        remote: Some(Endpoint {
            addr: peer.parse().unwrap(),
            port,
        }),
        remote_name: None,
        protocol: Protocol::Tcp,
        bytes,
        packets: bytes.div_ceil(1448),
        flows: 1,
        first_seen: None,
        last_seen: None,
        untracked: None,
        direction: None,
    }
}

struct Run {
    detector: Detector,
    owner: Arc<Owner>,
    events: Vec<AlertEvent>,
}

impl Run {
    fn new(text: &str) -> Self {
        Self {
            detector: Detector::new(&config(text)),
            owner: owner(),
            events: Vec::new(),
        }
    }

    fn send(&mut self, at: i64, peer: &str, port: u16, bytes: u64) {
        let s = sample(&self.owner, T0 + at, peer, port, bytes);
        self.detector.observe(&[s], &mut self.events);
    }

    fn opened(&self) -> Vec<(RuleId, Option<IpAddr>)> {
        self.events
            .iter()
            .filter(|e| e.event == super::alerts::AlertEventKind::Opened)
            .map(|e| (e.alert.rule, e.alert.peer.as_ref().map(|p| p.addr)))
            .collect()
    }
}

/// A one-hour learning period with one small exchange, so the service exists.
const LEARN: &str = "[detect]\nlearning_period = \"1h\"\n";

#[test]
fn unknown_volume_fires_on_unknown_only() {
    let mut r = Run::new(LEARN);
    r.send(0, "198.51.100.1", 443, 1000); // learned
    for i in 0..60 {
        // 60 MB in 60 s, to a learned, an unknown and an internal peer.
        r.send(3700 + i, "198.51.100.1", 443, 1_000_000);
        r.send(3700 + i, "203.0.113.9", 443, 1_000_000);
        r.send(3700 + i, "10.1.1.1", 5432, 1_000_000); // internal
    }
    assert_eq!(
        r.opened(),
        vec![(RuleId::UnknownVolume, Some("203.0.113.9".parse().unwrap()))]
    );
    let e = &r.events[0].alert;
    assert_eq!(e.peer.as_ref().unwrap().class, DestinationClass::Unknown);
    assert_eq!(e.threshold.bytes, 32 << 20);
    assert!(e.bytes > 32 << 20 && e.bytes < 60_000_000, "{}", e.bytes);
    assert_eq!(e.process.as_ref().unwrap().pid, Some(4242));
}

#[test]
fn nothing_fires_while_learning() {
    let mut r = Run::new(LEARN);
    for i in 0..100 {
        r.send(i, "203.0.113.9", 443, 10_000_000);
    }
    assert_eq!(r.opened(), vec![]);
}

#[test]
fn allowlisted_destinations_are_silent_by_cidr_port_and_service() {
    let text = format!(
        "{LEARN}[[destinations.allow]]\ncidr = \"203.0.113.0/24\"\nports = [443]\nservices = [\"backup.service\"]\n"
    );
    let mut r = Run::new(&text);
    r.send(0, "198.51.100.1", 443, 1000);
    for i in 0..40 {
        r.send(3700 + i, "203.0.113.9", 443, 1_000_000);
    }
    assert_eq!(r.opened(), vec![], "allowlisted on 443");
    for i in 0..40 {
        r.send(3800 + i, "203.0.113.9", 8443, 1_000_000);
    }
    assert_eq!(r.opened().len(), 1, "not on 8443");
}

#[test]
fn operator_learned_destinations_are_not_unknown() {
    let mut r = Run::new(LEARN);
    r.send(0, "198.51.100.1", 443, 1000);
    r.detector
        .learn("backup.service", "203.0.113.9".parse().unwrap());
    for i in 0..40 {
        r.send(3700 + i, "203.0.113.9", 443, 1_000_000);
    }
    assert_eq!(r.opened(), vec![]);
}

#[test]
fn a_burst_of_new_destinations_fires_rule_4_with_examples() {
    let mut r = Run::new(LEARN);
    r.send(0, "198.51.100.1", 443, 1000);
    // 40 new hosts in 10 minutes: under the default 50.
    for i in 0..40 {
        r.send(3700 + i * 15, &format!("2001:db8:5::{i:x}"), 443, 5000);
    }
    assert_eq!(r.opened(), vec![]);
    // An hour later, 60 in two minutes.
    for i in 0..60 {
        r.send(8000 + i * 2, &format!("2001:db8:6::{i:x}"), 443, 5000);
    }
    assert_eq!(r.opened(), vec![(RuleId::NewDestinations, None)]);
    let a = &r.events[0].alert;
    assert_eq!(a.new_destinations, Some(51));
    assert_eq!(a.examples.len(), 5);
    assert_eq!(a.examples[4], "2001:db8:6::32".parse::<IpAddr>().unwrap());
}

#[test]
fn service_baseline_knows_the_time_of_day() {
    // Days are busy (200 MB per minute over many learned peers), nights quiet (1 MB).
    let text = "[detect]\nlearning_period = \"2days\"\n\
                [rules.service_baseline]\nfloor = \"10MiB\"\n\
                [rules.peer_outlier]\nenabled = false\n\
                [rules.slow_drip]\nenabled = false\n";
    let mut r = Run::new(text);
    let busy = |minute: i64| (8..20).contains(&((minute / 60) % 24));
    for minute in 0..(3 * 1440) {
        let per_peer = if busy(minute) { 20_000_000 } else { 100_000 };
        for p in 0..10 {
            r.send(
                minute * 60 + 30,
                &format!("198.51.100.{}", p + 1),
                443,
                per_peer,
            );
        }
    }
    assert_eq!(r.opened(), vec![], "the days' own volumes");
    // Day 4, 03:00: the day's volume at night, to the same learned peers.
    let night = 3 * 86_400 + 3 * 3600;
    for m in 0..3 {
        for p in 0..10 {
            r.send(
                night + m * 60 + 30,
                &format!("198.51.100.{}", p + 1),
                443,
                20_000_000,
            );
        }
    }
    assert_eq!(r.opened(), vec![(RuleId::ServiceBaseline, None)]);
    let a = &r.events[0].alert;
    assert!(a.threshold.samples.unwrap() >= 30, "{:?}", a.threshold);
    assert!(
        a.threshold.bytes < 20_000_000,
        "the night's threshold: {:?}",
        a.threshold
    );
}

#[test]
fn names_from_passive_dns_allowlist_and_label_peers() {
    let text = format!("{LEARN}[[destinations.allow]]\nhost = \"*.backup.example.org\"\n");
    let mut r = Run::new(&text);
    r.send(0, "198.51.100.1", 443, 1000);
    let named = |r: &mut Run, at: i64, peer: &str, name: &str| {
        let mut s = sample(&r.owner, T0 + at, peer, 443, 1_000_000);
        s.remote_name = Some(Arc::from(name));
        r.detector.observe(&[s], &mut r.events);
    };
    for i in 0..60 {
        named(&mut r, 3700 + i, "203.0.113.7", "eu1.backup.example.org");
        named(&mut r, 3700 + i, "203.0.113.8", "files.example.net");
    }
    assert_eq!(
        r.opened(),
        vec![(RuleId::UnknownVolume, Some("203.0.113.8".parse().unwrap()))]
    );
    let peer = r.events[0].alert.peer.as_ref().unwrap();
    assert_eq!(peer.name.as_deref(), Some("files.example.net"));
}

#[test]
fn a_prefixs_known_peers_are_the_learned_and_the_long_met_inside_it() {
    let mut r = Run::new(LEARN);
    r.send(0, "198.51.100.1", 443, 1000); // learned
    r.send(10, "198.51.101.1", 443, 1000); // learned, outside the prefix
    r.send(3700, "198.51.100.2", 443, 1000); // met an hour before `before`
    r.send(7000, "198.51.100.3", 443, 1000); // met minutes before: not known
    let net: ipnet::IpNet = "198.51.100.0/24".parse().unwrap();
    let before = (T0 + 7300) as u64;
    let mut known = r
        .detector
        .known_peers_in("backup.service", &net, (before, 3600), 64);
    known.sort();
    let addrs: Vec<IpAddr> = ["198.51.100.1", "198.51.100.2"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(known, addrs);
    assert_eq!(
        r.detector
            .known_peers_in("backup.service", &net, (before, 3600), 1)
            .len(),
        2,
        "max + 1: tells the caller there are more than max"
    );
    assert_eq!(
        r.detector
            .known_peers_in("other.service", &net, (before, 3600), 64),
        Vec::<IpAddr>::new()
    );
}

#[test]
fn a_prefixs_known_peers_include_the_clients_of_a_short_learning_period() {
    // Learning for 5 minutes (a test rig, or an operator's choice): the clients met then are
    // the baseline's, known to a containment that starts 10 minutes later although they were
    // met less than `known_for` before it; a newcomer after learning is not.
    let mut r = Run::new("[detect]\nlearning_period = \"300s\"\n");
    let client = |r: &mut Run, at: i64, peer: &str| {
        let mut s = sample(&r.owner, T0 + at, peer, 50_000, 10_000);
        s.direction = Some(Direction::Served);
        r.detector.observe(&[s], &mut r.events);
    };
    client(&mut r, 0, "198.51.100.10");
    client(&mut r, 200, "198.51.100.11");
    client(&mut r, 400, "198.51.100.66"); // after learning
    let net: ipnet::IpNet = "198.51.100.0/24".parse().unwrap();
    let mut known =
        r.detector
            .known_peers_in("backup.service", &net, ((T0 + 900) as u64, 3600), 64);
    known.sort();
    let addrs: Vec<IpAddr> = ["198.51.100.10", "198.51.100.11"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(known, addrs);
}

#[test]
fn idle_peers_that_are_not_learned_are_forgotten() {
    let mut r = Run::new(LEARN);
    r.send(0, "198.51.100.1", 443, 1000); // learned
    r.send(3700, "203.0.113.9", 443, 1000); // unknown
    assert_eq!(r.detector.stats.peers, 2);
    // A day and two hours later, someone else talks: the sweep runs.
    r.send(3700 + 26 * 3600, "203.0.113.10", 443, 1000);
    r.send(3700 + 26 * 3600 + 601, "203.0.113.10", 443, 1000);
    assert_eq!(r.detector.stats.forgotten, 1);
    assert_eq!(
        r.detector.stats.peers, 2,
        "the learned peer and the active one"
    );
    let forgotten: Vec<(Arc<str>, String)> = r
        .detector
        .take_forgotten()
        .into_iter()
        .map(|(s, k)| (s, k.addr_text()))
        .collect();
    assert_eq!(
        forgotten,
        vec![(Arc::from("backup.service"), "203.0.113.9".to_owned())]
    );
}

#[test]
fn a_service_that_appears_after_the_host_learned_is_judged_at_once() {
    let mut r = Run::new(LEARN);
    r.send(0, "198.51.100.1", 443, 1000); // the host learns from t = 0 for an hour
    let tool = Arc::new(Owner {
        pid: Some(6666),
        comm: Some("curl".into()),
        exe: Some("/usr/bin/curl".into()),
        service: "/usr/bin/curl".into(),
        ..Owner::default()
    });
    for i in 0..60 {
        let s = sample(&tool, T0 + 7200 + i, "203.0.113.66", 443, 1_000_000);
        r.detector.observe(&[s], &mut r.events);
    }
    assert_eq!(
        r.opened(),
        vec![(RuleId::UnknownVolume, Some("203.0.113.66".parse().unwrap()))]
    );
    assert_eq!(r.events[0].alert.service, "/usr/bin/curl");

    // With `learn_new_services`, or for a configured service, it learns first.
    for extra in [
        "learn_new_services = true\n",
        "[[services]]\nname = \"tools\"\n[[services.match]]\ncomm = \"curl\"\n",
    ] {
        let mut r = Run::new(&format!("{LEARN}{extra}"));
        r.send(0, "198.51.100.1", 443, 1000);
        for i in 0..60 {
            let s = sample(&tool, T0 + 7200 + i, "203.0.113.66", 443, 1_000_000);
            r.detector.observe(&[s], &mut r.events);
        }
        assert_eq!(r.opened(), vec![], "{extra}");
    }
}

#[test]
fn a_reload_applies_new_settings_and_keeps_what_was_observed() {
    let mut r = Run::new(LEARN);
    r.send(0, "198.51.100.1", 443, 1000); // learned
    for i in 0..60 {
        r.send(3700 + i, "203.0.113.9", 443, 1_000_000);
    }
    assert_eq!(r.opened().len(), 1, "32 MiB crossed before the reload");
    let open_before: Vec<_> = r.detector.book().open_alerts().map(|a| a.id).collect();

    // Rule 1 at 64 MiB, 192.0.2.0/24 allowlisted, an hour-long learning period kept.
    r.detector.reconfigure(&config(
        "[detect]\nlearning_period = \"1h\"\n\
         [rules.unknown_volume]\n1m = \"64MiB\"\n\
         [[destinations.allow]]\ncidr = \"192.0.2.0/24\"\n",
    ));
    let open_after: Vec<_> = r.detector.book().open_alerts().map(|a| a.id).collect();
    assert_eq!(open_after, open_before, "the open alert is still open");
    r.events.clear();
    for i in 0..50 {
        // 50 MB in 50 s to a new unknown (over the old bar, under the new one); 100 MB to
        // an allowlisted one; 25 MB to the learned one (still learned: not unknown, and
        // under its population's floor).
        r.send(3800 + i, "203.0.113.10", 443, 1_000_000);
        r.send(3800 + i, "192.0.2.7", 443, 2_000_000);
        r.send(3800 + i, "198.51.100.1", 443, 500_000);
    }
    assert_eq!(r.opened(), vec![], "{:?}", r.events);
    for i in 50..80 {
        r.send(3800 + i, "203.0.113.10", 443, 2_000_000);
    }
    assert_eq!(
        r.opened(),
        vec![(RuleId::UnknownVolume, Some("203.0.113.10".parse().unwrap()))]
    );
    let alert = &r.events.last().unwrap().alert;
    assert_eq!(alert.threshold.bytes, 64 << 20, "the new threshold");
}

#[test]
fn a_reload_matches_owners_again_against_the_new_services() {
    let mut r = Run::new(LEARN);
    r.send(0, "198.51.100.1", 443, 1000);
    assert_eq!(&*r.detector.services()[0].name, "backup.service");
    r.detector.reconfigure(&config(
        "[detect]\nlearning_period = \"1h\"\n\
         [[services]]\nname = \"archive\"\n[[services.match]]\ncomm = \"backup\"\n",
    ));
    r.send(10, "198.51.100.1", 443, 1000);
    let names: Vec<&str> = r.detector.services().iter().map(|s| &*s.name).collect();
    assert_eq!(names, ["backup.service", "archive"]);
}

//! The rules for a server's clients, on small hand-made streams: a client is judged against
//! the clients' population (never as "unknown"), in every window; prefixes add up; heavy
//! peers are judged against their own curve; new clients' volume against its curve; the
//! baselines resist ratcheting.

use std::{net::IpAddr, sync::Arc};

use super::{
    Detector,
    alerts::{AlertEvent, AlertEventKind, Reference, ThresholdKind},
    classes::DestinationClass,
    rules::RuleId,
    tests::{T0, config, owner, sample},
    window::WindowLen,
};
use crate::flow::{Direction, Endpoint, FlowSample, Owner};

const MIB: u64 = 1 << 20;

struct Server {
    detector: Detector,
    owner: Arc<Owner>,
    events: Vec<AlertEvent>,
}

impl Server {
    fn new(text: &str) -> Self {
        Self {
            detector: Detector::new(&config(text)),
            owner: owner(),
            events: Vec::new(),
        }
    }

    fn sample(&self, at: i64, peer: &str, bytes: u64, direction: Direction) -> FlowSample {
        let mut s = sample(&self.owner, T0 + at, peer, 50_000, bytes);
        s.direction = Some(direction);
        if direction == Direction::Served {
            s.local = Some(Endpoint {
                addr: "192.0.2.1".parse().unwrap(),
                port: 443,
            });
        }
        s
    }

    /// One minute's samples, at second `at` from T0.
    fn minute(&mut self, at: i64, sends: &[(&str, u64)]) {
        let batch: Vec<FlowSample> = sends
            .iter()
            .map(|&(peer, bytes)| self.sample(at, peer, bytes, Direction::Served))
            .collect();
        self.detector.observe(&batch, &mut self.events);
    }

    /// Hour `h` of an ordinary population: every third of `clients` receives 8 MiB in one
    /// minute, `spacing` seconds after the previous one.
    fn ordinary_hour(&mut self, clients: &[String], h: i64, spacing: i64) {
        for (i, c) in clients.iter().enumerate() {
            if (i as i64 + h) % 3 == 0 {
                self.minute(h * 3600 + 60 + i as i64 * spacing, &[(c.as_str(), 8 * MIB)]);
            }
        }
    }

    fn initiated(&mut self, at: i64, peer: &str, bytes: u64) {
        let s = self.sample(at, peer, bytes, Direction::Initiated);
        self.detector.observe(&[s], &mut self.events);
    }

    fn opened(&self) -> Vec<&AlertEvent> {
        self.events
            .iter()
            .filter(|e| e.event == AlertEventKind::Opened)
            .collect()
    }

    fn rules(&self) -> Vec<(RuleId, String)> {
        self.opened()
            .iter()
            .map(|e| {
                (
                    e.alert.rule,
                    e.alert
                        .peer
                        .as_ref()
                        .map_or_else(String::new, super::alerts::Peer::addr_text),
                )
            })
            .collect()
    }
}

/// One hour of learning, from a first exchange at T0.
const LEARN_1H: &str = "[detect]\nlearning_period = \"1h\"\n";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_never_seen_client_is_judged_against_the_clients_not_as_unknown() {
    let mut srv = Server::new(LEARN_1H);
    srv.minute(0, &[("198.51.100.1", 1000)]);
    // After learning: 60 MB in a minute to a client, and to a host the service connected to.
    srv.minute(4000, &[("203.0.113.5", 60_000_000)]);
    srv.initiated(4000, "203.0.113.99", 60_000_000);
    let got = srv.rules();
    assert_eq!(
        got,
        vec![
            (RuleId::PeerOutlier, "203.0.113.5".to_owned()),
            (RuleId::UnknownVolume, "203.0.113.99".to_owned()),
        ],
        "{got:?}"
    );
    let client = &srv.opened()[0].alert;
    assert_eq!(
        client.peer.as_ref().unwrap().class,
        DestinationClass::Client
    );
    // Never met before: a newcomer, judged without the established clients' tolerance.
    assert_eq!(client.threshold.reference, Some(Reference::Newcomers));
    assert_eq!(client.threshold.kind, ThresholdKind::Absolute);
    assert_eq!(
        client.threshold.bytes,
        48 * MIB,
        "the clients' 1m floor until armed"
    );
    assert_eq!(client.window, WindowLen::OneMinute);
}

#[test]
fn a_slow_pull_crosses_the_one_hour_bar_while_its_minutes_are_ordinary() {
    let mut srv = Server::new(LEARN_1H);
    srv.minute(0, &[("198.51.100.1", 1000)]);
    let start = 7200;
    for m in 0..60 {
        srv.minute(start + m * 60, &[("203.0.113.7", 4 * MIB)]);
    }
    let opened = srv.opened();
    assert_eq!(opened.len(), 1, "{:?}", srv.rules());
    let a = &opened[0].alert;
    assert_eq!(a.rule, RuleId::PeerOutlier);
    assert_eq!(a.window, WindowLen::OneHour);
    assert_eq!(a.peer.as_ref().unwrap().addr, ip("203.0.113.7"));
    // 192 MiB (the 1h floor) at 4 MiB a minute: the 49th minute.
    let minutes = (a.opened_at.as_second() - (T0 + start)) / 60;
    assert!((47..=49).contains(&minutes), "{minutes}");
}

#[test]
fn rotation_over_one_prefix_adds_up_and_names_the_prefix() {
    let mut srv = Server::new(LEARN_1H);
    srv.minute(0, &[("198.51.100.1", 1000)]);
    let addrs: Vec<String> = (10..22).map(|i| format!("203.0.113.{i}")).collect();
    for m in 0..60 {
        let sends: Vec<(&str, u64)> = addrs.iter().map(|a| (a.as_str(), 3 * MIB)).collect();
        srv.minute(7200 + m * 60, &sends);
    }
    let got = srv.rules();
    assert_eq!(
        got,
        vec![(RuleId::PrefixOutlier, "203.0.113.0/24".to_owned())]
    );
    let a = &srv.opened()[0].alert;
    let p = a.peer.as_ref().unwrap();
    assert_eq!((p.prefix_len, p.members), (Some(24), Some(12)));
    assert_eq!(a.threshold.reference, Some(Reference::Prefixes));
    // 12 x 3 MiB a minute crosses the 48 MiB 1m floor within minutes.
    let minutes = (a.opened_at.as_second() - (T0 + 7200)) / 60;
    assert!(minutes <= 3, "{minutes}");
}

/// A household's heavy hour in a network of quiet neighbours is the household's, judged with
/// its own (here higher) bar; so is an established household's share of a busy network. Two
/// newcomers that together cross, neither most of it, still count.
#[test]
fn a_group_judges_what_its_members_add_beyond_the_busiest() {
    let text = "[detect]\nlearning_period = \"1h\"\n[rules.peer_outlier]\n\
                floor = { 1m = \"48MiB\", 10m = \"300MiB\", 1h = \"400MiB\", 24h = \"1GiB\" }\n";
    let mut srv = Server::new(text);
    let (home, neighbour, other) = ("203.0.113.5", "203.0.113.6", "203.0.113.7");
    srv.minute(0, &[(home, 1000), (neighbour, 1000), (other, 1000)]);
    // 5 MiB a minute for 70 minutes: 350 MiB, over the prefix's 192 MiB 1h floor, under
    // the client's 400 MiB; the neighbour's 1 MiB makes the /24 cross if counted whole.
    for m in 0..70 {
        let mut sends = vec![(home, 5 * MIB)];
        if m == 0 {
            sends.push((neighbour, MIB));
        }
        srv.minute(7200 + m * 60, &sends);
    }
    assert_eq!(srv.rules(), vec![], "the household explains its /24");
    // Next day, two known households at 2 MiB a minute each: 280 MiB, neither most of it,
    // but the busiest has a tolerance of its own: the other's 140 MiB is what the /24 adds.
    for m in 0..70 {
        srv.minute(2 * 86_400 + m * 60, &[(home, 2 * MIB), (other, 2 * MIB)]);
    }
    assert_eq!(
        srv.rules(),
        vec![],
        "an established busiest is judged alone"
    );
    // Two newcomers of a network no client came from, the same 280 MiB: nobody's own.
    let (a, b) = ("192.0.2.10", "192.0.2.11");
    for m in 0..70 {
        srv.minute(3 * 86_400 + m * 60, &[(a, 2 * MIB), (b, 2 * MIB)]);
    }
    assert_eq!(
        srv.rules(),
        vec![(RuleId::PrefixOutlier, "192.0.2.0/24".to_owned())]
    );
}

/// The 24-hour window leaves out the day's busiest member, not the hour's: a household's
/// heavy morning stays its own when a neighbour is the busiest of the evening.
#[test]
fn a_groups_day_leaves_out_the_days_busiest() {
    let text = "[detect]\nlearning_period = \"1h\"\n[rules.peer_outlier]\n\
                floor = { 1m = \"48MiB\", 10m = \"300MiB\", 1h = \"400MiB\", 24h = \"1GiB\" }\n";
    let mut srv = Server::new(text);
    let (home, neighbour) = ("203.0.113.5", "203.0.113.6");
    srv.minute(0, &[(home, 1000), (neighbour, 1000)]);
    // 6 MiB a minute for 150 minutes: 900 MiB, over the prefix's 768 MiB 24h floor, under
    // the client's 1 GiB; then, hours later, the neighbour's ordinary evening.
    let day = 2 * 86_400;
    for m in 0..150 {
        srv.minute(day + m * 60, &[(home, 6 * MIB)]);
    }
    for m in 0..10 {
        srv.minute(day + 6 * 3600 + m * 60, &[(neighbour, MIB)]);
    }
    assert_eq!(srv.rules(), vec![], "the household explains its /24's day");
}

#[test]
fn an_ipv6_client_and_its_own_64_are_one_alert_not_two() {
    let mut srv = Server::new(LEARN_1H);
    srv.minute(0, &[("198.51.100.1", 1000)]);
    for m in 0..10 {
        srv.minute(
            7200 + m * 60,
            &[
                ("2001:db8:7:1::2", 100 * MIB),
                // A second device of the same home network, ordinary.
                ("2001:db8:7:1::3", MIB),
            ],
        );
    }
    assert_eq!(
        srv.rules(),
        vec![(RuleId::PeerOutlier, "2001:db8:7:1::2".to_owned())],
        "the client explains its /64 and /48"
    );
}

#[test]
fn a_nat_gateway_is_judged_against_its_own_curve() {
    let mut srv = Server::new("[detect]\nlearning_period = \"3h\"\n");
    let nat = "198.51.100.40";
    // Learning: 15 MiB a minute (150 MiB in ten minutes, above the 128 MiB bar): heavy.
    for m in 0..180 {
        srv.minute(m * 60, &[(nat, 15 * MIB), ("198.51.100.1", MIB)]);
    }
    // Two ordinary hours after learning: nothing.
    for m in 180..300 {
        srv.minute(m * 60, &[(nat, 15 * MIB), ("198.51.100.1", MIB)]);
    }
    assert_eq!(
        srv.rules(),
        vec![],
        "its absolute volume alone never alerts"
    );
    // An insider behind it adds 30 MiB a minute.
    for m in 300..330 {
        srv.minute(m * 60, &[(nat, 45 * MIB), ("198.51.100.1", MIB)]);
    }
    assert_eq!(srv.rules(), vec![(RuleId::PeerRise, nat.to_owned())]);
    let a = &srv.opened()[0].alert;
    assert_eq!(a.threshold.reference, Some(Reference::OwnCurve));
    assert_eq!(a.window, WindowLen::TenMinutes);
    // Own curve 150 MiB x 1.5 = 225 MiB over ten minutes: crossed in the sixth minute.
    let minutes = (a.opened_at.as_second() - (T0 + 300 * 60)) / 60;
    assert!((3..=7).contains(&minutes), "{minutes}");
}

#[test]
fn clients_never_count_as_new_destinations_but_connections_out_do() {
    let text = "[detect]\nlearning_period = \"1h\"\n[rules.new_destinations]\nmax_new = 5\n";
    let mut srv = Server::new(text);
    srv.minute(0, &[("198.51.100.1", 1000)]);
    let clients: Vec<String> = (1..40).map(|i| format!("203.0.113.{i}")).collect();
    let sends: Vec<(&str, u64)> = clients.iter().map(|a| (a.as_str(), 10_000)).collect();
    srv.minute(4000, &sends);
    assert_eq!(
        srv.rules(),
        vec![],
        "39 new clients in a minute are a server's day"
    );
    for i in 1..8 {
        srv.initiated(4060, &format!("192.0.2.{i}"), 10_000);
    }
    assert_eq!(srv.rules(), vec![(RuleId::NewDestinations, String::new())]);
}

#[test]
fn new_clients_volume_is_judged_against_its_own_curve() {
    let mut srv = Server::new("[detect]\nlearning_period = \"1d\"\n");
    // Learning day: two new devices an hour, 20 MiB each.
    let mut n = 0u32;
    let mut addr = || {
        n += 1;
        // One /24 each: their prefixes stay single clients.
        format!("100.64.{n}.1")
    };
    for h in 0..24 {
        for _ in 0..2 {
            let a = addr();
            srv.minute(h * 3600 + 120, &[(a.as_str(), 20 * MIB)]);
        }
    }
    // Day 2, 10:00: forty new devices in one hour, each an ordinary initial sync of 30 MiB.
    for i in 0..40 {
        let a = addr();
        srv.minute(86_400 + 10 * 3600 + i * 60, &[(a.as_str(), 30 * MIB)]);
    }
    let got = srv.rules();
    assert!(
        got.iter().all(|(r, _)| *r == RuleId::NewClientVolume),
        "no client alone is an outlier: {got:?}"
    );
    let a = srv
        .opened()
        .into_iter()
        .find(|e| e.alert.rule == RuleId::NewClientVolume)
        .unwrap_or_else(|| panic!("no new_client_volume alert: {got:?}"));
    assert_eq!(
        a.alert.threshold.bytes,
        512 * MIB,
        "the floor (the curve is small)"
    );
    assert_eq!(a.alert.threshold.reference, Some(Reference::NewClientCurve));
}

/// A flash crowd (a viral video) lifts the established clients' hour with the new ones': rule
/// 8's bar follows the established clients' activity; the same new devices on an ordinary
/// hour still cross.
#[test]
fn a_flash_crowd_of_new_clients_follows_the_established_ones() {
    let mut srv = Server::new("[detect]\nlearning_period = \"1d\"\n");
    let regulars: Vec<String> = (0..10).map(|i| format!("198.51.{i}.1")).collect();
    let mut n = 0u32;
    let mut new_device = || {
        n += 1;
        format!("100.64.{n}.1")
    };
    let minute = |srv: &mut Server, at: i64, per_regular: u64| {
        let sends: Vec<(&str, u64)> = regulars.iter().map(|r| (r.as_str(), per_regular)).collect();
        srv.minute(at, &sends);
    };
    // Day 1 and day 2 until 09:00: ten regulars at 300 KiB a minute, two new devices an hour.
    for day in 0..2 {
        for m in 0..(if day == 0 { 1440 } else { 540 }) {
            let at = day * 86_400 + m * 60;
            minute(&mut srv, at, 300 << 10);
            if m % 30 == 5 {
                let d = new_device();
                srv.minute(at, &[(d.as_str(), 20 * MIB)]);
            }
        }
    }
    // Day 2, 09:00: the regulars at twice their usual, forty new devices at 20 MiB (800 MiB,
    // over the 512 MiB floor, under twice it).
    let crowd =
        |srv: &mut Server, start: i64, per_regular: u64, devices: &mut dyn FnMut() -> String| {
            for m in 0..60 {
                minute(srv, start + m * 60, per_regular);
                if m < 40 {
                    let d = devices();
                    srv.minute(start + m * 60, &[(d.as_str(), 20 * MIB)]);
                }
            }
        };
    crowd(&mut srv, 86_400 + 9 * 3600, 600 << 10, &mut new_device);
    assert_eq!(srv.rules(), vec![], "popularity, not a pull");
    // Day 3, 09:00: the same new devices while the regulars are as usual.
    for m in 0..540 {
        minute(&mut srv, 86_400 + 10 * 3600 + m * 60, 300 << 10);
    }
    crowd(&mut srv, 2 * 86_400 + 9 * 3600, 300 << 10, &mut new_device);
    let got = srv.rules();
    assert_eq!(
        got,
        vec![(RuleId::NewClientVolume, String::new())],
        "{got:?}"
    );
}

/// The day just learned is not judged: at the end of learning the 24-hour window holds the
/// learning day, and its population one value per peer (not armed: the floor would judge).
/// A day after learning the window holds judged time only, against the largest learned day
/// with the tolerance while the population is unarmed.
#[test]
fn the_learning_day_is_not_judged_as_the_first_day() {
    let mut srv = Server::new(
        "[detect]\nlearning_period = \"1d\"\n[rules.peer_outlier]\nwindows = [\"24h\"]\n",
    );
    // A busy household: 1 MiB every minute (1.4 GiB a day, over the 512 MiB 24h floor).
    for m in 0..(36 * 60) {
        srv.minute(m * 60, &[("198.51.100.7", MIB)]);
    }
    assert_eq!(
        srv.rules(),
        vec![],
        "12 hours after learning, the learned day"
    );
    // Then 4 MiB a minute: its day passes 3 x the learned 1.4 GiB.
    for m in (36 * 60)..(60 * 60) {
        srv.minute(m * 60, &[("198.51.100.7", 4 * MIB)]);
    }
    assert_eq!(
        srv.rules(),
        vec![(RuleId::PeerOutlier, "198.51.100.7".to_owned())]
    );
    let a = &srv.opened()[0].alert;
    assert_eq!(a.window, WindowLen::OneDay);
    assert!(
        (3 * 1440 * MIB..=3 * 1460 * MIB).contains(&a.threshold.bytes),
        "about 3 x 1,440 MiB: {}",
        a.threshold.bytes
    );
}

/// An attacker who pulls just under the bars every working day does not raise them: the
/// watermark keeps their hours and days out of the population, so the bars stay where the
/// ordinary clients put them.
#[test]
fn a_client_just_under_the_bar_for_days_does_not_raise_it() {
    // Floors under the population's bars (p99.9 x 3 of 8 MiB hours, of 64 MiB days), above
    // what one ordinary client does, so that the learning day makes nobody heavy.
    let mut srv = Server::new(
        "[detect]\nlearning_period = \"1d\"\n[rules.peer_outlier]\n\
         floor = { 1m = \"10MiB\", 10m = \"10MiB\", 1h = \"10MiB\", 24h = \"100MiB\" }\n",
    );
    let clients: Vec<String> = (0..150)
        .map(|i| format!("2001:db8:{:x}::1", 0x100 + i))
        .collect();
    // The address was met while the service learned (an established client, not a
    // newcomer judged strictly).
    srv.minute(7200, &[("203.0.113.66", 1000)]);
    // The learning day, and day 2 until 09:00 (the days are taught once they end).
    for h in 0..33 {
        srv.ordinary_hour(&clients, h, 1);
    }
    let bars = |srv: &mut Server| {
        [WindowLen::OneHour, WindowLen::OneDay]
            .map(|len| srv.detector.bar_for_tests("backup.service", len, 0))
    };
    let before = bars(&mut srv);
    assert!((20 * MIB..30 * MIB).contains(&before[0]), "{before:?}");
    assert!((150 * MIB..250 * MIB).contains(&before[1]), "{before:?}");
    // Four days, 10:00 to 16:00, of 90 % of the hour's bar from one address (a third of a
    // MiB a minute: no minute stands out), about two thirds of the day's bar a day (the
    // 24-hour window is estimated from two day buckets, so it also sees some of yesterday).
    let hourly = (before[0] * 9 / 10).min(before[1] * 9 / 60);
    for h in 33..129 {
        srv.ordinary_hour(&clients, h, 1);
        if (10..16).contains(&(h % 24)) {
            for m in 0..60 {
                srv.minute(h * 3600 + m * 60 + 30, &[("203.0.113.66", hourly / 60)]);
            }
        }
    }
    let got: Vec<String> = srv
        .opened()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} > {} {:?} act {:?}",
                e.at,
                e.alert.window,
                e.alert.bytes,
                e.alert.threshold.bytes,
                e.alert.threshold.reference,
                e.alert.threshold.activity
            )
        })
        .collect();
    assert!(
        got.is_empty(),
        "under the bars: no alert, {before:?}, {hourly}: {got:#?}"
    );
    let after = bars(&mut srv);
    for (b, a) in before.iter().zip(after) {
        assert!(a <= b + b / 10, "a bar moved from {before:?} to {after:?}");
    }
}

#[test]
fn learned_destinations_are_judged_on_their_day_not_their_bursts() {
    // Federation servers backfill in bursts, each bigger than the last now and then: their
    // short windows are not judged (the first big backfill after learning would cross any
    // bar learned before it); a day beyond what any destination receives is.
    let mut srv = Server::new(
        "[detect]\nlearning_period = \"1d\"\n[rules.peer_outlier]\n\
         floor = { 1m = \"10MiB\", 10m = \"10MiB\", 1h = \"10MiB\", 24h = \"100MiB\" }\n",
    );
    let servers: Vec<String> = (0..150).map(|i| format!("2001:db8:f{i:03x}::10")).collect();
    for h in 0..96 {
        for (i, peer) in servers.iter().enumerate() {
            srv.initiated(h * 3600 + 60 + i as i64, peer, MIB);
        }
    }
    assert!(srv.opened().is_empty(), "{:?}", srv.rules());
    // A backfill six times the 1-minute floor, in one minute: the protocol, not an alert.
    srv.initiated(96 * 3600 + 120, &servers[7], 60 * MIB);
    assert!(srv.opened().is_empty(), "{:?}", srv.rules());
    // Four times more within the day: above every destination's day (and the floor).
    for m in 0..4 {
        srv.initiated(96 * 3600 + 180 + m * 60, &servers[7], 60 * MIB);
    }
    let opened = srv.opened();
    assert_eq!(
        srv.rules(),
        [(RuleId::PeerOutlier, "2001:db8:f007::10".to_owned())]
    );
    assert_eq!(opened[0].alert.window, WindowLen::OneDay);
    assert_eq!(
        opened[0].alert.threshold.reference,
        Some(Reference::Destinations)
    );
}

#[test]
fn a_newcomer_gets_no_tolerance_and_a_returning_household_or_a_new_lease_is_no_newcomer() {
    // 150 clients at 8 MiB in one minute an hour (every third hour each): the clients' 1h
    // and 10m quantile is 8 MiB, an established client's bar 24 MiB, a newcomer's the
    // 10 MiB floor.
    let mut srv = Server::new(
        "[detect]\nlearning_period = \"1d\"\n[rules.peer_outlier]\n\
         floor = { 1m = \"10MiB\", 10m = \"10MiB\", 1h = \"10MiB\", 24h = \"100MiB\" }\n",
    );
    let clients: Vec<String> = (0..150).map(|i| format!("198.51.{i}.1")).collect();
    let home_v4 = "203.0.113.66";
    let home_v6 = "2001:db8:77:1::aaaa";
    // Met while the service learned, then quiet for two days (forgotten by the peer table).
    srv.minute(7200, &[(home_v4, 1000), (home_v6, 1000)]);
    for h in 0..72 {
        srv.ordinary_hour(&clients, h, 1);
        srv.detector.tick(&mut srv.events);
    }
    assert!(
        srv.detector
            .peers()
            .get(&super::peers::PeerKey::new(0, ip(home_v4)))
            .is_none(),
        "forgotten by the peer table"
    );
    assert!(srv.opened().is_empty(), "{:?}", srv.rules());
    // Day 4: 16 MiB in 16 minutes each from the household back on its IPv4 address, from
    // its next IPv6 privacy address, from a new address of the clients' ISP (198.51/16, a
    // household's new lease) and from a stranger's network: only the stranger crosses.
    let next_v6 = "2001:db8:77:1::bbbb";
    let new_lease = "198.51.200.9";
    let stranger = "192.0.2.200";
    for m in 0..16 {
        srv.minute(
            72 * 3600 + 600 + m * 60,
            &[
                (home_v4, MIB),
                (next_v6, MIB),
                (new_lease, MIB),
                (stranger, MIB),
            ],
        );
    }
    assert_eq!(
        srv.rules(),
        [(RuleId::PeerOutlier, stranger.to_owned())],
        "the household and its ISP are known, the stranger a newcomer"
    );
    let alert = &srv.opened()[0].alert;
    assert_eq!(alert.threshold.reference, Some(Reference::Newcomers));
    assert!(
        alert.bytes > 10 * MIB && alert.bytes <= 11 * MIB,
        "{}",
        alert.bytes
    );
    // A day later the stranger is established: the same pull no longer crosses.
    let before = srv.opened().len();
    for m in 0..16 {
        srv.minute(98 * 3600 + 600 + m * 60, &[(stranger, MIB)]);
    }
    assert_eq!(srv.opened().len(), before, "{:?}", srv.rules());
}

#[test]
fn the_first_minute_of_a_viral_moment_raises_the_one_minute_bars() {
    // 150 clients at 8 MiB in one minute an hour: an established client's 1-minute bar is
    // 24 MiB at usual activity, up to four times that when everyone else is busier (the
    // 1-minute window alone is judged here).
    let mut srv = Server::new(
        "[detect]\nlearning_period = \"1d\"\n[rules.peer_outlier]\nwindows = [\"1m\"]\n\
         floor = { 1m = \"10MiB\", 10m = \"10MiB\", 1h = \"10MiB\", 24h = \"100MiB\" }\n\
         [rules.service_baseline]\nenabled = false\n[rules.new_client_volume]\nenabled = false\n",
    );
    let clients: Vec<String> = (0..150).map(|i| format!("198.51.{i}.1")).collect();
    for h in 0..30 {
        srv.ordinary_hour(&clients, h, 20);
    }
    assert!(srv.opened().is_empty(), "{:?}", srv.rules());
    // 30:40, quiet around: 60 MiB to one client in a minute is above its bar.
    srv.minute(30 * 3600 + 2400, &[(clients[1].as_str(), 60 * MIB)]);
    assert_eq!(srv.rules(), [(RuleId::PeerOutlier, clients[1].clone())]);
    // 31:40, the first minute of a viral moment: a hundred clients fetch 2 MiB each, and
    // one of them 60 MiB (the video, several times). Its bar is the busy minute's.
    let mut viral: Vec<(&str, u64)> = clients[50..150]
        .iter()
        .map(|c| (c.as_str(), 2 * MIB))
        .collect();
    viral.push((clients[2].as_str(), 60 * MIB));
    srv.minute(31 * 3600 + 2400, &viral);
    assert_eq!(
        srv.rules(),
        [(RuleId::PeerOutlier, clients[1].clone())],
        "the viral minute raised the 1-minute bars at once: {:?}",
        srv.opened()
            .iter()
            .map(|e| (e.alert.window, e.alert.bytes, &e.alert.threshold))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_surge_of_clients_is_popularity_a_surge_of_bytes_per_client_is_not() {
    // Twenty clients at 1 MiB a minute each, all day: rule 3's bar is about four times the
    // service's usual 20 MiB minute.
    let mut srv = Server::new(
        "[detect]\nlearning_period = \"1d\"\n\
         [rules.service_baseline]\nfloor = \"10MiB\"\n\
         [rules.peer_outlier]\nenabled = false\n[rules.prefix_outlier]\nenabled = false\n\
         [rules.new_client_volume]\nenabled = false\n[rules.peer_rise]\nenabled = false\n",
    );
    let regulars: Vec<String> = (0..20).map(|i| format!("198.51.100.{}", i + 1)).collect();
    let minute = |srv: &mut Server, at: i64, each: u64, extra: &[String]| {
        let sends: Vec<(&str, u64)> = regulars
            .iter()
            .chain(extra)
            .map(|c| (c.as_str(), each))
            .collect();
        srv.minute(at, &sends);
    };
    for m in 0..(26 * 60) {
        minute(&mut srv, m * 60 + 5, MIB, &[]);
    }
    assert!(srv.opened().is_empty(), "{:?}", srv.rules());
    // A viral moment: a hundred more clients, 1 MiB each, six times the usual minute.
    let audience: Vec<String> = (0..100).map(|i| format!("203.0.113.{}", i + 1)).collect();
    minute(&mut srv, 26 * 3600 + 5, MIB, &audience);
    assert!(srv.opened().is_empty(), "{:?}", srv.rules());
    // Ten minutes on, the usual twenty clients take the same six times the usual: one such
    // minute is the service's heavy tail, a second one in a row is an alert.
    for m in 1..10 {
        minute(&mut srv, 26 * 3600 + m * 60 + 5, MIB, &[]);
    }
    minute(&mut srv, 26 * 3600 + 600 + 5, 6 * MIB, &[]);
    assert!(srv.opened().is_empty(), "{:?}", srv.rules());
    minute(&mut srv, 26 * 3600 + 660 + 5, 6 * MIB, &[]);
    assert_eq!(srv.rules(), [(RuleId::ServiceBaseline, String::new())]);
    let a = &srv.opened()[0].alert;
    assert_eq!(a.threshold.reference, Some(Reference::ServiceCurve));
    assert!(
        a.threshold.activity.is_some_and(|b| b < 1.2),
        "{:?}",
        a.threshold
    );
}

#[test]
fn households_back_after_quiet_days_are_not_new_clients() {
    // The same learning day as above: two new devices an hour, 20 MiB each, from addresses
    // that then go quiet (forgotten by the peer table after 25 hours).
    let mut srv = Server::new("[detect]\nlearning_period = \"1d\"\n");
    let addrs: Vec<String> = (0..48).map(|n| format!("100.64.{n}.1")).collect();
    for (i, a) in addrs.iter().enumerate() {
        srv.minute(
            i as i64 / 2 * 3600 + 120 + i as i64 % 2,
            &[(a.as_str(), 20 * MIB)],
        );
    }
    for h in 24..60 {
        srv.minute(h * 3600, &[("198.51.100.1", 1000)]);
        srv.detector.tick(&mut srv.events);
    }
    // Day 3, 12:00: forty of those households come back in one hour, 30 MiB each: as many
    // bytes as forty new devices (which the test above alerts on), but none is new.
    for (i, a) in addrs.iter().take(40).enumerate() {
        srv.minute(60 * 3600 + i as i64 * 60, &[(a.as_str(), 30 * MIB)]);
    }
    assert!(srv.opened().is_empty(), "{:?}", srv.rules());
}

/// The shape of a real run: ten clients of one /24 learned over five minutes; a newcomer of
/// the /24 pulls 120 MiB in three minutes and is alerted alone (then throttled); a second
/// newcomer of the /24 then pulls 24 MiB a minute. The first one's alert explains its bytes in
/// the /24, the second one is most of what is left and is judged alone; once it is alerted
/// too, the first one's bytes still are not counted again: the /24 is never alerted on them.
#[test]
fn an_alerted_client_explains_its_prefix_while_a_second_newcomer_pulls() {
    let mut srv = Server::new("[detect]\nlearning_period = \"300s\"\n");
    // At 04:11:05 as in the run: the ten-minute slots fall where they fell (the /24's oldest
    // slot still holds the learned clients' bytes when the second pull is at its height).
    let start = 665;
    let normals: Vec<String> = (10..20).map(|i| format!("203.0.113.{i}")).collect();
    let everyone = |srv: &mut Server, at: i64, bytes: u64| {
        let sends: Vec<(&str, u64)> = normals.iter().map(|c| (c.as_str(), bytes)).collect();
        srv.minute(start + at, &sends);
    };
    for s in 0..75 {
        everyone(&mut srv, s, 4 * MIB / 75);
    }
    let (first, second) = ("203.0.113.66", "203.0.113.77");
    // Seven minutes in: 76 MiB in the first report, 24 MiB a minute, alerted at once; then
    // 15 MiB a minute (throttled) for a minute: 139 MiB.
    for s in (426..=610).step_by(5) {
        let bytes = match s {
            426 => 76 * MIB,
            ..=550 => 2 * MIB,
            _ => MIB * 5 / 4,
        };
        srv.minute(start + s, &[(first, bytes)]);
        srv.detector.tick(&mut srv.events);
    }
    assert_eq!(srv.rules(), [(RuleId::PeerOutlier, first.to_owned())]);
    // Ten and a half minutes in: 24 MiB a minute. At 15 minutes the /24's ten minutes held
    // 129 MiB besides the first one's: the second one's 114 MiB, and 15 MiB that the oldest
    // slot's learned bytes count for (assumed uniform). It is the second one's, judged
    // alone: alerted at its own bar (128 MiB in 10 minutes).
    for s in (629..=1200).step_by(5) {
        srv.minute(start + s, &[(second, 2 * MIB)]);
        srv.detector.tick(&mut srv.events);
    }
    let both = [
        (RuleId::PeerOutlier, first.to_owned()),
        (RuleId::PeerOutlier, second.to_owned()),
    ];
    assert_eq!(srv.rules(), both);
    assert_eq!(srv.opened()[1].alert.window, WindowLen::TenMinutes);
    // The ten clients' ordinary minute (20 MiB), both pulls still in the /24's hour: with the
    // first one's 139 MiB the /24's hour would be over its 192 MiB floor.
    for s in 1260..1320 {
        everyone(&mut srv, s, 2 * MIB / 60);
        srv.detector.tick(&mut srv.events);
    }
    assert_eq!(
        srv.rules(),
        both,
        "each pull is its own alert, never the /24's"
    );
}

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use super::{
    clients::{Clients, Kind},
    *,
};

fn small(days: u32) -> Params {
    Params {
        days,
        seed: 5,
        population: Population {
            nats: 6,
            homes: 40,
            mobiles: 60,
            new_devices_per_day: 2,
            federation: 6,
        },
    }
}

fn bytes_by_peer(scenario: Scenario, params: &Params) -> HashMap<IpAddr, u64> {
    let mut out = HashMap::new();
    generate(scenario, params, |batch| {
        for s in batch {
            *out.entry(s.remote.unwrap().addr).or_default() += s.bytes;
        }
    });
    out
}

#[test]
fn generation_is_deterministic_and_seeds_differ() {
    let digest = |seed: u64| {
        let mut h: u64 = 0;
        let mut n = 0usize;
        let params = Params { seed, ..small(2) };
        generate(Scenario::Burst, &params, |batch| {
            for s in batch {
                n += 1;
                h = h.rotate_left(7) ^ s.bytes ^ u64::from(s.remote.unwrap().port);
            }
        });
        (h, n)
    };
    assert_eq!(digest(5), digest(5));
    assert_ne!(digest(5), digest(6));
    let mut first = Vec::new();
    let mut again = Vec::new();
    generate(Scenario::Normal, &small(1), |b| {
        first.extend_from_slice(&b[..b.len().min(4)]);
    });
    generate(Scenario::Normal, &small(1), |b| {
        again.extend_from_slice(&b[..b.len().min(4)]);
    });
    assert_eq!(first, again);
}

#[test]
fn windows_are_minutes_and_every_sample_has_a_direction() {
    let mut windows = 0;
    let mut last = 0;
    generate(Scenario::Normal, &small(1), |batch| {
        windows += 1;
        let start = batch[0].window_start.as_second();
        assert!(start > last);
        last = start;
        for s in batch {
            assert_eq!(s.window_start.as_second(), start);
            assert_eq!(s.window_end.as_second() - start, WINDOW_SECS);
            assert!(s.direction.is_some(), "{s:?}");
            assert!(s.bytes > 0);
        }
    });
    assert_eq!(windows, 1440);
}

#[test]
fn nat_gateways_peak_in_range_and_rest_on_weekends() {
    let params = small(6);
    // (day, gateway) -> per-minute bytes of the gateway's own connection (viral media comes
    // from other workers), 09:30 to 10:59 local.
    let mut peak: HashMap<(i64, usize), Vec<u64>> = HashMap::new();
    generate(Scenario::Normal, &params, |batch| {
        let secs = batch[0].window_start.as_second() - START_SECS;
        let (day, minute) = (secs / DAY_SECS + 1, secs % DAY_SECS / 60);
        if !(570..660).contains(&minute) {
            return;
        }
        for s in batch {
            let r = s.remote.unwrap();
            if let Some(i) = (0..6).find(|&i| nat(i) == r.addr)
                && r.port == 20_000 + i as u16 * 7
            {
                peak.entry((day, i)).or_default().push(s.bytes);
            }
        }
    });
    for i in 0..6 {
        for day in 1..=5 {
            let v = &peak[&(day, i)];
            assert_eq!(v.len(), 90);
            for &b in v {
                assert!(
                    (8 * MIB..=22 * MIB).contains(&b),
                    "gateway {i} day {day}: {b}"
                );
            }
        }
        let saturday: u64 = peak[&(6, i)].iter().sum();
        let friday: u64 = peak[&(5, i)].iter().sum();
        assert!(saturday * 8 < friday, "{saturday} {friday}");
    }
}

fn is_carrier(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets()[0] == 30,
        IpAddr::V6(v6) => v6.segments()[2] & 0xf000 == 0xc000,
    }
}

#[test]
fn phones_are_on_new_addresses_every_day() {
    let params = small(3);
    let mut by_day: Vec<(HashSet<IpAddr>, HashSet<[u16; 4]>)> = vec![Default::default(); 3];
    generate(Scenario::Normal, &params, |batch| {
        let day = ((batch[0].window_start.as_second() - START_SECS) / DAY_SECS) as usize;
        for s in batch {
            let addr = s.remote.unwrap().addr;
            if !is_carrier(addr) {
                continue;
            }
            match addr {
                IpAddr::V4(_) => by_day[day].0.insert(addr),
                IpAddr::V6(v6) => {
                    let g = v6.segments();
                    by_day[day].1.insert([g[0], g[1], g[2], g[3]])
                }
            };
        }
    });
    for d in 1..3 {
        let (v4, v6) = &by_day[d];
        assert!(v4.len() > 10 && v6.len() > 10, "{} {}", v4.len(), v6.len());
        for earlier in &by_day[..d] {
            assert!(
                v6.is_disjoint(&earlier.1),
                "a phone's /64 came back on day {}",
                d + 1
            );
            // CGNAT addresses are shared by many subscribers: most are new, not all.
            let again = v4.intersection(&earlier.0).count();
            assert!(again * 5 < v4.len(), "{again} of {}", v4.len());
        }
    }
}

#[test]
fn new_devices_sync_about_70_mib_from_never_seen_addresses() {
    let p = small(4).population;
    let mut clients = Clients::new(9, &p);
    let mut seen: HashSet<IpAddr> = HashSet::new();
    for day in 1..=4 {
        let sessions = clients.plan_day(weekday(day), &[]);
        let new: Vec<_> = sessions
            .iter()
            .filter(|s| s.kind == Kind::NewDevice)
            .collect();
        assert_eq!(new.len(), 2);
        for s in &new {
            assert_eq!(s.end - s.start, 2);
            let total = u64::from(s.end - s.start) * clients.bytes(s);
            assert!((60 * MIB..80 * MIB).contains(&total), "{total}");
            assert!(!seen.contains(&s.peer), "{}", s.peer);
        }
        seen.extend(sessions.iter().map(|s| s.peer));
        // The others are ordinary: homes and phones, with a viral moment now and then.
        assert!(sessions.iter().any(|s| s.kind == Kind::Home));
        assert!(sessions.iter().any(|s| s.kind == Kind::Mobile));
    }
}

#[test]
fn addresses_are_neither_internal_nor_cgnat_internal() {
    let config = crate::config::Config::parse("", &crate::config::Origin::Embedded).unwrap();
    let classifier = crate::detect::classes::Classifier::new(&config.destinations);
    let cgnat: ipnet::IpNet = "100.64.0.0/10".parse().unwrap();
    let mut peers = HashSet::new();
    for scenario in [
        Scenario::Normal,
        Scenario::Ipv6Rotation,
        Scenario::MobileMimic,
    ] {
        generate(scenario, &small(3), |batch| {
            peers.extend(batch.iter().map(|s| s.remote.unwrap().addr));
        });
    }
    for p in peers {
        let loopback = p.is_loopback();
        assert_eq!(classifier.is_internal(p), loopback, "{p}");
        assert!(!cgnat.contains(&p), "{p}");
    }
}

#[test]
fn every_scenario_carries_its_scripted_bytes() {
    let params = small(3);
    let normal = bytes_by_peer(Scenario::Normal, &params);
    for scenario in Scenario::ALL {
        let Some(event) = scenario.event(&params) else {
            continue;
        };
        let with = bytes_by_peer(scenario, &params);
        let peers = event.peers(&params);
        let added: u64 = peers
            .iter()
            .map(|p| with.get(p).copied().unwrap_or(0) - normal.get(p).copied().unwrap_or(0))
            .sum();
        if event.nat_boost.is_none() {
            assert_eq!(added, event.bytes(), "{scenario:?}");
        }
        assert_eq!(event.service, MESSAGING);
        // Every other peer gets exactly what it gets in the ordinary week (nginx's requests
        // to Synapse on loopback follow what it serves).
        for (p, b) in &with {
            if !peers.contains(p) && !p.is_loopback() {
                assert_eq!(normal.get(p), Some(b), "{scenario:?}: {p}");
            }
        }
        let start = minute_secs(event.start());
        let expected = match scenario {
            Scenario::NightPull => START_SECS + 2 * DAY_SECS + 3 * 3600,
            Scenario::BusyMorning => START_SECS + 2 * DAY_SECS + 8 * 3600,
            Scenario::MobileMimic | Scenario::HeavyPhone => {
                START_SECS + 2 * DAY_SECS + 9 * 3600 + (21 + 117) % 50 * 60
            }
            _ => START_SECS + 2 * DAY_SECS + 10 * 3600,
        };
        assert_eq!(start, expected, "{scenario:?}");
    }
    let sizes = |s: Scenario| s.event(&params).unwrap().bytes();
    // The heavy phone is the mimic's traffic, to the byte: only the verdict differs.
    let (mimic, phone) = (
        Scenario::MobileMimic.event(&params).unwrap(),
        Scenario::HeavyPhone.event(&params).unwrap(),
    );
    assert_eq!(mimic.streams, phone.streams);
    assert!(mimic.attack && !phone.attack);
    assert_eq!(sizes(Scenario::Burst), 2_000_000_000);
    assert_eq!(sizes(Scenario::SynapseUpload), 300_000_000);
    assert_eq!(sizes(Scenario::ForeignUpload), 500 * MIB);
    assert_eq!(sizes(Scenario::LowAndSlow), 720 * MIB);
    assert_eq!(sizes(Scenario::PrefixSpread), 12 * 3 * 60 * MIB);
    assert_eq!(sizes(Scenario::NatRise), 1800 * MIB);
    assert_eq!(sizes(Scenario::VerySlow), 600 * MIB);
    // The busy morning: every gateway at 1.5x from 08:00 to 12:00.
    let mut ratio = (0u64, 0u64);
    for (scenario, slot) in [(Scenario::Normal, 0), (Scenario::BusyMorning, 1)] {
        generate(scenario, &params, |batch| {
            let secs = batch[0].window_start.as_second() - START_SECS - 2 * DAY_SECS;
            if (8 * 3600..12 * 3600).contains(&secs) {
                let b: u64 = batch
                    .iter()
                    .filter(|s| (0..6).any(|i| nat(i) == s.remote.unwrap().addr))
                    .map(|s| s.bytes)
                    .sum();
                if slot == 0 {
                    ratio.0 += b;
                } else {
                    ratio.1 += b;
                }
            }
        });
    }
    let r = ratio.1 as f64 / ratio.0 as f64;
    assert!((1.4..=1.5).contains(&r), "{r}");
}

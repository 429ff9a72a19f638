//! The scenarios: what is added to the ordinary week, and for checking alerts, who the
//! attacker (or the benign event's peer) is, for which service, and when. Attacks start on
//! day 3 at 10:00 local unless noted. Every added transfer is scripted (no randomness), so
//! the ordinary traffic of a scenario is the same as `normal`'s for the same seed.

use std::{net::IpAddr, str::FromStr};

use super::{
    MIB, Params,
    addresses::{self, vps},
};
use crate::flow::Direction;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Scenario {
    /// An ordinary week.
    Normal,
    /// One more new device's initial sync (~70 MiB in 2 min from a never-seen address).
    NewDevice,
    /// Every ministry gateway at 1.5x its usual, 08:00 to 12:00.
    BusyMorning,
    /// A big backfill to a known federation server: 800 MiB in 20 min.
    FederationBackfill,
    /// One new address pulls 2 GB in 20 min.
    Burst,
    /// One new address at 4 MiB a minute for 3 h.
    LowAndSlow,
    /// 12 new addresses of one /24 at 3 MiB a minute each for 1 h.
    PrefixSpread,
    /// An insider behind a known NAT gateway adds 30 MiB a minute for 1 h.
    NatRise,
    /// curl in nginx's cgroup uploads 500 MiB to a new host in 10 min.
    ForeignUpload,
    /// Synapse uploads 300 MB to a never-seen host in 5 min.
    SynapseUpload,
    /// A hijacked account on a carrier's IPv6: a new /64 of one carrier /48 every 5 min,
    /// 5 MiB a minute for 3 h (the /48 also holds ordinary phones).
    Ipv6Rotation,
    /// One new address at 1 MiB a minute for 10 h.
    VerySlow,
    /// An attacker that looks like a phone: a fresh CGNAT address every day from day 3,
    /// twelve 5-minute sessions a day at 4 MiB a minute (240 MiB a day).
    MobileMimic,
    /// A heavy phone user (videos in the app): the very bytes of `mobile-mimic`, not an
    /// attack. What egress alone cannot tell apart: one of the two rows must be wrong.
    HeavyPhone,
    /// A new address pulls 600 MiB in 30 min at 03:00 on the first Saturday (day 6).
    NightPull,
    /// Synapse sends 2 MiB a minute to a never-seen host for 4 h.
    DripUpload,
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, true)
    }
}

/// Which process sends a scripted transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    Nginx(u8),
    Synapse,
    Curl,
}

/// A scripted transfer: `rate` bytes a minute to `peer` in trace minutes [from, to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    pub from: u32,
    pub to: u32,
    pub peer: IpAddr,
    pub port: u16,
    pub sender: Sender,
    pub direction: Direction,
    pub rate: u64,
}

/// What a scenario adds to the week.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// An attack (an alert is expected), or a benign event (none is).
    pub attack: bool,
    /// The service whose process sends it.
    pub service: &'static str,
    pub streams: Vec<Stream>,
    /// Every NAT gateway's volume times `factor` in trace minutes [from, to).
    pub nat_boost: Option<(u32, u32, f64)>,
}

/// The service the traces' nginx and Synapse form (see `SERVICES_TOML`).
pub const MESSAGING: &str = "messaging";

fn at(day: u32, hour: u32, minute: u32) -> u32 {
    (day - 1) * 1440 + hour * 60 + minute
}

impl Scenario {
    pub const ALL: [Self; 16] = [
        Self::Normal,
        Self::NewDevice,
        Self::BusyMorning,
        Self::FederationBackfill,
        Self::Burst,
        Self::LowAndSlow,
        Self::PrefixSpread,
        Self::NatRise,
        Self::ForeignUpload,
        Self::SynapseUpload,
        Self::Ipv6Rotation,
        Self::VerySlow,
        Self::MobileMimic,
        Self::HeavyPhone,
        Self::NightPull,
        Self::DripUpload,
    ];

    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }

    /// What the scenario adds to a trace of `params.days` days (at least 3), if anything.
    #[expect(
        clippy::too_many_lines,
        reason = "one arm per scenario: the catalogue reads in one place"
    )]
    pub fn event(self, params: &Params) -> Option<Event> {
        let days = params.days.max(3);
        let d3 = at(3, 10, 0);
        let client = |from: u32, minutes: u32, peer: IpAddr, rate: u64| Stream {
            from,
            to: from + minutes,
            peer,
            port: 51_000,
            sender: Sender::Nginx(1),
            direction: Direction::Served,
            rate,
        };
        let upload = |from: u32, minutes: u32, peer: IpAddr, rate: u64, sender| Stream {
            from,
            to: from + minutes,
            peer,
            port: 443,
            sender,
            direction: Direction::Initiated,
            rate,
        };
        let (attack, streams, nat_boost) = match self {
            Self::Normal => return None,
            Self::NewDevice => {
                let phone = addresses::carrier_v6(1, 1, 0xa5a5, 0x77);
                (false, vec![client(d3, 2, phone, 35 * MIB)], None)
            }
            Self::BusyMorning => (false, Vec::new(), Some((at(3, 8, 0), at(3, 12, 0), 1.5))),
            Self::FederationBackfill => {
                let s = Stream {
                    port: 8448,
                    ..upload(d3, 20, addresses::federation(1), 40 * MIB, Sender::Synapse)
                };
                (false, vec![s], None)
            }
            Self::Burst => (true, vec![client(d3, 20, vps(20, 30), 100_000_000)], None),
            Self::LowAndSlow => (true, vec![client(d3, 180, vps(21, 40), 4 * MIB)], None),
            Self::PrefixSpread => (
                true,
                (10..22)
                    .map(|h| client(d3, 60, vps(22, h), 3 * MIB))
                    .collect(),
                None,
            ),
            Self::NatRise => (
                true,
                vec![Stream {
                    sender: Sender::Nginx(2),
                    ..client(d3, 60, addresses::nat(0), 30 * MIB)
                }],
                None,
            ),
            Self::ForeignUpload => (
                true,
                vec![upload(d3, 10, vps(23, 5), 50 * MIB, Sender::Curl)],
                None,
            ),
            Self::SynapseUpload => (
                true,
                vec![upload(d3, 5, vps(24, 6), 60_000_000, Sender::Synapse)],
                None,
            ),
            Self::Ipv6Rotation => (
                true,
                (0..36)
                    .map(|k| {
                        let addr = addresses::carrier_v6(
                            0,
                            0,
                            addresses::CARRIER_V6_SUBNETS_USED as u16 + k as u16 * 7,
                            0x1c3a_5e00_0000_0000 + k,
                        );
                        client(d3 + k as u32 * 5, 5, addr, 5 * MIB)
                    })
                    .collect(),
                None,
            ),
            Self::VerySlow => (true, vec![client(d3, 600, vps(25, 7), MIB)], None),
            Self::MobileMimic | Self::HeavyPhone => (
                self == Self::MobileMimic,
                (3..=days)
                    .flat_map(|day| {
                        let addr = addresses::cgnat(1, 2, 200 + day as u8);
                        (9..21).map(move |h| {
                            let minute = (day * 7 + h * 13) % 50;
                            client(at(day, h, minute), 5, addr, 4 * MIB)
                        })
                    })
                    .collect(),
                None,
            ),
            Self::NightPull => {
                let day = days.min(6);
                (
                    true,
                    vec![client(at(day, 3, 0), 30, vps(26, 8), 20 * MIB)],
                    None,
                )
            }
            Self::DripUpload => (
                true,
                vec![upload(d3, 240, vps(27, 9), 2 * MIB, Sender::Synapse)],
                None,
            ),
        };
        Some(Event {
            attack,
            service: MESSAGING,
            streams,
            nat_boost,
        })
    }
}

impl Event {
    /// The peers the event sends to (for a NAT boost, the gateways).
    pub fn peers(&self, params: &Params) -> Vec<IpAddr> {
        let mut peers: Vec<IpAddr> = self.streams.iter().map(|s| s.peer).collect();
        if self.nat_boost.is_some() {
            peers.extend((0..params.population.nats).map(addresses::nat));
        }
        peers.sort();
        peers.dedup();
        peers
    }

    /// When it happens: trace minutes [from, to) of each transfer (or of the boost).
    pub fn spans(&self) -> Vec<(u32, u32)> {
        let mut spans: Vec<(u32, u32)> = self.streams.iter().map(|s| (s.from, s.to)).collect();
        spans.extend(self.nat_boost.map(|(a, b, _)| (a, b)));
        spans.sort_unstable();
        spans
    }

    /// The first minute of the trace it touches.
    pub fn start(&self) -> u32 {
        self.spans().first().map_or(0, |s| s.0)
    }

    /// Bytes of the scripted transfers.
    pub fn bytes(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| u64::from(s.to - s.from) * s.rate)
            .sum()
    }
}

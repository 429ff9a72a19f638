//! Per (service, peer) state, and per (service, network prefix) state for prefix groups: the
//! sliding windows and what an alert needs to name the peer. Kept small on purpose (about
//! 230 bytes): a busy homeserver has hundreds of thousands of clients.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use super::{
    curve::Curve,
    ring::Ring,
    window::{Volume, Window, WindowLen},
};
use crate::flow::Owner;

/// (service id, peer address as 16 bytes with IPv4 mapped, prefix length): one address
/// (`prefix` 0) or the network of a prefix group (`prefix` bits of the IPv4 address, or of
/// the IPv6 address; the address is the network's first address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub service: u32,
    pub addr: [u8; 16],
    pub prefix: u8,
}

impl PeerKey {
    pub fn new(service: u32, addr: IpAddr) -> Self {
        let addr = match addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Self {
            service,
            addr,
            prefix: 0,
        }
    }

    /// The group key of `addr`'s `/len` network (IPv4 lengths for IPv4 addresses).
    pub fn network(service: u32, addr: IpAddr, len: u8) -> Self {
        let masked = match addr {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4) & mask32(len);
                IpAddr::V4(Ipv4Addr::from(bits))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & mask128(len);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        };
        Self {
            prefix: len,
            ..Self::new(service, masked)
        }
    }

    pub fn ip(&self) -> IpAddr {
        crate::flow::ip_from_kernel(self.addr)
    }

    pub fn is_group(&self) -> bool {
        self.prefix != 0
    }

    /// `198.51.100.7`, or `198.51.100.0/24` for a group (the state database's form).
    pub fn addr_text(&self) -> String {
        if self.is_group() {
            format!("{}/{}", self.ip(), self.prefix)
        } else {
            self.ip().to_string()
        }
    }

    /// Reads [`Self::addr_text`] back.
    pub fn parse(service: u32, text: &str) -> Option<Self> {
        match text.split_once('/') {
            None => text.parse().ok().map(|a| Self::new(service, a)),
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().ok()?;
                let len: u8 = len.parse().ok()?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                (1..max)
                    .contains(&len)
                    .then(|| Self::network(service, addr, len))
            }
        }
    }
}

fn mask32(len: u8) -> u32 {
    match len {
        0 => 0,
        1..=31 => u32::MAX << (32 - u32::from(len)),
        _ => u32::MAX,
    }
}

fn mask128(len: u8) -> u128 {
    match len {
        0 => 0,
        1..=127 => u128::MAX << (128 - u32::from(len)),
        _ => u128::MAX,
    }
}

/// A destination the service initiated to while it learned (or an operator confirmed).
pub const LEARNED: u16 = 1;
/// Changed since the last checkpoint.
pub const DIRTY: u16 = 1 << 1;
/// The peer came to the host (a client) at least once.
pub const SERVED: u16 = 1 << 2;
/// The host went to the peer at least once.
pub const INITIATED: u16 = 1 << 3;
/// A heavy peer (a NAT gateway, a busy federation server, a backup target): judged against
/// its own curve ([`Curve`]), never against the population on its absolute volume.
pub const HEAVY: u16 = 1 << 4;
/// Traffic in the hour of the newest ring slot that the populations have not learned yet.
pub const HOUR_PENDING: u16 = 1 << 5;
/// Same for the day of the 24-hour window.
pub const DAY_PENDING: u16 = 1 << 6;
/// Internal or allowlisted at its latest sample: never judged, teaches nothing.
pub const EXEMPT: u16 = 1 << 7;
/// A client whose provider network the service knew before its identity (see
/// `acquaintances`): a newcomer of a familiar network is judged like an established client.
pub const VOUCHED: u16 = 1 << 8;
/// A free slot of the peer table.
pub const VACANT: u16 = 1 << 15;

/// Flags kept in checkpoints.
const STORED: u16 =
    LEARNED | SERVED | INITIATED | HEAVY | HOUR_PENDING | DAY_PENDING | EXEMPT | VOUCHED;

/// What a peer knows of the other side of prefix grouping: a client of its groups, a group
/// of its members. Neither is stored: hints and snapshots that the next samples renew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    Client(ClientLinks),
    Group(GroupLinks),
}

impl Default for Links {
    fn default() -> Self {
        Self::Client(ClientLinks::default())
    }
}

impl Links {
    pub fn of(key: &PeerKey) -> Self {
        if key.is_group() {
            Self::Group(GroupLinks::default())
        } else {
            Self::Client(ClientLinks::default())
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientLinks {
    /// Until when (Unix seconds) the client's own crossing explains the volume of a group
    /// made from it later.
    pub crossed_until: u32,
    /// The slots (+1, 0 for none) of the prefix groups of the first two configured lengths,
    /// last seen; a hint that spares the index lookup (checked against the slot's key).
    pub group_slots: [u32; 2],
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupLinks {
    /// The slot (+1, 0 for none) of a member whose own alert explains the group's volume
    /// until `explained_until` (Unix seconds); an open alert renews it with its next
    /// crossing.
    pub explained_by: u32,
    pub explained_until: u32,
    /// The member that received the most in the last hour (`[0]`) and in the last day
    /// (`[1]`), as last seen. A group judges what its members add up to beyond one of them
    /// (that one is judged alone, with its own tolerance), in each window the member of
    /// that window's horizon.
    pub busiest: [Busiest; 2],
}

/// A member and its volume over a horizon in KiB when last seen (compared without reading
/// the member's slot: a cache miss at every sample). Stale once above the group's own
/// volume over the horizon, which holds the member's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Busiest {
    /// The slot + 1, 0 for none.
    pub slot: u32,
    pub kib: u32,
}

#[derive(Clone, Debug, Default)]
pub struct PeerState {
    pub key: PeerKey,
    /// The last minute (two one-minute buckets).
    pub minute: Window,
    /// The last ten minutes and the last hour (ten-minute slots).
    pub ring: Ring,
    /// The last 24 hours (two day-long buckets).
    pub day: Window,
    /// Unix milliseconds of the latest sample.
    pub last_seen_ms: u64,
    /// The process that last sent to the peer.
    pub owner: Option<Arc<Owner>>,
    /// Name the host resolved for the address (passive DNS), when known.
    pub name: Option<Arc<str>>,
    /// Own curve, for heavy peers only.
    pub curve: Option<Box<Curve>>,
    /// Unix seconds of the first sample to this peer.
    pub first_seen: u32,
    /// Busiest completed minute of the pending hour, in KiB (population learning).
    pub hour_peak_kib: u32,
    /// Prefix groups: addresses seen in the prefix since the group was made.
    pub members: u32,
    pub port: u16,
    pub flags: u16,
    /// Day (Unix days) of `tail`, and the windows (bits by `WindowLen::index`) whose tail
    /// sample the population took from this peer that day (bounded influence).
    pub tail_day: u16,
    pub tail: u8,
    /// Hours this peer was above its reference while the service learned.
    pub heavy_hours: u8,
    /// What a client remembers of its groups, or a group of its members; not stored.
    pub links: Links,
}

impl PeerState {
    pub fn new(key: PeerKey) -> Self {
        Self {
            key,
            links: Links::of(&key),
            ..Self::default()
        }
    }

    /// A client's links (`None` for a group).
    pub fn client(&self) -> Option<&ClientLinks> {
        match &self.links {
            Links::Client(c) => Some(c),
            Links::Group(_) => None,
        }
    }

    pub fn client_mut(&mut self) -> Option<&mut ClientLinks> {
        match &mut self.links {
            Links::Client(c) => Some(c),
            Links::Group(_) => None,
        }
    }

    /// A group's links (`None` for a client).
    pub fn group(&self) -> Option<&GroupLinks> {
        match &self.links {
            Links::Group(g) => Some(g),
            Links::Client(_) => None,
        }
    }

    pub fn group_mut(&mut self) -> Option<&mut GroupLinks> {
        match &mut self.links {
            Links::Group(g) => Some(g),
            Links::Client(_) => None,
        }
    }

    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    pub fn learned(&self) -> bool {
        self.has(LEARNED)
    }

    pub fn heavy(&self) -> bool {
        self.has(HEAVY)
    }

    /// The volume of window `len` at `millis`.
    pub fn volume(&self, len: WindowLen, millis: u64) -> Volume {
        match len {
            WindowLen::OneMinute => self.minute.estimate(len, millis),
            WindowLen::TenMinutes => self.ring.ten_minutes(millis),
            WindowLen::OneHour => self.ring.hour(millis),
            WindowLen::OneDay => self.day.estimate(len, millis),
        }
    }

    /// Moves every window to `secs`; the busiest minute of the hour follows the minute
    /// buckets that complete within it.
    pub fn roll(&mut self, secs: u64) {
        if let Some(done) = self.minute.roll(WindowLen::OneMinute, secs)
            && u64::from(done.epoch) / 60 == secs / 3600
        {
            let kib = u32::try_from(done.bytes.div_ceil(1024)).unwrap_or(u32::MAX);
            self.hour_peak_kib = self.hour_peak_kib.max(kib);
        }
        self.ring.roll(secs);
        self.day.roll(WindowLen::OneDay, secs);
    }

    pub fn add(&mut self, bytes: u64, packets: u64) {
        self.minute.add(bytes, packets);
        self.ring.add(bytes, packets);
        self.day.add(bytes, packets);
    }

    /// A new prefix group takes its first member's windows as its own history.
    pub fn absorb(&mut self, member: &Self) {
        self.minute.merge(&member.minute, WindowLen::OneMinute);
        self.ring.merge(&member.ring);
        self.day.merge(&member.day, WindowLen::OneDay);
        self.hour_peak_kib = self.hour_peak_kib.max(member.hour_peak_kib);
        self.first_seen = if self.first_seen == 0 {
            member.first_seen
        } else {
            self.first_seen.min(member.first_seen)
        };
        self.last_seen_ms = self.last_seen_ms.max(member.last_seen_ms);
        self.flags |= member.flags & (SERVED | INITIATED | HOUR_PENDING | DAY_PENDING);
    }

    /// Fixed little-endian encoding, for checkpoints (owner and name are not kept: the next
    /// sample refreshes them).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN + Curve::ENCODED_LEN);
        out.push(ENCODING_VERSION);
        out.extend_from_slice(&(self.flags & STORED).to_le_bytes());
        out.extend_from_slice(&self.port.to_le_bytes());
        out.extend_from_slice(&self.first_seen.to_le_bytes());
        out.extend_from_slice(&self.last_seen_ms.to_le_bytes());
        out.extend_from_slice(&self.hour_peak_kib.to_le_bytes());
        out.extend_from_slice(&self.members.to_le_bytes());
        out.extend_from_slice(&self.tail_day.to_le_bytes());
        out.push(self.tail);
        out.push(self.heavy_hours);
        out.extend_from_slice(&self.minute.to_bytes());
        out.extend_from_slice(&self.ring.to_bytes());
        out.extend_from_slice(&self.day.to_bytes());
        if let Some(curve) = &self.curve {
            out.extend_from_slice(&curve.to_bytes());
        }
        out
    }

    pub fn decode(key: PeerKey, bytes: &[u8]) -> Option<Self> {
        match bytes.first() {
            Some(&ENCODING_VERSION) => Self::decode_v2(key, bytes),
            Some(1) => Self::decode_v1(key, bytes),
            _ => None,
        }
    }

    fn decode_v2(key: PeerKey, b: &[u8]) -> Option<Self> {
        if b.len() != ENCODED_LEN && b.len() != ENCODED_LEN + Curve::ENCODED_LEN {
            return None;
        }
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let windows = 29;
        let ring_at = windows + Window::ENCODED_LEN;
        let day_at = ring_at + Ring::ENCODED_LEN;
        let curve = if b.len() > ENCODED_LEN {
            Some(Box::new(Curve::from_bytes(&b[ENCODED_LEN..])?))
        } else {
            None
        };
        Some(Self {
            key,
            flags: u16_at(1) & STORED,
            port: u16_at(3),
            first_seen: u32_at(5),
            last_seen_ms: u64_at(9),
            hour_peak_kib: u32_at(17),
            members: u32_at(21),
            tail_day: u16_at(25),
            tail: b[27],
            heavy_hours: b[28],
            minute: Window::from_bytes(&b[windows..ring_at])?,
            ring: Ring::from_bytes(&b[ring_at..day_at])?,
            day: Window::from_bytes(&b[day_at..ENCODED_LEN])?,
            curve,
            ..Self::new(key)
        })
    }

    /// The encoding before the ten-minute slots (four two-bucket windows): the 1-minute and
    /// 24-hour windows carry over as they are, the 10-minute window's two buckets become the
    /// ring's two newest slots (they are the same ten-minute epochs); the old hour window
    /// is dropped (the ring rebuilds it within the hour).
    fn decode_v1(key: PeerKey, b: &[u8]) -> Option<Self> {
        const V1_LEN: usize = 20 + 4 * Window::ENCODED_LEN;
        if b.len() != V1_LEN {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let window = |i: usize| Window::from_bytes(&b[20 + i * 28..48 + i * 28]);
        let ten = window(1)?;
        let mut ring = Ring::default();
        let epoch = ten.epoch();
        if epoch > 0 {
            ring.roll((epoch - 1) * 600);
            ring.add(ten.previous_bytes(), 0);
            ring.roll(epoch * 600);
            ring.add(ten.current_bytes(), 0);
        }
        Some(Self {
            key,
            flags: u16::from(b[1]) & LEARNED,
            port: u16::from_le_bytes([b[2], b[3]]),
            first_seen: u32::try_from(u64_at(4)).unwrap_or(u32::MAX),
            last_seen_ms: u64_at(12),
            minute: window(0)?,
            ring,
            day: window(3)?,
            ..Self::new(key)
        })
    }
}

const ENCODING_VERSION: u8 = 2;
const ENCODED_LEN: usize = 29 + 2 * Window::ENCODED_LEN + Ring::ENCODED_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_ipv4() {
        let a = PeerKey::new(3, "198.51.100.7".parse().unwrap());
        assert_eq!(a.ip(), "198.51.100.7".parse::<IpAddr>().unwrap());
        let b = PeerKey::new(3, "::ffff:198.51.100.7".parse().unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn networks_mask_the_address_and_print_as_cidr() {
        let n = PeerKey::network(1, "198.51.100.77".parse().unwrap(), 24);
        assert_eq!(n.addr_text(), "198.51.100.0/24");
        assert_eq!(
            n,
            PeerKey::network(1, "198.51.100.200".parse().unwrap(), 24)
        );
        assert_ne!(n, PeerKey::new(1, "198.51.100.0".parse().unwrap()));
        let v6 = PeerKey::network(1, "2001:db8:1:2:3:4:5:6".parse().unwrap(), 48);
        assert_eq!(v6.addr_text(), "2001:db8:1::/48");
        let v64 = PeerKey::network(1, "2001:db8:1::9".parse().unwrap(), 64);
        assert_ne!(
            v6, v64,
            "a /48 and a /64 with the same first address differ"
        );
        for k in [n, v6, v64, PeerKey::new(1, "2001:db8::1".parse().unwrap())] {
            assert_eq!(PeerKey::parse(1, &k.addr_text()), Some(k));
        }
        assert_eq!(PeerKey::parse(1, "198.51.100.0/33"), None);
        assert_eq!(PeerKey::parse(1, "nonsense"), None);
    }

    #[test]
    fn encoding_round_trips() {
        let key = PeerKey::new(0, "2001:db8::7".parse().unwrap());
        let mut p = PeerState {
            first_seen: 1_790_000_000,
            last_seen_ms: 1_790_000_123_456,
            port: 443,
            flags: LEARNED | DIRTY | SERVED | HEAVY,
            hour_peak_kib: 77,
            members: 3,
            tail_day: 20_700,
            tail: 5,
            heavy_hours: 2,
            curve: Some(Box::default()),
            ..PeerState::new(key)
        };
        p.roll(1_790_000_100);
        p.add(5000, 7);
        p.roll(1_790_000_170);
        let back = PeerState::decode(key, &p.encode()).unwrap();
        assert_eq!(back.minute, p.minute);
        assert_eq!(back.ring, p.ring);
        assert_eq!(back.day, p.day);
        assert_eq!(
            (back.first_seen, back.last_seen_ms, back.port, back.members),
            (p.first_seen, p.last_seen_ms, 443, 3)
        );
        assert_eq!(
            (
                back.hour_peak_kib,
                back.tail_day,
                back.tail,
                back.heavy_hours
            ),
            (77, 20_700, 5, 2)
        );
        assert_eq!(back.flags, LEARNED | SERVED | HEAVY, "dirty is not stored");
        assert!(back.curve.is_some());
        assert!(PeerState::decode(key, &[9; 3]).is_none());
    }

    #[test]
    fn the_previous_encoding_still_loads() {
        // Version 1: flags, port, first seen, last seen, then 1m, 10m, 1h and 24h windows.
        let mut w = [Window::default(); 4];
        let t = 1_790_000_100u64;
        for (i, len) in WindowLen::ALL.into_iter().enumerate() {
            w[i].roll(len, t);
            w[i].add(1000 * (i as u64 + 1), 1);
        }
        let mut v1 = vec![1u8, 1];
        v1.extend_from_slice(&443u16.to_le_bytes());
        v1.extend_from_slice(&1_790_000_000u64.to_le_bytes());
        v1.extend_from_slice(&(t * 1000).to_le_bytes());
        for x in &w {
            v1.extend_from_slice(&x.to_bytes());
        }
        let key = PeerKey::new(0, "198.51.100.7".parse().unwrap());
        let p = PeerState::decode(key, &v1).unwrap();
        assert!(p.learned());
        assert_eq!(p.port, 443);
        assert_eq!(p.volume(WindowLen::OneMinute, t * 1000).bytes, 1000);
        assert_eq!(p.volume(WindowLen::TenMinutes, t * 1000).bytes, 2000);
        assert_eq!(p.volume(WindowLen::OneDay, t * 1000).bytes, 4000);
    }

    #[test]
    fn state_stays_small() {
        // What the 512-bytes-per-pair budget is spent on (four cache lines); the benchmark
        // measures the rest (index, groups, owners).
        let size = std::mem::size_of::<PeerState>();
        assert!(size <= 256, "{size}");
    }
}

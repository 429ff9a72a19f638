//! Who a service has met before. The peer table forgets a client after 25 quiet hours (its
//! windows are empty by then, and a busy homeserver meets hundreds of thousands of phones);
//! what a newcomer is must outlive that: a household that skipped a day, or whose IPv6
//! privacy address changed overnight, is not met for the first time. So each client identity
//! (an IPv4 address; an IPv6 /64, the link its privacy addresses rotate in) keeps the time
//! of its first sighting for [`RECALL_DAYS`] after its last, in 12 bytes.
//!
//! Bounded: beyond [`MAX_ACQUAINTANCES`] identities, new ones are not remembered and stay
//! newcomers, judged strictly. Flooding the table (many source addresses) therefore makes
//! nobody look established; only meeting the service on earlier days does.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use super::peers::PeerKey;

/// Days an identity is remembered after it was last met.
pub const RECALL_DAYS: u16 = 30;
/// Identities remembered at most (about 40 bytes each with the map's overhead).
pub const MAX_ACQUAINTANCES: usize = 2_000_000;
/// The IPv6 prefix of one identity: a link, where one household's addresses rotate.
pub const IPV6_IDENTITY_PREFIX: u8 = 64;

/// (service id, the address: IPv4 mapped, IPv6 masked to its /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub service: u32,
    pub addr: [u8; 16],
}

impl Identity {
    pub fn of(service: u32, addr: IpAddr) -> Self {
        let key = match addr {
            IpAddr::V4(_) => PeerKey::new(service, addr),
            IpAddr::V6(_) => PeerKey::network(service, addr, IPV6_IDENTITY_PREFIX),
        };
        Self {
            service,
            addr: key.addr,
        }
    }

    /// `198.51.100.7` or `2001:db8:1:2::/64` (the state database's form).
    pub fn text(&self) -> String {
        let ip = crate::flow::ip_from_kernel(self.addr);
        match ip {
            IpAddr::V4(_) => ip.to_string(),
            IpAddr::V6(_) => format!("{ip}/{IPV6_IDENTITY_PREFIX}"),
        }
    }

    /// Reads [`Self::text`] back.
    pub fn parse(service: u32, text: &str) -> Option<Self> {
        let addr: IpAddr = match text.split_once('/') {
            None => text.parse().ok().filter(IpAddr::is_ipv4)?,
            Some((addr, len)) if len.parse() == Ok(IPV6_IDENTITY_PREFIX) => {
                addr.parse().ok().filter(IpAddr::is_ipv6)?
            }
            Some(_) => return None,
        };
        Some(Self::of(service, addr))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquaintance {
    /// Unix seconds of the identity's first sighting.
    pub first_seen: u32,
    /// Unix day it was last met.
    pub last_day: u16,
    /// Changed since the last checkpoint.
    pub dirty: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Acquaintances {
    map: FxHashMap<Identity, Acquaintance>,
    /// Identities not remembered because the table was full.
    pub refused: u64,
}

fn day_of(secs: u64) -> u16 {
    u16::try_from(secs / 86_400).unwrap_or(u16::MAX)
}

fn secs32(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

impl Acquaintances {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A client's first sample in the peer table at `t` (Unix seconds): when its identity was
    /// first met (`t` for a stranger, who is remembered from now on).
    pub fn meet(&mut self, service: u32, addr: IpAddr, t: u64) -> u32 {
        let id = Identity::of(service, addr);
        let today = day_of(t);
        if let Some(a) = self.map.get_mut(&id) {
            let first = a.first_seen.min(secs32(t));
            if a.last_day != today {
                a.last_day = today;
                a.dirty = true;
            }
            return first;
        }
        if !self.insert(id, secs32(t), today, true) {
            self.refused += 1;
        }
        secs32(t)
    }

    /// A client leaves the peer table (forgotten after its quiet hours): its identity keeps
    /// the earlier of the two first sightings, and the day it was last seen.
    pub fn part(&mut self, service: u32, addr: IpAddr, first_seen: u32, last_seen_secs: u64) {
        let id = Identity::of(service, addr);
        let day = day_of(last_seen_secs);
        match self.map.get_mut(&id) {
            Some(a) => {
                a.first_seen = a.first_seen.min(first_seen);
                a.last_day = a.last_day.max(day);
                a.dirty = true;
            }
            None => {
                if !self.insert(id, first_seen, day, true) {
                    self.refused += 1;
                }
            }
        }
    }

    /// Adds an identity unless the table is full; `dirty` when the database lacks it.
    fn insert(&mut self, id: Identity, first_seen: u32, last_day: u16, dirty: bool) -> bool {
        if self.map.len() >= MAX_ACQUAINTANCES {
            return false;
        }
        self.map.insert(
            id,
            Acquaintance {
                first_seen,
                last_day,
                dirty,
            },
        );
        true
    }

    /// Forgets identities not met for [`RECALL_DAYS`] at `now` (Unix seconds).
    pub fn expire(&mut self, now: u64) {
        let oldest = Self::oldest_kept_day(now);
        self.map.retain(|_, a| i64::from(a.last_day) >= oldest);
    }

    /// The oldest last day kept at `now` (for the state database; negative before any
    /// sample's time is known).
    pub fn oldest_kept_day(now: u64) -> i64 {
        i64::from(day_of(now)) - i64::from(RECALL_DAYS)
    }

    /// Loads a stored identity.
    pub fn restore(&mut self, id: Identity, first_seen: u32, last_day: u16) {
        self.insert(id, first_seen, last_day, false);
    }

    /// The identities changed since the last call, marked saved. A scan of the table, like
    /// the checkpoint's of the peers: a list of changed entries would cost memory in every
    /// run that never checkpoints (replays, benchmarks) to save a few milliseconds a minute.
    pub fn take_dirty(&mut self) -> Vec<(Identity, Acquaintance)> {
        self.map
            .iter_mut()
            .filter(|(_, a)| a.dirty)
            .map(|(id, a)| {
                a.dirty = false;
                (*id, *a)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_returning_address_keeps_its_first_sighting() {
        let mut a = Acquaintances::default();
        let t0 = 100 * DAY + 3600;
        assert_eq!(a.meet(0, ip("198.51.100.7"), t0), t0 as u32);
        // Forgotten by the peer table after a quiet day, back two days later.
        a.part(0, ip("198.51.100.7"), t0 as u32, t0 + 600);
        assert_eq!(a.meet(0, ip("198.51.100.7"), t0 + 3 * DAY), t0 as u32);
        // Another service has not met it.
        let t1 = t0 + 3 * DAY;
        assert_eq!(a.meet(1, ip("198.51.100.7"), t1), t1 as u32);
        // Nor is its neighbour known.
        assert_eq!(a.meet(0, ip("198.51.100.8"), t1), t1 as u32);
    }

    #[test]
    fn a_new_privacy_address_of_a_known_link_is_no_stranger() {
        let mut a = Acquaintances::default();
        let t0 = 100 * DAY;
        a.meet(0, ip("2001:db8:1:2:aaaa::1"), t0);
        assert_eq!(a.meet(0, ip("2001:db8:1:2:bbbb::9"), t0 + DAY), t0 as u32);
        // The next /64 of the same /48 is another household.
        let t1 = t0 + DAY;
        assert_eq!(a.meet(0, ip("2001:db8:1:3::9"), t1), t1 as u32);
        let id = Identity::of(0, ip("2001:db8:1:2:bbbb::9"));
        assert_eq!(id.text(), "2001:db8:1:2::/64");
        assert_eq!(Identity::parse(0, &id.text()), Some(id));
        assert_eq!(Identity::parse(0, "2001:db8:1:2::/48"), None);
        assert_eq!(Identity::parse(0, "2001:db8::1"), None);
        assert_eq!(
            Identity::parse(0, "198.51.100.7"),
            Some(Identity::of(0, ip("198.51.100.7")))
        );
    }

    #[test]
    fn identities_expire_after_the_recall_period_and_the_table_is_bounded() {
        let mut a = Acquaintances::default();
        let t0 = 100 * DAY;
        a.meet(0, ip("198.51.100.7"), t0);
        a.expire(t0 + u64::from(RECALL_DAYS) * DAY);
        assert_eq!(a.len(), 1);
        a.expire(t0 + u64::from(RECALL_DAYS + 1) * DAY);
        assert!(a.is_empty());
        let late = t0 + 40 * DAY;
        assert_eq!(a.meet(0, ip("198.51.100.7"), late), late as u32);
        // Saving clears the dirty marks.
        assert_eq!(a.take_dirty().len(), 1);
        assert_eq!(a.take_dirty(), vec![]);
    }

    #[test]
    fn a_full_table_refuses_strangers_who_stay_newcomers() {
        let mut a = Acquaintances::default();
        for i in 0..MAX_ACQUAINTANCES as u32 {
            a.restore(Identity::of(0, IpAddr::from(i.to_be_bytes())), 1, 1);
        }
        let t = 100 * DAY;
        let stranger = ip("203.0.113.9");
        a.meet(0, stranger, t);
        assert_eq!(a.refused, 1);
        assert_eq!(a.meet(0, stranger, t + DAY), (t + DAY) as u32);
    }
}

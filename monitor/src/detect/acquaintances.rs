//! Who a service has met before. The peer table forgets a client after 25 quiet hours (its
//! windows are empty by then, and a busy homeserver meets hundreds of thousands of phones);
//! what a newcomer is must outlive that: a household that skipped a day, or whose IPv6
//! privacy address changed overnight, is not met for the first time. So each client identity
//! (an IPv4 address; an IPv6 /64, the link its privacy addresses rotate in) keeps the time
//! of its first sighting for [`RECALL_DAYS`] after its last, in 12 bytes.
//!
//! The provider networks the service's clients come from (an IPv4 /16, an IPv6 /32: the
//! size of an access provider's allocation) are remembered the same way. A new address in
//! a network the service has known for a day is most often a known household on a new
//! lease (a DHCP move to another /24 of its ISP); a new address in a network no client ever
//! came from (a hosting provider's, a foreign ISP's) is a stranger. Only TCP clients
//! introduce a network: their address completed a handshake, so forged packets (a web
//! shell's UDP with any source) cannot make every network look familiar.
//!
//! Bounded: beyond [`MAX_ACQUAINTANCES`] identities (or [`MAX_NETWORKS`] networks), new ones
//! are not remembered and stay strangers, judged strictly. Flooding the table (many source
//! addresses) therefore makes nobody look established; only meeting the service on earlier
//! days does.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use super::peers::PeerKey;

/// Days an identity is remembered after it was last met.
pub const RECALL_DAYS: u16 = 30;
/// Identities remembered at most (about 40 bytes each with the map's overhead).
pub const MAX_ACQUAINTANCES: usize = 2_000_000;
/// Provider networks remembered at most (every IPv4 /16 is 65,536).
pub const MAX_NETWORKS: usize = 200_000;
/// The IPv6 prefix of one identity: a link, where one household's addresses rotate.
pub const IPV6_IDENTITY_PREFIX: u8 = 64;
/// The prefixes of a provider network.
pub const IPV4_NETWORK_PREFIX: u8 = 16;
pub const IPV6_NETWORK_PREFIX: u8 = 32;
/// A network vouches for its new addresses once it has been known this long.
pub const VOUCH_AFTER_SECS: u64 = 86_400;

/// (service id, the address: IPv4 mapped, IPv6 masked to its /64; or a provider network,
/// masked to its prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub service: u32,
    pub addr: [u8; 16],
    pub network: bool,
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
            network: false,
        }
    }

    /// The provider network of `addr`.
    pub fn network_of(service: u32, addr: IpAddr) -> Self {
        Self {
            service,
            addr: PeerKey::network(service, addr, Self::network_prefix(addr)).addr,
            network: true,
        }
    }

    fn network_prefix(addr: IpAddr) -> u8 {
        match addr {
            IpAddr::V4(_) => IPV4_NETWORK_PREFIX,
            IpAddr::V6(_) => IPV6_NETWORK_PREFIX,
        }
    }

    /// `198.51.100.7`, `2001:db8:1:2::/64`, or a network `198.51.0.0/16`, `2001:db8::/32`
    /// (the state database's form).
    pub fn text(&self) -> String {
        let ip = crate::flow::ip_from_kernel(self.addr);
        match (ip, self.network) {
            (IpAddr::V4(_), false) => ip.to_string(),
            (IpAddr::V6(_), false) => format!("{ip}/{IPV6_IDENTITY_PREFIX}"),
            (_, true) => format!("{ip}/{}", Self::network_prefix(ip)),
        }
    }

    /// Reads [`Self::text`] back.
    pub fn parse(service: u32, text: &str) -> Option<Self> {
        let Some((addr, len)) = text.split_once('/') else {
            let addr: IpAddr = text.parse().ok().filter(IpAddr::is_ipv4)?;
            return Some(Self::of(service, addr));
        };
        let addr: IpAddr = addr.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        if len == Self::network_prefix(addr) {
            Some(Self::network_of(service, addr))
        } else if addr.is_ipv6() && len == IPV6_IDENTITY_PREFIX {
            Some(Self::of(service, addr))
        } else {
            None
        }
    }
}

/// What meeting a client tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Met {
    /// Unix seconds of its identity's first sighting.
    pub first_seen: u32,
    /// Its provider network has been known for [`VOUCH_AFTER_SECS`].
    pub vouched: bool,
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

/// A table's key: an identity without its kind, which the table it is in says (four bytes
/// less for each of up to two million entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    service: u32,
    addr: [u8; 16],
}

impl From<Identity> for Key {
    fn from(id: Identity) -> Self {
        Self {
            service: id.service,
            addr: id.addr,
        }
    }
}

/// One bounded table of first sightings: the clients' or the networks'.
#[derive(Clone, Debug)]
struct Book {
    map: FxHashMap<Key, Acquaintance>,
    max: usize,
    network: bool,
}

impl Book {
    fn new(max: usize, network: bool) -> Self {
        Self {
            map: FxHashMap::default(),
            max,
            network,
        }
    }

    /// Meets `id` at `t`: its first sighting (`t` for a stranger, remembered from now on
    /// unless the table is full); `None` when refused.
    fn meet(&mut self, id: Identity, t: u64) -> Option<u32> {
        let today = day_of(t);
        if let Some(a) = self.map.get_mut(&id.into()) {
            if a.last_day != today {
                a.last_day = today;
                a.dirty = true;
            }
            return Some(a.first_seen.min(secs32(t)));
        }
        self.insert(id, secs32(t), today, true).then_some(secs32(t))
    }

    /// Adds an identity unless the table is full; `dirty` when the database lacks it.
    fn insert(&mut self, id: Identity, first_seen: u32, last_day: u16, dirty: bool) -> bool {
        if self.map.len() >= self.max {
            return false;
        }
        self.map.insert(
            id.into(),
            Acquaintance {
                first_seen,
                last_day,
                dirty,
            },
        );
        true
    }

    fn expire(&mut self, oldest: i64) {
        self.map.retain(|_, a| i64::from(a.last_day) >= oldest);
    }

    fn take_dirty(&mut self, out: &mut Vec<(Identity, Acquaintance)>) {
        let network = self.network;
        out.extend(self.map.iter_mut().filter(|(_, a)| a.dirty).map(|(k, a)| {
            a.dirty = false;
            let id = Identity {
                service: k.service,
                addr: k.addr,
                network,
            };
            (id, *a)
        }));
    }
}

#[derive(Clone, Debug)]
pub struct Acquaintances {
    clients: Book,
    networks: Book,
    /// Identities (and networks) not remembered because their table was full.
    pub refused: u64,
}

impl Default for Acquaintances {
    fn default() -> Self {
        Self {
            clients: Book::new(MAX_ACQUAINTANCES, false),
            networks: Book::new(MAX_NETWORKS, true),
            refused: 0,
        }
    }
}

fn day_of(secs: u64) -> u16 {
    u16::try_from(secs / 86_400).unwrap_or(u16::MAX)
}

fn secs32(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

impl Acquaintances {
    /// Client identities remembered.
    pub fn len(&self) -> usize {
        self.clients.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.map.is_empty()
    }

    /// Provider networks remembered.
    pub fn networks(&self) -> usize {
        self.networks.map.len()
    }

    /// A client's first sample in the peer table at `t` (Unix seconds): when its identity was
    /// first met, and whether its network vouches for it. A `handshake` client (TCP)
    /// introduces its network.
    pub fn meet(&mut self, service: u32, addr: IpAddr, t: u64, handshake: bool) -> Met {
        let first_seen = self
            .clients
            .meet(Identity::of(service, addr), t)
            .unwrap_or_else(|| {
                self.refused += 1;
                secs32(t)
            });
        let net = Identity::network_of(service, addr);
        let network_since = if handshake {
            let met = self.networks.meet(net, t);
            if met.is_none() {
                self.refused += 1;
            }
            met
        } else {
            self.networks.map.get(&net.into()).map(|a| a.first_seen)
        };
        Met {
            first_seen,
            vouched: network_since.is_some_and(|s| u64::from(s) + VOUCH_AFTER_SECS <= t),
        }
    }

    /// A client leaves the peer table (forgotten after its quiet hours): its identity keeps
    /// the earlier of the two first sightings, and the day it was last seen.
    pub fn part(&mut self, service: u32, addr: IpAddr, first_seen: u32, last_seen_secs: u64) {
        let id = Identity::of(service, addr);
        let day = day_of(last_seen_secs);
        match self.clients.map.get_mut(&id.into()) {
            Some(a) => {
                a.first_seen = a.first_seen.min(first_seen);
                a.last_day = a.last_day.max(day);
                a.dirty = true;
            }
            None => {
                if !self.clients.insert(id, first_seen, day, true) {
                    self.refused += 1;
                }
            }
        }
    }

    /// Forgets identities and networks not met for [`RECALL_DAYS`] at `now` (Unix seconds).
    pub fn expire(&mut self, now: u64) {
        let oldest = Self::oldest_kept_day(now);
        self.clients.expire(oldest);
        self.networks.expire(oldest);
    }

    /// The oldest last day kept at `now` (for the state database; negative before any
    /// sample's time is known).
    pub fn oldest_kept_day(now: u64) -> i64 {
        i64::from(day_of(now)) - i64::from(RECALL_DAYS)
    }

    /// Loads a stored identity or network.
    pub fn restore(&mut self, id: Identity, first_seen: u32, last_day: u16) {
        let book = if id.network {
            &mut self.networks
        } else {
            &mut self.clients
        };
        book.insert(id, first_seen, last_day, false);
    }

    /// The identities and networks changed since the last call, marked saved. A scan of the
    /// tables, like the checkpoint's of the peers: a list of changed entries would cost
    /// memory in every run that never checkpoints (replays, benchmarks) to save a few
    /// milliseconds a minute.
    pub fn take_dirty(&mut self) -> Vec<(Identity, Acquaintance)> {
        let mut out = Vec::new();
        self.clients.take_dirty(&mut out);
        self.networks.take_dirty(&mut out);
        out
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
        assert_eq!(
            a.meet(0, ip("198.51.100.7"), t0, true).first_seen,
            t0 as u32
        );
        // Forgotten by the peer table after a quiet day, back two days later.
        a.part(0, ip("198.51.100.7"), t0 as u32, t0 + 600);
        assert_eq!(
            a.meet(0, ip("198.51.100.7"), t0 + 3 * DAY, true).first_seen,
            t0 as u32
        );
        // Another service has not met it.
        let t1 = t0 + 3 * DAY;
        assert_eq!(
            a.meet(1, ip("198.51.100.7"), t1, true).first_seen,
            t1 as u32
        );
        // Nor is its neighbour known.
        assert_eq!(
            a.meet(0, ip("198.51.100.8"), t1, true).first_seen,
            t1 as u32
        );
    }

    #[test]
    fn a_new_privacy_address_of_a_known_link_is_no_stranger() {
        let mut a = Acquaintances::default();
        let t0 = 100 * DAY;
        a.meet(0, ip("2001:db8:1:2:aaaa::1"), t0, true);
        assert_eq!(
            a.meet(0, ip("2001:db8:1:2:bbbb::9"), t0 + DAY, true)
                .first_seen,
            t0 as u32
        );
        // The next /64 of the same /48 is another household.
        let t1 = t0 + DAY;
        assert_eq!(
            a.meet(0, ip("2001:db8:1:3::9"), t1, true).first_seen,
            t1 as u32
        );
        let id = Identity::of(0, ip("2001:db8:1:2:bbbb::9"));
        assert_eq!(id.text(), "2001:db8:1:2::/64");
        assert_eq!(Identity::parse(0, &id.text()), Some(id));
        assert_eq!(Identity::parse(0, "2001:db8:1:2::/48"), None);
        assert_eq!(Identity::parse(0, "198.51.100.7/24"), None);
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
        a.meet(0, ip("198.51.100.7"), t0, true);
        a.expire(t0 + u64::from(RECALL_DAYS) * DAY);
        assert_eq!(a.len(), 1);
        a.expire(t0 + u64::from(RECALL_DAYS + 1) * DAY);
        assert!(a.is_empty());
        let late = t0 + 40 * DAY;
        assert_eq!(
            a.meet(0, ip("198.51.100.7"), late, true).first_seen,
            late as u32
        );
        // Saving clears the dirty marks.
        assert_eq!(a.take_dirty().len(), 2, "the identity and its network");
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
        a.meet(0, stranger, t, true);
        assert_eq!(a.refused, 1);
        assert_eq!(
            a.meet(0, stranger, t + DAY, true).first_seen,
            (t + DAY) as u32
        );
    }

    #[test]
    fn a_known_network_vouches_for_a_new_address_after_a_day_and_forged_packets_do_not() {
        let mut a = Acquaintances::default();
        let t0 = 100 * DAY;
        let household = ip("198.51.7.20");
        assert!(
            !a.meet(0, household, t0, true).vouched,
            "a network met now is new"
        );
        // The household's ISP gives it another /24 the next day: the /16 is known.
        let moved = a.meet(0, ip("198.51.200.4"), t0 + DAY, true);
        assert_eq!(moved.first_seen, (t0 + DAY) as u32, "a new identity");
        assert!(moved.vouched);
        // Half a day is not enough, and a network is per service.
        let t1 = t0 + 2 * DAY;
        a.meet(0, ip("203.0.113.9"), t1, true);
        assert!(!a.meet(0, ip("203.0.200.1"), t1 + DAY / 2, true).vouched);
        assert!(!a.meet(1, ip("198.51.9.9"), t1, true).vouched);
        // Forged UDP from a stranger's network introduces nothing...
        a.meet(0, ip("192.0.2.1"), t1, false);
        assert!(!a.meet(0, ip("192.0.3.1"), t1 + DAY, false).vouched);
        // ...but a known network still vouches for a UDP client.
        assert!(a.meet(0, ip("198.51.77.1"), t1, false).vouched);
        // IPv6: the /32.
        a.meet(0, ip("2001:db8:1:2::1"), t0, true);
        assert!(a.meet(0, ip("2001:db8:ffff:1::1"), t0 + DAY, true).vouched);
        assert!(!a.meet(0, ip("2001:db9::1"), t0 + DAY, true).vouched);
        let net = Identity::network_of(0, ip("2001:db8:ffff:1::1"));
        assert_eq!(net.text(), "2001:db8::/32");
        assert_eq!(Identity::parse(0, &net.text()), Some(net));
        let net = Identity::network_of(0, household);
        assert_eq!(net.text(), "198.51.0.0/16");
        assert_eq!(Identity::parse(0, &net.text()), Some(net));
        assert_eq!(a.networks(), 5);
        // Networks expire with the identities, and are saved with them.
        assert_eq!(
            a.take_dirty().iter().filter(|(id, _)| id.network).count(),
            5
        );
        a.expire(t1 + u64::from(RECALL_DAYS + 2) * DAY);
        assert_eq!((a.len(), a.networks()), (0, 0));
    }
}

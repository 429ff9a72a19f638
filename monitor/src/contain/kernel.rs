//! The kernel side of containment: writes rules into the egress and ingress programs' maps
//! and reads their counters back. The policy (which peer of which service, for how long)
//! lives elsewhere; this only makes the kernel's rules exactly what it is given.
//!
//! Maps (see `monitor_common`):
//! - `CONTAIN_RULES`, an LPM trie: (cgroup id, peer prefix) -> bucket slot. One key per
//!   (rule, cgroup); prefix length 64 (the cgroup id, always exact) + the address prefix on
//!   16 bytes (IPv4 v4-mapped: a /24 is 64 + 96 + 24).
//! - `CONTAIN_BUCKETS`, an array of [`ContainBucket`]s: one slot per rule (shared by its
//!   cgroups), holding the action, the token bucket and the counters.
//! - `CONTAIN_EPOCH`: bumped after every change, so that each flow looks its rules up again
//!   once (and only then); and the number of block rules (the ingress program looks rules up
//!   only while there is one).
//!
//! The kernel maps are the state: [`Enforcer::apply`] reads what is there (slots by rule id,
//! keys) before changing it, so a failed apply is repaired by the next one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aya::maps::{
    Array, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use ipnet::IpNet;
use monitor_common::{
    CONTAIN_BLOCK, CONTAIN_BUCKETS_ENTRIES, CONTAIN_CGROUP_BITS, CONTAIN_EXEMPT,
    CONTAIN_F_PLAIN_DROP, CONTAIN_MAX_RATE, CONTAIN_NONE, CONTAIN_RULES_ENTRIES, CONTAIN_THROTTLE,
    ContainBucket, ContainEpoch, ContainKey,
};
use thiserror::Error;

/// `BPF_F_LOCK`: read or write a value under its `bpf_spin_lock`.
const BPF_F_LOCK: u64 = 4;

/// Largest burst accepted (1 TiB: far above any sensible bucket, far below the kernel's i64).
pub const MAX_BURST_BYTES: u64 = 1 << 40;

/// What the kernel does to a contained peer's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelAction {
    /// Token bucket: the peer's traffic (egress, from the rule's cgroups) leaves at
    /// `bytes_per_sec` on average, `burst_bytes` at once at most. Packets that do not fit are
    /// dropped with congestion notification (TCP slows down).
    Throttle {
        bytes_per_sec: u64,
        burst_bytes: u64,
    },
    /// Every packet to the peer is dropped; with the ingress program attached, so is every
    /// packet from it to the rule's cgroups (new connections are refused).
    Block,
}

/// One containment, as the kernel enforces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRule {
    /// The containment's id: stats are reported by it, and a rule applied again with the
    /// same id and action keeps its bucket (tokens, counters).
    pub id: u64,
    /// cgroup v2 ids (the directory's inode) of the contained service's sockets.
    pub cgroups: Vec<u64>,
    /// The peer: one address (/32, /128) or a prefix. Host bits are ignored.
    pub network: IpNet,
    pub action: KernelAction,
    /// Networks inside `network` left alone (a prefix's known peers): more specific keys
    /// pointing at no bucket, so the trie's longest match finds no containment for them.
    pub exempt: Vec<IpNet>,
}

/// Counters of one containment since its rule was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketStats {
    /// IP bytes and packets (GSO segments) dropped, both directions.
    pub dropped_bytes: u64,
    pub dropped_packets: u64,
    /// IP bytes and packets of the contained flows that passed (egress).
    pub passed_bytes: u64,
    pub passed_packets: u64,
}

/// How a throttled packet that does not fit is dropped (for measurements: the default,
/// congestion notification, is what TCP converges best with; see the containment tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DropMode {
    /// Verdict 2: drop, and the sending TCP socket enters CWR (halves its window) at once.
    #[default]
    CongestionNotification,
    /// Verdict 0: a plain drop; TCP sees a local send failure and retries later.
    Plain,
}

#[derive(Debug, Error)]
pub enum EnforceError {
    #[error("{rules} containments at once; the kernel holds at most {max}")]
    TooManyRules { rules: usize, max: u32 },
    #[error("{keys} (containment, cgroup) pairs at once; the kernel holds at most {max}")]
    TooManyKeys { keys: usize, max: u32 },
    #[error("containment {id} is given twice")]
    DuplicateId { id: u64 },
    #[error("containment {id} names no cgroup")]
    NoCgroups { id: u64 },
    #[error("containment {id}: rate {bytes_per_sec} B/s is outside 1..={max}")]
    Rate {
        id: u64,
        bytes_per_sec: u64,
        max: u64,
    },
    #[error("containment {id}: burst {burst_bytes} B is outside 1..={max}")]
    Burst { id: u64, burst_bytes: u64, max: u64 },
    #[error("containments {id} and {other} both contain {network} for cgroup {cgroup}")]
    Overlap {
        id: u64,
        other: u64,
        cgroup: u64,
        network: IpNet,
    },
    #[error("containment {id}: {network} is not a narrower network inside {within}")]
    Exempt {
        id: u64,
        network: IpNet,
        within: IpNet,
    },
    #[error("containment map {map}: {op}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: Box<MapError>,
    },
}

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> EnforceError {
    move |source| EnforceError::Map {
        map,
        op,
        source: Box::new(source),
    }
}

/// The LPM key of (cgroup, network): the network's address v4-mapped for IPv4, host bits
/// cleared, prefix length 64 + the prefix on 128 bits.
pub fn rule_key(cgroup_id: u64, network: IpNet) -> Key<ContainKey> {
    let network = network.trunc();
    let (addr, bits) = match network {
        IpNet::V4(n) => (
            n.addr().to_ipv6_mapped().octets(),
            96 + u32::from(n.prefix_len()),
        ),
        IpNet::V6(n) => (n.addr().octets(), u32::from(n.prefix_len())),
    };
    Key::new(CONTAIN_CGROUP_BITS + bits, ContainKey::new(cgroup_id, addr))
}

/// An LPM key as an ordered value (aya's `Key` is packed and has no `Ord`).
type KeyId = (u32, [u8; 8], [u8; 16]);

fn key_id(k: &Key<ContainKey>) -> KeyId {
    let data = k.data();
    (k.prefix_len(), data.cgroup_id, data.addr)
}

fn key_of(id: KeyId) -> Key<ContainKey> {
    Key::new(
        id.0,
        ContainKey {
            cgroup_id: id.1,
            addr: id.2,
        },
    )
}

/// Sets and reads the kernel's containment rules. One per attached program set
/// ([`crate::kernel::loader::Attached::enforcer`]).
pub struct Enforcer {
    rules: LpmTrie<MapData, ContainKey, u32>,
    buckets: Array<MapData, ContainBucket>,
    epoch: Array<MapData, ContainEpoch>,
    ingress: bool,
    drop_mode: DropMode,
    /// What the last successful apply wrote (its rules and drop mode) and the slots it gave
    /// them: applying the same again touches nothing, and the counters are read from those
    /// slots alone (the agent applies and reads every poll; a full scan is 255 syscalls).
    last: Option<(Vec<KernelRule>, DropMode)>,
    slots: BTreeMap<u64, u32>,
}

impl Enforcer {
    /// Wraps the three maps. `ingress`: the ingress program is attached (block rules also
    /// refuse the peer's packets to the service, its SYNs included).
    pub fn new(
        rules: LpmTrie<MapData, ContainKey, u32>,
        buckets: Array<MapData, ContainBucket>,
        epoch: Array<MapData, ContainEpoch>,
        ingress: bool,
    ) -> Self {
        Self {
            rules,
            buckets,
            epoch,
            ingress,
            drop_mode: DropMode::default(),
            last: None,
            slots: BTreeMap::new(),
        }
    }

    /// Whether block rules also act on ingress (the ingress program is attached). Without
    /// it a blocked peer's new connections complete their handshake and then stall.
    pub fn blocks_ingress(&self) -> bool {
        self.ingress
    }

    /// How throttled packets are dropped, for buckets written from now on.
    pub fn set_drop_mode(&mut self, mode: DropMode) {
        self.drop_mode = mode;
    }

    /// Makes the kernel's rules exactly `rules`: adds, changes and removes keys and buckets,
    /// then bumps the epoch once (not at all when nothing changed). A rule whose id is
    /// already there keeps its slot and counters; with the same action also its tokens (a
    /// renewal changes nothing in the kernel). Validated as a whole first: on a validation
    /// error nothing changes.
    pub fn apply(&mut self, rules: &[KernelRule]) -> Result<(), EnforceError> {
        if self
            .last
            .as_ref()
            .is_some_and(|(r, mode)| r.as_slice() == rules && *mode == self.drop_mode)
        {
            return Ok(());
        }
        let result = self.write_rules(rules);
        self.last = None;
        let slots = result?;
        self.slots = slots;
        self.last = Some((rules.to_vec(), self.drop_mode));
        Ok(())
    }

    /// [`apply`](Self::apply)'s work; returns the rules' slots.
    fn write_rules(&mut self, rules: &[KernelRule]) -> Result<BTreeMap<u64, u32>, EnforceError> {
        let wanted = validate(rules)?;
        let current = self.current_buckets()?;
        let current_keys = self.current_keys()?;
        let mut changed = false;

        // Slots: kept by id; new rules take slots free before this call first, so that a
        // slot freed now is not reused while flows may still point at it.
        let mut slots: BTreeMap<u64, u32> = BTreeMap::new();
        let used: BTreeSet<u32> = current.values().map(|(slot, _)| *slot).collect();
        let wanted_ids: BTreeSet<u64> = rules.iter().map(|r| r.id).collect();
        let freed: Vec<u32> = current
            .iter()
            .filter(|(id, _)| !wanted_ids.contains(id))
            .map(|(_, (slot, _))| *slot)
            .collect();
        let mut free = (0..CONTAIN_BUCKETS_ENTRIES)
            .filter(|s| !used.contains(s))
            .chain(freed.iter().copied());
        for rule in rules {
            let slot = if let Some((slot, bucket)) = current.get(&rule.id) {
                if let Some(updated) = self.renewed(bucket, rule) {
                    self.write_bucket(*slot, &updated)?;
                    changed = true;
                }
                *slot
            } else {
                // `validate` bounds the rules to the slots there are.
                let slot = free.next().unwrap_or_default();
                self.write_bucket(slot, &self.fresh(rule))?;
                changed = true;
                slot
            };
            slots.insert(rule.id, slot);
        }

        // Keys: insert or repoint what is wanted, then remove what is not.
        let mut wanted_keys: BTreeMap<KeyId, u32> = BTreeMap::new();
        for rule in rules {
            for &cgroup in &rule.cgroups {
                wanted_keys.insert(key_id(&rule_key(cgroup, rule.network)), slots[&rule.id]);
            }
        }
        for rule in rules {
            for &cgroup in &rule.cgroups {
                for net in &rule.exempt {
                    wanted_keys
                        .entry(key_id(&rule_key(cgroup, *net)))
                        .or_insert(CONTAIN_EXEMPT);
                }
            }
        }
        debug_assert_eq!(wanted_keys.len(), wanted);
        for (&id, &slot) in &wanted_keys {
            if current_keys.get(&id) != Some(&slot) {
                self.rules
                    .insert(&key_of(id), &slot, 0)
                    .map_err(map_err("CONTAIN_RULES", "insert"))?;
                changed = true;
            }
        }
        for id in current_keys.keys().filter(|k| !wanted_keys.contains_key(k)) {
            match self.rules.remove(&key_of(*id)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("CONTAIN_RULES", "remove")(e)),
            }
            changed = true;
        }
        // Freed buckets (not taken again above) pass: a flow that still points at one until
        // it sees the new epoch is no longer contained.
        let taken: BTreeSet<u32> = slots.values().copied().collect();
        for slot in freed.into_iter().filter(|s| !taken.contains(s)) {
            self.write_bucket(slot, &ContainBucket::default())?;
            changed = true;
        }
        if changed {
            let blocks = rules
                .iter()
                .filter(|r| r.action == KernelAction::Block)
                .count();
            self.bump_epoch(u32::try_from(blocks).unwrap_or(u32::MAX))?;
        }
        Ok(slots)
    }

    /// Removes every rule (mode off, kill switch, shutdown).
    pub fn clear(&mut self) -> Result<(), EnforceError> {
        self.apply(&[])
    }

    /// Per containment id: bytes and packets dropped and passed since its rule was made.
    pub fn stats(&self) -> Result<Vec<(u64, BucketStats)>, EnforceError> {
        let buckets = if self.last.is_some() {
            let mut out = HashMap::new();
            for (&id, &slot) in &self.slots {
                let b = self
                    .buckets
                    .get(&slot, BPF_F_LOCK)
                    .map_err(map_err("CONTAIN_BUCKETS", "read"))?;
                if b.action != CONTAIN_NONE && b.rule_id == id {
                    out.insert(id, (slot, b));
                }
            }
            out
        } else {
            self.current_buckets()?
        };
        Ok(buckets
            .into_iter()
            .map(|(id, (_, b))| {
                (
                    id,
                    BucketStats {
                        dropped_bytes: b.dropped_bytes,
                        dropped_packets: b.dropped_packets,
                        passed_bytes: b.passed_bytes,
                        passed_packets: b.passed_packets,
                    },
                )
            })
            .collect())
    }

    /// The rules' epoch and block count as the kernel has them.
    pub fn epoch(&self) -> Result<ContainEpoch, EnforceError> {
        self.epoch
            .get(&0, 0)
            .map_err(map_err("CONTAIN_EPOCH", "read"))
    }

    fn flags(&self) -> u32 {
        match self.drop_mode {
            DropMode::CongestionNotification => 0,
            DropMode::Plain => CONTAIN_F_PLAIN_DROP,
        }
    }

    /// A new rule's bucket: full at its first packet (`last_refill_ns` 0), no counts.
    fn fresh(&self, rule: &KernelRule) -> ContainBucket {
        let mut b = ContainBucket {
            rule_id: rule.id,
            flags: self.flags(),
            ..ContainBucket::default()
        };
        set_action(&mut b, rule.action);
        b
    }

    /// The bucket of a rule applied again: `None` when nothing changes (same action and
    /// parameters); else the same counters with the new parameters (tokens kept, capped at
    /// the new burst; refilled from scratch when the action changes).
    fn renewed(&self, bucket: &ContainBucket, rule: &KernelRule) -> Option<ContainBucket> {
        let mut b = *bucket;
        set_action(&mut b, rule.action);
        b.flags = self.flags();
        if b == *bucket {
            return None;
        }
        if b.action == bucket.action {
            b.tokens = b.tokens.min(b.burst_bytes as i64);
        } else {
            b.tokens = 0;
            b.last_refill_ns = 0;
        }
        Some(b)
    }

    fn write_bucket(&mut self, slot: u32, bucket: &ContainBucket) -> Result<(), EnforceError> {
        self.buckets
            .set(slot, bucket, BPF_F_LOCK)
            .map_err(map_err("CONTAIN_BUCKETS", "write"))
    }

    /// Rule id -> (slot, bucket) of every slot in use.
    fn current_buckets(&self) -> Result<HashMap<u64, (u32, ContainBucket)>, EnforceError> {
        let mut out = HashMap::new();
        for slot in 0..CONTAIN_BUCKETS_ENTRIES {
            let b = self
                .buckets
                .get(&slot, BPF_F_LOCK)
                .map_err(map_err("CONTAIN_BUCKETS", "read"))?;
            if b.action != CONTAIN_NONE {
                out.insert(b.rule_id, (slot, b));
            }
        }
        Ok(out)
    }

    fn current_keys(&self) -> Result<BTreeMap<KeyId, u32>, EnforceError> {
        let mut out = BTreeMap::new();
        for entry in &self.rules {
            let (k, slot) = entry.map_err(map_err("CONTAIN_RULES", "read"))?;
            out.insert(key_id(&k), slot);
        }
        Ok(out)
    }

    fn bump_epoch(&mut self, blocks: u32) -> Result<(), EnforceError> {
        let current = self.epoch()?;
        // 0 means "never any rule": new flows skip the lookup while it is 0.
        let epoch = match current.epoch.wrapping_add(1) {
            0 => 1,
            e => e,
        };
        self.epoch
            .set(0, &ContainEpoch { epoch, blocks }, 0)
            .map_err(map_err("CONTAIN_EPOCH", "write"))
    }
}

fn set_action(b: &mut ContainBucket, action: KernelAction) {
    match action {
        KernelAction::Throttle {
            bytes_per_sec,
            burst_bytes,
        } => {
            b.action = CONTAIN_THROTTLE;
            b.rate_bytes_per_sec = bytes_per_sec;
            b.burst_bytes = burst_bytes;
        }
        KernelAction::Block => {
            b.action = CONTAIN_BLOCK;
            b.rate_bytes_per_sec = 0;
            b.burst_bytes = 0;
        }
    }
}

/// Checks the rules as a whole; returns the number of keys they make.
fn validate(rules: &[KernelRule]) -> Result<usize, EnforceError> {
    if rules.len() > CONTAIN_BUCKETS_ENTRIES as usize {
        return Err(EnforceError::TooManyRules {
            rules: rules.len(),
            max: CONTAIN_BUCKETS_ENTRIES,
        });
    }
    let mut ids = BTreeSet::new();
    let mut keys: BTreeMap<KeyId, u64> = BTreeMap::new();
    for rule in rules {
        let id = rule.id;
        if !ids.insert(id) {
            return Err(EnforceError::DuplicateId { id });
        }
        if rule.cgroups.is_empty() {
            return Err(EnforceError::NoCgroups { id });
        }
        if let KernelAction::Throttle {
            bytes_per_sec,
            burst_bytes,
        } = rule.action
        {
            if !(1..=CONTAIN_MAX_RATE).contains(&bytes_per_sec) {
                return Err(EnforceError::Rate {
                    id,
                    bytes_per_sec,
                    max: CONTAIN_MAX_RATE,
                });
            }
            if !(1..=MAX_BURST_BYTES).contains(&burst_bytes) {
                return Err(EnforceError::Burst {
                    id,
                    burst_bytes,
                    max: MAX_BURST_BYTES,
                });
            }
        }
        if let Some(net) = rule
            .exempt
            .iter()
            .find(|n| !rule.network.contains(*n) || n.prefix_len() <= rule.network.prefix_len())
        {
            return Err(EnforceError::Exempt {
                id,
                network: *net,
                within: rule.network.trunc(),
            });
        }
        for &cgroup in &rule.cgroups {
            match keys.insert(key_id(&rule_key(cgroup, rule.network)), id) {
                Some(other) if other != id => {
                    return Err(EnforceError::Overlap {
                        id,
                        other,
                        cgroup,
                        network: rule.network.trunc(),
                    });
                }
                _ => {}
            }
        }
    }
    // Exemptions after every rule's own keys: where one is another rule's network, that
    // rule's key stands (as in `apply`).
    for rule in rules {
        for &cgroup in &rule.cgroups {
            for net in &rule.exempt {
                keys.entry(key_id(&rule_key(cgroup, *net)))
                    .or_insert(rule.id);
            }
        }
    }
    if keys.len() > CONTAIN_RULES_ENTRIES as usize {
        return Err(EnforceError::TooManyKeys {
            keys: keys.len(),
            max: CONTAIN_RULES_ENTRIES,
        });
    }
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_single_ipv4_peer_is_v4_mapped_with_all_128_bits() {
        let k = rule_key(42, net("127.0.0.66/32"));
        assert_eq!(k.prefix_len(), 64 + 128);
        assert_eq!(
            k.data().addr,
            Ipv4Addr::new(127, 0, 0, 66).to_ipv6_mapped().octets()
        );
        assert_eq!(k.data().cgroup_id, 42u64.to_ne_bytes());
        // The kernel side builds the same bytes from a flow's v4-mapped remote address.
        assert_eq!(
            k.data(),
            ContainKey::new(42, monitor_common::packet::v4_mapped([127, 0, 0, 66]))
        );
    }

    #[test]
    fn an_ipv4_prefix_counts_the_mapped_96_bits_and_drops_host_bits() {
        let k = rule_key(7, net("10.1.2.99/24"));
        assert_eq!(k.prefix_len(), 64 + 96 + 24);
        assert_eq!(
            k.data().addr,
            Ipv4Addr::new(10, 1, 2, 0).to_ipv6_mapped().octets()
        );
        assert_eq!(rule_key(7, net("0.0.0.0/0")).prefix_len(), 64 + 96);
    }

    #[test]
    fn ipv6_prefixes_are_taken_as_they_are() {
        let k = rule_key(7, net("2001:db8::1/128"));
        assert_eq!(k.prefix_len(), 64 + 128);
        assert_eq!(
            k.data().addr,
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        let k = rule_key(7, net("2001:db8:ffff::1/32"));
        assert_eq!(k.prefix_len(), 64 + 32);
        assert_eq!(
            k.data().addr,
            "2001:db8::".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    fn rule(id: u64, cgroups: &[u64], network: &str, action: KernelAction) -> KernelRule {
        KernelRule {
            id,
            cgroups: cgroups.to_vec(),
            network: net(network),
            action,
            exempt: Vec::new(),
        }
    }

    const THROTTLE: KernelAction = KernelAction::Throttle {
        bytes_per_sec: 1 << 20,
        burst_bytes: 1 << 16,
    };

    #[test]
    fn validation_refuses_what_the_kernel_could_not_hold_or_would_mix_up() {
        assert_eq!(
            validate(&[
                rule(1, &[10, 11], "127.0.0.66/32", THROTTLE),
                rule(2, &[10], "127.0.0.0/24", KernelAction::Block),
            ])
            .unwrap(),
            3
        );
        assert!(matches!(
            validate(&vec![rule(1, &[10], "127.0.0.66/32", THROTTLE); 2]),
            Err(EnforceError::DuplicateId { id: 1 })
        ));
        assert!(matches!(
            validate(&[rule(1, &[], "127.0.0.66/32", THROTTLE)]),
            Err(EnforceError::NoCgroups { id: 1 })
        ));
        // Host bits are ignored, so these two are the same key.
        assert!(matches!(
            validate(&[
                rule(1, &[10], "10.0.0.1/24", THROTTLE),
                rule(2, &[10], "10.0.0.2/24", KernelAction::Block),
            ]),
            Err(EnforceError::Overlap {
                id: 2,
                other: 1,
                cgroup: 10,
                ..
            })
        ));
        for (bytes_per_sec, burst_bytes) in [(0, 1), (CONTAIN_MAX_RATE + 1, 1), (1, 0)] {
            let action = KernelAction::Throttle {
                bytes_per_sec,
                burst_bytes,
            };
            assert!(validate(&[rule(1, &[10], "127.0.0.66/32", action)]).is_err());
        }
        let many: Vec<KernelRule> = (0..=u64::from(CONTAIN_BUCKETS_ENTRIES))
            .map(|i| rule(i, &[10], "127.0.0.66/32", KernelAction::Block))
            .collect();
        assert!(matches!(
            validate(&many),
            Err(EnforceError::TooManyRules { .. })
        ));
        let cgroups: Vec<u64> = (0..=u64::from(CONTAIN_RULES_ENTRIES)).collect();
        assert!(matches!(
            validate(&[rule(1, &cgroups, "127.0.0.66/32", THROTTLE)]),
            Err(EnforceError::TooManyKeys { .. })
        ));
    }

    #[test]
    fn exemptions_are_narrower_networks_inside_and_count_as_keys() {
        let mut r = rule(1, &[10, 11], "198.51.100.0/24", THROTTLE);
        r.exempt = vec![net("198.51.100.7/32"), net("198.51.100.9/32")];
        assert_eq!(
            validate(std::slice::from_ref(&r)).unwrap(),
            6,
            "3 keys x 2 cgroups"
        );
        // Another rule's network that is also an exemption stays that rule's (one key).
        let other = rule(2, &[10], "198.51.100.7/32", KernelAction::Block);
        assert_eq!(validate(&[r.clone(), other]).unwrap(), 6);
        for bad in ["198.51.101.7/32", "198.51.100.0/24", "198.51.0.0/16"] {
            r.exempt = vec![net(bad)];
            assert!(
                matches!(
                    validate(std::slice::from_ref(&r)),
                    Err(EnforceError::Exempt { id: 1, .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn set_action_writes_the_parameters() {
        let mut b = ContainBucket::default();
        set_action(&mut b, THROTTLE);
        assert_eq!(
            (b.action, b.rate_bytes_per_sec, b.burst_bytes),
            (CONTAIN_THROTTLE, 1 << 20, 1 << 16)
        );
        set_action(&mut b, KernelAction::Block);
        assert_eq!((b.action, b.rate_bytes_per_sec), (CONTAIN_BLOCK, 0));
    }
}

//! Types shared by the kernel programs (`monitor-ebpf`) and the agent (`monitor`).
//!
//! Every struct is `#[repr(C)]`, `Copy`, has its padding written out as explicit fields and a
//! compile-time size check, so both sides agree on the layout byte for byte.
#![no_std]
#![expect(
    clippy::pub_underscore_fields,
    reason = "padding is written out as public fields so both sides can build values"
)]

pub mod compat;
pub mod packet;

/// Per-(socket, destination) counters. Key [`FlowKey`], value [`FlowCounters`].
pub const FLOWS_MAP: &str = "FLOWS";
/// Owner of each socket, written by `cgroup/sock_create` (socket storage, cloned on accept).
pub const SOCK_OWNERS_MAP: &str = "SOCK_OWNERS";
/// Ring buffer of [`Event`]s (socket released, new process) for the agent.
pub const EVENTS_MAP: &str = "EVENTS";
/// LRU set of (tgid, comm) already announced with [`EVENT_NEW_PROCESS`].
pub const ANNOUNCED_MAP: &str = "ANNOUNCED";
/// Per-CPU array of program error counters, indexed by [`ProgError`].
pub const ERRORS_MAP: &str = "ERRORS";
/// Per-CPU array of bytes/packets that could not be kept per socket, indexed by [`Untracked`].
pub const UNTRACKED_MAP: &str = "UNTRACKED";
/// Ring buffer of [`DnsCapture`]s: DNS answers (UDP from port 53) received by local sockets.
pub const DNS_ANSWERS_MAP: &str = "DNS_ANSWERS";
/// LRU of UDP conversations by (local port, peer): who spoke first, as a `FLOW_*` direction.
pub const UDP_PEERS_MAP: &str = "UDP_PEERS";
/// LPM trie of containment rules: key [`ContainKey`] ((cgroup, peer prefix)), value the
/// rule's slot in `CONTAIN_BUCKETS` (u32).
pub const CONTAIN_RULES_MAP: &str = "CONTAIN_RULES";
/// Array of [`ContainBucket`]s (one per containment), indexed by the rules' slots.
pub const CONTAIN_BUCKETS_MAP: &str = "CONTAIN_BUCKETS";
/// One-entry array holding the [`ContainEpoch`].
pub const CONTAIN_EPOCH_MAP: &str = "CONTAIN_EPOCH";

/// Program names, as the agent looks them up in the object and `bpftool prog` shows them.
/// The egress program counts and enforces containment rules.
pub const PROG_EGRESS: &str = "count_egress";
/// `count_egress` with the fine clock, for kernels without `bpf_ktime_get_coarse_ns`.
pub const PROG_EGRESS_FINE_CLOCK: &str = "count_egress_ns";
/// `count_egress` without containment enforcement (always passes): for a kernel whose
/// verifier refuses the enforcing program.
pub const PROG_EGRESS_OBSERVE: &str = "observe_egress";
/// `count_egress_ns` without containment enforcement.
pub const PROG_EGRESS_FINE_CLOCK_OBSERVE: &str = "observe_egress_ns";
pub const PROG_SOCK_CREATE: &str = "record_owner";
pub const PROG_SOCK_RELEASE: &str = "report_release";
/// `cgroup_skb/ingress`: passive DNS and the first datagram of UDP conversations.
pub const PROG_INGRESS: &str = "watch_ingress";
/// `sockops`: marks TCP sockets as accepted from a listener or connecting out.
pub const PROG_TCP_DIRECTION: &str = "record_tcp_direction";

/// Default number of (socket, destination) entries the kernel can track at once.
pub const DEFAULT_MAX_FLOWS: u32 = 131_072;
/// Default size of the event ring buffer in bytes (a power of two, multiple of the page size).
pub const DEFAULT_EVENT_RING_BYTES: u32 = 1 << 20;
/// Processes remembered as already announced (LRU: the oldest are forgotten first).
pub const ANNOUNCED_ENTRIES: u32 = 16_384;
/// Size of the DNS answer ring buffer in bytes (a power of two, multiple of the page size):
/// room for about 1,000 answers between two reads by the agent.
pub const DNS_RING_BYTES: u32 = 1 << 19;
/// Bytes of a DNS answer's UDP payload copied into a [`DnsCapture`]: the classic DNS-over-UDP
/// maximum. Header, question and answer sections come first in a message, so a longer answer
/// (EDNS) cut here still carries its first addresses; the agent reads what fits.
pub const DNS_CAPTURE_BYTES: usize = 512;
/// UDP source port of the packets the DNS program copies.
pub const DNS_PORT: u16 = 53;
/// UDP conversations whose first speaker is remembered (LRU: a flood of datagrams from forged
/// peers only evicts the oldest; the map never grows). About 5 MiB of kernel memory,
/// preallocated.
pub const UDP_PEERS_ENTRIES: u32 = 65_536;

/// Rules in `CONTAIN_RULES` (one per (containment, cgroup)).
pub const CONTAIN_RULES_ENTRIES: u32 = 1024;
/// Slots of `CONTAIN_BUCKETS`: containments active at once. At most 255, so that a flow can
/// keep its slot + 1 in the one byte `FlowCounters::contain_slot`.
pub const CONTAIN_BUCKETS_ENTRIES: u32 = 255;
/// A `CONTAIN_RULES` value that is no slot: the longest match for the key's addresses finds
/// no containment (a prefix's known peers, exempted). The egress and ingress programs take
/// every value >= [`CONTAIN_BUCKETS_ENTRIES`] as "not contained".
pub const CONTAIN_EXEMPT: u32 = u32::MAX;
/// Prefix bits of a [`ContainKey`] that hold the cgroup id: always matched exactly.
pub const CONTAIN_CGROUP_BITS: u32 = 64;

/// `ContainBucket::action`: the slot is free; a flow that still points at it passes.
pub const CONTAIN_NONE: u32 = 0;
/// `ContainBucket::action`: token bucket of `rate_bytes_per_sec` and `burst_bytes`.
pub const CONTAIN_THROTTLE: u32 = 1;
/// `ContainBucket::action`: drop every packet to (and, on ingress, from) the peer.
pub const CONTAIN_BLOCK: u32 = 2;

/// `ContainBucket::flags`: a throttled packet that does not fit is dropped *without*
/// congestion notification (verdict 0 instead of 2). For measurements; not the default.
pub const CONTAIN_F_PLAIN_DROP: u32 = 1;

/// `FlowKey::protocol` values (IANA protocol numbers).
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// `SockOwner::flags`: the owner fields were filled by `cgroup/sock_create`.
pub const OWNER_FROM_SOCK_CREATE: u32 = 1;
/// `SockOwner::flags`: the egress program saw this socket send (release events are only sent
/// for such sockets, so closing sockets that never sent cost nothing).
pub const OWNER_HAS_FLOWS: u32 = 2;
/// `SockOwner::flags`: a TCP socket accepted from a local listener (set by the `sockops`
/// program when the handshake completes, on the accepted socket's own storage).
pub const OWNER_PASSIVE: u32 = 4;
/// `SockOwner::flags`: a TCP socket that connected out (set by the `sockops` program before
/// its SYN leaves, or by the egress program when that SYN is the socket's first packet).
pub const OWNER_ACTIVE: u32 = 8;

/// `FlowCounters::direction`: the kernel could not tell (a socket older than the agent, a
/// program missing, a protocol without conversations).
pub const FLOW_DIRECTION_UNKNOWN: u8 = 0;
/// `FlowCounters::direction`: the peer came first (a TCP connection accepted from a local
/// listener; a UDP datagram received on a local port before the host sent to that peer).
pub const FLOW_SERVED: u8 = 1;
/// `FlowCounters::direction`: the host went first (it connected out, or sent the first
/// datagram).
pub const FLOW_INITIATED: u8 = 2;

/// TCP header flags the direction is read from.
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// Direction told by the flags of a TCP flow's first packet, for sockets whose storage does
/// not say: a SYN alone opens a connection (initiated), a SYN-ACK answers one (served; the
/// kernel sends SYN-ACKs with the listener as the socket). Anything else is a connection the
/// agent did not see start.
pub const fn direction_of_first_tcp_packet(flags: u8) -> u8 {
    match flags & (TCP_SYN | TCP_ACK) {
        TCP_SYN => FLOW_INITIATED,
        f if f == TCP_SYN | TCP_ACK => FLOW_SERVED,
        _ => FLOW_DIRECTION_UNKNOWN,
    }
}

/// Direction recorded in a socket's `SockOwner::flags` (`OWNER_PASSIVE` first: an accepted
/// socket starts with a copy of its listener's flags).
pub const fn direction_of_owner_flags(flags: u32) -> u8 {
    if flags & OWNER_PASSIVE != 0 {
        FLOW_SERVED
    } else if flags & OWNER_ACTIVE != 0 {
        FLOW_INITIATED
    } else {
        FLOW_DIRECTION_UNKNOWN
    }
}

/// Identifies one flow: one socket (by cookie) talking to one destination.
///
/// Connected sockets have exactly one destination; an unconnected UDP socket gets one entry per
/// destination it sends to, so a new peer of a long-lived socket is still seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Socket cookie (`bpf_get_socket_cookie`), unique per socket for the life of the kernel.
    pub cookie: u64,
    /// Destination address. IPv4 is stored v4-mapped (`::ffff:a.b.c.d`).
    pub remote_addr: [u8; 16],
    /// Destination port in host byte order (0 when the protocol has no ports).
    pub remote_port: u16,
    /// IANA protocol number of the packet (6 TCP, 17 UDP, others as seen).
    pub protocol: u8,
    /// IP version of the packet on the wire: 4 or 6.
    pub ip_version: u8,
    pub _pad: u32,
}
const _: () = assert!(size_of::<FlowKey>() == 32);

/// Who created a socket: filled in `cgroup/sock_create` from the creating task.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOwner {
    /// Process id (kernel tgid).
    pub tgid: u32,
    /// Thread id (kernel pid) of the creating thread.
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id of the creating task.
    pub cgroup_id: u64,
    /// `OWNER_*` flags.
    pub flags: u32,
    pub _pad: u32,
    /// Task command name, NUL padded.
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<SockOwner>() == 48);

impl SockOwner {
    pub const EMPTY: Self = Self {
        tgid: 0,
        pid: 0,
        uid: 0,
        gid: 0,
        cgroup_id: 0,
        flags: 0,
        _pad: 0,
        comm: [0; 16],
    };

    pub const fn is_known(&self) -> bool {
        self.flags & OWNER_FROM_SOCK_CREATE != 0
    }
}

/// Counters of one flow, plus what is known of it when its first packet was seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowCounters {
    /// IP-level bytes (IP header included), summed over all CPUs with atomic adds.
    pub bytes: u64,
    /// Packets; a GSO/TSO super-packet counts as the number of segments it becomes.
    pub packets: u64,
    /// `bpf_ktime_get_ns` of the first packet (`CLOCK_MONOTONIC`). Also the entry's generation:
    /// a re-created entry for the same key has a different value.
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_coarse_ns` of the latest packet (`CLOCK_MONOTONIC`, jiffy resolution;
    /// the coarse clock costs next to nothing per packet). A plain store: with several CPUs
    /// the last writer wins, which is as recent as any.
    pub last_seen_ns: u64,
    /// cgroup v2 id of the socket (`bpf_skb_cgroup_id`).
    pub cgroup_id: u64,
    /// Source address of the first packet (v4-mapped for IPv4).
    pub local_addr: [u8; 16],
    /// Source port in host byte order.
    pub local_port: u16,
    /// Who opened the conversation, decided when the flow's first packet is seen: a
    /// `FLOW_*` value.
    pub direction: u8,
    /// The containment that applies to the flow: its `CONTAIN_BUCKETS` slot + 1, or 0 for
    /// none. Valid for the rules of `contain_epoch`.
    pub contain_slot: u8,
    /// `ContainEpoch::epoch` when the flow last looked its rules up (0: never, and there were
    /// no rules). The egress program looks the rules up again only when the epoch changed.
    pub contain_epoch: u32,
    /// Copy of the socket's owner at the time of the first packet (`EMPTY` if unknown).
    pub owner: SockOwner,
}
const _: () = assert!(size_of::<FlowCounters>() == 112);
// The direction took one byte of the padding after `local_port`, the containment state the
// rest of it (`contain_slot` the byte at 59, `contain_epoch` the word at 60): every other
// field keeps its offset, so a kernel object and an agent of different versions still read
// each other (an older object leaves the two zero: "no containment").
const _: () = assert!(core::mem::offset_of!(FlowCounters, local_port) == 56);
const _: () = assert!(core::mem::offset_of!(FlowCounters, direction) == 58);
const _: () = assert!(core::mem::offset_of!(FlowCounters, contain_slot) == 59);
const _: () = assert!(core::mem::offset_of!(FlowCounters, contain_epoch) == 60);
const _: () = assert!(core::mem::offset_of!(FlowCounters, owner) == 64);
const _: () = assert!(core::mem::offset_of!(UdpPeerKey, local_port) == 18);

/// Key of `UDP_PEERS`: one UDP conversation seen from this host. Keyed by the local port, not
/// the socket: a server may answer from another socket bound to the same port (`SO_REUSEPORT`
/// groups, a socket connected per client).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpPeerKey {
    /// The peer's address, v4-mapped for IPv4.
    pub remote_addr: [u8; 16],
    /// The peer's port, host byte order.
    pub remote_port: u16,
    /// The local port, host byte order.
    pub local_port: u16,
    pub _pad: u32,
}
const _: () = assert!(size_of::<UdpPeerKey>() == 24);

/// Data of a `CONTAIN_RULES` key, after the prefix length (`aya`'s LPM `Key<ContainKey>`).
/// The prefix length is [`CONTAIN_CGROUP_BITS`] + the address prefix bits (IPv4 prefixes
/// counted on the v4-mapped address: a /24 is 64 + 96 + 24), so the cgroup always matches
/// exactly and the address by prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContainKey {
    /// cgroup v2 id in the host's byte order (all 64 bits are always matched, so the order
    /// does not matter as long as both sides use the same one).
    pub cgroup_id: [u8; 8],
    /// The peer's address, v4-mapped for IPv4 (`::ffff:a.b.c.d`), network order.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<ContainKey>() == 24);

impl ContainKey {
    pub const fn new(cgroup_id: u64, addr: [u8; 16]) -> Self {
        Self {
            cgroup_id: cgroup_id.to_ne_bytes(),
            addr,
        }
    }
}

/// `struct bpf_spin_lock` as the kernel knows it (by this very name in BTF): the kernel finds
/// the lock of a map value by the name of its type. Userspace leaves it zero; the kernel
/// never copies it in or out of the map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
// The kernel looks the lock up by this BTF name (`allow`: the lint does not fire in every
// build of this crate, so an `expect` would be unfulfilled in some).
#[allow(non_camel_case_types)]
pub struct bpf_spin_lock {
    pub val: u32,
}

/// One containment's state (`CONTAIN_BUCKETS` value). The egress program updates `tokens`,
/// `last_refill_ns` and the counters under `lock`; the agent writes the parameters when it
/// creates or changes the rule and reads the counters.
///
/// Throttle: a token bucket. Tokens refill at `rate_bytes_per_sec` up to `burst_bytes`; a
/// packet passes when the bucket holds at least its length (or, for a packet longer than the
/// burst, when the bucket is full) and takes its length (the balance may go below zero after
/// such a packet: the average rate stays exact); otherwise it is dropped with congestion
/// notification (TCP reduces its window at once).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainBucket {
    pub lock: bpf_spin_lock,
    /// `CONTAIN_*` action.
    pub action: u32,
    /// Throttle rate (at most [`CONTAIN_MAX_RATE`]).
    pub rate_bytes_per_sec: u64,
    /// Bucket size.
    pub burst_bytes: u64,
    /// Bytes that may leave now (signed: a packet longer than the burst leaves a debt).
    pub tokens: i64,
    /// `bpf_ktime_get_*ns` of the last refill (0: never; the first packet finds it full).
    pub last_refill_ns: u64,
    /// IP bytes and packets (GSO segments) dropped, by either program.
    pub dropped_bytes: u64,
    pub dropped_packets: u64,
    /// IP bytes and packets of the rule's flows that passed.
    pub passed_bytes: u64,
    pub passed_packets: u64,
    /// The containment's id (the agent's), for the record.
    pub rule_id: u64,
    /// `CONTAIN_F_*`.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ContainBucket>() == 88);
const _: () = assert!(core::mem::offset_of!(ContainBucket, rate_bytes_per_sec) == 8);

/// Highest throttle rate: the refill `elapsed_ns * rate` (elapsed capped at
/// [`CONTAIN_MAX_REFILL_NS`]) must fit in a u64.
pub const CONTAIN_MAX_RATE: u64 = 4_000_000_000;
/// Longest interval one refill counts (4 s): a bucket idle for longer refills as if idle 4 s.
pub const CONTAIN_MAX_REFILL_NS: u64 = 4_000_000_000;
const _: () = assert!(
    CONTAIN_MAX_RATE
        .checked_mul(CONTAIN_MAX_REFILL_NS)
        .is_some()
);

/// `CONTAIN_EPOCH` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainEpoch {
    /// Bumped by the agent on every change of the rules (0: there never were any).
    pub epoch: u32,
    /// Block rules in force: the ingress program looks rules up only when this is not 0.
    pub blocks: u32,
}
const _: () = assert!(size_of::<ContainEpoch>() == 8);

/// `Event::kind`: a socket that had flows was released (`cgroup/sock_release`).
pub const EVENT_RELEASED: u32 = 1;
/// `Event::kind`: a process (tgid, comm) created its first socket since it was last announced
/// (`cgroup/sock_create`). The agent reads its /proc entry at once, so even a process that
/// exits right after sending is reported with its executable and command line.
pub const EVENT_NEW_PROCESS: u32 = 2;

/// One message of the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `EVENT_*`.
    pub kind: u32,
    /// Process id: the new process (`EVENT_NEW_PROCESS`), or the one that closed the socket
    /// (`EVENT_RELEASED`; 0 when released outside a process, e.g. by the kernel).
    pub tgid: u32,
    /// Socket cookie (for `EVENT_RELEASED`).
    pub cookie: u64,
    /// `bpf_ktime_get_ns` when it happened.
    pub ts_ns: u64,
}
const _: () = assert!(size_of::<Event>() == 24);

/// One message of the `DNS_ANSWERS` ring buffer: the start of a DNS answer's UDP payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsCapture {
    /// UDP payload length on the wire (may exceed [`DNS_CAPTURE_BYTES`]).
    pub len: u16,
    /// Bytes of `data` filled: `min(len, DNS_CAPTURE_BYTES)`.
    pub captured: u16,
    pub _pad: u32,
    pub data: [u8; DNS_CAPTURE_BYTES],
}
const _: () = assert!(size_of::<DnsCapture>() == 8 + DNS_CAPTURE_BYTES);

impl DnsCapture {
    /// The copied bytes (never more than `data` holds, whatever `captured` says).
    pub fn payload(&self) -> &[u8] {
        let n = usize::from(self.captured).min(DNS_CAPTURE_BYTES);
        &self.data[..n]
    }

    /// True when the answer was longer than what was copied.
    pub const fn is_cut(&self) -> bool {
        self.len > self.captured
    }
}

/// Key of `ANNOUNCED`: a process and its name (a new program exec'd under the same pid, or a
/// re-used pid, usually has another name and is announced again).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessKey {
    pub tgid: u32,
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<ProcessKey>() == 20);

/// Indices of the per-CPU `ERRORS` array. Each counts events, never silently drops them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgError {
    /// The flow table was full: the packet went to `Untracked::MapFull`.
    MapFull = 0,
    /// The packet had no socket or no full socket: counted in `Untracked`.
    NoSocket = 1,
    /// The IP/transport header could not be read or was not IP.
    Parse = 2,
    /// The release ring buffer was full: the agent falls back to idle expiry.
    RingFull = 3,
    /// Socket storage could not be created for a new socket (memory pressure).
    StorageFull = 4,
    /// The DNS answer ring buffer was full: that answer's names are missing.
    DnsRingFull = 5,
    /// `watch_ingress`: a packet reaching a local socket had unreadable IP/UDP headers, or a
    /// DNS answer was empty or its payload could not be copied.
    DnsParse = 6,
}

impl ProgError {
    pub const COUNT: u32 = 7;
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::MapFull,
        Self::NoSocket,
        Self::Parse,
        Self::RingFull,
        Self::StorageFull,
        Self::DnsRingFull,
        Self::DnsParse,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::MapFull => "map_full",
            Self::NoSocket => "no_socket",
            Self::Parse => "parse",
            Self::RingFull => "ring_full",
            Self::StorageFull => "storage_full",
            Self::DnsRingFull => "dns_ring_full",
            Self::DnsParse => "dns_parse",
        }
    }
}

/// Indices of the per-CPU `UNTRACKED` array: bytes that are counted but not per socket.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Untracked {
    /// The flow table was full.
    MapFull = 0,
    /// Packet from a request/timewait socket (SYN-ACK, late ACKs) or without a socket.
    NoFullSocket = 1,
    /// Not IPv4/IPv6 or headers unreadable.
    Unparsed = 2,
}

impl Untracked {
    pub const COUNT: u32 = 3;
    pub const ALL: [Self; Self::COUNT as usize] =
        [Self::MapFull, Self::NoFullSocket, Self::Unparsed];

    pub const fn name(self) -> &'static str {
        match self {
            Self::MapFull => "map_full",
            Self::NoFullSocket => "no_full_socket",
            Self::Unparsed => "unparsed",
        }
    }
}

/// Bytes and packets of one `UNTRACKED` slot (per CPU; the agent sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Volume {
    pub bytes: u64,
    pub packets: u64,
}
const _: () = assert!(size_of::<Volume>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these types are repr(C), Copy, have no padding left implicit and no invalid
    // bit patterns.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowCounters {}
    unsafe impl aya::Pod for super::SockOwner {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::ProcessKey {}
    unsafe impl aya::Pod for super::Volume {}
    unsafe impl aya::Pod for super::DnsCapture {}
    unsafe impl aya::Pod for super::UdpPeerKey {}
    unsafe impl aya::Pod for super::ContainKey {}
    unsafe impl aya::Pod for super::ContainBucket {}
    unsafe impl aya::Pod for super::ContainEpoch {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent reads `ERRORS` by index: an index, once given, never moves.
    #[test]
    fn error_indices_are_stable() {
        for (i, err) in ProgError::ALL.iter().enumerate() {
            assert_eq!(*err as usize, i, "{}", err.name());
        }
        assert_eq!(ProgError::StorageFull as u32, 4);
        assert_eq!(ProgError::DnsRingFull as u32, 5);
        assert_eq!(ProgError::DnsParse as u32, 6);
    }

    #[test]
    fn flow_counters_layout_is_stable() {
        use core::mem::{align_of, offset_of};
        assert_eq!(size_of::<FlowCounters>(), 112);
        assert_eq!(align_of::<FlowCounters>(), 8);
        assert_eq!(offset_of!(FlowCounters, bytes), 0);
        assert_eq!(offset_of!(FlowCounters, cgroup_id), 32);
        assert_eq!(offset_of!(FlowCounters, local_addr), 40);
        assert_eq!(offset_of!(FlowCounters, local_port), 56);
        assert_eq!(offset_of!(FlowCounters, direction), 58);
        assert_eq!(offset_of!(FlowCounters, contain_slot), 59);
        assert_eq!(offset_of!(FlowCounters, contain_epoch), 60);
        assert_eq!(offset_of!(FlowCounters, owner), 64);
        // The values stay distinct and 0 is "unknown", what an older kernel object leaves
        // in the byte (its padding, written as zero).
        assert_eq!(FLOW_DIRECTION_UNKNOWN, 0);
        assert_ne!(FLOW_SERVED, FLOW_INITIATED);
        assert_eq!(size_of::<UdpPeerKey>(), 24);
        assert_eq!(offset_of!(UdpPeerKey, remote_port), 16);
        assert_eq!(offset_of!(UdpPeerKey, local_port), 18);
    }

    #[test]
    fn containment_layouts_are_stable() {
        use core::mem::offset_of;
        assert_eq!(size_of::<ContainKey>(), 24);
        assert_eq!(offset_of!(ContainKey, addr), 8);
        assert_eq!(size_of::<ContainBucket>(), 88);
        assert_eq!(offset_of!(ContainBucket, lock), 0);
        assert_eq!(offset_of!(ContainBucket, tokens), 24);
        assert_eq!(offset_of!(ContainBucket, rule_id), 72);
        // A flow keeps its slot + 1 in one byte.
        const { assert!(CONTAIN_BUCKETS_ENTRIES < 256) };
        assert_eq!(ContainKey::new(7, [0; 16]).cgroup_id, 7u64.to_ne_bytes());
    }

    #[test]
    fn first_tcp_packet_tells_the_direction() {
        assert_eq!(direction_of_first_tcp_packet(TCP_SYN), FLOW_INITIATED);
        // ECN bits beside the SYN (0x40 ECE, 0x80 CWR) do not change it.
        assert_eq!(
            direction_of_first_tcp_packet(TCP_SYN | 0xc0),
            FLOW_INITIATED
        );
        assert_eq!(
            direction_of_first_tcp_packet(TCP_SYN | TCP_ACK),
            FLOW_SERVED
        );
        assert_eq!(
            direction_of_first_tcp_packet(TCP_ACK),
            FLOW_DIRECTION_UNKNOWN
        );
        // PSH-ACK: data of a connection that was open before the flow was seen.
        assert_eq!(direction_of_first_tcp_packet(0x18), FLOW_DIRECTION_UNKNOWN);
        assert_eq!(direction_of_first_tcp_packet(0), FLOW_DIRECTION_UNKNOWN);
    }

    #[test]
    fn owner_flags_tell_the_direction() {
        assert_eq!(
            direction_of_owner_flags(OWNER_FROM_SOCK_CREATE),
            FLOW_DIRECTION_UNKNOWN
        );
        assert_eq!(
            direction_of_owner_flags(OWNER_FROM_SOCK_CREATE | OWNER_HAS_FLOWS | OWNER_PASSIVE),
            FLOW_SERVED
        );
        assert_eq!(direction_of_owner_flags(OWNER_ACTIVE), FLOW_INITIATED);
        // Accepted from a listener that had once connected out: accepted wins.
        assert_eq!(
            direction_of_owner_flags(OWNER_ACTIVE | OWNER_PASSIVE),
            FLOW_SERVED
        );
    }

    #[test]
    fn dns_capture_payload_never_exceeds_the_buffer() {
        let mut c = DnsCapture {
            len: 600,
            captured: 600, // a lie: the payload is still bounded by the buffer
            _pad: 0,
            data: [7; DNS_CAPTURE_BYTES],
        };
        assert_eq!(c.payload().len(), DNS_CAPTURE_BYTES);
        c.captured = 12;
        assert_eq!(c.payload(), &[7; 12]);
        assert!(c.is_cut());
    }
}

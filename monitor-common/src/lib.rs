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

/// Program names, as the agent looks them up in the object and `bpftool prog` shows them.
pub const PROG_EGRESS: &str = "count_egress";
/// `count_egress` with the fine clock, for kernels without `bpf_ktime_get_coarse_ns`.
pub const PROG_EGRESS_FINE_CLOCK: &str = "count_egress_ns";
pub const PROG_SOCK_CREATE: &str = "record_owner";
pub const PROG_SOCK_RELEASE: &str = "report_release";
pub const PROG_DNS: &str = "capture_dns";

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

/// `FlowKey::protocol` values (IANA protocol numbers).
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// `SockOwner::flags`: the owner fields were filled by `cgroup/sock_create`.
pub const OWNER_FROM_SOCK_CREATE: u32 = 1;
/// `SockOwner::flags`: the egress program saw this socket send (release events are only sent
/// for such sockets, so closing sockets that never sent cost nothing).
pub const OWNER_HAS_FLOWS: u32 = 2;

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
    pub _pad0: u16,
    pub _pad1: u32,
    /// Copy of the socket's owner at the time of the first packet (`EMPTY` if unknown).
    pub owner: SockOwner,
}
const _: () = assert!(size_of::<FlowCounters>() == 112);

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
    /// Process id (for `EVENT_NEW_PROCESS`).
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
    /// `capture_dns`: a packet reaching a local socket had unreadable IP/UDP headers, or a
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

//! `cgroup_skb/egress`: count every packet a socket sends, per (socket cookie, destination),
//! and return the containment verdict ([`contain`]).
//!
//! Fast path (an existing flow): one hash lookup and two atomic adds, then the rules' epoch
//! (an inlined array load) compared with the flow's: only a flow whose epoch is stale looks
//! the rules up, only a contained flow takes its bucket's lock. The slow path (first packet
//! of a flow) copies the socket owner and endpoints into the new entry once, and looks the
//! rules up there when any were ever set.
//!
//! The fast path stamps `last_seen_ns` with the coarse clock (`bpf_ktime_get_coarse_ns`,
//! Linux 5.11: the tick's time, no clock source read). Kernels before it get the same code
//! stamped with `bpf_ktime_get_ns` ([`FINE_CLOCK`]), built as a second program that the
//! agent loads only when the kernel refuses the first.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, BPF_NOEXIST, bpf_sock},
    helpers::generated::{
        bpf_get_socket_cookie, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_sk_fullsock,
        bpf_skb_cgroup_id,
    },
    programs::SkBuffContext,
};
use monitor_common::{
    FLOW_DIRECTION_UNKNOWN, FlowCounters, FlowKey, IPPROTO_TCP, IPPROTO_UDP, OWNER_HAS_FLOWS,
    ProgError, SockOwner, Untracked,
    packet::{self, AddrWords, Endpoints, addr_bytes, is_v4_mapped_words, v4_mapped_words},
};

use crate::{
    contain,
    counters::{atomic_add, count_error, count_untracked},
    maps::{FLOWS, NEW_FLOW, SOCK_OWNERS},
    skb_bytes::SkbBytes,
    tcp_direction, udp_direction,
};

const AF_INET: u32 = 2;
/// `-EEXIST`: another CPU inserted the same flow between our lookup and insert.
const EEXIST: i32 = -17;

/// `count::<FINE_CLOCK, _>`: the program for kernels without the coarse clock helper.
pub const FINE_CLOCK: bool = true;
/// `count::<_, ENFORCE>`: the program applies containment verdicts. Without it (for a
/// kernel whose verifier refuses them) it counts and always passes.
pub const ENFORCE: bool = true;

/// The time `last_seen_ns` gets: both helpers read `CLOCK_MONOTONIC`.
#[inline(always)]
fn now<const FINE: bool>() -> u64 {
    // SAFETY: helpers without arguments.
    unsafe {
        if FINE {
            bpf_ktime_get_ns()
        } else {
            bpf_ktime_get_coarse_ns()
        }
    }
}

/// Counts the packet; returns its verdict (always "pass" without `ENFORCE`).
#[inline(always)]
pub fn count<const FINE: bool, const ENFORCE: bool>(ctx: &SkBuffContext) -> i32 {
    let skb: *mut __sk_buff = ctx.as_ptr().cast();
    // SAFETY: `skb` is the program's context; field reads are rewritten by the verifier.
    let (len, gso_segs, sk) = unsafe { ((*skb).len, (*skb).gso_segs, (*skb).__bindgen_anon_2.sk) };
    let bytes = u64::from(len);
    // A GSO/TSO super-packet leaves the host as `gso_segs` packets.
    let packets = u64::from(if gso_segs > 1 { gso_segs } else { 1 });

    // SAFETY: `sk` comes from the context and is checked for NULL (the verifier insists).
    let sk = if sk.is_null() {
        sk
    } else {
        unsafe { bpf_sk_fullsock(sk) }
    };
    if sk.is_null() {
        // Request sockets (SYN-ACK) and timewait sockets carry no payload and no owner.
        count_error(ctx, ProgError::NoSocket);
        count_untracked(Untracked::NoFullSocket, bytes, packets);
        return contain::PASS;
    }
    let Some((key, local_addr, local_port)) = flow_key(ctx, sk) else {
        count_error(ctx, ProgError::Parse);
        count_untracked(Untracked::Unparsed, bytes, packets);
        return contain::PASS;
    };

    if let Some(flow) = FLOWS.get_ptr_mut(&key) {
        return add::<FINE, ENFORCE>(flow, &key, bytes, packets);
    }
    insert::<FINE, ENFORCE>(ctx, sk, &key, (local_addr, local_port), bytes, packets)
}

/// Counts a packet of an existing flow; returns its verdict.
#[inline(always)]
fn add<const FINE: bool, const ENFORCE: bool>(
    flow: *mut FlowCounters,
    key: &FlowKey,
    bytes: u64,
    packets: u64,
) -> i32 {
    let now = now::<FINE>();
    let verdict = if ENFORCE {
        let slot = contain::slot_of_flow(flow, &key.remote_addr);
        contain::egress_verdict(slot, bytes, packets, now)
    } else {
        contain::PASS
    };
    counted(flow, bytes, packets, now, verdict)
}

/// Adds a packet that leaves to its flow: a packet the containment dropped never left the
/// host (its bucket counts it), and TCP sends it again, which counts then. Returns `verdict`.
#[inline(always)]
fn counted(flow: *mut FlowCounters, bytes: u64, packets: u64, now: u64, verdict: i32) -> i32 {
    // SAFETY: `flow` points into a live FLOWS value (RCU protects it for this program run).
    unsafe {
        if verdict == contain::PASS {
            atomic_add(&raw mut (*flow).bytes, bytes);
            atomic_add(&raw mut (*flow).packets, packets);
        }
        (*flow).last_seen_ns = now;
    }
    verdict
}

/// Builds the flow key. TCP sockets are always connected: the destination is read from the
/// socket (no packet parsing). UDP and raw sockets may send anywhere (even a connected UDP
/// socket accepts `sendto` to another address), so their packet headers are parsed.
/// Addresses move as 32-bit words ([`AddrWords`]), never as bytes: see `read_words`.
#[inline(always)]
fn flow_key(ctx: &SkBuffContext, sk: *mut bpf_sock) -> Option<(FlowKey, AddrWords, u16)> {
    // SAFETY: `sk` is a full socket returned by bpf_sk_fullsock.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let (protocol, family, dst_port) = unsafe {
        (
            field(&raw const (*sk).protocol),
            field(&raw const (*sk).family),
            field(&raw const (*sk).dst_port),
        )
    };
    let ends = if protocol == u32::from(IPPROTO_TCP) && dst_port != 0 {
        tcp_endpoints(sk, family, dst_port)
    } else {
        // SAFETY: context field read.
        let ethertype =
            u16::from_be(unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).protocol } as u16);
        packet::parse(&SkbBytes(ctx), ethertype).ok()?
    };
    Some((
        FlowKey {
            cookie,
            remote_addr: addr_bytes(ends.dst_addr),
            remote_port: ends.dst_port,
            protocol: ends.protocol,
            ip_version: ends.ip_version,
            _pad: 0,
        },
        ends.src_addr,
        ends.src_port,
    ))
}

#[inline(always)]
fn tcp_endpoints(sk: *mut bpf_sock, family: u32, dst_port: u16) -> Endpoints {
    // SAFETY: full socket; each read is one whole-field load the verifier can rewrite.
    // Both families' fields are read whatever the family (an AF_INET socket's IPv6 fields
    // read as whatever the socket holds there, and are not used): loads chosen by a branch
    // get merged by the optimiser into one load at a computed offset, which the verifier
    // refuses on a socket pointer.
    let (src4, dst4, src6, dst6, src_port) = unsafe {
        (
            field(&raw const (*sk).src_ip4),
            field(&raw const (*sk).dst_ip4),
            ip6_field(&raw const (*sk).src_ip6),
            ip6_field(&raw const (*sk).dst_ip6),
            field(&raw const (*sk).src_port) as u16,
        )
    };
    let (src_addr, dst_addr) = if family == AF_INET {
        (v4_mapped_words(src4), v4_mapped_words(dst4))
    } else {
        (src6, dst6)
    };
    // An AF_INET6 socket talking to a v4-mapped peer sends IPv4 on the wire.
    let ip_version = if is_v4_mapped_words(&dst_addr) { 4 } else { 6 };
    Endpoints {
        ip_version,
        protocol: IPPROTO_TCP,
        src_addr,
        dst_addr,
        src_port,
        dst_port: u16::from_be(dst_port),
    }
}

/// Reads a `bpf_sock` field with exactly one load of its own size. The verifier only accepts
/// whole-field loads at constant offsets from a socket pointer; a plain read can be split or
/// turned into pointer arithmetic by the optimiser.
#[inline(always)]
unsafe fn field<T: Copy>(p: *const T) -> T {
    // SAFETY: the caller passes a field of a verifier-checked socket pointer.
    unsafe { core::ptr::read_volatile(p) }
}

#[inline(always)]
unsafe fn ip6_field(p: *const [u32; 4]) -> [u32; 4] {
    let p = p.cast::<u32>();
    // SAFETY: four u32 loads within the field.
    unsafe { [field(p), field(p.add(1)), field(p.add(2)), field(p.add(3))] }
}

/// First packet of a flow: create its entry with the owner, endpoints, direction and
/// containment; returns the packet's verdict.
#[inline(always)]
fn insert<const FINE: bool, const ENFORCE: bool>(
    ctx: &SkBuffContext,
    sk: *mut bpf_sock,
    key: &FlowKey,
    (local_addr, local_port): (AddrWords, u16),
    bytes: u64,
    packets: u64,
) -> i32 {
    // SAFETY: the helper takes the program's own context.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast()) };
    // The rules are looked up once here, and again only when the agent changes them.
    let (contain_slot, contain_epoch) = if ENFORCE {
        let epoch = contain::epoch().epoch;
        let slot = if epoch == 0 {
            0
        } else {
            contain::lookup(cgroup_id, &key.remote_addr)
        };
        (slot, epoch)
    } else {
        (0, 0)
    };
    // The packet's verdict first: only what leaves is counted.
    let verdict = if ENFORCE {
        contain::egress_verdict(contain_slot, bytes, packets, now::<FINE>())
    } else {
        contain::PASS
    };
    let (bytes, packets) = if verdict == contain::PASS {
        (bytes, packets)
    } else {
        (0, 0)
    };
    // The new value is assembled in a per-CPU scratch slot: its 112 bytes on the 512-byte
    // BPF stack would leave no room for the parser's buffers and the log call's frame.
    let Some(value) = NEW_FLOW.get_ptr_mut(0) else {
        count_untracked(Untracked::MapFull, bytes, packets);
        return verdict;
    };
    let stored = mark_has_flows(ctx, sk);
    // SAFETY: non-null storage pointer owned by this socket.
    let owner_known = !stored.is_null() && unsafe { (*stored).is_known() };
    let direction = match key.protocol {
        IPPROTO_TCP => tcp_direction::of_new_flow(ctx, stored),
        IPPROTO_UDP => udp_direction::of_new_flow(key, local_port, owner_known),
        _ => FLOW_DIRECTION_UNKNOWN,
    };
    // Copied after the direction: its flags include a mark the direction may have added.
    let owner = if stored.is_null() {
        SockOwner::EMPTY
    } else {
        // SAFETY: as above.
        unsafe { *stored }
    };
    // SAFETY: `value` is this CPU's scratch slot (the program is not preempted); the helpers
    // take the program's own context.
    // SAFETY: the helper takes no argument.
    let now = unsafe { bpf_ktime_get_ns() };
    let value: &FlowCounters = unsafe {
        (*value).bytes = bytes;
        (*value).packets = packets;
        (*value).first_seen_ns = now;
        (*value).last_seen_ns = now;
        (*value).cgroup_id = cgroup_id;
        (*value).local_addr = addr_bytes(local_addr);
        (*value).local_port = local_port;
        (*value).direction = direction;
        (*value).contain_slot = contain_slot;
        (*value).contain_epoch = contain_epoch;
        (*value).owner = owner;
        &*value
    };
    match FLOWS.insert(key, value, u64::from(BPF_NOEXIST)) {
        Ok(()) => verdict,
        Err(EEXIST) => {
            // Another CPU created it first: add to theirs (the verdict is this packet's).
            match FLOWS.get_ptr_mut(key) {
                Some(flow) => counted(flow, bytes, packets, now, verdict),
                None => verdict,
            }
        }
        Err(_) => {
            // Table full (-E2BIG) or out of memory: keep the bytes, lose only the detail. The
            // rules still apply: a blocked peer stays blocked when the table is full.
            count_error(ctx, ProgError::MapFull);
            count_untracked(Untracked::MapFull, bytes, packets);
            verdict
        }
    }
}

/// Flags the socket's storage so `sock_release` reports its closing, and returns it (NULL
/// when it could not be created). Sockets created before the agent started have no storage
/// yet: it is created empty (owner unknown, the agent attributes them through `sock_diag`)
/// just to carry the flag.
#[inline(always)]
fn mark_has_flows(ctx: &SkBuffContext, sk: *mut bpf_sock) -> *mut SockOwner {
    let mut init = SockOwner::EMPTY;
    let stored = SOCK_OWNERS.get(sk.cast(), Some(&mut init));
    if stored.is_null() {
        count_error(ctx, ProgError::StorageFull);
    } else {
        // SAFETY: non-null storage pointer owned by this socket.
        unsafe { (*stored).flags |= OWNER_HAS_FLOWS };
    }
    stored
}

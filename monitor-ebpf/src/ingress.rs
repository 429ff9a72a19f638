//! `cgroup_skb/ingress`: what the agent learns from packets that reach local sockets. One
//! header parse per packet feeds both uses: DNS answers for the name table ([`dns`]) and the
//! first datagram of UDP conversations for their direction ([`udp_direction`]).
//!
//! The hook runs only for packets delivered to a socket of this host (the kernel calls it
//! from the socket's receive filter). The packet is never altered. It is dropped only while
//! block rules exist (`ContainEpoch::blocks`), when it comes from a blocked peer to a socket
//! of the blocked cgroup: a listener's SYN is refused that way. Without block rules the path
//! costs one inlined array load.

use aya_ebpf::{
    EbpfContext as _, bindings::__sk_buff, helpers::generated::bpf_skb_cgroup_id,
    programs::SkBuffContext,
};
use monitor_common::{
    DNS_PORT, IPPROTO_UDP, ProgError,
    packet::{addr_bytes, parse_with_transport_offset},
};

use crate::{contain, counters::count_error, dns, skb_bytes::SkbBytes, udp_direction};

/// Looks at the packet; returns its verdict (1 pass, 0 drop: a blocked peer).
#[inline(always)]
pub fn watch(ctx: &SkBuffContext) -> i32 {
    let skb: *mut __sk_buff = ctx.as_ptr().cast();
    // SAFETY: context field reads, rewritten by the verifier.
    let (len, protocol) = unsafe { ((*skb).len, (*skb).protocol) };
    let ethertype = u16::from_be(protocol as u16);
    let Ok((ends, transport)) = parse_with_transport_offset(&SkbBytes(ctx), ethertype) else {
        count_error(ctx, ProgError::DnsParse);
        return contain::PASS;
    };
    if contain::epoch().blocks != 0 {
        // SAFETY: the helper takes the program's own context (the receiving socket's cgroup).
        let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast()) };
        if contain::ingress_blocked(cgroup_id, &addr_bytes(ends.src_addr), u64::from(len)) {
            return contain::DROP;
        }
    }
    if ends.protocol != IPPROTO_UDP {
        return contain::PASS;
    }
    udp_direction::note_received(&ends);
    // Non-first fragments have no ports (0): the socket receives the reassembled datagram,
    // so a large answer is seen whole, once.
    if ends.src_port == DNS_PORT {
        dns::capture(ctx, len, transport);
    }
    contain::PASS
}

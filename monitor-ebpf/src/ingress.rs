//! `cgroup_skb/ingress`: what the agent learns from packets that reach local sockets. One
//! header parse per packet feeds both uses: DNS answers for the name table ([`dns`]) and the
//! first datagram of UDP conversations for their direction ([`udp_direction`]).
//!
//! The hook runs only for packets delivered to a socket of this host (the kernel calls it
//! from the socket's receive filter). The packet is never altered or dropped: the entry point
//! always returns "pass".

use aya_ebpf::{EbpfContext as _, bindings::__sk_buff, programs::SkBuffContext};
use monitor_common::{DNS_PORT, IPPROTO_UDP, ProgError, packet::parse_with_transport_offset};

use crate::{counters::count_error, dns, skb_bytes::SkbBytes, udp_direction};

#[inline(always)]
pub fn watch(ctx: &SkBuffContext) {
    let skb: *mut __sk_buff = ctx.as_ptr().cast();
    // SAFETY: context field reads, rewritten by the verifier.
    let (len, protocol) = unsafe { ((*skb).len, (*skb).protocol) };
    let ethertype = u16::from_be(protocol as u16);
    let Ok((ends, transport)) = parse_with_transport_offset(&SkbBytes(ctx), ethertype) else {
        count_error(ctx, ProgError::DnsParse);
        return;
    };
    if ends.protocol != IPPROTO_UDP {
        return;
    }
    udp_direction::note_received(&ends);
    // Non-first fragments have no ports (0): the socket receives the reassembled datagram,
    // so a large answer is seen whole, once.
    if ends.src_port == DNS_PORT {
        dns::capture(ctx, len, transport);
    }
}

//! TCP direction. `sockops` marks each socket when its connection starts: accepted from a
//! listener (`OWNER_PASSIVE`, when the handshake completes) or connecting out
//! (`OWNER_ACTIVE`, before its SYN leaves). The marks live in the socket's owner storage, so
//! every flow of the socket, however late its first packet, gets the direction. The egress
//! program reads them when it creates a flow; for a socket without a mark (the `sockops`
//! program missing) it falls back on the flags of the flow's first packet.

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_TCP_CONNECT_CB},
    programs::{SkBuffContext, SockOpsContext},
};
use monitor_common::{
    FLOW_DIRECTION_UNKNOWN, FLOW_INITIATED, OWNER_ACTIVE, OWNER_PASSIVE, ProgError, SockOwner,
    direction_of_first_tcp_packet, direction_of_owner_flags, packet,
};

use crate::{counters::count_error, maps::SOCK_OWNERS, skb_bytes::SkbBytes};

/// `sockops`: marks the socket of a starting connection. Other operations cost one compare.
#[inline(always)]
pub fn record(ctx: &SockOpsContext) {
    let mark = match ctx.op() {
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => OWNER_PASSIVE,
        BPF_SOCK_OPS_TCP_CONNECT_CB => OWNER_ACTIVE,
        _ => return,
    };
    // SAFETY: context field read; the verifier rewrites it to the full socket, or NULL.
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    // A socket older than the agent (or accepted from such a listener) has no storage yet:
    // created empty (owner unknown, the agent finds it through sock_diag) to carry the mark.
    let mut init = SockOwner::EMPTY;
    let stored = SOCK_OWNERS.get(sk.cast(), Some(&mut init));
    if stored.is_null() {
        count_error(ctx, ProgError::StorageFull);
        return;
    }
    // SAFETY: non-null storage of this socket. Not atomic: a socket's connection starts
    // once, and the only other writer (egress, adding OWNER_HAS_FLOWS) runs after it.
    unsafe { (*stored).flags |= mark };
}

/// The direction of a new flow of TCP socket `stored` (its owner storage, or NULL).
#[inline(always)]
pub fn of_new_flow(ctx: &SkBuffContext, stored: *mut SockOwner) -> u8 {
    if !stored.is_null() {
        // SAFETY: non-null storage of this socket.
        let marked = direction_of_owner_flags(unsafe { (*stored).flags });
        if marked != FLOW_DIRECTION_UNKNOWN {
            return marked;
        }
    }
    let Some(flags) = packet::tcp_flags(&SkbBytes(ctx)) else {
        return FLOW_DIRECTION_UNKNOWN;
    };
    let direction = direction_of_first_tcp_packet(flags);
    // A SYN is the socket's own: remembering it gives the socket's later flows (one removed
    // as idle, then seen again) the same direction. A SYN-ACK is sent with the listener as
    // the socket, which itself neither connected nor was accepted: nothing to remember.
    if direction == FLOW_INITIATED && !stored.is_null() {
        // SAFETY: non-null storage of this socket.
        unsafe { (*stored).flags |= OWNER_ACTIVE };
    }
    direction
}

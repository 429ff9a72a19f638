//! UDP direction: who sent the first datagram of a conversation, a (local port, peer) pair.
//! The ingress program records `FLOW_SERVED` when a datagram from a peer reaches a local
//! socket before the host sent it anything; the egress program, when it creates a flow, reads
//! the record, or writes `FLOW_INITIATED` when there is none (the host spoke first). Both
//! write only when no record exists, so the first speaker's record stays until the LRU
//! evicts it.

use aya_ebpf::bindings::BPF_NOEXIST;
use monitor_common::{
    FLOW_DIRECTION_UNKNOWN, FLOW_INITIATED, FLOW_SERVED, FlowKey, IPPROTO_UDP, UdpPeerKey,
    packet::{self, Endpoints},
};

use crate::maps::UDP_PEERS;

/// `-EEXIST`: the other side (another CPU) recorded the conversation first.
const EEXIST: i32 = -17;

/// Ingress: a datagram from `ends.src` reached a local socket on port `ends.dst_port`.
/// Costs one lookup per datagram of a known conversation.
#[inline(always)]
pub fn note_received(ends: &Endpoints) {
    // Non-first fragments carry no ports: the first fragment was (or will be) seen.
    if ends.protocol != IPPROTO_UDP || ends.src_port == 0 {
        return;
    }
    let key = UdpPeerKey {
        remote_addr: packet::addr_bytes(ends.src_addr),
        remote_port: ends.src_port,
        local_port: ends.dst_port,
        _pad: 0,
    };
    if UDP_PEERS.get_ptr(&key).is_some() {
        return;
    }
    // A failure is a record the egress side writes instead (EEXIST: it just did).
    let _ = UDP_PEERS.insert(&key, &FLOW_SERVED, u64::from(BPF_NOEXIST));
}

/// Egress, first packet of UDP flow `flow` from local port `local_port`. `owner_known`: the
/// socket was created while the agent ran; for an older one, a missing record means nothing
/// (its conversation may have started before the programs were attached), and the record
/// says so, so that the peer's next datagram is not taken for the first.
#[inline(always)]
pub fn of_new_flow(flow: &FlowKey, local_port: u16, owner_known: bool) -> u8 {
    let key = UdpPeerKey {
        remote_addr: flow.remote_addr,
        remote_port: flow.remote_port,
        local_port,
        _pad: 0,
    };
    if let Some(recorded) = UDP_PEERS.get_ptr(&key) {
        // SAFETY: pointer into a live map value (RCU protects it for this program run).
        return unsafe { *recorded };
    }
    let direction = if owner_known {
        FLOW_INITIATED
    } else {
        FLOW_DIRECTION_UNKNOWN
    };
    match UDP_PEERS.insert(&key, &direction, u64::from(BPF_NOEXIST)) {
        // A datagram from the peer was recorded in between: it came first.
        Err(EEXIST) => UDP_PEERS
            .get_ptr(&key)
            // SAFETY: as above.
            .map_or(direction, |recorded| unsafe { *recorded }),
        _ => direction,
    }
}

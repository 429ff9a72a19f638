//! Map definitions. Names are shared with userspace through `monitor_common::*_MAP`.
//! Sizes set here are defaults: the agent overrides `FLOWS` and `EVENTS` at load time.

use aya_ebpf::{
    bindings::{BPF_F_CLONE, BPF_F_NO_PREALLOC, bpf_map_type::BPF_MAP_TYPE_SK_STORAGE},
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use monitor_common::{
    ANNOUNCED_ENTRIES, CONTAIN_BUCKETS_ENTRIES, CONTAIN_RULES_ENTRIES, ContainBucket, ContainEpoch,
    ContainKey, DEFAULT_EVENT_RING_BYTES, DEFAULT_MAX_FLOWS, DNS_RING_BYTES, DnsCapture, Event,
    FlowCounters, FlowKey, ProcessKey, ProgError, SockOwner, UDP_PEERS_ENTRIES, UdpPeerKey,
    Untracked, Volume,
};

/// Allocated on insert (no preallocation): memory follows the number of live flows.
#[btf_map]
pub static FLOWS: HashMap<
    FlowKey,
    FlowCounters,
    { DEFAULT_MAX_FLOWS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Per-CPU scratch slot where a new flow's value is assembled before insertion.
#[btf_map]
pub static NEW_FLOW: PerCpuArray<FlowCounters, 1> = PerCpuArray::new();

#[btf_map]
pub static ERRORS: PerCpuArray<u64, { ProgError::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static UNTRACKED: PerCpuArray<Volume, { Untracked::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static EVENTS: RingBuf<Event, { DEFAULT_EVENT_RING_BYTES as usize }> = RingBuf::new();

/// DNS answers for the agent's name table. Separate from `EVENTS`: a burst of answers must
/// not crowd out socket release events, and each has its own full counter.
#[btf_map]
pub static DNS_ANSWERS: RingBuf<DnsCapture, { DNS_RING_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub static ANNOUNCED: LruHashMap<ProcessKey, u8, { ANNOUNCED_ENTRIES as usize }> =
    LruHashMap::new();

/// Who spoke first in each UDP conversation (a `FLOW_*` direction), written by whichever of
/// the ingress and egress programs sees the conversation first. LRU and preallocated: its
/// memory is fixed, and a flood of datagrams from forged peers only evicts old entries.
#[btf_map]
pub static UDP_PEERS: LruHashMap<UdpPeerKey, u8, { UDP_PEERS_ENTRIES as usize }> =
    LruHashMap::new();

/// Containment rules: (cgroup, peer prefix) -> slot in `CONTAIN_BUCKETS`. Written by the
/// agent only; looked up when a flow's epoch is stale, and on ingress while blocks exist.
#[btf_map]
pub static CONTAIN_RULES: LpmTrie<
    ContainKey,
    u32,
    { CONTAIN_RULES_ENTRIES as usize },
    { BPF_F_NO_PREALLOC as usize },
> = LpmTrie::new();

/// One token bucket (or block) per containment, guarded by its own `bpf_spin_lock`.
#[btf_map]
pub static CONTAIN_BUCKETS: Array<ContainBucket, { CONTAIN_BUCKETS_ENTRIES as usize }> =
    Array::new();

/// The rules' epoch and how many block rules exist (one entry; an array lookup the verifier
/// inlines, so the fast path pays a load and a compare).
#[btf_map]
pub static CONTAIN_EPOCH: Array<ContainEpoch, 1> = Array::new();

/// BTF definition of a socket storage map with `BPF_F_CLONE`, which aya-ebpf's `SkStorage`
/// does not offer: with it, a socket accepted from a listener starts with a copy of the
/// listener's owner, so a server's accepted connections are attributed to the server.
#[repr(C)]
pub struct SockOwnerStorage {
    r#type: *const [i32; BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const SockOwner,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
}

// SAFETY: the fields are BTF placeholders, never dereferenced.
unsafe impl Sync for SockOwnerStorage {}

impl SockOwnerStorage {
    const fn new() -> Self {
        Self {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// Returns the owner stored for `sk`, creating it from `init` when `init` is given.
    ///
    /// `sk` must be a full socket pointer (`bpf_sk_fullsock` or a sock program's context).
    #[inline(always)]
    pub fn get(&self, sk: *mut core::ffi::c_void, init: Option<&mut SockOwner>) -> *mut SockOwner {
        let (value, flags) = match init {
            Some(v) => (
                core::ptr::from_mut(v).cast(),
                u64::from(aya_ebpf::bindings::BPF_SK_STORAGE_GET_F_CREATE),
            ),
            None => (core::ptr::null_mut(), 0),
        };
        let map = core::ptr::from_ref(self).cast_mut().cast();
        // SAFETY: `map` is this map's definition, `sk` a socket pointer the verifier accepts.
        unsafe { aya_ebpf::helpers::generated::bpf_sk_storage_get(map, sk, value, flags) }.cast()
    }
}

#[btf_map]
pub static SOCK_OWNERS: SockOwnerStorage = SockOwnerStorage::new();

//! Counter updates that stay exact when several CPUs touch the same value.

use aya_ebpf::EbpfContext;
use aya_log_ebpf::warn;
use monitor_common::{ProgError, Untracked, Volume};

use crate::maps::{ERRORS, UNTRACKED};

/// Atomically adds `v` to `*dst` (`BPF_ATOMIC | BPF_ADD`): two CPUs sending on one socket both
/// land their bytes.
#[inline(always)]
pub fn atomic_add(dst: *mut u64, v: u64) {
    // SAFETY: callers pass pointers into map values, which are 8-byte aligned.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, v,
        );
    }
}

/// Counts one occurrence of `err` on this CPU (per-CPU slot: no atomics needed). The first
/// occurrence on each CPU is also logged (aya-log), so the operator hears of it at once;
/// later ones are only counted, never logged per packet.
#[inline(always)]
pub fn count_error<C: EbpfContext>(ctx: &C, err: ProgError) {
    if let Some(slot) = ERRORS.get_ptr_mut(err as u32) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it (no preemption).
        let first = unsafe {
            *slot += 1;
            *slot == 1
        };
        if first
            && matches!(
                err,
                ProgError::MapFull
                    | ProgError::RingFull
                    | ProgError::StorageFull
                    | ProgError::DnsRingFull
            )
        {
            warn!(
                ctx,
                "first {} error on this CPU (further ones are counted, not logged)",
                err.name()
            );
        }
    }
}

/// Adds a packet that cannot be kept per socket to the per-CPU `UNTRACKED` totals.
#[inline(always)]
pub fn count_untracked(why: Untracked, bytes: u64, packets: u64) {
    if let Some(slot) = UNTRACKED.get_ptr_mut(why as u32) {
        let slot: *mut Volume = slot;
        // SAFETY: per-CPU slot as above.
        unsafe {
            (*slot).bytes += bytes;
            (*slot).packets += packets;
        }
    }
}

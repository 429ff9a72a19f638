//! [`PacketBytes`] over a `__sk_buff`: direct packet access when the bytes are in the linear
//! part (no helper call, the common case for headers), else `bpf_skb_load_bytes`, which also
//! reads paged data. Both paths are bounds-checked; the verifier accepts both.

use core::mem::MaybeUninit;

use aya_ebpf::{EbpfContext as _, helpers::generated::bpf_skb_load_bytes, programs::SkBuffContext};
use monitor_common::packet::PacketBytes;

pub struct SkbBytes<'a>(pub &'a SkBuffContext);

impl SkbBytes<'_> {
    /// Copies `N` bytes at `offset` into `out` with the helper (paged data); false when the
    /// packet is shorter.
    #[inline(always)]
    fn load<T>(&self, offset: usize, out: &mut MaybeUninit<T>) -> bool {
        // SAFETY: the helper checks `offset + size` against the packet and writes at most
        // `size_of::<T>()` bytes (the whole of `out` on success: it takes uninitialised
        // memory, so no zeroing call is needed first).
        let ret = unsafe {
            bpf_skb_load_bytes(
                self.0.as_ptr(),
                offset as u32,
                out.as_mut_ptr().cast(),
                size_of::<T>() as u32,
            )
        };
        ret == 0
    }
}

impl PacketBytes for SkbBytes<'_> {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let start = self.0.data() + offset;
        if start + N <= self.0.data_end() {
            // SAFETY: `start..start + N` was just checked against data_end.
            return Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) });
        }
        let mut out = MaybeUninit::<[u8; N]>::uninit();
        // SAFETY: `load` wrote all N bytes when it returns true.
        self.load(offset, &mut out)
            .then(|| unsafe { out.assume_init() })
    }

    /// Word loads straight from the packet: one 32-bit load per word, where `read` of a byte
    /// array costs a load and a spill per byte (BPF has no unaligned loads, so the compiler
    /// assumes none). The x86-64 and arm64 JITs load at any alignment, and the verifier checks
    /// packet alignment only on kernels built for strict-alignment CPUs.
    #[inline(always)]
    fn read_words<const W: usize>(&self, offset: usize) -> Option<[u32; W]> {
        let start = self.0.data() + offset;
        if start + 4 * W <= self.0.data_end() {
            let p = start as *const u32;
            let mut out = [0u32; W];
            let mut i = 0;
            while i < W {
                // SAFETY: `start..start + 4 * W` was just checked against data_end; volatile
                // keeps each load one 32-bit load at its offset.
                out[i] = unsafe { core::ptr::read_volatile(p.add(i)) };
                i += 1;
            }
            return Some(out);
        }
        let mut out = MaybeUninit::<[u32; W]>::uninit();
        // SAFETY: `load` wrote all 4 * W bytes when it returns true.
        self.load(offset, &mut out)
            .then(|| unsafe { out.assume_init() })
    }
}

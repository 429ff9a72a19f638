//! [`PacketBytes`] over a `__sk_buff`: direct packet access when the bytes are in the linear
//! part (no helper call, the common case for headers), else `bpf_skb_load_bytes`, which also
//! reads paged data. Both paths are bounds-checked; the verifier accepts both.

use aya_ebpf::{EbpfContext as _, helpers::generated::bpf_skb_load_bytes, programs::SkBuffContext};
use monitor_common::packet::PacketBytes;

pub struct SkbBytes<'a>(pub &'a SkBuffContext);

impl PacketBytes for SkbBytes<'_> {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let start = self.0.data() + offset;
        if start + N <= self.0.data_end() {
            // SAFETY: `start..start + N` was just checked against data_end.
            return Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) });
        }
        let mut out = [0u8; N];
        // SAFETY: the helper checks `offset + N` against the packet and writes at most N bytes.
        let ret = unsafe {
            bpf_skb_load_bytes(
                self.0.as_ptr(),
                offset as u32,
                out.as_mut_ptr().cast(),
                N as u32,
            )
        };
        (ret == 0).then_some(out)
    }
}

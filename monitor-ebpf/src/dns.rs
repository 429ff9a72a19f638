//! Passive DNS: copy DNS answers (UDP from port 53) that reach a local socket into the
//! `DNS_ANSWERS` ring buffer, so the agent can name the destinations the host resolved. What
//! the ingress program copies is what a local resolver client actually received.

use aya_ebpf::{EbpfContext as _, helpers::generated::bpf_skb_load_bytes, programs::SkBuffContext};
use monitor_common::{DNS_CAPTURE_BYTES, DnsCapture, ProgError};

use crate::{counters::count_error, maps::DNS_ANSWERS};

const UDP_HEADER_BYTES: usize = 8;

/// Copies the answer of UDP packet `ctx` (`len` bytes, transport header at `transport`),
/// which comes from port 53.
#[inline(always)]
pub fn capture(ctx: &SkBuffContext, len: u32, transport: usize) {
    let offset = transport + UDP_HEADER_BYTES;
    // The UDP layer has trimmed the packet to the UDP length before the socket filter runs:
    // what follows the UDP header is exactly the payload.
    let payload = (len as usize).saturating_sub(offset);
    if payload == 0 {
        count_error(ctx, ProgError::DnsParse);
        return;
    }
    // min(payload, DNS_CAPTURE_BYTES), written so the verifier sees a length of at least 1
    // (the helper refuses a possibly empty copy): a bound in [0, MAX - 1], plus one. The
    // check above does not carry over to the register the compiler passes.
    let copy = payload.wrapping_sub(1).min(DNS_CAPTURE_BYTES - 1) + 1;
    let Some(mut entry) = DNS_ANSWERS.reserve(0) else {
        count_error(ctx, ProgError::DnsRingFull);
        return;
    };
    let out: *mut DnsCapture = entry.as_mut_ptr();
    // SAFETY: `out` is this program's exclusive ring buffer reservation, the size of a
    // DnsCapture; the helper writes `copy` (1..=DNS_CAPTURE_BYTES) bytes into `data`, and the
    // verifier checks that bound.
    let ret = unsafe {
        (*out).len = if payload > usize::from(u16::MAX) {
            u16::MAX
        } else {
            payload as u16
        };
        (*out).captured = copy as u16;
        (*out)._pad = 0;
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            offset as u32,
            (&raw mut (*out).data).cast(),
            copy as u32,
        )
    };
    if ret == 0 {
        entry.submit(0);
    } else {
        entry.discard(0);
        count_error(ctx, ProgError::DnsParse);
    }
}

//! egress-monitor's kernel programs. Stable hooks only (`cgroup_skb`, `cgroup_sock`, `sockops`):
//! no kprobes, no fentry, so they load on hardened and minimal kernels alike.
//!
//! - `count_egress` (`cgroup_skb/egress` on the cgroup v2 root): counts every egress packet per
//!   (socket cookie, destination) in `FLOWS`. Always lets the packet pass. `count_egress_ns` is
//!   the same program for kernels without the coarse clock helper (Linux 5.10); the agent
//!   attaches one of the two.
//! - `record_owner` (`cgroup/sock_create`): stores the creating process in socket storage that is
//!   cloned to accepted sockets.
//! - `report_release` (`cgroup/sock_release`): tells the agent a socket with flows has closed.
//! - `record_tcp_direction` (`sockops` on the same root, optional): marks TCP sockets accepted
//!   from a listener or connecting out, so their flows get a direction.
//! - `watch_ingress` (`cgroup_skb/ingress` on the same root, optional): copies DNS answers that
//!   reach local sockets to `DNS_ANSWERS`, so the agent can name destinations, and records
//!   which UDP peers spoke first (`UDP_PEERS`). Always lets the packet pass.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic add intrinsic: core has no AtomicU64 on bpf"
)]
#![expect(
    clippy::inline_always,
    reason = "BPF programs are single functions: helpers must inline into the entry points"
)]
#![expect(
    clippy::needless_pass_by_value,
    clippy::not_unsafe_ptr_arg_deref,
    reason = "entry point signatures are fixed by aya-ebpf's program macros"
)]

mod counters;
mod dns;
mod egress;
mod ingress;
mod maps;
mod owner;
mod release;
mod skb_bytes;
mod tcp_direction;
mod udp_direction;

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock, sock_ops},
    programs::{SkBuffContext, SockContext, SockOpsContext},
};

/// `cgroup_skb` verdict that lets the packet through. The only verdict this program returns.
const PASS: i32 = 1;

#[cgroup_skb(egress)]
pub fn count_egress(ctx: SkBuffContext) -> i32 {
    egress::count::<{ !egress::FINE_CLOCK }>(&ctx);
    PASS
}

#[cgroup_skb(egress)]
pub fn count_egress_ns(ctx: SkBuffContext) -> i32 {
    egress::count::<{ egress::FINE_CLOCK }>(&ctx);
    PASS
}

#[cgroup_skb(ingress)]
pub fn watch_ingress(ctx: SkBuffContext) -> i32 {
    ingress::watch(&ctx);
    PASS
}

#[sock_ops]
pub fn record_tcp_direction(ctx: SockOpsContext) -> u32 {
    tcp_direction::record(&ctx);
    // 1 = success: the verifier allows 0 or 1, and a 0 is an error for the kernel's caller.
    1
}

#[cgroup_sock(sock_create)]
pub fn record_owner(ctx: SockContext) -> i32 {
    owner::record(&ctx);
    // 1 = allow the socket to be created.
    1
}

#[cgroup_sock(sock_release)]
pub fn report_release(ctx: SockContext) -> i32 {
    release::report(&ctx);
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs that can reach this, so it is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

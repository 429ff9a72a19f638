//! egress-monitor's kernel programs. Stable hooks only (`cgroup_skb`, `cgroup_sock`, `sockops`):
//! no kprobes, no fentry, so they load on hardened and minimal kernels alike.
//!
//! - `count_egress` (`cgroup_skb/egress` on the cgroup v2 root): counts every egress packet per
//!   (socket cookie, destination) in `FLOWS` and applies the containment rules (throttle or
//!   block one peer of one cgroup; every other packet passes). `count_egress_ns` is the same
//!   program for kernels without the coarse clock helper (Linux 5.10); `observe_egress` and
//!   `observe_egress_ns` are the two without enforcement (always pass), for a kernel that
//!   refuses the enforcing ones. The agent attaches one of the four.
//! - `record_owner` (`cgroup/sock_create`): stores the creating process in socket storage that is
//!   cloned to accepted sockets.
//! - `report_release` (`cgroup/sock_release`): tells the agent a socket with flows has closed.
//! - `record_tcp_direction` (`sockops` on the same root, optional): marks TCP sockets accepted
//!   from a listener or connecting out, so their flows get a direction.
//! - `watch_ingress` (`cgroup_skb/ingress` on the same root, optional): copies DNS answers that
//!   reach local sockets to `DNS_ANSWERS`, so the agent can name destinations, and records
//!   which UDP peers spoke first (`UDP_PEERS`). Drops only packets from a blocked peer to the
//!   blocked cgroup, while block rules exist.
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

mod contain;
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
use egress::{ENFORCE, FINE_CLOCK};

#[cgroup_skb(egress)]
pub fn count_egress(ctx: SkBuffContext) -> i32 {
    egress::count::<{ !FINE_CLOCK }, ENFORCE>(&ctx)
}

#[cgroup_skb(egress)]
pub fn count_egress_ns(ctx: SkBuffContext) -> i32 {
    egress::count::<FINE_CLOCK, ENFORCE>(&ctx)
}

#[cgroup_skb(egress)]
pub fn observe_egress(ctx: SkBuffContext) -> i32 {
    egress::count::<{ !FINE_CLOCK }, { !ENFORCE }>(&ctx)
}

#[cgroup_skb(egress)]
pub fn observe_egress_ns(ctx: SkBuffContext) -> i32 {
    egress::count::<FINE_CLOCK, { !ENFORCE }>(&ctx)
}

#[cgroup_skb(ingress)]
pub fn watch_ingress(ctx: SkBuffContext) -> i32 {
    ingress::watch(&ctx)
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

//! `cgroup/sock_release`: tell the agent that a socket which sent packets is closing, so it can
//! collect the flow's final counts and free the entry, and who closed it: the last holder,
//! which for an accepted connection is the worker that served it, not the listener's creator
//! the kernel's record names (the agent cannot find a closed socket in any fd table). Sockets
//! that never sent cost one storage lookup and nothing else.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_ktime_get_ns},
    programs::SockContext,
};
use monitor_common::{EVENT_RELEASED, Event, OWNER_HAS_FLOWS, ProgError};

use crate::{
    counters::count_error,
    maps::{EVENTS, SOCK_OWNERS},
};

#[inline(always)]
pub fn report(ctx: &SockContext) {
    let owner = SOCK_OWNERS.get(ctx.sock.cast(), None);
    // SAFETY: non-null storage pointer of this socket.
    if owner.is_null() || unsafe { (*owner).flags } & OWNER_HAS_FLOWS == 0 {
        return;
    }
    // SAFETY: helpers with the program's own socket context.
    let event = unsafe {
        Event {
            kind: EVENT_RELEASED,
            // Released in the closing task's context (close(2), or its exit).
            tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
            cookie: bpf_get_socket_cookie(ctx.sock.cast()),
            ts_ns: bpf_ktime_get_ns(),
        }
    };
    if EVENTS.output(&event, 0).is_err() {
        count_error(ctx, ProgError::RingFull);
    }
}

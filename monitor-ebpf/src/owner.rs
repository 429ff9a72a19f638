//! `cgroup/sock_create`: remember which process created each socket.

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_ns,
    },
    programs::SockContext,
};
use monitor_common::{
    EVENT_NEW_PROCESS, Event, OWNER_FROM_SOCK_CREATE, ProcessKey, ProgError, SockOwner,
};

use crate::{
    counters::count_error,
    maps::{ANNOUNCED, EVENTS, SOCK_OWNERS},
};

#[inline(always)]
pub fn record(ctx: &SockContext) {
    let mut owner = SockOwner::EMPTY;
    // SAFETY: helpers that read the current task; the comm buffer is 16 bytes.
    unsafe {
        let pid_tgid = bpf_get_current_pid_tgid();
        let uid_gid = bpf_get_current_uid_gid();
        owner.tgid = (pid_tgid >> 32) as u32;
        owner.pid = pid_tgid as u32;
        owner.uid = uid_gid as u32;
        owner.gid = (uid_gid >> 32) as u32;
        owner.cgroup_id = bpf_get_current_cgroup_id();
        bpf_get_current_comm(owner.comm.as_mut_ptr().cast(), owner.comm.len() as u32);
    }
    owner.flags = OWNER_FROM_SOCK_CREATE;
    let stored = SOCK_OWNERS.get(ctx.sock.cast(), Some(&mut owner));
    if stored.is_null() {
        count_error(ctx, ProgError::StorageFull);
    }
    announce(ctx, &owner);
}

/// Tells the agent about a process the first time it creates a socket, so /proc is read
/// while the process is alive. One LRU lookup per socket creation; an event per new process.
#[inline(always)]
fn announce(ctx: &SockContext, owner: &SockOwner) {
    let key = ProcessKey {
        tgid: owner.tgid,
        comm: owner.comm,
    };
    if ANNOUNCED.get_ptr(&key).is_some() {
        return;
    }
    if ANNOUNCED.insert(&key, &1, 0).is_err() {
        return;
    }
    // SAFETY: helper without arguments.
    let event = Event {
        kind: EVENT_NEW_PROCESS,
        tgid: owner.tgid,
        cookie: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS.output(&event, 0).is_err() {
        count_error(ctx, ProgError::RingFull);
    }
}

//! The programs attached to a cgroup, asked of the kernel with `BPF_PROG_QUERY`.
//!
//! Not `bpftool cgroup show`: Debian bookworm's bpftool fails on Linux 5.10 as soon as a
//! program is attached (measured in `vm-test`: the query it sends for attached programs
//! carries fields that kernel does not know). This attribute is the 5.10 one, which every
//! later kernel accepts.

use std::{fs::File, io, os::fd::AsRawFd as _};

const BPF_PROG_QUERY: libc::c_long = 16;

/// `enum bpf_attach_type` values of the hooks the agent uses (`include/uapi/linux/bpf.h`).
pub const ATTACH_TYPES: [(u32, &str); 5] = [
    (0, "cgroup_skb/ingress"),
    (1, "cgroup_skb/egress"),
    (2, "cgroup/sock_create"),
    (3, "sockops"),
    (34, "cgroup/sock_release"),
];

/// The `query` member of `union bpf_attr` as of Linux 5.10.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// Ids of the programs attached to `cgroup` (a cgroup v2 directory) at `attach_type`.
pub fn attached(cgroup: &File, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: u32::try_from(cgroup.as_raw_fd()).expect("an open fd"),
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: u32::try_from(ids.len()).expect("small"),
        ..QueryAttr::default()
    };
    // SAFETY: `attr` is a valid bpf_attr prefix of the size given; `prog_ids` points to
    // `prog_cnt` writable u32s that outlive the call.
    unsafe { crate::bpf_syscall::bpf(BPF_PROG_QUERY, &mut attr) }?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Ids of the programs attached to `cgroup` at any hook the agent uses.
pub fn attached_to(cgroup: &str) -> Vec<u32> {
    let dir = File::open(cgroup).unwrap_or_else(|e| panic!("open cgroup {cgroup}: {e}"));
    let mut all = Vec::new();
    for (attach_type, hook) in ATTACH_TYPES {
        all.extend(
            attached(&dir, attach_type)
                .unwrap_or_else(|e| panic!("BPF_PROG_QUERY {hook} on {cgroup}: {e}")),
        );
    }
    all
}

//! A program attached to the cgroup root the old way (`BPF_PROG_ATTACH` without
//! `BPF_F_ALLOW_MULTI`), as a tool that predates multi-program cgroups does: the kernel then
//! refuses every other program at that hook (`EPERM`), the agent's included. The tests use it
//! to stage a host where an optional program cannot be attached.
//!
//! Such an attachment is not a `bpf_link`: it would outlive the test process. [`Exclusive`]
//! detaches it when dropped, panics included.

use std::{
    fs::File,
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{Ebpf, programs::SockOps};
use monitor_common::PROG_TCP_DIRECTION;

const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
/// `BPF_CGROUP_SOCK_OPS`.
const ATTACH_SOCK_OPS: u32 = 3;

/// The `attach` member of `union bpf_attr` (Linux 4.10 onwards).
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// A `sockops` program attached exclusively to a cgroup; detached on drop.
pub struct Exclusive {
    /// The object holding the program (its fd must stay open until the detach).
    ebpf: Ebpf,
    cgroup: File,
}

impl Exclusive {
    /// Attaches the agent's own `record_tcp_direction`, loaded in an object of its own (its
    /// maps are not the agent's: what it marks, the agent never reads), to `cgroup`
    /// exclusively.
    pub fn sock_ops(cgroup: &str) -> io::Result<Self> {
        let cgroup = File::open(cgroup)?;
        let mut ebpf =
            Ebpf::load(monitor::kernel::loader::kernel_object()).expect("load kernel object");
        let prog: &mut SockOps = ebpf
            .program_mut(PROG_TCP_DIRECTION)
            .expect("program")
            .try_into()
            .expect("sock_ops");
        prog.load()
            .expect("the verifier accepts record_tcp_direction");
        let mut attr = AttachAttr {
            target_fd: raw(&cgroup),
            attach_bpf_fd: prog_fd(&ebpf),
            attach_type: ATTACH_SOCK_OPS,
            attach_flags: 0,
        };
        // SAFETY: `attr` is the attach member of bpf_attr, holding two open fds.
        unsafe { crate::bpf_syscall::bpf(BPF_PROG_ATTACH, &mut attr) }?;
        Ok(Self { ebpf, cgroup })
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        let mut attr = AttachAttr {
            target_fd: raw(&self.cgroup),
            attach_bpf_fd: prog_fd(&self.ebpf),
            attach_type: ATTACH_SOCK_OPS,
            attach_flags: 0,
        };
        // SAFETY: as in `sock_ops`.
        if let Err(e) = unsafe { crate::bpf_syscall::bpf(BPF_PROG_DETACH, &mut attr) } {
            // Not a panic in a drop (it may run during one): said loudly instead, as the
            // program would stay attached to the cgroup root.
            eprintln!("DETACHING THE EXCLUSIVE sockops PROGRAM FAILED: {e}");
        }
    }
}

fn raw(f: &File) -> u32 {
    u32::try_from(f.as_raw_fd()).expect("an open fd")
}

fn prog_fd(ebpf: &Ebpf) -> u32 {
    let prog: &SockOps = ebpf
        .program(PROG_TCP_DIRECTION)
        .expect("program")
        .try_into()
        .expect("sock_ops");
    u32::try_from(prog.fd().expect("loaded").as_fd().as_raw_fd()).expect("an open fd")
}

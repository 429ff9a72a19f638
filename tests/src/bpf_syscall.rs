//! The `bpf(2)` commands the tests issue themselves (aya has no public wrapper for them).

use std::io;

/// Runs `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// `attr` must be the `union bpf_attr` member `cmd` expects, and every pointer in it valid
/// (and writable where the kernel writes) for the duration of the call.
pub unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: the caller's contract; the size is that of the struct passed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

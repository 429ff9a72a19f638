//! The kernel compatibility table lives in `monitor_common::compat` (the VM test harness reads
//! it too); this adds what needs the running system.

pub use monitor_common::compat::*;

/// The running kernel's release string.
pub fn running_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

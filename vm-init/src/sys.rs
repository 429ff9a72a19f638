//! The few system calls the init needs, through libc (no other dependency in a static init).

use std::{
    ffi::CString,
    fs,
    io::Error,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
};

/// `uname -r`, or `unknown-kernel` (the field must not be empty).
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned())
        .or_else(|| {
            // /proc is not mounted yet at start-up: ask uname(2).
            let mut u: libc::utsname = unsafe { std::mem::zeroed() };
            // SAFETY: `u` is a valid, writable utsname.
            (unsafe { libc::uname(&raw mut u) } == 0).then(|| {
                // SAFETY: uname NUL-terminates `release`.
                unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-kernel".to_owned())
}

/// What the tests expect a normal host to have mounted (some of it deliberately more than
/// the host CI machine has, e.g. tracefs and securityfs, which the tests mount when missing).
const MOUNTS: [(&str, &str, &str); 9] = [
    ("proc", "/proc", "proc"),
    ("sysfs", "/sys", "sysfs"),
    ("devtmpfs", "/dev", "devtmpfs"),
    ("tmpfs", "/tmp", "tmpfs"),
    ("tmpfs", "/run", "tmpfs"),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
    ("bpf", "/sys/fs/bpf", "bpf"),
    ("tracefs", "/sys/kernel/tracing", "tracefs"),
    ("securityfs", "/sys/kernel/security", "securityfs"),
];

/// Mounts [`MOUNTS`]; returns one message per failure.
pub fn mount_all() -> Vec<String> {
    let mut errors = Vec::new();
    for (source, target, fstype) in MOUNTS {
        if let Err(e) = fs::create_dir_all(target) {
            errors.push(format!("mkdir {target}: {e}"));
            continue;
        }
        let c = |s: &str| CString::new(s).unwrap_or_default();
        let (source, target_c, fstype) = (c(source), c(target), c(fstype));
        // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target_c.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            errors.push(format!("mount {target}: {}", Error::last_os_error()));
        }
    }
    errors
}

/// `finit_module(fd, "", 0)`; a module that is already loaded is fine.
pub fn insert_module(path: &str) -> Result<(), Error> {
    let file = fs::File::open(path)?;
    let params = c"";
    // SAFETY: a valid fd and a NUL-terminated empty parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc != 0 {
        let e = Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// Sets `IFF_UP` on `lo`: it starts down in a fresh kernel, and the tests talk over loopback.
pub fn loopback_up() -> Result<(), Error> {
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo".iter()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming an interface; `fd` is a socket.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &raw mut req) != 0 {
            Err(Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &raw const req) == 0 {
                Ok(())
            } else {
                Err(Error::last_os_error())
            }
        }
    };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    result
}

/// Flushes file systems and powers the machine off; never returns.
pub fn power_off() -> ! {
    // SAFETY: sync(2) and reboot(2) take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on error (e.g. not PID 1 during a local try-out): exiting is all
    // that is left, and as PID 1 that panics the kernel, which the host watchdog reports.
    eprintln!("reboot(RB_POWER_OFF): {}", Error::last_os_error());
    std::process::exit(1)
}

/// Base name of a path, for result lines.
pub fn base_name(path: &str) -> String {
    std::path::Path::new(path).file_name().map_or_else(
        || path.to_owned(),
        |n| String::from_utf8_lossy(n.as_bytes()).into_owned(),
    )
}

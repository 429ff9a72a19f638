//! Attribution of sockets created before the agent started (their creation was not seen by
//! `cgroup/sock_create`): `NETLINK_SOCK_DIAG` gives each socket's cookie and inode, and
//! `/proc/*/fd` links name the inode's owner. Only sockets in the agent's network namespace
//! are visible this way; the others keep their cgroup (unit / container) attribution.

use std::{
    collections::{HashMap, HashSet},
    fs, io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagSockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    hdr: NlMsgHdr,
    req: InetDiagReqV2,
}

/// Size of `struct inet_diag_msg` up to and including `idiag_inode`.
const INET_DIAG_MSG_LEN: usize = 72;

/// One socket as `sock_diag` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub cookie: u64,
    pub inode: u64,
    pub uid: u32,
}

/// Parses the payload of one `SOCK_DIAG_BY_FAMILY` answer (`struct inet_diag_msg`).
pub fn parse_inet_diag_msg(payload: &[u8]) -> Option<DiagSocket> {
    if payload.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let u32_at =
        |o: usize| u32::from_ne_bytes([payload[o], payload[o + 1], payload[o + 2], payload[o + 3]]);
    // family, state, timer, retrans (4) + sockid: sport, dport (4), src (16), dst (16), if (4)
    let cookie = u64::from(u32_at(44)) | (u64::from(u32_at(48)) << 32);
    // expires, rqueue, wqueue at 52..64, then uid and inode.
    Some(DiagSocket {
        cookie,
        uid: u32_at(64),
        inode: u64::from(u32_at(68)),
    })
}

/// Dumps every TCP and UDP socket (IPv4 and IPv6) of this network namespace.
pub fn dump_all() -> io::Result<Vec<DiagSocket>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for protocol in [libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8] {
            dump(family, protocol, &mut out)?;
        }
    }
    Ok(out)
}

fn dump(family: u8, protocol: u8, out: &mut Vec<DiagSocket>) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let request = Request {
        hdr: NlMsgHdr {
            len: mem::size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            seq: 1,
            pid: 0,
        },
        req: InetDiagReqV2 {
            family,
            protocol,
            states: u32::MAX,
            ..InetDiagReqV2::default()
        },
    };
    // SAFETY: sending a fully initialised repr(C) value of the given size.
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (&raw const request).cast(),
            mem::size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receiving into an owned buffer of the given length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= mem::size_of::<NlMsgHdr>() {
            let len = u32::from_ne_bytes([msgs[0], msgs[1], msgs[2], msgs[3]]) as usize;
            let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if len < mem::size_of::<NlMsgHdr>() || len > msgs.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad netlink message length",
                ));
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = msgs
                        .get(16..20)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    // EINVAL/ENOENT: this protocol's diag module is absent; nothing to list.
                    if errno == 0 || errno == -libc::ENOENT || errno == -libc::EINVAL {
                        return Ok(());
                    }
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                _ => {
                    if let Some(s) = parse_inet_diag_msg(&msgs[mem::size_of::<NlMsgHdr>()..len]) {
                        out.push(s);
                    }
                }
            }
            let aligned = (len + 3) & !3;
            msgs = msgs.get(aligned..).unwrap_or(&[]);
        }
    }
}

/// Finds which process holds each wanted socket inode by reading `proc_root/*/fd/*` links.
/// Stops as soon as every inode is found. A socket shared by several processes (fork)
/// is attributed to the lowest pid, normally the parent.
pub fn owners_of<S: std::hash::BuildHasher>(
    proc_root: &Path,
    wanted: &HashSet<u64, S>,
) -> HashMap<u64, u32> {
    let mut found = HashMap::new();
    if wanted.is_empty() {
        return found;
    }
    let Ok(dir) = fs::read_dir(proc_root) else {
        return found;
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let (mut scanned, mut sockets_seen) = (0usize, 0usize);
    for pid in pids {
        scanned += 1;
        let Ok(fds) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&target.to_string_lossy()) else {
                continue;
            };
            sockets_seen += 1;
            if wanted.contains(&inode) {
                found.entry(inode).or_insert(pid);
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    tracing::debug!(
        processes = scanned,
        socket_fds = sockets_seen,
        wanted = wanted.len(),
        found = found.len(),
        "scanned /proc/*/fd"
    );
    found
}

/// `socket:[12345]` -> 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn parses_socket_links() {
        assert_eq!(socket_inode("socket:[98765]"), Some(98765));
        assert_eq!(socket_inode("pipe:[1]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn parses_inet_diag_msg() {
        let mut p = vec![0u8; INET_DIAG_MSG_LEN];
        p[44..48].copy_from_slice(&0x1122_3344u32.to_ne_bytes());
        p[48..52].copy_from_slice(&0x5566_7788u32.to_ne_bytes());
        p[64..68].copy_from_slice(&33u32.to_ne_bytes());
        p[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        let s = parse_inet_diag_msg(&p).unwrap();
        assert_eq!(
            s,
            DiagSocket {
                cookie: 0x5566_7788_1122_3344,
                inode: 4242,
                uid: 33
            }
        );
        assert_eq!(parse_inet_diag_msg(&p[..71]), None);
    }

    /// `sock_diag` needs no privilege for listing: this checks the real netlink exchange and
    /// the /proc scan against a socket this test owns.
    #[test]
    fn finds_this_process_listening_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = {
            let fd = listener.as_raw_fd();
            let link = fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            socket_inode(&link.to_string_lossy()).unwrap()
        };
        let all = dump_all().unwrap();
        let mine = all
            .iter()
            .find(|s| s.inode == inode)
            .expect("listener in sock_diag dump");
        assert_ne!(mine.cookie, 0);
        let owners = owners_of(Path::new("/proc"), &HashSet::from([inode]));
        assert_eq!(owners.get(&inode), Some(&std::process::id()));
    }
}
